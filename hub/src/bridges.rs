//! Bridges: devices that publish for others (a Zigbee2MQTT coordinator for its Zigbee
//! devices) inside topic namespaces their manager granted them. Each device a bridge speaks
//! for becomes a Hearth device of its own, behind the bridge: created from what the bridge
//! announces, owned like any device (its class, the bridge's tenancy), commanded through
//! its bridge. This module keeps who is behind which bridge, reads a bridge's messages into
//! readings for those devices, and turns commands into the bridge's own topics and payloads.
//! Parsing is `crate::discovery`'s; rows are the store's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hearth_model::devices::{Convention, Discovered, DiscoveredValue};
use rumqttc::mqttbytes::{matches, valid_filter};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::devices::{self, DeviceError};
use crate::discovery::native::{self, Said};
use crate::discovery::template::Template;
use crate::discovery::zigbee2mqtt::{self, Kind};
use crate::discovery::{MAX_VALUES, ha};
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
    /// The name it gave itself, where its convention has one (Tasmota's discovery).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub values: Vec<ValueSpec>,
    /// Where it says whether it is online (Home Assistant discovery's `availability`).
    #[serde(default)]
    pub availability: Vec<AvailabilitySpec>,
}

/// An availability topic, its template, and the payloads that mean online and offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilitySpec {
    pub topic: String,
    #[serde(default)]
    pub template: Option<String>,
    pub online: String,
    pub offline: String,
}

/// One value the device reports or takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSpec {
    pub metric: String,
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
    /// Home Assistant's device class (`temperature`, `power`, `door`...), for icons.
    #[serde(default)]
    pub class: Option<String>,
    /// The Home Assistant entity it came from (`<component>:<id>`), so that removing the
    /// entity removes it.
    #[serde(default)]
    pub entity: Option<String>,
    /// The values it takes, when they are a list (at most 32).
    #[serde(default)]
    pub options: Vec<String>,
    /// A setting (`config`) or a diagnostic (`diagnostic`) rather than what the device is
    /// for: Zigbee2MQTT's category, Home Assistant's entity category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// A value's own state topic and the template that reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSpec {
    pub topic: String,
    #[serde(default)]
    pub template: Option<String>,
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

/// The metric availability is recorded as (true: online), so that the dashboard shows it,
/// charts keep its history and rules trigger on its change.
pub const ONLINE: &str = "online";
/// A device behind a bridge not heard from for this long is offline (Zigbee2MQTT's own
/// default for battery devices is 25 hours).
pub const OFFLINE_AFTER_MS: i64 = 25 * 3600 * 1000;

/// Largest state message of one device behind a bridge.
const MAX_STATE: usize = 64 * 1024;
/// Most availability topics of one device.
const MAX_AVAILABILITY: usize = 8;

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
    /// Whether it is sent retained (see [`CommandSpec::retain`]).
    pub retain: bool,
}

