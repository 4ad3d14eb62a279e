//! Home Assistant MQTT discovery configs (`<prefix>/<component>/[<node_id>/]<object_id>/config`),
//! as Zigbee2MQTT, ESPHome and many DIY devices publish them: abbreviations expanded (HA's
//! own tables, `abbreviations.tsv`), the `~` base topic put in, and the components homes use
//! most read into one shape. Parsing only: which topics a device may use is decided where
//! the config is applied.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value as Json};

use super::template::{Template, TemplateError};

/// Largest config accepted.
pub const MAX_CONFIG: usize = 16 * 1024;
/// Largest device-based config (several components at once), and most components in one.
pub const MAX_DEVICE_CONFIG: usize = 64 * 1024;
const MAX_COMPONENTS: usize = 64;
/// Longest topic, name or id taken from a config.
const MAX_FIELD: usize = 256;

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
}

/// What one config message says.
#[derive(Debug, Clone, PartialEq)]
pub enum Announcement {
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

/// A state read from a topic, through a template when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub topic: String,
    pub template: Option<Template>,
}

/// Where a device says whether it is online, and the payloads that mean it.
#[derive(Debug, Clone, PartialEq)]
pub struct Availability {
    pub topic: String,
    pub template: Option<Template>,
    pub online: String,
    pub offline: String,
    /// Why this entry cannot be read (a template outside the subset): it never says
    /// online, so a device is never shown online on a guess.
    pub unreadable: Option<String>,
}

/// Most availability entries in one config.
const MAX_AVAILABILITY: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvailabilityMode {
    /// The last message on any availability topic decides.
    Latest,
    /// Online only when every topic says so.
    All,
    /// Online when one topic says so.
    Any,
}

/// The device an entity belongs to (`device` block).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceInfo {
    pub identifiers: Vec<String>,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
}

