//! The scheduler without I/O: time is a number, actions finish when a test says so, and a
//! restart is a new scheduler given what the old one asked to save.

use chrono::Utc;
use serde_json::json;

use super::*;
use crate::reading::Value;

const T0: i64 = 1_700_000_000_000;
const OWNER: Subject = Subject::Owner;

fn rule(id: RuleId, body: serde_json::Value) -> LoadedRule {
    let rule: Rule = serde_json::from_value(body).unwrap_or_else(|e| panic!("bad test rule: {e}"));
    LoadedRule { id, author: 1, subject: OWNER, rule }
}

/// A rule that runs one MQTT command on every press of button `b1`.
fn on_press(id: RuleId, mode: &str, max_runs: u16) -> LoadedRule {
    rule(
        id,
        json!({ "name": format!("rule {id}"), "mode": mode, "max_runs": max_runs,
            "triggers": [{ "type": "reading", "device": "b1", "metric": "press" }],
            "actions": [{ "type": "mqtt", "device": "lamp", "metric": "power", "value": "on" }] }),
    )
}

fn press(ts: i64) -> Reading {
    Reading { device: "b1".into(), metric: "press".into(), ts, value: Value::Bool(true), unit: None }
}

fn reading(device: &str, metric: &str, value: f64, ts: i64) -> Reading {
    Reading { device: device.into(), metric: metric.into(), ts, value: Value::Number(value), unit: None }
}

fn started(rules: Vec<LoadedRule>, saved: Input<'static>, now: i64) -> (Scheduler<Utc>, Vec<Command>) {
    let mut s = Scheduler::new(Utc, 0);
    let mut out = s.step(now, Input::Rules { rules, known: vec![(OWNER, Vec::new())] });
    out.extend(s.step(now, saved));
    (s, out)
}

fn fresh() -> Input<'static> {
    Input::Start { last_tick: None, virtuals: Vec::new(), holds: Vec::new(), paused: Vec::new() }
}

fn jobs(out: &[Command]) -> Vec<i64> {
    out.iter()
        .filter_map(|c| match c {
            Command::Perform(job) => Some(job.run),
            _ => None,
        })
        .collect()
}

fn traces(out: &[Command]) -> Vec<&Trace> {
    out.iter()
        .filter_map(|c| match c {
            Command::Trace(t) => Some(t.as_ref()),
            _ => None,
        })
        .collect()
}

fn skipped_notes(out: &[Command]) -> Vec<String> {
    traces(out).iter().filter(|t| t.status == RunStatus::Skipped).filter_map(|t| t.note.clone()).collect()
}

fn done(s: &mut Scheduler<Utc>, now: i64, run: i64) -> Vec<Command> {
    s.step(now, Input::Done { run, result: Ok("sent".into()) })
}

#[test]
fn single_mode_skips_a_trigger_while_a_run_is_going() {
    let (mut s, _) = started(vec![on_press(1, "single", 10)], fresh(), T0);
    let first = s.step(T0, Input::Reading { subject: OWNER, reading: &press(T0) });
    let run = jobs(&first);
    assert_eq!(run.len(), 1);
    let second = s.step(T0 + 1, Input::Reading { subject: OWNER, reading: &press(T0 + 1) });
    assert!(jobs(&second).is_empty());
    assert_eq!(skipped_notes(&second), ["already running (mode: single)"]);
    let end = done(&mut s, T0 + 2, run[0]);
    assert_eq!(traces(&end).iter().map(|t| t.status).collect::<Vec<_>>(), [RunStatus::Done]);
    // Once it ended, a press runs again.
    let third = s.step(T0 + 3, Input::Reading { subject: OWNER, reading: &press(T0 + 3) });
    assert_eq!(jobs(&third).len(), 1);
}

