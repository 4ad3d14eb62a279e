//! Bridges: devices that publish for others (a Zigbee2MQTT coordinator for its Zigbee
//! devices) inside topic namespaces their manager granted them. Each device a bridge speaks
//! for becomes a Hearth device of its own, behind the bridge: created from what the bridge
//! announces, owned like any device (its class, the bridge's tenancy), commanded through
//! its bridge. This module keeps who is behind which bridge, reads a bridge's messages into
//! readings for those devices, and turns commands into the bridge's own topics and payloads.
//! Parsing is `crate::discovery`'s; rows are the store's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hearth_model::devices::{Convention, Discovered};
use rumqttc::mqttbytes::{matches, valid_filter};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::devices::{self, DeviceError};
use crate::discovery::zigbee2mqtt::{self, Kind};
use crate::ingest::decode;
use crate::reading::{Reading, Value, valid_metric, valid_unit};
use crate::store::{DeviceRecord, Store};

/// Most namespaces one bridge may hold, and the longest one.
pub const MAX_NAMESPACES: usize = 8;
const MAX_NAMESPACE_LEN: usize = 128;
/// Most devices behind one bridge (a large Zigbee network has a few hundred).
pub const MAX_BEHIND: usize = 512;
/// Largest message a bridge may send: its device list (a few hundred devices with their
/// descriptions). Other devices keep the ordinary limit.
pub const MAX_BRIDGE_MESSAGE: usize = zigbee2mqtt::MAX_LIST;

/// What discovery said of a device behind a bridge. Kept sealed with the device, so that
/// after a restart its messages are read the same way before its bridge says anything again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    pub convention: Convention,
    /// Who it is to its bridge (Zigbee2MQTT: its IEEE address).
    pub key: String,
    /// Where it publishes its state (Zigbee2MQTT: `<base>/<friendly name>`).
    pub topic: String,
    #[serde(default)]
    pub manufacturer: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub values: Vec<ValueSpec>,
}

/// One value the device reports or takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSpec {
    pub metric: String,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub settable: bool,
    /// For an on/off value: the device's own on and off, as it sends and takes them.
    #[serde(default)]
    pub on_off: Option<(Json, Json)>,
}

/// Why a bridge's message was refused (shown on the bridge).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("topic {0:?} is outside the bridge's namespaces")]
    Outside(String),
    #[error("topic {0:?}: no device behind this bridge publishes there, and no convention Hearth reads uses it")]
    Unknown(String),
    #[error("{topic}: {reason}")]
    Bad { topic: String, reason: String },
    #[error("the bridge already has {MAX_BEHIND} devices behind it; {0} more were not added")]
    Full(usize),
    #[error("devices behind the bridge could not be stored")]
    Store,
}

/// Why a command could not be sent to a device behind a bridge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("{device:?} takes no command {metric:?} (what it takes: {takes})")]
    NotSettable { device: String, metric: String, takes: String },
    #[error("{device:?} cannot take {value} for {metric:?}")]
    BadValue { device: String, metric: String, value: String },
}

/// A command as the bridge takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub bridge: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Who is behind which bridge. Cheap to clone; shared by the MQTT server, the API and
/// the automations.
#[derive(Clone)]
pub struct Bridges {
    store: Store,
    registry: Arc<RwLock<Registry>>,
    /// Held while devices are added, so that two messages cannot add the same device twice.
    adding: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Registry {
    /// Bridge id -> what it may do.
    bridges: HashMap<String, Bridge>,
    /// Device id -> the bridge it is behind and what it said of itself.
    behind: HashMap<String, Behind>,
    /// (bridge, convention, key) -> device id.
    by_key: HashMap<(String, Convention, String), String>,
    /// (bridge, state topic) -> device id.
    by_topic: HashMap<(String, String), String>,
    /// Device id -> whether it was last said to be online.
    online: HashMap<String, bool>,
}

#[derive(Debug, Clone)]
struct Bridge {
    namespaces: Vec<String>,
    tenancy: Option<i64>,
}

#[derive(Debug, Clone)]
struct Behind {
    bridge: String,
    description: Description,
}

impl Registry {
    fn insert(&mut self, bridge: &str, id: &str, description: Description) {
        self.forget(id);
        self.by_key.insert((bridge.to_owned(), description.convention, description.key.clone()), id.to_owned());
        self.by_topic.insert((bridge.to_owned(), description.topic.clone()), id.to_owned());
        self.behind.insert(id.to_owned(), Behind { bridge: bridge.to_owned(), description });
    }

