//! What each device said of itself, and the indexes that find a message's device: by its
//! key in each convention, by its own topic, and by the topics its values and availability
//! are read from. Descriptions are shared (`Arc`), so that a message is read without
//! holding the catalog's lock.

use std::collections::HashMap;
use std::sync::Arc;

use crate::conventions::{Convention, Description, Identity, ecosystem};

/// A reader of one topic: a device's value, or one of its availability entries (by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    Value { device: String, at: usize },
    Availability { device: String, at: usize },
}

type Key = (String, Convention, String);

#[derive(Default)]
pub struct Catalog {
    described: HashMap<String, Arc<Description>>,
    /// (connection, convention, key) -> device id.
    by_key: HashMap<Key, String>,
    /// (connection, a device's own topic) -> device id.
    by_topic: HashMap<(String, String), String>,
    /// (connection, topic) -> who reads it.
    listeners: HashMap<(String, String), Vec<Listener>>,
}

impl Catalog {
    /// `device`, of `connection`, is described as `description` from now on.
    pub fn insert(&mut self, connection: &str, device: &str, description: Description) {
        self.forget(connection, device);
        for (convention, key) in description.keys() {
            self.by_key.insert((connection.to_owned(), convention, key.to_owned()), device.to_owned());
        }
        if let Some(topic) = ecosystem(description.convention).device_topic(&description) {
            self.by_topic.insert((connection.to_owned(), topic.to_owned()), device.to_owned());
        }
        for (at, value) in description.values.iter().enumerate() {
            if let Some(state) = &value.state {
                let listeners = self.listeners.entry((connection.to_owned(), state.topic.clone())).or_default();
                listeners.push(Listener::Value { device: device.to_owned(), at });
            }
        }
        for (at, availability) in description.availability.iter().enumerate() {
            let listeners = self.listeners.entry((connection.to_owned(), availability.topic.clone())).or_default();
            listeners.push(Listener::Availability { device: device.to_owned(), at });
        }
        self.described.insert(device.to_owned(), Arc::new(description));
    }

    /// Forgets what `device` said, and every index to it.
    pub fn forget(&mut self, connection: &str, device: &str) {
        let Some(old) = self.described.remove(device) else { return };
        for (convention, key) in old.keys() {
            let key = (connection.to_owned(), convention, key.to_owned());
            if self.by_key.get(&key).is_some_and(|d| d == device) {
                self.by_key.remove(&key);
            }
        }
        if let Some(topic) = ecosystem(old.convention).device_topic(&old) {
            let key = (connection.to_owned(), topic.to_owned());
            if self.by_topic.get(&key).is_some_and(|d| d == device) {
                self.by_topic.remove(&key);
            }
        }
        let topics: std::collections::HashSet<&str> = old.listened().collect();
        for topic in topics {
            let key = (connection.to_owned(), topic.to_owned());
            if let Some(listeners) = self.listeners.get_mut(&key) {
                listeners.retain(|l| match l {
                    Listener::Value { device: d, .. } | Listener::Availability { device: d, .. } => d != device,
                });
                if listeners.is_empty() {
                    self.listeners.remove(&key);
                }
            }
        }
    }

    pub fn get(&self, device: &str) -> Option<Arc<Description>> {
        self.described.get(device).cloned()
    }

    /// The device of `connection` that `identity` names.
    pub fn by_key(&self, connection: &str, identity: &Identity) -> Option<&str> {
        self.by_key.get(&(connection.to_owned(), identity.convention, identity.key.clone())).map(String::as_str)
    }

    /// The device of `connection` whose own topic `topic` is or is under (up to two levels
    /// below it: `.../availability`, `.../set/<key>`), and what follows its topic.
    pub fn by_own_topic<'t>(&self, connection: &str, topic: &'t str) -> Option<(&str, &'t str)> {
        let find = |t: &str| self.by_topic.get(&(connection.to_owned(), t.to_owned())).map(String::as_str);
        if let Some(device) = find(topic) {
            return Some((device, ""));
        }
        let (parent, _) = topic.rsplit_once('/')?;
        if let Some(device) = find(parent) {
            return Some((device, &topic[parent.len() + 1..]));
        }
        let (grandparent, _) = parent.rsplit_once('/')?;
        find(grandparent).map(|device| (device, &topic[grandparent.len() + 1..]))
    }

    /// Who reads `topic` on `connection`.
    pub fn listeners(&self, connection: &str, topic: &str) -> &[Listener] {
        self.listeners.get(&(connection.to_owned(), topic.to_owned())).map_or(&[], Vec::as_slice)
    }

    /// The devices described, with their descriptions, among `devices`.
    pub fn of<'a>(&'a self, devices: &'a [String]) -> impl Iterator<Item = (&'a str, &'a Arc<Description>)> {
        devices.iter().filter_map(|d| self.described.get(d).map(|desc| (d.as_str(), desc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conventions::{AvailabilitySpec, StateSpec, ValueSpec};

    fn described() -> Description {
        let mut description = Description::new(Convention::Zigbee2mqtt, "0x1", "z/plug");
        let mut power = ValueSpec::new("power");
        power.state = Some(StateSpec { topic: "z/plug/power".into(), template: None });
        description.values = vec![ValueSpec::new("state"), power];
        description.availability = vec![AvailabilitySpec::words("z/bridge/state", "online", "offline")];
        description.aliases = vec![(Convention::HomeAssistant, "zigbee2mqtt_0x1".into())];
        description
    }

    #[test]
    fn a_device_is_found_by_its_keys_its_topics_and_its_listeners_and_forgotten_from_all() {
        let mut catalog = Catalog::default();
        catalog.insert("bridge", "d1", described());
        assert_eq!(catalog.by_key("bridge", &Identity::new(Convention::Zigbee2mqtt, "0x1")), Some("d1"));
        assert_eq!(catalog.by_key("bridge", &Identity::new(Convention::HomeAssistant, "zigbee2mqtt_0x1")), Some("d1"));
        assert_eq!(catalog.by_key("other", &Identity::new(Convention::Zigbee2mqtt, "0x1")), None);
        assert_eq!(catalog.by_own_topic("bridge", "z/plug"), Some(("d1", "")));
        assert_eq!(catalog.by_own_topic("bridge", "z/plug/availability"), Some(("d1", "availability")));
        assert_eq!(catalog.by_own_topic("bridge", "z/plug/set/state"), Some(("d1", "set/state")));
        assert_eq!(catalog.by_own_topic("bridge", "z/plugs"), None);
        assert_eq!(catalog.listeners("bridge", "z/plug/power"), [Listener::Value { device: "d1".into(), at: 1 }]);
        assert_eq!(
            catalog.listeners("bridge", "z/bridge/state"),
            [Listener::Availability { device: "d1".into(), at: 0 }]
        );
        catalog.forget("bridge", "d1");
        assert!(catalog.get("d1").is_none());
        assert_eq!(catalog.by_key("bridge", &Identity::new(Convention::Zigbee2mqtt, "0x1")), None);
        assert_eq!(catalog.by_own_topic("bridge", "z/plug"), None);
        assert!(catalog.listeners("bridge", "z/plug/power").is_empty());
    }
}