#[test]
fn restart_mode_stops_the_run_and_starts_afresh() {
    let (mut s, _) = started(vec![on_press(1, "restart", 10)], fresh(), T0);
    let first = jobs(&s.step(T0, Input::Reading { subject: OWNER, reading: &press(T0) }))[0];
    let second = s.step(T0 + 1, Input::Reading { subject: OWNER, reading: &press(T0 + 1) });
    assert!(second.contains(&Command::Abort { run: first }), "{second:?}");
    let stopped = traces(&second).into_iter().find(|t| t.run == first).map(|t| t.status);
    assert_eq!(stopped, Some(RunStatus::Stopped));
    let new = jobs(&second);
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], first);
    // The stopped run's late answer changes nothing.
    assert!(done(&mut s, T0 + 2, first).is_empty());
    let end = done(&mut s, T0 + 3, new[0]);
    assert_eq!(traces(&end)[0].status, RunStatus::Done);
}

#[test]
fn queued_mode_runs_in_turn_up_to_max_waiting() {
    let (mut s, _) = started(vec![on_press(1, "queued", 2)], fresh(), T0);
    let first = jobs(&s.step(T0, Input::Reading { subject: OWNER, reading: &press(T0) }))[0];
    let mut waiting = Vec::new();
    for i in 1..=3 {
        waiting.extend(s.step(T0 + i, Input::Reading { subject: OWNER, reading: &press(T0 + i) }));
    }
    assert!(jobs(&waiting).is_empty(), "nothing starts while the first run goes");
    assert_eq!(skipped_notes(&waiting), ["2 runs already waiting (mode: queued)"]);
    let next = done(&mut s, T0 + 10, first);
    let second = jobs(&next);
    assert_eq!(second.len(), 1, "the first waiting run starts when the first ends: {next:?}");
    let third = jobs(&done(&mut s, T0 + 11, second[0]));
    assert_eq!(third.len(), 1);
    assert!(jobs(&done(&mut s, T0 + 12, third[0])).is_empty(), "the queue is empty");
}

#[test]
fn parallel_mode_runs_side_by_side_up_to_max() {
    let (mut s, _) = started(vec![on_press(1, "parallel", 3)], fresh(), T0);
    let mut out = Vec::new();
    for i in 0..5 {
        out.extend(s.step(T0 + i, Input::Reading { subject: OWNER, reading: &press(T0 + i) }));
    }
    let going = jobs(&out);
    assert_eq!(going.len(), 3);
    assert_eq!(skipped_notes(&out), ["3 runs already going (mode: parallel)"; 2]);
    done(&mut s, T0 + 10, going[1]);
    assert_eq!(jobs(&s.step(T0 + 11, Input::Reading { subject: OWNER, reading: &press(T0 + 11) })).len(), 1);
}

#[test]
fn at_most_a_hundred_runs_a_second_per_rule() {
    let (mut s, _) = started(vec![on_press(1, "parallel", 1000)], fresh(), T0);
    let second = T0 - T0 % 1000;
    let mut out = Vec::new();
    for i in 0..150 {
        out.extend(s.step(second + i, Input::Reading { subject: OWNER, reading: &press(second + i) }));
    }
    assert_eq!(jobs(&out).len(), MAX_RUNS_PER_SECOND as usize);
    // Refused past the bound, and traced once that second.
    assert_eq!(skipped_notes(&out), ["more than 100 runs in a second: refused until the next second"]);
    let next = s.step(second + 1000, Input::Reading { subject: OWNER, reading: &press(second + 1000) });
    assert_eq!(jobs(&next).len(), 1, "the next second starts afresh");
}