    fn forget(&mut self, id: &str) {
        if let Some(old) = self.behind.remove(id) {
            let d = old.description;
            self.by_key.remove(&(old.bridge.clone(), d.convention, d.key));
            if self.by_topic.get(&(old.bridge.clone(), d.topic.clone())).is_some_and(|i| i == id) {
                self.by_topic.remove(&(old.bridge, d.topic));
            }
        }
        self.online.remove(id);
    }

    fn count_behind(&self, bridge: &str) -> usize {
        self.behind.values().filter(|b| b.bridge == bridge).count()
    }
}

/// Checks namespaces a manager grants: each a valid MQTT filter of at most 128 bytes whose
/// first level is a plain name (no wildcard, not `$`, not Hearth's own `hearth`), so that
/// no grant covers everything or Hearth's devices' topics; at most [`MAX_NAMESPACES`].
pub fn check_namespaces(namespaces: &[String]) -> Result<(), String> {
    if namespaces.len() > MAX_NAMESPACES {
        return Err(format!("at most {MAX_NAMESPACES} namespaces"));
    }
    for namespace in namespaces {
        let first = namespace.split('/').next().unwrap_or_default();
        let fine = namespace.len() <= MAX_NAMESPACE_LEN
            && valid_filter(namespace)
            && !namespace.chars().any(char::is_control)
            && !first.is_empty()
            && !first.contains(['+', '#'])
            && !first.starts_with('$')
            && first != "hearth";
        if !fine {
            return Err(format!(
                "{namespace:?} is not a namespace a bridge may have: use an MQTT filter such as zigbee2mqtt/# \
                 that starts with a name (not a wildcard, $ or hearth), at most {MAX_NAMESPACE_LEN} bytes"
            ));
        }
    }
    Ok(())
}

impl Bridges {
    /// Reads every bridge and every device behind one from the store.
    pub async fn load(store: Store) -> Result<Self, crate::store::StoreError> {
        let bridges = Self { store, registry: Arc::default(), adding: Arc::default() };
        for record in bridges.store.devices().await? {
            bridges.learn(&record);
        }
        Ok(bridges)
    }

    /// Takes in a device record as stored (a bridge's namespaces, a device behind one).
    fn learn(&self, record: &DeviceRecord) {
        let Ok(mut registry) = self.registry.write() else { return };
        if !record.namespaces.is_empty() {
            let bridge = Bridge { namespaces: record.namespaces.clone(), tenancy: record.tenancy_id };
            registry.bridges.insert(record.id.clone(), bridge);
        }
        if let (Some(bridge), Some(text)) = (&record.bridge_id, &record.discovered) {
            match serde_json::from_str::<Description>(text) {
                Ok(description) => registry.insert(bridge, &record.id, description),
                Err(error) => {
                    tracing::warn!(device.id = %record.id, %error, "what discovery said of a device cannot be read; it is left out until its bridge says it again")
                }
            }
        }
    }

    /// A bridge's namespaces changed (empty: it is no bridge now).
    pub fn set_namespaces(&self, device: &DeviceRecord, namespaces: &[String]) {
        let Ok(mut registry) = self.registry.write() else { return };
        if namespaces.is_empty() {
            registry.bridges.remove(&device.id);
        } else {
            let bridge = Bridge { namespaces: namespaces.to_vec(), tenancy: device.tenancy_id };
            registry.bridges.insert(device.id.clone(), bridge);
        }
    }

    /// A device was removed: a bridge takes the devices behind it along.
    pub fn removed(&self, id: &str) {
        let Ok(mut registry) = self.registry.write() else { return };
        registry.bridges.remove(id);
        let behind: Vec<String> =
            registry.behind.iter().filter(|(_, b)| b.bridge == id).map(|(d, _)| d.clone()).collect();
        for device in behind.iter().map(String::as_str).chain([id]) {
            registry.forget(device);
        }
    }

    /// Whether `device` is a bridge now.
    pub fn is_bridge(&self, device: &str) -> bool {
        self.registry.read().is_ok_and(|r| r.bridges.contains_key(device))
    }

    /// The bridge `device` is behind, if any.
    pub fn bridge_of(&self, device: &str) -> Option<String> {
        self.registry.read().ok()?.behind.get(device).map(|b| b.bridge.clone())
    }

    /// What a device behind a bridge said of itself, as viewers see it.
    pub fn view(&self, device: &str) -> Option<Discovered> {
        let registry = self.registry.read().ok()?;
        let d = &registry.behind.get(device)?.description;
        Some(Discovered {
            convention: d.convention,
            manufacturer: d.manufacturer.clone(),
            model: d.model.clone(),
            description: d.description.clone(),
            online: registry.online.get(device).copied(),
            settable: d.values.iter().filter(|v| v.settable).map(|v| v.metric.clone()).collect(),
        })
    }

