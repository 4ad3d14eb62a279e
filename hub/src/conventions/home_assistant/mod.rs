//! Home Assistant MQTT discovery (`<prefix>/<component>/[<node_id>/]<object_id>/config`,
//! and device-based configs under `<prefix>/device/`), as Zigbee2MQTT, ESPHome and many DIY
//! devices publish it: abbreviations expanded (HA's own tables, `abbreviations.tsv`), the
//! `~` base topic put in, the options every component shares read here, and each
//! component's own in a file of its own, as Home Assistant's MQTT integration keeps them.
//! Which topics a device may use is decided where an announcement is applied.

mod binary_sensor;
mod button;
mod climate;
mod cover;
mod event;
mod fan;
mod light;
mod lock;
mod number;
mod select;
mod sensor;
mod switch;
pub mod template;
mod text;
mod valve;

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value as Json};

use self::template::{Template, TemplateError};
use super::description::{AvailabilitySpec, CommandSpec, Form, MAX_AVAILABILITY, MAX_OPTIONS, StateSpec, ValueSpec};
use super::{About, Announcement, Convention, Ecosystem, Gone, Heard, Identity, Message, Part};
use crate::reading::{valid_metric, valid_unit};

/// Largest config accepted.
pub const MAX_CONFIG: usize = 16 * 1024;
/// Largest device-based config (several components at once), and most components in one.
pub const MAX_DEVICE_CONFIG: usize = 64 * 1024;
const MAX_COMPONENTS: usize = 64;
/// Longest topic, name or id taken from a config.
const MAX_FIELD: usize = 256;

/// Home Assistant discovery, as a convention.
pub struct HomeAssistant;

impl Ecosystem for HomeAssistant {
    fn read(&self, message: &Message<'_>) -> Heard {
        let Some(prefix) = discovery_prefix(message.topic) else { return Heard::NotMine };
        match parse(prefix, message.topic, message.payload) {
            Err(error) => Heard::Refused(error.to_string()),
            Ok(Discovery::Entity(entity)) => {
                Heard::Announced { devices: vec![entity.announce()], refused: Vec::new(), gone: Vec::new() }
            }
            Ok(Discovery::Removed { component, id }) => Heard::Gone(vec![Gone::Entity(tag(component, &id))]),
            Ok(Discovery::Device { entities, refused, removed, .. }) => Heard::Announced {
                devices: entities.into_iter().map(|e| e.announce()).collect(),
                refused: refused.iter().map(|(key, error)| format!("component {key:?}: {error}")).collect(),
                gone: removed.iter().map(|(component, id)| Gone::Entity(tag(*component, id))).collect(),
            },
            Ok(Discovery::DeviceRemoved { id }) => Heard::Gone(vec![Gone::DeviceConfig(id)]),
        }
    }
}

/// The discovery prefix of a config topic (`<prefix>/<component>/[<node_id>/]<object_id>/config`,
/// 4 or 5 levels), if `topic` is one.
fn discovery_prefix(topic: &str) -> Option<&str> {
    let levels = topic.split('/').count();
    (topic.ends_with("/config") && (4..=5).contains(&levels)).then(|| topic.split('/').next()).flatten()
}

/// What names an entity's values across updates: `<component>:<id>`.
pub fn tag(component: Component, id: &str) -> String {
    format!("{}:{id}", component.name())
}

/// The components Hearth understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Sensor,
    BinarySensor,
    Switch,
    Light,
    Climate,
    Cover,
    Button,
    Number,
    Select,
    Lock,
    Fan,
    Valve,
    Text,
    Event,
}

impl Component {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "sensor" => Self::Sensor,
            "binary_sensor" => Self::BinarySensor,
            "switch" => Self::Switch,
            "light" => Self::Light,
            "climate" => Self::Climate,
            "cover" => Self::Cover,
            "button" => Self::Button,
            "number" => Self::Number,
            "select" => Self::Select,
            "lock" => Self::Lock,
            "fan" => Self::Fan,
            "valve" => Self::Valve,
            "text" => Self::Text,
            "event" => Self::Event,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sensor => "sensor",
            Self::BinarySensor => "binary_sensor",
            Self::Switch => "switch",
            Self::Light => "light",
            Self::Climate => "climate",
            Self::Cover => "cover",
            Self::Button => "button",
            Self::Number => "number",
            Self::Select => "select",
            Self::Lock => "lock",
            Self::Fan => "fan",
            Self::Valve => "valve",
            Self::Text => "text",
            Self::Event => "event",
        }
    }

    /// Its values, read from its own options.
    fn values(self, config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
        match self {
            Self::Sensor => sensor::values(config),
            Self::BinarySensor => binary_sensor::values(config),
            Self::Switch => switch::values(config),
            Self::Light => light::values(config),
            Self::Climate => climate::values(config),
            Self::Cover => cover::values(config),
            Self::Button => button::values(config),
            Self::Number => number::values(config),
            Self::Select => select::values(config),
            Self::Lock => lock::values(config),
            Self::Fan => fan::values(config),
            Self::Valve => valve::values(config),
            Self::Text => text::values(config),
            Self::Event => event::values(config),
        }
    }
}

