//! Connections and the devices that come through them. A connection is a device whose
//! manager granted it topic namespaces: a Zigbee2MQTT coordinator that speaks for a whole
//! network, or a Tasmota plug, a Shelly or an ESPHome node that speaks for itself. What it
//! publishes there is read by the conventions layer (`crate::conventions`); each device it
//! announces becomes a Hearth device: the connection itself, for the first device that does
//! not say it comes through another, or a device behind it (created from what it
//! announces, owned like any device, commanded through its connection). This module
//! applies what the conventions read (adding, updating and removing devices, recording
//! availability) and turns commands into the topics and payloads their conventions take.
//! Who may publish where is `registry`'s; what devices said of themselves, `catalog`'s;
//! rows are the store's.

mod catalog;
mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use hearth_model::devices::Discovered;

use self::catalog::{Catalog, Listener};
use self::registry::{Connection, Registry};
pub use self::registry::{MAX_NAMESPACES, check_namespaces, overlap};
use crate::budgets::{Budget, Budgets};
use crate::consent::Subject;
use crate::conventions::description::{MAX_AVAILABILITY, MAX_VALUES, about_text, as_json, word};
use crate::conventions::{
    Announcement, Convention, Description, Gone, Heard, Identity, Message, Part, Sample, ValueSpec, ecosystem,
};
use crate::devices::{self, DeviceError};
use crate::reading::{Reading, Value};
use crate::store::{DeviceRecord, Store, StoreError};

/// Most devices behind one connection (a large Zigbee network has a few hundred).
pub const MAX_BEHIND: usize = 512;
/// Largest message a connection may send: its device list (a few hundred devices with
/// their descriptions). Other devices keep the ordinary limit.
pub const MAX_BRIDGE_MESSAGE: usize = crate::conventions::zigbee2mqtt::MAX_LIST;
/// Largest description of one device, as stored (a Zigbee device with many features takes
/// a few kilobytes).
pub const MAX_DESCRIBED: usize = 64 * 1024;
/// Largest message a connection may send on any other topic (the largest any convention
/// reads: a state, a device-based discovery config).
pub const MAX_MESSAGE: usize = crate::conventions::MAX_JSON;

/// The metric availability is recorded as (true: online), so that the dashboard shows it,
/// charts keep its history and rules trigger on its change.
pub const ONLINE: &str = "online";
/// How long the hub waits before asking again a device that has not said its name.
const GREET_AGAIN_MS: i64 = 3600 * 1000;
/// Most other names one device goes by (one per convention is enough).
const MAX_ALIASES: usize = 8;

/// A device behind a bridge not heard from for this long is offline (Zigbee2MQTT's own
/// default for battery devices is 25 hours).
pub const OFFLINE_AFTER_MS: i64 = 25 * 3600 * 1000;

/// Why a connection's message was refused (shown on the connection).
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
    #[error("the bridge's tenancy has ended")]
    Ended,
}

/// Why a command could not be sent to a device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("{device:?} takes no command {metric:?} (what it takes: {takes})")]
    NotSettable { device: String, metric: String, takes: String },
    #[error("{device:?} cannot take {value} for {metric:?}")]
    BadValue { device: String, metric: String, value: String },
    #[error("{device:?} comes through a bridge that no longer has namespaces")]
    NoBridge { device: String },
}

/// A message for a device, as its connection takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The connection whose sessions get it.
    pub bridge: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// Whether it is sent retained (see [`crate::conventions::CommandSpec::retain`]).
    pub retain: bool,
}

/// What came of one message: readings to store, and what the hub asks of the devices it
/// just met (a Shelly's name).
#[derive(Debug, Default)]
pub struct Published {
    pub readings: Vec<Reading>,
    pub requests: Vec<Command>,
}