    /// Reads what a bridge published into readings of the devices behind it, adding the
    /// devices it announces. Nothing outside its namespaces is read.
    pub async fn publish(&self, bridge: &str, topic: &str, payload: &[u8], now: i64) -> Result<Vec<Reading>, Refusal> {
        let granted = self.registry.read().ok().and_then(|r| r.bridges.get(bridge).cloned());
        let Some(granted) = granted.filter(|b| b.namespaces.iter().any(|n| matches(topic, n))) else {
            return Err(Refusal::Outside(topic.to_owned()));
        };
        let bad = |reason: String| Refusal::Bad { topic: topic.to_owned(), reason };
        if let Some((base, rest)) = topic.split_once('/')
            && let Some(what) = rest.strip_prefix("bridge/")
        {
            return match what {
                "devices" => {
                    let list = zigbee2mqtt::devices(payload).map_err(|e| bad(e.to_string()))?;
                    self.add_zigbee2mqtt(bridge, &granted, base, list, now).await?;
                    Ok(Vec::new())
                }
                // The rest of Zigbee2MQTT's own topics (its state, info, logs, requests and
                // responses) carry no readings.
                _ => Ok(Vec::new()),
            };
        }
        let (device, availability) = {
            let Ok(registry) = self.registry.read() else { return Ok(Vec::new()) };
            let find = |t: &str| registry.by_topic.get(&(bridge.to_owned(), t.to_owned())).cloned();
            match find(topic) {
                Some(device) => (device, false),
                None => match topic.strip_suffix("/availability").and_then(find) {
                    Some(device) => (device, true),
                    // Commands to its devices and their answers pass through its namespace too.
                    None if ["/set", "/get"].iter().any(|s| topic.strip_suffix(s).and_then(find).is_some()) => {
                        return Ok(Vec::new());
                    }
                    None => return Err(Refusal::Unknown(topic.to_owned())),
                },
            }
        };
        if availability {
            if let Some(online) = zigbee2mqtt::bridge_online(payload)
                && let Ok(mut registry) = self.registry.write()
            {
                registry.online.insert(device, online);
            }
            return Ok(Vec::new());
        }
        let values = {
            let Ok(registry) = self.registry.read() else { return Ok(Vec::new()) };
            registry.behind.get(&device).map(|b| b.description.values.clone()).unwrap_or_default()
        };
        let mut readings = decode::decode_object(&device, payload, now).map_err(|e| bad(e.to_string()))?;
        for reading in &mut readings {
            let Some(spec) = values.iter().find(|v| v.metric == reading.metric) else { continue };
            reading.unit.clone_from(&spec.unit);
            if let Some((on, off)) = &spec.on_off {
                let said = as_json(&reading.value);
                if said == *on {
                    reading.value = Value::Bool(true);
                } else if said == *off {
                    reading.value = Value::Bool(false);
                }
            }
        }
        if let Ok(mut registry) = self.registry.write() {
            registry.online.entry(device).or_insert(true);
        }
        Ok(readings)
    }

    /// Adds (or updates) the devices of a Zigbee2MQTT device list.
    async fn add_zigbee2mqtt(
        &self,
        bridge: &str,
        granted: &Bridge,
        base: &str,
        list: Vec<zigbee2mqtt::Device>,
        now: i64,
    ) -> Result<(), Refusal> {
        let _adding = self.adding.lock().await;
        let mut left_out = 0;
        for device in list {
            let topic = format!("{base}/{}", device.friendly_name);
            // Its state topic must be the bridge's to write, or its readings could not come.
            if !granted.namespaces.iter().any(|n| matches(&topic, n)) {
                continue;
            }
            let values = device
                .values
                .iter()
                .filter(|v| valid_metric(&v.property))
                .map(|v| ValueSpec {
                    metric: v.property.clone(),
                    unit: v.unit.clone().filter(|u| valid_unit(u)),
                    settable: v.settable,
                    on_off: match &v.kind {
                        Kind::Binary { on, off } => Some((word(on), word(off))),
                        _ => None,
                    },
                })
                .collect();
            let description = Description {
                convention: Convention::Zigbee2mqtt,
                key: device.ieee_address.clone(),
                topic,
                manufacturer: device.vendor.clone(),
                model: device.model.clone(),
                description: device.description.clone(),
                values,
            };
            let name: String = device.friendly_name.chars().take(devices::MAX_NAME_LEN).collect();
            let name = if devices::valid_name(&name) { name } else { device.ieee_address.clone() };
            match self.add_or_update(bridge, granted, &name, description, now).await {
                Ok(()) => {}
                Err(Refusal::Full(_)) => left_out += 1,
                Err(other) => return Err(other),
            }
        }
        match left_out {
            0 => Ok(()),
            n => Err(Refusal::Full(n)),
        }
    }

