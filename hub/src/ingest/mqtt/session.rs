//! One MQTT session's rules, without I/O (as rumqttc's `MqttState` keeps a client's): what
//! it subscribed to, the QoS 1 messages sent to it and not acknowledged, which messages of
//! its persistent queue are on their way, and which retained commands a newer command
//! supersedes before their turn. The connection loop (`super::connection`) only moves
//! bytes: it hands each method what arrived (a SUBSCRIBE, a command, a PUBACK, a retained
//! command's turn) and sends what comes back.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use rumqttc::mqttbytes::{matches, valid_filter};
use rumqttc::{Publish, QoS, SubscribeFilter, SubscribeReasonCode};

use super::Queued;

/// Filters one session may hold.
pub(super) const MAX_SUBSCRIPTIONS: usize = 32;
/// QoS 1 messages of its queue sent to one session and not acknowledged yet.
pub(super) const MAX_UNACKED: usize = 16;
/// QoS 1 messages of any kind not acknowledged, past which a session gets no more until it
/// acknowledges (a subscriber that never does cannot make the hub remember without end).
pub(super) const MAX_UNACKED_ANY: usize = 4 * MAX_UNACKED;
/// Where Home Assistant says it is online (its birth message), which discovery devices
/// listen to.
pub(super) const BIRTH_TOPIC: &str = "homeassistant/status";

/// A logged-in session's state.
#[derive(Debug)]
pub(super) struct Session {
    device: String,
    bridge: bool,
    /// Clean session off: its subscriptions and queue outlive the connection.
    persistent: bool,
    /// Filter -> granted QoS.
    subscriptions: HashMap<String, QoS>,
    /// QoS 1 messages sent and not acknowledged: packet id -> the queued message's row, if
    /// it came from the session's queue.
    unacked: HashMap<u16, Option<i64>>,
    next_pkid: u16,
    /// Queued messages sent on this connection and not acknowledged yet (by their row: a
    /// watermark would skip a row number the store reuses, or one queued out of order).
    in_flight: HashSet<i64>,
    /// Retained commands waiting behind earlier answers to go out after a SUBACK, by
    /// topic, and whether a newer command on that topic went out before them.
    awaiting: HashMap<String, bool>,
}

/// What a SUBSCRIBE comes to.
#[derive(Debug, Default)]
pub(super) struct Subscribed {
    /// The SUBACK's codes, one per filter.
    pub codes: Vec<SubscribeReasonCode>,
    /// Filters granted that the router is to deliver to this connection (a persistent
    /// session's come through its queue instead).
    pub routed: Vec<(String, QoS)>,
    /// A persistent session's whole list, to be saved, if a filter was granted.
    pub save: Option<Vec<(String, QoS)>>,
    /// What follows the SUBACK, in order: Home Assistant's birth message for a bridge that
    /// listens for it, then the commands kept retained for the filters granted.
    pub then: Vec<Publish>,
}

impl Session {
    /// A session of `device`, with the subscriptions a persistent session kept.
    pub fn new(device: &str, bridge: bool, persistent: bool, kept: Vec<(String, QoS)>) -> Self {
        Self {
            device: device.to_owned(),
            bridge,
            persistent,
            subscriptions: kept.into_iter().collect(),
            unacked: HashMap::new(),
            next_pkid: 0,
            in_flight: HashSet::new(),
            awaiting: HashMap::new(),
        }
    }

