//! What a rule is, as stored, edited in the UI, imported and exported: triggers, conditions
//! and actions, with the checks a rule must pass before it is saved. Pure data; the names of
//! devices are checked against the store by the API, not here.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use crate::reading::{MAX_TEXT_LEN, Value, valid_device_id, valid_metric};

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
    /// A reading whose value differs from the previous one.
    Change { device: String, metric: String },
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
    /// A CoAP request (confirmable) to a URI the device serves, e.g. `coap://192.0.2.7/light`.
    Coap {
        uri: String,
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

/// A command's payload: numbers and text as they are, on/off as `true`/`false`.
pub fn command_payload(value: &Value) -> Vec<u8> {
    match value {
        Value::Bool(b) => b.to_string().into_bytes(),
        Value::Number(n) => n.to_string().into_bytes(),
        Value::Text(t) => t.clone().into_bytes(),
    }
}

/// Why a rule was refused: the first problem found, said so its author can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

fn bad(msg: impl Into<String>) -> RuleError {
    RuleError(msg.into())
}

/// Parses `HH:MM` or `HH:MM:SS`.
pub fn parse_time_of_day(s: &str) -> Result<NaiveTime, RuleError> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .map_err(|_| bad(format!("{s:?} is not a time of day (HH:MM)")))
}

/// Parses a cron expression (5 fields, or 6 with seconds first).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, RuleError> {
    if expr.len() > 128 {
        return Err(bad("the cron expression is too long"));
    }
    croner::Cron::from_str(expr).map_err(|e| bad(format!("invalid cron expression {expr:?}: {e}")))
}

fn check_name(what: &str, name: &str) -> Result<(), RuleError> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(bad(format!("{what} must be 1 to 64 printable characters")));
    }
    Ok(())
}

fn check_device_metric(device: &str, metric: Option<&str>) -> Result<(), RuleError> {
    if !valid_device_id(device) {
        return Err(bad(format!("{device:?} is not a device id")));
    }
    if let Some(metric) = metric
        && !valid_metric(metric)
    {
        return Err(bad(format!("{metric:?} is not a metric name")));
    }
    Ok(())
}

fn check_seconds(what: &str, s: u32, least: u32) -> Result<(), RuleError> {
    if s < least || s > MAX_SECONDS {
        return Err(bad(format!("{what} must be between {least} s and {MAX_SECONDS} s")));
    }
    Ok(())
}

fn check_value(value: &Value) -> Result<(), RuleError> {
    match value {
        Value::Number(n) if !n.is_finite() => Err(bad("numbers must be finite")),
        Value::Text(t) if t.len() > MAX_TEXT_LEN => Err(bad(format!("text values are at most {MAX_TEXT_LEN} bytes"))),
        _ => Ok(()),
    }
}

impl Rule {
    /// Checks everything that can be checked without the store. `destinations` are the
    /// configured cloud destinations.
    pub fn validate(&self, destinations: &BTreeSet<String>) -> Result<(), RuleError> {
        check_name("the name", &self.name)?;
        if self.triggers.is_empty() || self.triggers.len() > MAX_TRIGGERS {
            return Err(bad(format!("a rule needs 1 to {MAX_TRIGGERS} triggers")));
        }
        if self.actions.is_empty() || self.actions.len() > MAX_ACTIONS {
            return Err(bad(format!("a rule needs 1 to {MAX_ACTIONS} actions")));
        }
        if self.max_runs == 0 || self.max_runs > MAX_RUNS {
            return Err(bad(format!("max_runs must be 1 to {MAX_RUNS}")));
        }
        for t in &self.triggers {
            t.validate()?;
        }
        let mut count = 0;
        for c in &self.conditions {
            c.validate(1, &mut count)?;
        }
        for a in &self.actions {
            a.validate(destinations)?;
        }
        Ok(())
    }

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
        fn walk<'a>(c: &'a Condition, out: &mut BTreeSet<&'a str>) {
            match c {
                Condition::Compare { device, .. } => {
                    out.insert(device);
                }
                Condition::All { conditions } | Condition::Any { conditions } => {
                    conditions.iter().for_each(|c| walk(c, out));
                }
                Condition::Not { condition } => walk(condition, out),
                Condition::Virtual { .. } | Condition::Time { .. } => {}
            }
        }
        self.conditions.iter().for_each(|c| walk(c, &mut out));
        for a in &self.actions {
            if let Action::Mqtt { device, .. } = a {
                out.insert(device);
            }
        }
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