/// What one config message says.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// An entity appears, or changes.
    Entity(Box<Entity>),
    /// An empty config: the entity is gone.
    Removed { component: Component, id: String },
    /// A device-based config (`<prefix>/device/[<node_id>/]<object_id>/config`, Home
    /// Assistant 2024.12 on): each of its components (`cmps`) as an entity of its own (its
    /// id `@<device id> <component id>`), with the config's shared options; the components
    /// it could not read, with the reason; and those named by their platform alone
    /// (`{"p":"sensor"}`), which are to go.
    Device {
        id: String,
        entities: Vec<Entity>,
        refused: Vec<(String, DiscoveryError)>,
        removed: Vec<(Component, String)>,
    },
    /// An empty device-based config: all its components are gone.
    DeviceRemoved { id: String },
}

/// The device an entity belongs to (`device` block).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceInfo {
    pub identifiers: Vec<String>,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub area: Option<String>,
    pub firmware: Option<String>,
    /// It reaches Home Assistant through another device (`via_device`): a Zigbee
    /// coordinator's device, a hub's.
    pub via: bool,
}

/// One discovered entity: who it is, its device, and its values in Hearth's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub component: Component,
    /// `[<node_id> ]<object_id>`: with the component, what names this entity across updates.
    pub id: String,
    pub unique_id: Option<String>,
    /// Its own name; `None` when it is the device's only, or main, entity.
    pub name: Option<String>,
    pub device: DeviceInfo,
    pub values: Vec<ValueSpec>,
    pub availability: Vec<AvailabilitySpec>,
    /// Parts left out, and why (an unsupported template for an optional value): shown on
    /// the device so the owner knows what does not work.
    pub left_out: Vec<String>,
}

impl Entity {
    /// Its object id: the last part of its id, and its main value's metric.
    pub fn object(&self) -> &str {
        self.id.rsplit(' ').next().unwrap_or(&self.id)
    }

    /// As an announcement of its device: the device named by its block's first identifier,
    /// else by the entity's unique id, else by the entity itself.
    pub fn announce(self) -> Announcement {
        let key = self.device.identifiers.first().cloned().or_else(|| self.unique_id.clone());
        let key = key.unwrap_or_else(|| tag(self.component, &self.id));
        let mut announcement = Announcement::of(
            Identity::new(Convention::HomeAssistant, key),
            Part::Entity(tag(self.component, &self.id)),
        );
        announcement.topic = String::new();
        announcement.behind = self.device.via;
        announcement.about = About {
            name: self.device.name.clone(),
            manufacturer: self.device.manufacturer.clone(),
            model: self.device.model.clone(),
            description: None,
            area: self.device.area.clone(),
            firmware: self.device.firmware.clone(),
        };
        // Named after the entity only if its device has no name of its own, and only for
        // a device seen for the first time (see `crate::bridges`).
        announcement.left_out =
            self.left_out.iter().map(|l| format!("{}: left out: {l}", tag(self.component, &self.id))).collect();
        announcement.values = self.values;
        announcement.availability = self.availability;
        announcement
    }
}

/// Why a config was refused: shown on the connection that sent it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("not a discovery topic: {0:?} (expected <prefix>/<component>/[<node_id>/]<object_id>/config)")]
    Topic(String),
    #[error(
        "component {0:?} is not one Hearth understands (sensor, binary_sensor, switch, light, climate, cover, button, number, select, lock, fan, valve, text, event)"
    )]
    Component(String),
    #[error("config is {0} bytes, more than the {MAX_CONFIG} allowed")]
    TooLarge(usize),
    #[error("device config is {0} bytes, more than the {MAX_DEVICE_CONFIG} allowed")]
    DeviceTooLarge(usize),
    #[error("config is not a JSON object: {0}")]
    Json(String),
    #[error("{0:?} is required for a {1}")]
    Missing(&'static str, &'static str),
    #[error("{0:?} is not valid: {1}")]
    Invalid(&'static str, String),
    #[error("{0}: {1}")]
    Template(&'static str, TemplateError),
}

/// Reads the config `payload` published on `topic` under the discovery `prefix`.
pub fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Result<Discovery, DiscoveryError> {
    let bad_topic = || DiscoveryError::Topic(topic.to_owned());
    let rest = topic.strip_prefix(prefix).and_then(|t| t.strip_prefix('/')).ok_or_else(bad_topic)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (component, node, object) = match parts.as_slice() {
        [component, object, "config"] => (*component, None, *object),
        [component, node, object, "config"] => (*component, Some(*node), *object),
        _ => return Err(bad_topic()),
    };
    if !node.into_iter().chain([object]).all(valid_id)
        || !component.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(bad_topic());
    }
    let id = node.map_or_else(|| object.to_owned(), |node| format!("{node} {object}"));
    if component == "device" {
        return device_config(id, payload);
    }
    let component = Component::parse(component).ok_or_else(|| DiscoveryError::Component(component.to_owned()))?;
    if payload.is_empty() {
        return Ok(Discovery::Removed { component, id });
    }
    if payload.len() > MAX_CONFIG {
        return Err(DiscoveryError::TooLarge(payload.len()));
    }
    let Json::Object(config) = serde_json::from_slice(payload).map_err(|e| DiscoveryError::Json(e.to_string()))? else {
        return Err(DiscoveryError::Json("not an object".into()));
    };
    let config = expand(config);
    Ok(Discovery::Entity(Box::new(entity(component, id, &config)?)))
}

