//! What a device said of itself, in the one shape every convention describes its devices
//! in: who it is, what it reports, where, and how each value is set. Kept sealed with the
//! device (as JSON), so that after a restart its messages are read the same way before it
//! says anything again: fields are only ever added, with defaults, so that a description
//! stored by an earlier Hearth still reads.

use hearth_model::devices::{Convention, Discovered, DiscoveredValue};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::Message;
use super::home_assistant::template::Template;
use crate::reading::{MAX_TEXT_LEN, Value};

/// Most values one device keeps. The largest of Zigbee2MQTT's own definitions (zigbee-
/// herdsman-converters 26.112: Danfoss's Icon2 floor-heating controller, 15 zones) has
/// 276; past this, the rest of a description is left out.
pub const MAX_VALUES: usize = 320;
/// Most availability topics of one device.
pub const MAX_AVAILABILITY: usize = 8;
/// Most options of one value (a select's, a thermostat's modes).
pub const MAX_OPTIONS: usize = 32;
/// Longest name, manufacturer, model or area kept from what a device says.
pub const MAX_ABOUT: usize = 64;

/// A device as it described itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// The convention that described it first; its key is in that convention's terms.
    pub convention: Convention,
    /// Who it is to its convention (Zigbee2MQTT: its IEEE address; Home Assistant: its
    /// device block's first identifier; Tasmota: its topic; Shelly: its topic prefix;
    /// ESPHome: its node name).
    pub key: String,
    /// The other names it goes by in other conventions (an ESPHome node that also publishes
    /// Home Assistant discovery configs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<(Convention, String)>,
    /// Its own topic, as its convention uses it (Zigbee2MQTT: `<base>/<friendly name>`;
    /// a native device: its name in its topics).
    pub topic: String,
    #[serde(default)]
    pub manufacturer: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The name it gave itself (a device block's name, Tasmota's `dn`, a Shelly's
    /// configured name).
    #[serde(default)]
    pub name: Option<String>,
    /// The room it suggests for itself (Home Assistant's `suggested_area`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    /// Its firmware, where it says (`sw_version`, Tasmota's `sw`, a Shelly's `ver`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(default)]
    pub values: Vec<ValueSpec>,
    /// Where it says whether it is online.
    #[serde(default)]
    pub availability: Vec<AvailabilitySpec>,
}

impl Description {
    /// A description with nothing in it yet.
    pub fn new(convention: Convention, key: &str, topic: &str) -> Self {
        Self {
            convention,
            key: key.to_owned(),
            aliases: Vec::new(),
            topic: topic.to_owned(),
            manufacturer: None,
            model: None,
            description: None,
            name: None,
            area: None,
            firmware: None,
            values: Vec::new(),
            availability: Vec::new(),
        }
    }

    /// Its keys: its own and its aliases.
    pub fn keys(&self) -> impl Iterator<Item = (Convention, &str)> {
        std::iter::once((self.convention, self.key.as_str())).chain(self.aliases.iter().map(|(c, k)| (*c, k.as_str())))
    }

    /// The value named `metric`.
    pub fn value(&self, metric: &str) -> Option<&ValueSpec> {
        self.values.iter().find(|v| v.metric == metric)
    }

    /// Every topic it reads a value or its availability from.
    pub fn listened(&self) -> impl Iterator<Item = &str> {
        let states = self.values.iter().filter_map(|v| v.state.as_ref().map(|s| s.topic.as_str()));
        states.chain(self.availability.iter().map(|a| a.topic.as_str()))
    }

    /// As its viewers see it.
    pub fn view(&self, online: Option<bool>) -> Discovered {
        Discovered {
            convention: self.convention,
            name: self.name.clone(),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            description: self.description.clone(),
            area: self.area.clone(),
            firmware: self.firmware.clone(),
            online,
            values: self
                .values
                .iter()
                .map(|v| DiscoveredValue {
                    metric: v.metric.clone(),
                    name: v.name.clone(),
                    unit: v.unit.clone(),
                    class: v.class.clone(),
                    state_class: v.state_class.clone(),
                    precision: v.precision,
                    settable: v.command.is_some(),
                    on_off: v.on_off.is_some(),
                    options: v.options.clone(),
                    category: v.category.clone(),
                })
                .collect(),
        }
    }
}

