//! The embedded MQTT 3.1.1 server. It owns device sessions: CONNECT is checked against the
//! device's own credentials, every PUBLISH is checked against the device's own topic space,
//! and a QoS 1/2 PUBLISH is acknowledged only after its readings are committed, so an
//! acknowledged reading is never lost. Packets are parsed by rumqttc's MQTT codec; this
//! module must not touch SQL (it goes through the pipeline and the device service).
//!
//! Not a general broker: only the hub publishes to subscribers (commands), never one
//! device to another. A device may subscribe only inside `hearth/<its id>/`, where it
//! receives the commands addressed to it; a bridge may subscribe anywhere but receives only
//! its own devices' commands. A client that connects with clean session off keeps its
//! session: its subscriptions, and the QoS 1 commands sent while it is away, are kept
//! (bounded, sealed in the store, across restarts) and delivered when it comes back.
//! The only retained messages are the hub's commands to devices that ask for them
//! retained, which a session gets when it subscribes (see `retained.rs`), and Home
//! Assistant's birth message. See docs/decisions/0001-embedded-mqtt-server.md,
//! 0016-persistent-sessions.md and 0018-retained-commands.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use hearth_model::devices::Delivery;
use rumqttc::mqttbytes::matches;
use rumqttc::{
    Codec, ConnAck, Connect, ConnectReturnCode, Packet, Protocol, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    UnsubAck,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

mod session;

use self::session::Session;
use super::Rejections;
use super::decode;
use super::pipeline::{CommitFailed, Ingest, Urgency};
use crate::budgets::{Budget, Budgets};
use crate::consent::Subject;
use crate::conventions::hearth;
use crate::crowd::Crowd;
use crate::devices::{self, DeviceEvent};
use crate::repeated::Repeated;
use crate::store::Store;

/// Largest MQTT packet accepted or sent.
const MAX_PACKET: usize = decode::MAX_PAYLOAD + 1024;
/// QoS 1/2 publishes awaiting their commit per connection; past this we stop reading.
const MAX_INFLIGHT: usize = 256;
/// Sessions of one device at once (a device with several client ids, or one reconnecting
/// before its old session timed out); past this, its oldest session gives way.
const MAX_SESSIONS_PER_DEVICE: usize = 4;
/// Connections that have not logged in yet, at once, and from one source address: a budget
/// of their own, so that sockets that never log in cannot take devices' places.
const MAX_WAITING: usize = 64;
const MAX_WAITING_PER_ADDRESS: usize = 8;
/// Persistent sessions (clean session off) one device keeps at once; past this, its own
/// away longest gives way, so that one device's credentials cannot push the others'
/// sleeping sessions out. A household's devices keep its budget of them
/// ([`Budget::PersistentSessions`]); past it, the household's own away longest gives way.
const MAX_PERSISTENT_PER_DEVICE: usize = 4;
/// How long a persistent session is kept while its client stays away.
const SESSION_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;
/// Messages queued to one subscriber before newer ones are dropped.
const OUTBOX: usize = 64;
/// How often retained commands are checked against the store and against what devices ask.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long one packet may take to leave; a reader that stops reading is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A publish this soon after the last acknowledgement comes from a client sending one at a
/// time, waiting on each answer: its commit is not delayed (decision 0029).
const ONE_AT_A_TIME: Duration = Duration::from_millis(200);

/// Floods' events, counted rather than logged one by one.
static REFUSED_LOGINS: Repeated = Repeated::new("MQTT login refused");
static CLOSED: Repeated = Repeated::new("MQTT connection closed");
static IN_CLEAR: Repeated = Repeated::new("plain MQTT refused");
static GAVE_WAY: Repeated = Repeated::new("MQTT connection closed before login to make room");

/// What the server needs from the rest of the hub.
#[derive(Clone)]
pub struct MqttContext {
    pub store: Store,
    pub ingest: Ingest,
    pub device_events: broadcast::Sender<DeviceEvent>,
    pub rejections: Rejections,
    /// How long a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
    /// The longest keep-alive a session gets (also for those that ask for none).
    pub max_keep_alive: Duration,
    /// Whether clients on the hub itself may use plain MQTT whatever their device's mark.
    pub plain_from_loopback: bool,
    /// The security log (refused device logins are counted there).
    pub audit: crate::audit::Audit,
    /// The hub's time.
    pub clock: crate::clock::Clock,
    /// Who is behind which bridge.
    pub bridges: crate::bridges::Bridges,
    /// Commands kept for sessions that subscribe later.
    pub retained: super::retained::Retained,
    /// Each household's share of sessions and queued commands.
    pub budgets: Budgets,
    /// Addresses logins were accepted from: they keep places strangers cannot take.
    pub known: Arc<crate::crowd::Known>,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("MQTT protocol: {0}")]
    Protocol(String),
    #[error("no CONNECT in time")]
    ConnectTimeout,
    #[error("login refused")]
    Refused,
    #[error("keep-alive expired")]
    KeepAlive,
    #[error("a commit failed; closing so the device sends its readings again")]
    CommitFailed,
    #[error("the device stopped reading")]
    WriteTimeout,
    #[error("closed before login to make room for others")]
    GaveWay,
    #[error("the hub is shutting down")]
    Closed,
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<rumqttc::mqttbytes::Error> for ConnError {
    fn from(e: rumqttc::mqttbytes::Error) -> Self {
        Self::Protocol(e.to_string())
    }
}

/// Routes commands to the sessions of the device they are for. A device's readings are
/// never routed back to subscribers: during a tenancy they are the tenant's, and the
/// device's credentials may be the owner's. Filters are kept per device, so a command is
/// matched only against its own device's few filters, never against every session's.
#[derive(Default)]
struct Router {
    /// Device id -> its sessions' filters.
    subs: RwLock<HashMap<String, Vec<Subscription>>>,
}

/// A session's filter: (connection, filter, where its messages go, granted QoS).
type Subscription = (u64, String, mpsc::Sender<Publish>, QoS);

impl Router {
    /// To `device`'s sessions only.
    /// Hands a message to `device`'s connected subscriptions matching `topic`; returns
    /// whether any took it.
    fn route_to(&self, device: &str, topic: &str, payload: &bytes::Bytes) -> bool {
        let Ok(subs) = self.subs.read() else { return false };
        let mut taken = false;
        for (_, filter, tx, qos) in subs.get(device).into_iter().flatten().filter(|(_, f, _, _)| matches(topic, f)) {
            let p = Publish::from_bytes(topic, *qos, payload.clone());
            match tx.try_send(p) {
                Ok(()) => taken = true,
                Err(_) => tracing::debug!(%filter, "subscriber queue full; message dropped"),
            }
        }
        taken
    }

    fn add(&self, device: &str, conn: u64, filter: String, tx: mpsc::Sender<Publish>, qos: QoS) {
        if let Ok(mut subs) = self.subs.write() {
            let list = subs.entry(device.to_owned()).or_default();
            list.retain(|(c, f, _, _)| !(*c == conn && *f == filter));
            list.push((conn, filter, tx, qos));
        }
    }

    fn remove(&self, device: &str, conn: u64, filter: Option<&str>) {
        if let Ok(mut subs) = self.subs.write()
            && let Some(list) = subs.get_mut(device)
        {
            list.retain(|(c, f, _, _)| !(*c == conn && filter.is_none_or(|x| x == f)));
            if list.is_empty() {
                subs.remove(device);
            }
        }
    }
}

/// A persistent session (clean session off): what it subscribed to and the QoS 1 messages
/// waiting for it, kept in the store while its client is away and across restarts.
struct Persistent {
    subscriptions: Vec<(String, QoS)>,
    queue: std::collections::VecDeque<Queued>,
    /// The connection holding it, where its QoS 0 messages go, and what wakes it for
    /// queued ones.
    online: Option<(u64, mpsc::Sender<Publish>, Arc<tokio::sync::Notify>)>,
    seen_ms: i64,
}

/// A queued message (`seq` is its row in the store).
#[derive(Debug, Clone)]
struct Queued {
    seq: i64,
    subject: crate::consent::Subject,
    topic: String,
    payload: bytes::Bytes,
}

struct Shared {
    ctx: MqttContext,
    router: Router,
    /// (device, client id) -> its persistent session.
    persistent: Mutex<HashMap<(String, String), Persistent>>,
    /// (device, client id) -> (connection number, token that ends it): a second CONNECT
    /// with the same client id takes the session over, as MQTT requires, but only the same
    /// device's: a client id belongs to the device that uses it.
    sessions: Mutex<HashMap<(String, String), (u64, CancellationToken)>>,
    /// Connections that have not logged in yet (see [`Crowd`]).
    waiting: Arc<Crowd>,
    /// Each household's logged-in sessions ([`Budget::Sessions`]).
    logged_in: Mutex<HashMap<Subject, Arc<Semaphore>>>,
    next_conn: AtomicU64,
}

/// A command the hub sends to a device.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Whose sessions get it: the device, or the bridge it is behind.
    pub to: String,
    /// The device it commands.
    pub target: String,
    pub topic: String,
    pub payload: bytes::Bytes,
    /// Whose rule (or click) sent it: what is kept for a device goes when that subject's
    /// data is shredded.
    pub subject: crate::consent::Subject,
    /// Kept for sessions that subscribe later (see [`crate::ingest::retained`]).
    pub retain: bool,
}

