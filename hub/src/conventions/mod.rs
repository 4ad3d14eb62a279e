//! The conventions layer: how the devices of each ecosystem a home has speak. One module
//! per convention (Zigbee2MQTT, Home Assistant discovery, Tasmota, Shelly, ESPHome, and
//! Hearth's own topics), each owning how it reads its messages, how its devices describe
//! themselves and how they are commanded, behind [`Ecosystem`]. A new convention is a
//! module, its variant of [`Convention`] (in `hearth-model`), and its arm in
//! [`ecosystem`]; the compiler lists the rest.
//!
//! Pure: no I/O, no clock, no locks, no SQL. Which connection may publish where, which
//! device a key names and what is stored are `crate::bridges`' business.

pub mod description;
pub mod esphome;
pub mod hearth;
pub mod home_assistant;
pub mod shelly;
pub mod tasmota;
pub mod zigbee2mqtt;

use std::sync::OnceLock;

use serde_json::{Map, Value as Json};

pub use description::{AvailabilitySpec, CommandSpec, Description, Form, StateSpec, ValueSpec};
pub use hearth_model::devices::Convention;

use crate::reading::Value;

/// Largest payload parsed as JSON for its values: a device's whole state (a Zigbee2MQTT
/// device's can hold a few hundred values). A device list is read by its own convention.
pub const MAX_JSON: usize = 64 * 1024;

/// What every convention supplies.
pub trait Ecosystem: Sync {
    /// Reads a message that no known device or value listens for: what it announces or
    /// reports, naming devices by their keys. [`Heard::NotMine`] if the topic is not one of
    /// this convention's.
    fn read(&self, message: &Message<'_>) -> Heard;

    /// Reads a message on one of `device`'s own topics ([`Ecosystem::device_topic`]):
    /// `rest` is what follows that topic (empty for the topic itself, `availability`...).
    fn read_own(&self, device: &Description, rest: &str, message: &Message<'_>) -> Heard {
        let _ = (device, rest, message);
        Heard::NotMine
    }

    /// The topic `device` publishes its whole state on, if its convention has one
    /// (Zigbee2MQTT's `<base>/<friendly name>`).
    fn device_topic<'a>(&self, device: &'a Description) -> Option<&'a str> {
        let _ = device;
        None
    }

    /// Topic prefixes everything `device` publishes falls under, if its convention gives
    /// each device a topic space (Tasmota's `tele/<topic>/`, an ESPHome node's `<node>/`).
    /// What another convention announces under them is the same device.
    fn roots(&self, device: &Description) -> Vec<String> {
        let _ = device;
        Vec::new()
    }

    /// Whether what it says of a device is all there is to say (a bridge's own list of its
    /// devices): what other conventions announce of them adds nothing.
    fn describes_wholly(&self) -> bool {
        false
    }

    /// What the hub asks a device it has just met, as (topic, payload): a Shelly its
    /// configured name.
    fn greet(&self, device: &Description) -> Vec<(String, Vec<u8>)> {
        let _ = device;
        Vec::new()
    }
}

/// Where each convention's module is.
pub fn ecosystem(convention: Convention) -> &'static dyn Ecosystem {
    match convention {
        Convention::Zigbee2mqtt => &zigbee2mqtt::Zigbee2mqtt,
        Convention::HomeAssistant => &home_assistant::HomeAssistant,
        Convention::Tasmota => &tasmota::Tasmota,
        Convention::Shelly => &shelly::Shelly,
        Convention::Esphome => &esphome::Esphome,
        Convention::Hearth => &hearth::Hearth,
    }
}

/// One message: its topic and payload, its payload parsed as JSON once, when first asked,
/// however many values read it.
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    text: OnceLock<Option<&'a str>>,
    json: OnceLock<Option<Json>>,
}

impl<'a> Message<'a> {
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Self { topic, payload, text: OnceLock::new(), json: OnceLock::new() }
    }

    /// The payload as text, without surrounding spaces; `None` if it is not UTF-8.
    pub fn text(&self) -> Option<&'a str> {
        *self.text.get_or_init(|| std::str::from_utf8(self.payload).ok().map(str::trim))
    }

    /// The payload as JSON; `None` if it is not JSON, or larger than [`MAX_JSON`].
    pub fn json(&self) -> Option<&Json> {
        self.json
            .get_or_init(|| (self.payload.len() <= MAX_JSON).then(|| serde_json::from_slice(self.payload).ok())?)
            .as_ref()
    }

    /// The payload as a JSON object.
    pub fn object(&self) -> Option<&Map<String, Json>> {
        self.json().and_then(Json::as_object)
    }

    /// The topic's levels.
    pub fn levels(&self) -> Vec<&'a str> {
        self.topic.split('/').collect()
    }
}

/// A device as its convention names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub convention: Convention,
    pub key: String,
}

impl Identity {
    pub fn new(convention: Convention, key: impl Into<String>) -> Self {
        Self { convention, key: key.into() }
    }
}

/// A value read from a message: the metric Hearth stores it as, and its unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: String,
    pub value: Value,
    pub unit: Option<String>,
}

/// Which of a device's values an announcement speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// All of them (a Zigbee2MQTT device list's entry): they replace what was known.
    Whole,
    /// Those of one Home Assistant entity (`<component>:<id>`): they replace that entity's.
    Entity(String),
    /// Those it showed in a message (a native device's telemetry): added to what is known,
    /// a command learnt where none was.
    Seen,
}

