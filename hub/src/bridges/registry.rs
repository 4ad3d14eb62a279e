//! Who may publish where for whom: each connection's namespaces and household, which
//! connection each device comes through, and whether each device is online. Membership,
//! namespaces and availability only: what devices said of themselves is the catalog's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rumqttc::mqttbytes::{matches, valid_filter};

/// Most namespaces one connection may hold, and the longest one. A Zigbee2MQTT network
/// granted its Home Assistant discovery device by device (`homeassistant/+/<ieee>/#`)
/// needs one per device behind it and a few of its own: [`super::MAX_BEHIND`] and 32
/// more (decision 0020).
pub const MAX_NAMESPACES: usize = super::MAX_BEHIND + 32;
const MAX_NAMESPACE_LEN: usize = 128;
/// Most availability payloads kept for topics no device has claimed yet, per connection
/// (so that one cannot push out another's) and in all.
const MAX_UNCLAIMED: usize = 64;
const MAX_UNCLAIMED_ALL: usize = 4096;

/// A device that publishes for itself or for others inside namespaces its manager granted.
#[derive(Debug, Clone)]
pub struct Connection {
    pub namespaces: Vec<String>,
    /// The tenancy whose it is, if a tenant's: the devices it brings are theirs too.
    pub tenancy: Option<i64>,
    /// Its namespaces by their first level, which is always a name (see
    /// [`check_namespaces`]): a topic is matched only against those that can match it,
    /// not against the hundreds a bridge granted its discovery device by device holds.
    by_first: HashMap<String, Vec<String>>,
}

impl Connection {
    pub fn new(namespaces: Vec<String>, tenancy: Option<i64>) -> Self {
        let mut by_first: HashMap<String, Vec<String>> = HashMap::new();
        for namespace in &namespaces {
            let first = namespace.split('/').next().unwrap_or_default();
            by_first.entry(first.to_owned()).or_default().push(namespace.clone());
        }
        Self { namespaces, tenancy, by_first }
    }

    /// Its namespaces that `topic` is in.
    fn matching<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a String> {
        let first = topic.split('/').next().unwrap_or_default();
        self.by_first.get(first).into_iter().flatten().filter(move |n| matches(topic, n))
    }

    /// Whether `topic` is inside its namespaces.
    pub fn covers(&self, topic: &str) -> bool {
        self.matching(topic).next().is_some()
    }
}

#[derive(Default)]
pub struct Registry {
    /// Connection id -> what it may do (shared: a message is read without the lock).
    connections: HashMap<String, Arc<Connection>>,
    /// Device id -> the connection it comes through (its own id, for a device that is its
    /// own connection), and the other way round.
    members: HashMap<String, String>,
    by_connection: HashMap<String, HashSet<String>>,
    /// Device id -> whether it was last said (or, from silence, taken) to be online.
    online: HashMap<String, bool>,
    /// Device id -> when it was last heard from.
    heard: HashMap<String, i64>,
    /// Changes of `online` not yet recorded as readings.
    changes: Vec<(String, bool, i64)>,
    /// (connection, topic) -> what was said there of availability before any device said
    /// the topic was its own (an ESPHome node's status before its configs), oldest first.
    unclaimed: Vec<((String, String), Vec<u8>)>,
}

impl Registry {
    pub fn set_connection(&mut self, id: &str, connection: Connection) {
        self.connections.insert(id.to_owned(), Arc::new(connection));
    }

    pub fn remove_connection(&mut self, id: &str) {
        self.connections.remove(id);
        self.unclaimed.retain(|((c, _), _)| c != id);
    }

    pub fn connection(&self, id: &str) -> Option<&Arc<Connection>> {
        self.connections.get(id)
    }

    pub fn connections(&self) -> impl Iterator<Item = (&String, &Arc<Connection>)> {
        self.connections.iter()
    }

    /// The connection a message on an external broker is read for: the one whose matching
    /// namespace is the most specific (the longest), the first by id if several are.
    pub fn connection_for(&self, topic: &str) -> Option<&str> {
        self.connections
            .iter()
            .filter_map(|(id, c)| {
                let longest = c.matching(topic).map(String::len).max()?;
                Some((std::cmp::Reverse(longest), id))
            })
            .min()
            .map(|(_, id)| id.as_str())
    }

    /// `device` comes through `connection` from now on.
    pub fn join(&mut self, device: &str, connection: &str) {
        if let Some(before) = self.members.insert(device.to_owned(), connection.to_owned())
            && before != connection
            && let Some(set) = self.by_connection.get_mut(&before)
        {
            set.remove(device);
        }
        self.by_connection.entry(connection.to_owned()).or_default().insert(device.to_owned());
    }

