//! What Tasmota, Shelly (Gen2+) and ESPHome devices publish when Home Assistant discovery is
//! off: their own topics and payloads, read into named values with units, and whether the
//! device is online. Parsing only; which device a topic belongs to, and whether its sender
//! may publish there, is decided where this is used.

use serde_json::{Map, Value as Json};

use crate::reading::Value;

/// A value read from a message: the metric Hearth stores it as, and its unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: String,
    pub value: Value,
    pub unit: Option<&'static str>,
}

/// What one message said.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    Values {
        device: String,
        samples: Vec<Sample>,
    },
    Online {
        device: String,
        online: bool,
    },
    /// A topic of the convention that carries nothing Hearth keeps (a command, a reply).
    Nothing,
}

/// Most values taken from one message.
const MAX_SAMPLES: usize = 64;

/// Tasmota: `tele/<topic>/SENSOR` and `/STATE` (JSON), `stat/<topic>/POWER[n]`,
/// `tele/<topic>/LWT` (`Online`/`Offline`). `None` if the topic is not Tasmota's.
pub fn tasmota(topic: &str, payload: &[u8]) -> Option<Said> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let (prefix, rest) = topic.split_once('/')?;
    let (device, kind) = rest.rsplit_once('/')?;
    let device = device.to_owned();
    Some(match (prefix, kind) {
        ("tele", "LWT") => Said::Online { device, online: text.eq_ignore_ascii_case("online") },
        ("tele", "SENSOR") => {
            let object = object(text)?;
            let temperature = match object.get("TempUnit").and_then(Json::as_str) {
                Some("F") => "°F",
                _ => "°C",
            };
            let mut samples = Vec::new();
            for (sensor, reading) in
                object.iter().filter(|(k, _)| !matches!(k.as_str(), "Time" | "TempUnit" | "PressureUnit"))
            {
                match reading {
                    Json::Object(fields) => {
                        for (field, value) in fields {
                            let unit = tasmota_unit(sensor, field, temperature);
                            push(&mut samples, format!("{sensor}.{field}"), value, unit);
                        }
                    }
                    value => push(&mut samples, sensor.clone(), value, None),
                }
            }
            Said::Values { device, samples }
        }
        ("tele", "STATE") => {
            let object = object(text)?;
            let mut samples = Vec::new();
            for (key, value) in &object {
                if key.starts_with("POWER") {
                    push(&mut samples, key.clone(), &on_off(value), None);
                }
            }
            if let Some(signal) = object.get("Wifi").and_then(|w| w.get("Signal")) {
                push(&mut samples, "Wifi.Signal".into(), signal, Some("dBm"));
            }
            Said::Values { device, samples }
        }
        ("stat", kind) if kind.starts_with("POWER") => {
            let mut samples = Vec::new();
            push(&mut samples, kind.to_owned(), &on_off(&Json::String(text.to_owned())), None);
            Said::Values { device, samples }
        }
        ("tele" | "stat" | "cmnd", _) => Said::Nothing,
        _ => return None,
    })
}

/// Tasmota's units, by sensor and field name (it sends none).
fn tasmota_unit(sensor: &str, field: &str, temperature: &'static str) -> Option<&'static str> {
    Some(match (sensor, field) {
        ("ENERGY", "Power" | "ApparentPower" | "ReactivePower") => match field {
            "Power" => "W",
            "ApparentPower" => "VA",
            _ => "var",
        },
        ("ENERGY", "Total" | "Today" | "Yesterday") => "kWh",
        ("ENERGY", "Voltage") => "V",
        ("ENERGY", "Current") => "A",
        (_, "Temperature" | "DewPoint") => temperature,
        (_, "Humidity") => "%",
        (_, "Pressure") => "hPa",
        (_, "Illuminance") => "lx",
        _ => return None,
    })
}

/// Shelly Gen2+: `<id>/online` (`true`/`false`), `<id>/status/<component>:<n>` (JSON), and
/// `NotifyStatus` on `<id>/events/rpc`. `None` if the topic is not Shelly's.
pub fn shelly(topic: &str, payload: &[u8]) -> Option<Said> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if let Some(device) = topic.strip_suffix("/online") {
        return Some(Said::Online { device: device.to_owned(), online: text == "true" });
    }
    if let Some((device, component)) = topic.split_once("/status/") {
        let mut samples = Vec::new();
        shelly_status(component, &object(text)?, &mut samples);
        return Some(Said::Values { device: device.to_owned(), samples });
    }
    if let Some(device) = topic.strip_suffix("/events/rpc") {
        let message = object(text)?;
        if message.get("method").and_then(Json::as_str) != Some("NotifyStatus") {
            return Some(Said::Nothing);
        }
        let mut samples = Vec::new();
        for (component, status) in message.get("params").and_then(Json::as_object)?.iter() {
            if let Json::Object(status) = status {
                shelly_status(component, status, &mut samples);
            }
        }
        return Some(Said::Values { device: device.to_owned(), samples });
    }
    topic.ends_with("/rpc").then_some(Said::Nothing)
}

