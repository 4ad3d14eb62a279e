//! Zigbee2MQTT: a coordinator that speaks for a whole Zigbee network. Its device list
//! (`<base>/bridge/devices`, retained) describes every device from its model's "exposes"
//! (what it reports and takes, with labels, units, ranges, on/off values and categories),
//! classed as Zigbee2MQTT's own Home Assistant discovery classes them; each device then
//! publishes its whole state as JSON on `<base>/<friendly name>`, says whether it is online
//! on `.../availability`, and takes commands as JSON on `.../set`.

use serde_json::Value as Json;

use super::description::{CommandSpec, Description, Form, MAX_OPTIONS, MAX_VALUES, ValueSpec, about_text, word};
use super::{About, Announcement, Convention, Ecosystem, Heard, Identity, Message, Part, Sample};
use crate::reading::{valid_metric, valid_unit};

/// Largest whole state of one device.
const MAX_STATE: usize = super::MAX_JSON;

/// Zigbee2MQTT, as a convention.
pub struct Zigbee2mqtt;

impl Ecosystem for Zigbee2mqtt {
    fn read(&self, message: &Message<'_>) -> Heard {
        if let Some(base) = message.topic.strip_suffix("/bridge/devices") {
            return match list(message.payload) {
                Ok((list, keys)) => Heard::Listed {
                    scope: format!("{base}/"),
                    devices: list.into_iter().map(|device| device.announce(base)).collect(),
                    keys,
                },
                Err(error) => Heard::Refused(error.to_string()),
            };
        }
        // The rest of its own topics (its state, info, logs, requests and responses) carry
        // no readings.
        match message.topic.split('/').nth(1) {
            Some("bridge") => Heard::Nothing,
            _ => Heard::NotMine,
        }
    }

    fn read_own(&self, device: &Description, rest: &str, message: &Message<'_>) -> Heard {
        match rest {
            "" => state(device, message),
            "availability" => match bridge_online(message.payload) {
                Some(online) => Heard::Online { device: None, online },
                None => Heard::Nothing,
            },
            // Commands to its devices and their answers pass through its namespace too.
            "set" | "get" => Heard::Nothing,
            _ => Heard::NotMine,
        }
    }

    fn device_topic<'a>(&self, device: &'a Description) -> Option<&'a str> {
        Some(&device.topic)
    }

    fn describes_wholly(&self) -> bool {
        true
    }
}

/// A device's whole state at once, which can hold a few hundred values (Danfoss's Icon2:
/// 276): each key a value, on/off words as true/false; what cannot be kept is named.
fn state(device: &Description, message: &Message<'_>) -> Heard {
    if message.payload.len() > MAX_STATE {
        return Heard::Refused(format!("state is {} bytes, more than the {MAX_STATE} allowed", message.payload.len()));
    }
    let Some(object) = message.object() else {
        return Heard::Refused("state is not a JSON object".into());
    };
    match crate::ingest::decode::relayed_readings("", object, 0, MAX_VALUES) {
        Ok((readings, left_out)) => Heard::Values {
            samples: readings
                .into_iter()
                .map(|r| {
                    let spec = device.value(&r.metric);
                    Sample {
                        value: spec.map_or(r.value.clone(), |s| s.reading_value(r.value)),
                        unit: spec.and_then(|s| s.unit.clone()),
                        metric: r.metric,
                    }
                })
                .collect(),
            left_out,
        },
        Err(error) => Heard::Refused(error.to_string()),
    }
}

/// Most devices read from one list.
const MAX_DEVICES: usize = 1024;
/// Largest device list accepted (a few hundred devices with their exposes).
pub const MAX_LIST: usize = 4 * 1024 * 1024;

/// One Zigbee device behind the bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub ieee_address: String,
    /// The name it publishes under: `<base>/<friendly_name>`.
    pub friendly_name: String,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub description: Option<String>,
    /// False for a device Zigbee2MQTT has no definition for: it may still report values.
    pub supported: bool,
    pub values: Vec<Exposed>,
}

