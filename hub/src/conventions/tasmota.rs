//! Tasmota: a plug or relay that is its own MQTT client. Its own discovery
//! (`tasmota/discovery/<MAC>/config`) names it (`dn`), its model, firmware and relays
//! (`rl`, named by `fn`); its telemetry comes on `tele/<topic>/SENSOR` and `STATE` (JSON),
//! relays on `stat/<topic>/POWER[n]` and `RESULT`, its last will on `tele/<topic>/LWT`; a
//! relay is switched on `cmnd/<topic>/POWER[n]`. Topics are Tasmota's default full topic
//! (`%prefix%/%topic%/`).

use serde_json::{Map, Value as Json};

use super::description::{AvailabilitySpec, CommandSpec, Description, Form, ValueSpec, about_text, words};
use super::{About, Announcement, Convention, Ecosystem, Found, Heard, Identity, Message, Part};

/// Most relays of one device.
const MAX_RELAYS: usize = 8;

/// Tasmota, as a convention.
pub struct Tasmota;

impl Ecosystem for Tasmota {
    fn read(&self, message: &Message<'_>) -> Heard {
        if let Some(rest) = message.topic.strip_prefix("tasmota/discovery/") {
            return match rest.ends_with("/config") && !message.payload.is_empty() {
                true => match discovery(message) {
                    Ok(device) => Heard::Announced { devices: vec![device], refused: Vec::new(), gone: Vec::new() },
                    Err(reason) => Heard::Refused(reason),
                },
                // Its sensor list repeats what its telemetry says; an empty config is its
                // discovery turned off, not the device gone.
                false => Heard::Nothing,
            };
        }
        let Some((prefix, rest)) = message.topic.split_once('/') else { return Heard::NotMine };
        let Some((topic, kind)) = rest.rsplit_once('/') else { return Heard::NotMine };
        if !matches!(prefix, "tele" | "stat" | "cmnd") {
            return Heard::NotMine;
        }
        let identity = Identity::new(Convention::Tasmota, topic);
        match (prefix, kind) {
            ("tele", "LWT") => {
                let online = message.text().is_some_and(|t| t.eq_ignore_ascii_case("online"));
                Heard::Online { device: Some(identity), online }
            }
            ("tele", "SENSOR") => match message.object() {
                Some(object) => report(topic, sensor(object)),
                None => Heard::Refused("SENSOR is not a JSON object".into()),
            },
            ("tele", "STATE") | ("stat", "RESULT") => match message.object() {
                Some(object) => report(topic, state(object)),
                None => Heard::Refused(format!("{kind} is not a JSON object")),
            },
            ("stat", kind) if kind.starts_with("POWER") => {
                let said = Json::String(message.text().unwrap_or_default().to_owned());
                let mut found = Found::default();
                push_relay(&mut found, kind, &said);
                report(topic, found)
            }
            _ => Heard::Nothing,
        }
    }

    fn roots(&self, device: &Description) -> Vec<String> {
        ["tele", "stat", "cmnd"].map(|prefix| format!("{prefix}/{}/", device.key)).to_vec()
    }
}

/// A relay's state (`POWER`, `POWER2`...): ON/OFF as true/false.
fn push_relay(found: &mut Found, key: &str, said: &Json) {
    let said = match said.as_str().map(str::to_ascii_uppercase).as_deref() {
        Some("ON") => Json::Bool(true),
        Some("OFF") => Json::Bool(false),
        _ => said.clone(),
    };
    found.push(relay(key, None), &said);
}

/// A relay: on/off, switched on `cmnd/<topic>/<key>` by the hub that knows its topic.
fn relay(key: &str, name: Option<String>) -> ValueSpec {
    let mut value = ValueSpec::new(key);
    value.name = name;
    value.on_off = words("ON", "OFF");
    value
}

fn report(topic: &str, mut found: Found) -> Heard {
    for value in found.values.iter_mut().filter(|v| v.metric.starts_with("POWER")) {
        value.command = Some(CommandSpec::new(format!("cmnd/{topic}/{}", value.metric), Form::Text));
    }
    found.report(announcement(topic, Part::Seen))
}

fn announcement(topic: &str, part: Part) -> Announcement {
    let mut device = Announcement::of(Identity::new(Convention::Tasmota, topic), part);
    device.availability = vec![AvailabilitySpec::words(format!("tele/{topic}/LWT"), "Online", "Offline")];
    device
}

/// `tele/<topic>/SENSOR`: each sensor's fields (`AM2301.Temperature`, `ENERGY.Power`), with
/// the units, classes and names Tasmota's own discovery gives them (it sends no units).
fn sensor(object: &Map<String, Json>) -> Found {
    let temperature = match object.get("TempUnit").and_then(Json::as_str) {
        Some("F") => "°F",
        _ => "°C",
    };
    let mut found = Found::default();
    for (sensor, reading) in object.iter().filter(|(k, _)| !matches!(k.as_str(), "Time" | "TempUnit" | "PressureUnit"))
    {
        match reading {
            Json::Object(fields) => {
                for (field, value) in fields {
                    // When its energy counter started: a date, not a reading.
                    if field == "TotalStartTime" {
                        continue;
                    }
                    found.push(sensor_value(sensor, field, temperature), value);
                }
            }
            value => found.push(ValueSpec::new(sensor.clone()), value),
        }
    }
    found
}

