//! Shelly (Gen2 and later): a relay, plug or sensor that is its own MQTT client, under its
//! topic prefix (its id, `shellyplus1pm-a8032ab1c2d4`, unless its owner set another). It
//! says whether it is online on `<prefix>/online`, its components' status on
//! `<prefix>/status/<component>:<n>` and in `NotifyStatus`/`NotifyFullStatus` on
//! `<prefix>/events/rpc`, and takes RPC requests on `<prefix>/rpc`, answering on
//! `<src>/rpc`. The hub's requests name `<prefix>/hearth` as their source, so that the
//! answers stay inside the device's own prefix (the namespace its owner granted), and asks a
//! Shelly it meets for the name its owner gave it (`Sys.GetConfig`), its model and
//! firmware (`Shelly.GetDeviceInfo`).

use serde_json::{Map, Value as Json, json};

use super::description::{AvailabilitySpec, CommandSpec, Description, Form, ValueSpec, about_text};
use super::{About, Announcement, Convention, Ecosystem, Found, Heard, Identity, Message, Part};

/// Where the hub's requests say they come from, under the device's prefix.
const SOURCE: &str = "hearth";
/// Components that are the device's own plumbing (its connections to brokers and clouds,
/// its system), not readings.
const PLUMBING: [&str; 6] = ["mqtt", "cloud", "ws", "ble", "sys", "eth"];

/// Shelly, as a convention.
pub struct Shelly;

impl Ecosystem for Shelly {
    fn read(&self, message: &Message<'_>) -> Heard {
        let topic = message.topic;
        if let Some(prefix) = topic.strip_suffix("/online") {
            let online = message.text() == Some("true");
            return Heard::Online { device: Some(Identity::new(Convention::Shelly, prefix)), online };
        }
        if let Some((prefix, component)) = topic.split_once("/status/") {
            // A component is `<kind>[:<n>]`, its status an object: anything else on a topic
            // of this shape (an ESPHome node's `status` entity) is another convention's.
            let Some(status) = message.object().filter(|_| is_component(component)) else { return Heard::NotMine };
            let mut found = Found::default();
            Status { found: &mut found }.read(prefix, component, status);
            return found.report(announcement(prefix));
        }
        if let Some(prefix) = topic.strip_suffix("/events/rpc") {
            let Some(notification) = message.object() else { return Heard::Nothing };
            let method = notification.get("method").and_then(Json::as_str);
            if !matches!(method, Some("NotifyStatus" | "NotifyFullStatus")) {
                return Heard::Nothing;
            }
            let mut found = Found::default();
            for (component, status) in notification.get("params").and_then(Json::as_object).into_iter().flatten() {
                if let Json::Object(status) = status {
                    Status { found: &mut found }.read(prefix, component, status);
                }
            }
            return found.report(announcement(prefix));
        }
        if let Some(prefix) = topic.strip_suffix(&format!("/{SOURCE}/rpc")) {
            return answer(prefix, message);
        }
        // Requests to it (others', or the hub's own), and answers to others.
        match topic.ends_with("/rpc") {
            true => Heard::Nothing,
            false => Heard::NotMine,
        }
    }

    fn roots(&self, device: &Description) -> Vec<String> {
        vec![format!("{}/", device.key)]
    }

    fn greet(&self, device: &Description) -> Vec<(String, Vec<u8>)> {
        let prefix = &device.key;
        let request = |id: u32, method: &str| {
            let request = json!({ "id": id, "src": source(prefix), "method": method });
            (format!("{prefix}/rpc"), request.to_string().into_bytes())
        };
        vec![request(2, "Shelly.GetDeviceInfo"), request(3, "Sys.GetConfig")]
    }
}

/// The source the hub names in its requests to the Shelly under `prefix`: the Shelly
/// answers on `<source>/rpc`, inside its own prefix.
fn source(prefix: &str) -> String {
    format!("{prefix}/{SOURCE}")
}