/// A component's status (`switch:0`, `cover:0`, `temperature:0`, ...): its values as
/// `<component>_<n>.<field>` (a metric name has no `:`), with Shelly's units. A
/// NotifyStatus carries only what changed.
fn shelly_status(component: &str, status: &Map<String, Json>, samples: &mut Vec<Sample>) {
    let component = component.replace(':', "_");
    for (field, value) in status {
        let (metric, value, unit) = match (field.as_str(), value) {
            ("id" | "source", _) => continue,
            ("aenergy" | "ret_aenergy", energy) => {
                (format!("{component}.{field}.total"), energy.get("total").cloned(), Some("Wh"))
            }
            ("temperature", t) => (format!("{component}.temperature"), t.get("tC").cloned(), Some("°C")),
            (field, value) => {
                let unit = match field {
                    "apower" => Some("W"),
                    "voltage" => Some("V"),
                    "current" => Some("A"),
                    "tC" => Some("°C"),
                    "rh" => Some("%"),
                    "current_pos" | "target_pos" => Some("%"),
                    _ => None,
                };
                (format!("{component}.{field}"), Some(value.clone()), unit)
            }
        };
        if let Some(value) = value {
            push(samples, metric, &value, unit);
        }
    }
}

/// ESPHome: `<node>/<domain>/<object_id>/state` (the value as text) and `<node>/status`
/// (`online`/`offline`). `None` if the topic is not ESPHome's.
pub fn esphome(topic: &str, payload: &[u8]) -> Option<Said> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        [node, "status"] => Some(Said::Online { device: (*node).to_owned(), online: text == "online" }),
        [node, domain, object, "state"] => {
            let value = match *domain {
                "binary_sensor" | "switch" | "light" | "fan" => on_off(&Json::String(text.to_owned())),
                _ => text.parse::<f64>().map_or_else(|_| Json::String(text.to_owned()), Json::from),
            };
            let mut samples = Vec::new();
            push(&mut samples, (*object).to_owned(), &value, None);
            Some(Said::Values { device: (*node).to_owned(), samples })
        }
        [_, _, _, "command" | "brightness_command"] | [_, "debug"] => Some(Said::Nothing),
        _ => None,
    }
}

fn object(text: &str) -> Option<Map<String, Json>> {
    match serde_json::from_str(text).ok()? {
        Json::Object(object) => Some(object),
        _ => None,
    }
}

/// `ON`/`OFF` (any case) as true/false; anything else as it is.
fn on_off(value: &Json) -> Json {
    match value.as_str().map(str::to_ascii_uppercase).as_deref() {
        Some("ON") => Json::Bool(true),
        Some("OFF") => Json::Bool(false),
        _ => value.clone(),
    }
}