/// Who is behind which bridge. Cheap to clone; shared by the MQTT server, the API and
/// the automations.
#[derive(Clone)]
pub struct Bridges {
    store: Store,
    /// Where what a discovery config left out is shown (on the device it describes).
    rejections: crate::ingest::Rejections,
    /// Where a device removed by its discovery config is announced.
    events: tokio::sync::broadcast::Sender<crate::devices::DeviceEvent>,
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
    /// (bridge, a value's own state topic) -> (device id, metric).
    by_state: HashMap<(String, String), Vec<(String, String)>>,
    /// (bridge, availability topic) -> device ids.
    by_availability: HashMap<(String, String), Vec<String>>,
    /// Device id -> whether it was last said (or, from silence, taken) to be online.
    online: HashMap<String, bool>,
    /// Device id -> when it was last heard from.
    heard: HashMap<String, i64>,
    /// Changes of `online` not yet recorded as readings.
    changes: Vec<(String, bool, i64)>,
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
        let (online, heard) = (self.online.get(id).copied(), self.heard.get(id).copied());
        self.forget(id);
        if let Some(online) = online {
            self.online.insert(id.to_owned(), online);
        }
        if let Some(heard) = heard {
            self.heard.insert(id.to_owned(), heard);
        }
        self.by_key.insert((bridge.to_owned(), description.convention, description.key.clone()), id.to_owned());
        if description.convention == Convention::Zigbee2mqtt {
            self.by_topic.insert((bridge.to_owned(), description.topic.clone()), id.to_owned());
        }
        for value in &description.values {
            if let Some(state) = &value.state {
                let at = self.by_state.entry((bridge.to_owned(), state.topic.clone())).or_default();
                at.push((id.to_owned(), value.metric.clone()));
            }
        }
        for availability in &description.availability {
            let at = self.by_availability.entry((bridge.to_owned(), availability.topic.clone())).or_default();
            if !at.iter().any(|d| d == id) {
                at.push(id.to_owned());
            }
        }
        self.behind.insert(id.to_owned(), Behind { bridge: bridge.to_owned(), description });
    }

    fn forget(&mut self, id: &str) {
        if let Some(old) = self.behind.remove(id) {
            let d = old.description;
            self.by_key.remove(&(old.bridge.clone(), d.convention, d.key));
            if self.by_topic.get(&(old.bridge.clone(), d.topic.clone())).is_some_and(|i| i == id) {
                self.by_topic.remove(&(old.bridge.clone(), d.topic));
            }
            for topic in d.values.into_iter().filter_map(|v| v.state).map(|s| s.topic) {
                let key = (old.bridge.clone(), topic);
                if let Some(at) = self.by_state.get_mut(&key) {
                    at.retain(|(device, _)| device != id);
                    if at.is_empty() {
                        self.by_state.remove(&key);
                    }
                }
            }
            for topic in d.availability.into_iter().map(|a| a.topic) {
                let key = (old.bridge.clone(), topic);
                if let Some(at) = self.by_availability.get_mut(&key) {
                    at.retain(|device| device != id);
                    if at.is_empty() {
                        self.by_availability.remove(&key);
                    }
                }
            }
        }
        self.online.remove(id);
        self.heard.remove(id);
    }

    /// Notes that `id` was heard from at `now` and said (or showed, by sending values) it is
    /// online or not; a change is recorded as an `online` reading.
    fn set_online(&mut self, id: &str, online: bool, now: i64) {
        self.heard.insert(id.to_owned(), now);
        if self.online.insert(id.to_owned(), online) != Some(online) {
            self.changes.push((id.to_owned(), online, now));
        }
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
    pub async fn load(
        store: Store,
        rejections: crate::ingest::Rejections,
        events: tokio::sync::broadcast::Sender<crate::devices::DeviceEvent>,
    ) -> Result<Self, crate::store::StoreError> {
        let bridges = Self { store, rejections, events, registry: Arc::default(), adding: Arc::default() };
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

    /// Every namespace of every bridge (what the hub subscribes to on an external broker).
    pub fn all_namespaces(&self) -> Vec<String> {
        let Ok(registry) = self.registry.read() else { return Vec::new() };
        let mut all: Vec<String> = registry.bridges.values().flat_map(|b| b.namespaces.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// One bridge's namespaces.
    pub fn namespaces_of(&self, device: &str) -> Vec<String> {
        self.registry.read().ok().and_then(|r| r.bridges.get(device).map(|b| b.namespaces.clone())).unwrap_or_default()
    }

    /// The bridge a message on an external broker is read for: the one whose matching
    /// namespace is the most specific (the longest), the first by id if several are.
    pub fn bridge_for(&self, topic: &str) -> Option<String> {
        let registry = self.registry.read().ok()?;
        registry
            .bridges
            .iter()
            .filter_map(|(id, b)| {
                let longest = b.namespaces.iter().filter(|n| matches(topic, n)).map(String::len).max()?;
                Some((std::cmp::Reverse(longest), id))
            })
            .min()
            .map(|(_, id)| id.clone())
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
            values: d
                .values
                .iter()
                .map(|v| DiscoveredValue {
                    metric: v.metric.clone(),
                    unit: v.unit.clone(),
                    class: v.class.clone(),
                    settable: v.command.is_some(),
                    on_off: v.on_off.is_some(),
                    options: v.options.clone(),
                    category: v.category.clone(),
                })
                .collect(),
        })
    }

    /// Whether a command kept retained is still one to retain: its device is still behind
    /// that bridge, and one of its values still takes commands on that topic retained.
    pub fn retains(&self, kept: &crate::ingest::retained::Kept) -> bool {
        let Ok(registry) = self.registry.read() else { return false };
        registry.behind.get(&kept.target).is_some_and(|b| {
            b.bridge == kept.device
                && b.description
                    .values
                    .iter()
                    .filter_map(|v| v.command.as_ref())
                    .any(|c| c.retain && c.topic == kept.topic)
        })
    }

    /// Reads what a bridge published into readings of the devices behind it, adding the
    /// devices it announces. Nothing outside its namespaces is read.
    pub async fn publish(&self, bridge: &str, topic: &str, payload: &[u8], now: i64) -> Result<Vec<Reading>, Refusal> {
        let mut readings = self.read(bridge, topic, payload, now).await?;
        readings.extend(self.availability_changes());
        Ok(readings)
    }

    /// Devices behind bridges that were online and have not been heard from for
    /// `after_ms`: they are offline now. Returns the `online` readings that say so.
    pub fn sweep_silent(&self, now: i64, after_ms: i64) -> Vec<Reading> {
        if let Ok(mut registry) = self.registry.write() {
            let silent: Vec<String> = registry
                .online
                .iter()
                .filter(|(id, online)| **online && registry.heard.get(*id).is_none_or(|t| *t < now - after_ms))
                .map(|(id, _)| id.clone())
                .collect();
            for id in silent {
                let heard = registry.heard.get(&id).copied();
                registry.set_online(&id, false, now);
                // Taken offline by silence, not heard from.
                if let Some(heard) = heard {
                    registry.heard.insert(id, heard);
                }
            }
        }
        self.availability_changes()
    }

    /// Changes of availability since last asked, as `online` readings at the hub's time.
    fn availability_changes(&self) -> Vec<Reading> {
        let Ok(mut registry) = self.registry.write() else { return Vec::new() };
        std::mem::take(&mut registry.changes)
            .into_iter()
            .map(|(device, online, ts)| Reading {
                device,
                metric: ONLINE.into(),
                ts,
                value: Value::Bool(online),
                unit: None,
            })
            .collect()
    }

    async fn read(&self, bridge: &str, topic: &str, payload: &[u8], now: i64) -> Result<Vec<Reading>, Refusal> {
        let granted = self.registry.read().ok().and_then(|r| r.bridges.get(bridge).cloned());
        let Some(granted) = granted.filter(|b| b.namespaces.iter().any(|n| matches(topic, n))) else {
            return Err(Refusal::Outside(topic.to_owned()));
        };
        let bad = |reason: String| Refusal::Bad { topic: topic.to_owned(), reason };
        if let Some(base) = topic.strip_suffix("/bridge/devices") {
            let list = zigbee2mqtt::devices(payload).map_err(|e| bad(e.to_string()))?;
            self.add_zigbee2mqtt(bridge, &granted, base, list, now).await?;
            return Ok(Vec::new());
        }
        // Values with topics of their own (Home Assistant discovery), and availability.
        let (readings, heard) = self.read_states(bridge, topic, payload, now);
        if heard {
            return Ok(readings);
        }
        if topic.split('/').nth(1) == Some("bridge") {
            // The rest of Zigbee2MQTT's own topics (its state, info, logs, requests and
            // responses) carry no readings.
            return Ok(Vec::new());
        }
        if topic.starts_with("tasmota/discovery/") {
            if topic.ends_with("/config") && !payload.is_empty() {
                let (device, values, about) = tasmota_discovery(payload).map_err(bad)?;
                self.native_device(bridge, &granted, Convention::Tasmota, &device, (values, Some(about)), now).await?;
            }
            // Its sensor list repeats what its telemetry says, with the units the hub knows.
            return Ok(Vec::new());
        }
        if let Some(prefix) = discovery_prefix(topic) {
            self.home_assistant(bridge, &granted, prefix, topic, payload, now).await?;
            return Ok(Vec::new());
        }
        let found = {
            let Ok(registry) = self.registry.read() else { return Ok(Vec::new()) };
            let find = |t: &str| registry.by_topic.get(&(bridge.to_owned(), t.to_owned())).cloned();
            match find(topic) {
                Some(device) => Some((device, false)),
                None => match topic.strip_suffix("/availability").and_then(find) {
                    Some(device) => Some((device, true)),
                    // Commands to its devices and their answers pass through its namespace too.
                    None if ["/set", "/get"].iter().any(|s| topic.strip_suffix(s).and_then(find).is_some()) => {
                        return Ok(Vec::new());
                    }
                    None => None,
                },
            }
        };
        let Some((device, availability)) = found else {
            return self.native(bridge, &granted, topic, payload, now).await;
        };
        if availability {
            if let Some(online) = zigbee2mqtt::bridge_online(payload)
                && let Ok(mut registry) = self.registry.write()
            {
                registry.set_online(&device, online, now);
            }
            return Ok(Vec::new());
        }
        let values = {
            let Ok(registry) = self.registry.read() else { return Ok(Vec::new()) };
            registry.behind.get(&device).map(|b| b.description.values.clone()).unwrap_or_default()
        };
        // A device's whole state at once, which can hold a few hundred values (Danfoss's
        // Icon2: 276); what cannot be stored is left out, and said on the device.
        let (mut readings, left_out) =
            decode::decode_relayed(&device, payload, now, MAX_STATE, MAX_VALUES).map_err(|e| match e {
                decode::DecodeError::TooLarge(n) => {
                    bad(format!("state is {n} bytes, more than the {MAX_STATE} allowed"))
                }
                other => bad(other.to_string()),
            })?;
        if !left_out.is_empty() {
            let reason = format!("left out of its state {topic}: {}", left_out.join(", "));
            self.rejections.record(&device, "mqtt", &reason, now);
        }
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
            registry.set_online(&device, true, now);
        }
        Ok(readings)
    }

    /// Readings of the values whose own state topic `topic` is, and what it says of their
    /// devices' availability; `heard` is whether any value or device listens there.
    fn read_states(&self, bridge: &str, topic: &str, payload: &[u8], now: i64) -> (Vec<Reading>, bool) {
        let Ok(registry) = self.registry.read() else { return (Vec::new(), false) };
        let key = (bridge.to_owned(), topic.to_owned());
        let (states, available) = (registry.by_state.get(&key), registry.by_availability.get(&key));
        if states.is_none() && available.is_none() {
            return (Vec::new(), false);
        }
        let text = String::from_utf8_lossy(payload);
        let text = text.trim();
        let mut readings = Vec::new();
        for (device, metric) in states.into_iter().flatten() {
            let Some(spec) =
                registry.behind.get(device).and_then(|b| b.description.values.iter().find(|v| v.metric == *metric))
            else {
                continue;
            };
            let template = spec.state.as_ref().and_then(|s| s.template.as_deref());
            let value = match template.map(Template::parse) {
                Some(Ok(template)) => template.render(text).ok(),
                Some(Err(_)) => None,
                None => Some(Value::Text(text.to_owned())),
            };
            if let Some(value) = value.and_then(|v| state_value(v, spec)) {
                readings.push(Reading {
                    device: device.clone(),
                    metric: metric.clone(),
                    ts: now,
                    value,
                    unit: spec.unit.clone(),
                });
            }
        }
        let mut online = Vec::new();
        for device in available.into_iter().flatten() {
            let Some(behind) = registry.behind.get(device) else { continue };
            for a in behind.description.availability.iter().filter(|a| a.topic == topic) {
                let said = match a.template.as_deref().map(Template::parse) {
                    Some(Ok(template)) => template.render(text).ok(),
                    Some(Err(_)) => None,
                    None => Some(Value::Text(text.to_owned())),
                };
                let said = said.map(|v| match v {
                    Value::Text(t) => t,
                    other => as_json(&other).to_string(),
                });
                match said {
                    Some(s) if s == a.online => online.push((device.clone(), true)),
                    Some(s) if s == a.offline => online.push((device.clone(), false)),
                    _ => {}
                }
            }
        }
        drop(registry);
        if let Ok(mut registry) = self.registry.write() {
            for reading in &readings {
                registry.set_online(&reading.device, true, now);
            }
            for (device, online) in online {
                registry.set_online(&device, online, now);
            }
        }
        (readings, true)
    }

    /// Applies a Home Assistant discovery config: the entity's values join its device
    /// (named by the config's `device` block), added behind the bridge if new; an empty
    /// config takes them away. Parts the hub cannot read are shown on the device.
    async fn home_assistant(
        &self,
        bridge: &str,
        granted: &Bridge,
        prefix: &str,
        topic: &str,
        payload: &[u8],
        now: i64,
    ) -> Result<(), Refusal> {
        let bad = |reason: String| Refusal::Bad { topic: topic.to_owned(), reason };
        match ha::parse(prefix, topic, payload).map_err(|e| bad(e.to_string()))? {
            ha::Announcement::Removed { component, id } => {
                self.remove_entity(bridge, &format!("{}:{id}", component.name()), now).await
            }
            ha::Announcement::Entity(entity) => self.home_assistant_entity(bridge, granted, topic, *entity, now).await,
            // A device-based config: each component as if it came in a config of its own.
            ha::Announcement::Device { entities, refused, removed, .. } => {
                for (component, id) in removed {
                    self.remove_entity(bridge, &format!("{}:{id}", component.name()), now).await?;
                }
                let mut reasons: Vec<String> =
                    refused.iter().map(|(key, error)| format!("component {key:?}: {error}")).collect();
                for entity in entities {
                    let key = entity.id.rsplit(' ').next().unwrap_or_default().to_owned();
                    match self.home_assistant_entity(bridge, granted, topic, entity, now).await {
                        Ok(()) => {}
                        Err(Refusal::Bad { reason, .. }) => reasons.push(format!("component {key:?}: {reason}")),
                        Err(other) => return Err(other),
                    }
                }
                match reasons.is_empty() {
                    true => Ok(()),
                    false => Err(bad(reasons.join("; "))),
                }
            }
            ha::Announcement::DeviceRemoved { id } => {
                let prefix = format!("@{id} ");
                let tags: Vec<String> = self.registry.read().map_or_else(
                    |_| Vec::new(),
                    |r| {
                        r.behind
                            .values()
                            .filter(|b| b.bridge == bridge)
                            .flat_map(|b| b.description.values.iter().filter_map(|v| v.entity.clone()))
                            .filter(|tag| tag.split_once(':').is_some_and(|(_, id)| id.starts_with(&prefix)))
                            .collect()
                    },
                );
                for tag in tags.iter().collect::<std::collections::BTreeSet<_>>() {
                    self.remove_entity(bridge, tag, now).await?;
                }
                Ok(())
            }
        }
    }

    /// Adds (or updates) one Home Assistant entity's values on its device, added behind the
    /// bridge if new. Parts the hub cannot read are shown on the device.
    async fn home_assistant_entity(
        &self,
        bridge: &str,
        granted: &Bridge,
        topic: &str,
        entity: ha::Entity,
        now: i64,
    ) -> Result<(), Refusal> {
        let bad = |reason: String| Refusal::Bad { topic: topic.to_owned(), reason };
        let values = ha_values(&entity);
        let topics = values
            .iter()
            .filter_map(|v| v.state.as_ref().map(|s| &s.topic))
            .chain(values.iter().filter_map(|v| v.command.as_ref().map(|c| &c.topic)))
            .chain(entity.availability.iter().map(|a| &a.topic));
        if let Some(outside) = topics.clone().find(|t| !granted.namespaces.iter().any(|n| matches(t, n))) {
            return Err(bad(format!("its topic {outside:?} is outside the bridge's namespaces")));
        }
        // A device Hearth already reads through Zigbee2MQTT's own device list is not added
        // a second time.
        let known = self.registry.read().ok().is_some_and(|r| {
            values
                .iter()
                .filter_map(|v| v.state.as_ref())
                .any(|s| r.by_topic.contains_key(&(bridge.to_owned(), s.topic.clone())))
        });
        if known || values.is_empty() {
            return Ok(());
        }
        let object = entity.id.rsplit(' ').next().unwrap_or(&entity.id).to_owned();
        let key = entity.device.identifiers.first().cloned().or_else(|| entity.unique_id.clone());
        let key = key.unwrap_or_else(|| format!("{}:{}", entity.component.name(), entity.id));
        let _adding = self.adding.lock().await;
        let existing = self.registry.read().ok().and_then(|r| {
            let id = r.by_key.get(&(bridge.to_owned(), Convention::HomeAssistant, key.clone()))?;
            r.behind.get(id).map(|b| b.description.clone())
        });
        let mut description = existing.unwrap_or_else(|| Description {
            convention: Convention::HomeAssistant,
            key: key.clone(),
            topic: String::new(),
            manufacturer: None,
            model: None,
            description: None,
            name: None,
            values: Vec::new(),
            availability: Vec::new(),
        });
        let tag = format!("{}:{}", entity.component.name(), entity.id);
        description.manufacturer = entity.device.manufacturer.clone().or(description.manufacturer);
        description.model = entity.device.model.clone().or(description.model);
        description.values.retain(|v| v.entity.as_deref() != Some(tag.as_str()));
        for value in values {
            let taken = description.values.iter().any(|v| v.metric == value.metric);
            if description.values.len() < MAX_VALUES && !taken {
                description.values.push(value);
            }
        }
        for a in &entity.availability {
            let spec = AvailabilitySpec {
                topic: a.topic.clone(),
                template: a.template.as_ref().map(|t| t.text().to_owned()),
                online: a.online.clone(),
                offline: a.offline.clone(),
            };
            if a.unreadable.is_none() && !description.availability.contains(&spec) {
                description.availability.push(spec);
            }
        }
        description.availability.truncate(MAX_AVAILABILITY);
        let name = entity.device.name.clone().or_else(|| entity.name.clone()).unwrap_or(object);
        let name: String = name.chars().take(devices::MAX_NAME_LEN).collect();
        let name = if devices::valid_name(&name) { name } else { "Discovered device".to_owned() };
        self.add_or_update(bridge, granted, &name, description, now).await?;
        if !entity.left_out.is_empty()
            && let Some(id) = self
                .registry
                .read()
                .ok()
                .and_then(|r| r.by_key.get(&(bridge.to_owned(), Convention::HomeAssistant, key.clone())).cloned())
        {
            let reason = format!("{tag}: left out: {}", entity.left_out.join("; "));
            self.rejections.record(&id, "mqtt", &reason, now);
        }
        Ok(())
    }

    /// An empty discovery config: the entity's values go; a device left with none goes too.
    async fn remove_entity(&self, bridge: &str, tag: &str, now: i64) -> Result<(), Refusal> {
        let _adding = self.adding.lock().await;
        let found = self.registry.read().ok().and_then(|r| {
            r.behind.iter().find_map(|(id, b)| {
                (b.bridge == bridge && b.description.values.iter().any(|v| v.entity.as_deref() == Some(tag)))
                    .then(|| (id.clone(), b.description.clone()))
            })
        });
        let Some((id, mut description)) = found else { return Ok(()) };
        description.values.retain(|v| v.entity.as_deref() != Some(tag));
        let failed = |error: crate::store::StoreError| {
            tracing::error!(%error, "could not update a device behind a bridge");
            Refusal::Store
        };
        if description.values.is_empty() {
            self.store.remove_device(&id, now).await.map_err(failed)?;
            if let Ok(mut registry) = self.registry.write() {
                registry.forget(&id);
            }
            let _ = self.events.send(crate::devices::DeviceEvent::Removed(id.clone()));
            tracing::info!(device.id = %id, bridge.id = %bridge, "device removed by its discovery config");
            return Ok(());
        }
        let name = self.store.device(&id).await.map_err(failed)?.map(|d| d.name).unwrap_or_default();
        let text = serde_json::to_string(&description).map_err(|_| Refusal::Store)?;
        self.store.update_bridged_device(&id, &name, &text).await.map_err(failed)?;
        if let Ok(mut registry) = self.registry.write() {
            registry.insert(bridge, &id, description);
        }
        Ok(())
    }

    /// Reads a message of Tasmota, Shelly (Gen2+) or ESPHome: the device it names is added
    /// behind the bridge the first time, and learns the units and controls of the values it
    /// reports as they come.
    async fn native(
        &self,
        bridge: &str,
        granted: &Bridge,
        topic: &str,
        payload: &[u8],
        now: i64,
    ) -> Result<Vec<Reading>, Refusal> {
        let said = [
            (Convention::Tasmota, native::tasmota as fn(&str, &[u8]) -> Option<Said>),
            (Convention::Shelly, native::shelly),
            (Convention::Esphome, native::esphome),
        ]
        .into_iter()
        .find_map(|(convention, read)| read(topic, payload).map(|said| (convention, said)));
        let Some((convention, said)) = said else { return Err(Refusal::Unknown(topic.to_owned())) };
        let (name, samples, online) = match said {
            Said::Nothing => return Ok(Vec::new()),
            Said::Online { device, online } => (device, Vec::new(), Some(online)),
            Said::Values { device, samples } => (device, samples, None),
        };
        let mut values: Vec<ValueSpec> = samples
            .iter()
            .map(|sample| ValueSpec {
                metric: sample.metric.clone(),
                unit: sample.unit.map(str::to_owned),
                on_off: None,
                command: None,
                state: None,
                class: None,
                entity: None,
                options: Vec::new(),
                category: None,
            })
            .collect();
        for value in &mut values {
            native_control(convention, &name, topic, value);
        }
        let id = self.native_device(bridge, granted, convention, &name, (values, None), now).await?;
        if let Ok(mut registry) = self.registry.write() {
            registry.set_online(&id, online.unwrap_or(true), now);
        }
        Ok(samples
            .into_iter()
            .map(|s| Reading {
                device: id.clone(),
                metric: s.metric,
                ts: now,
                value: s.value,
                unit: s.unit.map(str::to_owned),
            })
            .collect())
    }

    /// The device `name` of `convention` behind `bridge`, added if new; values it did not
    /// report before are added to what is known of it.
    async fn native_device(
        &self,
        bridge: &str,
        granted: &Bridge,
        convention: Convention,
        name: &str,
        (values, about): (Vec<ValueSpec>, Option<About>),
        now: i64,
    ) -> Result<String, Refusal> {
        let key = (bridge.to_owned(), convention, name.to_owned());
        // Read under the lock, so that two messages of one device cannot each add a value
        // and lose the other's.
        let _adding = self.adding.lock().await;
        let known = self.registry.read().ok().and_then(|r| {
            let id = r.by_key.get(&key)?;
            Some((id.clone(), r.behind.get(id)?.description.clone()))
        });
        let mut description = match &known {
            Some((_, description)) => description.clone(),
            None => Description {
                convention,
                key: name.to_owned(),
                topic: name.to_owned(),
                manufacturer: None,
                model: None,
                description: None,
                name: None,
                values: Vec::new(),
                availability: Vec::new(),
            },
        };
        if let Some(about) = about {
            description.name = Some(about.name);
            description.manufacturer = about.manufacturer;
            description.model = about.model;
        }
        for value in values {
            match description.values.iter().position(|v| v.metric == value.metric) {
                Some(at) if description.values[at].command.is_none() && value.command.is_some() => {
                    description.values[at] = value;
                }
                Some(_) => {}
                None if description.values.len() < MAX_VALUES => description.values.push(value),
                None => {}
            }
        }
        if let Some((id, before)) = known
            && before == description
        {
            return Ok(id);
        }
        let shown = description.name.clone().unwrap_or_else(|| name.rsplit('/').next().unwrap_or(name).to_owned());
        let shown: String = shown.chars().take(devices::MAX_NAME_LEN).collect();
        let shown = if devices::valid_name(&shown) { shown } else { format!("{convention} device") };
        self.add_or_update(bridge, granted, &shown, description, now).await?;
        self.registry.read().ok().and_then(|r| r.by_key.get(&key).cloned()).ok_or(Refusal::Store)
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
            let set = format!("{topic}/set");
            let values = device
                .values
                .iter()
                .filter(|v| valid_metric(&v.property))
                .map(|v| ValueSpec {
                    metric: v.property.clone(),
                    unit: v.unit.clone().filter(|u| valid_unit(u)),
                    on_off: match &v.kind {
                        Kind::Binary { on, off } => Some((word(on), word(off))),
                        _ => None,
                    },
                    // A nested value (`color_options.execute_if_off`) is set as its parent.
                    command: (v.settable && !v.property.contains('.')).then(|| CommandSpec {
                        topic: set.clone(),
                        form: Form::Json { key: v.property.clone() },
                        retain: false,
                    }),
                    state: None,
                    class: None,
                    entity: None,
                    options: match &v.kind {
                        Kind::Enum { values } => values.iter().take(32).cloned().collect(),
                        _ => Vec::new(),
                    },
                    category: v.category.clone(),
                })
                .collect();
            let description = Description {
                convention: Convention::Zigbee2mqtt,
                key: device.ieee_address.clone(),
                topic,
                manufacturer: device.vendor.clone(),
                model: device.model.clone(),
                description: device.description.clone(),
                name: None,
                values,
                availability: Vec::new(),
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
        let spec = d.values.iter().find(|v| v.metric == metric);
        let Some((spec, command)) = spec.and_then(|v| Some((v, v.command.as_ref()?))) else {
            let takes: Vec<&str> = d.values.iter().filter(|v| v.command.is_some()).map(|v| v.metric.as_str()).collect();
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
        let payload = match &command.form {
            Form::Json { key } => serde_json::json!({ key: said }).to_string(),
            Form::Text => match said {
                Json::String(text) => text,
                other => other.to_string(),
            },
            Form::ShellySwitch { id } => {
                let params = serde_json::json!({ "id": id, "on": said });
                serde_json::json!({ "id": 1, "src": "hearth", "method": "Switch.Set", "params": params }).to_string()
            }
        };
        Some(Ok(Command {
            bridge: behind.bridge.clone(),
            topic: command.topic.clone(),
            payload: payload.into_bytes(),
            retain: command.retain,
        }))
    }
}

/// Who a device says it is (Tasmota's discovery).
struct About {
    name: String,
    manufacturer: Option<String>,
    model: Option<String>,
}

/// Tasmota's own discovery config (`tasmota/discovery/<mac>/config`): its topic (`t`), the
/// name it was given (`dn`, or its first friendly name), its model (`md`), and its relays
/// (`rl`, 1 for a relay), each switched on `cmnd/<topic>/POWERn`.
fn tasmota_discovery(payload: &[u8]) -> Result<(String, Vec<ValueSpec>, About), String> {
    let config: Json = serde_json::from_slice(payload).map_err(|e| format!("config is not JSON: {e}"))?;
    let text = |key: &str| config.get(key).and_then(Json::as_str).filter(|s| s.len() <= 64).map(str::to_owned);
    let topic = text("t").filter(|t| !t.is_empty() && !t.contains(['+', '#', '/']) && !t.chars().any(char::is_control));
    let topic = topic.ok_or("config has no usable topic (\"t\")")?;
    let first_friendly = config.get("fn").and_then(|f| f.get(0)).and_then(Json::as_str).map(str::to_owned);
    let name = text("dn").or(first_friendly).filter(|n| devices::valid_name(n)).unwrap_or_else(|| topic.clone());
    let relays: Vec<bool> = config
        .get("rl")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .take(8)
        .map(|r| r.as_u64() == Some(1))
        .collect();
    let count = relays.iter().filter(|r| **r).count();
    let values = relays
        .iter()
        .enumerate()
        .filter(|(_, relay)| **relay)
        .map(|(n, _)| {
            let metric = if count == 1 && n == 0 { "POWER".to_owned() } else { format!("POWER{}", n + 1) };
            let mut value = ValueSpec {
                metric,
                unit: None,
                on_off: None,
                command: None,
                state: None,
                class: Some("outlet".into()),
                entity: None,
                options: Vec::new(),
                category: None,
            };
            native_control(Convention::Tasmota, &topic, "", &mut value);
            value
        })
        .collect();
    Ok((topic, values, About { name, manufacturer: Some("Tasmota".into()), model: text("md") }))
}

/// The discovery prefix of a Home Assistant config topic
/// (`<prefix>/<component>/[<node_id>/]<object_id>/config`), if `topic` is one.
fn discovery_prefix(topic: &str) -> Option<&str> {
    let levels = topic.split('/').count();
    (topic.ends_with("/config") && (4..=5).contains(&levels)).then(|| topic.split('/').next()).flatten()
}

/// A state as a reading's value: on/off words as true/false, numbers in text as numbers;
/// Home Assistant's "no value" words give none.
fn state_value(value: Value, spec: &ValueSpec) -> Option<Value> {
    let text = match &value {
        Value::Text(t) => t.clone(),
        other => as_json(other).to_string(),
    };
    if let Some((on, off)) = &spec.on_off {
        let word = |w: &Json| match w {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text == word(on) {
            return Some(Value::Bool(true));
        }
        if text == word(off) {
            return Some(Value::Bool(false));
        }
    }
    match value {
        Value::Text(t) if t.is_empty() || matches!(t.as_str(), "None" | "unknown" | "unavailable") => None,
        Value::Text(t) => match t.parse::<f64>() {
            Ok(n) if n.is_finite() => Some(Value::Number(n)),
            _ => (t.chars().count() <= crate::reading::MAX_TEXT_LEN).then_some(Value::Text(t)),
        },
        other => Some(other),
    }
}

/// The values of one Home Assistant entity: its main state (named by its object id) and,
/// for lights, climates and covers, the parts they have (`<object>_brightness`,
/// `<object>_target`, `<object>_mode`, `<object>_position`).
fn ha_values(e: &ha::Entity) -> Vec<ValueSpec> {
    use ha::Component;
    let object = e.id.rsplit(' ').next().unwrap_or(&e.id).to_owned();
    let tag = format!("{}:{}", e.component.name(), e.id);
    let state = |s: Option<&ha::State>| {
        s.map(|s| StateSpec { topic: s.topic.clone(), template: s.template.as_ref().map(|t| t.text().to_owned()) })
    };
    let text_command =
        |topic: Option<&String>| topic.map(|t| CommandSpec { topic: t.clone(), form: Form::Text, retain: false });
    let words = |on: &str, off: &str| Some((Json::String(on.to_owned()), Json::String(off.to_owned())));
    let value = |metric: String, unit: Option<String>| ValueSpec {
        metric,
        unit: unit.filter(|u| valid_unit(u)),
        on_off: None,
        command: None,
        state: None,
        class: e.device_class.clone(),
        entity: Some(tag.clone()),
        options: Vec::new(),
        category: e.entity_category.clone(),
    };
    let mut values = Vec::new();
    match e.component {
        Component::Sensor | Component::Number | Component::Select => values.push(ValueSpec {
            state: state(e.state.as_ref()),
            command: text_command(e.command_topic.as_ref()),
            options: e.options.iter().take(32).cloned().collect(),
            ..value(object.clone(), e.unit.clone())
        }),
        Component::BinarySensor | Component::Switch => values.push(ValueSpec {
            state: state(e.state.as_ref()),
            on_off: words(&e.payload_on, &e.payload_off),
            command: text_command(e.command_topic.as_ref()),
            ..value(object.clone(), None)
        }),
        Component::Button => values.push(ValueSpec {
            on_off: e.payload_press.as_deref().and_then(|p| words(p, p)),
            command: text_command(e.command_topic.as_ref()),
            ..value(object.clone(), None)
        }),
        Component::Light => {
            let light = e.light.as_ref();
            match light.is_some_and(|l| l.json) {
                true => {
                    let topic = e.state.as_ref().map(|s| s.topic.clone());
                    let json_state = |key: &str| {
                        topic
                            .clone()
                            .map(|topic| StateSpec { topic, template: Some(format!("{{{{ value_json.{key} }}}}")) })
                    };
                    let json_command = |key: &str| {
                        e.command_topic.clone().map(|topic| CommandSpec {
                            topic,
                            form: Form::Json { key: key.into() },
                            retain: false,
                        })
                    };
                    values.push(ValueSpec {
                        state: json_state("state"),
                        on_off: words("ON", "OFF"),
                        command: json_command("state"),
                        ..value(object.clone(), None)
                    });
                    if light.is_some_and(|l| l.brightness) {
                        values.push(ValueSpec {
                            state: json_state("brightness"),
                            command: json_command("brightness"),
                            ..value(format!("{object}_brightness"), None)
                        });
                    }
                }
                false => {
                    values.push(ValueSpec {
                        state: state(e.state.as_ref()),
                        on_off: words(&e.payload_on, &e.payload_off),
                        command: text_command(e.command_topic.as_ref()),
                        ..value(object.clone(), None)
                    });
                    if let Some(l) =
                        light.filter(|l| l.brightness_state.is_some() || l.brightness_command_topic.is_some())
                    {
                        values.push(ValueSpec {
                            state: state(l.brightness_state.as_ref()),
                            command: text_command(l.brightness_command_topic.as_ref()),
                            ..value(format!("{object}_brightness"), None)
                        });
                    }
                }
            }
        }
        Component::Climate => {
            let c = e.climate.as_ref();
            values.push(ValueSpec {
                state: state(e.state.as_ref()),
                ..value(format!("{object}_current"), e.unit.clone())
            });
            if let Some(c) = c {
                values.push(ValueSpec {
                    state: state(c.target.as_ref()),
                    command: text_command(c.target_command_topic.as_ref()),
                    ..value(format!("{object}_target"), e.unit.clone())
                });
                values.push(ValueSpec {
                    state: state(c.mode.as_ref()),
                    command: text_command(c.mode_command_topic.as_ref()),
                    options: c.modes.iter().take(32).cloned().collect(),
                    ..value(format!("{object}_mode"), None)
                });
            }
        }
        Component::Lock | Component::Text => values.push(ValueSpec {
            state: state(e.state.as_ref()),
            command: text_command(e.command_topic.as_ref()),
            options: e.options.iter().take(32).cloned().collect(),
            ..value(object.clone(), None)
        }),
        // An event's state is JSON with its type, unless a template says otherwise.
        Component::Event => values.push(ValueSpec {
            state: e.state.as_ref().map(|s| StateSpec {
                topic: s.topic.clone(),
                template: Some(s.template.as_ref().map_or("{{ value_json.event_type }}", |t| t.text()).to_owned()),
            }),
            options: e.options.iter().take(32).cloned().collect(),
            ..value(object.clone(), None)
        }),
        Component::Fan => {
            values.push(ValueSpec {
                state: state(e.state.as_ref()),
                on_off: words(&e.payload_on, &e.payload_off),
                command: text_command(e.command_topic.as_ref()),
                ..value(object.clone(), None)
            });
            if let Some(f) = &e.fan {
                if f.percentage.is_some() || f.percentage_command_topic.is_some() {
                    values.push(ValueSpec {
                        state: state(f.percentage.as_ref()),
                        command: text_command(f.percentage_command_topic.as_ref()),
                        ..value(format!("{object}_percentage"), Some("%".into()))
                    });
                }
                if f.preset.is_some() || f.preset_command_topic.is_some() {
                    values.push(ValueSpec {
                        state: state(f.preset.as_ref()),
                        command: text_command(f.preset_command_topic.as_ref()),
                        options: f.presets.iter().take(32).cloned().collect(),
                        ..value(format!("{object}_preset"), None)
                    });
                }
            }
        }
        // A valve that reports its position takes a position; one that does not, the
        // words to open, close (and stop) it.
        Component::Valve if e.reports_position => values.push(ValueSpec {
            state: state(e.state.as_ref()),
            command: text_command(e.command_topic.as_ref()),
            ..value(object.clone(), Some("%".into()))
        }),
        Component::Valve => {
            let c = e.cover.as_ref();
            values.push(ValueSpec {
                state: state(e.state.as_ref()),
                command: text_command(e.command_topic.as_ref()),
                options: c
                    .map(|c| [&c.payload_open, &c.payload_close, &c.payload_stop])
                    .into_iter()
                    .flatten()
                    .filter(|w| !w.is_empty())
                    .cloned()
                    .collect(),
                ..value(object.clone(), None)
            });
        }
        Component::Cover => {
            let c = e.cover.as_ref();
            values.push(ValueSpec {
                state: state(e.state.as_ref()),
                on_off: c.and_then(|c| words(&c.payload_open, &c.payload_close)),
                command: text_command(e.command_topic.as_ref()),
                ..value(object.clone(), None)
            });
            if let Some(c) = c.filter(|c| c.position.is_some() || c.set_position_topic.is_some()) {
                values.push(ValueSpec {
                    state: state(c.position.as_ref()),
                    command: text_command(c.set_position_topic.as_ref()),
                    ..value(format!("{object}_position"), Some("%".into()))
                });
            }
        }
    }
    values.retain(|v| valid_metric(&v.metric) && (v.state.is_some() || v.command.is_some()));
    // A press is an event, not a state: retained, it would press again at every wake. A
    // lock is not retained either: its OPEN would unlatch the door again at every wake.
    if e.retain && !matches!(e.component, Component::Button | Component::Lock) {
        for command in values.iter_mut().filter_map(|v| v.command.as_mut()) {
            command.retain = true;
        }
    }
    values
}

/// How a native device's value is set, where its convention says: Tasmota's relays
/// (`POWER`, `POWER2`...) on `cmnd/<topic>/POWERn`, Shelly's switches by RPC on `<id>/rpc`,
/// ESPHome's switches and lights on `<node>/<domain>/<object>/command`.
fn native_control(convention: Convention, device: &str, topic: &str, value: &mut ValueSpec) {
    let on_off = |on: &str, off: &str| Some((Json::String(on.into()), Json::String(off.into())));
    match convention {
        Convention::Tasmota if value.metric.starts_with("POWER") => {
            value.on_off = on_off("ON", "OFF");
            let topic = format!("cmnd/{device}/{}", value.metric);
            value.command = Some(CommandSpec { topic, form: Form::Text, retain: false });
        }
        Convention::Shelly => {
            let switch = value.metric.strip_prefix("switch_").and_then(|rest| rest.strip_suffix(".output"));
            if let Some(id) = switch.and_then(|n| n.parse().ok()) {
                value.on_off = Some((Json::Bool(true), Json::Bool(false)));
                let topic = format!("{device}/rpc");
                value.command = Some(CommandSpec { topic, form: Form::ShellySwitch { id }, retain: false });
            }
        }
        Convention::Esphome => {
            if let [node, domain @ ("switch" | "light" | "fan"), object, "state"] =
                topic.split('/').collect::<Vec<_>>().as_slice()
            {
                value.on_off = on_off("ON", "OFF");
                let topic = format!("{node}/{domain}/{object}/command");
                value.command = Some(CommandSpec { topic, form: Form::Text, retain: false });
            }
        }
        _ => {}
    }
}

/// Every few seconds, takes offline the devices behind bridges that fell silent, and
/// records it, until `shutdown`.
pub async fn sweep_periodically(
    bridges: Bridges,
    ingest: crate::ingest::pipeline::Ingest,
    clock: crate::clock::Clock,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let readings = bridges.sweep_silent(clock.now_ms(), OFFLINE_AFTER_MS);
        if !readings.is_empty() && ingest.submit(readings).await.is_err() {
            break;
        }
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
        // Whole numbers as integers: devices that take a brightness of 128 may refuse 128.0.
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Json::from(*n as i64),
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

    fn values_of(component: &str, config: &str) -> Vec<ValueSpec> {
        let topic = format!("homeassistant/{component}/node/thing/config");
        match ha::parse("homeassistant", &topic, config.as_bytes()) {
            Ok(ha::Announcement::Entity(entity)) => ha_values(&entity),
            other => panic!("{component}: {other:?}"),
        }
    }

    /// Locks, fans, valves, texts and events: what each reports and takes.
    #[test]
    fn locks_fans_valves_texts_and_events_report_and_take_what_their_configs_say() {
        let lock = values_of("lock", r#"{"stat_t":"n/lock","cmd_t":"n/lock/set","pl_open":"OPEN","ret":true}"#);
        assert!(lock[0].command.as_ref().is_some_and(|c| !c.retain), "a lock's OPEN must never be retained");
        assert_eq!(
            (lock[0].metric.as_str(), lock[0].options.as_slice()),
            ("thing", &["LOCK", "UNLOCK", "OPEN"].map(String::from)[..])
        );
        assert!(lock[0].command.is_some() && lock[0].on_off.is_none());

        let fan = values_of(
            "fan",
            r#"{"stat_t":"n/fan","cmd_t":"n/fan/set","pct_cmd_t":"n/fan/pct","pct_stat_t":"n/fan/pct/state",
                "pr_mode_cmd_t":"n/fan/preset","pr_modes":["eco","boost"]}"#,
        );
        let metrics: Vec<&str> = fan.iter().map(|v| v.metric.as_str()).collect();
        assert_eq!(metrics, ["thing", "thing_percentage", "thing_preset"]);
        assert!(fan[0].on_off.is_some());
        assert_eq!(fan[1].unit.as_deref(), Some("%"));
        assert_eq!(fan[2].options, ["eco", "boost"]);

        let valve = values_of("valve", r#"{"stat_t":"n/valve","cmd_t":"n/valve/set"}"#);
        assert_eq!(valve[0].options, ["OPEN", "CLOSE"], "a valve stops only if its config says how");
        let positioned = values_of("valve", r#"{"stat_t":"n/valve","cmd_t":"n/valve/set","pos":true}"#);
        assert_eq!((positioned[0].unit.as_deref(), positioned[0].options.len()), (Some("%"), 0));

        let text = values_of("text", r#"{"stat_t":"n/text","cmd_t":"n/text/set"}"#);
        assert!(text[0].command.is_some());

        let event = values_of("event", r#"{"stat_t":"n/button","evt_typ":["press","hold"]}"#);
        assert_eq!(event[0].options, ["press", "hold"]);
        assert_eq!(event[0].state.as_ref().and_then(|s| s.template.as_deref()), Some("{{ value_json.event_type }}"));
        assert!(event[0].command.is_none());
    }
}