    /// A SUBSCRIBE: each filter granted if the device may use it and there is room;
    /// `retained(filter)` gives the commands kept retained for this device on the topics a
    /// filter matches, oldest first.
    pub fn subscribe(
        &mut self,
        filters: &[SubscribeFilter],
        retained: impl Fn(&str) -> Vec<(String, Bytes)>,
    ) -> Subscribed {
        let mut out = Subscribed::default();
        for f in filters {
            // QoS 2 is served as QoS 1 (commands are idempotent on/off and values).
            let qos = if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            let code = if !may_subscribe(&self.device, self.bridge, &f.path) {
                tracing::warn!(device.id = %self.device, filter = %f.path, "subscription refused: outside the device's topics");
                SubscribeReasonCode::Failure
            } else if self.subscriptions.len() >= MAX_SUBSCRIPTIONS && !self.subscriptions.contains_key(&f.path) {
                tracing::debug!(device.id = %self.device, filter = %f.path, "subscription refused: too many");
                SubscribeReasonCode::Failure
            } else {
                self.subscriptions.insert(f.path.clone(), qos);
                if !self.persistent {
                    out.routed.push((f.path.clone(), qos));
                }
                SubscribeReasonCode::Success(qos)
            };
            out.codes.push(code);
        }
        let granted: Vec<(&SubscribeFilter, QoS)> = filters
            .iter()
            .zip(&out.codes)
            .filter_map(|(f, c)| match c {
                SubscribeReasonCode::Success(qos) => Some((f, *qos)),
                _ => None,
            })
            .collect();
        if self.persistent && !granted.is_empty() {
            out.save = Some(self.subscriptions());
        }
        // Devices that speak Home Assistant's discovery wait for its birth message,
        // retained on `homeassistant/status`, to announce themselves (again): the hub plays
        // that part for a bridge that listens there, only to a filter that names Home
        // Assistant's topics (one for everything gets its own devices' commands and no more).
        let birth = self.bridge
            && granted.iter().any(|(f, _)| f.path.starts_with("homeassistant/") && matches(BIRTH_TOPIC, &f.path));
        if birth {
            let mut online = Publish::new(BIRTH_TOPIC, QoS::AtMostOnce, "online");
            online.retain = true;
            out.then.push(online);
        }
        // The commands kept retained on the topics it now subscribes to, flagged retained,
        // at the QoS granted, each once.
        let mut kept: Vec<Publish> = Vec::new();
        for (filter, qos) in granted {
            for (topic, payload) in retained(&filter.path) {
                if !kept.iter().any(|p| p.topic == topic) {
                    let mut publish = Publish::from_bytes(topic, qos, payload);
                    publish.retain = true;
                    kept.push(publish);
                }
            }
        }
        for mut publish in kept {
            if publish.qos == QoS::AtLeastOnce {
                let Some(pkid) = self.take_pkid(None) else {
                    tracing::debug!(device.id = %self.device, "subscriber not acknowledging; retained command not sent");
                    continue;
                };
                publish.pkid = pkid;
            }
            self.awaiting.insert(publish.topic.clone(), false);
            out.then.push(publish);
        }
        out
    }

    /// An UNSUBSCRIBE: a persistent session's list to save.
    pub fn unsubscribe(&mut self, filters: &[String]) -> Option<Vec<(String, QoS)>> {
        for filter in filters {
            self.subscriptions.remove(filter);
        }
        self.persistent.then(|| self.subscriptions())
    }

    /// A command for this connection as it happens: what to send, if anything (a
    /// subscriber that does not acknowledge gets no more QoS 1 until it does). It
    /// supersedes a retained command on its topic still waiting for its turn.
    pub fn command(&mut self, mut publish: Publish) -> Option<Publish> {
        if publish.qos == QoS::AtLeastOnce {
            let Some(pkid) = self.take_pkid(None) else {
                tracing::debug!(device.id = %self.device, "subscriber not acknowledging; message dropped");
                return None;
            };
            publish.pkid = pkid;
        }
        self.supersede(&publish.topic);
        Some(publish)
    }

    pub fn is_bridge(&self) -> bool {
        self.bridge
    }

    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// How many messages of the queue may go out now.
    pub fn room(&self) -> usize {
        MAX_UNACKED.saturating_sub(self.unacked.len())
    }

    /// Queued messages already on their way on this connection.
    pub fn in_flight(&self) -> &HashSet<i64> {
        &self.in_flight
    }

    /// Messages of the persistent queue to send now (given by the queue, skipping those in
    /// flight, at most [`Session::room`]): each at QoS 1 with a packet id of its own.
    pub fn send_queued(&mut self, queued: Vec<Queued>) -> Vec<Publish> {
        let mut out = Vec::new();
        for queued in queued {
            if self.room() == 0 || self.in_flight.contains(&queued.seq) {
                continue;
            }
            let Some(pkid) = self.take_pkid(Some(queued.seq)) else { break };
            self.in_flight.insert(queued.seq);
            self.supersede(&queued.topic);
            let mut publish = Publish::from_bytes(queued.topic, QoS::AtLeastOnce, queued.payload);
            publish.pkid = pkid;
            out.push(publish);
        }
        out
    }