/// One discovered entity, in the shape Hearth uses whatever its component.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub component: Component,
    /// `[<node_id> ]<object_id>`: with the component, what names this entity across updates.
    pub id: String,
    pub unique_id: Option<String>,
    /// Its own name; `None` when it is the device's only, or main, entity.
    pub name: Option<String>,
    pub device: DeviceInfo,
    pub unit: Option<String>,
    pub device_class: Option<String>,
    pub state_class: Option<String>,
    /// `config` or `diagnostic`: a setting or a diagnostic, not what the device is for.
    pub entity_category: Option<String>,
    /// The main state (a sensor's value, a switch's or light's on/off, a cover's position
    /// state, a climate's current temperature).
    pub state: Option<State>,
    pub command_topic: Option<String>,
    /// Commands are to be sent retained (`retain`).
    pub retain: bool,
    /// on/off payloads (binary sensor, switch, light), as text: JSON `true` is "true".
    pub payload_on: String,
    pub payload_off: String,
    /// Light: brightness topics (basic schema) or in the JSON state (JSON schema).
    pub light: Option<Light>,
    pub climate: Option<Climate>,
    pub cover: Option<Cover>,
    /// button: what a press sends.
    pub payload_press: Option<String>,
    /// number: range and step.
    pub range: Option<(f64, f64, f64)>,
    /// select: the options; lock: what it takes (`LOCK`, `UNLOCK`, `OPEN` if it opens);
    /// event: its event types.
    pub options: Vec<String>,
    /// fan: its speed and preset mode.
    pub fan: Option<Fan>,
    /// valve: its state is a position (0-100) and its commands too.
    pub reports_position: bool,
    pub availability: Vec<Availability>,
    pub availability_mode: AvailabilityMode,
    /// Parts left out, and why (an unsupported template for an optional value): shown on
    /// the device so the owner knows what does not work.
    pub left_out: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Light {
    /// `schema: json`: state and commands are JSON objects (`{"state":"ON","brightness":..}`).
    pub json: bool,
    pub brightness: bool,
    pub brightness_scale: f64,
    pub brightness_state: Option<State>,
    pub brightness_command_topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Climate {
    pub target: Option<State>,
    pub target_command_topic: Option<String>,
    pub mode: Option<State>,
    pub mode_command_topic: Option<String>,
    pub modes: Vec<String>,
    pub min_temp: Option<f64>,
    pub max_temp: Option<f64>,
    pub step: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fan {
    pub percentage: Option<State>,
    pub percentage_command_topic: Option<String>,
    pub preset: Option<State>,
    pub preset_command_topic: Option<String>,
    pub presets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cover {
    pub payload_open: String,
    pub payload_close: String,
    pub payload_stop: String,
    pub position: Option<State>,
    pub set_position_topic: Option<String>,
}

/// Why a config was refused: shown on the bridge that sent it.
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
pub fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Result<Announcement, DiscoveryError> {
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
        return Ok(Announcement::Removed { component, id });
    }
    if payload.len() > MAX_CONFIG {
        return Err(DiscoveryError::TooLarge(payload.len()));
    }
    let Json::Object(config) = serde_json::from_slice(payload).map_err(|e| DiscoveryError::Json(e.to_string()))? else {
        return Err(DiscoveryError::Json("not an object".into()));
    };
    let config = expand(config);
    Ok(Announcement::Entity(Box::new(entity(component, id, &config)?)))
}

/// Reads a device-based config: shared options at the top, components under `cmps`, each
/// with its platform (`p`) and its own options, which win over the shared ones.
fn device_config(id: String, payload: &[u8]) -> Result<Announcement, DiscoveryError> {
    if payload.is_empty() {
        return Ok(Announcement::DeviceRemoved { id });
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
    Ok(Announcement::Device { id, entities, refused, removed })
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

/// Reads an expanded config.
fn entity(component: Component, id: String, config: &Map<String, Json>) -> Result<Entity, DiscoveryError> {
    let mut left_out = Vec::new();
    let text = |key: &'static str| -> Result<Option<String>, DiscoveryError> {
        match config.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.len() <= MAX_FIELD && !s.chars().any(char::is_control) => Ok(Some(s.clone())),
            Some(Json::Number(n)) => Ok(Some(n.to_string())),
            Some(Json::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(DiscoveryError::Invalid(key, shorten(&other.to_string()))),
        }
    };
    let topic = |key: &'static str| -> Result<Option<String>, DiscoveryError> {
        match text(key)? {
            Some(t) if valid_topic(&t) => Ok(Some(t)),
            Some(t) => Err(DiscoveryError::Invalid(key, format!("{t:?} is not a topic a device can publish to"))),
            None => Ok(None),
        }
    };
    let number = |key: &'static str| -> Option<f64> {
        match config.get(key)? {
            Json::Number(n) => n.as_f64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|n: &f64| n.is_finite())
    };
    let list = |key: &'static str| -> Vec<String> {
        config
            .get(key)
            .and_then(Json::as_array)
            .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_owned)).take(64).collect())
            .unwrap_or_default()
    };
    // A state with its template; a template outside the subset refuses the whole entity
    // when the state is what the entity is about (`required`), else leaves that part out.
    let mut state = |topic_key: &'static str,
                     template_key: &'static str,
                     required: bool|
     -> Result<Option<State>, DiscoveryError> {
        let Some(topic) = topic(topic_key)? else { return Ok(None) };
        let template = match text(template_key)? {
            None => None,
            Some(source) => match Template::parse(&source) {
                Ok(template) => Some(template),
                Err(error) if required => return Err(DiscoveryError::Template(template_key, error)),
                Err(error) => {
                    left_out.push(format!("{template_key}: {error}"));
                    return Ok(None);
                }
            },
        };
        Ok(Some(State { topic, template }))
    };
    let required = matches!(component, Component::Sensor | Component::BinarySensor | Component::Event);
    let main_state = match component {
        Component::Climate => state("current_temperature_topic", "current_temperature_template", false)?,
        Component::Cover => state("state_topic", "value_template", false)?,
        Component::Light => state("state_topic", "state_value_template", false)?,
        _ => state("state_topic", "value_template", required)?,
    };
    let command_topic = topic("command_topic")?;
    match component {
        Component::Sensor | Component::BinarySensor | Component::Event if main_state.is_none() => {
            return Err(DiscoveryError::Missing("state_topic", component.name()));
        }
        Component::Switch
        | Component::Light
        | Component::Button
        | Component::Number
        | Component::Select
        | Component::Fan
        | Component::Text
            if command_topic.is_none() =>
        {
            return Err(DiscoveryError::Missing("command_topic", component.name()));
        }
        _ => {}
    }
    let light = match component {
        Component::Light => {
            let json = text("schema")?.is_some_and(|s| s.eq_ignore_ascii_case("json"));
            let modes = list("supported_color_modes");
            let brightness_state =
                if json { None } else { state("brightness_state_topic", "brightness_value_template", false)? };
            let brightness_command_topic = if json { None } else { topic("brightness_command_topic")? };
            let brightness = if json {
                config.get("brightness").and_then(Json::as_bool).unwrap_or(false) || modes.iter().any(|m| m != "onoff")
            } else {
                brightness_command_topic.is_some()
            };
            Some(Light {
                json,
                brightness,
                brightness_scale: number("brightness_scale").filter(|s| *s >= 1.0).unwrap_or(255.0),
                brightness_state,
                brightness_command_topic,
            })
        }
        _ => None,
    };
    let climate = match component {
        Component::Climate => Some(Climate {
            target: state("temperature_state_topic", "temperature_state_template", false)?,
            target_command_topic: topic("temperature_command_topic")?,
            mode: state("mode_state_topic", "mode_state_template", false)?,
            mode_command_topic: topic("mode_command_topic")?,
            modes: match list("modes") {
                modes if modes.is_empty() => {
                    ["auto", "off", "cool", "heat", "dry", "fan_only"].map(String::from).to_vec()
                }
                modes => modes,
            },
            min_temp: number("min_temp"),
            max_temp: number("max_temp"),
            step: number("temp_step"),
        }),
        _ => None,
    };
    let cover = match component {
        Component::Cover | Component::Valve => Some(Cover {
            payload_open: text("payload_open")?.unwrap_or_else(|| "OPEN".into()),
            payload_close: text("payload_close")?.unwrap_or_else(|| "CLOSE".into()),
            // A valve stops only if its config says how.
            payload_stop: text("payload_stop")?
                .unwrap_or_else(|| if component == Component::Valve { String::new() } else { "STOP".into() }),
            position: state("position_topic", "position_template", false)?,
            set_position_topic: topic("set_position_topic")?,
        }),
        _ => None,
    };
    let fan = match component {
        Component::Fan => Some(Fan {
            percentage: state("percentage_state_topic", "percentage_value_template", false)?,
            percentage_command_topic: topic("percentage_command_topic")?,
            preset: state("preset_mode_state_topic", "preset_mode_value_template", false)?,
            preset_command_topic: topic("preset_mode_command_topic")?,
            presets: list("preset_modes"),
        }),
        _ => None,
    };
    let options = match component {
        Component::Lock => {
            let mut takes = vec![
                text("payload_lock")?.unwrap_or_else(|| "LOCK".into()),
                text("payload_unlock")?.unwrap_or_else(|| "UNLOCK".into()),
            ];
            takes.extend(text("payload_open")?);
            takes
        }
        Component::Event => list("event_types"),
        _ => list("options"),
    };
    if component == Component::Select && options.is_empty() {
        return Err(DiscoveryError::Missing("options", "select"));
    }
    let (mode, availability) = availability(config, &mut left_out)?;
    Ok(Entity {
        component,
        id,
        unique_id: text("unique_id")?,
        name: text("name")?,
        device: device(config),
        unit: text("unit_of_measurement")?,
        device_class: text("device_class")?,
        state_class: text("state_class")?,
        entity_category: text("entity_category")?.filter(|c| matches!(c.as_str(), "config" | "diagnostic")),
        state: main_state,
        command_topic,
        retain: matches!(config.get("retain"), Some(Json::Bool(true)))
            || text("retain")?.is_some_and(|r| r.eq_ignore_ascii_case("true")),
        payload_on: text("payload_on")?.unwrap_or_else(|| "ON".into()),
        payload_off: text("payload_off")?.unwrap_or_else(|| "OFF".into()),
        light,
        climate,
        cover,
        payload_press: (component == Component::Button)
            .then(|| text("payload_press"))
            .transpose()?
            .map(|p| p.unwrap_or_else(|| "PRESS".into())),
        range: (component == Component::Number).then(|| {
            (
                number("min").unwrap_or(0.0),
                number("max").unwrap_or(100.0),
                number("step").filter(|s| *s >= 0.001).unwrap_or(1.0),
            )
        }),
        options,
        fan,
        reports_position: component == Component::Valve
            && (matches!(config.get("reports_position"), Some(Json::Bool(true)))
                || text("reports_position")?.is_some_and(|r| r.eq_ignore_ascii_case("true"))),
        availability,
        availability_mode: mode,
        left_out,
    })
}