/// Reads a device-based config: shared options at the top, components under `cmps`, each
/// with its platform (`p`) and its own options, which win over the shared ones.
fn device_config(id: String, payload: &[u8]) -> Result<Discovery, DiscoveryError> {
    if payload.is_empty() {
        return Ok(Discovery::DeviceRemoved { id });
    }
    if payload.len() > MAX_DEVICE_CONFIG {
        return Err(DiscoveryError::DeviceTooLarge(payload.len()));
    }
    let Json::Object(config) = serde_json::from_slice(payload).map_err(|e| DiscoveryError::Json(e.to_string()))? else {
        return Err(DiscoveryError::Json("not an object".into()));
    };
    let (keys, _) = abbreviations();
    let mut shared = rename(config, keys);
    let Some(Json::Object(components)) = shared.remove("components") else {
        return Err(DiscoveryError::Missing("components", "device"));
    };
    if !shared.get("device").is_some_and(Json::is_object) {
        return Err(DiscoveryError::Missing("device", "device"));
    }
    let (mut entities, mut refused, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (key, component) in components.into_iter().take(MAX_COMPONENTS) {
        let Json::Object(component) = component else {
            refused.push((key, DiscoveryError::Json("a component is not an object".into())));
            continue;
        };
        let mut own = rename(component, keys);
        let platform = own.remove("platform");
        let Some(platform) = platform.as_ref().and_then(Json::as_str) else {
            refused.push((key, DiscoveryError::Missing("platform", "device component")));
            continue;
        };
        let Some(kind) = Component::parse(platform) else {
            refused.push((key, DiscoveryError::Component(platform.to_owned())));
            continue;
        };
        if !valid_id(&key) {
            refused.push((key.clone(), DiscoveryError::Invalid("components", format!("{key:?} is not an id"))));
            continue;
        }
        // Marked apart from the ids of single-entity configs (which never hold `@`): the
        // device `kitchen`'s `temp` is not the entity `homeassistant/sensor/kitchen/temp`.
        let entity_id = format!("@{id} {key}");
        // Named by its platform alone: the component is being taken away.
        if own.is_empty() {
            removed.push((kind, entity_id));
            continue;
        }
        let mut merged = shared.clone();
        merged.extend(own);
        match entity(kind, entity_id, &put_base(merged)) {
            Ok(entity) => entities.push(entity),
            Err(error) => refused.push((key, error)),
        }
    }
    Ok(Discovery::Device { id, entities, refused, removed })
}

/// Whether `id` is a node or object id as HA accepts them.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_FIELD && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Short key to full key.
type Abbreviations = HashMap<&'static str, &'static str>;

/// HA's abbreviation tables: (config keys, device keys).
fn abbreviations() -> &'static (Abbreviations, Abbreviations) {
    static TABLES: OnceLock<(Abbreviations, Abbreviations)> = OnceLock::new();
    TABLES.get_or_init(|| {
        let (mut config, mut device) = (HashMap::new(), HashMap::new());
        let mut table = None;
        for line in include_str!("abbreviations.tsv").lines() {
            if line.starts_with("# [ABBREVIATIONS]") {
                table = Some(&mut config);
            } else if line.starts_with("# [DEVICE_ABBREVIATIONS]") {
                table = Some(&mut device);
            } else if line.starts_with("# [") {
                table = None;
            } else if let (Some(table), Some((short, full))) = (table.as_deref_mut(), line.split_once('\t')) {
                table.insert(short, full);
            }
        }
        (config, device)
    })
}