/// One value a device reports or takes: a property of its JSON state.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposed {
    /// The key in `<base>/<friendly_name>` messages, and in `<base>/<friendly_name>/set`.
    pub property: String,
    /// What it is, without its endpoint (`temperature` for `temperature_l1`): what its
    /// class is looked up by.
    pub name: Option<String>,
    /// What it is called ("Temperature", "CO2"), with its endpoint if it has one.
    pub label: Option<String>,
    pub unit: Option<String>,
    pub kind: Kind,
    /// Published in its state messages.
    pub reported: bool,
    /// Can be set through `<base>/<friendly_name>/set`.
    pub settable: bool,
    /// The composite it belongs to (`light`, `switch`, `climate`, `cover`, `lock`, `fan`).
    pub part_of: Option<String>,
    /// `config` (a setting) or `diagnostic`, its own or its composite's.
    pub category: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Numeric {
        min: Option<f64>,
        max: Option<f64>,
        step: Option<f64>,
    },
    /// on/off values as Zigbee2MQTT sends them (`"ON"`/`"OFF"`, or `true`/`false`), as text.
    Binary {
        on: String,
        off: String,
    },
    Enum {
        values: Vec<String>,
    },
    Text,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Z2mError {
    #[error("device list is {0} bytes, more than the {MAX_LIST} allowed")]
    TooLarge(usize),
    #[error("device list is not a JSON list: {0}")]
    Json(String),
}

impl Device {
    /// As an announcement: the device behind the bridge, its values as Hearth keeps them.
    fn announce(self, base: &str) -> Announcement {
        let topic = format!("{base}/{}", self.friendly_name);
        let set = format!("{topic}/set");
        let values = self
            .values
            .iter()
            .filter(|v| valid_metric(&v.property))
            .map(|v| {
                let (class, state_class, category) = classes(v);
                let mut value = ValueSpec::new(v.property.clone());
                value.name.clone_from(&v.label);
                value.unit = v.unit.clone().filter(|u| valid_unit(u));
                value.on_off = match &v.kind {
                    Kind::Binary { on, off } => Some((word(on), word(off))),
                    _ => None,
                };
                // A nested value (`color_options.execute_if_off`) is set as its parent.
                value.command = (v.settable && !v.property.contains('.'))
                    .then(|| CommandSpec::new(set.clone(), Form::Json { key: v.property.clone() }));
                value.options = match &v.kind {
                    Kind::Enum { values } => values.iter().take(MAX_OPTIONS).cloned().collect(),
                    _ => Vec::new(),
                };
                value.class = class.map(str::to_owned);
                value.state_class = state_class.map(str::to_owned);
                value.category = v.category.clone().or(category.map(str::to_owned));
                value
            })
            .collect();
        let mut announcement =
            Announcement::of(Identity::new(Convention::Zigbee2mqtt, self.ieee_address.clone()), Part::Whole);
        announcement.behind = true;
        announcement.topic = topic;
        announcement.values = values;
        announcement.about = About {
            name: about_text(&self.friendly_name).or_else(|| Some(self.ieee_address.clone())),
            manufacturer: self.vendor,
            model: self.model,
            description: self.description,
            area: None,
            firmware: None,
        };
        announcement
    }
}