/// A handle to publish to subscribed devices (commands).
#[derive(Clone)]
pub struct MqttServer {
    shared: Arc<Shared>,
}

impl MqttServer {
    pub fn new(ctx: MqttContext) -> Self {
        Self {
            shared: Arc::new(Shared {
                router: Router::default(),
                persistent: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                waiting: Crowd::new(MAX_WAITING, MAX_WAITING_PER_ADDRESS, ctx.known.clone()),
                logged_in: Mutex::default(),
                next_conn: AtomicU64::new(1),
                ctx,
            }),
        }
    }

    /// Until `shutdown`, every minute, brings the retained commands in line with the store
    /// and with what devices ask for now (a discovery config that no longer asks for them).
    pub async fn watch(self, shutdown: CancellationToken) {
        let ctx = &self.shared.ctx;
        let mut every_minute = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every_minute.tick() => {}
            }
            if let Err(error) = ctx.retained.prune(|k| ctx.bridges.retains(k)).await {
                tracing::warn!(%error, "could not check the retained MQTT commands");
            }
        }
    }

    /// Forgets a shredded tenancy's queued and retained commands and its own devices'
    /// (`own`) persistent sessions: the store deleted them (see [`crate::lifecycle`]).
    pub async fn forget_tenancy(&self, tenancy: i64, own: &[String]) {
        let subject = crate::consent::Subject::Tenancy(tenancy);
        self.shared.forget(|device| own.iter().any(|d| d == device), |queued| queued.subject == subject);
        self.shared.ctx.retained.forget_tenancy(tenancy, own).await;
    }

    /// Forgets removed devices' persistent sessions and retained commands (the store
    /// deleted them; their open sessions end on their device event).
    pub async fn forget_devices(&self, devices: &[String]) {
        self.shared.forget(|device| devices.iter().any(|d| d == device), |_| false);
        self.shared.ctx.retained.forget_devices(devices).await;
    }

    /// Takes back the persistent sessions the store kept (those away for less than a week).
    pub async fn restore(&self) -> Result<(), crate::store::StoreError> {
        let since = self.shared.ctx.clock.now_ms() - SESSION_EXPIRY_MS;
        let stored = self.shared.ctx.store.mqtt_sessions(since).await?;
        let Ok(mut persistent) = self.shared.persistent.lock() else { return Ok(()) };
        for session in stored {
            let subscriptions = session.subscriptions.into_iter().map(|(f, q)| (f, qos_of(q))).collect();
            let queue = session
                .queue
                .into_iter()
                .map(|q| Queued { seq: q.seq, subject: q.subject, topic: q.topic, payload: q.payload.into() })
                .collect();
            let kept = Persistent { subscriptions, queue, online: None, seen_ms: session.seen_ms };
            persistent.insert((session.device, session.client), kept);
        }
        Ok(())
    }

    /// Sends a command to the sessions of the device (or bridge) it is for that subscribed
    /// to its topic: at once to those connected, and, at QoS 1, kept for persistent
    /// sessions whose client is away. Kept retained for sessions that subscribe later if it
    /// is to be (a command on the topic that is not drops the one kept before).
    /// Sends a command to its connection: to its sessions connected now, into its
    /// persistent sessions' queues, and kept retained if it asks to be. Says what became
    /// of it.
    pub async fn send(&self, out: Outgoing) -> Delivery {
        let retained = &self.shared.ctx.retained;
        let kept = match out.retain {
            true => retained
                .keep((&out.to, &out.target), &out.topic, out.payload.clone(), out.subject)
                .await
                .map(|seq| seq.is_some()),
            false => retained.clear(&out.to, &out.topic).await.map(|_| false),
        };
        let kept = match kept {
            Ok(kept) => kept,
            Err(error) => {
                // The command before must not be handed out in its place.
                tracing::error!(%error, device.id = %out.target, "could not keep a retained MQTT command");
                let _ = retained.clear(&out.to, &out.topic).await;
                false
            }
        };
        let live = self.shared.router.route_to(&out.to, &out.topic, &out.payload);
        let persistent = self.shared.deliver_persistent(&out.to, &out.topic, &out.payload, out.subject).await;
        match (live, persistent) {
            (true, _) | (false, Some(Delivery::Delivered)) => Delivery::Delivered,
            (false, Some(Delivery::Queued)) => Delivery::Queued,
            _ if kept => Delivery::Queued,
            _ => Delivery::Unheard,
        }
    }

    /// Accepts connections until `shutdown`; then lets open connections send the acks of
    /// what they have already received, and returns.
    /// With `tls`, each connection first completes a TLS handshake, within the CONNECT
    /// deadline; without, it is plain MQTT, which only devices marked as unable to do TLS
    /// (and clients on the hub itself, unless configured otherwise) may use.
    pub async fn serve(self, listener: TcpListener, tls: Option<TlsAcceptor>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    tracing::warn!(%error, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = self.shared.clone();
            let shutdown = shutdown.clone();
            let tls = tls.clone();
            tracker.spawn(async move {
                match accept(&shared, stream, peer, tls, shutdown).await {
                    Ok(()) | Err(ConnError::Refused) => {}
                    Err(ConnError::GaveWay) => {
                        if GAVE_WAY.log_this(peer.ip()) {
                            tracing::warn!(%peer, "MQTT connection closed before login to make room for others");
                        }
                    }
                    Err(error) => {
                        if CLOSED.log_this(peer.ip()) {
                            tracing::info!(%peer, %error, "MQTT connection closed");
                        }
                    }
                }
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

type Ack = Pin<Box<dyn Future<Output = Result<Option<Packet>, CommitFailed>> + Send>>;

fn ready(packet: Packet) -> Ack {
    Box::pin(std::future::ready(Ok(Some(packet))))
}

fn qos_of(level: u8) -> QoS {
    if level >= 1 { QoS::AtLeastOnce } else { QoS::AtMostOnce }
}

impl Shared {
    /// A place among the logged-in sessions of `device`'s household; `None` when they are
    /// all taken (the owner is told).
    fn logged_in(&self, device: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let household = self.ctx.store.ownership().rule.holder(device);
        let places = {
            let mut all = self.logged_in.lock().ok()?;
            let limit = self.ctx.budgets.limit(Budget::Sessions);
            all.entry(household).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
        };
        let permit = places.try_acquire_owned().ok();
        if permit.is_none() {
            self.ctx.budgets.reached(Budget::Sessions, household, &format!("device {device}"));
        }
        permit
    }

    /// Hands a message to `device`'s persistent sessions subscribed to `topic`: QoS 0 to
    /// those connected; QoS 1 into the store first, then to the session if connected.
    async fn deliver_persistent(
        &self,
        device: &str,
        topic: &str,
        payload: &bytes::Bytes,
        subject: crate::consent::Subject,
    ) -> Option<Delivery> {
        let mut delivery = None;
        let matching: Vec<((String, String), QoS)> = {
            let Ok(persistent) = self.persistent.lock() else { return None };
            persistent
                .iter()
                .filter(|((d, _), _)| d == device)
                .filter_map(|(key, session)| {
                    let mut levels = session.subscriptions.iter().filter(|(f, _)| matches(topic, f)).map(|(_, q)| *q);
                    let first = levels.next()?;
                    let qos = if first == QoS::AtLeastOnce || levels.any(|q| q == QoS::AtLeastOnce) {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    };
                    Some((key.clone(), qos))
                })
                .collect()
        };
        for (key, qos) in matching {
            if qos == QoS::AtMostOnce {
                if let Ok(persistent) = self.persistent.lock()
                    && let Some((_, tx, _)) = persistent.get(&key).and_then(|s| s.online.as_ref())
                    && tx.try_send(Publish::from_bytes(topic, QoS::AtMostOnce, payload.clone())).is_ok()
                {
                    delivery = Some(Delivery::Delivered);
                }
                continue;
            }
            let now = self.ctx.clock.now_ms();
            let max = self.ctx.budgets.limit(Budget::QueuedCommands);
            let stored = self.ctx.store.queue_mqtt((&key.0, &key.1), subject, topic, payload, now, max).await;
            let seq = match stored {
                Ok(seq) => seq,
                Err(error) => {
                    tracing::error!(%error, device.id = %key.0, "could not queue an MQTT message; it is lost");
                    continue;
                }
            };
            let Ok(mut persistent) = self.persistent.lock() else { return delivery };
            let Some(session) = persistent.get_mut(&key) else { continue };
            session.queue.push_back(Queued { seq, subject, topic: topic.to_owned(), payload: payload.clone() });
            // Past its share, the household's own oldest gives way (as the store did).
            if session.queue.iter().filter(|q| q.subject == subject).count() > max {
                if let Some(at) = session.queue.iter().position(|q| q.subject == subject) {
                    session.queue.remove(at);
                }
                self.ctx.budgets.reached(Budget::QueuedCommands, subject, &format!("for device {}", key.0));
            }
            match &session.online {
                Some((_, _, wake)) => {
                    wake.notify_one();
                    delivery = Some(Delivery::Delivered);
                }
                None if delivery.is_none() => delivery = Some(Delivery::Queued),
                None => {}
            }
        }
        delivery
    }

    /// Attaches connection `conn` to the persistent session `key`, creating it if new;
    /// returns whether it existed (CONNACK's session-present) and its subscriptions.
    async fn attach(
        &self,
        key: &(String, String),
        conn: u64,
        tx: mpsc::Sender<Publish>,
        wake: Arc<tokio::sync::Notify>,
    ) -> (bool, Vec<(String, QoS)>) {
        let now = self.ctx.clock.now_ms();
        let (present, subscriptions, evicted) = {
            let Ok(mut persistent) = self.persistent.lock() else { return (false, Vec::new()) };
            let present = persistent.contains_key(key);
            let mut evicted = Vec::new();
            let oldest_away = |persistent: &HashMap<(String, String), Persistent>, among: &dyn Fn(&str) -> bool| {
                persistent
                    .iter()
                    .filter(|((d, _), s)| s.online.is_none() && among(d))
                    .min_by_key(|(_, s)| s.seen_ms)
                    .map(|(k, _)| k.clone())
            };
            let own = persistent.keys().filter(|(d, _)| *d == key.0).count();
            if !present && own >= MAX_PERSISTENT_PER_DEVICE {
                evicted.extend(oldest_away(&persistent, &|d| d == key.0));
            }
            let rule = self.ctx.store.ownership();
            let household = rule.rule.holder(&key.0);
            let theirs = |d: &str| rule.rule.holder(d) == household;
            for k in &evicted {
                persistent.remove(k);
            }
            // Past its share, the household's sessions away longest give way: as many as it
            // takes (some kept while their clients were connected). With all of them
            // connected, none can: its logged-in budget bounds them.
            let limit = self.ctx.budgets.limit(Budget::PersistentSessions);
            let mut held = persistent.keys().filter(|(d, _)| theirs(d)).count();
            while !present && held >= limit {
                let Some(gone) = oldest_away(&persistent, &theirs) else { break };
                persistent.remove(&gone);
                evicted.push(gone);
                held -= 1;
                self.ctx.budgets.reached(Budget::PersistentSessions, household, &format!("device {}", key.0));
            }
            let session = persistent.entry(key.clone()).or_insert_with(|| Persistent {
                subscriptions: Vec::new(),
                queue: std::collections::VecDeque::new(),
                online: None,
                seen_ms: now,
            });
            session.online = Some((conn, tx, wake.clone()));
            session.seen_ms = now;
            (present, session.subscriptions.clone(), evicted)
        };
        for (device, client) in evicted {
            if let Err(error) = self.ctx.store.drop_mqtt_session(&device, &client).await {
                tracing::warn!(%error, "could not end an MQTT session");
            }
        }
        let saved = match present {
            true => self.ctx.store.touch_mqtt_session(&key.0, &key.1, now).await,
            false => self.ctx.store.save_mqtt_session(&key.0, &key.1, &[], now).await,
        };
        if let Err(error) = saved {
            tracing::warn!(%error, "could not save an MQTT session");
        }
        // What was queued while it was away goes out first.
        wake.notify_one();
        (present, subscriptions)
    }

    /// Forgets what the store deleted: the sessions of the devices `gone` picks, and the
    /// queued messages `dropped` picks.
    fn forget(&self, gone: impl Fn(&str) -> bool, dropped: impl Fn(&Queued) -> bool) {
        let Ok(mut persistent) = self.persistent.lock() else { return };
        persistent.retain(|(device, _), _| !gone(device));
        for session in persistent.values_mut() {
            session.queue.retain(|q| !dropped(q));
        }
    }

    /// Registers connection `conn` as the session `key` and returns what ends it. A second
    /// CONNECT with the same client id takes the session over, as MQTT requires, but only
    /// the same device's; a device at its limit (half-open sessions left by a dropped
    /// Wi-Fi, say) loses its oldest session to the new one.
    fn take_place(&self, key: &(String, String), conn: u64) -> CancellationToken {
        let session = CancellationToken::new();
        let Ok(mut sessions) = self.sessions.lock() else { return session };
        let of_device = sessions.keys().filter(|(d, _)| *d == key.0).count();
        if !sessions.contains_key(key) && of_device >= MAX_SESSIONS_PER_DEVICE {
            let oldest =
                sessions.iter().filter(|((d, _), _)| *d == key.0).min_by_key(|(_, (c, _))| *c).map(|(k, _)| k.clone());
            if let Some((_, old)) = oldest.and_then(|k| sessions.remove(&k)) {
                old.cancel();
            }
        }
        if let Some((_, old)) = sessions.insert(key.clone(), (conn, session.clone())) {
            old.cancel();
        }
        session
    }

    /// Ends the persistent session `key`, if there is one (a CONNECT with clean session on).
    async fn discard(&self, key: &(String, String)) {
        let existed = self.persistent.lock().is_ok_and(|mut p| p.remove(key).is_some());
        if existed && let Err(error) = self.ctx.store.drop_mqtt_session(&key.0, &key.1).await {
            tracing::warn!(%error, "could not end an MQTT session");
        }
    }

    /// Saves a persistent session's subscriptions after a SUBSCRIBE or UNSUBSCRIBE.
    async fn save_subscriptions(&self, key: &(String, String), subscriptions: &[(String, QoS)]) {
        if let Ok(mut persistent) = self.persistent.lock()
            && let Some(session) = persistent.get_mut(key)
        {
            session.subscriptions = subscriptions.to_vec();
        }
        let levels: Vec<(String, u8)> = subscriptions.iter().map(|(f, q)| (f.clone(), *q as u8)).collect();
        let now = self.ctx.clock.now_ms();
        if let Err(error) = self.ctx.store.save_mqtt_session(&key.0, &key.1, &levels, now).await {
            tracing::warn!(%error, "could not save an MQTT session's subscriptions");
        }
    }

    /// Queued messages of session `key` not sent yet on this connection (up to `room`), in
    /// the order they were queued.
    /// Those of a subject that may no longer act (a former tenant's rules) wait for its
    /// shred, undelivered.
    fn queued(&self, key: &(String, String), in_flight: &std::collections::HashSet<i64>, room: usize) -> Vec<Queued> {
        let (rule, now) = (self.ctx.store.ownership(), self.ctx.clock.now_ms());
        let Ok(persistent) = self.persistent.lock() else { return Vec::new() };
        let Some(session) = persistent.get(key) else { return Vec::new() };
        let deliverable = |q: &&Queued| !in_flight.contains(&q.seq) && rule.rule.acts_at(q.subject, now);
        session.queue.iter().filter(deliverable).take(room).cloned().collect()
    }

    /// A queued message was acknowledged: it leaves the queue and the store.
    async fn acknowledged(&self, key: &(String, String), seq: i64) {
        if let Ok(mut persistent) = self.persistent.lock()
            && let Some(session) = persistent.get_mut(key)
        {
            session.queue.retain(|q| q.seq != seq);
        }
        if let Err(error) = self.ctx.store.unqueue_mqtt(seq).await {
            tracing::warn!(%error, "could not take an acknowledged MQTT message off the queue");
        }
    }
}

/// Unregisters a connection however it ends.
struct Registration<'a> {
    shared: &'a Shared,
    conn: u64,
    key: (String, String),
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.shared.router.remove(&self.key.0, self.conn, None);
        if let Ok(mut persistent) = self.shared.persistent.lock()
            && let Some(session) = persistent.get_mut(&self.key)
            && session.online.as_ref().is_some_and(|(c, _, _)| *c == self.conn)
        {
            session.online = None;
            session.seen_ms = self.shared.ctx.clock.now_ms();
        }
        if let Ok(mut sessions) = self.shared.sessions.lock()
            && sessions.get(&self.key).is_some_and(|(c, _)| *c == self.conn)
        {
            sessions.remove(&self.key);
        }
    }
}

/// Sends one packet, or gives up on a reader that has stopped reading.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, Codec>,
    packet: Packet,
) -> Result<(), ConnError> {
    match timeout(WRITE_TIMEOUT, framed.send(packet)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(ConnError::WriteTimeout),
    }
}

/// Takes a new connection: its place among those not logged in yet, then its TLS
/// handshake (if any) and its CONNECT, both within the CONNECT deadline.
async fn accept(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let waiting = shared.waiting.enter(peer.ip());
    let Some(tls) = tls else {
        let transport = match peer.ip().to_canonical().is_loopback() && shared.ctx.plain_from_loopback {
            true => Transport::Local,
            false => Transport::Clear,
        };
        return connection(shared, stream, peer, transport, waiting, shutdown).await;
    };
    let started = Instant::now();
    let handshake = tokio::select! {
        () = waiting.gives_way.cancelled() => return Err(ConnError::GaveWay),
        handshake = timeout(shared.ctx.connect_timeout, tls.accept(stream)) => handshake,
    };
    match handshake {
        Err(_) => Err(ConnError::ConnectTimeout),
        Ok(Err(error)) => Err(ConnError::Tls(error.to_string())),
        Ok(Ok(stream)) => {
            // A whole handshake: from now on it gives way after its address's places
            // that have shown none.
            waiting.spoke();
            let left = shared.ctx.connect_timeout.saturating_sub(started.elapsed());
            connection(shared, stream, peer, Transport::Tls(left), waiting, shutdown).await
        }
    }
}

/// How a connection reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Over TLS, with this much of the CONNECT deadline left.
    Tls(Duration),
    /// In clear, from the hub itself (allowed by configuration).
    Local,
    /// In clear, from elsewhere: only for devices marked as unable to do TLS.
    Clear,
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    waiting: crate::crowd::Place,
    shutdown: CancellationToken,
) -> Result<(), ConnError> {
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut framed = Framed::new(stream, Codec { max_incoming_size: MAX_PACKET, max_outgoing_size: MAX_PACKET });
    let Some(connect) = read_connect(shared, &mut framed, transport, &waiting).await? else { return Ok(()) };
    // A whole CONNECT: it gives way after its address's places that have shown none.
    waiting.spoke();
    // Listening before the credentials and the mark are read: a change from here on (a
    // removal, a tenancy's end, a mark taken away) is seen.
    let events = shared.ctx.device_events.subscribe();
    let checked = tokio::select! {
        () = waiting.gives_way.cancelled() => return Err(ConnError::GaveWay),
        checked = authenticate(&shared.ctx.store, &connect, shared.ctx.clock.now_ms()) => checked,
    };
    drop(waiting);
    let device = match checked {
        Ok(device) => device,
        Err(code) => return refuse(shared, &mut framed, &connect, peer, code).await,
    };
    // Its address proved itself: it keeps places strangers cannot take.
    shared.ctx.known.remember(peer.ip(), shared.ctx.store.ownership().rule.holder(&device));
    if transport == Transport::Clear {
        may_use_clear(shared, &mut framed, &device, peer).await?;
    }
    let client_id = if connect.client_id.is_empty() { format!("{device}#{conn}") } else { connect.client_id.clone() };
    let key = (device.clone(), client_id);
    let Some(_permit) = shared.logged_in(&device) else {
        tracing::warn!(device.id = %device, %peer, "MQTT session refused: its household has too many sessions");
        let _ = send(&mut framed, Packet::ConnAck(ConnAck::new(ConnectReturnCode::ServiceUnavailable, false))).await;
        return Err(ConnError::Refused);
    };
    let ended = shared.take_place(&key, conn);
    let (out_tx, out_rx) = mpsc::channel::<Publish>(OUTBOX);
    // A client that asks to keep its session (clean session off, with a client id of its
    // own) gets its subscriptions back, and what was queued for it while it was away.
    let persistent = !connect.clean_session && !connect.client_id.is_empty();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (session_present, kept) = match persistent {
        true => shared.attach(&key, conn, out_tx.clone(), wake.clone()).await,
        false => {
            shared.discard(&key).await;
            (false, Vec::new())
        }
    };
    let _registration = Registration { shared, conn, key: key.clone() };
    // A bridge publishes its devices' descriptions, which can be large (a Zigbee network's
    // device list); only a bridge, once logged in, may send more than the ordinary limit.
    let bridge = shared.ctx.bridges.is_bridge(&device);
    if bridge {
        framed.codec_mut().max_incoming_size = crate::bridges::MAX_BRIDGE_MESSAGE + 1024;
    }
    send(&mut framed, Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present))).await?;
    tracing::info!(device.id = %device, %peer, bridge, persistent, session_present, "MQTT device connected");

    // The device's keep-alive, at most the hub's maximum (which also applies to a device
    // that asks for none); silence for 1.5 times that ends the session.
    let asked = Duration::from_secs(u64::from(connect.keep_alive));
    let keep_alive = if asked.is_zero() { shared.ctx.max_keep_alive } else { asked.min(shared.ctx.max_keep_alive) };
    let password = Zeroizing::new(connect.login.map(|l| l.password).unwrap_or_default());
    let mut live = Live {
        shared,
        key,
        conn,
        transport,
        password,
        session: Session::new(&device, bridge, persistent, kept),
        pending: FuturesOrdered::new(),
        answered: None,
        draining: false,
        out_tx,
        wake,
    };
    live.run(&mut framed, (out_rx, events), (ended, shutdown), keep_alive.mul_f32(1.5)).await
}