    /// A PUBACK: the queued message it acknowledges, if it was one (it leaves the queue).
    pub fn acknowledged(&mut self, pkid: u16) -> Option<i64> {
        let seq = self.unacked.remove(&pkid).flatten()?;
        self.in_flight.remove(&seq);
        Some(seq)
    }

    /// Whether `packet`, coming out of the ordered answers, is a retained command waiting
    /// for its turn (see [`Session::retained_turn`]).
    pub fn awaits(&self, publish: &Publish) -> bool {
        publish.retain && self.awaiting.contains_key(&publish.topic)
    }

    /// A retained command's turn came: it goes out unless a newer command on its topic went
    /// out meanwhile (then it is stale, and its packet id is free again).
    pub fn retained_turn(&mut self, publish: Publish) -> Option<Publish> {
        match self.awaiting.remove(&publish.topic) {
            Some(true) => {
                self.unacked.remove(&publish.pkid);
                None
            }
            _ => Some(publish),
        }
    }

    fn supersede(&mut self, topic: &str) {
        if let Some(superseded) = self.awaiting.get_mut(topic) {
            *superseded = true;
        }
    }

    fn subscriptions(&self) -> Vec<(String, QoS)> {
        self.subscriptions.iter().map(|(f, q)| (f.clone(), *q)).collect()
    }

    /// A packet id for a QoS 1 message (recording what it carries), or none while too many
    /// are unacknowledged.
    fn take_pkid(&mut self, seq: Option<i64>) -> Option<u16> {
        if self.unacked.len() >= MAX_UNACKED_ANY {
            return None;
        }
        let pkid = free_pkid(&mut self.next_pkid, &self.unacked);
        self.unacked.insert(pkid, seq);
        Some(pkid)
    }
}

/// The next packet id not awaiting an ack (1..=65535; 0 is not a packet id).
fn free_pkid(next: &mut u16, unacked: &HashMap<u16, Option<i64>>) -> u16 {
    loop {
        *next = next.wrapping_add(1).max(1);
        if !unacked.contains_key(next) {
            return *next;
        }
    }
}