/// A value's device class, state class and category, as Zigbee2MQTT's own Home Assistant
/// discovery gives them (its `homeassistant.ts`: a table by expose name, then by unit; a
/// sensor without a unit has no class; a settable number keeps only `temperature`).
fn classes(value: &Exposed) -> (Option<&'static str>, Option<&'static str>, Option<&'static str>) {
    let name = value.name.as_deref().unwrap_or(&value.property);
    match &value.kind {
        Kind::Binary { .. } => {
            let (class, category) = binary_class(name);
            (class, None, category)
        }
        Kind::Numeric { .. } => {
            let (mut class, mut state_class, category) = numeric_class(name);
            let unit = value.unit.as_deref();
            match unit {
                Some("Wh" | "kWh") => (class, state_class) = (Some("energy"), Some("total_increasing")),
                Some("A" | "mA") => (class, state_class) = (Some("current"), Some("measurement")),
                Some("mW" | "W" | "kW") => (class, state_class) = (Some("power"), Some("measurement")),
                _ => {}
            }
            if unit.is_none() || (value.settable && class != Some("temperature")) {
                class = None;
            }
            // Sensors have no settings: what Zigbee2MQTT calls config is a diagnostic there.
            let category = match category {
                Some("config") if !value.settable => Some("diagnostic"),
                other => other,
            };
            (class, state_class, category)
        }
        Kind::Enum { .. } | Kind::Text => (None, None, None),
    }
}

/// Zigbee2MQTT's classes of binary values: (device class, category).
fn binary_class(name: &str) -> (Option<&'static str>, Option<&'static str>) {
    let class = match name {
        "occupancy" | "presence" | "area1Occupancy" | "area2Occupancy" | "area3Occupancy" | "area4Occupancy" => {
            "occupancy"
        }
        "battery_low" => return (Some("battery"), Some("diagnostic")),
        "carbon_monoxide" => "carbon_monoxide",
        "consumer_connected" => "plug",
        // Its words say open as "on" (value_on false: true is closed), as Home Assistant's
        // door class reads it.
        "contact" => "door",
        "garage_door_contact" => "garage_door",
        "gas" => "gas",
        "moving" => "moving",
        "noise_detected" => "sound",
        "rain_status" | "water_leak" => "moisture",
        "setup" => "running",
        "smoke" => "smoke",
        "sos" => "safety",
        "tamper" => "tamper",
        "valve_alarm" => "problem",
        "valve_state" => "opening",
        "vibration" => "vibration",
        "window" | "window_open" => "window",
        _ => return (None, None),
    };
    (Some(class), None)
}

/// Zigbee2MQTT's classes of numbers: (device class, state class, category).
fn numeric_class(name: &str) -> (Option<&'static str>, Option<&'static str>, Option<&'static str>) {
    const M: Option<&str> = Some("measurement");
    let (class, state_class, category) = match name {
        "ac_frequency" => ("frequency", M, None),
        "action_duration" | "boost_heating_countdown" => ("duration", None, None),
        "apparent_temperature"
        | "dew_point"
        | "external_temperature"
        | "humidex"
        | "local_temperature"
        | "temperature"
        | "temperature_probe"
        | "wind_chill" => ("temperature", M, None),
        "cpu_temperature" | "device_temperature" | "internalTemperature" => ("temperature", M, Some("diagnostic")),
        "external_temperature_input" => ("temperature", None, None),
        "aqi" => ("aqi", M, None),
        "battery" => ("battery", M, None),
        "battery2" => ("battery", M, Some("diagnostic")),
        "battery_voltage" => ("voltage", M, Some("diagnostic")),
        "co2" => ("carbon_dioxide", M, None),
        "current" | "current_phase_b" | "current_phase_c" => ("current", M, None),
        "distance" => ("distance", M, None),
        "eco2" | "voc_parts" => ("volatile_organic_compounds_parts", M, None),
        "energy" => ("energy", Some("total_increasing"), None),
        "external_humidity" | "humidity" => ("humidity", M, None),
        "flow" => ("volume_flow_rate", M, None),
        "gas" => ("gas", Some("total_increasing"), None),
        "gust_speed" | "wind_speed" => ("wind_speed", M, None),
        "illuminance" => ("illuminance", M, None),
        "noise" => ("sound_pressure", M, None),
        "pm10" => ("pm10", M, None),
        "pm25" => ("pm25", M, None),
        "power" | "power_phase_b" | "power_phase_c" => ("power", M, None),
        "power_factor" => ("power_factor", M, Some("diagnostic")),
        "precipitation" => ("precipitation", Some("total_increasing"), None),
        "pressure" => ("atmospheric_pressure", M, None),
        "rain_rate" => ("precipitation_intensity", M, None),
        "soil_fertility" => ("conductivity", M, None),
        "soil_moisture" => ("moisture", M, None),
        "voc" => ("volatile_organic_compounds", M, None),
        "voltage" | "voltage_phase_b" | "voltage_phase_c" => ("voltage", M, None),
        "water_consumed" => ("water", Some("total_increasing"), None),
        "linkquality" => return (None, M, Some("diagnostic")),
        "formaldehyd" | "gas_density" | "hcho" | "heat_stress" | "illuminance_raw" | "load_estimate"
        | "occupancy_level" | "people" | "position" | "pressure_trend" | "smoke_density" | "uv_index" | "voc_index"
        | "wind_direction" | "x" | "x_axis" | "y" | "y_axis" | "z" | "z_axis" => return (None, M, None),
        _ => return (None, None, None),
    };
    (Some(class), state_class, category)
}