/// Reads the CONNECT, within the deadline (what is left of it after a TLS handshake).
/// `None`: the client went away first.
async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    framed: &mut Framed<S, Codec>,
    transport: Transport,
    waiting: &crate::crowd::Place,
) -> Result<Option<Connect>, ConnError> {
    let connect_timeout = match transport {
        Transport::Tls(left) => left,
        Transport::Local | Transport::Clear => shared.ctx.connect_timeout,
    };
    let first = tokio::select! {
        () = waiting.gives_way.cancelled() => return Err(ConnError::GaveWay),
        first = timeout(connect_timeout, framed.next()) => first,
    };
    match first {
        Err(_) => Err(ConnError::ConnectTimeout),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(Some(Ok(Packet::Connect(c)))) => Ok(Some(c)),
        Ok(Some(Ok(_))) => Err(ConnError::Protocol("first packet was not CONNECT".into())),
    }
}

/// Refuses a login with `code`, noting a wrong secret in the security log.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    framed: &mut Framed<S, Codec>,
    connect: &Connect,
    peer: SocketAddr,
    code: ConnectReturnCode,
) -> Result<(), ConnError> {
    let user = connect.login.as_ref().map(|l| l.username.as_str()).unwrap_or("");
    if code == ConnectReturnCode::BadUserNamePassword {
        // A tenant's own device's failures are the tenancy's; a made-up id's, the hub's
        // own, without the id (it may be anything typed).
        let device = if crate::reading::valid_device_id(user) {
            shared.ctx.store.device(user).await.ok().flatten()
        } else {
            None
        };
        let (subject, name) = match &device {
            Some(d) => (d.tenancy_id.map(Subject::Tenancy).or(Some(Subject::Owner)), d.id.as_str()),
            None => (None, ""),
        };
        shared.ctx.audit.failure("device login refused", subject, (name, peer.ip()), "MQTT: wrong device id or secret");
    }
    if REFUSED_LOGINS.log_this(peer.ip()) {
        tracing::warn!(%peer, user, reason = ?code, "MQTT login refused");
    }
    let _ = send(framed, Packet::ConnAck(ConnAck::new(code, false))).await;
    Err(ConnError::Refused)
}

