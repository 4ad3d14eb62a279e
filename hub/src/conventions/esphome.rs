//! ESPHome: a node that is its own MQTT client, under its node name. Without Home
//! Assistant discovery it publishes each entity's state as text on
//! `<node>/<domain>/<object id>/state`, says whether it is online on `<node>/status`, takes
//! its switches', lights' and fans' commands on `.../command`, and announces itself
//! (friendly name, firmware, board) on `esphome/discover/<node>`. With discovery on, its
//! Home Assistant configs describe the same node: what they announce under `<node>/` is
//! this device (see [`Ecosystem::roots`]).

use serde_json::Value as Json;

use super::description::{AvailabilitySpec, CommandSpec, Description, Form, ValueSpec, about_text, words};
use super::{About, Announcement, Convention, Ecosystem, Found, Heard, Identity, Message, Part};

/// ESPHome, as a convention.
pub struct Esphome;

/// ESPHome's entity domains, as the second level of its state topics: a topic of the same
/// shape with another (`diy/kitchen/valve/state`) is not an ESPHome node's.
const DOMAINS: [&str; 19] = [
    "alarm_control_panel",
    "binary_sensor",
    "button",
    "climate",
    "cover",
    "date",
    "datetime",
    "event",
    "fan",
    "light",
    "lock",
    "number",
    "select",
    "sensor",
    "switch",
    "text",
    "text_sensor",
    "time",
    "valve",
];

impl Ecosystem for Esphome {
    fn read(&self, message: &Message<'_>) -> Heard {
        let Some(text) = message.text() else { return Heard::NotMine };
        match message.levels().as_slice() {
            ["esphome", "discover", node] => discover(node, message),
            [node, "status"] => {
                Heard::Online { device: Some(Identity::new(Convention::Esphome, *node)), online: text == "online" }
            }
            [node, domain, object, "state"] if DOMAINS.contains(domain) => {
                let on_off = matches!(*domain, "binary_sensor" | "switch" | "light" | "fan");
                let said = match (on_off, text) {
                    (true, t) if t.eq_ignore_ascii_case("on") => Json::Bool(true),
                    (true, t) if t.eq_ignore_ascii_case("off") => Json::Bool(false),
                    (_, t) => t.parse::<f64>().map_or_else(|_| Json::String(t.to_owned()), Json::from),
                };
                let mut spec = ValueSpec::new(*object);
                if matches!(*domain, "switch" | "light" | "fan") {
                    spec.on_off = words("ON", "OFF");
                    spec.command = Some(CommandSpec::new(format!("{node}/{domain}/{object}/command"), Form::Text));
                }
                let mut found = Found::default();
                found.push(spec, &said);
                found.report(announcement(node))
            }
            [_, domain, _, "command" | "brightness_command"] if DOMAINS.contains(domain) => Heard::Nothing,
            [_, "debug"] => Heard::Nothing,
            _ => Heard::NotMine,
        }
    }

    fn roots(&self, device: &Description) -> Vec<String> {
        vec![format!("{}/", device.key)]
    }
}

fn announcement(node: &str) -> Announcement {
    let mut device = Announcement::of(Identity::new(Convention::Esphome, node), Part::Seen);
    device.availability = vec![AvailabilitySpec::words(format!("{node}/status"), "online", "offline")];
    device
}

/// `esphome/discover/<node>`: its friendly name, firmware version and board.
fn discover(node: &str, message: &Message<'_>) -> Heard {
    let Some(said) = message.object() else { return Heard::Refused("discovery is not a JSON object".into()) };
    let text = |key: &str| said.get(key).and_then(Json::as_str).and_then(about_text);
    let mut device = announcement(node);
    device.about = About {
        name: text("friendly_name").or_else(|| text("name")),
        manufacturer: Some("ESPHome".into()),
        model: text("board").or_else(|| text("platform")),
        description: None,
        area: None,
        firmware: text("version"),
    };
    Heard::Announced { devices: vec![device], refused: Vec::new(), gone: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conventions::corpus;
    use crate::reading::Value;

    fn read(name: &str) -> Heard {
        let (topic, payload) = corpus(name);
        Esphome.read(&Message::new(&topic, &payload))
    }

    #[test]
    fn states_status_and_its_own_announcement() {
        let Heard::Reported { device, samples } = read("esphome-sensor-state") else { panic!("no value") };
        assert_eq!(device.identity.key, "garagedoor1");
        assert_eq!(samples[0].metric, "garage_temperature");
        assert_eq!(samples[0].value, Value::Number(23.8));
        let Heard::Reported { samples, .. } = read("esphome-binary_sensor-state") else { panic!("no value") };
        assert!(matches!(samples[0].value, Value::Bool(_)));
        let Heard::Reported { device, .. } = read("esphome-switch-state.constructed") else { panic!("no value") };
        assert!(device.values[0].command.as_ref().is_some_and(|c| c.topic.ends_with("/command")));
        assert!(matches!(read("esphome-status-online"), Heard::Online { online: true, device: Some(_) }));
        assert!(matches!(
            Esphome.read(&Message::new("node/binary_sensor/status/state", b"ON")),
            Heard::Reported { .. }
        ));
        assert_eq!(Esphome.read(&Message::new("diy/kitchen/valve/state", b"open")), Heard::NotMine);
        let Heard::Announced { devices, .. } = read("esphome-discover") else { panic!("not read") };
        assert_eq!(devices[0].about.name.as_deref(), Some("GarageDoor1"));
        assert_eq!(devices[0].about.firmware.as_deref(), Some("2026.8.0"));
        assert_eq!(devices[0].identity.key, "garagedoor1");
    }
}
