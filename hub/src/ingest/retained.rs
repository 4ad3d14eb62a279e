//! Retained commands. A device that asks for its commands retained (Home Assistant
//! discovery's `retain: true`, typically a node that sleeps, connects with a clean session
//! and subscribes when it wakes) gets, on subscribing, the last command the hub sent on each
//! of its topics. The embedded server keeps them here; on an external broker the broker
//! keeps them, and this records which the hub sent so that it can clear them there.
//! Bounded, sealed in the store (`store/mqtt.rs`), and gone with a shredded tenancy or a
//! removed device. See docs/decisions/0018-retained-commands.md.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rumqttc::mqttbytes::matches;

use crate::consent::Subject;
use crate::store::{Store, StoreError};

/// Retained commands one device's (or one bridge's) sessions may get from one subject;
/// past this, that subject's oldest for the device gives way (another's are not touched).
pub const MAX_PER_DEVICE: usize = 256;
/// Retained commands one subject (the owner, or one tenancy) may have sent; past this, its
/// oldest gives way, so that one household cannot push out another's.
pub const MAX_PER_SUBJECT: usize = 1024;
/// Retained commands in all; past this, the oldest of whoever has most gives way.
pub const MAX_RETAINED: usize = 2048;

/// A retained command.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// Its row in the store.
    seq: i64,
    /// Whose sessions get it: the device, or the bridge it is behind.
    pub device: String,
    /// The device it commands.
    pub target: String,
    /// Whose rule (or whose click) sent it.
    pub subject: Subject,
    pub topic: String,
    pub payload: Bytes,
}

/// The retained commands, oldest first. Cheap to clone.
#[derive(Clone)]
pub struct Retained {
    store: Store,
    clock: crate::clock::Clock,
    kept: Arc<Mutex<Vec<Kept>>>,
    /// One change at a time, so that the store's rows and these agree: a command being kept
    /// cannot slip in after a shred or a removal has forgotten its kind.
    changing: Arc<tokio::sync::Mutex<()>>,
}

impl Retained {
    /// The retained commands the store kept; rows that cannot be read any more (their
    /// subject shredded) or were replaced are deleted.
    pub async fn load(store: Store, clock: crate::clock::Clock) -> Result<Self, StoreError> {
        let mut kept: Vec<Kept> = Vec::new();
        for row in store.mqtt_retained().await? {
            kept.retain(|k| !(k.device == row.device && k.topic == row.topic));
            kept.push(Kept {
                seq: row.seq,
                device: row.device,
                target: row.target,
                subject: row.subject,
                topic: row.topic,
                payload: row.payload.into(),
            });
        }
        let stale: Vec<i64> =
            store.mqtt_retained_rows().await?.into_iter().filter(|seq| !kept.iter().any(|k| k.seq == *seq)).collect();
        store.unretain_mqtt(&stale).await?;
        Ok(Self { store, clock, kept: Arc::new(Mutex::new(kept)), changing: Arc::new(tokio::sync::Mutex::new(())) })
    }