/// Whether `name` is a component's, as Shelly names them: `switch:0`, `wifi`, `em1data:2`.
fn is_component(name: &str) -> bool {
    let (kind, n) = name.split_once(':').unwrap_or((name, "0"));
    !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// `Switch.Set` for switch `id`, sent on `<prefix>/rpc` (`topic`).
pub fn switch_set(topic: &str, id: u32, on: Json) -> Vec<u8> {
    let prefix = topic.strip_suffix("/rpc").unwrap_or(topic);
    let params = json!({ "id": id, "on": on });
    json!({ "id": 1, "src": source(prefix), "method": "Switch.Set", "params": params }).to_string().into_bytes()
}

/// A Shelly's answer to the hub: what it says of itself (its name from `Sys.GetConfig`,
/// its model and firmware from `Shelly.GetDeviceInfo`), or the error it gave.
fn answer(prefix: &str, message: &Message<'_>) -> Heard {
    let Some(answer) = message.object() else { return Heard::Nothing };
    if let Some(error) = answer.get("error") {
        let said = error.get("message").and_then(Json::as_str).and_then(about_text).unwrap_or_default();
        return Heard::Refused(format!("the Shelly refused the hub's request: {said}"));
    }
    let Some(result) = answer.get("result").and_then(Json::as_object) else { return Heard::Nothing };
    let text = |value: Option<&Json>| value.and_then(Json::as_str).and_then(about_text);
    let about = About {
        // Sys.GetConfig: `device.name`; Shelly.GetDeviceInfo: `name` (null when unset).
        name: text(result.get("device").and_then(|d| d.get("name"))).or_else(|| text(result.get("name"))),
        manufacturer: Some("Shelly".into()),
        model: text(result.get("app")).or_else(|| text(result.get("model"))),
        description: None,
        area: None,
        firmware: text(result.get("ver")),
    };
    // The answer to a command (`{"was_on":false}`) says nothing of the device.
    if about.name.is_none() && about.model.is_none() && about.firmware.is_none() {
        return Heard::Nothing;
    }
    let mut device = announcement(prefix);
    device.about = about;
    Heard::Announced { devices: vec![device], refused: Vec::new(), gone: Vec::new() }
}

fn announcement(prefix: &str) -> Announcement {
    let mut device = Announcement::of(Identity::new(Convention::Shelly, prefix), Part::Seen);
    device.availability = vec![AvailabilitySpec::words(format!("{prefix}/online"), "true", "false")];
    device
}

/// What one component's status says, into `found`.
struct Status<'a> {
    found: &'a mut Found,
}