/// Plain MQTT from elsewhere than the hub: only for a device marked as unable to do TLS.
async fn may_use_clear<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    framed: &mut Framed<S, Codec>,
    device: &str,
    peer: SocketAddr,
) -> Result<(), ConnError> {
    match shared.ctx.store.device(device).await {
        Ok(Some(record)) if record.plaintext => {
            if let Err(error) = shared.ctx.store.note_device_in_clear(device, shared.ctx.clock.now_ms()).await {
                tracing::warn!(%error, "could not note a plain MQTT connection");
            }
            Ok(())
        }
        Ok(record) => {
            if IN_CLEAR.log_this(device) {
                tracing::warn!(device.id = %device, %peer, "plain MQTT refused: the device is not marked as unable to do TLS (use port 8883 with the hub's CA certificate)");
            }
            // A tenant's own device's refusals are the tenancy's.
            let subject = record.and_then(|r| r.tenancy_id).map(Subject::Tenancy).or(Some(Subject::Owner));
            let why = "MQTT in clear from a device not marked as unable to do TLS";
            shared.ctx.audit.failure("plain MQTT refused", subject, (device, peer.ip()), why);
            let _ = send(framed, Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false))).await;
            Err(ConnError::Refused)
        }
        Err(error) => {
            tracing::error!(%error, "could not read a device");
            let _ = send(framed, Packet::ConnAck(ConnAck::new(ConnectReturnCode::ServiceUnavailable, false))).await;
            Err(ConnError::Refused)
        }
    }
}