    fn kept(&self) -> Result<std::sync::MutexGuard<'_, Vec<Kept>>, StoreError> {
        self.kept.lock().map_err(|_| StoreError::Corrupt("retained commands poisoned".into()))
    }

    /// Keeps `payload` as the retained command on `topic` for `device`'s sessions, in place
    /// of the one before; `target` is the device it commands (`device` itself, or one
    /// behind that bridge). Past the bounds, the oldest give way. Returns its row, or `None`
    /// if it was not kept (its device was removed, its subject shredded, meanwhile).
    pub async fn keep(
        &self,
        (device, target): (&str, &str),
        topic: &str,
        payload: Bytes,
        subject: Subject,
    ) -> Result<Option<i64>, StoreError> {
        let _one = self.changing.lock().await;
        let now = self.clock.now_ms();
        let replaces: Vec<i64> = {
            let kept = self.kept()?;
            let mut replaces: Vec<i64> =
                kept.iter().filter(|k| k.device == device && k.topic == topic).map(|k| k.seq).collect();
            if replaces.is_empty() {
                let oldest_of = |pick: &dyn Fn(&Kept) -> bool| kept.iter().find(|k| pick(k)).map(|k| k.seq);
                let ours = |k: &Kept| k.device == device && k.subject == subject;
                if kept.iter().filter(|k| ours(k)).count() >= MAX_PER_DEVICE {
                    replaces.extend(oldest_of(&ours));
                } else if kept.iter().filter(|k| k.subject == subject).count() >= MAX_PER_SUBJECT {
                    replaces.extend(oldest_of(&|k| k.subject == subject));
                } else if kept.len() >= MAX_RETAINED {
                    let mut counts: std::collections::HashMap<Subject, usize> = std::collections::HashMap::new();
                    for k in kept.iter() {
                        *counts.entry(k.subject).or_default() += 1;
                    }
                    let most = counts.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s);
                    replaces.extend(most.and_then(|most| oldest_of(&|k| k.subject == most)));
                }
            }
            replaces
        };
        let seq = self.store.retain_mqtt((device, target), subject, topic, &payload, now, &replaces).await?;
        let mut kept = self.kept()?;
        kept.retain(|k| !replaces.contains(&k.seq));
        if let Some(seq) = seq {
            kept.push(Kept {
                seq,
                device: device.to_owned(),
                target: target.to_owned(),
                subject,
                topic: topic.to_owned(),
                payload,
            });
        }
        Ok(seq)
    }

    /// Drops the retained command on `topic` for `device`'s sessions (a command on it that
    /// is not to be retained came after it). Returns whether there was one.
    pub async fn clear(&self, device: &str, topic: &str) -> Result<bool, StoreError> {
        let on = |k: &Kept| k.device == device && k.topic == topic;
        // Most commands are on topics never retained: they do not wait for the lock.
        if !self.kept()?.iter().any(on) {
            return Ok(false);
        }
        let _one = self.changing.lock().await;
        let seqs: Vec<i64> = self.kept()?.iter().filter(|k| on(k)).map(|k| k.seq).collect();
        if seqs.is_empty() {
            return Ok(false);
        }
        self.store.unretain_mqtt(&seqs).await?;
        self.kept()?.retain(|k| !seqs.contains(&k.seq));
        Ok(true)
    }

    /// Whether the command kept as row `seq` is still kept.
    pub fn holds(&self, seq: i64) -> bool {
        self.kept.lock().is_ok_and(|kept| kept.iter().any(|k| k.seq == seq))
    }

    /// What a session of `device` gets on subscribing to `filter`: (topic, payload) of each
    /// of its retained commands the filter matches and `still` says are still to be
    /// retained, oldest first.
    pub fn matching(&self, device: &str, filter: &str, still: impl Fn(&Kept) -> bool) -> Vec<(String, Bytes)> {
        let Ok(kept) = self.kept.lock() else { return Vec::new() };
        kept.iter()
            .filter(|k| k.device == device && matches(&k.topic, filter) && still(k))
            .map(|k| (k.topic.clone(), k.payload.clone()))
            .collect()
    }

    /// Forgets the retained commands `gone` picks (the store deleted them) and returns
    /// them, for an external broker to be told.
    pub async fn forget(&self, gone: impl Fn(&Kept) -> bool) -> Vec<Kept> {
        let _one = self.changing.lock().await;
        let Ok(mut kept) = self.kept.lock() else { return Vec::new() };
        let (forgotten, left): (Vec<Kept>, Vec<Kept>) = kept.drain(..).partition(|k| gone(k));
        *kept = left;
        forgotten
    }

    /// Forgets a shredded tenancy's retained commands (the store deleted them): those its
    /// rules sent, and those for its own devices (`own`).
    pub async fn forget_tenancy(&self, tenancy: i64, own: &[String]) -> Vec<Kept> {
        let subject = Subject::Tenancy(tenancy);
        self.forget(|k| k.subject == subject || own.contains(&k.device) || own.contains(&k.target)).await
    }

    /// Forgets removed devices' retained commands, and those their sessions would get.
    pub async fn forget_devices(&self, ids: &[String]) -> Vec<Kept> {
        self.forget(|k| ids.contains(&k.device) || ids.contains(&k.target)).await
    }

    /// Brings these in line with the store and with what devices ask for now: forgets the
    /// commands whose rows are gone (a removal or a shred whose event was missed), and
    /// drops those `still` says are no longer to be retained (a discovery config that no
    /// longer asks, or names another topic). Returns what was forgotten, for an external
    /// broker to be told.
    pub async fn prune(&self, still: impl Fn(&Kept) -> bool) -> Result<Vec<Kept>, StoreError> {
        let _one = self.changing.lock().await;
        let rows = self.store.mqtt_retained_rows().await?;
        let unwanted: Vec<i64> =
            self.kept()?.iter().filter(|k| rows.contains(&k.seq) && !still(k)).map(|k| k.seq).collect();
        self.store.unretain_mqtt(&unwanted).await?;
        let mut kept = self.kept()?;
        let (forgotten, left): (Vec<Kept>, Vec<Kept>) =
            kept.drain(..).partition(|k| !rows.contains(&k.seq) || unwanted.contains(&k.seq));
        *kept = left;
        Ok(forgotten)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().map(|k| k.len()).unwrap_or(0)
    }
}