fn push(samples: &mut Vec<Sample>, metric: String, value: &Json, unit: Option<&'static str>) {
    if samples.len() >= MAX_SAMPLES || !crate::reading::valid_metric(&metric) {
        return;
    }
    let value = match value {
        Json::Number(n) => match n.as_f64().filter(|n| n.is_finite()) {
            Some(n) => Value::Number(n),
            None => return,
        },
        Json::Bool(b) => Value::Bool(*b),
        Json::String(s) if s.len() <= crate::reading::MAX_TEXT_LEN => Value::Text(s.clone()),
        _ => return,
    };
    samples.push(Sample { metric, value, unit });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::discovery::corpus;

    fn values(said: Option<Said>) -> (String, Vec<Sample>) {
        match said {
            Some(Said::Values { device, samples }) => (device, samples),
            other => panic!("{other:?}"),
        }
    }

    fn find<'a>(samples: &'a [Sample], metric: &str) -> &'a Sample {
        samples.iter().find(|s| s.metric == metric).unwrap_or_else(|| panic!("no {metric} in {samples:?}"))
    }

    #[test]
    fn tasmota_telemetry_power_and_lwt() {
        let (topic, payload) = corpus("tasmota-tele-SENSOR-energy");
        let (device, samples) = values(tasmota(&topic, &payload));
        assert_eq!(device, "tasmota_F17F56");
        assert_eq!(
            find(&samples, "ENERGY.Power"),
            &Sample { metric: "ENERGY.Power".into(), value: Value::Number(1.0), unit: Some("W") }
        );
        assert_eq!(find(&samples, "ENERGY.Total").unit, Some("kWh"));
        assert_eq!(find(&samples, "ENERGY.Voltage").unit, Some("V"));
        let (topic, payload) = corpus("tasmota-tele-SENSOR-am2301");
        let (_, samples) = values(tasmota(&topic, &payload));
        assert_eq!(find(&samples, "AM2301.Temperature").unit, Some("°C"));
        assert_eq!(find(&samples, "AM2301.Humidity").value, Value::Number(58.2));
        let (topic, payload) = corpus("tasmota-tele-STATE");
        let (_, samples) = values(tasmota(&topic, &payload));
        assert_eq!(find(&samples, "POWER").value, Value::Bool(true));
        let (topic, payload) = corpus("tasmota-stat-POWER");
        assert!(!values(tasmota(&topic, &payload)).1.is_empty());
        let (topic, payload) = corpus("tasmota-tele-LWT-offline");
        assert!(matches!(tasmota(&topic, &payload), Some(Said::Online { online: false, .. })));
        let (topic, payload) = corpus("tasmota-cmnd-POWER-on");
        assert_eq!(tasmota(&topic, &payload), Some(Said::Nothing));
        assert_eq!(tasmota("zigbee2mqtt/plug", b"{}"), None);
    }

    #[test]
    fn shelly_status_notifications_and_online() {
        let (topic, payload) = corpus("shelly-gen2-status-switch0");
        let (device, samples) = values(shelly(&topic, &payload));
        assert_eq!(device, "shellies/plus1pm");
        assert_eq!(find(&samples, "switch_0.output").value, Value::Bool(true));
        assert_eq!(find(&samples, "switch_0.voltage").unit, Some("V"));
        assert_eq!(find(&samples, "switch_0.aenergy.total").unit, Some("Wh"));
        assert_eq!(find(&samples, "switch_0.temperature").value, Value::Number(46.0));
        let (topic, payload) = corpus("shelly-gen2-events-rpc-notifystatus-apower");
        let (_, samples) = values(shelly(&topic, &payload));
        assert_eq!(
            samples,
            vec![Sample { metric: "switch_0.apower".into(), value: Value::Number(918.63), unit: Some("W") }]
        );
        let (topic, payload) = corpus("shelly-gen2-online-false");
        assert!(matches!(shelly(&topic, &payload), Some(Said::Online { online: false, .. })));
    }

    #[test]
    fn esphome_states_and_status() {
        let (topic, payload) = corpus("esphome-sensor-state");
        let (device, samples) = values(esphome(&topic, &payload));
        assert_eq!(device, "garagedoor1");
        assert_eq!(find(&samples, "garage_temperature").value, Value::Number(23.8));
        let (topic, payload) = corpus("esphome-binary_sensor-state");
        assert!(matches!(values(esphome(&topic, &payload)).1[0].value, Value::Bool(_)));
        let (topic, payload) = corpus("esphome-status-online");
        assert!(matches!(esphome(&topic, &payload), Some(Said::Online { online: true, .. })));
    }
}