/// A logged-in connection: its session's state and the answers it owes, in order.
struct Live<'a> {
    shared: &'a Shared,
    /// (device, client id).
    key: (String, String),
    conn: u64,
    transport: Transport,
    /// What it logged in with, checked again when device events were missed.
    password: Zeroizing<String>,
    session: Session,
    /// Answers in the order their packets came (a PUBACK waits for its commit).
    pending: FuturesOrdered<Ack>,
    /// When the last acknowledgement of a publish was sent.
    answered: Option<Instant>,
    /// The client disconnected or the hub is stopping: what is owed is sent, then it ends.
    draining: bool,
    /// Where the router delivers this connection's commands.
    out_tx: mpsc::Sender<Publish>,
    /// Wakes a persistent session for what was queued for it.
    wake: Arc<tokio::sync::Notify>,
}

impl Live<'_> {
    fn device(&self) -> &str {
        &self.key.0
    }

    /// Moves bytes until the session ends: answers owed, commands for the device, its
    /// queue, its packets, the events that end it, and its keep-alive.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<S, Codec>,
        (mut out_rx, mut events): (mpsc::Receiver<Publish>, broadcast::Receiver<DeviceEvent>),
        (ended, shutdown): (CancellationToken, CancellationToken),
        keep_alive: Duration,
    ) -> Result<(), ConnError> {
        let mut last_heard = Instant::now();
        loop {
            if self.draining && self.pending.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                Some(answer) = self.pending.next(), if !self.pending.is_empty() => match answer {
                    Ok(Some(Packet::Publish(publish))) if self.session.awaits(&publish) => {
                        if let Some(publish) = self.session.retained_turn(publish) {
                            send(framed, Packet::Publish(publish)).await?;
                        }
                    }
                    Ok(Some(packet)) => {
                        if matches!(packet, Packet::PubAck(_) | Packet::PubRec(_)) {
                            self.answered = Some(Instant::now());
                        }
                        send(framed, packet).await?;
                    }
                    Ok(None) => {}
                    Err(CommitFailed) => return Err(ConnError::CommitFailed),
                },
                () = shutdown.cancelled(), if !self.draining => self.draining = true,
                () = ended.cancelled() => return Ok(()),
                event = events.recv() => if !self.still_allowed(event).await? {
                    return Ok(());
                },
                Some(publish) = out_rx.recv() => if let Some(publish) = self.session.command(publish) {
                    send(framed, Packet::Publish(publish)).await?;
                },
                () = self.wake.notified(), if self.session.is_persistent() && self.session.room() > 0 => {
                    let queued = self.shared.queued(&self.key, self.session.in_flight(), self.session.room());
                    for publish in self.session.send_queued(queued) {
                        send(framed, Packet::Publish(publish)).await?;
                    }
                }
                packet = framed.next(), if !self.draining && self.pending.len() < MAX_INFLIGHT => {
                    last_heard = Instant::now();
                    match packet {
                        None => self.draining = true,
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(packet)) => self.on_packet(packet).await?,
                    }
                },
                () = sleep_until(last_heard + keep_alive) => return Err(ConnError::KeepAlive),
            }
        }
    }

    /// Whether the session goes on after a device event: not when what its device may do
    /// changed. When events were missed, its credentials are checked again.
    async fn still_allowed(
        &mut self,
        event: Result<DeviceEvent, broadcast::error::RecvError>,
    ) -> Result<bool, ConnError> {
        let device = self.device();
        match event {
            Ok(DeviceEvent::PlaintextRevoked(id)) if id == device && self.transport != Transport::Clear => Ok(true),
            Ok(event) if event.device() == device => {
                tracing::info!(device.id = %device, ?event, "closing MQTT session: what the device may do changed");
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let store = &self.shared.ctx.store;
                let now = self.shared.ctx.clock.now_ms();
                let valid = devices::verify(store, device, self.password.as_bytes(), now).await.unwrap_or(false);
                let clear_ok = self.transport != Transport::Clear
                    || store.device(device).await.ok().flatten().is_some_and(|d| d.plaintext);
                if !(valid && clear_ok) {
                    tracing::info!(device.id = %device, "closing MQTT session: its device may no longer use it");
                }
                Ok(valid && clear_ok)
            }
            Err(broadcast::error::RecvError::Closed) => Err(ConnError::Closed),
        }
    }

    /// How soon this client needs its next acknowledgement: at once when it has others
    /// in flight (a bridge's burst, a client streaming) or sends one at a time right after
    /// each answer; otherwise it is a device reporting now and then.
    fn urgency(&self) -> Urgency {
        let streaming = !self.pending.is_empty() || self.answered.is_some_and(|at| at.elapsed() < ONE_AT_A_TIME);
        if streaming { Urgency::Waiting } else { Urgency::Quiet }
    }

    /// One packet from the client.
    async fn on_packet(&mut self, packet: Packet) -> Result<(), ConnError> {
        let shared = self.shared;
        match packet {
            Packet::Publish(publish) => {
                let answer = on_publish(shared, &self.key.0, self.session.is_bridge(), self.urgency(), publish).await?;
                self.pending.push_back(answer);
            }
            Packet::PubRel(rel) => self.pending.push_back(ready(Packet::PubComp(PubComp::new(rel.pkid)))),
            Packet::Subscribe(sub) => {
                let device = self.key.0.clone();
                // Not a former tenant's: kept until its shred, handed out to no one.
                let (rule, now) = (shared.ctx.store.ownership(), shared.ctx.clock.now_ms());
                let still =
                    |k: &super::retained::Kept| rule.rule.acts_at(k.subject, now) && shared.ctx.bridges.retains(k);
                let out = self.session.subscribe(&sub.filters, |f| shared.ctx.retained.matching(&device, f, still));
                for (filter, qos) in out.routed {
                    shared.router.add(&device, self.conn, filter, self.out_tx.clone(), qos);
                }
                if let Some(list) = out.save {
                    shared.save_subscriptions(&self.key, &list).await;
                }
                self.pending.push_back(ready(Packet::SubAck(SubAck::new(sub.pkid, out.codes))));
                for publish in out.then {
                    self.pending.push_back(ready(Packet::Publish(publish)));
                }
            }
            Packet::Unsubscribe(unsub) => {
                for filter in &unsub.topics {
                    shared.router.remove(self.device(), self.conn, Some(filter));
                }
                if let Some(list) = self.session.unsubscribe(&unsub.topics) {
                    shared.save_subscriptions(&self.key, &list).await;
                }
                self.pending.push_back(ready(Packet::UnsubAck(UnsubAck::new(unsub.pkid))));
            }
            Packet::PingReq => self.pending.push_back(ready(Packet::PingResp)),
            Packet::Disconnect => self.draining = true,
            Packet::PubAck(ack) => {
                if let Some(seq) = self.session.acknowledged(ack.pkid) {
                    shared.acknowledged(&self.key, seq).await;
                }
                // Room for more of what is queued.
                self.wake.notify_one();
            }
            // We send nothing at QoS 2; nothing else may come from a client.
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            other => return Err(ConnError::Protocol(format!("unexpected {:?} from client", packet_name(&other)))),
        }
        Ok(())
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::SubAck(_) => "SUBACK",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingResp => "PINGRESP",
        _ => "packet",
    }
}