/// One field of a sensor, described.
fn sensor_value(sensor: &str, field: &str, temperature: &'static str) -> ValueSpec {
    let mut value = ValueSpec::new(format!("{sensor}.{field}"));
    let measurement = Some("measurement");
    let (unit, class, state_class, name) = match (sensor, field) {
        ("ENERGY", "Power") => (Some("W"), Some("power"), measurement, "Power".to_owned()),
        ("ENERGY", "ApparentPower") => (Some("VA"), Some("apparent_power"), measurement, "Apparent power".into()),
        ("ENERGY", "ReactivePower") => (Some("var"), Some("reactive_power"), measurement, "Reactive power".into()),
        ("ENERGY", "Factor") => (None, Some("power_factor"), measurement, "Power factor".into()),
        ("ENERGY", "Total") => (Some("kWh"), Some("energy"), Some("total_increasing"), "Energy".into()),
        ("ENERGY", "Today") => (Some("kWh"), Some("energy"), Some("total_increasing"), "Energy today".into()),
        ("ENERGY", "Yesterday") => (Some("kWh"), Some("energy"), None, "Energy yesterday".into()),
        ("ENERGY", "Voltage") => (Some("V"), Some("voltage"), measurement, "Voltage".into()),
        ("ENERGY", "Current") => (Some("A"), Some("current"), measurement, "Current".into()),
        (_, "Temperature" | "DewPoint") => {
            (Some(temperature), Some("temperature"), measurement, format!("{sensor} {field}"))
        }
        (_, "Humidity") => (Some("%"), Some("humidity"), measurement, format!("{sensor} {field}")),
        (_, "Pressure") => (Some("hPa"), Some("atmospheric_pressure"), measurement, format!("{sensor} {field}")),
        (_, "Illuminance") => (Some("lx"), Some("illuminance"), measurement, format!("{sensor} {field}")),
        _ => (None, None, None, format!("{sensor} {field}")),
    };
    value.unit = unit.map(str::to_owned);
    value.class = class.map(str::to_owned);
    value.state_class = state_class.map(str::to_owned);
    value.name = about_text(&name);
    value
}

/// `tele/<topic>/STATE` and `stat/<topic>/RESULT`: its relays, and its Wi-Fi signal (a
/// diagnostic).
fn state(object: &Map<String, Json>) -> Found {
    let mut found = Found::default();
    for (key, value) in object.iter().filter(|(key, _)| key.starts_with("POWER")) {
        push_relay(&mut found, key, value);
    }
    if let Some(signal) = object.get("Wifi").and_then(|w| w.get("Signal")) {
        let mut value = ValueSpec::new("Wifi.Signal");
        value.unit = Some("dBm".into());
        value.class = Some("signal_strength".into());
        value.category = Some("diagnostic".into());
        value.name = Some("Signal".into());
        found.push(value, signal);
    }
    found
}