#[test]
fn a_delay_survives_a_restart_and_ends_on_time() {
    let delayed = || {
        rule(
            1,
            json!({ "name": "Door light", "triggers": [{ "type": "reading", "device": "b1", "metric": "press" }],
                "actions": [{ "type": "delay", "seconds": 6 },
                    { "type": "mqtt", "device": "lamp", "metric": "power", "value": "off" }] }),
        )
    };
    let (mut s, _) = started(vec![delayed()], fresh(), T0);
    let out = s.step(T0, Input::Reading { subject: OWNER, reading: &press(T0) });
    let Some(Command::SaveDelay { run, due, resume, .. }) = out.iter().find(|c| matches!(c, Command::SaveDelay { .. }))
    else {
        panic!("no delay saved: {out:?}")
    };
    let (run, due, resume) = (*run, *due, (**resume).clone());
    assert_eq!(due, T0 + 6000);
    assert!(jobs(&out).is_empty());
    assert_eq!(s.next_deadline(), Some(T0 + TICK_MS), "the next tick comes before the delay ends");

    // The hub stops two seconds in: the run is paused, its saved delay kept.
    let stop = s.step(T0 + 2000, Input::Shutdown);
    assert_eq!(traces(&stop).iter().map(|t| (t.run, t.status)).collect::<Vec<_>>(), [(run, RunStatus::Paused)]);
    assert!(!stop.contains(&Command::DropDelay { run }));

    // A new scheduler given what was saved goes on where it stopped.
    let saved = Input::Start {
        last_tick: Some(T0 + 2000),
        virtuals: vec![],
        holds: vec![],
        paused: vec![Paused { due, resume }],
    };
    let (mut s, out) = started(vec![delayed()], saved, T0 + 3000);
    assert!(jobs(&out).is_empty());
    assert!(jobs(&s.step(due - 1, Input::Time)).is_empty(), "not before the delay ends");
    let woke = s.step(due, Input::Time);
    assert_eq!(jobs(&woke), [run]);
    let end = done(&mut s, due + 5, run);
    let trace = traces(&end)[0];
    assert_eq!(trace.status, RunStatus::Done);
    assert_eq!(
        trace.steps.iter().map(|st| (st.action.as_str(), st.result.as_str())).collect::<Vec<_>>(),
        [("wait 6 s", "waited"), ("MQTT hearth/lamp/set/power = off", "sent")]
    );
    assert!(end.contains(&Command::DropDelay { run }), "the saved delay is finished with");
}

#[test]
fn a_hold_survives_a_restart_and_fires_when_due() {
    let cold = || {
        rule(
            1,
            json!({ "name": "Cold", "triggers": [{ "type": "threshold", "device": "t1", "metric": "temp",
                "below": 18.0, "for_s": 600 }],
                "actions": [{ "type": "notify", "message": "cold for 10 minutes" }] }),
        )
    };
    let (mut s, _) = started(vec![cold()], fresh(), T0);
    s.step(T0, Input::Reading { subject: OWNER, reading: &reading("t1", "temp", 20.0, T0) });
    let armed = s.step(T0 + 10, Input::Reading { subject: OWNER, reading: &reading("t1", "temp", 17.0, T0 + 10) });
    let hold = Hold { rule: 1, trigger: 0, due: T0 + 10 + 600_000 };
    assert_eq!(armed, [Command::ArmHold(hold)]);
    s.step(T0 + 1000, Input::Shutdown);

    // Restarted with the hold and the latest value the store knows.
    let mut s = Scheduler::new(Utc, 0);
    let known = vec![(OWNER, vec![reading("t1", "temp", 17.0, T0 + 10)])];
    s.step(T0 + 5000, Input::Rules { rules: vec![cold()], known });
    let saved = Input::Start { last_tick: Some(T0 + 1000), virtuals: vec![], holds: vec![hold], paused: vec![] };
    s.step(T0 + 5000, saved);
    assert!(jobs(&s.step(hold.due - 1, Input::Time)).is_empty());
    let fired = s.step(hold.due, Input::Time);
    assert_eq!(jobs(&fired).len(), 1, "{fired:?}");
    assert!(fired.contains(&Command::CancelHold { rule: 1, trigger: 0 }));
    // The tick at `due - 1` was the last: only the next tick is left, no hold.
    assert_eq!(s.next_deadline(), Some(hold.due - 1 + TICK_MS), "only the tick is left");
}

#[test]
fn a_missed_schedule_is_caught_up_once_and_only_where_asked() {
    let every_minute = |id, catch_up| {
        rule(
            id,
            json!({ "name": format!("r{id}"), "catch_up": catch_up, "triggers": [{ "type": "cron", "expr": "0 * * * * *" }],
                "actions": [{ "type": "notify", "message": "tick" }] }),
        )
    };
    let down = Input::Start { last_tick: Some(T0), virtuals: vec![], holds: vec![], paused: vec![] };
    let (_, out) = started(vec![every_minute(1, true), every_minute(2, false)], down, T0 + 10 * 60_000);
    let ran: Vec<RuleId> = out
        .iter()
        .filter_map(|c| match c {
            Command::Perform(job) => Some(job.rule),
            _ => None,
        })
        .collect();
    assert_eq!(ran, [1], "ten missed minutes: one run, for the rule that asked");
    assert!(out.contains(&Command::SaveTick(T0 + 10 * 60_000)), "a fired time trigger is saved at once");
}