/// Clears commands retained on an external broker: an empty retained message is how MQTT
/// deletes one (the broker passes it on to those subscribed, as an empty command).
pub async fn clear_on_broker(client: &rumqttc::AsyncClient, forgotten: Vec<Kept>) {
    for kept in forgotten {
        if let Err(error) = client.publish(kept.topic, rumqttc::QoS::AtLeastOnce, true, Vec::new()).await {
            tracing::warn!(%error, device.id = %kept.target, "could not clear a retained command on the broker");
        }
    }
}

/// Clears `forgotten` on the broker without waiting: into the client's queue while it has
/// room, the rest aside. (A removal may come from the client's own loop, a connection
/// taking a device back, and that loop is what empties the queue.)
pub fn clear_on_broker_now(client: &rumqttc::AsyncClient, forgotten: Vec<Kept>) {
    let mut rest = forgotten.into_iter();
    for kept in rest.by_ref() {
        let topic = kept.topic.clone();
        if client.try_publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::new()).is_err() {
            let (client, left) = (client.clone(), std::iter::once(kept).chain(rest).collect());
            tokio::spawn(async move { clear_on_broker(&client, left).await });
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    /// A store with the devices commands are kept for.
    async fn store(dir: &tempfile::TempDir, key: &Key) -> Store {
        let store = Store::open(&dir.path().join("t.db"), key.clone(), 0).await.unwrap();
        for id in ["porch", "bridge", "lamp", "fan", "kettle", "other", "x"] {
            store.create_device(id, id, "a device secret", 1).await.unwrap();
        }
        store
    }

    fn all(_: &Kept) -> bool {
        true
    }

    #[tokio::test]
    async fn a_topic_keeps_its_last_command_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate().unwrap();
        let retained = Retained::load(store(&dir, &key).await, crate::clock::Clock::system()).await.unwrap();
        let topic = "esphome/porch/switch/heater/command";
        for payload in ["ON", "OFF"] {
            retained.keep(("porch", "porch"), topic, payload.into(), Subject::Owner).await.unwrap();
        }
        retained.keep(("bridge", "lamp"), "zigbee2mqtt/lamp/set", "{}".into(), Subject::Owner).await.unwrap();
        assert_eq!(retained.matching("porch", "esphome/porch/#", all), vec![(topic.to_owned(), Bytes::from("OFF"))]);
        // Only the sessions of the device it is for.
        assert!(retained.matching("bridge", "esphome/porch/#", all).is_empty());
        assert!(retained.matching("porch", "zigbee2mqtt/#", all).is_empty());

        let reopened = Retained::load(store(&dir, &key).await, crate::clock::Clock::system()).await.unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.matching("porch", "#", all), vec![(topic.to_owned(), Bytes::from("OFF"))]);
        assert!(reopened.clear("porch", topic).await.unwrap());
        assert!(!reopened.clear("porch", topic).await.unwrap());
        let again = Retained::load(store(&dir, &key).await, crate::clock::Clock::system()).await.unwrap();
        assert!(again.matching("porch", "#", all).is_empty());
        assert_eq!(again.len(), 1);
    }

    #[tokio::test]
    async fn one_device_keeps_at_most_its_share_and_its_oldest_give_way() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate().unwrap();
        let retained = Retained::load(store(&dir, &key).await, crate::clock::Clock::system()).await.unwrap();
        retained.keep(("other", "other"), "other/set", "ON".into(), Subject::Owner).await.unwrap();
        for n in 0..MAX_PER_DEVICE + 3 {
            let topic = format!("bridge/light{n}/set");
            retained.keep(("bridge", "x"), &topic, "ON".into(), Subject::Owner).await.unwrap();
        }
        let topics: Vec<String> = retained.matching("bridge", "#", all).into_iter().map(|(t, _)| t).collect();
        assert_eq!(topics.len(), MAX_PER_DEVICE);
        assert_eq!(topics.first().map(String::as_str), Some("bridge/light3/set"));
        // Another device's are not pushed out by this one's.
        assert_eq!(retained.matching("other", "#", all).len(), 1);
        let reopened = Retained::load(store(&dir, &key).await, crate::clock::Clock::system()).await.unwrap();
        assert_eq!(reopened.len(), MAX_PER_DEVICE + 1);
    }

    /// A tenancy's commands through the owner's bridge fill only the tenancy's share of it:
    /// the owner's command to the boiler behind the same bridge stays.
    #[tokio::test]
    async fn one_household_s_commands_do_not_push_out_another_s_on_the_same_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate().unwrap();
        let store = store(&dir, &key).await;
        let owner = store.create_first_owner("olga", "x", 0).await.unwrap().unwrap();
        let tenancy = store.create_tenancy((0, None), 2, (&[7; 32], owner, 1), 0).await.unwrap().unwrap();
        let retained = Retained::load(store, crate::clock::Clock::system()).await.unwrap();
        retained.keep(("bridge", "lamp"), "bridge/boiler/set", "ON".into(), Subject::Owner).await.unwrap();
        for n in 0..MAX_PER_DEVICE + 3 {
            let topic = format!("bridge/light{n}/set");
            retained.keep(("bridge", "x"), &topic, "ON".into(), Subject::Tenancy(tenancy)).await.unwrap();
        }
        let topics: Vec<String> = retained.matching("bridge", "#", all).into_iter().map(|(t, _)| t).collect();
        assert_eq!(topics.len(), MAX_PER_DEVICE + 1);
        assert!(topics.contains(&"bridge/boiler/set".to_owned()), "the owner's command was pushed out");
    }

    /// A command for a device removed meanwhile is not kept: the check is in the writing
    /// transaction, so it cannot land after the removal. What the store no longer holds, or
    /// devices no longer ask for, is pruned.
    #[tokio::test]
    async fn nothing_is_kept_for_a_removed_device_and_pruning_follows_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate().unwrap();
        let store = store(&dir, &key).await;
        let retained = Retained::load(store.clone(), crate::clock::Clock::system()).await.unwrap();
        assert!(retained.keep(("bridge", "lamp"), "z/lamp/set", "ON".into(), Subject::Owner).await.unwrap().is_some());
        assert!(retained.keep(("bridge", "fan"), "z/fan/set", "ON".into(), Subject::Owner).await.unwrap().is_some());
        store.remove_device("lamp", 2).await.unwrap();
        // The removal's event was missed: pruning forgets what the store deleted.
        let topics = |kept: Vec<Kept>| kept.into_iter().map(|k| k.topic).collect::<Vec<_>>();
        assert_eq!(topics(retained.prune(all).await.unwrap()), ["z/lamp/set"]);
        let late = retained.keep(("bridge", "lamp"), "z/lamp/set", "OFF".into(), Subject::Owner).await.unwrap();
        assert_eq!(late, None);
        assert!(retained.matching("bridge", "#", all).iter().all(|(t, _)| t != "z/lamp/set"));
        // The fan's config no longer asks for retained commands.
        assert_eq!(topics(retained.prune(|k| k.target != "fan").await.unwrap()), ["z/fan/set"]);
        assert_eq!(retained.len(), 0);
        assert!(store.mqtt_retained_rows().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn forgetting_a_tenancy_or_a_device_picks_theirs_alone() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate().unwrap();
        let retained = Retained::load(store(&dir, &key).await, crate::clock::Clock::system()).await.unwrap();
        for (device, target, topic) in
            [("bridge", "lamp", "z/lamp/set"), ("bridge", "fan", "z/fan/set"), ("kettle", "kettle", "k/set")]
        {
            retained.keep((device, target), topic, "ON".into(), Subject::Owner).await.unwrap();
        }
        let gone = retained.forget_tenancy(7, &["kettle".to_owned()]).await;
        assert_eq!(gone.iter().map(|k| k.topic.as_str()).collect::<Vec<_>>(), ["k/set"]);
        let gone = retained.forget_devices(&["lamp".to_owned()]).await;
        assert_eq!(gone.iter().map(|k| k.topic.as_str()).collect::<Vec<_>>(), ["z/lamp/set"]);
        assert_eq!(retained.matching("bridge", "#", all).len(), 1);
        assert_eq!(retained.forget_devices(&["bridge".to_owned()]).await.len(), 1);
        assert_eq!(retained.len(), 0);
    }
}