/// Reads the payload of `<base>/bridge/devices`. The coordinator is left out; entries
/// without an IEEE address or a usable name are skipped.
pub fn devices(payload: &[u8]) -> Result<Vec<Device>, Z2mError> {
    list(payload).map(|(devices, _)| devices)
}

/// Reads `<base>/bridge/devices`: the devices Hearth can read, and the IEEE address of
/// every entry of the list (the coordinator's and those that cannot be read included): a
/// device is gone from the network only if its address is not among them.
pub fn list(payload: &[u8]) -> Result<(Vec<Device>, Vec<String>), Z2mError> {
    if payload.len() > MAX_LIST {
        return Err(Z2mError::TooLarge(payload.len()));
    }
    let Json::Array(entries) = serde_json::from_slice(payload).map_err(|e| Z2mError::Json(e.to_string()))? else {
        return Err(Z2mError::Json("not a list".into()));
    };
    let keys = entries.iter().filter_map(|e| e.get("ieee_address")?.as_str().map(str::to_owned)).collect();
    Ok((entries.iter().filter_map(device).take(MAX_DEVICES).collect(), keys))
}

fn device(entry: &Json) -> Option<Device> {
    if entry.get("type").and_then(Json::as_str) == Some("Coordinator") {
        return None;
    }
    let text = |value: Option<&Json>| value.and_then(Json::as_str).filter(|s| short(s)).map(str::to_owned);
    let ieee_address = text(entry.get("ieee_address"))?;
    let friendly_name = text(entry.get("friendly_name")).filter(|n| valid_name(n))?;
    let definition = entry.get("definition").filter(|d| d.is_object());
    let field = |key: &str| text(definition.and_then(|d| d.get(key)));
    let mut values = Vec::new();
    for expose in definition.and_then(|d| d.get("exposes")).and_then(Json::as_array).into_iter().flatten() {
        flatten(expose, None, None, 0, &mut values);
    }
    values.truncate(MAX_VALUES);
    Some(Device {
        ieee_address,
        friendly_name,
        model: field("model"),
        vendor: field("vendor"),
        description: field("description"),
        supported: entry.get("supported").and_then(Json::as_bool).unwrap_or(definition.is_some()),
        values,
    })
}