/// Renames abbreviated keys to their full form (the abbreviated key wins over its full
/// form, as in HA), in a config, its device block and its availability entries.
fn rename(config: Map<String, Json>, keys: &Abbreviations) -> Map<String, Json> {
    let (_, device_keys) = abbreviations();
    let flat = |map: Map<String, Json>, table: &Abbreviations| {
        let mut out = Map::new();
        let (short, long): (Vec<_>, Vec<_>) = map.into_iter().partition(|(k, _)| table.contains_key(k.as_str()));
        for (key, value) in long.into_iter().chain(short) {
            let key = table.get(key.as_str()).map_or(key, |full| (*full).to_owned());
            out.insert(key, value);
        }
        out
    };
    let mut config = flat(config, keys);
    if let Some(Json::Object(device)) = config.remove("device") {
        config.insert("device".into(), Json::Object(flat(device, device_keys)));
    }
    match config.remove("availability") {
        Some(Json::Array(entries)) => {
            let entries = entries
                .into_iter()
                .map(|e| match e {
                    Json::Object(e) => Json::Object(flat(e, keys)),
                    other => other,
                })
                .collect();
            config.insert("availability".into(), Json::Array(entries));
        }
        Some(Json::Object(entry)) => {
            config.insert("availability".into(), Json::Array(vec![Json::Object(flat(entry, keys))]));
        }
        Some(other) => {
            config.insert("availability".into(), other);
        }
        None => {}
    }
    config
}

/// Expands abbreviations, then puts in the `~` base topic.
fn expand(config: Map<String, Json>) -> Map<String, Json> {
    put_base(rename(config, &abbreviations().0))
}

/// Puts the `~` base topic into the topics that start or end with `~`.
fn put_base(mut config: Map<String, Json>) -> Map<String, Json> {
    if let Some(Json::String(base)) = config.remove("~") {
        let put_base = |value: &mut Json| {
            if let Json::String(topic) = value {
                if let Some(rest) = topic.strip_prefix('~') {
                    *topic = format!("{base}{rest}");
                } else if let Some(rest) = topic.strip_suffix('~') {
                    *topic = format!("{rest}{base}");
                }
            }
        };
        for (key, value) in config.iter_mut() {
            if key.ends_with("topic") {
                put_base(value);
            }
        }
        if let Some(Json::Array(entries)) = config.get_mut("availability") {
            for entry in entries.iter_mut().filter_map(Json::as_object_mut) {
                if let Some(topic) = entry.get_mut("topic") {
                    put_base(topic);
                }
            }
        }
    }
    config
}

/// An expanded config as the components read it: typed accessors that refuse what is not
/// valid, and what was left out along the way.
pub(crate) struct Config<'a> {
    map: &'a Map<String, Json>,
    component: Component,
    /// The entity's object id (its main value's metric) and its tag.
    object: String,
    tag: String,
    /// Its own name.
    name: Option<String>,
    left_out: Vec<String>,
}

impl<'a> Config<'a> {
    fn new(component: Component, id: &str, map: &'a Map<String, Json>) -> Self {
        let object = id.rsplit(' ').next().unwrap_or(id).to_owned();
        let name = match map.get("name") {
            Some(Json::String(s)) if s.len() <= MAX_FIELD && !s.chars().any(char::is_control) => {
                super::description::about_text(s)
            }
            _ => None,
        };
        Self { map, component, object, tag: tag(component, id), name, left_out: Vec::new() }
    }

    /// A text option (numbers and booleans as text); a list or an object is refused.
    pub(crate) fn text(&self, key: &'static str) -> Result<Option<String>, DiscoveryError> {
        match self.map.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.len() <= MAX_FIELD && !s.chars().any(char::is_control) => Ok(Some(s.clone())),
            Some(Json::Number(n)) => Ok(Some(n.to_string())),
            Some(Json::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(DiscoveryError::Invalid(key, shorten(&other.to_string()))),
        }
    }

    /// A topic a device may publish to or be commanded on.
    pub(crate) fn topic(&self, key: &'static str) -> Result<Option<String>, DiscoveryError> {
        match self.text(key)? {
            Some(t) if valid_topic(&t) => Ok(Some(t)),
            Some(t) => Err(DiscoveryError::Invalid(key, format!("{t:?} is not a topic a device can publish to"))),
            None => Ok(None),
        }
    }

    pub(crate) fn number(&self, key: &'static str) -> Option<f64> {
        match self.map.get(key)? {
            Json::Number(n) => n.as_f64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|n: &f64| n.is_finite())
    }