    /// Forgets `device`: its membership and its availability.
    pub fn leave(&mut self, device: &str) {
        if let Some(connection) = self.members.remove(device)
            && let Some(set) = self.by_connection.get_mut(&connection)
        {
            set.remove(device);
            if set.is_empty() {
                self.by_connection.remove(&connection);
            }
        }
        self.online.remove(device);
        self.heard.remove(device);
    }

    /// The connection `device` comes through.
    pub fn member_of(&self, device: &str) -> Option<&str> {
        self.members.get(device).map(String::as_str)
    }

    /// The devices that come through `connection`, itself included if it is one, in a
    /// stable order.
    pub fn members(&self, connection: &str) -> Vec<String> {
        let mut members: Vec<String> = self.by_connection.get(connection).into_iter().flatten().cloned().collect();
        members.sort();
        members
    }

    /// How many devices come through `connection`, besides itself.
    pub fn count_behind(&self, connection: &str) -> usize {
        let members = self.by_connection.get(connection);
        members.map_or(0, |m| m.len() - usize::from(m.contains(connection)))
    }

    pub fn online(&self, device: &str) -> Option<bool> {
        self.online.get(device).copied()
    }

    /// Notes that `device` was heard from at `now` and said (or showed, by sending values)
    /// it is online or not; a change is recorded as an `online` reading.
    pub fn set_online(&mut self, device: &str, online: bool, now: i64) {
        self.heard.insert(device.to_owned(), now);
        if self.online.insert(device.to_owned(), online) != Some(online) {
            self.changes.push((device.to_owned(), online, now));
        }
    }