#[test]
fn a_virtual_value_set_by_one_rule_starts_another() {
    let setter = rule(
        1,
        json!({ "name": "Away", "triggers": [{ "type": "reading", "device": "b1", "metric": "press" }],
            "actions": [{ "type": "set", "name": "mode", "value": "away" }] }),
    );
    let follower = rule(
        2,
        json!({ "name": "Lights off when away", "triggers": [{ "type": "virtual", "name": "mode" }],
            "actions": [{ "type": "mqtt", "device": "lamp", "metric": "power", "value": "off" }] }),
    );
    let (mut s, _) = started(vec![setter, follower], fresh(), T0);
    let out = s.step(T0, Input::Reading { subject: OWNER, reading: &press(T0) });
    assert!(out.contains(&Command::SaveVirtual {
        subject: OWNER,
        name: "mode".into(),
        value: Value::Text("away".into())
    }));
    let performed: Vec<RuleId> = out
        .iter()
        .filter_map(|c| match c {
            Command::Perform(job) => Some(job.rule),
            _ => None,
        })
        .collect();
    assert_eq!(performed, [2]);
    // The same value again is no change: nothing more starts.
    let again = s.step(T0 + 1, Input::Reading { subject: OWNER, reading: &press(T0 + 1) });
    assert!(jobs(&again).is_empty(), "{again:?}");
}

#[test]
fn a_removed_rule_stops_its_runs_and_holds() {
    let (mut s, _) = started(vec![on_press(1, "single", 1)], fresh(), T0);
    let run = jobs(&s.step(T0, Input::Reading { subject: OWNER, reading: &press(T0) }))[0];
    let out = s.step(T0 + 1, Input::Rules { rules: vec![], known: vec![] });
    assert!(out.contains(&Command::Abort { run }));
    assert_eq!(traces(&out)[0].status, RunStatus::Stopped);
    assert!(jobs(&s.step(T0 + 2, Input::Reading { subject: OWNER, reading: &press(T0 + 2) })).is_empty());
}

#[test]
fn a_failed_action_ends_the_run_with_its_reason() {
    let (mut s, _) = started(vec![on_press(1, "single", 1)], fresh(), T0);
    let run = jobs(&s.step(T0, Input::Reading { subject: OWNER, reading: &press(T0) }))[0];
    let out = s.step(T0 + 5, Input::Done { run, result: Err("MQTT is off".into()) });
    let trace = traces(&out)[0];
    assert_eq!(
        (trace.status, trace.steps[0].ok, trace.steps[0].result.as_str()),
        (RunStatus::Failed, false, "MQTT is off")
    );
    assert_eq!(trace.steps[0].at, T0, "a step is stamped when it started");
}

#[test]
fn a_shredded_tenancy_leaves_nothing_in_memory() {
    const TENANCY: Subject = Subject::Tenancy(3);
    let theirs = LoadedRule { subject: TENANCY, ..on_press(2, "single", 1) };
    let (mut s, _) = started(vec![on_press(1, "single", 1), theirs], fresh(), T0);
    s.step(T0, Input::Reading { subject: TENANCY, reading: &reading("meter", "power", 42.0, T0) });
    let run = jobs(&s.step(T0, Input::Reading { subject: TENANCY, reading: &press(T0) }))[0];
    assert!(s.worlds.contains_key(&TENANCY));

    let out = s.step(T0 + 1, Input::Forget(TENANCY));
    assert!(out.contains(&Command::Abort { run }), "its run stops");
    assert!(!s.worlds.contains_key(&TENANCY) && !s.loaded.contains(&TENANCY), "its values are gone");
    assert!(!s.meta.contains_key(&2) && !s.rules.contains_key(&TENANCY), "its rules are gone");
    assert!(jobs(&s.step(T0 + 2, Input::Reading { subject: TENANCY, reading: &press(T0 + 2) })).is_empty());
    assert_eq!(
        jobs(&s.step(T0 + 3, Input::Reading { subject: OWNER, reading: &press(T0 + 3) })).len(),
        1,
        "the owner's"
    );
}