impl Status<'_> {
    /// A component's status (`switch:0`, `cover:0`, `temperature:0`, ...): its values as
    /// `<component>_<n>.<field>` (a metric name has no `:`), with Shelly's units. A
    /// NotifyStatus carries only what changed.
    fn read(&mut self, prefix: &str, component: &str, status: &Map<String, Json>) {
        let (kind, n) = component.split_once(':').unwrap_or((component, ""));
        if PLUMBING.contains(&kind) {
            return;
        }
        let base = component.replace(':', "_");
        let numbered = |name: &str| match n {
            "" | "0" => name.to_owned(),
            n => format!("{name} {n}"),
        };
        if kind == "wifi" {
            if let Some(rssi) = status.get("rssi") {
                let mut value = described(&format!("{base}.rssi"), Some("dBm"), Some("signal_strength"), None);
                value.category = Some("diagnostic".into());
                value.name = Some("Signal".into());
                self.found.push(value, rssi);
            }
            return;
        }
        for (field, value) in status {
            let metric = format!("{base}.{field}");
            let measurement = Some("measurement");
            let (spec, value) = match (field.as_str(), value) {
                // What started its last change, and its flags: not readings.
                ("id" | "source" | "errors" | "flags", _) => continue,
                // The energy a relay returned to the grid: always nothing but on a meter.
                ("ret_aenergy", _) if kind != "em" && kind != "em1" && kind != "pm1" => continue,
                ("aenergy" | "ret_aenergy", energy) => {
                    let mut spec =
                        described(&format!("{metric}.total"), Some("Wh"), Some("energy"), Some("total_increasing"));
                    spec.name = Some(numbered(if field == "aenergy" { "Energy" } else { "Energy returned" }));
                    (spec, energy.get("total"))
                }
                ("temperature", t) => {
                    let mut spec = described(&metric, Some("°C"), Some("temperature"), measurement);
                    spec.name = Some(numbered("Device temperature"));
                    spec.category = Some("diagnostic".into());
                    (spec, t.get("tC"))
                }
                ("output", value) => {
                    let mut spec = ValueSpec::new(metric.clone());
                    spec.name = Some(numbered(if kind == "switch" { "Switch" } else { "Output" }));
                    spec.on_off = Some((Json::Bool(true), Json::Bool(false)));
                    if kind == "switch"
                        && let Ok(id) = n.parse()
                    {
                        spec.command = Some(CommandSpec::new(format!("{prefix}/rpc"), Form::ShellySwitch { id }));
                    }
                    (spec, Some(value))
                }
                (field, value) => {
                    let (unit, class, state_class, name) = match field {
                        "apower" => (Some("W"), Some("power"), measurement, "Power"),
                        "voltage" => (Some("V"), Some("voltage"), measurement, "Voltage"),
                        "current" => (Some("A"), Some("current"), measurement, "Current"),
                        "freq" => (Some("Hz"), Some("frequency"), measurement, "Frequency"),
                        "pf" => (None, Some("power_factor"), measurement, "Power factor"),
                        "tC" => (Some("°C"), Some("temperature"), measurement, "Temperature"),
                        "rh" => (Some("%"), Some("humidity"), measurement, "Humidity"),
                        "current_pos" => (Some("%"), None, None, "Position"),
                        "target_pos" => (Some("%"), None, None, "Target position"),
                        "percent" => (Some("%"), Some("battery"), measurement, "Battery"),
                        "state" => (None, None, None, "State"),
                        _ => (None, None, None, ""),
                    };
                    let mut spec = described(&metric, unit, class, state_class);
                    spec.name = (!name.is_empty()).then(|| numbered(name));
                    (spec, Some(value))
                }
            };
            if let Some(value) = value {
                self.found.push(spec, value);
            }
        }
    }
}