    /// Devices that were online and have not been heard from for `after_ms` are offline
    /// now (taken offline by silence, not heard from).
    pub fn sweep_silent(&mut self, now: i64, after_ms: i64) {
        let silent: Vec<String> = self
            .online
            .iter()
            .filter(|(id, online)| **online && self.heard.get(*id).is_none_or(|t| *t < now - after_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in silent {
            let heard = self.heard.get(&id).copied();
            self.set_online(&id, false, now);
            if let Some(heard) = heard {
                self.heard.insert(id, heard);
            }
        }
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Changes of availability since last asked: (device, online, when).
    pub fn take_changes(&mut self) -> Vec<(String, bool, i64)> {
        std::mem::take(&mut self.changes)
    }

    /// Keeps what was said on an availability topic no device has claimed yet, for the
    /// device that will: the newest per topic, at most [`MAX_UNCLAIMED`] per connection
    /// (its oldest gives way) and [`MAX_UNCLAIMED_ALL`] in all. Availability payloads are
    /// words; a longer one says nothing worth keeping.
    pub fn remember(&mut self, connection: &str, topic: &str, payload: &[u8]) {
        if payload.len() > 256 {
            return;
        }
        let key = (connection.to_owned(), topic.to_owned());
        self.unclaimed.retain(|(k, _)| *k != key);
        let own: Vec<usize> =
            self.unclaimed.iter().enumerate().filter(|(_, ((c, _), _))| c == connection).map(|(at, _)| at).collect();
        if own.len() >= MAX_UNCLAIMED {
            self.unclaimed.remove(own[0]);
        } else if self.unclaimed.len() >= MAX_UNCLAIMED_ALL {
            // Full (64 connections or more each at their share): the one holding the most
            // gives way.
            let mut held: HashMap<&str, usize> = HashMap::new();
            for ((c, _), _) in &self.unclaimed {
                *held.entry(c.as_str()).or_default() += 1;
            }
            let most = held.into_iter().max_by_key(|(_, n)| *n).map(|(c, _)| c.to_owned());
            if let Some(at) = most.and_then(|most| self.unclaimed.iter().position(|((c, _), _)| *c == most)) {
                self.unclaimed.remove(at);
            }
        }
        self.unclaimed.push((key, payload.to_vec()));
    }

    /// What was said on `topic` before a device claimed it.
    pub fn claim(&mut self, connection: &str, topic: &str) -> Option<Vec<u8>> {
        let at = self.unclaimed.iter().position(|((c, t), _)| c == connection && t == topic)?;
        Some(self.unclaimed.remove(at).1)
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

/// Whether some topic matches both filters (`tele/a/#` and `tele/+/LWT` do; `tele/a/#` and
/// `tele/b/#` do not).
pub fn overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || x == "+" || y == "+" => {}
            (Some(_), Some(_)) => return false,
            // `a/#` also matches `a`: one ends where the other goes on with `#` only.
            (None, Some(rest)) => return rest == "#" && b.next().is_none(),
            (Some(rest), None) => return rest == "#" && a.next().is_none(),
        }
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

    /// A Zigbee2MQTT network of 200 devices granted its discovery device by device.
    #[test]
    fn a_network_of_two_hundred_devices_granted_one_by_one_fits() {
        let mut namespaces = vec!["zigbee2mqtt/#".to_owned()];
        namespaces.extend((0..200).map(|n| format!("homeassistant/+/0x00158d00{n:08x}/#")));
        namespaces.push("homeassistant/+/1221051039810110150109113116116_0x00124b00120144ae/#".to_owned());
        assert_eq!(check_namespaces(&namespaces), Ok(()));
    }

    #[test]
    fn a_topic_is_covered_by_the_namespaces_it_is_in() {
        let namespaces = ["zigbee2mqtt/#", "homeassistant/+/0x1/#", "tele/plug/+"].map(String::from).to_vec();
        let connection = Connection::new(namespaces, None);
        for inside in ["zigbee2mqtt/plug", "zigbee2mqtt", "homeassistant/sensor/0x1/t/config", "tele/plug/LWT"] {
            assert!(connection.covers(inside), "{inside}");
        }
        for outside in ["zigbee2mqttx/plug", "homeassistant/sensor/0x2/t/config", "tele/plug/a/b", "hearth/x/y", ""] {
            assert!(!connection.covers(outside), "{outside}");
        }
    }

    #[test]
    fn filters_overlap_when_a_topic_matches_both() {
        for (a, b) in [
            ("zigbee2mqtt/#", "zigbee2mqtt/front_door"),
            ("tele/+/LWT", "tele/plug/#"),
            ("a/#", "a"),
            ("a/b", "a/b"),
            ("homeassistant/+/x/#", "homeassistant/sensor/x/t/config"),
        ] {
            assert!(overlap(a, b) && overlap(b, a), "{a} {b}");
        }
        for (a, b) in [
            ("tele/plug_01/#", "tele/plug_02/#"),
            ("homeassistant/+/0x1/#", "homeassistant/sensor/diy_00/#"),
            ("a/b", "a/b/c"),
            ("a/+", "a"),
        ] {
            assert!(!overlap(a, b) && !overlap(b, a), "{a} {b}");
        }
    }

    #[test]
    fn members_are_kept_per_connection() {
        let mut registry = Registry::default();
        registry.join("c", "c");
        registry.join("d1", "c");
        registry.join("d2", "c");
        registry.join("e1", "other");
        assert_eq!(registry.members("c"), ["c", "d1", "d2"]);
        assert_eq!(registry.count_behind("c"), 2);
        registry.join("d2", "other");
        registry.leave("d1");
        assert_eq!(registry.members("c"), ["c"]);
        assert_eq!((registry.count_behind("c"), registry.count_behind("other")), (0, 2));
        assert_eq!(registry.member_of("d2"), Some("other"));
    }

    /// Full, the connection holding the most gives way, not one within its share.
    #[test]
    fn when_every_share_is_full_the_largest_holder_gives_way() {
        let mut registry = Registry::default();
        registry.remember("quiet", "node/status", b"online");
        for c in 0..MAX_UNCLAIMED_ALL / MAX_UNCLAIMED {
            for n in 0..MAX_UNCLAIMED {
                registry.remember(&format!("c{c}"), &format!("n{n}/status"), b"online");
            }
        }
        assert!(registry.claim("quiet", "node/status").is_some());
    }

    #[test]
    fn availability_said_early_waits_for_its_device() {
        let mut registry = Registry::default();
        registry.remember("c", "node/status", b"online");
        registry.remember("c", "node/status", b"offline");
        assert_eq!(registry.claim("c", "node/status").as_deref(), Some(&b"offline"[..]));
        assert_eq!(registry.claim("c", "node/status"), None);
        registry.remember("other", "mine/status", b"online");
        for n in 0..MAX_UNCLAIMED + 5 {
            registry.remember("c", &format!("n{n}/status"), b"online");
        }
        assert_eq!(registry.claim("c", "n0/status"), None, "the oldest gave way");
        assert!(registry.claim("c", &format!("n{}/status", MAX_UNCLAIMED + 4)).is_some());
        assert!(registry.claim("other", "mine/status").is_some(), "one connection pushed out another's");
    }
}