impl Trigger {
    fn validate(&self) -> Result<(), RuleError> {
        match self {
            Trigger::Reading { device, metric } | Trigger::Change { device, metric } => {
                check_device_metric(device, Some(metric))
            }
            Trigger::Threshold { device, metric, above, below, for_s } => {
                check_device_metric(device, Some(metric))?;
                match (above, below) {
                    (None, None) => return Err(bad("a threshold needs `above`, `below` or both")),
                    (Some(a), Some(b)) if a >= b => return Err(bad("`above` must be less than `below`")),
                    _ => {}
                }
                if above.is_some_and(|v| !v.is_finite()) || below.is_some_and(|v| !v.is_finite()) {
                    return Err(bad("thresholds must be finite numbers"));
                }
                for_s.map_or(Ok(()), |s| check_seconds("`for_s`", s, 1))
            }
            Trigger::Silent { device, for_s } => {
                check_device_metric(device, None)?;
                check_seconds("`for_s`", *for_s, 1)
            }
            Trigger::Time { at, .. } => parse_time_of_day(at).map(|_| ()),
            Trigger::Interval { every_s } => check_seconds("`every_s`", *every_s, 1),
            Trigger::Cron { expr } => parse_cron(expr).map(|_| ()),
            Trigger::Start => Ok(()),
            Trigger::Virtual { name } => check_name("a virtual value's name", name),
        }
    }
}

impl Condition {
    fn validate(&self, depth: usize, count: &mut usize) -> Result<(), RuleError> {
        *count += 1;
        if depth > MAX_CONDITION_DEPTH || *count > MAX_CONDITIONS {
            return Err(bad(format!("conditions nest at most {MAX_CONDITION_DEPTH} deep, {MAX_CONDITIONS} in all")));
        }
        match self {
            Condition::Compare { device, metric, value, .. } => {
                check_device_metric(device, Some(metric))?;
                check_value(value)
            }
            Condition::Virtual { name, value, .. } => {
                check_name("a virtual value's name", name)?;
                check_value(value)
            }
            Condition::Time { after, before, .. } => {
                if after.is_none() && before.is_none() {
                    return Err(bad("a time condition needs `after`, `before` or both"));
                }
                for t in after.iter().chain(before) {
                    parse_time_of_day(t)?;
                }
                Ok(())
            }
            Condition::All { conditions } | Condition::Any { conditions } => {
                if conditions.is_empty() {
                    return Err(bad("`all` and `any` need at least one condition"));
                }
                conditions.iter().try_for_each(|c| c.validate(depth + 1, count))
            }
            Condition::Not { condition } => condition.validate(depth + 1, count),
        }
    }
}

impl Action {
    /// The action in words, as run traces and dry runs show it.
    pub fn describe(&self) -> String {
        match self {
            Action::Mqtt { device, metric, value } => {
                format!("MQTT hearth/{device}/set/{metric} = {}", String::from_utf8_lossy(&command_payload(value)))
            }
            Action::Coap { uri, method, .. } => {
                format!("CoAP {} {uri}", if *method == CoapMethod::Put { "PUT" } else { "POST" })
            }
            Action::Set { name, value } => {
                format!("set {name} = {}", String::from_utf8_lossy(&command_payload(value)))
            }
            Action::Notify { message } => format!("notify: {message}"),
            Action::Delay { seconds } => format!("wait {seconds} s"),
            Action::Cloud { destination, .. } => format!("cloud {destination}"),
        }
    }