/// The values of one expose, into `values`: a value of its own, or each feature of a light,
/// switch, cover, climate, lock or fan (top-level keys of the state, `part_of` that type),
/// or of a generic composite, nested under the composite's property in the state
/// (`"color_options":{"execute_if_off":true}`, a light's `"color":{"x":..,"y":..}`), so kept
/// as `<composite>.<property>` (`prefix`). A list (a schedule, a gradient) is not a single
/// value and is left out.
fn flatten(expose: &Json, prefix: Option<&str>, part_of: Option<&str>, depth: usize, values: &mut Vec<Exposed>) {
    if values.len() >= MAX_VALUES || depth > 4 {
        return;
    }
    let kind = expose.get("type").and_then(Json::as_str);
    let Some(features) = expose.get("features").and_then(Json::as_array) else {
        values.extend(exposed(expose, part_of.map(str::to_owned)).map(|mut value| {
            if let Some(prefix) = prefix {
                value.property = format!("{prefix}.{}", value.property);
            }
            value
        }));
        return;
    };
    let (prefix, part_of) = match kind {
        Some("composite") => {
            let own = expose.get("property").and_then(Json::as_str).filter(|p| short(p) && !p.is_empty());
            let nested = match (prefix, own) {
                (Some(outer), Some(own)) => Some(format!("{outer}.{own}")),
                (None, Some(own)) => Some(own.to_owned()),
                (outer, None) => outer.map(str::to_owned),
            };
            (nested, part_of.map(str::to_owned).or_else(|| Some("composite".to_owned())))
        }
        Some("list") => return,
        other => (prefix.map(str::to_owned), other.map(str::to_owned)),
    };
    let first = values.len();
    for feature in features {
        flatten(feature, prefix.as_deref(), part_of.as_deref(), depth + 1, values);
    }
    // A composite's category is its features' (`color_options` is a setting).
    if let Some(category) = category_of(expose) {
        for value in values[first..].iter_mut().filter(|v| v.category.is_none()) {
            value.category = Some(category.clone());
        }
    }
}

/// An expose's category, when it is one Hearth shows apart: `config` or `diagnostic`.
fn category_of(expose: &Json) -> Option<String> {
    let category = expose.get("category").and_then(Json::as_str)?;
    matches!(category, "config" | "diagnostic").then(|| category.to_owned())
}

/// One expose with a property (a feature of a composite, or a value of its own).
fn exposed(expose: &Json, part_of: Option<String>) -> Option<Exposed> {
    let property = expose.get("property").and_then(Json::as_str).filter(|p| short(p) && !p.is_empty())?;
    let text = |key: &str| expose.get(key).and_then(Json::as_str).filter(|s| short(s)).map(str::to_owned);
    let number = |key: &str| expose.get(key).and_then(Json::as_f64).filter(|n| n.is_finite());
    let shown = |value: &Json| match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let kind = match expose.get("type").and_then(Json::as_str)? {
        "numeric" => Kind::Numeric { min: number("value_min"), max: number("value_max"), step: number("value_step") },
        "binary" => Kind::Binary {
            on: expose.get("value_on").map_or_else(|| "ON".into(), shown),
            off: expose.get("value_off").map_or_else(|| "OFF".into(), shown),
        },
        "enum" => Kind::Enum {
            values: expose
                .get("values")
                .and_then(Json::as_array)
                .map(|v| v.iter().map(shown).filter(|s| short(s)).take(64).collect())
                .unwrap_or_default(),
        },
        "text" => Kind::Text,
        // Nested composites (a colour's x/y, climate schedules): not single values.
        _ => return None,
    };
    // Access bits: 1 published in state, 2 settable, 4 can be asked for (get).
    let access = expose.get("access").and_then(Json::as_u64).unwrap_or(1);
    let label = match (text("label"), text("endpoint")) {
        (Some(label), Some(endpoint)) => Some(format!("{label} {endpoint}")),
        (label, _) => label,
    };
    Some(Exposed {
        property: property.to_owned(),
        name: text("name"),
        label: label.and_then(|l| about_text(&l)),
        unit: text("unit"),
        kind,
        reported: access & 1 != 0,
        settable: access & 2 != 0,
        part_of,
        category: category_of(expose),
    })
}

/// Whether the bridge says it is online: `{"state":"online"}` (2.x) or `online` (1.x).
pub fn bridge_online(payload: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let state = match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(object)) => object.get("state").and_then(Json::as_str).map(str::to_owned)?,
        _ => text.to_owned(),
    };
    match state.as_str() {
        "online" => Some(true),
        "offline" => Some(false),
        _ => None,
    }
}

