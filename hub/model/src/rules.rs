//! What a rule is, as stored, edited in the UI, imported and exported: triggers, conditions
//! and actions. The hub checks a rule before it saves it (times of day, cron expressions and
//! the devices an author may use need more than this crate has).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Value;

/// Limits that keep one rule small enough to evaluate on every reading.
pub const MAX_TRIGGERS: usize = 16;
pub const MAX_ACTIONS: usize = 32;
pub const MAX_CONDITION_DEPTH: usize = 4;
pub const MAX_CONDITIONS: usize = 32;
/// Longest "for N" hold, silence, delay and interval: a week.
pub const MAX_SECONDS: u32 = 7 * 24 * 3600;
/// Most runs of one rule at once (queued or parallel).
pub const MAX_RUNS: u16 = 100;

/// A rule as its author wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// A disabled rule is kept but never runs.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// What starts a run; any one of them.
    pub triggers: Vec<Trigger>,
    /// All must hold when a trigger fires, or the run stops there (and says which failed).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Done in order; a delay pauses the run (and survives a restart).
    pub actions: Vec<Action>,
    /// What happens when a trigger fires while a run is still going.
    #[serde(default)]
    pub mode: Mode,
    /// Runs at once (parallel) or waiting (queued); ignored by single and restart.
    #[serde(default = "default_max_runs")]
    pub max_runs: u16,
    /// Run once at start if a time trigger came due while the hub was down.
    #[serde(default)]
    pub catch_up: bool,
    /// Saved although it listens to or sets a value its device never reported or
    /// announced (the author knows it will); without it such a rule is refused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insist: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How a rule uses one of a device's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    /// Listens to it (a trigger or a condition).
    Hears,
    /// Sets it (an MQTT action).
    Sets,
}

fn enabled_by_default() -> bool {
    true
}

fn default_max_runs() -> u16 {
    10
}