    fn validate(&self, destinations: &BTreeSet<String>) -> Result<(), RuleError> {
        match self {
            Action::Mqtt { device, metric, value } => {
                check_device_metric(device, Some(metric))?;
                check_value(value)
            }
            Action::Coap { uri, payload, .. } => {
                parse_coap_uri(uri)?;
                if payload.len() > 1024 {
                    return Err(bad("a CoAP payload is at most 1024 bytes"));
                }
                Ok(())
            }
            Action::Set { name, value } => {
                check_name("a virtual value's name", name)?;
                check_value(value)
            }
            Action::Notify { message } => {
                if message.trim().is_empty() || message.chars().count() > 500 {
                    return Err(bad("a notification is 1 to 500 characters"));
                }
                Ok(())
            }
            Action::Delay { seconds } => check_seconds("a delay", *seconds, 1),
            Action::Cloud { destination, topic, payload } => {
                if !destinations.contains(destination) {
                    let known: Vec<&str> = destinations.iter().map(String::as_str).collect();
                    return Err(bad(format!(
                        "no cloud destination {destination:?} is configured (configured: {})",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    )));
                }
                if let Some(topic) = topic
                    && (topic.is_empty() || topic.len() > 256 || topic.contains(['+', '#', '\0']))
                {
                    return Err(bad("a cloud topic is 1 to 256 bytes without wildcards"));
                }
                if payload.to_string().len() > 16 * 1024 {
                    return Err(bad("a cloud payload is at most 16 KiB"));
                }
                Ok(())
            }
        }
    }
}

/// A CoAP action's target: `coap://HOST[:PORT]/path`, HOST an IP address (devices on the
/// home network; no name lookup on the automation path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapTarget {
    pub addr: std::net::SocketAddr,
    pub path: String,
}