fn short(text: &str) -> bool {
    text.len() <= 256 && !text.chars().any(char::is_control)
}

/// A friendly name Zigbee2MQTT can publish under: no wildcards, no leading or trailing
/// slash (it may hold slashes and spaces), and not its own `bridge` (whose topics, the
/// device list among them, are the bridge's).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['+', '#'])
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name != "bridge"
        && !name.starts_with("bridge/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;

    fn corpus(name: &str) -> Vec<u8> {
        crate::conventions::corpus(name).1
    }

    fn value<'a>(device: &'a Device, property: &str) -> &'a Exposed {
        device.values.iter().find(|v| v.property == property).unwrap_or_else(|| panic!("no {property}"))
    }

    #[test]
    fn the_device_list_gives_names_units_and_controls() {
        let devices = devices(&corpus("z2m-bridge-devices")).unwrap_or_default();
        assert_eq!(devices.len(), 9, "the coordinator is left out");
        let by_name = |name: &str| devices.iter().find(|d| d.friendly_name == name).unwrap_or_else(|| panic!("{name}"));

        let weather = by_name("weather_sensor");
        assert_eq!(weather.model.as_deref(), Some("WSDCGQ11LM"));
        for (property, unit) in [("temperature", "°C"), ("humidity", "%"), ("pressure", "hPa"), ("battery", "%")] {
            let exposed = value(weather, property);
            assert_eq!(exposed.unit.as_deref(), Some(unit), "{property}");
            assert!(exposed.reported && !exposed.settable, "{property}");
        }

        let plug = by_name("power_plug");
        let state = value(plug, "state");
        assert_eq!(state.kind, Kind::Binary { on: "ON".into(), off: "OFF".into() });
        assert!(state.settable && state.part_of.as_deref() == Some("switch"));
        assert_eq!(value(plug, "power").unit.as_deref(), Some("W"));

        let bulb = by_name("bulb");
        let brightness = value(bulb, "brightness");
        assert!(brightness.settable && brightness.part_of.as_deref() == Some("light"));
        assert!(matches!(brightness.kind, Kind::Numeric { max: Some(254.0), .. }));

        // Several lights in one device: each endpoint's properties apart.
        let zigfred = by_name("zigfred_plus");
        assert!(zigfred.values.iter().any(|v| v.property == "brightness_l2"));

        // A generic composite's features keep their parent, as the state nests them.
        assert!(bulb.values.iter().any(|v| v.property == "color_options.execute_if_off"));
        assert!(!bulb.values.iter().any(|v| v.property == "execute_if_off"));

        // A device without a definition still lists what it reports.
        let unknown = by_name("0x0017880104e45518");
        assert!(!unknown.supported);
        assert!(unknown.values.iter().any(|v| v.property == "action"));
    }

    /// Composites inside a light (its colour, its level settings) are nested in its state
    /// under their own property, as in zigbee-herdsman-converters' definitions; a list is
    /// not a single value.
    #[test]
    fn composites_within_a_light_keep_their_property_and_lists_are_left_out() {
        let xy = r#"{"type":"composite","name":"color_xy","property":"color","access":7,"features":[
            {"type":"numeric","name":"x","property":"x","access":7},{"type":"numeric","name":"y","property":"y","access":7}]}"#;
        let level = r#"{"type":"composite","name":"level_config","property":"level_config","access":7,"features":[
            {"type":"numeric","name":"on_level","property":"on_level","access":7},
            {"type":"composite","name":"inner","property":"inner","access":7,"features":[
                {"type":"binary","name":"flag","property":"flag","access":1,"value_on":true,"value_off":false}]}]}"#;
        let list = r#"{"type":"list","name":"gradient","property":"gradient","access":3,"item_type":{"type":"text","name":"hex"}}"#;
        let light = format!(
            r#"{{"type":"light","features":[{{"type":"binary","name":"state","property":"state","access":7,"value_on":"ON","value_off":"OFF"}},{xy},{level}]}}"#
        );
        let entry = format!(
            r#"[{{"ieee_address":"0x1","friendly_name":"lamp","definition":{{"model":"m","vendor":"v","exposes":[{light},{list}]}}}}]"#
        );
        let devices = devices(entry.as_bytes()).unwrap();
        let names: Vec<&str> = devices[0].values.iter().map(|v| v.property.as_str()).collect();
        assert_eq!(names, ["state", "color.x", "color.y", "level_config.on_level", "level_config.inner.flag"]);
        assert!(devices[0].values.iter().all(|v| v.part_of.as_deref() == Some("light")));
    }

    #[test]
    fn bad_lists_are_refused_and_odd_entries_skipped() {
        assert!(matches!(devices(b"{}"), Err(Z2mError::Json(_))));
        assert!(matches!(devices(b"[1,"), Err(Z2mError::Json(_))));
        let odd = br#"[{"ieee_address":"0x1","friendly_name":"a/#"},{"friendly_name":"no address"},{"ieee_address":"0x2","friendly_name":"ok","definition":{"exposes":[{"type":"numeric"},{"type":"numeric","property":"t","access":3}]}}]"#;
        let read = devices(odd).unwrap_or_default();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].values.len(), 1);
        assert!(read[0].values[0].settable);
        assert!(matches!(devices(&vec![b' '; MAX_LIST + 1]), Err(Z2mError::TooLarge(_))));
    }

    #[test]
    fn the_bridge_state_in_both_forms() {
        assert_eq!(bridge_online(&corpus("z2m-bridge-state")), Some(true));
        assert_eq!(bridge_online(&corpus("z2m-bridge-state-legacy")), Some(true));
        assert_eq!(bridge_online(&corpus("z2m-bridge-state-offline-lwt")), Some(false));
        assert_eq!(bridge_online(b"maybe"), None);
    }

    /// Zigbee2MQTT's exposes carry what Home Assistant's classes need: each value gets the
    /// class, state class and category Zigbee2MQTT's own discovery would give it, and its
    /// label as its name.
    #[test]
    fn values_are_classed_and_named_as_zigbee2mqtt_classes_them() {
        let list = r#"[{"ieee_address":"0x1","friendly_name":"hall/door","definition":{"model":"MCCGQ11LM","vendor":"Aqara","exposes":[
            {"type":"binary","name":"contact","property":"contact","label":"Contact","access":1,"value_on":false,"value_off":true},
            {"type":"numeric","name":"battery","property":"battery","label":"Battery","unit":"%","access":1,"category":"diagnostic"},
            {"type":"numeric","name":"temperature","property":"temperature_l1","label":"Temperature","endpoint":"l1","unit":"°C","access":1},
            {"type":"numeric","name":"power","property":"power","label":"Power","unit":"W","access":1},
            {"type":"numeric","name":"energy","property":"energy","label":"Energy","unit":"kWh","access":1},
            {"type":"numeric","name":"aqi","property":"aqi","label":"Aqi","access":1},
            {"type":"numeric","name":"linkquality","property":"linkquality","label":"Linkquality","unit":"lqi","access":1,"category":"diagnostic"},
            {"type":"numeric","name":"current_heating_setpoint","property":"current_heating_setpoint","label":"Setpoint","unit":"°C","access":7},
            {"type":"numeric","name":"external_temperature_input","property":"external_temperature_input","label":"External temperature","unit":"°C","access":7},
            {"type":"binary","name":"water_leak","property":"water_leak","label":"Water leak","access":1,"value_on":true,"value_off":false}]}}]"#;
        let Heard::Listed { scope, devices, keys } =
            Zigbee2mqtt.read(&Message::new("zigbee2mqtt/bridge/devices", list.as_bytes()))
        else {
            panic!("not a list")
        };
        assert_eq!(scope, "zigbee2mqtt/");
        assert_eq!(keys, ["0x1"]);
        let device = &devices[0];
        assert!(device.behind);
        assert_eq!(device.topic, "zigbee2mqtt/hall/door");
        assert_eq!(device.about.name.as_deref(), Some("hall/door"));
        let shown = |metric: &str| {
            let v = device.values.iter().find(|v| v.metric == metric).unwrap_or_else(|| panic!("no {metric}"));
            (v.class.as_deref(), v.state_class.as_deref(), v.category.as_deref(), v.name.as_deref())
        };
        assert_eq!(shown("contact"), (Some("door"), None, None, Some("Contact")));
        assert_eq!(shown("battery"), (Some("battery"), Some("measurement"), Some("diagnostic"), Some("Battery")));
        assert_eq!(shown("temperature_l1"), (Some("temperature"), Some("measurement"), None, Some("Temperature l1")));
        assert_eq!(shown("power"), (Some("power"), Some("measurement"), None, Some("Power")));
        assert_eq!(shown("energy"), (Some("energy"), Some("total_increasing"), None, Some("Energy")));
        assert_eq!(shown("aqi"), (None, Some("measurement"), None, Some("Aqi")), "no unit, no class");
        assert_eq!(shown("linkquality"), (None, Some("measurement"), Some("diagnostic"), Some("Linkquality")));
        assert_eq!(shown("current_heating_setpoint").0, None, "not in Zigbee2MQTT's table");
        assert_eq!(shown("external_temperature_input").0, Some("temperature"), "a settable number keeps temperature");
        assert_eq!(shown("water_leak").0, Some("moisture"));
        // A contact that says closed (true) is a door that is not open: off.
        let contact = device.values.iter().find(|v| v.metric == "contact").map(|v| v.reading_value(Value::Bool(true)));
        assert_eq!(contact, Some(Value::Bool(false)));
    }

    /// Its device's state, read on its own topic once parsed: values in Hearth's terms, with
    /// units; what is not a metric is named.
    #[test]
    fn a_device_s_state_is_read_on_its_own_topic() {
        let Heard::Listed { devices, .. } =
            Zigbee2mqtt.read(&Message::new("zigbee2mqtt/bridge/devices", &corpus("z2m-bridge-devices")))
        else {
            panic!("not a list")
        };
        let plug = devices.iter().find(|d| d.topic == "zigbee2mqtt/power_plug").unwrap_or_else(|| panic!("no plug"));
        let mut description = Description::new(Convention::Zigbee2mqtt, &plug.identity.key, &plug.topic);
        description.values.clone_from(&plug.values);
        let message = Message::new("zigbee2mqtt/power_plug", br#"{"state":"ON","power":12.5,"bad key":1}"#);
        let Heard::Values { samples, left_out } = Zigbee2mqtt.read_own(&description, "", &message) else {
            panic!("no values")
        };
        let state = samples.iter().find(|s| s.metric == "state").map(|s| &s.value);
        assert_eq!(state, Some(&Value::Bool(true)));
        let power = samples.iter().find(|s| s.metric == "power").and_then(|s| s.unit.as_deref());
        assert_eq!(power, Some("W"));
        assert_eq!(left_out, ["bad key"]);
        let offline = Zigbee2mqtt.read_own(&description, "availability", &Message::new("", br#"{"state":"offline"}"#));
        assert_eq!(offline, Heard::Online { device: None, online: false });
        assert_eq!(Zigbee2mqtt.read_own(&description, "set", &Message::new("", b"{}")), Heard::Nothing);
        let large = vec![b' '; MAX_STATE + 1];
        let refused = Zigbee2mqtt.read_own(&description, "", &Message::new("zigbee2mqtt/power_plug", &large));
        assert!(matches!(refused, Heard::Refused(r) if r.contains("more than")), "a state over 64 KiB");
    }
}
