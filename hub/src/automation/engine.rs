//! The automation engine: a pure function of (rules, what is known, an event, now) to what
//! should happen. It decides which rules fire and why (or which condition stopped them),
//! and which "for N minutes" holds to arm or cancel. It does no I/O and reads no clock:
//! the runtime feeds it events and the time, and carries out its decisions.

use std::collections::HashMap;

use chrono::{Datelike, TimeZone, Timelike};

use super::model::{Condition, Op, Rule, Trigger, parse_cron, parse_time_of_day};
use crate::reading::{Reading, Value};

pub type RuleId = i64;

/// A chain of rules setting virtual values that start other rules stops this deep.
pub const MAX_DEPTH: u8 = 8;

/// A rule ready to evaluate: its time triggers parsed once.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub id: RuleId,
    pub rule: Rule,
    /// For each trigger, its schedule if it is a time or cron trigger.
    schedules: Vec<Option<croner::Cron>>,
}

impl Compiled {
    /// Parses the rule's schedules. The rule was validated when saved; a schedule that no
    /// longer parses (it cannot, short of a corrupt row) never fires.
    pub fn new(id: RuleId, rule: Rule) -> Self {
        let schedules = rule
            .triggers
            .iter()
            .map(|t| match t {
                Trigger::Cron { expr } => parse_cron(expr).ok(),
                Trigger::Time { at, weekdays } => {
                    let t = parse_time_of_day(at).ok()?;
                    let days = if weekdays.is_empty() {
                        "*".to_owned()
                    } else {
                        weekdays.iter().map(|d| d.num_days_from_sunday().to_string()).collect::<Vec<_>>().join(",")
                    };
                    parse_cron(&format!("{} {} {} * * {days}", t.second(), t.minute(), t.hour())).ok()
                }
                _ => None,
            })
            .collect();
        Self { id, rule, schedules }
    }
}

/// What the engine knows of one data subject's home: latest readings, when each device
/// was last heard, virtual values, and the holds that are armed.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub latest: HashMap<(String, String), (Value, i64)>,
    pub last_seen: HashMap<String, i64>,
    pub virtuals: HashMap<String, Value>,
    /// (rule, trigger) -> when the hold is due.
    pub holds: HashMap<(RuleId, usize), i64>,
}

impl World {
    /// Records a reading, after the engine has seen it as an event.
    pub fn apply(&mut self, r: &Reading) {
        let key = (r.device.clone(), r.metric.clone());
        // A late reading (older than the latest known) does not replace it.
        if self.latest.get(&key).is_none_or(|(_, ts)| *ts <= r.ts) {
            self.latest.insert(key, (r.value.clone(), r.ts));
        }
        let seen = self.last_seen.entry(r.device.clone()).or_insert(r.ts);
        *seen = (*seen).max(r.ts);
    }