/// Its own discovery config: its topic (`t`), the name it was given (`dn`), its model
/// (`md`), firmware (`sw`), last-will words (`onln`, `ofln`), and its relays and lights
/// (`rl` 1 and 2), each named by its friendly name (`fn`) and switched on
/// `cmnd/<topic>/POWER[n]`.
fn discovery(message: &Message<'_>) -> Result<Announcement, String> {
    let config = message.object().ok_or("config is not a JSON object")?;
    let text = |key: &str| config.get(key).and_then(Json::as_str).and_then(about_text);
    let topic = config
        .get("t")
        .and_then(Json::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 64 && !t.contains(['+', '#', '/']) && !t.chars().any(char::is_control));
    let topic = topic.ok_or("config has no usable topic (\"t\")")?;
    let friendly: Vec<Option<String>> = match config.get("fn") {
        Some(Json::Array(names)) => names.iter().take(MAX_RELAYS).map(|n| n.as_str().and_then(about_text)).collect(),
        _ => Vec::new(),
    };
    let relays: Vec<u64> = match config.get("rl") {
        Some(Json::Array(kinds)) => kinds.iter().take(MAX_RELAYS).map(|r| r.as_u64().unwrap_or(0)).collect(),
        _ => Vec::new(),
    };
    let switched = relays.iter().filter(|r| matches!(r, 1 | 2)).count();
    let mut device = announcement(topic, Part::Seen);
    let (online, offline) =
        (text("onln").unwrap_or_else(|| "Online".into()), text("ofln").unwrap_or_else(|| "Offline".into()));
    device.availability = vec![AvailabilitySpec::words(format!("tele/{topic}/LWT"), &online, &offline)];
    device.about = About {
        name: text("dn").or_else(|| friendly.first().cloned().flatten()),
        manufacturer: Some("Tasmota".into()),
        model: text("md"),
        description: None,
        area: None,
        firmware: text("sw"),
    };
    for (n, kind) in relays.iter().enumerate().filter(|(_, kind)| matches!(kind, 1 | 2)) {
        // One relay alone reports as POWER; several as POWER1, POWER2...
        let key = if switched == 1 && n == 0 { "POWER".to_owned() } else { format!("POWER{}", n + 1) };
        let mut value = relay(&key, friendly.get(n).cloned().flatten());
        value.class = (*kind == 1).then(|| "outlet".to_owned());
        value.command = Some(CommandSpec::new(format!("cmnd/{topic}/{key}"), Form::Text));
        device.values.push(value);
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conventions::Sample;
    use crate::conventions::corpus;
    use crate::reading::Value;

    fn read(name: &str) -> Heard {
        let (topic, payload) = corpus(name);
        Tasmota.read(&Message::new(&topic, &payload))
    }

    fn reported(heard: Heard) -> (Announcement, Vec<Sample>) {
        match heard {
            Heard::Reported { device, samples } => (*device, samples),
            other => panic!("{other:?}"),
        }
    }

    fn find<'a>(samples: &'a [Sample], metric: &str) -> &'a Sample {
        samples.iter().find(|s| s.metric == metric).unwrap_or_else(|| panic!("no {metric} in {samples:?}"))
    }

    #[test]
    fn telemetry_relays_and_last_will() {
        let (device, samples) = reported(read("tasmota-tele-SENSOR-energy"));
        assert_eq!(device.identity, Identity::new(Convention::Tasmota, "tasmota_F17F56"));
        assert_eq!(
            find(&samples, "ENERGY.Power"),
            &Sample { metric: "ENERGY.Power".into(), value: Value::Number(1.0), unit: Some("W".into()) }
        );
        assert_eq!(find(&samples, "ENERGY.Total").unit.as_deref(), Some("kWh"));
        assert_eq!(find(&samples, "ENERGY.Voltage").unit.as_deref(), Some("V"));
        let total = device.values.iter().find(|v| v.metric == "ENERGY.Total");
        assert_eq!(total.and_then(|v| v.state_class.as_deref()), Some("total_increasing"));
        // When its counter started is a date, not a reading.
        assert!(!samples.iter().any(|s| s.metric == "ENERGY.TotalStartTime"));
        let (_, samples) = reported(read("tasmota-tele-SENSOR-am2301"));
        assert_eq!(find(&samples, "AM2301.Temperature").unit.as_deref(), Some("°C"));
        assert_eq!(find(&samples, "AM2301.Humidity").value, Value::Number(58.2));
        let (device, samples) = reported(read("tasmota-tele-STATE"));
        assert_eq!(find(&samples, "POWER").value, Value::Bool(true));
        let power = device.values.iter().find(|v| v.metric == "POWER").and_then(|v| v.command.as_ref());
        assert_eq!(power.map(|c| c.topic.as_str()), Some("cmnd/tasmota_F17F56/POWER"));
        assert!(!reported(read("tasmota-stat-POWER")).1.is_empty());
        assert_eq!(find(&reported(read("tasmota-stat-RESULT-power")).1, "POWER").value, Value::Bool(true));
        assert!(matches!(read("tasmota-tele-LWT-offline"), Heard::Online { online: false, device: Some(_) }));
        assert_eq!(read("tasmota-cmnd-POWER-on"), Heard::Nothing);
        assert_eq!(Tasmota.read(&Message::new("zigbee2mqtt/plug", b"{}")), Heard::NotMine);
    }

    /// Its own discovery names the device and each relay by the names it was given.
    #[test]
    fn discovery_names_the_plug_and_its_relays() {
        let Heard::Announced { devices, .. } = read("tasmota-discovery-athom-plug.config") else { panic!("refused") };
        let plug = &devices[0];
        assert_eq!(plug.identity.key, "tasmota_F17F56");
        assert_eq!(plug.about.name.as_deref(), Some("Tasmota"));
        assert_eq!(plug.about.model.as_deref(), Some("Athom Plug V2"));
        assert_eq!(plug.about.firmware.as_deref(), Some("10.1.0"));
        assert_eq!(plug.values.len(), 1);
        assert_eq!(plug.values[0].metric, "POWER");
        let config = r#"{"t":"strip","dn":"Power strip","fn":["Kettle","TV",null,"Pump"],"rl":[1,1,0,2]}"#;
        let Heard::Announced { devices, .. } =
            Tasmota.read(&Message::new("tasmota/discovery/AABBCCDDEEFF/config", config.as_bytes()))
        else {
            panic!("refused")
        };
        let named: Vec<(&str, Option<&str>)> =
            devices[0].values.iter().map(|v| (v.metric.as_str(), v.name.as_deref())).collect();
        assert_eq!(named, [("POWER1", Some("Kettle")), ("POWER2", Some("TV")), ("POWER4", Some("Pump"))]);
        assert_eq!(devices[0].availability[0].topic, "tele/strip/LWT");
    }
}
