//! The rule model (its types are the contract's, in `hearth_model::rules`) and the checks a
//! rule must pass before it is saved: time of day and cron parsing, CoAP targets, loops
//! through virtual values. The names of devices are checked against the store by the API.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::NaiveTime;

use crate::reading::{MAX_TEXT_LEN, Value, valid_device_id, valid_metric};

pub use hearth_model::rules::{
    Action, CoapMethod, Condition, MAX_ACTIONS, MAX_CONDITION_DEPTH, MAX_CONDITIONS, MAX_RUNS, MAX_SECONDS,
    MAX_TRIGGERS, Mode, Op, Rule, Trigger, Weekday,
};

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

/// Checks everything that can be checked without the store. `destinations` are the
/// configured cloud destinations.
pub fn validate(rule: &Rule, destinations: &BTreeSet<String>) -> Result<(), RuleError> {
    check_name("the name", &rule.name)?;
    if rule.triggers.is_empty() || rule.triggers.len() > MAX_TRIGGERS {
        return Err(bad(format!("a rule needs 1 to {MAX_TRIGGERS} triggers")));
    }
    if rule.actions.is_empty() || rule.actions.len() > MAX_ACTIONS {
        return Err(bad(format!("a rule needs 1 to {MAX_ACTIONS} actions")));
    }
    if rule.max_runs == 0 || rule.max_runs > MAX_RUNS {
        return Err(bad(format!("max_runs must be 1 to {MAX_RUNS}")));
    }
    for t in &rule.triggers {
        check_trigger(t)?;
    }
    let mut count = 0;
    for c in &rule.conditions {
        check_condition(c, 1, &mut count)?;
    }
    for a in &rule.actions {
        check_action(a, destinations)?;
    }
    Ok(())
}

fn check_trigger(trigger: &Trigger) -> Result<(), RuleError> {
    match trigger {
        Trigger::Reading { device, metric } | Trigger::Change { device, metric, .. } => {
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

fn check_condition(condition: &Condition, depth: usize, count: &mut usize) -> Result<(), RuleError> {
    *count += 1;
    if depth > MAX_CONDITION_DEPTH || *count > MAX_CONDITIONS {
        return Err(bad(format!("conditions nest at most {MAX_CONDITION_DEPTH} deep, {MAX_CONDITIONS} in all")));
    }
    match condition {
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
            conditions.iter().try_for_each(|c| check_condition(c, depth + 1, count))
        }
        Condition::Not { condition } => check_condition(condition, depth + 1, count),
    }
}

fn check_action(action: &Action, destinations: &BTreeSet<String>) -> Result<(), RuleError> {
    match action {
        Action::Mqtt { device, metric, value } => {
            check_device_metric(device, Some(metric))?;
            check_value(value)
        }
        Action::Coap { device, path, payload, .. } => {
            check_device_metric(device, None)?;
            check_coap_path(path)?;
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

/// Reads a rule set written in YAML (rule import). The parser refuses documents whose
/// aliases would expand past its limits, so a few lines cannot grow into gigabytes.
pub fn parse_rule_set_yaml(body: &[u8]) -> Result<hearth_model::automations::RuleSet, String> {
    serde_norway::from_slice(body).map_err(|e| e.to_string())
}

/// Where a CoAP action goes: the device's address (as the owner set it) and the action's
/// path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapTarget {
    pub addr: std::net::SocketAddr,
    pub path: String,
}

/// A device's CoAP address: an IP address with an optional port (5683 if none), such as
/// `192.0.2.7`, `192.0.2.7:5690` or `[fe80::1]:5683`. No names: nothing on the automation
/// path looks a name up, so what a rule reaches is what the owner wrote.
pub fn parse_coap_address(text: &str) -> Result<std::net::SocketAddr, RuleError> {
    parse_coap_address_or(text, 5683)
}

/// [`parse_coap_address`], with `default_port` when the text names none (5684 for DTLS).
pub fn parse_coap_address_or(text: &str, default_port: u16) -> Result<std::net::SocketAddr, RuleError> {
    let addr = if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        addr
    } else {
        let host = text.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr =
            host.parse().map_err(|_| bad(format!("{text:?} is not an IP address (with an optional port)")))?;
        std::net::SocketAddr::new(ip, default_port)
    };
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast || addr.port() == 0 {
        return Err(bad(format!("{text:?} is not one device's address")));
    }
    Ok(addr)
}

/// A CoAP action's path on its device: up to 8 segments of letters, digits and `-._~`,
/// without a query (`light`, `lights/1/on`).
fn check_coap_path(path: &str) -> Result<(), RuleError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let fine =
        |s: &&str| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if segments.len() > 8 || !segments.iter().all(fine) {
        return Err(bad(format!(
            "{path:?} is not a CoAP path: 1 to 8 segments of letters, digits and -._~, without a query"
        )));
    }
    Ok(())
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
        validate(&r, &dests()).unwrap();
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
            rule(b).and_then(|r| validate(&r, &dests()).map_err(|e| e.0))
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
        assert!(with("actions", json!([{ "type": "coap", "uri": "coap://127.0.0.1/x", "payload": "on" }])).is_err());
        let coap = |path: &str| json!([{ "type": "coap", "device": "lamp", "path": path, "payload": "on" }]);
        assert!(with("actions", coap("lights/1")).is_ok());
        assert!(with("actions", coap("x?y=1")).unwrap_err().contains("CoAP path"));
        assert!(with("actions", coap("../../x y")).is_err());
        assert!(with("actions", coap("")).is_err());
        assert!(with("actions", json!([{ "type": "delay", "seconds": 999999999 }])).is_err());
        let deep = json!([{ "type": "not", "condition": { "type": "not", "condition": { "type": "not", "condition":
            { "type": "not", "condition": { "type": "time", "after": "01:00" } } } } }]);
        assert!(with("conditions", deep).unwrap_err().contains("nest"));
        assert!(with("name", json!("")).is_err());
        assert!(rule(json!({ "name": "r", "triggers": [], "actions": [], "colour": "red" })).is_err());
    }

    #[test]
    fn coap_addresses_are_one_ip_address() {
        assert_eq!(parse_coap_address("127.0.0.1:5690").unwrap().port(), 5690);
        assert_eq!(parse_coap_address("192.0.2.7").unwrap().port(), 5683);
        assert_eq!(parse_coap_address("[::1]").unwrap().port(), 5683);
        assert_eq!(parse_coap_address("::1").unwrap().port(), 5683);
        for bad in [
            "lamp.local",
            "coap://127.0.0.1/x",
            "0.0.0.0",
            "224.0.1.187",
            "255.255.255.255",
            "[ff02::fd]:5683",
            "127.0.0.1:0",
            "",
        ] {
            assert!(parse_coap_address(bad).is_err(), "{bad}");
        }
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