    pub fn apply_hold(&mut self, op: &HoldOp) {
        match *op {
            HoldOp::Arm { rule, trigger, due } => {
                self.holds.insert((rule, trigger), due);
            }
            HoldOp::Cancel { rule, trigger } => {
                self.holds.remove(&(rule, trigger));
            }
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A device's reading was accepted (before `World::apply`).
    Reading(&'a Reading),
    /// A virtual value changed, set by a rule run `depth` steps down a chain.
    Virtual { name: &'a str, value: &'a Value, depth: u8 },
    /// Time moved on from `from` to `to` (ms). `catch_up`: the span the hub was down, in
    /// which only rules that ask for it fire, once.
    Tick { from: i64, to: i64, catch_up: bool },
    /// The hub started.
    Start,
    /// A hold armed earlier came due.
    HoldDue { rule: RuleId, trigger: usize },
}

pub use hearth_model::{Cause, Check};

/// A trigger of a rule fired: the conditions were checked (in order, stopping at the first
/// that failed), and `run` says whether the rule's actions should run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub rule: RuleId,
    pub trigger: usize,
    pub cause: Cause,
    pub checks: Vec<Check>,
    pub run: bool,
    /// Why it does not run, if not for a condition (a loop bound).
    pub refused: Option<String>,
    /// How far down a chain of virtual values this run is.
    pub depth: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOp {
    Arm { rule: RuleId, trigger: usize, due: i64 },
    Cancel { rule: RuleId, trigger: usize },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub outcomes: Vec<Outcome>,
    pub holds: Vec<HoldOp>,
}

/// Whether a reading's value is the one a change trigger waits for (`"on"` and `true` are
/// one, as commands take them; texts whatever their case).
fn becomes(to: &Value, value: &Value) -> bool {
    match (to, value) {
        (Value::Text(t), Value::Bool(b)) => match t.to_ascii_lowercase().as_str() {
            "on" | "true" | "open" => *b,
            "off" | "false" | "closed" => !*b,
            _ => false,
        },
        (Value::Text(a), Value::Text(b)) => a.eq_ignore_ascii_case(b),
        (Value::Number(a), Value::Number(b)) => (a - b).abs() < 1e-9,
        (a, b) => a == b,
    }
}

/// Decides what `event` sets off among `rules`, given `world` and the time `now` (ms) in
/// time zone `tz` (the hub's local time, for time-of-day triggers and conditions).
pub fn evaluate<Tz: TimeZone>(rules: &[Compiled], world: &World, event: &Event<'_>, now: i64, tz: &Tz) -> Evaluation {
    let mut out = Evaluation::default();
    for c in rules {
        for (i, trigger) in c.rule.triggers.iter().enumerate() {
            let cause = match (trigger, event) {
                (Trigger::Reading { device, metric }, Event::Reading(r)) if same(r, device, metric) => {
                    Some(reading_cause(r, format!("{metric} of {device} reported {}", show(&r.value))))
                }
                (Trigger::Change { device, metric, to }, Event::Reading(r)) if same(r, device, metric) => {
                    let before = world.latest.get(&(r.device.clone(), r.metric.clone()));
                    match before {
                        _ if to.as_ref().is_some_and(|to| !becomes(to, &r.value)) => None,
                        Some((v, ts)) if *v == r.value || *ts > r.ts => None,
                        Some((v, _)) => Some(reading_cause(
                            r,
                            format!("{metric} of {device} changed from {} to {}", show(v), show(&r.value)),
                        )),
                        None => {
                            Some(reading_cause(r, format!("{metric} of {device} first reported {}", show(&r.value))))
                        }
                    }
                }
                (Trigger::Threshold { device, metric, above, below, for_s }, Event::Reading(r))
                    if same(r, device, metric) =>
                {
                    let inside = |v: &Value| number(v).is_some_and(|n| in_range(n, *above, *below));
                    let before = world.latest.get(&(r.device.clone(), r.metric.clone()));
                    if before.is_some_and(|(_, ts)| *ts > r.ts) {
                        None // a late reading says nothing about now
                    } else {
                        let was = before.is_some_and(|(v, _)| inside(v));
                        let is = inside(&r.value);
                        let armed = world.holds.contains_key(&(c.id, i));
                        let range = describe_range(*above, *below);
                        match (was, is, for_s) {
                            (false, true, None) => {
                                Some(reading_cause(r, format!("{metric} of {device} went {range}: {}", show(&r.value))))
                            }
                            (false, true, Some(s)) => {
                                out.holds.push(HoldOp::Arm { rule: c.id, trigger: i, due: now + i64::from(*s) * 1000 });
                                None
                            }
                            (_, false, _) if armed => {
                                out.holds.push(HoldOp::Cancel { rule: c.id, trigger: i });
                                None
                            }
                            _ => None,
                        }
                    }
                }
                (Trigger::Threshold { device, metric, above, below, for_s }, Event::HoldDue { rule, trigger })
                    if *rule == c.id && *trigger == i =>
                {
                    out.holds.push(HoldOp::Cancel { rule: c.id, trigger: i });
                    let latest = world.latest.get(&(device.clone(), metric.clone()));
                    match latest {
                        Some((v, ts))
                            if world.holds.contains_key(&(c.id, i))
                                && number(v).is_some_and(|n| in_range(n, *above, *below)) =>
                        {
                            Some(Cause {
                                text: format!(
                                    "{metric} of {device} stayed {} for {} s: {}",
                                    describe_range(*above, *below),
                                    for_s.unwrap_or(0),
                                    show(v)
                                ),
                                device: Some(device.clone()),
                                metric: Some(metric.clone()),
                                value: Some(v.clone()),
                                at: (*ts).max(now),
                            })
                        }
                        _ => None,
                    }
                }
                (Trigger::Silent { device, for_s }, Event::Tick { from, to, catch_up })
                    if !catch_up || c.rule.catch_up =>
                {
                    let due = world.last_seen.get(device).map(|seen| seen + i64::from(*for_s) * 1000);
                    due.filter(|d| d > from && d <= to).map(|d| Cause {
                        text: format!("{device} sent nothing for {for_s} s"),
                        device: Some(device.clone()),
                        metric: None,
                        value: None,
                        at: d,
                    })
                }
                (Trigger::Time { .. } | Trigger::Cron { .. }, Event::Tick { from, to, catch_up })
                    if !catch_up || c.rule.catch_up =>
                {
                    let schedule = c.schedules.get(i).and_then(Option::as_ref);
                    schedule.and_then(|s| next_occurrence(s, *from, tz)).filter(|at| at <= to).map(|at| Cause {
                        text: match trigger {
                            Trigger::Time { at: t, .. } => format!("it is {t}"),
                            Trigger::Cron { expr } => format!("schedule {expr:?}"),
                            _ => String::new(),
                        } + if *catch_up { " (missed while the hub was down)" } else { "" },
                        device: None,
                        metric: None,
                        value: None,
                        at,
                    })
                }
                (Trigger::Interval { every_s }, Event::Tick { from, to, catch_up }) if !catch_up || c.rule.catch_up => {
                    let every = i64::from(*every_s) * 1000;
                    (to.div_euclid(every) > from.div_euclid(every)).then(|| Cause {
                        text: format!("every {every_s} s"),
                        device: None,
                        metric: None,
                        value: None,
                        at: (from.div_euclid(every) + 1) * every,
                    })
                }
                (Trigger::Start, Event::Start) => {
                    Some(Cause { text: "the hub started".into(), device: None, metric: None, value: None, at: now })
                }
                (Trigger::Virtual { name }, Event::Virtual { name: changed, value, .. }) if name == changed => {
                    Some(Cause {
                        text: format!("{name} became {}", show(value)),
                        device: None,
                        metric: None,
                        value: Some((*value).clone()),
                        at: now,
                    })
                }
                _ => None,
            };
            let Some(cause) = cause else { continue };
            let depth = match event {
                Event::Virtual { depth, .. } => *depth,
                _ => 0,
            };
            if depth >= MAX_DEPTH {
                out.outcomes.push(Outcome {
                    rule: c.id,
                    trigger: i,
                    cause,
                    checks: Vec::new(),
                    run: false,
                    refused: Some(format!("stopped: {MAX_DEPTH} rules in a row set values that start each other")),
                    depth,
                });
                continue;
            }
            // Conditions see the reading that triggered them, as if already applied.
            let fresh = match event {
                Event::Reading(r) => Some(*r),
                _ => None,
            };
            let (run, checks) = check_all(&c.rule.conditions, &View { world, fresh }, now, tz);
            out.outcomes.push(Outcome { rule: c.id, trigger: i, cause, checks, run, refused: None, depth });
        }
    }
    out
}

fn same(r: &Reading, device: &str, metric: &str) -> bool {
    r.device == device && r.metric == metric
}

fn reading_cause(r: &Reading, text: String) -> Cause {
    Cause {
        text,
        device: Some(r.device.clone()),
        metric: Some(r.metric.clone()),
        value: Some(r.value.clone()),
        at: r.ts,
    }
}

/// A value as a number: numbers as they are, on/off as 1/0.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Text(_) => None,
    }
}

fn in_range(n: f64, above: Option<f64>, below: Option<f64>) -> bool {
    above.is_none_or(|a| n > a) && below.is_none_or(|b| n < b)
}

fn describe_range(above: Option<f64>, below: Option<f64>) -> String {
    match (above, below) {
        (Some(a), Some(b)) => format!("between {a} and {b}"),
        (Some(a), None) => format!("above {a}"),
        (None, Some(b)) => format!("below {b}"),
        (None, None) => "anywhere".into(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Bool(b) => if *b { "on" } else { "off" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Text(t) => format!("{t:?}"),
    }
}

/// The first time `schedule` matches strictly after `after` (ms), in `tz`.
fn next_occurrence<Tz: TimeZone>(schedule: &croner::Cron, after: i64, tz: &Tz) -> Option<i64> {
    let start = tz.timestamp_millis_opt(after).single()?;
    schedule.find_next_occurrence(&start, false).ok().map(|t| t.timestamp_millis())
}

fn compare(left: &Value, op: Op, right: &Value) -> bool {
    let ordering = match (number(left), number(right)) {
        (Some(a), Some(b)) if !matches!((left, right), (Value::Text(_), _) | (_, Value::Text(_))) => a.partial_cmp(&b),
        _ => match (left, right) {
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            _ => None,
        },
    };
    match (op, ordering) {
        (Op::Eq, o) => o == Some(std::cmp::Ordering::Equal),
        (Op::Ne, o) => o != Some(std::cmp::Ordering::Equal),
        (_, None) => false,
        (Op::Lt, Some(o)) => o.is_lt(),
        (Op::Le, Some(o)) => o.is_le(),
        (Op::Gt, Some(o)) => o.is_gt(),
        (Op::Ge, Some(o)) => o.is_ge(),
    }
}

fn op_str(op: Op) -> &'static str {
    match op {
        Op::Eq => "==",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

/// What conditions see: the world, with the reading being evaluated on top.
struct View<'a> {
    world: &'a World,
    fresh: Option<&'a Reading>,
}

impl View<'_> {
    fn latest(&self, device: &str, metric: &str) -> Option<&Value> {
        let known = self.world.latest.get(&(device.to_owned(), metric.to_owned()));
        match self.fresh {
            Some(r) if same(r, device, metric) && known.is_none_or(|(_, ts)| *ts <= r.ts) => Some(&r.value),
            _ => known.map(|(v, _)| v),
        }
    }
}

/// Checks the conditions in order; stops at the first that fails.
fn check_all<Tz: TimeZone>(conditions: &[Condition], world: &View<'_>, now: i64, tz: &Tz) -> (bool, Vec<Check>) {
    let mut checks = Vec::with_capacity(conditions.len());
    for c in conditions {
        let (passed, text) = check(c, world, now, tz);
        checks.push(Check { condition: text, passed });
        if !passed {
            return (false, checks);
        }
    }
    (true, checks)
}

fn check<Tz: TimeZone>(c: &Condition, world: &View<'_>, now: i64, tz: &Tz) -> (bool, String) {
    match c {
        Condition::Compare { device, metric, op, value } => {
            let latest = world.latest(device, metric);
            let now_is = latest.map_or("nothing yet".to_owned(), show);
            let passed = latest.map_or(*op == Op::Ne, |v| compare(v, *op, value));
            (passed, format!("{metric} of {device} ({now_is}) {} {}", op_str(*op), show(value)))
        }
        Condition::Virtual { name, op, value } => {
            let current = world.world.virtuals.get(name);
            let now_is = current.map_or("not set".to_owned(), show);
            (
                current.map_or(*op == Op::Ne, |v| compare(v, *op, value)),
                format!("{name} ({now_is}) {} {}", op_str(*op), show(value)),
            )
        }
        Condition::Time { after, before, weekdays } => {
            let local = tz.timestamp_millis_opt(now).single().map(|t| t.naive_local());
            let passed = local.is_some_and(|t| {
                let time = t.time();
                let a = after.as_deref().and_then(|s| parse_time_of_day(s).ok());
                let b = before.as_deref().and_then(|s| parse_time_of_day(s).ok());
                let in_window = match (a, b) {
                    (Some(a), Some(b)) if a <= b => time >= a && time < b,
                    (Some(a), Some(b)) => time >= a || time < b, // wraps midnight
                    (Some(a), None) => time >= a,
                    (None, Some(b)) => time < b,
                    (None, None) => true,
                };
                in_window
                    && (weekdays.is_empty()
                        || weekdays.iter().any(|d| d.num_days_from_sunday() == t.weekday().num_days_from_sunday()))
            });
            let mut text = match (after, before) {
                (Some(a), Some(b)) => format!("time between {a} and {b}"),
                (Some(a), None) => format!("time after {a}"),
                (None, Some(b)) => format!("time before {b}"),
                (None, None) => "any time".into(),
            };
            if !weekdays.is_empty() {
                text += &format!(" on {}", weekdays.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
            }
            (passed, text)
        }
        Condition::All { conditions } => {
            let parts: Vec<(bool, String)> = conditions.iter().map(|c| check(c, world, now, tz)).collect();
            (parts.iter().all(|p| p.0), format!("all of ({})", join(&parts)))
        }
        Condition::Any { conditions } => {
            let parts: Vec<(bool, String)> = conditions.iter().map(|c| check(c, world, now, tz)).collect();
            (parts.iter().any(|p| p.0), format!("any of ({})", join(&parts)))
        }
        Condition::Not { condition } => {
            let (passed, text) = check(condition, world, now, tz);
            (!passed, format!("not ({text})"))
        }
    }
}

fn join(parts: &[(bool, String)]) -> String {
    parts.iter().map(|(p, t)| format!("{t}: {}", if *p { "yes" } else { "no" })).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn compiled(id: RuleId, v: serde_json::Value) -> Compiled {
        Compiled::new(id, serde_json::from_value(v).unwrap())
    }

    fn reading(device: &str, metric: &str, value: Value, ts: i64) -> Reading {
        Reading { device: device.into(), metric: metric.into(), ts, value, unit: None }
    }

    fn fired(e: &Evaluation) -> Vec<(RuleId, bool)> {
        e.outcomes.iter().map(|o| (o.rule, o.run)).collect()
    }

    /// Feeds readings through the engine the way the runtime does.
    fn feed(rules: &[Compiled], world: &mut World, r: &Reading, now: i64) -> Evaluation {
        let e = evaluate(rules, world, &Event::Reading(r), now, &Utc);
        e.holds.iter().for_each(|h| world.apply_hold(h));
        world.apply(r);
        e
    }

    #[test]
    fn reading_change_and_threshold_triggers() {
        let rules = [
            compiled(
                1,
                json!({ "name": "any", "triggers": [{ "type": "reading", "device": "d", "metric": "t" }],
                "actions": [{ "type": "notify", "message": "x" }] }),
            ),
            compiled(
                2,
                json!({ "name": "change", "triggers": [{ "type": "change", "device": "d", "metric": "t" }],
                "actions": [{ "type": "notify", "message": "x" }] }),
            ),
            compiled(
                3,
                json!({ "name": "cold", "triggers": [{ "type": "threshold", "device": "d", "metric": "t", "below": 18.0 }],
                "actions": [{ "type": "notify", "message": "x" }] }),
            ),
        ];
        let mut w = World::default();
        let n = |v: f64| Value::Number(v);
        assert_eq!(fired(&feed(&rules, &mut w, &reading("d", "t", n(20.0), 1), 1)), vec![(1, true), (2, true)]);
        assert_eq!(fired(&feed(&rules, &mut w, &reading("d", "t", n(20.0), 2), 2)), vec![(1, true)]);
        // Crossing below 18 fires once; staying below does not fire again.
        let e = feed(&rules, &mut w, &reading("d", "t", n(17.0), 3), 3);
        assert_eq!(fired(&e), vec![(1, true), (2, true), (3, true)]);
        assert_eq!(e.outcomes[2].cause.text, "t of d went below 18: 17");
        assert_eq!(fired(&feed(&rules, &mut w, &reading("d", "t", n(16.0), 4), 4)), vec![(1, true), (2, true)]);
        // Back up and down again: fires again.
        feed(&rules, &mut w, &reading("d", "t", n(19.0), 5), 5);
        assert!(fired(&feed(&rules, &mut w, &reading("d", "t", n(10.0), 6), 6)).contains(&(3, true)));
        // Another metric or device: nothing.
        assert!(feed(&rules, &mut w, &reading("d", "h", n(1.0), 7), 7).outcomes.is_empty());
        assert!(feed(&rules, &mut w, &reading("e", "t", n(1.0), 7), 7).outcomes.is_empty());
        // A late reading (older than the latest) is no change and no crossing.
        let late = feed(&rules, &mut w, &reading("d", "t", n(30.0), 1), 8);
        assert_eq!(fired(&late), vec![(1, true)]);
    }

    /// "When the door opens": a change to one value only, however the value is written.
    #[test]
    fn a_change_to_one_value() {
        let rules = [
            compiled(
                1,
                json!({ "name": "opens", "triggers": [{ "type": "change", "device": "door", "metric": "contact", "to": true }],
                "actions": [{ "type": "notify", "message": "x" }] }),
            ),
            compiled(
                2,
                json!({ "name": "closes", "triggers": [{ "type": "change", "device": "door", "metric": "contact", "to": "off" }],
                "actions": [{ "type": "notify", "message": "x" }] }),
            ),
        ];
        let mut w = World::default();
        let b = Value::Bool;
        assert_eq!(fired(&feed(&rules, &mut w, &reading("door", "contact", b(false), 1), 1)), vec![(2, true)]);
        assert_eq!(fired(&feed(&rules, &mut w, &reading("door", "contact", b(true), 2), 2)), vec![(1, true)]);
        assert!(fired(&feed(&rules, &mut w, &reading("door", "contact", b(true), 3), 3)).is_empty(), "no change");
        assert_eq!(fired(&feed(&rules, &mut w, &reading("door", "contact", b(false), 4), 4)), vec![(2, true)]);
    }

    #[test]
    fn conditions_see_the_reading_that_triggered_them() {
        let rules = [compiled(
            1,
            json!({ "name": "r", "triggers": [{ "type": "threshold", "device": "d", "metric": "t", "below": 18.0 }],
            "conditions": [{ "type": "compare", "device": "d", "metric": "t", "op": "<", "value": 20 }],
            "actions": [{ "type": "notify", "message": "x" }] }),
        )];
        let mut w = World::default();
        feed(&rules, &mut w, &reading("d", "t", Value::Number(20.0), 1), 1);
        let e = feed(&rules, &mut w, &reading("d", "t", Value::Number(17.0), 2), 2);
        assert_eq!(e.outcomes[0].checks[0], Check { condition: "t of d (17) < 20".into(), passed: true });
    }

    #[test]
    fn a_threshold_with_for_fires_only_if_it_holds() {
        let rules = [compiled(
            7,
            json!({ "name": "hot", "triggers": [{ "type": "threshold", "device": "d", "metric": "t",
            "above": 25.0, "for_s": 60 }], "actions": [{ "type": "notify", "message": "x" }] }),
        )];
        let mut w = World::default();
        let e = feed(&rules, &mut w, &reading("d", "t", Value::Number(26.0), 1000), 1000);
        assert_eq!(e.holds, vec![HoldOp::Arm { rule: 7, trigger: 0, due: 61_000 }]);
        assert!(e.outcomes.is_empty());
        // Still hot when due: fires, and the hold is released.
        let due = evaluate(&rules, &w, &Event::HoldDue { rule: 7, trigger: 0 }, 61_000, &Utc);
        assert_eq!(fired(&due), vec![(7, true)]);
        assert!(due.outcomes[0].cause.text.contains("stayed above 25 for 60 s"));
        assert_eq!(due.holds, vec![HoldOp::Cancel { rule: 7, trigger: 0 }]);
        // Cooling down before it is due cancels the hold: nothing fires.
        let mut w = World::default();
        feed(&rules, &mut w, &reading("d", "t", Value::Number(26.0), 1000), 1000);
        let e = feed(&rules, &mut w, &reading("d", "t", Value::Number(24.0), 2000), 2000);
        assert_eq!(e.holds, vec![HoldOp::Cancel { rule: 7, trigger: 0 }]);
        assert!(w.holds.is_empty());
        assert!(evaluate(&rules, &w, &Event::HoldDue { rule: 7, trigger: 0 }, 61_000, &Utc).outcomes.is_empty());
    }

    #[test]
    fn conditions_are_traced_and_stop_at_the_first_failure() {
        let rules = [compiled(
            1,
            json!({ "name": "r", "triggers": [{ "type": "reading", "device": "d", "metric": "motion" }],
            "conditions": [
                { "type": "compare", "device": "d", "metric": "lux", "op": "<", "value": 50 },
                { "type": "virtual", "name": "away", "op": "!=", "value": true },
                { "type": "time", "after": "18:00", "before": "06:00" }
            ],
            "actions": [{ "type": "notify", "message": "x" }] }),
        )];
        let mut w = World::default();
        let motion = reading("d", "motion", Value::Bool(true), 0);
        // No lux reading yet: the first condition fails, the others are not checked.
        let e = evaluate(&rules, &w, &Event::Reading(&motion), 0, &Utc);
        assert_eq!(
            e.outcomes[0].checks,
            vec![Check { condition: "lux of d (nothing yet) < 50".into(), passed: false }]
        );
        assert!(!e.outcomes[0].run);
        // A value never set is "not equal" to anything, and neither less nor more.
        let unset = World::default();
        let ne = Condition::Virtual { name: "away".into(), op: Op::Ne, value: Value::Bool(true) };
        let eq = Condition::Virtual { name: "away".into(), op: Op::Eq, value: Value::Bool(true) };
        let view = View { world: &unset, fresh: None };
        assert_eq!((check(&ne, &view, 0, &Utc).0, check(&eq, &view, 0, &Utc).0), (true, false));
        w.apply(&reading("d", "lux", Value::Number(10.0), 0));
        // 1970-01-01 00:00 UTC is inside 18:00-06:00 (it wraps midnight); 12:00 is not.
        let e = evaluate(&rules, &w, &Event::Reading(&motion), 0, &Utc);
        assert!(e.outcomes[0].run, "{:?}", e.outcomes[0].checks);
        let e = evaluate(&rules, &w, &Event::Reading(&motion), 12 * 3_600_000, &Utc);
        assert_eq!(e.outcomes[0].checks.last().map(|c| c.passed), Some(false));
        w.virtuals.insert("away".into(), Value::Bool(true));
        let e = evaluate(&rules, &w, &Event::Reading(&motion), 0, &Utc);
        assert_eq!(e.outcomes[0].checks[1], Check { condition: "away (on) != on".into(), passed: false });
    }

    #[test]
    fn time_cron_interval_and_silence_fire_in_their_tick() {
        let rules = [
            compiled(
                1,
                json!({ "name": "t", "triggers": [{ "type": "time", "at": "07:30" }], "actions": [{ "type": "notify", "message": "x" }] }),
            ),
            compiled(
                2,
                json!({ "name": "c", "triggers": [{ "type": "cron", "expr": "*/15 * * * *" }], "actions": [{ "type": "notify", "message": "x" }] }),
            ),
            compiled(
                3,
                json!({ "name": "i", "triggers": [{ "type": "interval", "every_s": 10 }], "actions": [{ "type": "notify", "message": "x" }] }),
            ),
            compiled(
                4,
                json!({ "name": "s", "triggers": [{ "type": "silent", "device": "d", "for_s": 600 }], "actions": [{ "type": "notify", "message": "x" }] }),
            ),
            compiled(
                5,
                json!({ "name": "late", "catch_up": true, "triggers": [{ "type": "time", "at": "07:30" }], "actions": [{ "type": "notify", "message": "x" }] }),
            ),
        ];
        let mut w = World::default();
        w.last_seen.insert("d".into(), 7 * 3_600_000 + 20 * 60_000);
        let at = |h: i64, m: i64, s: i64| (h * 3600 + m * 60 + s) * 1000;
        let tick = |from, to, catch_up| {
            let mut ids: Vec<RuleId> = evaluate(&rules, &w, &Event::Tick { from, to, catch_up }, to, &Utc)
                .outcomes
                .iter()
                .map(|o| o.rule)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(tick(at(7, 29, 59), at(7, 30, 0), false), vec![1, 2, 3, 4, 5]);
        assert_eq!(tick(at(7, 30, 0), at(7, 30, 1), false), Vec::<RuleId>::new());
        assert_eq!(tick(at(7, 30, 1), at(7, 30, 10), false), vec![3]);
        // Down from 07:00 to 08:00: only the catch-up rule runs, once.
        assert_eq!(tick(at(7, 0, 0), at(8, 0, 0), true), vec![5]);
    }

    #[test]
    fn chains_of_virtual_values_are_bounded() {
        let rules = [compiled(
            1,
            json!({ "name": "r", "triggers": [{ "type": "virtual", "name": "mode" }],
            "actions": [{ "type": "notify", "message": "x" }] }),
        )];
        let w = World::default();
        let v = Value::Text("away".into());
        let e = evaluate(&rules, &w, &Event::Virtual { name: "mode", value: &v, depth: 1 }, 0, &Utc);
        assert_eq!((e.outcomes[0].run, e.outcomes[0].depth), (true, 1));
        let e = evaluate(&rules, &w, &Event::Virtual { name: "mode", value: &v, depth: MAX_DEPTH }, 0, &Utc);
        assert!(!e.outcomes[0].run && e.outcomes[0].refused.as_deref().is_some_and(|r| r.contains("in a row")));
    }
}
