//! Dry run: replays recorded readings through the same engine the runtime uses, with time
//! advancing from reading to reading (time triggers, silences and holds fire at their own
//! instants in between), and lists when the rule would have fired and what it would have
//! done. Pure: nothing is acted on, nothing is read here.

use chrono::TimeZone;
use serde::Serialize;

use super::engine::{Compiled, Event, Outcome, World, evaluate};
use crate::reading::Reading;

pub use hearth_model::rules::WouldFire;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub fires: Vec<WouldFire>,
    /// Stopped at `max_fires`.
    pub truncated: bool,
}

/// Replays `readings` (sorted by time, all inside `[from, to)`) through `rule`, starting
/// from what `world` knows. At most `max_fires` are listed.
pub fn replay<Tz: TimeZone>(
    rule: &Compiled,
    mut world: World,
    readings: &[Reading],
    (from, to): (i64, i64),
    tz: &Tz,
    max_fires: usize,
) -> Replay {
    let mut out = Replay { fires: Vec::new(), truncated: false };
    let mut clock = from;
    for r in readings.iter().filter(|r| r.ts >= from && r.ts < to) {
        if advance(rule, &mut world, &mut clock, r.ts, tz, &mut out, max_fires) {
            return out;
        }
        let e = evaluate(std::slice::from_ref(rule), &world, &Event::Reading(r), r.ts, tz);
        e.holds.iter().for_each(|h| world.apply_hold(h));
        world.apply(r);
        if record(rule, e.outcomes, &mut out, max_fires) {
            return out;
        }
    }
    // The range is [from, to): an occurrence at `to` itself is outside.
    advance(rule, &mut world, &mut clock, to - 1, tz, &mut out, max_fires);
    out
}

/// Moves time from `clock` to `until`: each due hold and each time-trigger occurrence in
/// between, in order. Returns true once `max_fires` is reached.
fn advance<Tz: TimeZone>(
    rule: &Compiled,
    world: &mut World,
    clock: &mut i64,
    until: i64,
    tz: &Tz,
    out: &mut Replay,
    max_fires: usize,
) -> bool {
    let rules = std::slice::from_ref(rule);
    while *clock < until {
        let hold = world.holds.iter().filter(|(_, d)| **d <= until).min_by_key(|(_, d)| **d).map(|(k, d)| (*k, *d));
        let span_end = hold.map_or(until, |(_, due)| due.max(*clock));
        // Occurrences of time triggers in (clock, span_end], earliest first.
        let ticks = evaluate(rules, world, &Event::Tick { from: *clock, to: span_end, catch_up: false }, span_end, tz);
        if let Some(first) = ticks.outcomes.iter().map(|o| o.cause.at).min() {
            let at = first.max(*clock + 1);
            let now: Vec<Outcome> = ticks.outcomes.into_iter().filter(|o| o.cause.at == first).collect();
            *clock = at;
            if record(rule, now, out, max_fires) {
                return true;
            }
            continue;
        }
        *clock = span_end;
        if let Some(((id, trigger), _)) = hold {
            let e = evaluate(rules, world, &Event::HoldDue { rule: id, trigger }, span_end, tz);
            e.holds.iter().for_each(|h| world.apply_hold(h));
            world.holds.remove(&(id, trigger));
            if record(rule, e.outcomes, out, max_fires) {
                return true;
            }
        }
    }
    false
}

fn record(rule: &Compiled, outcomes: Vec<Outcome>, out: &mut Replay, max_fires: usize) -> bool {
    for o in outcomes {
        if out.fires.len() >= max_fires {
            out.truncated = true;
            return true;
        }
        let actions = if o.run { rule.rule.actions.iter().map(|a| a.describe()).collect() } else { Vec::new() };
        out.fires.push(WouldFire { at: o.cause.at, trigger: o.cause.text, checks: o.checks, run: o.run, actions });
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;
    use chrono::Utc;
    use serde_json::json;

    fn compiled(v: serde_json::Value) -> Compiled {
        Compiled::new(1, serde_json::from_value(v).unwrap())
    }

    fn reading(metric: &str, v: f64, ts: i64) -> Reading {
        Reading { device: "d".into(), metric: metric.into(), ts, value: Value::Number(v), unit: None }
    }

    #[test]
    fn thresholds_holds_and_silence_fire_at_their_own_instants() {
        let rule = compiled(json!({ "name": "r", "triggers": [
                { "type": "threshold", "device": "d", "metric": "t", "above": 25.0, "for_s": 60 },
                { "type": "silent", "device": "d", "for_s": 600 }
            ],
            "actions": [{ "type": "mqtt", "device": "p", "metric": "power", "value": "on" }] }));
        let readings = [
            reading("t", 20.0, 0),
            reading("t", 26.0, 10_000),  // hot: the hold is due at 70 s
            reading("t", 27.0, 30_000),  // still hot
            reading("t", 26.5, 100_000), // hot again, but no new crossing
            reading("t", 20.0, 200_000), // cooled down
            reading("t", 30.0, 250_000), // hot, but cools at 280 s before its hold is due
            reading("t", 20.0, 280_000),
        ];
        let r = replay(&rule, World::default(), &readings, (0, 1_000_000), &Utc, 100);
        let at: Vec<(i64, &str)> = r.fires.iter().map(|f| (f.at, f.trigger.as_str())).collect();
        assert_eq!(
            at,
            vec![(70_000, "t of d stayed above 25 for 60 s: 27"), (880_000, "d sent nothing for 600 s")],
            "{r:?}"
        );
        assert_eq!(r.fires[0].actions, vec!["MQTT hearth/p/set/power = on"]);
    }

    #[test]
    fn every_occurrence_of_a_time_trigger_is_listed_and_the_list_is_bounded() {
        let rule = compiled(json!({ "name": "r", "triggers": [{ "type": "cron", "expr": "0 */15 * * * *" }],
            "actions": [{ "type": "notify", "message": "x" }] }));
        let hour = 3_600_000;
        let r = replay(&rule, World::default(), &[], (0, 2 * hour), &Utc, 100);
        let at: Vec<i64> = r.fires.iter().map(|f| f.at).collect();
        assert_eq!(at, (1..8).map(|i| i * 15 * 60_000).collect::<Vec<_>>(), "00:15 to 01:45; 02:00 is outside");
        let r = replay(&rule, World::default(), &[], (0, 24 * hour), &Utc, 10);
        assert_eq!((r.fires.len(), r.truncated), (10, true));
    }
}