fn availability(
    config: &Map<String, Json>,
    left_out: &mut Vec<String>,
) -> Result<(AvailabilityMode, Vec<Availability>), DiscoveryError> {
    let mode = match config.get("availability_mode").and_then(Json::as_str) {
        Some("all") => AvailabilityMode::All,
        Some("any") => AvailabilityMode::Any,
        _ => AvailabilityMode::Latest,
    };
    let payload = |entry: &Map<String, Json>, key: &str, default: &str| match entry.get(key) {
        Some(Json::String(s)) => s.clone(),
        Some(other @ (Json::Bool(_) | Json::Number(_))) => other.to_string(),
        _ => default.to_owned(),
    };
    let mut entries: Vec<Map<String, Json>> = match config.get("availability") {
        Some(Json::Array(entries)) if entries.len() > MAX_AVAILABILITY => {
            return Err(DiscoveryError::Invalid("availability", format!("more than {MAX_AVAILABILITY} entries")));
        }
        Some(Json::Array(entries)) => entries.iter().filter_map(|e| e.as_object().cloned()).collect(),
        _ => Vec::new(),
    };
    if let Some(topic) = config.get("availability_topic") {
        let mut single = Map::new();
        single.insert("topic".into(), topic.clone());
        for (from, to) in [
            ("payload_available", "payload_available"),
            ("payload_not_available", "payload_not_available"),
            ("availability_template", "value_template"),
        ] {
            if let Some(value) = config.get(from) {
                single.insert(to.into(), value.clone());
            }
        }
        entries.push(single);
    }
    let mut out = Vec::new();
    for entry in entries {
        let Some(topic) = entry.get("topic").and_then(Json::as_str).filter(|t| valid_topic(t)) else {
            return Err(DiscoveryError::Invalid("availability", "an entry without a valid topic".into()));
        };
        let (template, unreadable) = match entry.get("value_template").and_then(Json::as_str).map(Template::parse) {
            None => (None, None),
            Some(Ok(template)) => (Some(template), None),
            Some(Err(error)) => {
                left_out.push(format!("availability {topic}: {error}; the device is not shown online from it"));
                (None, Some(error.to_string()))
            }
        };
        out.push(Availability {
            topic: topic.to_owned(),
            template,
            unreadable,
            online: payload(&entry, "payload_available", "online"),
            offline: payload(&entry, "payload_not_available", "offline"),
        });
    }
    Ok((mode, out))
}

