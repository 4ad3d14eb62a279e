//! Zigbee2MQTT's own descriptions of its devices: the device list it publishes (retained) on
//! `<base>/bridge/devices`, with each model's "exposes" (what it reports and what it takes,
//! with names, units, ranges and on/off values), and the bridge's state on
//! `<base>/bridge/state`. Parsing only.

use serde_json::Value as Json;

use super::MAX_VALUES;

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

/// Reads the payload of `<base>/bridge/devices`. The coordinator is left out; entries
/// without an IEEE address or a usable name are skipped.
pub fn devices(payload: &[u8]) -> Result<Vec<Device>, Z2mError> {
    if payload.len() > MAX_LIST {
        return Err(Z2mError::TooLarge(payload.len()));
    }
    let Json::Array(entries) = serde_json::from_slice(payload).map_err(|e| Z2mError::Json(e.to_string()))? else {
        return Err(Z2mError::Json("not a list".into()));
    };
    Ok(entries.iter().filter_map(device).take(MAX_DEVICES).collect())
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
    Some(Exposed {
        property: property.to_owned(),
        label: text("label"),
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
/// slash (it may hold slashes and spaces).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#']) && !name.starts_with('/') && !name.ends_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Vec<u8> {
        crate::discovery::corpus(name).1
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
}