fn described(metric: &str, unit: Option<&str>, class: Option<&str>, state_class: Option<&str>) -> ValueSpec {
    let mut value = ValueSpec::new(metric);
    value.unit = unit.map(str::to_owned);
    value.class = class.map(str::to_owned);
    value.state_class = state_class.map(str::to_owned);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conventions::Sample;
    use crate::conventions::corpus;
    use crate::reading::Value;

    fn read(name: &str) -> Heard {
        let (topic, payload) = corpus(name);
        Shelly.read(&Message::new(&topic, &payload))
    }

    fn samples(heard: Heard) -> Vec<Sample> {
        match heard {
            Heard::Reported { samples, .. } => samples,
            other => panic!("{other:?}"),
        }
    }

    fn find<'a>(samples: &'a [Sample], metric: &str) -> &'a Sample {
        samples.iter().find(|s| s.metric == metric).unwrap_or_else(|| panic!("no {metric} in {samples:?}"))
    }

    #[test]
    fn status_notifications_and_online() {
        let Heard::Reported { device, samples: status } = read("shelly-gen2-status-switch0") else {
            panic!("no values")
        };
        assert_eq!(device.identity.key, "shellies/plus1pm");
        assert_eq!(find(&status, "switch_0.output").value, Value::Bool(true));
        assert_eq!(find(&status, "switch_0.voltage").unit.as_deref(), Some("V"));
        assert_eq!(find(&status, "switch_0.aenergy.total").unit.as_deref(), Some("Wh"));
        assert_eq!(find(&status, "switch_0.temperature").value, Value::Number(46.0));
        let output = device.values.iter().find(|v| v.metric == "switch_0.output").and_then(|v| v.command.clone());
        assert_eq!(output, Some(CommandSpec::new("shellies/plus1pm/rpc", Form::ShellySwitch { id: 0 })));
        let apower = samples(read("shelly-gen2-events-rpc-notifystatus-apower"));
        assert_eq!(
            apower,
            vec![Sample { metric: "switch_0.apower".into(), value: Value::Number(918.63), unit: Some("W".into()) }]
        );
        assert!(matches!(read("shelly-gen2-online-false"), Heard::Online { online: false, device: Some(_) }));
    }

    /// Its connections to the broker and the cloud, and the energy a relay returned (always
    /// nothing), are not readings.
    #[test]
    fn plumbing_is_left_out() {
        let (_, payload) = corpus("shelly-gen2-rpc-response-getstatus");
        let full = serde_json::from_slice::<Json>(&payload).ok().and_then(|a| a.get("result").cloned());
        let notify = json!({ "src": "plug", "method": "NotifyFullStatus", "params": full });
        let full = samples(Shelly.read(&Message::new("plug/events/rpc", notify.to_string().as_bytes())));
        let metrics: Vec<&str> = full.iter().map(|s| s.metric.as_str()).collect();
        assert!(metrics.contains(&"switch_0.apower") && metrics.contains(&"wifi.rssi"), "{metrics:?}");
        assert!(!metrics.iter().any(|m| m.starts_with("mqtt") || m.starts_with("cloud") || m.starts_with("sys")));
        let status = br#"{"id":0,"output":true,"apower":3.0,"ret_aenergy":{"total":0.0},"aenergy":{"total":12.5}}"#;
        let metrics: Vec<String> =
            samples(Shelly.read(&Message::new("plug/status/switch:0", status))).into_iter().map(|s| s.metric).collect();
        assert_eq!(metrics, ["switch_0.aenergy.total", "switch_0.apower", "switch_0.output"]);
        assert_eq!(Shelly.read(&Message::new("plug/status/mqtt", br#"{"connected":true}"#)), Heard::Nothing);
        // An ESPHome node's `status` entity is not a Shelly's.
        assert_eq!(Shelly.read(&Message::new("node/binary_sensor/status/state", b"ON")), Heard::NotMine);
        assert_eq!(Shelly.read(&Message::new("plug/status/switch:0", b"ON")), Heard::NotMine);
    }

    /// The hub asks a Shelly it meets for its name, with a source under the device's own
    /// prefix, and reads the answer there.
    #[test]
    fn the_hub_asks_inside_the_device_s_prefix_and_reads_its_name() {
        let description =
            Description::new(Convention::Shelly, "shellyplus2pm-a8032ab1c2d4", "shellyplus2pm-a8032ab1c2d4");
        let asked = Shelly.greet(&description);
        assert!(!asked.is_empty());
        for (topic, payload) in &asked {
            assert_eq!(topic, "shellyplus2pm-a8032ab1c2d4/rpc");
            let request: Json = serde_json::from_slice(payload).unwrap_or_default();
            assert_eq!(request["src"], "shellyplus2pm-a8032ab1c2d4/hearth");
        }
        let set: Json = serde_json::from_slice(&switch_set("shellyplus2pm-a8032ab1c2d4/rpc", 1, Json::Bool(true)))
            .unwrap_or_default();
        assert_eq!(set["src"], "shellyplus2pm-a8032ab1c2d4/hearth");
        assert_eq!(set["params"], json!({ "id": 1, "on": true }));
        let answer = br#"{"id":3,"src":"shellyplus2pm-a8032ab1c2d4","dst":"shellyplus2pm-a8032ab1c2d4/hearth",
            "result":{"device":{"name":"Hall lights","mac":"A8032AB1C2D4","fw_id":"x"},"location":{}}}"#;
        let Heard::Announced { devices, .. } =
            Shelly.read(&Message::new("shellyplus2pm-a8032ab1c2d4/hearth/rpc", answer))
        else {
            panic!("not read")
        };
        assert_eq!(devices[0].about.name.as_deref(), Some("Hall lights"));
        assert_eq!(devices[0].identity.key, "shellyplus2pm-a8032ab1c2d4");
        let switched = br#"{"id":1,"src":"s","dst":"s/hearth","result":{"was_on":false}}"#;
        assert_eq!(Shelly.read(&Message::new("s/hearth/rpc", switched)), Heard::Nothing);
        let refused = br#"{"id":1,"src":"s","dst":"s/hearth","error":{"code":-103,"message":"Invalid argument"}}"#;
        assert!(
            matches!(Shelly.read(&Message::new("s/hearth/rpc", refused)), Heard::Refused(r) if r.contains("Invalid argument"))
        );
    }
}