/// Home Assistant's run modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A trigger while a run is going is ignored (and traced as such).
    #[default]
    Single,
    /// A trigger stops the run that is going and starts afresh.
    Restart,
    /// Runs wait their turn, at most `max_runs` waiting.
    Queued,
    /// Runs go side by side, at most `max_runs` at once.
    Parallel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Every reading of the metric.
    Reading { device: String, metric: String },
    /// A reading whose value differs from the previous one; with `to`, only one that
    /// becomes `to` (a door that opens: `true`).
    Change {
        device: String,
        metric: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Value>,
    },
    /// The value enters the range (`above` < value < `below`; either bound may be left
    /// out), and with `for_s` stays in it that long.
    Threshold {
        device: String,
        metric: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_s: Option<u32>,
    },
    /// The device has sent nothing for `for_s` seconds.
    Silent { device: String, for_s: u32 },
    /// Every day (or the weekdays listed) at this local time, `HH:MM` or `HH:MM:SS`.
    Time {
        at: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        weekdays: Vec<Weekday>,
    },
    /// Every `every_s` seconds, aligned to the clock (every 60 s fires on the minute).
    Interval { every_s: u32 },
    /// A cron expression in local time (5 fields, or 6 with seconds first).
    Cron { expr: String },
    /// When the hub starts.
    Start,
    /// A virtual value (helper, mode) changes.
    Virtual { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The latest reading of a metric compared with a value. No reading yet: only `!=` holds.
    Compare {
        device: String,
        metric: String,
        op: Op,
        value: Value,
    },
    /// A virtual value compared with a value. Never set: only `!=` holds.
    Virtual {
        name: String,
        op: Op,
        value: Value,
    },
    /// Local time of day within `[after, before)` (which may wrap midnight), on the
    /// weekdays listed (all if none).
    Time {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        weekdays: Vec<Weekday>,
    },
    All {
        conditions: Vec<Condition>,
    },
    Any {
        conditions: Vec<Condition>,
    },
    Not {
        condition: Box<Condition>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Publish `value` to `hearth/<device>/set/<metric>` (the device subscribes to it).
    Mqtt { device: String, metric: String, value: Value },
    /// A CoAP request (confirmable) to `path` on a registered device, at the CoAP address
    /// the owner gave it (`PUT /api/devices/{id}/coap-address`), e.g. `light`.
    Coap {
        device: String,
        path: String,
        #[serde(default)]
        method: CoapMethod,
        payload: String,
    },
    /// Set a virtual value.
    Set { name: String, value: Value },
    /// A message shown to the rule's author in the UI.
    Notify { message: String },
    /// Wait before the next action.
    Delay { seconds: u32 },
    /// Send to a configured cloud destination through the durable outbox. The message
    /// carries `payload` and what triggered the run.
    Cloud {
        destination: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        #[serde(default)]
        payload: serde_json::Value,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoapMethod {
    #[default]
    Put,
    Post,
}

impl Rule {
    /// Devices the rule reads or commands, for the API to check the author may use them.
    pub fn devices(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for t in &self.triggers {
            match t {
                Trigger::Reading { device, .. }
                | Trigger::Change { device, .. }
                | Trigger::Threshold { device, .. }
                | Trigger::Silent { device, .. } => {
                    out.insert(device.as_str());
                }
                _ => {}
            }
        }
        out.extend(self.compared().into_iter().map(|(device, _)| device));
        for a in &self.actions {
            if let Action::Mqtt { device, .. } | Action::Coap { device, .. } = a {
                out.insert(device);
            }
        }
        out
    }

    /// The devices' values this rule listens to or sets: (device, metric, how).
    pub fn metrics(&self) -> BTreeSet<(&str, &str, Use)> {
        let mut out = BTreeSet::new();
        for t in &self.triggers {
            if let Trigger::Reading { device, metric }
            | Trigger::Change { device, metric, .. }
            | Trigger::Threshold { device, metric, .. } = t
            {
                out.insert((device.as_str(), metric.as_str(), Use::Hears));
            }
        }
        out.extend(self.compared().into_iter().map(|(device, metric)| (device, metric, Use::Hears)));
        for a in &self.actions {
            if let Action::Mqtt { device, metric, .. } = a {
                out.insert((device.as_str(), metric.as_str(), Use::Sets));
            }
        }
        out
    }

    /// The (device, metric) its conditions compare, nested ones included.
    fn compared(&self) -> Vec<(&str, &str)> {
        fn walk<'a>(c: &'a Condition, out: &mut Vec<(&'a str, &'a str)>) {
            match c {
                Condition::Compare { device, metric, .. } => out.push((device, metric)),
                Condition::All { conditions } | Condition::Any { conditions } => {
                    conditions.iter().for_each(|c| walk(c, out));
                }
                Condition::Not { condition } => walk(condition, out),
                Condition::Virtual { .. } | Condition::Time { .. } => {}
            }
        }
        let mut out = Vec::new();
        self.conditions.iter().for_each(|c| walk(c, &mut out));
        out
    }

    /// Virtual values whose change starts this rule.
    pub fn virtual_triggers(&self) -> impl Iterator<Item = &str> {
        self.triggers.iter().filter_map(|t| match t {
            Trigger::Virtual { name } => Some(name.as_str()),
            _ => None,
        })
    }

    /// Virtual values this rule sets.
    pub fn virtual_sets(&self) -> impl Iterator<Item = &str> {
        self.actions.iter().filter_map(|a| match a {
            Action::Set { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }
}

impl Action {
    /// The action in words, as run traces and dry runs show it.
    pub fn describe(&self) -> String {
        match self {
            Action::Mqtt { device, metric, value } => {
                format!("MQTT hearth/{device}/set/{metric} = {}", value.payload_text())
            }
            Action::Coap { device, path, method, .. } => {
                format!("CoAP {} {device}/{path}", if *method == CoapMethod::Put { "PUT" } else { "POST" })
            }
            Action::Set { name, value } => {
                format!("set {name} = {}", value.payload_text())
            }
            Action::Notify { message } => format!("notify: {message}"),
            Action::Delay { seconds } => format!("wait {seconds} s"),
            Action::Cloud { destination, .. } => format!("cloud {destination}"),
        }
    }
}

/// A day of the week, named as `Mon` to `Sun` (any case, or in full, is read too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    /// Sunday is 0, as cron counts.
    pub fn num_days_from_sunday(self) -> u32 {
        (self as u32 + 1) % 7
    }

    pub fn as_str(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self as usize]
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Weekday {
    type Err = crate::names::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FULL: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
        let lower = s.to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .zip(FULL)
            .find(|(d, full)| lower == d.as_str().to_ascii_lowercase() || lower == *full)
            .map(|(d, _)| d)
            .ok_or_else(|| crate::names::UnknownName::new("weekday", s))
    }
}

impl Serialize for Weekday {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Weekday {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A rule as the hub keeps it (`GET /api/rules`, and the answer to a save).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    pub id: i64,
    pub created: i64,
    pub updated: i64,
    pub rule: Rule,
    /// The newest run, if any.
    pub last_run: Option<crate::Trace>,
}

/// `POST /api/rules/dry-run`: replay `rule` over the caller's readings in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    pub rule: Rule,
    pub from: i64,
    pub to: i64,
}

/// One moment the rule would have fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WouldFire {
    pub at: i64,
    pub trigger: String,
    pub checks: Vec<crate::Check>,
    /// Whether the conditions held, so the actions would have run.
    pub run: bool,
    pub actions: Vec<String>,
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRun {
    pub from: i64,
    pub to: i64,
    /// Readings replayed.
    pub readings: usize,
    pub fires: Vec<WouldFire>,
    /// The list stopped at its limit.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_read_as_before_and_count_from_sunday() -> Result<(), serde_json::Error> {
        let days: Vec<Weekday> = serde_json::from_str(r#"["Mon", "tue", "Wednesday", "SUN"]"#)?;
        assert_eq!(days, [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Sun]);
        assert_eq!(serde_json::to_string(&days)?, r#"["Mon","Tue","Wed","Sun"]"#);
        assert_eq!(Weekday::ALL.map(Weekday::num_days_from_sunday), [1, 2, 3, 4, 5, 6, 0]);
        assert!(serde_json::from_str::<Weekday>(r#""Mo""#).is_err());
        Ok(())
    }

    #[test]
    fn an_action_says_what_it_does() {
        let on = Action::Mqtt { device: "lamp".into(), metric: "power".into(), value: Value::Bool(true) };
        assert_eq!(on.describe(), "MQTT hearth/lamp/set/power = true");
        assert_eq!(Action::Delay { seconds: 6 }.describe(), "wait 6 s");
    }
}