    /// A list of words, at most [`MAX_OPTIONS`], each short.
    pub(crate) fn list(&self, key: &'static str) -> Vec<String> {
        self.map
            .get(key)
            .and_then(Json::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().filter(|s| s.len() <= MAX_FIELD).map(str::to_owned))
                    .take(MAX_OPTIONS)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A yes/no option, as JSON true or the text "true".
    pub(crate) fn flag(&self, key: &'static str) -> Result<bool, DiscoveryError> {
        Ok(matches!(self.map.get(key), Some(Json::Bool(true)))
            || self.text(key)?.is_some_and(|r| r.eq_ignore_ascii_case("true")))
    }

    /// A state read from a topic through its template. A template outside the subset
    /// refuses the whole entity when the state is what the entity is about (`required`),
    /// else leaves that part out, said on the device.
    pub(crate) fn state(
        &mut self,
        topic_key: &'static str,
        template_key: &'static str,
        required: bool,
    ) -> Result<Option<StateSpec>, DiscoveryError> {
        let Some(topic) = self.topic(topic_key)? else { return Ok(None) };
        let template = match self.text(template_key)? {
            None => None,
            Some(source) => match Template::parse(&source) {
                Ok(template) => Some(template),
                Err(error) if required => return Err(DiscoveryError::Template(template_key, error)),
                Err(error) => {
                    self.left_out.push(format!("{template_key}: {error}"));
                    return Ok(None);
                }
            },
        };
        Ok(Some(StateSpec { topic, template }))
    }

    /// The entity's main state, on `state_topic` through `value_template`.
    pub(crate) fn main_state(&mut self, required: bool) -> Result<Option<StateSpec>, DiscoveryError> {
        let state = self.state("state_topic", "value_template", required)?;
        if required && state.is_none() {
            return Err(DiscoveryError::Missing("state_topic", self.component.name()));
        }
        Ok(state)
    }

    /// Commands in text on the topic `key` names, retained if the config asks.
    pub(crate) fn command(&self, key: &'static str) -> Result<Option<CommandSpec>, DiscoveryError> {
        let retain = self.flag("retain")?;
        Ok(self.topic(key)?.map(|topic| CommandSpec { topic, form: Form::Text, retain }))
    }

    /// The entity's `command_topic`, which it cannot do without.
    pub(crate) fn required_command(&self) -> Result<CommandSpec, DiscoveryError> {
        self.command("command_topic")?.ok_or(DiscoveryError::Missing("command_topic", self.component.name()))
    }

    /// A part of the entity with topics of its own (a cover's position, a fan's speed, a
    /// light's brightness): read on the topic `state` names through its `template`, set on
    /// the one `command` names; `None` if it has neither.
    pub(crate) fn part(
        &mut self,
        part: &str,
        (state, template): (&'static str, &'static str),
        command: &'static str,
    ) -> Result<Option<ValueSpec>, DiscoveryError> {
        let state = self.state(state, template, false)?;
        let command = self.command(command)?;
        Ok((state.is_some() || command.is_some()).then(|| ValueSpec { state, command, ..self.value(Some(part)) }))
    }

    /// The entity's main value, or (`part`) one of its parts (`<object>_<part>`): named,
    /// classed and categorised as the config says.
    pub(crate) fn value(&self, part: Option<&str>) -> ValueSpec {
        let mut value = ValueSpec::new(match part {
            None => self.object.clone(),
            Some(part) => format!("{}_{part}", self.object),
        });
        value.name = match (part, &self.name) {
            (None, name) => name.clone(),
            (Some(part), Some(name)) => Some(format!("{name} {}", part.replace('_', " "))),
            (Some(_), None) => None,
        };
        value.entity = Some(self.tag.clone());
        value.class = self.text("device_class").ok().flatten();
        value.category =
            self.text("entity_category").ok().flatten().filter(|c| matches!(c.as_str(), "config" | "diagnostic"));
        if part.is_none() {
            value.state_class = self.text("state_class").ok().flatten();
            value.precision =
                self.number("suggested_display_precision").filter(|p| (0.0..=10.0).contains(p)).map(|p| p as u8);
        }
        value
    }

    /// Its on and off, in its own words (`payload_on`, `payload_off`; ON and OFF if it
    /// does not say).
    pub(crate) fn on_off(&self) -> Result<Option<(Json, Json)>, DiscoveryError> {
        let on = self.text("payload_on")?.unwrap_or_else(|| "ON".into());
        let off = self.text("payload_off")?.unwrap_or_else(|| "OFF".into());
        Ok(super::description::words(&on, &off))
    }

    /// The unit its config gives, kept if Hearth can keep it.
    pub(crate) fn unit(&self) -> Result<Option<String>, DiscoveryError> {
        Ok(self.text("unit_of_measurement")?.filter(|u| valid_unit(u)))
    }
}

/// Reads an expanded config.
fn entity(component: Component, id: String, map: &Map<String, Json>) -> Result<Entity, DiscoveryError> {
    let mut config = Config::new(component, &id, map);
    let mut values = component.values(&mut config)?;
    values.retain(|v| valid_metric(&v.metric) && (v.state.is_some() || v.command.is_some()));
    let availability = availability(&mut config)?;
    Ok(Entity {
        component,
        unique_id: config.text("unique_id")?,
        name: config.name.clone(),
        device: device(map),
        id,
        values,
        availability,
        left_out: config.left_out,
    })
}

fn availability(config: &mut Config<'_>) -> Result<Vec<AvailabilitySpec>, DiscoveryError> {
    let payload = |entry: &Map<String, Json>, key: &str, default: &str| match entry.get(key) {
        Some(Json::String(s)) => s.clone(),
        Some(other @ (Json::Bool(_) | Json::Number(_))) => other.to_string(),
        _ => default.to_owned(),
    };
    let mut entries: Vec<Map<String, Json>> = match config.map.get("availability") {
        Some(Json::Array(entries)) if entries.len() > MAX_AVAILABILITY => {
            return Err(DiscoveryError::Invalid("availability", format!("more than {MAX_AVAILABILITY} entries")));
        }
        Some(Json::Array(entries)) => entries.iter().filter_map(|e| e.as_object().cloned()).collect(),
        _ => Vec::new(),
    };
    if let Some(topic) = config.map.get("availability_topic") {
        let mut single = Map::new();
        single.insert("topic".into(), topic.clone());
        for (from, to) in [
            ("payload_available", "payload_available"),
            ("payload_not_available", "payload_not_available"),
            ("availability_template", "value_template"),
        ] {
            if let Some(value) = config.map.get(from) {
                single.insert(to.into(), value.clone());
            }
        }
        entries.push(single);
    }
    let mut out = Vec::new();
    for entry in entries.into_iter().take(MAX_AVAILABILITY) {
        let Some(topic) = entry.get("topic").and_then(Json::as_str).filter(|t| valid_topic(t)) else {
            return Err(DiscoveryError::Invalid("availability", "an entry without a valid topic".into()));
        };
        // An entry whose template cannot be read is left out: it never says online, so a
        // device is never shown online on a guess.
        let template = match entry.get("value_template").and_then(Json::as_str).map(Template::parse) {
            None => None,
            Some(Ok(template)) => Some(template),
            Some(Err(error)) => {
                config.left_out.push(format!("availability {topic}: {error}; the device is not shown online from it"));
                continue;
            }
        };
        out.push(AvailabilitySpec {
            topic: topic.to_owned(),
            template,
            online: payload(&entry, "payload_available", "online"),
            offline: payload(&entry, "payload_not_available", "offline"),
        });
    }
    Ok(out)
}

fn device(config: &Map<String, Json>) -> DeviceInfo {
    let Some(device) = config.get("device").and_then(Json::as_object) else { return DeviceInfo::default() };
    let text = |key: &str| device.get(key).and_then(Json::as_str).and_then(super::description::about_text);
    let identifiers = match device.get("identifiers") {
        Some(Json::String(id)) => vec![id.clone()],
        Some(Json::Array(ids)) => ids.iter().filter_map(|i| i.as_str().map(str::to_owned)).take(8).collect(),
        _ => Vec::new(),
    };
    let identifiers = identifiers.into_iter().filter(|i| !i.is_empty() && i.len() <= MAX_FIELD).collect();
    // The area may also be given beside the device block, as older configs did.
    let area = text("suggested_area")
        .or_else(|| config.get("suggested_area").and_then(Json::as_str).and_then(super::description::about_text));
    DeviceInfo {
        identifiers,
        name: text("name"),
        manufacturer: text("manufacturer"),
        model: text("model"),
        area,
        firmware: text("sw_version"),
        via: device.get("via_device").is_some_and(|v| !v.is_null()),
    }
}

/// A topic a device may publish to or be commanded on: no wildcards, no empty levels at
/// the ends, no NUL, not a `$` system topic.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_FIELD
        && !topic.contains(['+', '#', '\0'])
        && !topic.starts_with('$')
        && !topic.chars().any(char::is_control)
}