fn device(config: &Map<String, Json>) -> DeviceInfo {
    let Some(device) = config.get("device").and_then(Json::as_object) else { return DeviceInfo::default() };
    let text = |key: &str| device.get(key).and_then(Json::as_str).filter(|s| s.len() <= MAX_FIELD).map(str::to_owned);
    let identifiers = match device.get("identifiers") {
        Some(Json::String(id)) => vec![id.clone()],
        Some(Json::Array(ids)) => ids.iter().filter_map(|i| i.as_str().map(str::to_owned)).take(8).collect(),
        _ => Vec::new(),
    };
    DeviceInfo { identifiers, name: text("name"), manufacturer: text("manufacturer"), model: text("model") }
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
mod tests {
    use super::*;
    use crate::reading::Value;

    use crate::discovery::corpus as message;

    fn announced(name: &str) -> Entity {
        let (topic, payload) = message(name);
        match parse("homeassistant", &topic, &payload) {
            Ok(Announcement::Entity(entity)) => *entity,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn zigbee2mqtt_sensors_of_both_template_forms_read_their_values() {
        for name in ["z2m-ha-sensor-temperature.config", "z2m-2.10-ha-sensor-temperature.config"] {
            let sensor = announced(name);
            assert_eq!(sensor.component, Component::Sensor);
            assert_eq!(sensor.unit.as_deref(), Some("°C"));
            assert_eq!(sensor.device_class.as_deref(), Some("temperature"));
            assert_eq!(sensor.device.manufacturer.as_deref(), Some("Aqara"));
            let state = sensor.state.unwrap_or_else(|| panic!("{name}: no state"));
            assert_eq!(state.topic, "zigbee2mqtt/weather_sensor");
            let value = state.template.map(|t| t.render(r#"{"temperature":21.5,"humidity":40}"#));
            assert_eq!(value, Some(Ok(Value::Number(21.5))), "{name}");
            assert_eq!(sensor.availability[0].topic, "zigbee2mqtt/bridge/state");
            let online = sensor.availability[0].template.as_ref().map(|t| t.render(r#"{"state":"online"}"#));
            assert_eq!(online, Some(Ok(Value::Text("online".into()))));
        }
    }

    #[test]
    fn esphome_abbreviations_are_expanded() {
        let sensor = announced("esphome-ha-sensor-temperature.config");
        assert_eq!(sensor.id, "garagedoor1 garage_temperature");
        assert_eq!(sensor.name.as_deref(), Some("Garage Temperature"));
        assert_eq!(sensor.state.map(|s| s.topic).as_deref(), Some("garagedoor1/sensor/garage_temperature/state"));
        assert_eq!(sensor.state_class.as_deref(), Some("measurement"));
        assert_eq!(sensor.device.identifiers, ["20500de464ec"]);
        assert_eq!(sensor.device.model.as_deref(), Some("esp32"));
        assert_eq!(sensor.availability[0].topic, "garagedoor1/status");
        assert_eq!(
            (sensor.availability[0].online.as_str(), sensor.availability[0].offline.as_str()),
            ("online", "offline")
        );
    }

    #[test]
    fn the_base_topic_is_put_in() {
        let switch = announced("ha-tilde-switch.constructed.config");
        assert_eq!(switch.command_topic.as_deref(), Some("homeassistant/switch/irrigation/set"));
        assert_eq!(switch.state.map(|s| s.topic).as_deref(), Some("homeassistant/switch/irrigation/state"));
        assert_eq!(switch.availability[0].topic, "homeassistant/switch/irrigation/availability");
    }

    #[test]
    fn switches_lights_climate_and_covers_keep_their_controls() {
        let switch = announced("z2m-ha-switch-left.config");
        assert_eq!(switch.command_topic.as_deref(), Some("zigbee2mqtt/wall_switch_double/left/set"));
        let state =
            switch.state.and_then(|s| s.template).map(|t| t.render(r#"{"state_left":"ON","state_right":"OFF"}"#));
        assert_eq!(state, Some(Ok(Value::Text("ON".into()))));
        let light = announced("z2m-ha-light-ikea-bulb.config");
        let shape = light.light.unwrap_or_else(|| panic!("no light part"));
        assert!(shape.json && shape.brightness);
        assert_eq!(shape.brightness_scale, 254.0);
        let trv = announced("z2m-ha-climate-trv.config");
        let climate = trv.climate.unwrap_or_else(|| panic!("no climate part"));
        assert_eq!(climate.modes, ["heat", "auto", "off"]);
        assert_eq!((climate.min_temp, climate.max_temp), (Some(5.0), Some(35.0)));
        assert!(climate.target_command_topic.is_some_and(|t| t.ends_with("current_heating_setpoint")));
        // Its action template ({% set %}) is outside the subset; the rest is kept.
        assert_eq!(trv.state.map(|s| s.topic).as_deref(), Some("zigbee2mqtt/TS0601_thermostat"));
        let cover = announced("z2m-ha-cover.config");
        assert!(cover.cover.is_some_and(|c| c.set_position_topic.is_some()));
        // JSON true/false as payloads read as text.
        let restart = announced("z2m-ha-binary_sensor-bridge-restart_required.config");
        assert_eq!((restart.payload_on.as_str(), restart.payload_off.as_str()), ("true", "false"));
    }

    /// Home Assistant's device-based discovery: one config, shared options at the top and
    /// its components under `cmps`, each its own entity; a component named by its platform
    /// alone is to go, an unknown platform is refused with its reason, an empty config takes
    /// the device away.
    #[test]
    fn a_device_based_config_gives_each_component_as_an_entity() {
        let (topic, payload) = message("ha-device-discovery.constructed.config");
        let Ok(Announcement::Device { id, entities, refused, removed }) = parse("homeassistant", &topic, &payload)
        else {
            panic!("not a device config")
        };
        assert_eq!(id, "0AFFD2");
        assert!(refused.is_empty() && removed.is_empty(), "{refused:?} {removed:?}");
        let shown: Vec<(&str, Option<&str>, Option<&str>)> =
            entities.iter().map(|e| (e.id.as_str(), e.unit.as_deref(), e.device_class.as_deref())).collect();
        assert_eq!(
            shown,
            [
                ("@0AFFD2 some_unique_component_id1", Some("°C"), Some("temperature")),
                ("@0AFFD2 some_unique_id2", Some("%"), Some("humidity"))
            ]
        );
        for entity in &entities {
            assert_eq!(entity.state.as_ref().map(|s| s.topic.as_str()), Some("sensorBedroom/state"));
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
        let Ok(Announcement::Device { entities, refused, removed, .. }) =
            parse("homeassistant", "homeassistant/device/n1/config", config.as_bytes())
        else {
            panic!("not a device config")
        };
        let relay = entities.iter().find(|e| e.id == "@n1 relay").unwrap_or_else(|| panic!("no relay"));
        assert_eq!(relay.state.as_ref().map(|s| s.topic.as_str()), Some("node/relay"), "its own topic wins");
        assert_eq!(removed, [(Component::Sensor, "@n1 old".to_owned())]);
        assert!(matches!(refused.as_slice(), [(key, DiscoveryError::Component(p))] if key == "mop" && p == "vacuum"));
        assert_eq!(
            parse("homeassistant", "homeassistant/device/n1/config", b""),
            Ok(Announcement::DeviceRemoved { id: "n1".into() })
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
        let retain = |config: &str| match parse(
            "homeassistant",
            "homeassistant/switch/porch/heater/config",
            config.as_bytes(),
        ) {
            Ok(Announcement::Entity(entity)) => entity.retain,
            other => panic!("{config}: {other:?}"),
        };
        assert!(retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c","ret":true}"#));
        assert!(retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c","retain":"true"}"#));
        assert!(!retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c","ret":false}"#));
        assert!(!retain(r#"{"stat_t":"porch/s","cmd_t":"porch/c"}"#));
    }

    #[test]
    fn an_availability_that_cannot_be_read_never_says_online() {
        let config = r#"{"stat_t":"z/d","avty":[{"t":"z/bridge/state","val_tpl":"{% if x %}online{% endif %}"}]}"#;
        let Ok(Announcement::Entity(sensor)) =
            parse("homeassistant", "homeassistant/sensor/d/config", config.as_bytes())
        else {
            panic!("refused")
        };
        assert_eq!(sensor.availability.len(), 1);
        assert!(sensor.availability[0].unreadable.is_some());
        assert!(sensor.left_out.iter().any(|l| l.contains("not shown online")));
        // Zigbee2MQTT's disabled devices: a constant.
        let disabled = r#"{"stat_t":"z/d","avty":[{"t":"z/d/availability","val_tpl":"{{ \"offline\" }}"}]}"#;
        let Ok(Announcement::Entity(sensor)) =
            parse("homeassistant", "homeassistant/sensor/d/config", disabled.as_bytes())
        else {
            panic!("refused")
        };
        let said = sensor.availability[0].template.as_ref().map(|t| t.render("online"));
        assert_eq!(said, Some(Ok(crate::reading::Value::Text("offline".into()))));
    }

    #[test]
    fn an_empty_config_removes_the_entity() {
        let (topic, payload) = message("z2m-ha-sensor-temperature-removed.config");
        assert!(payload.is_empty());
        assert!(matches!(
            parse("homeassistant", &topic, &payload),
            Ok(Announcement::Removed { component: Component::Sensor, .. })
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