/// The connections and their devices. Cheap to clone; shared by the MQTT server, the API
/// and the automations.
#[derive(Clone)]
pub struct Bridges {
    store: Store,
    /// Where what a device's announcement left out is shown (on the device it describes).
    rejections: crate::ingest::Rejections,
    /// Removes a device its connection took back, as any removal.
    lifecycle: crate::lifecycle::Lifecycle,
    inner: Arc<RwLock<Inner>>,
    /// Held while devices are added or changed, so that two messages cannot add the same
    /// device twice or lose each other's values.
    adding: Arc<tokio::sync::Mutex<()>>,
    /// Devices the hub has asked about themselves, and when (until they answer).
    greeted: Arc<Mutex<HashMap<String, i64>>>,
    /// Each household's share of bridges and of bytes described.
    budgets: Budgets,
    /// Held while a large device list is read: one at a time, so that lists sent at once
    /// by many bridges cost one list's memory and one core.
    reading_list: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct Inner {
    registry: Registry,
    catalog: Catalog,
    /// Each described device's household and the bytes its description takes as stored
    /// (counted while the catalog holds it).
    sizes: HashMap<String, (Subject, usize)>,
}

/// A description as stored; refused past [`MAX_DESCRIBED`] (many values each with long
/// options, say), so that what one device says of itself stays small wherever it is kept.
fn described_text(description: &Description) -> Result<String, Refusal> {
    let text = serde_json::to_string(description).map_err(|_| Refusal::Store)?;
    if text.len() > MAX_DESCRIBED {
        let reason = format!("its description would be {} bytes, more than the {MAX_DESCRIBED} allowed", text.len());
        return Err(Refusal::Bad { topic: String::new(), reason });
    }
    Ok(text)
}

/// The household of a device or connection held by `tenancy` (none: the owner's).
fn household(tenancy: Option<i64>) -> Subject {
    tenancy.map_or(Subject::Owner, Subject::Tenancy)
}

/// What the first convention that reads `message` heard in it.
fn read_any(message: &Message<'_>) -> Option<Heard> {
    Convention::ALL.iter().map(|c| ecosystem(*c).read(message)).find(|h| *h != Heard::NotMine)
}

/// How an announcement's device was found.
enum Found {
    /// It is this device.
    Device(String, Arc<Description>),
    /// It is a device another convention describes better (a Zigbee2MQTT device's Home
    /// Assistant configs): nothing to add.
    Described,
    New,
}

impl Bridges {
    /// Reads every connection and every described device from the store.
    pub async fn load(
        store: Store,
        rejections: crate::ingest::Rejections,
        lifecycle: crate::lifecycle::Lifecycle,
        budgets: Budgets,
    ) -> Result<Self, StoreError> {
        let bridges = Self {
            store,
            rejections,
            lifecycle,
            inner: Arc::default(),
            adding: Arc::default(),
            greeted: Arc::default(),
            budgets,
            reading_list: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        for record in bridges.store.devices().await? {
            bridges.learn(&record);
        }
        Ok(bridges)
    }

    /// Takes in a device record as stored (a connection's namespaces, what a device said).
    fn learn(&self, record: &DeviceRecord) {
        let Ok(mut inner) = self.inner.write() else { return };
        if !record.namespaces.is_empty() {
            let connection = Connection::new(record.namespaces.clone(), record.tenancy_id);
            inner.registry.set_connection(&record.id, connection);
        }
        let Some(text) = &record.discovered else { return };
        let connection = record.bridge_id.clone().unwrap_or_else(|| record.id.clone());
        match serde_json::from_str::<Description>(text) {
            Ok(description) => {
                inner.registry.join(&record.id, &connection);
                inner.catalog.insert(&connection, &record.id, description);
                inner.sizes.insert(record.id.clone(), (household(record.tenancy_id), text.len()));
            }
            Err(error) => {
                tracing::warn!(device.id = %record.id, %error, "what a device said of itself cannot be read; it is left out until it says it again")
            }
        }
    }

    /// Whether `device` may become a bridge: its household has room for one more (a bridge
    /// already is one).
    pub fn may_bridge(&self, device: &DeviceRecord) -> Result<(), String> {
        let holder = household(device.tenancy_id);
        let Ok(inner) = self.inner.read() else { return Ok(()) };
        if inner.registry.connection(&device.id).is_some() {
            return Ok(());
        }
        let held = inner.registry.connections().filter(|(_, c)| household(c.tenancy) == holder).count();
        let limit = self.budgets.limit(Budget::Bridges);
        if held < limit {
            return Ok(());
        }
        self.budgets.reached(Budget::Bridges, holder, &format!("device {}", device.id));
        Err(format!("the household already has {held} bridges, its budget (budgets.bridges = {limit})"))
    }

    /// Whether the household of `connection` has room for `device`'s description of
    /// `bytes` (in place of the one it had).
    fn room_for(&self, connection: &str, device: &str, bytes: usize) -> Result<(), Refusal> {
        let Ok(inner) = self.inner.read() else { return Err(Refusal::Store) };
        let holder = household(inner.registry.connection(connection).and_then(|c| c.tenancy));
        let used: usize = inner
            .sizes
            .iter()
            .filter(|(d, (h, _))| *h == holder && d.as_str() != device && inner.catalog.get(d).is_some())
            .map(|(_, (_, n))| n)
            .sum();
        let limit = self.budgets.limit(Budget::DescribedBytes);
        if used + bytes <= limit {
            return Ok(());
        }
        self.budgets.reached(Budget::DescribedBytes, holder, &format!("through bridge {connection}"));
        let reason = format!(
            "the household's devices' descriptions would take {} bytes, more than its budget of {limit} \
             (budgets.described_bytes)",
            used + bytes
        );
        Err(Refusal::Bad { topic: String::new(), reason })
    }

    /// `device`, of `connection`, is now described in `bytes` as stored.
    fn described(&self, connection: &str, device: &str, bytes: usize) {
        if let Ok(mut inner) = self.inner.write() {
            let holder = household(inner.registry.connection(connection).and_then(|c| c.tenancy));
            inner.sizes.insert(device.to_owned(), (holder, bytes));
        }
    }

    /// A connection's namespaces changed (empty: it is no connection now).
    pub fn set_namespaces(&self, device: &DeviceRecord, namespaces: &[String]) {
        let Ok(mut inner) = self.inner.write() else { return };
        match namespaces.is_empty() {
            true => inner.registry.remove_connection(&device.id),
            false => {
                let connection = Connection::new(namespaces.to_vec(), device.tenancy_id);
                inner.registry.set_connection(&device.id, connection);
            }
        }
    }

    /// A device was removed: a connection takes the devices behind it along.
    pub fn removed(&self, id: &str) {
        let Ok(mut inner) = self.inner.write() else { return };
        let Inner { registry, catalog, sizes } = &mut *inner;
        registry.remove_connection(id);
        let mut gone = registry.members(id);
        gone.push(id.to_owned());
        if let Ok(mut greeted) = self.greeted.lock() {
            for device in &gone {
                greeted.remove(device);
            }
        }
        for device in gone {
            if let Some(connection) = registry.member_of(&device).map(str::to_owned) {
                catalog.forget(&connection, &device);
            }
            registry.leave(&device);
            sizes.remove(&device);
        }
    }

    /// Every namespace of every connection (what the hub subscribes to on an external
    /// broker).
    pub fn all_namespaces(&self) -> Vec<String> {
        let Ok(inner) = self.inner.read() else { return Vec::new() };
        let mut all: Vec<String> =
            inner.registry.connections().flat_map(|(_, c)| c.namespaces.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// One connection's namespaces.
    pub fn namespaces_of(&self, device: &str) -> Vec<String> {
        let inner = self.inner.read().ok();
        inner.and_then(|i| i.registry.connection(device).map(|c| c.namespaces.clone())).unwrap_or_default()
    }

    /// The connection a message on an external broker is read for (see
    /// [`Registry::connection_for`]).
    pub fn bridge_for(&self, topic: &str) -> Option<String> {
        self.inner.read().ok()?.registry.connection_for(topic).map(str::to_owned)
    }

    /// Whether `device` is a connection now.
    pub fn is_bridge(&self, device: &str) -> bool {
        self.inner.read().is_ok_and(|i| i.registry.connection(device).is_some())
    }

    /// The connection `device` is behind, if any (not itself).
    pub fn bridge_of(&self, device: &str) -> Option<String> {
        let inner = self.inner.read().ok()?;
        inner.registry.member_of(device).filter(|c| *c != device).map(str::to_owned)
    }

    /// What a device said of itself, as viewers see it.
    pub fn view(&self, device: &str) -> Option<Discovered> {
        let inner = self.inner.read().ok()?;
        Some(inner.catalog.get(device)?.view(inner.registry.online(device)))
    }

    /// Whether a command kept retained is still one to retain: its device still comes
    /// through that connection, and one of its values still takes commands on that topic
    /// retained.
    pub fn retains(&self, kept: &crate::ingest::retained::Kept) -> bool {
        let Ok(inner) = self.inner.read() else { return false };
        inner.registry.member_of(&kept.target) == Some(kept.device.as_str())
            && inner.registry.connection(&kept.device).is_some()
            && inner.catalog.get(&kept.target).is_some_and(|d| {
                d.values.iter().filter_map(|v| v.command.as_ref()).any(|c| c.retain && c.topic == kept.topic)
            })
    }

    /// Reads what a connection published: readings of the devices it speaks for, the
    /// devices it announces added, changed or taken away. Nothing outside its namespaces is
    /// read.
    pub async fn publish(&self, connection: &str, topic: &str, payload: &[u8], now: i64) -> Result<Published, Refusal> {
        // A former tenant's bridge (on an external broker, where the hub cannot refuse its
        // login) adds, changes and removes nothing.
        if !self.store.ownership().rule.admits(connection, now) {
            return Err(Refusal::Ended);
        }
        let granted = self.inner.read().ok().and_then(|i| i.registry.connection(connection).cloned());
        let Some(granted) = granted.filter(|c| c.covers(topic)) else {
            return Err(Refusal::Outside(topic.to_owned()));
        };
        // A bridge's own list is read as its list, whatever else claims the topic. Only a
        // list may be large; every other message of every convention is at most
        // `MAX_MESSAGE`, so that the work one message makes stays small.
        let list = topic.ends_with("/bridge/devices");
        if !list && payload.len() > MAX_MESSAGE {
            let reason = format!("{} bytes, more than the {MAX_MESSAGE} a message may be", payload.len());
            return Err(Refusal::Bad { topic: topic.to_owned(), reason });
        }
        let message = Message::new(topic, payload);
        let mut out = Published::default();
        // Values and availability read from topics of their own (Home Assistant discovery's).
        if let Some(readings) = self.listened(connection, &message, now).filter(|_| !list) {
            out.readings = readings;
        } else if let Some((device, description, rest)) = self.own_topic(connection, topic).filter(|_| !list) {
            let heard = ecosystem(description.convention).read_own(&description, &rest, &message);
            self.apply_own(connection, &device, heard, &message, now, &mut out)?;
        } else {
            let heard = match payload.len() > MAX_MESSAGE {
                // A large list is read away from the runtime's workers, which serve everyone
                // else meanwhile.
                true => {
                    let _reading = self.reading_list.acquire().await.map_err(|_| Refusal::Store)?;
                    let (topic, payload) = (topic.to_owned(), payload.to_vec());
                    let read = tokio::task::spawn_blocking(move || read_any(&Message::new(&topic, &payload)));
                    read.await.map_err(|_| Refusal::Store)?
                }
                false => read_any(&message),
            };
            let heard = heard.ok_or_else(|| Refusal::Unknown(topic.to_owned()))?;
            self.apply(connection, &granted, heard, &message, now, &mut out).await?;
        }
        out.readings.extend(self.availability_changes());
        Ok(out)
    }

    /// Readings of the values whose own state topic this is, and what it says of their
    /// devices' availability; `None` if nothing listens there.
    fn listened(&self, connection: &str, message: &Message<'_>, now: i64) -> Option<Vec<Reading>> {
        let found: Vec<(Listener, Arc<Description>)> = {
            let inner = self.inner.read().ok()?;
            let listeners = inner.catalog.listeners(connection, message.topic);
            listeners
                .iter()
                .filter_map(|l| {
                    let (Listener::Value { device, .. } | Listener::Availability { device, .. }) = l;
                    Some((l.clone(), inner.catalog.get(device)?))
                })
                .collect()
        };
        if found.is_empty() {
            return None;
        }
        let (mut readings, mut said) = (Vec::new(), Vec::new());
        for (listener, description) in &found {
            match listener {
                Listener::Value { device, at } => {
                    let Some(spec) = description.values.get(*at) else { continue };
                    if let Some(value) = spec.read_state(message) {
                        readings.push(Reading {
                            device: device.clone(),
                            metric: spec.metric.clone(),
                            ts: now,
                            value,
                            unit: spec.unit.clone(),
                        });
                    }
                }
                Listener::Availability { device, at } => {
                    if let Some(online) = description.availability.get(*at).and_then(|a| a.read(message)) {
                        said.push((device.clone(), online));
                    }
                }
            }
        }
        if let Ok(mut inner) = self.inner.write() {
            for reading in &readings {
                inner.registry.set_online(&reading.device, true, now);
            }
            for (device, online) in said {
                inner.registry.set_online(&device, online, now);
            }
        }
        Some(readings)
    }

    /// The device whose own topic `topic` is or is under, its description, and what
    /// follows its topic.
    fn own_topic(&self, connection: &str, topic: &str) -> Option<(String, Arc<Description>, String)> {
        let inner = self.inner.read().ok()?;
        let (device, rest) = inner.catalog.by_own_topic(connection, topic)?;
        Some((device.to_owned(), inner.catalog.get(device)?, rest.to_owned()))
    }

    /// Applies what was read on a device's own topic.
    fn apply_own(
        &self,
        connection: &str,
        device: &str,
        heard: Heard,
        message: &Message<'_>,
        now: i64,
        out: &mut Published,
    ) -> Result<(), Refusal> {
        let bad = |reason: String| Refusal::Bad { topic: message.topic.to_owned(), reason };
        match heard {
            Heard::Values { samples, left_out } => {
                if !left_out.is_empty() {
                    let reason = format!("left out of its state {}: {}", message.topic, left_out.join(", "));
                    self.rejections.record(device, "mqtt", &reason, now);
                }
                out.readings.extend(samples.into_iter().map(|s| reading(device, s, now)));
                self.set_online(device, true, now);
                Ok(())
            }
            Heard::Online { online, .. } => {
                self.set_online(device, online, now);
                Ok(())
            }
            Heard::Refused(reason) => Err(bad(reason)),
            Heard::NotMine => Err(Refusal::Unknown(message.topic.to_owned())),
            // A device's own topic carries its state, not announcements.
            _ => {
                tracing::debug!(connection, device, "an announcement on a device's own topic is not read");
                Ok(())
            }
        }
    }

    /// Applies what a convention read from a message on `connection`.
    async fn apply(
        &self,
        connection: &str,
        granted: &Connection,
        heard: Heard,
        message: &Message<'_>,
        now: i64,
        out: &mut Published,
    ) -> Result<(), Refusal> {
        let bad = |reason: String| Refusal::Bad { topic: message.topic.to_owned(), reason };
        match heard {
            Heard::NotMine | Heard::Nothing | Heard::Values { .. } => Ok(()),
            Heard::Refused(reason) => Err(bad(reason)),
            Heard::Announced { devices, refused, gone } => {
                for gone in gone {
                    self.take_back(connection, &gone, now).await?;
                }
                let mut reasons = refused;
                for device in devices {
                    match self.announce(connection, granted, device, now, out).await {
                        Ok(_) => {}
                        Err(Refusal::Bad { reason, .. }) => reasons.push(reason),
                        Err(other) => return Err(other),
                    }
                }
                match reasons.is_empty() {
                    true => Ok(()),
                    false => Err(bad(reasons.join("; "))),
                }
            }
            Heard::Listed { scope, devices, keys } => {
                let mut full = 0;
                for device in devices {
                    // Its state topic must be the connection's to write, or its readings
                    // could not come.
                    if !granted.covers(&device.topic) {
                        continue;
                    }
                    match self.announce(connection, granted, device, now, out).await {
                        Ok(_) | Err(Refusal::Bad { .. }) => {}
                        Err(Refusal::Full(n)) => full += n,
                        Err(other) => return Err(other),
                    }
                }
                // A list with nothing in it (Zigbee2MQTT's always has its coordinator) is no
                // news that every device left.
                if !keys.is_empty() {
                    self.unlisted(connection, &scope, &keys.into_iter().collect(), now).await?;
                }
                match full {
                    0 => Ok(()),
                    n => Err(Refusal::Full(n)),
                }
            }
            Heard::Reported { device, samples } => {
                let announced = self.announce(connection, granted, *device, now, out).await;
                let announced = announced.map_err(|refusal| match refusal {
                    Refusal::Bad { reason, .. } => bad(reason),
                    other => other,
                })?;
                let Some(id) = announced else { return Ok(()) };
                self.set_online(&id, true, now);
                out.readings.extend(samples.into_iter().map(|s| reading(&id, s, now)));
                Ok(())
            }
            Heard::Online { device, online } => {
                let found = device.as_ref().and_then(|identity| self.find_key(connection, identity));
                match found {
                    Some(id) => self.set_online(&id, online, now),
                    // Alone it makes no device: kept for the one that will claim the topic.
                    None => {
                        if let Ok(mut inner) = self.inner.write() {
                            inner.registry.remember(connection, message.topic, message.payload);
                        }
                    }
                }
                Ok(())
            }
            Heard::Gone(gone) => {
                for gone in gone {
                    self.take_back(connection, &gone, now).await?;
                }
                Ok(())
            }
        }
    }

    fn find_key(&self, connection: &str, identity: &Identity) -> Option<String> {
        self.inner.read().ok()?.catalog.by_key(connection, identity).map(str::to_owned)
    }

    fn set_online(&self, device: &str, online: bool, now: i64) {
        if let Ok(mut inner) = self.inner.write() {
            inner.registry.set_online(device, online, now);
        }
    }

    /// Adds the device an announcement describes, or changes the one it is; returns its id
    /// (`None` when another convention describes it, or it said nothing to keep).
    async fn announce(
        &self,
        connection: &str,
        granted: &Connection,
        announcement: Announcement,
        now: i64,
        out: &mut Published,
    ) -> Result<Option<String>, Refusal> {
        // A config names its topics, which must be its connection's; a native convention's
        // come from the topics the device publishes on.
        let outside = match &announcement.part {
            Part::Entity(tag) => {
                announcement.topics().find(|t| !granted.covers(t)).map(|t| format!("{tag}: its topic {t:?}"))
            }
            _ => announcement.listened().find(|t| !granted.covers(t)).map(|t| format!("its topic {t:?}")),
        };
        if let Some(outside) = outside {
            let reason = format!("{outside} is outside the bridge's namespaces");
            return Err(Refusal::Bad { topic: String::new(), reason });
        }
        // Read and written under the lock, so that two messages of one device cannot each
        // add it, or each add a value and lose the other's.
        let _adding = self.adding.lock().await;
        let found = self.find(connection, &announcement);
        let (id, description) = match found {
            Found::Described => return Ok(None),
            Found::Device(id, before) => {
                let after = merge(&before, &announcement);
                if after == *before {
                    // Nothing new (a native device's every telemetry message): nothing to
                    // store or index again.
                    self.greet(connection, &id, &before, now, out);
                    return Ok(Some(id));
                }
                if !self.store_described(&id, connection, &before, &after, &announcement).await? {
                    // Removed meanwhile: it is not put back.
                    return Ok(None);
                }
                (id, after)
            }
            Found::New => {
                // An entity with nothing Hearth can read is no device.
                if matches!(announcement.part, Part::Entity(_)) && announcement.values.is_empty() {
                    return Ok(None);
                }
                let description = merge(
                    &Description::new(
                        announcement.identity.convention,
                        &announcement.identity.key,
                        &announcement.topic,
                    ),
                    &announcement,
                );
                let id = self.add(connection, granted, &announcement, &description, now).await?;
                (id, description)
            }
        };
        if !announcement.left_out.is_empty() {
            self.rejections.record(&id, "mqtt", &announcement.left_out.join("; "), now);
        }
        self.greet(connection, &id, &description, now, out);
        if let Ok(mut inner) = self.inner.write() {
            let Inner { registry, catalog, .. } = &mut *inner;
            // What was said of its availability before it claimed the topic.
            for spec in &description.availability {
                let said = registry.claim(connection, &spec.topic);
                if let Some(online) = said.and_then(|payload| spec.read(&Message::new(&spec.topic, &payload))) {
                    registry.set_online(&id, online, now);
                }
            }
            registry.join(&id, connection);
            catalog.insert(connection, &id, description);
        }
        Ok(Some(id))
    }

    /// Asks a device that has not said its name what its convention asks (a Shelly its
    /// configured name): when first met, and again at most once an hour until it answers
    /// (a request sent before it subscribed is lost).
    fn greet(&self, connection: &str, id: &str, description: &Description, now: i64, out: &mut Published) {
        if description.name.is_some() {
            return;
        }
        let asks = ecosystem(description.convention).greet(description);
        if asks.is_empty() {
            return;
        }
        let Ok(mut greeted) = self.greeted.lock() else { return };
        if greeted.get(id).is_some_and(|at| now - at < GREET_AGAIN_MS) {
            return;
        }
        greeted.insert(id.to_owned(), now);
        for (topic, payload) in asks {
            out.requests.push(Command { bridge: connection.to_owned(), topic, payload, retain: false });
        }
    }

    /// The device an announcement is of: by its key; by its own topic, or a topic whose
    /// values are read from, being another's (a Zigbee2MQTT device its Home Assistant
    /// configs described first); by topics under another device's roots (an ESPHome
    /// node's configs and its own topics).
    fn find(&self, connection: &str, announcement: &Announcement) -> Found {
        let Ok(inner) = self.inner.read() else { return Found::New };
        let catalog = &inner.catalog;
        let convention = announcement.identity.convention;
        // What a bridge's own list says of a device is all there is: another convention's
        // announcement of it (Zigbee2MQTT's Home Assistant configs) adds nothing.
        let found = |id: &str| match catalog.get(id) {
            Some(d) if d.convention != convention && ecosystem(d.convention).describes_wholly() => Found::Described,
            Some(d) => Found::Device(id.to_owned(), d),
            None => Found::New,
        };
        if let Some(id) = catalog.by_key(connection, &announcement.identity) {
            return found(id);
        }
        let mut own = Description::new(convention, &announcement.identity.key, &announcement.topic);
        own.values.clone_from(&announcement.values);
        // Its own topic already another convention's device's (described by its Home
        // Assistant configs before the bridge's list came): that device is this one.
        if let Some(topic) = ecosystem(convention).device_topic(&own) {
            let owner = catalog.by_own_topic(connection, topic).filter(|(_, rest)| rest.is_empty()).map(|(id, _)| id);
            let listening = catalog.listeners(connection, topic).iter().map(|l| match l {
                Listener::Value { device, .. } | Listener::Availability { device, .. } => device.as_str(),
            });
            for id in owner.into_iter().chain(listening) {
                if catalog.get(id).is_some_and(|d| d.convention != convention) {
                    return found(id);
                }
            }
        }
        // A value read from, or commanded on, another device's own topic (Zigbee2MQTT's
        // Home Assistant configs of its devices, a button's with a command topic alone).
        let states = announcement.values.iter().filter_map(|v| v.state.as_ref()).map(|s| (s.topic.as_str(), false));
        let commands = announcement.values.iter().filter_map(|v| v.command.as_ref()).map(|c| (c.topic.as_str(), true));
        for (topic, command) in states.chain(commands) {
            match catalog.by_own_topic(connection, topic) {
                Some((id, "")) if !command => return found(id),
                Some((id, rest)) if command && (rest == "set" || rest.starts_with("set/")) => return found(id),
                _ => {}
            }
        }
        // Topics under another device's roots, or its topics under this one's: the same
        // device, if exactly one is (several: none of them, rather than a guess). A device
        // said to come through another joins only a device behind the connection.
        let members = inner.registry.members(connection);
        let roots = ecosystem(convention).roots(&own);
        let under = |topic: &str, roots: &[String]| roots.iter().any(|r| topic.starts_with(r.as_str()));
        let mut candidates = catalog.of(&members).filter(|(id, described)| {
            let theirs = ecosystem(described.convention).roots(described);
            let same =
                announcement.listened().any(|t| under(t, &theirs)) || described.listened().any(|t| under(t, &roots));
            same && !(announcement.behind && *id == connection)
        });
        match (candidates.next(), candidates.next()) {
            (Some((id, _)), None) => found(id),
            _ => Found::New,
        }
    }

    /// Keeps a changed description: a device behind a connection takes the name it
    /// announces; a device that is its own connection keeps the name its manager gave it.
    /// `false` if the device is gone.
    async fn store_described(
        &self,
        id: &str,
        connection: &str,
        before: &Description,
        after: &Description,
        announcement: &Announcement,
    ) -> Result<bool, Refusal> {
        let text = described_text(after)?;
        self.room_for(connection, id, text.len())?;
        let renamed = after.name != before.name || announcement.about.name.is_some();
        let name = match (id != connection, renamed) {
            (true, true) => after.name.as_deref().and_then(shown_name),
            _ => None,
        };
        let kept = self.store.set_device_described(id, connection, Some(&text), name.as_deref()).await;
        let kept = kept.map_err(stored)?;
        if kept {
            self.described(connection, id, text.len());
        }
        Ok(kept)
    }

    /// Adds the device a connection announced: the connection itself, if it is not yet a
    /// device of its own and the announcement does not say it comes through another; else a
    /// device behind it.
    async fn add(
        &self,
        connection: &str,
        granted: &Connection,
        announcement: &Announcement,
        description: &Description,
        now: i64,
    ) -> Result<String, Refusal> {
        let text = described_text(description)?;
        let (itself, behind) = {
            let Ok(inner) = self.inner.read() else { return Err(Refusal::Store) };
            (inner.catalog.get(connection).is_some(), inner.registry.count_behind(connection))
        };
        let new = if !announcement.behind && !itself { connection } else { "" };
        self.room_for(connection, new, text.len())?;
        if !announcement.behind && !itself {
            if !self.store.set_device_described(connection, connection, Some(&text), None).await.map_err(stored)? {
                return Err(Refusal::Store);
            }
            self.described(connection, connection, text.len());
            tracing::info!(device.id = %connection, convention = %description.convention, "device described itself");
            return Ok(connection.to_owned());
        }
        if behind >= MAX_BEHIND {
            return Err(Refusal::Full(1));
        }
        let held = self.store.count_devices(granted.tenancy).await.map_err(stored)?;
        let detail = format!("through bridge {connection}");
        if let Err(reason) = self.budgets.room_for_device(household(granted.tenancy), held, &detail) {
            self.rejections.record(connection, "mqtt", &reason, now);
            return Err(Refusal::Bad { topic: String::new(), reason });
        }
        let name = first_name(description, announcement);
        let added = devices::add_bridged(&self.store, &name, connection, granted.tenancy, &text, now).await;
        let id = added.map_err(|error: DeviceError| {
            tracing::error!(%error, "could not add a device behind a bridge");
            Refusal::Store
        })?;
        self.described(connection, &id, text.len());
        tracing::info!(device.id = %id, bridge.id = %connection, convention = %description.convention, "device discovered");
        Ok(id)
    }

    /// Takes back what a connection said it no longer has: a device left with no values
    /// goes (a connection that described itself is a plain connection again).
    async fn take_back(&self, connection: &str, gone: &Gone, now: i64) -> Result<(), Refusal> {
        let _adding = self.adding.lock().await;
        let affected: Vec<(String, Arc<Description>, Vec<String>)> = {
            let Ok(inner) = self.inner.read() else { return Ok(()) };
            let members = inner.registry.members(connection);
            inner
                .catalog
                .of(&members)
                .filter_map(|(id, d)| {
                    let tags: Vec<String> = d
                        .values
                        .iter()
                        .filter_map(|v| v.entity.clone())
                        .filter(|tag| match gone {
                            Gone::Entity(gone) => tag == gone,
                            Gone::DeviceConfig(config) => of_device_config(tag, config),
                        })
                        .collect();
                    (!tags.is_empty()).then(|| (id.to_owned(), d.clone(), tags))
                })
                .collect()
        };
        for (id, before, tags) in affected {
            let mut after = (*before).clone();
            after.values.retain(|v| v.entity.as_ref().is_none_or(|tag| !tags.contains(tag)));
            if after.values.is_empty() {
                self.forget(connection, &id, now).await?;
                continue;
            }
            let text = serde_json::to_string(&after).map_err(|_| Refusal::Store)?;
            if self.store.set_device_described(&id, connection, Some(&text), None).await.map_err(stored)? {
                self.described(connection, &id, text.len());
                if let Ok(mut inner) = self.inner.write() {
                    inner.catalog.insert(connection, &id, after);
                }
            }
        }
        Ok(())
    }

    /// Devices of a connection's list (under `scope`) that it no longer lists: they left
    /// its network.
    async fn unlisted(&self, connection: &str, scope: &str, listed: &HashSet<String>, now: i64) -> Result<(), Refusal> {
        let _adding = self.adding.lock().await;
        let left: Vec<String> = {
            let Ok(inner) = self.inner.read() else { return Ok(()) };
            let members = inner.registry.members(connection);
            inner
                .catalog
                .of(&members)
                .filter(|(_, d)| {
                    d.convention == Convention::Zigbee2mqtt && d.topic.starts_with(scope) && !listed.contains(&d.key)
                })
                .map(|(id, _)| id.to_owned())
                .collect()
        };
        for id in left {
            self.forget(connection, &id, now).await?;
        }
        Ok(())
    }

    /// A device its connection took back: removed, or, if it is the connection itself, no
    /// longer described.
    async fn forget(&self, connection: &str, id: &str, now: i64) -> Result<(), Refusal> {
        if let Ok(mut greeted) = self.greeted.lock() {
            greeted.remove(id);
        }
        if id == connection {
            self.store.set_device_described(id, connection, None, None).await.map_err(stored)?;
            if let Ok(mut inner) = self.inner.write() {
                inner.catalog.forget(connection, id);
            }
            return Ok(());
        }
        // Like any removal: the registry, its commands and whatever else holds it follow.
        self.lifecycle.remove_device(id, now).await.map_err(stored)?;
        tracing::info!(device.id = %id, bridge.id = %connection, "device removed by its bridge");
        Ok(())
    }

    /// Devices that were online and have not been heard from for `after_ms`: they are
    /// offline now. Returns the `online` readings that say so.
    pub fn sweep_silent(&self, now: i64, after_ms: i64) -> Vec<Reading> {
        if let Ok(mut inner) = self.inner.write() {
            inner.registry.sweep_silent(now, after_ms);
        }
        self.availability_changes()
    }

    /// Changes of availability since last asked, as `online` readings at the hub's time.
    fn availability_changes(&self) -> Vec<Reading> {
        // Most messages change nothing: the write lock only when something did.
        if self.inner.read().is_ok_and(|i| !i.registry.has_changes()) {
            return Vec::new();
        }
        let Ok(mut inner) = self.inner.write() else { return Vec::new() };
        inner
            .registry
            .take_changes()
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

    /// A command to a described device, as its connection takes it; `None` if it takes the
    /// command on Hearth's own topics: a device that did not describe itself, or a
    /// connection's own device for what its description does not set, or once it is a
    /// connection no more.
    pub fn command(&self, device: &str, metric: &str, value: &Value) -> Option<Result<Command, CommandError>> {
        let inner = self.inner.read().ok()?;
        let connection = inner.registry.member_of(device)?.to_owned();
        let described = inner.catalog.get(device)?;
        let granted = inner.registry.connection(&connection).is_some();
        drop(inner);
        let spec = described.value(metric);
        let settable = spec.and_then(|v| Some((v, v.command.as_ref()?)));
        if connection == device && (settable.is_none() || !granted) {
            return None;
        }
        if !granted {
            return Some(Err(CommandError::NoBridge { device: device.to_owned() }));
        }
        let Some((spec, command)) = settable else {
            let takes: Vec<&str> =
                described.values.iter().filter(|v| v.command.is_some()).map(|v| v.metric.as_str()).collect();
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
                    let value = t.clone();
                    return Some(Err(CommandError::BadValue {
                        device: device.to_owned(),
                        metric: metric.to_owned(),
                        value,
                    }));
                }
            },
            (_, value) => as_json(value),
        };
        Some(Ok(Command {
            bridge: connection,
            topic: command.topic.clone(),
            payload: command.form.encode(&command.topic, said),
            retain: command.retain,
        }))
    }
}

/// A description with what an announcement says put in: who it is, and its values as its
/// part says ([`Part`]).
fn merge(before: &Description, announcement: &Announcement) -> Description {
    let mut after = before.clone();
    let identity = &announcement.identity;
    let known = after.keys().any(|(c, k)| c == identity.convention && k == identity.key);
    if !known && after.aliases.len() < MAX_ALIASES {
        after.aliases.push((identity.convention, identity.key.clone()));
    }
    announcement.about.apply(&mut after);
    match &announcement.part {
        Part::Whole => {
            // Its bridge's list describes it now, under that convention's key.
            if after.convention != identity.convention {
                after.aliases.retain(|(c, k)| (*c, k) != (identity.convention, &identity.key));
                after.aliases.push((after.convention, after.key.clone()));
                after.convention = identity.convention;
                after.key.clone_from(&identity.key);
            }
            after.values.clone_from(&announcement.values);
            after.values.truncate(MAX_VALUES);
            after.topic.clone_from(&announcement.topic);
        }
        Part::Entity(tag) => {
            after.values.retain(|v| v.entity.as_deref() != Some(tag.as_str()));
            for value in &announcement.values {
                match after.values.iter().position(|v| v.metric == value.metric) {
                    // What a native convention saw of it, now described by its config.
                    Some(at) if after.values[at].entity.is_none() => after.values[at] = value.clone(),
                    Some(_) => {}
                    None if after.values.len() < MAX_VALUES => after.values.push(value.clone()),
                    None => {}
                }
            }
        }
        Part::Seen => {
            for value in &announcement.values {
                if let Some(known) = after.values.iter_mut().find(|v| v.metric == value.metric) {
                    learn(known, value);
                } else if after.values.len() < MAX_VALUES {
                    after.values.push(value.clone());
                }
            }
        }
    }
    for spec in &announcement.availability {
        // What a device's telemetry implies of its availability does not replace what its
        // discovery said (Tasmota's own words for online and offline).
        if announcement.part == Part::Seen && after.availability.iter().any(|a| a.topic == spec.topic) {
            continue;
        }
        after.availability.retain(|a| a.topic != spec.topic);
        if after.availability.len() < MAX_AVAILABILITY {
            after.availability.push(spec.clone());
        }
    }
    after
}

/// Whether an entity's tag is a component of the device-based config `config`: tagged
/// `<component>:@<id> <key>` (keys hold no space), its own exactly, not another config's
/// whose id starts the same (`kitchen` and `kitchen x`).
fn of_device_config(tag: &str, config: &str) -> bool {
    let id = tag.split_once(':').and_then(|(_, id)| id.rsplit_once(' ')).map(|(id, _)| id);
    id.and_then(|id| id.strip_prefix('@')) == Some(config)
}

/// What a device's message showed of a value it already had: what was not said before (a
/// command, a name, a unit...) is learnt.
fn learn(known: &mut ValueSpec, value: &ValueSpec) {
    let fields = [
        (&mut known.name, &value.name),
        (&mut known.unit, &value.unit),
        (&mut known.class, &value.class),
        (&mut known.state_class, &value.state_class),
    ];
    for (kept, said) in fields {
        if kept.is_none() {
            kept.clone_from(said);
        }
    }
    if known.command.is_none() && value.command.is_some() {
        known.command.clone_from(&value.command);
        known.on_off.clone_from(&value.on_off);
    }
}

/// The name a new device behind a connection takes: the one it gave itself, else its
/// (first) entity's, else its key.
fn first_name(description: &Description, announcement: &Announcement) -> String {
    let object = match &announcement.part {
        Part::Entity(tag) => tag.split_once(':').map(|(_, id)| id.rsplit(' ').next().unwrap_or(id).to_owned()),
        _ => None,
    };
    let candidates = [
        description.name.clone(),
        announcement.values.first().and_then(|v| v.name.clone()),
        object,
        Some(announcement.identity.key.rsplit('/').next().unwrap_or_default().to_owned()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|n| shown_name(&n))
        .unwrap_or_else(|| format!("{} device", description.convention))
}

/// A name as a device may have it.
fn shown_name(name: &str) -> Option<String> {
    let name: String = about_text(name)?.chars().take(devices::MAX_NAME_LEN).collect();
    devices::valid_name(&name).then_some(name)
}

fn reading(device: &str, sample: Sample, now: i64) -> Reading {
    Reading { device: device.to_owned(), metric: sample.metric, ts: now, value: sample.value, unit: sample.unit }
}

fn stored(error: StoreError) -> Refusal {
    tracing::error!(%error, "could not store what a device said of itself");
    Refusal::Store
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conventions::{AvailabilitySpec, CommandSpec, Form, ValueSpec};

    fn announced(identity: Identity, part: Part, values: Vec<ValueSpec>) -> Announcement {
        let mut announcement = Announcement::of(identity, part);
        announcement.values = values;
        announcement
    }

    fn value(metric: &str, entity: Option<&str>) -> ValueSpec {
        let mut value = ValueSpec::new(metric);
        value.entity = entity.map(str::to_owned);
        value
    }

    /// A node's own topics showed a value; its config describes it: the config's value
    /// takes its place, the config's key becomes another name of the node; what its
    /// telemetry says of availability leaves its discovery's words alone.
    #[test]
    fn a_config_describes_what_a_node_showed_and_telemetry_keeps_discovery_s_words() {
        let node = Identity::new(Convention::Esphome, "garage");
        let before = merge(
            &Description::new(Convention::Esphome, "garage", "garage"),
            &announced(node.clone(), Part::Seen, vec![value("t", None)]),
        );
        let mut described = value("t", Some("sensor:garage t"));
        described.class = Some("temperature".into());
        let config = announced(
            Identity::new(Convention::HomeAssistant, "mac"),
            Part::Entity("sensor:garage t".into()),
            vec![described],
        );
        let after = merge(&before, &config);
        assert_eq!(after.values.len(), 1);
        assert_eq!(after.values[0].class.as_deref(), Some("temperature"));
        assert_eq!(after.aliases, [(Convention::HomeAssistant, "mac".to_owned())]);

        let plug = Identity::new(Convention::Tasmota, "plug");
        let mut discovery = announced(plug.clone(), Part::Seen, Vec::new());
        discovery.availability = vec![AvailabilitySpec::words("tele/plug/LWT", "Up", "Down")];
        let described = merge(&Description::new(Convention::Tasmota, "plug", "plug"), &discovery);
        let mut telemetry = announced(plug, Part::Seen, vec![value("POWER", None)]);
        telemetry.availability = vec![AvailabilitySpec::words("tele/plug/LWT", "Online", "Offline")];
        let after = merge(&described, &telemetry);
        assert_eq!((after.availability[0].online.as_str(), after.availability[0].offline.as_str()), ("Up", "Down"));
    }

    /// Telemetry teaches what was not said (a command), and leaves what was.
    #[test]
    fn telemetry_learns_what_was_not_said() {
        let plug = Identity::new(Convention::Tasmota, "plug");
        let mut named = value("POWER1", None);
        named.name = Some("Kettle".into());
        let before = merge(
            &Description::new(Convention::Tasmota, "plug", "plug"),
            &announced(plug.clone(), Part::Seen, vec![named]),
        );
        let mut seen = value("POWER1", None);
        seen.command = Some(CommandSpec::new("cmnd/plug/POWER1", Form::Text));
        let after = merge(&before, &announced(plug, Part::Seen, vec![seen]));
        assert_eq!(after.values[0].name.as_deref(), Some("Kettle"));
        assert!(after.values[0].command.is_some());
    }

    /// A device goes by a bounded number of other names, whatever it announces.
    #[test]
    fn other_names_are_bounded() {
        let mut description = Description::new(Convention::Esphome, "node", "node");
        for n in 0..100 {
            let identity = Identity::new(Convention::HomeAssistant, format!("id{n}"));
            description = merge(&description, &announced(identity, Part::Seen, Vec::new()));
        }
        assert_eq!(description.aliases.len(), MAX_ALIASES);
    }

    #[test]
    fn a_device_config_s_components_are_its_own() {
        assert!(of_device_config("sensor:@kitchen t", "kitchen"));
        assert!(!of_device_config("sensor:@kitchen x t", "kitchen"), "the config kitchen/x is another");
        assert!(of_device_config("sensor:@kitchen x t", "kitchen x"));
        assert!(!of_device_config("sensor:kitchen t", "kitchen"), "a single-entity config is no device config");
    }
}