fn shorten(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::reading::Value;

    use crate::conventions::corpus as message;

    pub(crate) fn announced(name: &str) -> Entity {
        let (topic, payload) = message(name);
        match parse("homeassistant", &topic, &payload) {
            Ok(Discovery::Entity(entity)) => *entity,
            other => panic!("{name}: {other:?}"),
        }
    }

    /// The values of a config of `component` (topic `homeassistant/<component>/node/thing/config`).
    pub(crate) fn values_of(component: &str, config: &str) -> Vec<ValueSpec> {
        let topic = format!("homeassistant/{component}/node/thing/config");
        match parse("homeassistant", &topic, config.as_bytes()) {
            Ok(Discovery::Entity(entity)) => entity.values,
            other => panic!("{component}: {other:?}"),
        }
    }

    fn render(state: Option<&StateSpec>, payload: &str) -> Option<Value> {
        let mut value = ValueSpec::new("x");
        value.state = state.cloned();
        value.read_state(&Message::new("t", payload.as_bytes()))
    }

    #[test]
    fn zigbee2mqtt_sensors_of_both_template_forms_read_their_values() {
        for name in ["z2m-ha-sensor-temperature.config", "z2m-2.10-ha-sensor-temperature.config"] {
            let sensor = announced(name);
            assert_eq!(sensor.component, Component::Sensor);
            let value = &sensor.values[0];
            assert_eq!(value.unit.as_deref(), Some("°C"));
            assert_eq!(value.class.as_deref(), Some("temperature"));
            assert_eq!(value.state_class.as_deref(), Some("measurement"));
            assert_eq!(sensor.device.manufacturer.as_deref(), Some("Aqara"));
            assert!(sensor.device.via, "{name}: Zigbee2MQTT's devices reach HA through its bridge");
            let state = value.state.as_ref();
            assert_eq!(state.map(|s| s.topic.as_str()), Some("zigbee2mqtt/weather_sensor"));
            assert_eq!(render(state, r#"{"temperature":21.5,"humidity":40}"#), Some(Value::Number(21.5)), "{name}");
            assert_eq!(sensor.availability[0].topic, "zigbee2mqtt/bridge/state");
            assert_eq!(sensor.availability[0].read(&Message::new("", br#"{"state":"online"}"#)), Some(true));
        }
    }

    #[test]
    fn esphome_abbreviations_are_expanded() {
        let sensor = announced("esphome-ha-sensor-temperature.config");
        assert_eq!(sensor.id, "garagedoor1 garage_temperature");
        assert_eq!(sensor.name.as_deref(), Some("Garage Temperature"));
        let value = &sensor.values[0];
        assert_eq!(value.name.as_deref(), Some("Garage Temperature"));
        assert_eq!(value.state.as_ref().map(|s| s.topic.as_str()), Some("garagedoor1/sensor/garage_temperature/state"));
        assert_eq!(value.state_class.as_deref(), Some("measurement"));
        assert_eq!(value.precision, Some(1), "suggested_display_precision is kept");
        assert_eq!(sensor.device.identifiers, ["20500de464ec"]);
        assert_eq!(sensor.device.model.as_deref(), Some("esp32"));
        assert_eq!(sensor.device.firmware.as_deref(), Some("2026.8.0 (config hash 0x0dd1e1e6)"));
        assert!(!sensor.device.via);
        assert_eq!(sensor.availability[0].topic, "garagedoor1/status");
        assert_eq!(
            (sensor.availability[0].online.as_str(), sensor.availability[0].offline.as_str()),
            ("online", "offline")
        );
    }

    #[test]
    fn the_base_topic_is_put_in() {
        let switch = announced("ha-tilde-switch.constructed.config");
        let value = &switch.values[0];
        assert_eq!(value.command.as_ref().map(|c| c.topic.as_str()), Some("homeassistant/switch/irrigation/set"));
        assert_eq!(value.state.as_ref().map(|s| s.topic.as_str()), Some("homeassistant/switch/irrigation/state"));
        assert_eq!(switch.availability[0].topic, "homeassistant/switch/irrigation/availability");
    }

    /// The device block's suggested area, where Home Assistant puts it and beside it.
    #[test]
    fn the_suggested_area_is_read_in_both_places() {
        for config in [
            r#"{"stat_t":"a/b","dev":{"ids":"n1","name":"Meter","sa":"Utility room"}}"#,
            r#"{"stat_t":"a/b","dev":{"ids":"n1","name":"Meter"},"suggested_area":"Utility room"}"#,
        ] {
            let Ok(Discovery::Entity(entity)) =
                parse("homeassistant", "homeassistant/sensor/n1/flow/config", config.as_bytes())
            else {
                panic!("{config}")
            };
            assert_eq!(entity.device.area.as_deref(), Some("Utility room"), "{config}");
        }
    }

    /// Home Assistant's device-based discovery: one config, shared options at the top and
    /// its components under `cmps`, each its own entity; a component named by its platform
    /// alone is to go, an unknown platform is refused with its reason, an empty config takes
    /// the device away.
    #[test]
    fn a_device_based_config_gives_each_component_as_an_entity() {
        let (topic, payload) = message("ha-device-discovery.constructed.config");
        let Ok(Discovery::Device { id, entities, refused, removed }) = parse("homeassistant", &topic, &payload) else {
            panic!("not a device config")
        };
        assert_eq!(id, "0AFFD2");
        assert!(refused.is_empty() && removed.is_empty(), "{refused:?} {removed:?}");
        let shown: Vec<(&str, Option<&str>, Option<&str>)> = entities
            .iter()
            .map(|e| (e.id.as_str(), e.values[0].unit.as_deref(), e.values[0].class.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                ("@0AFFD2 some_unique_component_id1", Some("°C"), Some("temperature")),
                ("@0AFFD2 some_unique_id2", Some("%"), Some("humidity"))
            ]
        );
        for entity in &entities {
            assert_eq!(entity.values[0].state.as_ref().map(|s| s.topic.as_str()), Some("sensorBedroom/state"));
            assert_eq!(
                (entity.device.name.as_deref(), entity.device.manufacturer.as_deref()),
                (Some("Kitchen"), Some("Bla electronics"))
            );
        }
        let config = r#"{"dev":{"ids":"n1","name":"Node"},"o":{"name":"diy"},"stat_t":"node/state","cmps":{
            "t":{"p":"sensor","val_tpl":"{{ value_json.t }}","unit_of_meas":"°C"},
            "relay":{"p":"switch","stat_t":"node/relay","cmd_t":"node/relay/set"},
            "old":{"p":"sensor"},
            "mop":{"p":"vacuum","stat_t":"node/vacuum"}}}"#;
        let Ok(Discovery::Device { entities, refused, removed, .. }) =
            parse("homeassistant", "homeassistant/device/n1/config", config.as_bytes())
        else {
            panic!("not a device config")
        };
        let relay = entities.iter().find(|e| e.id == "@n1 relay").unwrap_or_else(|| panic!("no relay"));
        assert_eq!(relay.values[0].state.as_ref().map(|s| s.topic.as_str()), Some("node/relay"), "its own topic wins");
        assert_eq!(removed, [(Component::Sensor, "@n1 old".to_owned())]);
        assert!(matches!(refused.as_slice(), [(key, DiscoveryError::Component(p))] if key == "mop" && p == "vacuum"));
        assert_eq!(
            parse("homeassistant", "homeassistant/device/n1/config", b""),
            Ok(Discovery::DeviceRemoved { id: "n1".into() })
        );
        let no_device = parse(
            "homeassistant",
            "homeassistant/device/n1/config",
            br#"{"cmps":{"t":{"p":"sensor","stat_t":"a/b"}}}"#,
        );
        assert_eq!(no_device, Err(DiscoveryError::Missing("device", "device")));
    }

    #[test]
    fn retain_asks_for_retained_commands_in_both_spellings() {
        let retain = |config: &str| values_of("switch", config)[0].command.as_ref().is_some_and(|c| c.retain);
        assert!(retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c","ret":true}"#));
        assert!(retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c","retain":"true"}"#));
        assert!(!retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c","ret":false}"#));
        assert!(!retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c"}"#));
    }

    #[test]
    fn an_availability_that_cannot_be_read_never_says_online() {
        let config = r#"{"stat_t":"z/d","avty":[{"t":"z/bridge/state","val_tpl":"{% if x %}online{% endif %}"}]}"#;
        let Ok(Discovery::Entity(sensor)) = parse("homeassistant", "homeassistant/sensor/d/config", config.as_bytes())
        else {
            panic!("refused")
        };
        assert!(sensor.availability.is_empty());
        assert!(sensor.left_out.iter().any(|l| l.contains("not shown online")));
        // Zigbee2MQTT's disabled devices: a constant.
        let disabled = r#"{"stat_t":"z/d","avty":[{"t":"z/d/availability","val_tpl":"{{ \"offline\" }}"}]}"#;
        let Ok(Discovery::Entity(sensor)) =
            parse("homeassistant", "homeassistant/sensor/d/config", disabled.as_bytes())
        else {
            panic!("refused")
        };
        assert_eq!(sensor.availability[0].read(&Message::new("", b"online")), Some(false));
    }

    #[test]
    fn an_empty_config_removes_the_entity() {
        let (topic, payload) = message("z2m-ha-sensor-temperature-removed.config");
        assert!(payload.is_empty());
        assert!(matches!(
            parse("homeassistant", &topic, &payload),
            Ok(Discovery::Removed { component: Component::Sensor, .. })
        ));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let refused = |topic: &str, payload: &str| match parse("homeassistant", topic, payload.as_bytes()) {
            Err(error) => error.to_string(),
            Ok(other) => panic!("{topic} {payload}: accepted as {other:?}"),
        };
        assert!(refused("homeassistant/vacuum/x/config", "{}").contains("not one Hearth understands"));
        assert!(refused("homeassistant/sensor/x/config", "{not json").contains("not a JSON object"));
        assert!(refused("homeassistant/sensor/x/config", "[1]").contains("not a JSON object"));
        assert!(refused("homeassistant/sensor/x.y/config", "{}").contains("not a discovery topic"));
        assert!(refused("homeassistant/sensor/a/b/c/config", "{}").contains("not a discovery topic"));
        assert!(refused("homeassistant/sensor/x/config", "{}").contains("state_topic"));
        assert!(refused("homeassistant/switch/x/config", r#"{"stat_t":"a/b"}"#).contains("command_topic"));
        assert!(refused("homeassistant/sensor/x/config", r#"{"stat_t":"a/#"}"#).contains("not a topic"));
        let template = refused("homeassistant/sensor/x/config", r#"{"stat_t":"a/b","val_tpl":"{{ states('x') }}"}"#);
        assert!(template.contains("unsupported template"), "{template}");
        assert!(refused("homeassistant/select/x/config", r#"{"cmd_t":"a/b"}"#).contains("options"));
        let big = format!(r#"{{"stat_t":"a/b","name":"{}"}}"#, "x".repeat(MAX_CONFIG));
        assert!(refused("homeassistant/sensor/x/config", &big).contains("more than"));
    }
}