pub fn parse_coap_uri(uri: &str) -> Result<CoapTarget, RuleError> {
    let rest = uri.strip_prefix("coap://").ok_or_else(|| bad("a CoAP URI starts with coap://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = if let Ok(addr) = authority.parse::<std::net::SocketAddr>() {
        addr
    } else {
        let host = authority.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr =
            host.parse().map_err(|_| bad(format!("{authority:?} is not an IP address (with an optional port)")))?;
        std::net::SocketAddr::new(ip, 5683)
    };
    if path.len() > 255 || path.chars().any(|c| c.is_control() || c == '?' || c == '#') {
        return Err(bad("the CoAP path is at most 255 characters, without a query"));
    }
    Ok(CoapTarget { addr, path: path.to_owned() })
}

/// Refuses a set of rules in which setting a virtual value starts a chain of rules that
/// comes back to set it again (directly or through others): such a loop would run forever.
/// Returns the loop found, named by rule.
pub fn find_virtual_loop<'a>(rules: &[(&'a str, &'a Rule)]) -> Option<Vec<&'a str>> {
    // Edge: rule A -> rule B when A sets a value that triggers B.
    let edges: Vec<Vec<usize>> = rules
        .iter()
        .map(|(_, a)| {
            let sets: BTreeSet<&str> = a.virtual_sets().collect();
            rules
                .iter()
                .enumerate()
                .filter(|(_, (_, b))| b.virtual_triggers().any(|t| sets.contains(t)))
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    // Depth-first search with colours; the path on the stack is the loop.
    fn visit(i: usize, edges: &[Vec<usize>], colour: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        colour[i] = 1;
        stack.push(i);
        for &j in &edges[i] {
            if colour[j] == 1 {
                let from = stack.iter().position(|&k| k == j).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if colour[j] == 0
                && let Some(cycle) = visit(j, edges, colour, stack)
            {
                return Some(cycle);
            }
        }
        stack.pop();
        colour[i] = 2;
        None
    }
    let mut colour = vec![0u8; rules.len()];
    for i in 0..rules.len() {
        if colour[i] == 0
            && let Some(cycle) = visit(i, &edges, &mut colour, &mut Vec::new())
        {
            return Some(cycle.into_iter().map(|k| rules[k].0).collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: serde_json::Value) -> Result<Rule, String> {
        serde_json::from_value::<Rule>(v).map_err(|e| e.to_string())
    }

    fn dests() -> BTreeSet<String> {
        ["upstream".to_owned()].into()
    }

    #[test]
    fn a_full_rule_round_trips_and_validates() {
        let r = rule(json!({
            "name": "Heat when cold",
            "mode": "restart",
            "triggers": [
                { "type": "threshold", "device": "dev1", "metric": "temperature", "below": 18.0, "for_s": 300 },
                { "type": "time", "at": "06:30", "weekdays": ["Mon", "Tue"] },
                { "type": "cron", "expr": "*/5 * * * *" },
                { "type": "silent", "device": "dev1", "for_s": 600 },
                { "type": "start" }
            ],
            "conditions": [
                { "type": "any", "conditions": [
                    { "type": "compare", "device": "dev1", "metric": "window", "op": "==", "value": false },
                    { "type": "not", "condition": { "type": "virtual", "name": "away", "op": "==", "value": true } }
                ]},
                { "type": "time", "after": "22:00", "before": "06:00" }
            ],
            "actions": [
                { "type": "mqtt", "device": "dev2", "metric": "power", "value": "on" },
                { "type": "delay", "seconds": 5 },
                { "type": "cloud", "destination": "upstream", "payload": { "heating": true } },
                { "type": "notify", "message": "Heating on" }
            ]
        }))
        .unwrap();
        r.validate(&dests()).unwrap();
        let again: Rule = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        assert_eq!(r.devices().into_iter().collect::<Vec<_>>(), vec!["dev1", "dev2"]);
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let base = json!({ "name": "r", "triggers": [{ "type": "start" }], "actions": [{ "type": "notify", "message": "hi" }] });
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            rule(b).and_then(|r| r.validate(&dests()).map_err(|e| e.0))
        };
        assert!(with("triggers", json!([{ "type": "cron", "expr": "61 * * * *" }])).unwrap_err().contains("cron"));
        assert!(with("triggers", json!([{ "type": "time", "at": "25:00" }])).unwrap_err().contains("time of day"));
        assert!(with("triggers", json!([])).unwrap_err().contains("triggers"));
        assert!(with("triggers", json!([{ "type": "threshold", "device": "d", "metric": "t" }])).is_err());
        assert!(with("triggers", json!([{ "type": "interval", "every_s": 0 }])).is_err());
        assert!(with("triggers", json!([{ "type": "sometimes" }])).unwrap_err().contains("unknown variant"));
        assert!(
            with("actions", json!([{ "type": "cloud", "destination": "nowhere" }])).unwrap_err().contains("nowhere")
        );
        assert!(with("actions", json!([{ "type": "mqtt", "device": "Bad Id", "metric": "t", "value": 1 }])).is_err());
        assert!(with("actions", json!([{ "type": "coap", "uri": "coap://lamp.local/x", "payload": "on" }])).is_err());
        assert!(with("actions", json!([{ "type": "delay", "seconds": 999999999 }])).is_err());
        let deep = json!([{ "type": "not", "condition": { "type": "not", "condition": { "type": "not", "condition":
            { "type": "not", "condition": { "type": "time", "after": "01:00" } } } } }]);
        assert!(with("conditions", deep).unwrap_err().contains("nest"));
        assert!(with("name", json!("")).is_err());
        assert!(rule(json!({ "name": "r", "triggers": [], "actions": [], "colour": "red" })).is_err());
    }

    #[test]
    fn coap_uris_name_an_address() {
        let t = parse_coap_uri("coap://127.0.0.1:5690/lights/1").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (5690, "lights/1"));
        assert_eq!(parse_coap_uri("coap://[::1]/x").unwrap().addr.port(), 5683);
        assert!(parse_coap_uri("coaps://127.0.0.1/x").is_err());
        assert!(parse_coap_uri("coap://127.0.0.1/x?y=1").is_err());
    }

    #[test]
    fn loops_through_virtual_values_are_found() {
        let set_on = |trigger: &str, set: &str| {
            rule(json!({ "name": "r", "triggers": [{ "type": "virtual", "name": trigger }],
                "actions": [{ "type": "set", "name": set, "value": true }] }))
            .unwrap()
        };
        let (a, b, c) = (set_on("x", "y"), set_on("y", "z"), set_on("z", "x"));
        assert_eq!(find_virtual_loop(&[("a", &a), ("b", &b)]), None);
        assert_eq!(find_virtual_loop(&[("a", &a), ("b", &b), ("c", &c)]), Some(vec!["a", "b", "c", "a"]));
        let own = set_on("x", "x");
        assert_eq!(find_virtual_loop(&[("self", &own)]), Some(vec!["self", "self"]));
    }
}