/// One value a device reports or takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSpec {
    /// The key its readings are kept under.
    pub metric: String,
    /// What its device calls it ("Brew Strength", Tasmota's relay names, Zigbee2MQTT's
    /// labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    /// For an on/off value: the device's own on and off, as it sends and takes them.
    #[serde(default)]
    pub on_off: Option<(Json, Json)>,
    /// How it is set, if it can be.
    #[serde(default)]
    pub command: Option<CommandSpec>,
    /// Where it is read, when not from the device's own state topic (Home Assistant
    /// discovery: a state topic and a value template per value).
    #[serde(default)]
    pub state: Option<StateSpec>,
    /// Home Assistant's device class (`temperature`, `power`, `door`...).
    #[serde(default)]
    pub class: Option<String>,
    /// Home Assistant's state class: `measurement`, `total`, `total_increasing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_class: Option<String>,
    /// Digits after the decimal point it is best shown with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u8>,
    /// The Home Assistant entity it came from (`<component>:<id>`), so that removing the
    /// entity removes it.
    #[serde(default)]
    pub entity: Option<String>,
    /// The values it takes, when they are a list (at most [`MAX_OPTIONS`]).
    #[serde(default)]
    pub options: Vec<String>,
    /// A setting (`config`) or a diagnostic (`diagnostic`) rather than what the device is
    /// for: Zigbee2MQTT's category, Home Assistant's entity category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl ValueSpec {
    /// A value named `metric`, with nothing else said of it yet.
    pub fn new(metric: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            name: None,
            unit: None,
            on_off: None,
            command: None,
            state: None,
            class: None,
            state_class: None,
            precision: None,
            entity: None,
            options: Vec::new(),
            category: None,
        }
    }

    /// A reading's value in Hearth's terms: the device's own on and off words as
    /// true/false.
    pub fn reading_value(&self, value: Value) -> Value {
        if let Some((on, off)) = &self.on_off {
            let said = as_json(&value);
            if said == *on {
                return Value::Bool(true);
            }
            if said == *off {
                return Value::Bool(false);
            }
        }
        value
    }

    /// The value a state topic's message gives (through its template when it has one):
    /// on/off words as true/false, numbers in text as numbers; Home Assistant's "no value"
    /// words, and a message the template finds nothing in, give none.
    pub fn read_state(&self, message: &Message<'_>) -> Option<Value> {
        let state = self.state.as_ref()?;
        let value = match &state.template {
            Some(template) => template.render_message(message).ok()?,
            // A value is short: a longer payload is not copied to find that out.
            None => Value::Text(message.text().filter(|t| t.len() <= 4 * MAX_TEXT_LEN)?.to_owned()),
        };
        let text = match &value {
            Value::Text(t) => t.clone(),
            other => as_json(other).to_string(),
        };
        if let Some((on, off)) = &self.on_off {
            if text == word_text(on) {
                return Some(Value::Bool(true));
            }
            if text == word_text(off) {
                return Some(Value::Bool(false));
            }
        }
        match value {
            Value::Text(t) if t.is_empty() || matches!(t.as_str(), "None" | "unknown" | "unavailable") => None,
            Value::Text(t) => match t.parse::<f64>() {
                Ok(n) if n.is_finite() => Some(Value::Number(n)),
                _ => (t.chars().count() <= MAX_TEXT_LEN).then_some(Value::Text(t)),
            },
            other => Some(other),
        }
    }
}

/// A value's own state topic and the template that reads it, parsed once, when its
/// config arrives (or its description is loaded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSpec {
    pub topic: String,
    #[serde(default)]
    pub template: Option<Template>,
}

/// An availability topic, its template, and the payloads that mean online and offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilitySpec {
    pub topic: String,
    #[serde(default)]
    pub template: Option<Template>,
    pub online: String,
    pub offline: String,
}

impl AvailabilitySpec {
    /// An availability topic whose payloads are the words themselves.
    pub fn words(topic: impl Into<String>, online: &str, offline: &str) -> Self {
        Self { topic: topic.into(), template: None, online: online.to_owned(), offline: offline.to_owned() }
    }