    /// Adds a device behind `bridge`, or updates the one it already has under that key.
    async fn add_or_update(
        &self,
        bridge: &str,
        granted: &Bridge,
        name: &str,
        description: Description,
        now: i64,
    ) -> Result<(), Refusal> {
        let known = {
            let Ok(registry) = self.registry.read() else { return Err(Refusal::Store) };
            let key = (bridge.to_owned(), description.convention, description.key.clone());
            match registry.by_key.get(&key) {
                Some(id) => Some((id.clone(), registry.behind.get(id).is_some_and(|b| b.description == description))),
                None if registry.count_behind(bridge) >= MAX_BEHIND => return Err(Refusal::Full(1)),
                None => None,
            }
        };
        let text = serde_json::to_string(&description).map_err(|_| Refusal::Store)?;
        let id = match known {
            Some((_, true)) => return Ok(()),
            Some((id, false)) => {
                self.store.update_bridged_device(&id, name, &text).await.map_err(|error| {
                    tracing::error!(%error, "could not update a device behind a bridge");
                    Refusal::Store
                })?;
                id
            }
            None => {
                let added = devices::add_bridged(&self.store, name, bridge, granted.tenancy, &text, now).await;
                let id = added.map_err(|error: DeviceError| {
                    tracing::error!(%error, "could not add a device behind a bridge");
                    Refusal::Store
                })?;
                tracing::info!(device.id = %id, bridge.id = %bridge, convention = %description.convention, "device discovered");
                id
            }
        };
        if let Ok(mut registry) = self.registry.write() {
            registry.insert(bridge, &id, description);
        }
        Ok(())
    }

    /// A command to a device behind a bridge, as its bridge takes it; `None` if `device`
    /// is behind no bridge.
    pub fn command(&self, device: &str, metric: &str, value: &Value) -> Option<Result<Command, CommandError>> {
        let registry = self.registry.read().ok()?;
        let behind = registry.behind.get(device)?;
        let d = &behind.description;
        let Some(spec) = d.values.iter().find(|v| v.metric == metric && v.settable) else {
            let takes: Vec<&str> = d.values.iter().filter(|v| v.settable).map(|v| v.metric.as_str()).collect();
            let takes = if takes.is_empty() { "nothing".to_owned() } else { takes.join(", ") };
            return Some(Err(CommandError::NotSettable {
                device: device.to_owned(),
                metric: metric.to_owned(),
                takes,
            }));
        };
        let said = match (&spec.on_off, value) {
            (Some((on, off)), Value::Bool(b)) => if *b { on } else { off }.clone(),
            (Some((on, off)), Value::Text(t)) => match t.to_ascii_lowercase().as_str() {
                "on" | "true" => on.clone(),
                "off" | "false" => off.clone(),
                _ if word(t) == *on || word(t) == *off => word(t),
                _ => {
                    return Some(Err(CommandError::BadValue {
                        device: device.to_owned(),
                        metric: metric.to_owned(),
                        value: t.clone(),
                    }));
                }
            },
            (_, value) => as_json(value),
        };
        let payload = match d.convention {
            Convention::Zigbee2mqtt => serde_json::json!({ metric: said }).to_string().into_bytes(),
            _ => said.to_string().into_bytes(),
        };
        let topic = format!("{}/set", d.topic);
        Some(Ok(Command { bridge: behind.bridge.clone(), topic, payload }))
    }
}

/// An on/off word as the device sends it: `true`/`false` as JSON booleans, the rest as text.
fn word(text: &str) -> Json {
    match text {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        other => Json::String(other.to_owned()),
    }
}

fn as_json(value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Text(t) => Json::String(t.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_start_with_a_name_and_never_cover_hearth_s_own_topics() {
        let ok = |n: &[&str]| check_namespaces(&n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).is_ok();
        assert!(ok(&["zigbee2mqtt/#", "tele/kitchen-plug/#", "shellyplus1-a8032ab12345/#", "homeassistant/+/x/#"]));
        assert!(ok(&[]));
        for bad in ["#", "+/status", "hearth/#", "hearth", "$SYS/#", "a/#/b", "", "/x", "a\nb", &"a".repeat(129)] {
            assert!(!ok(&[bad]), "{bad:?} was accepted");
        }
        assert!(!ok(&["a/#"; MAX_NAMESPACES + 1]));
    }
}
