//! One way to end things. Removing a device, a tenancy reaching its end and a tenancy's
//! shred are each one function here, whoever starts them: the API, the CLI, the retention
//! sweep, a connection that takes a device back. Each writes the store first, then tells
//! every part of the hub that holds something of what ended in memory, in one place
//! ([`Lifecycle::follow`]): the MQTT sessions and the commands queued or kept retained for
//! them, the connections' registry, the CoAP observations, the live streams. See
//! docs/decisions/0021-one-lifecycle.md.

use std::sync::{Arc, OnceLock, Weak};

use hearth_model::people::Subject;
use tokio::sync::{Notify, broadcast};

use crate::automation::Commands;
use crate::bridges::Bridges;
use crate::devices::DeviceEvent;
use crate::ingest::coap_observe::Observers;
use crate::ingest::recording::Unrecorded;
use crate::store::{Store, StoreError};

/// What ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A device was removed (a connection takes the devices behind it along).
    Device(String),
    /// A tenancy reached its end: its own devices may no longer log in, and their open
    /// sessions end. Its data stays until it is shredded.
    Tenancy { tenancy: i64, devices: Vec<String> },
    /// A tenancy was shredded: its data, its rules, the commands its rules queued or kept
    /// retained, and its own devices are gone.
    Shredded { tenancy: i64, devices: Vec<String>, keys: Vec<i64> },
}

/// The parts of the hub that hold something of a device or a tenancy in memory.
pub struct Followers {
    /// Ends the device's MQTT and CoAP sessions (and updates an external broker's
    /// subscriptions).
    pub device_events: broadcast::Sender<DeviceEvent>,
    /// Queued and retained commands, on the embedded server or an external broker.
    pub commands: Commands,
    /// Connections, their namespaces and the devices behind them.
    pub bridges: Bridges,
    /// The hub's CoAP observations of devices.
    pub observers: Observers,
    /// Makes live streams and other long-lived answers check their caller again.
    pub access: crate::auth::AccessChanges,
    /// The latest values of what is not recorded, held in memory.
    pub unrecorded: Arc<Unrecorded>,
}

/// Cheap to clone. The followers are attached once the hub's parts are built; they hold a
/// lifecycle themselves (a connection removes devices), so it keeps them weakly and `run`
/// holds them.
#[derive(Clone)]
pub struct Lifecycle {
    store: Store,
    followers: Arc<OnceLock<Weak<Followers>>>,
    /// Woken when a tenancy's end is set, so the watcher plans for it.
    ends_changed: Arc<Notify>,
}

impl Lifecycle {
    pub fn new(store: Store) -> Self {
        Self { store, followers: Arc::default(), ends_changed: Arc::default() }
    }

    /// Attaches the followers (once; `run` keeps `followers` alive while the hub runs).
    pub fn attach(&self, followers: &Arc<Followers>) {
        let _ = self.followers.set(Arc::downgrade(followers));
    }

    /// Removes a device: its credentials are destroyed and everything of it in memory goes.
    /// `Ok(false)` if there is no such device.
    pub async fn remove_device(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        if !self.store.remove_device(id, now).await? {
            return Ok(false);
        }
        self.follow(Ended::Device(id.to_owned())).await;
        Ok(true)
    }

    /// Sets when a tenancy ends (`at`, not in the past: the caller checked). Its devices
    /// stop logging in from then, and [`Lifecycle::tenancy_ended`] is told at that moment.
    pub async fn end_tenancy(&self, id: i64, at: i64) -> Result<bool, StoreError> {
        let done = self.store.end_tenancy(id, at).await?;
        if done {
            self.ends_changed.notify_one();
            if let Some(followers) = self.followers() {
                followers.access.changed();
            }
        }
        Ok(done)
    }

    /// The hub's clock reached a tenancy's end: what of its own devices is open ends.
    pub async fn tenancy_ended(&self, tenancy: i64) {
        let devices = self.store.ownership().rule.own_devices(tenancy);
        tracing::info!(tenancy, devices = devices.len(), "tenancy ended: its own devices no longer log in");
        self.follow(Ended::Tenancy { tenancy, devices }).await;
    }

    /// Shreds a tenancy (crypto-shredding, see [`Store::shred_tenancy`]) and forgets
    /// everything of it in memory. `Ok(false)` if unknown or shredded already.
    pub async fn shred_tenancy(&self, tenancy: i64, now: i64) -> Result<bool, StoreError> {
        let devices = self.store.ownership().rule.own_devices(tenancy);
        let keys = self.store.keys_of(Subject::Tenancy(tenancy)).into_iter().collect();
        if !self.store.shred_tenancy(tenancy, now).await? {
            return Ok(false);
        }
        self.follow(Ended::Shredded { tenancy, devices, keys }).await;
        Ok(true)
    }

    /// Waits until a tenancy's end is set (see [`Lifecycle::end_tenancy`]).
    pub async fn ends_changed(&self) {
        self.ends_changed.notified().await;
    }

    fn followers(&self) -> Option<Arc<Followers>> {
        self.followers.get().and_then(Weak::upgrade)
    }

    /// Tells every follower what ended. Before they are attached (start-up) or after the
    /// hub stopped there is nothing in memory to forget.
    async fn follow(&self, ended: Ended) {
        let Some(f) = self.followers() else { return };
        match &ended {
            Ended::Device(id) => {
                f.unrecorded.forget_device(id);
                f.commands.forget_devices(std::slice::from_ref(id)).await;
                end_devices(&f, std::slice::from_ref(id), true).await;
            }
            Ended::Tenancy { tenancy, devices } => {
                // What its rules kept retained or queued is handed out no more (the store
                // keeps it until the shred); on an external broker it is cleared there.
                f.commands.forget_tenancy(*tenancy, &[]).await;
                end_devices(&f, devices, false).await;
            }
            Ended::Shredded { tenancy, devices, keys } => {
                keys.iter().for_each(|key| f.unrecorded.forget_key(*key));
                devices.iter().for_each(|device| f.unrecorded.forget_device(device));
                f.commands.forget_tenancy(*tenancy, devices).await;
                end_devices(&f, devices, true).await;
            }
        }
        f.access.changed();
    }
}

/// Ends the sessions and observations of `devices`; `removed` ones leave the registry. A
/// device behind a connection has neither (its connection's end is its end), so it is not
/// announced: a tenancy with a large Zigbee network sends one event per device that logs in.
async fn end_devices(f: &Followers, devices: &[String], removed: bool) {
    let behind: Vec<bool> = devices.iter().map(|d| f.bridges.bridge_of(d).is_some()).collect();
    for (device, behind) in devices.iter().zip(behind) {
        if removed {
            f.bridges.removed(device);
        }
        if behind {
            continue;
        }
        let event = match removed {
            true => DeviceEvent::Removed(device.clone()),
            false => DeviceEvent::TenancyEnded(device.clone()),
        };
        let _ = f.device_events.send(event);
        f.observers.reload(device).await;
    }
}