    /// Whether `message` says online (`Some(true)`), offline, or neither.
    pub fn read(&self, message: &Message<'_>) -> Option<bool> {
        let rendered = match &self.template {
            Some(template) => match template.render_message(message).ok()? {
                Value::Text(t) => t,
                other => as_json(&other).to_string(),
            },
            None => String::new(),
        };
        let said = match &self.template {
            Some(_) => rendered.as_str(),
            None => message.text()?,
        };
        match said {
            s if s == self.online => Some(true),
            s if s == self.offline => Some(false),
            _ => None,
        }
    }
}

/// Where a value is set, and how the payload is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    pub topic: String,
    pub form: Form,
    /// Sent retained (Home Assistant discovery's `retain`): a device that subscribes later
    /// (one that sleeps, with a clean session) gets the last one when it does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
}

impl CommandSpec {
    pub fn new(topic: impl Into<String>, form: Form) -> Self {
        Self { topic: topic.into(), form, retain: false }
    }
}

/// How a command's payload is written. Each form that is one convention's own is
/// written by that convention's module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// `{"<key>": <value>}` (Zigbee2MQTT, Home Assistant's JSON lights).
    Json { key: String },
    /// The value alone, as text (Tasmota's `cmnd`, ESPHome's `command`).
    Text,
    /// Shelly's RPC `Switch.Set` for switch `id`.
    ShellySwitch { id: u32 },
}

impl Form {
    /// The payload that says `said` on `topic`.
    pub fn encode(&self, topic: &str, said: Json) -> Vec<u8> {
        match self {
            Form::Json { key } => serde_json::json!({ key: said }).to_string().into_bytes(),
            Form::Text => match said {
                Json::String(text) => text.into_bytes(),
                other => other.to_string().into_bytes(),
            },
            Form::ShellySwitch { id } => super::shelly::switch_set(topic, *id, said),
        }
    }
}

/// An on/off word as the device sends it: `true`/`false` as JSON booleans, the rest as text.
pub fn word(text: &str) -> Json {
    match text {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        other => Json::String(other.to_owned()),
    }
}

/// An on/off word as it appears in a text payload.
fn word_text(word: &Json) -> String {
    match word {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Both words, as [`word`] reads them.
pub fn words(on: &str, off: &str) -> Option<(Json, Json)> {
    Some((word(on), word(off)))
}

/// A reading's value as JSON: whole numbers as integers, since devices that take a
/// brightness of 128 may refuse 128.0.
pub fn as_json(value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Json::from(*n as i64),
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Text(t) => Json::String(t.clone()),
    }
}

/// Text a device gave of itself, kept if short and printable.
pub fn about_text(text: &str) -> Option<String> {
    let text = text.trim();
    let fine = !text.is_empty() && !text.chars().any(char::is_control);
    fine.then(|| text.chars().take(MAX_ABOUT).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A description stored by the Hearth before this one (no aliases, area, names or
    /// state classes) still reads, templates parsed.
    #[test]
    fn a_description_stored_before_reads() -> Result<(), serde_json::Error> {
        let stored = r#"{"convention":"home_assistant","key":"n1","topic":"","manufacturer":null,"model":null,
            "description":null,"name":null,"values":[{"metric":"t","unit":"°C","on_off":null,"command":null,
            "state":{"topic":"n/state","template":"{{ value_json.t }}"},"class":"temperature","entity":"sensor:n t",
            "options":[]}],"availability":[{"topic":"n/status","template":null,"online":"online","offline":"offline"}]}"#;
        let description: Description = serde_json::from_str(stored)?;
        let message = Message::new("n/state", br#"{"t":21.5}"#);
        assert_eq!(description.values[0].read_state(&message), Some(Value::Number(21.5)));
        let again: Description = serde_json::from_str(&serde_json::to_string(&description)?)?;
        assert_eq!(again, description);
        Ok(())
    }

    #[test]
    fn commands_are_written_in_their_forms() {
        assert_eq!(Form::Json { key: "state".into() }.encode("z/plug/set", Json::from("ON")), br#"{"state":"ON"}"#);
        assert_eq!(Form::Text.encode("cmnd/plug/POWER", Json::from("OFF")), b"OFF");
        assert_eq!(Form::Text.encode("n/number/set", Json::from(128)), b"128");
        assert_eq!(as_json(&Value::Number(128.0)), Json::from(128));
        assert_eq!(as_json(&Value::Number(0.5)), Json::from(0.5));
    }
}