/// Checks CONNECT: MQTT 3.1.1, username = device id, password = its secret.
async fn authenticate(store: &Store, connect: &Connect, now: i64) -> Result<String, ConnectReturnCode> {
    if connect.protocol != Protocol::V4 {
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        return Err(ConnectReturnCode::BadClientId);
    }
    let Some(login) = &connect.login else { return Err(ConnectReturnCode::NotAuthorized) };
    match devices::verify(store, &login.username, login.password.as_bytes(), now).await {
        Ok(true) => Ok(login.username.clone()),
        Ok(false) => Err(ConnectReturnCode::BadUserNamePassword),
        Err(error) => {
            tracing::error!(%error, "could not check device credentials");
            Err(ConnectReturnCode::ServiceUnavailable)
        }
    }
}

async fn on_publish(
    shared: &Shared,
    device: &str,
    bridge: bool,
    urgency: Urgency,
    publish: Publish,
) -> Result<Ack, ConnError> {
    let ctx = &shared.ctx;
    let ack = |pkid| match publish.qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(pkid))),
        QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(pkid))),
    };
    let reply = ack(publish.pkid);
    let now = ctx.ingest.now_ms();
    let read = match bridge && !hearth::is_own(device, &publish.topic) {
        true => match ctx.bridges.publish(device, &publish.topic, &publish.payload, now).await {
            Err(crate::bridges::Refusal::Store) => return Err(ConnError::CommitFailed),
            Err(refusal) => Err(refusal.to_string()),
            Ok(published) => {
                // What the hub asks of a device it just met goes to the connection it came on.
                for request in published.requests {
                    shared.router.route_to(&request.bridge, &request.topic, &request.payload.into());
                }
                Ok(published.readings)
            }
        },
        false => hearth::readings(device, &publish.topic, &publish.payload, now).map_err(|r| r.to_string()),
    };
    let readings = match read {
        Ok(readings) if readings.is_empty() => return Ok(Box::pin(std::future::ready(Ok(reply)))),
        Ok(readings) => readings,
        Err(reason) => {
            ctx.rejections.record(device, "mqtt", &reason, now);
            return Ok(Box::pin(std::future::ready(Ok(reply))));
        }
    };
    if reply.is_none() {
        ctx.ingest.submit(readings).await.map_err(|_| ConnError::Closed)?;
        return Ok(Box::pin(std::future::ready(Ok(None))));
    }
    let receipt = ctx.ingest.submit_acked(readings, urgency).await.map_err(|_| ConnError::Closed)?;
    Ok(Box::pin(async move {
        match receipt.await {
            Ok(Ok(())) => Ok(reply),
            _ => Err(CommitFailed),
        }
    }))
}