/// What a device said of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    pub identity: Identity,
    /// Said to reach the hub through another device (Home Assistant's `via_device`, a
    /// device of a Zigbee2MQTT list): never the connection it came on itself.
    pub behind: bool,
    pub about: About,
    pub part: Part,
    pub values: Vec<ValueSpec>,
    pub availability: Vec<AvailabilitySpec>,
    /// Its own topic (see [`Description::topic`]).
    pub topic: String,
    /// Parts of what it said that Hearth cannot read, and why: shown on the device.
    pub left_out: Vec<String>,
}

impl Announcement {
    /// An announcement of `identity` with nothing said yet.
    pub fn of(identity: Identity, part: Part) -> Self {
        let topic = identity.key.clone();
        Self {
            identity,
            behind: false,
            about: About::default(),
            part,
            values: Vec::new(),
            availability: Vec::new(),
            topic,
            left_out: Vec::new(),
        }
    }

    /// Every topic it reads from or is commanded on, for the check that they are its
    /// connection's.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        let commands = self.values.iter().filter_map(|v| v.command.as_ref().map(|c| c.topic.as_str()));
        self.listened().chain(commands)
    }

    /// Every topic it reads a value or its availability from.
    pub fn listened(&self) -> impl Iterator<Item = &str> {
        let states = self.values.iter().filter_map(|v| v.state.as_ref().map(|s| s.topic.as_str()));
        states.chain(self.availability.iter().map(|a| a.topic.as_str()))
    }
}

/// Who a device says it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct About {
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub description: Option<String>,
    pub area: Option<String>,
    pub firmware: Option<String>,
}

impl About {
    /// Puts into `description` what this says, leaving what it does not say as it was.
    pub fn apply(&self, description: &mut Description) {
        let fields = [
            (&self.name, &mut description.name),
            (&self.manufacturer, &mut description.manufacturer),
            (&self.model, &mut description.model),
            (&self.description, &mut description.description),
            (&self.area, &mut description.area),
            (&self.firmware, &mut description.firmware),
        ];
        for (said, kept) in fields {
            if let Some(said) = said {
                *kept = Some(said.clone());
            }
        }
    }
}

/// What goes, when a device takes something back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// One Home Assistant entity's values (`<component>:<id>`).
    Entity(String),
    /// The values of every entity of a device-based config (their ids start `@<id> `).
    DeviceConfig(String),
}

/// What a convention made of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// Not a topic of this convention.
    NotMine,
    /// This convention's, with nothing Hearth keeps (a command, a log line, a reply).
    Nothing,
    /// This convention's, and refused: the reason is shown on the connection.
    Refused(String),
    /// Devices describing themselves; `refused` says, per part, what could not be read
    /// (the rest is taken); `gone`, what they take back at the same time.
    Announced { devices: Vec<Announcement>, refused: Vec<String>, gone: Vec<Gone> },
    /// A bridge's whole list of its devices whose topics start with `scope`: those whose
    /// keys are not among `keys` have left (`devices` are those Hearth can read).
    Listed { scope: String, devices: Vec<Announcement>, keys: Vec<String> },
    /// Values a device reports, and what they show of it.
    Reported { device: Box<Announcement>, samples: Vec<Sample> },
    /// Values of the device whose own topic this is; `left_out` names what could not be
    /// kept (said on the device).
    Values { samples: Vec<Sample>, left_out: Vec<String> },
    /// Whether a device is online. Alone it makes no device: if none is known yet, it is
    /// remembered for the one that will say this topic is its availability.
    Online { device: Option<Identity>, online: bool },
    /// Parts of devices taken back.
    Gone(Vec<Gone>),
}

/// Values found in one message of a native convention, each with how it is described.
#[derive(Default)]
pub(crate) struct Found {
    pub values: Vec<ValueSpec>,
    pub samples: Vec<Sample>,
}

impl Found {
    /// Most values taken from one message.
    const MAX: usize = 64;

    /// Keeps `value` as `spec`'s reading, if it is one Hearth can store.
    pub fn push(&mut self, spec: ValueSpec, value: &Json) {
        if self.samples.len() >= Self::MAX || !crate::reading::valid_metric(&spec.metric) {
            return;
        }
        if let Some(value) = json_value(value) {
            self.samples.push(Sample { metric: spec.metric.clone(), value, unit: spec.unit.clone() });
            self.values.push(spec);
        }
    }

    /// What was found, as the device `device` reporting it; nothing if nothing was.
    pub fn report(self, mut device: Announcement) -> Heard {
        if self.samples.is_empty() {
            return Heard::Nothing;
        }
        device.values = self.values;
        Heard::Reported { device: Box::new(device), samples: self.samples }
    }
}

/// A JSON value as a reading's value: numbers, booleans and short text, as Hearth's own
/// payloads take them; anything else gives none.
pub fn json_value(value: &Json) -> Option<Value> {
    crate::ingest::decode::json_value("", value).ok().flatten()
}

/// A message of the corpus in `hub/tests/data/ecosystems` (see its INDEX.md): its topic,
/// and its payload from `<name>.json` or `<name>.txt`.
#[cfg(test)]
pub(crate) fn corpus(name: &str) -> (String, Vec<u8>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ecosystems");
    let topic = std::fs::read_to_string(dir.join(format!("{name}.topic"))).unwrap_or_default();
    let payload = std::fs::read(dir.join(format!("{name}.json")))
        .or_else(|_| std::fs::read(dir.join(format!("{name}.txt"))))
        .unwrap_or_default();
    (topic.trim().to_owned(), payload)
}