/// A device may only subscribe within its own topics (for commands addressed to it). A
/// bridge may subscribe to any filter (Zigbee2MQTT subscribes to `zigbee2mqtt/#`), but the
/// server routes to it only the commands of the devices behind it.
pub(super) fn may_subscribe(device: &str, bridge: bool, filter: &str) -> bool {
    let own = format!("hearth/{device}");
    valid_filter(filter)
        && (bridge && !filter.starts_with('$')
            || filter == own
            || filter.strip_prefix(&own).is_some_and(|rest| rest.starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::Subject;

    fn filter(path: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter::new(path.to_owned(), qos)
    }

    fn none(_: &str) -> Vec<(String, Bytes)> {
        Vec::new()
    }

    fn queued(seq: i64, topic: &str) -> Queued {
        Queued { seq, subject: Subject::Owner, topic: topic.to_owned(), payload: Bytes::from_static(b"ON") }
    }

    fn qos1(topic: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, "ON")
    }

    #[test]
    fn a_device_subscribes_only_under_its_own_id() {
        assert!(may_subscribe("dev1", false, "hearth/dev1/#"));
        assert!(may_subscribe("dev1", false, "hearth/dev1/set/+"));
        assert!(may_subscribe("dev1", false, "hearth/dev1"));
        assert!(!may_subscribe("dev1", false, "hearth/#"));
        assert!(!may_subscribe("dev1", false, "hearth/+/set"));
        assert!(!may_subscribe("dev1", false, "hearth/dev10/#"));
        assert!(!may_subscribe("dev1", false, "#"));
        // A bridge subscribes where its software does; what reaches it is decided when routing.
        assert!(may_subscribe("dev1", true, "#"));
        assert!(may_subscribe("dev1", true, "zigbee2mqtt/#"));
        assert!(!may_subscribe("dev1", true, "$SYS/#"));
        assert!(!may_subscribe("dev1", true, "a/#/b"));
    }

    #[test]
    fn subscriptions_are_granted_inside_the_device_s_topics_up_to_the_limit() {
        let mut s = Session::new("dev1", false, false, Vec::new());
        let out =
            s.subscribe(&[filter("hearth/dev1/#", QoS::ExactlyOnce), filter("hearth/dev2/#", QoS::AtMostOnce)], none);
        assert_eq!(out.codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce), SubscribeReasonCode::Failure]);
        assert_eq!(out.routed, [("hearth/dev1/#".to_owned(), QoS::AtLeastOnce)]);
        assert!(out.save.is_none(), "a clean session saves nothing");
        let many: Vec<SubscribeFilter> =
            (0..MAX_SUBSCRIPTIONS).map(|i| filter(&format!("hearth/dev1/set/{i}"), QoS::AtMostOnce)).collect();
        let out = s.subscribe(&many, none);
        assert_eq!(out.codes.iter().filter(|c| **c == SubscribeReasonCode::Failure).count(), 1, "one past the limit");
        // A filter held already may be subscribed to again at the limit.
        let again = s.subscribe(&[filter("hearth/dev1/#", QoS::AtMostOnce)], none);
        assert_eq!(again.codes, [SubscribeReasonCode::Success(QoS::AtMostOnce)]);
    }

    #[test]
    fn a_persistent_session_saves_its_list_and_is_not_routed() {
        let kept = vec![("hearth/dev1/set/a".to_owned(), QoS::AtLeastOnce)];
        let mut s = Session::new("dev1", false, true, kept);
        let out = s.subscribe(&[filter("hearth/dev1/set/b", QoS::AtMostOnce)], none);
        assert!(out.routed.is_empty());
        let saved = out.save.expect("saved");
        assert_eq!(saved.len(), 2, "{saved:?}");
        assert!(s.subscribe(&[filter("#", QoS::AtMostOnce)], none).save.is_none(), "nothing granted, nothing saved");
        assert_eq!(s.unsubscribe(&["hearth/dev1/set/a".to_owned()]).map(|l| l.len()), Some(1));
        assert_eq!(Session::new("dev1", false, false, Vec::new()).unsubscribe(&[]), None);
    }

    #[test]
    fn home_assistant_s_birth_message_goes_to_a_bridge_that_listens_for_it() {
        let mut bridge = Session::new("z", true, false, Vec::new());
        let out = bridge.subscribe(&[filter("homeassistant/#", QoS::AtMostOnce)], none);
        assert_eq!(out.then.iter().map(|p| p.topic.as_str()).collect::<Vec<_>>(), [BIRTH_TOPIC]);
        assert!(out.then[0].retain);
        let everything = bridge.subscribe(&[filter("#", QoS::AtMostOnce)], none);
        assert!(everything.then.is_empty(), "a filter for everything does not name Home Assistant");
        let mut device = Session::new("d", false, false, Vec::new());
        assert!(device.subscribe(&[filter("homeassistant/#", QoS::AtMostOnce)], none).then.is_empty());
    }

    #[test]
    fn retained_commands_follow_the_suback_once_each_at_the_qos_granted() {
        let mut s = Session::new("z", true, false, Vec::new());
        let kept = |f: &str| match f {
            "garden/#" | "garden/valve/set" => vec![("garden/valve/set".to_owned(), Bytes::from_static(b"ON"))],
            _ => Vec::new(),
        };
        let out =
            s.subscribe(&[filter("garden/#", QoS::AtMostOnce), filter("garden/valve/set", QoS::AtLeastOnce)], kept);
        assert_eq!(out.then.len(), 1, "the same topic twice: {:?}", out.then);
        let publish = &out.then[0];
        assert!(publish.retain);
        assert_eq!(publish.qos, QoS::AtMostOnce, "at the first filter's QoS");
        assert!(s.awaits(publish));
        let qos1 = s.subscribe(&[filter("garden/valve/set", QoS::AtLeastOnce)], kept);
        assert_eq!(qos1.then[0].qos, QoS::AtLeastOnce);
        assert_ne!(qos1.then[0].pkid, 0, "a QoS 1 message has a packet id");
    }

    #[test]
    fn a_newer_command_supersedes_a_retained_one_still_waiting() {
        let kept = |_: &str| vec![("garden/valve/set".to_owned(), Bytes::from_static(b"OFF"))];
        let mut s = Session::new("z", true, false, Vec::new());
        let waiting = s.subscribe(&[filter("garden/#", QoS::AtLeastOnce)], kept).then.remove(0);
        // A live command on another topic changes nothing; one on its topic supersedes it.
        assert!(s.command(qos1("garden/pump/set")).is_some());
        assert!(s.command(qos1("garden/valve/set")).is_some());
        let pkid = waiting.pkid;
        assert_eq!(s.retained_turn(waiting), None, "stale: a newer command went out first");
        assert_eq!(s.acknowledged(pkid), None);
        assert_eq!(s.unacked.len(), 2, "its packet id is free again");

        // Not superseded: it goes out on its turn.
        let mut s = Session::new("z", true, false, Vec::new());
        let waiting = s.subscribe(&[filter("garden/#", QoS::AtLeastOnce)], kept).then.remove(0);
        assert!(s.retained_turn(waiting.clone()).is_some());
        // Once out, it is no longer waiting: a later command does not touch it.
        assert!(!s.awaits(&waiting));
    }

    #[test]
    fn a_queued_message_on_its_topic_supersedes_a_retained_one_too() {
        let kept = |_: &str| vec![("hearth/d/set/on".to_owned(), Bytes::from_static(b"OFF"))];
        let mut s = Session::new("d", false, true, Vec::new());
        let waiting = s.subscribe(&[filter("hearth/d/set/#", QoS::AtLeastOnce)], kept).then.remove(0);
        assert_eq!(s.send_queued(vec![queued(7, "hearth/d/set/on")]).len(), 1);
        assert_eq!(s.retained_turn(waiting), None);
    }

    #[test]
    fn queued_messages_go_out_within_the_room_once_each_until_acknowledged() {
        let mut s = Session::new("d", false, true, Vec::new());
        let queue: Vec<Queued> = (1..=20).map(|seq| queued(seq, "hearth/d/set/x")).collect();
        let sent = s.send_queued(queue.clone());
        assert_eq!(sent.len(), MAX_UNACKED);
        assert_eq!(s.room(), 0);
        let mut pkids: Vec<u16> = sent.iter().map(|p| p.pkid).collect();
        pkids.dedup();
        assert_eq!(pkids.len(), MAX_UNACKED, "distinct packet ids");
        assert!(sent.iter().all(|p| p.qos == QoS::AtLeastOnce && p.pkid != 0));
        // Nothing is sent twice while in flight; an ack makes room for the next in order.
        assert!(s.send_queued(queue.clone()).is_empty());
        assert_eq!(s.acknowledged(sent[0].pkid), Some(1));
        assert_eq!(s.acknowledged(sent[0].pkid), None, "acknowledged once");
        // The queue no longer holds what was acknowledged.
        let next = s.send_queued(queue[1..].to_vec());
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].pkid, 17, "the next packet id");
        assert!(!s.in_flight().contains(&1));
        assert!(s.in_flight().contains(&17));
    }

    #[test]
    fn a_subscriber_that_never_acknowledges_gets_no_more_qos_1() {
        let mut s = Session::new("d", false, false, Vec::new());
        let sent: Vec<Publish> = (0..MAX_UNACKED_ANY).filter_map(|_| s.command(qos1("hearth/d/set/x"))).collect();
        assert_eq!(sent.len(), MAX_UNACKED_ANY);
        assert!(s.command(qos1("hearth/d/set/x")).is_none(), "dropped past the limit");
        // QoS 0 needs no ack and still goes out; an ack makes room again.
        assert!(s.command(Publish::new("hearth/d/set/x", QoS::AtMostOnce, "ON")).is_some());
        assert_eq!(s.acknowledged(sent[3].pkid), None, "a live command is no queued message");
        assert!(s.command(qos1("hearth/d/set/x")).is_some());
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_use() {
        let mut unacked = HashMap::new();
        let mut next = u16::MAX - 1;
        unacked.insert(u16::MAX, None);
        unacked.insert(1, None);
        assert_eq!(free_pkid(&mut next, &unacked), 2);
    }
}
