//! The CoAP server (RFC 7252) with Observe (RFC 7641) and resource discovery (RFC 6690).
//! Devices speak DTLS with their own secret as pre-shared key (identity = device id); plain
//! CoAP is off unless the owner enables it for legacy devices on the home network.
//!
//! The `coap` crate provides the plain UDP transport, and `hearth-dtls` the DTLS server
//! (decision 0014); this module owns everything above them: which device is talking (the
//! PSK identity of its DTLS session), routing, acknowledging a confirmable request only after
//! its reading is committed, duplicate detection, and Observe notifications sent when a new
//! value is committed (the crate's own Observe does not do this). It must not touch SQL.
//!
//! Resources: `/d/<device>/<metric>` (POST/PUT a reading, GET the latest value, observable),
//! `/d/<device>` (POST/PUT a JSON object of several metrics), `/.well-known/core`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap::server::{Listener, Responder, UdpCoapListener};
use coap_lite::{CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::Rejections;
use super::decode::{self, DecodeError};
use super::pipeline::{Committed, Ingest, Urgency};
use crate::clock::Clock;
use crate::devices::DeviceEvent;
use crate::reading::{Reading, Value, valid_device_id};
use crate::store::Store;
use crate::store::readings::Keys;

/// How long a message id is remembered to answer retransmissions (RFC 7252 EXCHANGE_LIFETIME).
const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Most observers at once, across all devices, and of one device's resources: one device
/// (or whoever holds its key) cannot take every slot; past its share, its oldest
/// observation gives way.
const MAX_OBSERVERS: usize = 256;
const MAX_OBSERVERS_PER_DEVICE: usize = 16;
/// Most remembered exchanges before the oldest are dropped.
const MAX_EXCHANGES: usize = 4096;

/// What the CoAP server needs from the rest of the hub.
#[derive(Clone)]
pub struct CoapContext {
    pub store: Store,
    pub ingest: Ingest,
    pub rejections: Rejections,
    /// How long a DTLS handshake may take.
    pub handshake_timeout: Duration,
    /// Credentials changed or devices removed: their sessions and observations end.
    pub device_events: broadcast::Sender<DeviceEvent>,
}

/// The bound CoAP sockets.
pub struct CoapListeners {
    pub dtls: Option<hearth_dtls::Listener>,
    pub plain: Option<tokio::net::UdpSocket>,
}

/// How a request came: within a DTLS session (numbered, with the device it proved it is),
/// or in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    Dtls { device: String, session: u64 },
    Plain,
}

impl Transport {
    /// What retransmissions are told apart by, beside the address: a device that began a
    /// new session from the same address starts its message ids afresh.
    fn session(&self) -> u64 {
        match self {
            Self::Dtls { session, .. } => *session,
            Self::Plain => 0,
        }
    }
}

type Incoming = (Vec<u8>, Arc<dyn Responder>, Transport);

/// An open DTLS session: the device the peer proved it is, and what ends the session.
struct Identity {
    device: String,
    ended: CancellationToken,
}

/// Open DTLS sessions by number.
type Sessions = Arc<Mutex<HashMap<u64, Identity>>>;

/// Runs the CoAP server until `shutdown`.
pub async fn serve(ctx: CoapContext, listeners: CoapListeners, shutdown: CancellationToken) {
    let identities: Sessions = Arc::default();
    let mut device_events = ctx.device_events.subscribe();
    let (dtls_tx, mut dtls_rx) = mpsc::unbounded_channel::<Incoming>();
    let (plain_tx, mut plain_rx) = mpsc::unbounded_channel::<(Vec<u8>, Arc<dyn Responder>)>();
    if let Some(listener) = listeners.dtls {
        tracing::info!(addr = %listener.local_addr(), "CoAP over DTLS listening");
        tokio::spawn(accept_dtls(
            listener,
            (ctx.store.clone(), ctx.ingest.clock()),
            ctx.handshake_timeout,
            identities.clone(),
            dtls_tx,
            shutdown.clone(),
        ));
    }
    if let Some(socket) = listeners.plain {
        if let Ok(addr) = socket.local_addr() {
            tracing::warn!(%addr, "plain CoAP (no encryption) listening: secrets and readings cross the network in clear");
        }
        if let Err(error) = Box::new(UdpCoapListener::from_socket(socket)).listen(plain_tx).await {
            tracing::error!(%error, "plain CoAP listener failed");
        }
    }
    let server = Arc::new(Server {
        ctx,
        identities,
        observers: Mutex::new(Vec::new()),
        exchanges: Mutex::new(HashMap::new()),
        next_mid: AtomicU16::new(rand_u16()),
        next_observe: AtomicU32::new(2),
    });
    let mut live = server.ctx.ingest.subscribe();
    let mut events_open = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some((bytes, responder, transport)) = dtls_rx.recv() => {
                tokio::spawn(server.clone().handle(bytes, responder, transport));
            }
            Some((bytes, responder)) = plain_rx.recv() => {
                tokio::spawn(server.clone().handle(bytes, responder, Transport::Plain));
            }
            batch = live.recv() => match batch {
                Ok(batch) => server.notify(&batch).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            event = device_events.recv(), if events_open => match event {
                // Neither changes what a device may do over CoAP.
                Ok(DeviceEvent::PlaintextRevoked(_) | DeviceEvent::NamespacesChanged(_)) => {}
                Ok(event) => server.end_device(event.device()),
                // Events were missed: which credentials changed is unknown, so every DTLS
                // session and observation ends (devices connect again with what they hold).
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => server.end_all(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => events_open = false,
            },
        }
    }
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = crate::crypto::random_bytes(&mut b);
    u16::from_le_bytes(b)
}

/// Serves DTLS peers (decision 0014): nothing is kept for a source until it has returned
/// its cookie; each session's PSK identity (the device id) is recorded against its address,
/// so requests can be checked against it.
async fn accept_dtls(
    listener: hearth_dtls::Listener,
    (store, clock): (Store, Clock),
    handshake_timeout: Duration,
    identities: Sessions,
    sender: mpsc::UnboundedSender<Incoming>,
    shutdown: CancellationToken,
) {
    let mut config = hearth_dtls::Config::new(psk_lookup(store.clone(), clock.clone()));
    config.handshake_timeout = handshake_timeout;
    let (events, mut happened) = mpsc::channel(64);
    tokio::spawn(async move {
        if let Err(error) = listener.run(config, events, shutdown).await {
            tracing::error!(%error, "CoAP/DTLS listener failed: devices cannot connect over DTLS until the hub restarts");
        }
    });
    let mut generation = 0u64;
    while let Some(event) = happened.recv().await {
        let session = match event {
            hearth_dtls::Event::Connected(session) => session,
            // A device that began again: its new handshake goes on.
            hearth_dtls::Event::Refused { why: hearth_dtls::Refusal::Replaced, .. } => continue,
            hearth_dtls::Event::Refused { peer, why: why @ hearth_dtls::Refusal::GaveWay } => {
                if BUSY.log_this(peer.ip()) {
                    tracing::warn!(%peer, %why, "DTLS handshake ended");
                }
                continue;
            }
            hearth_dtls::Event::Refused { peer, why } => {
                if FAILED.log_this(peer.ip()) {
                    tracing::warn!(%peer, %why, "DTLS handshake refused");
                }
                continue;
            }
        };
        generation += 1;
        // Recorded here, in the order sessions finished, so that a change of the device's
        // credentials from now on ends this session.
        let ended = CancellationToken::new();
        if let Ok(mut map) = identities.lock() {
            map.insert(generation, Identity { device: session.identity().to_owned(), ended: ended.clone() });
        }
        let stored = (store.clone(), clock.clone());
        tokio::spawn(pump(session, generation, ended, stored, identities.clone(), sender.clone()));
    }
}

/// Passes one session's requests to the server until the session ends, or the device's
/// credentials change.
async fn pump(
    mut session: hearth_dtls::Session,
    generation: u64,
    ended: CancellationToken,
    (store, clock): (Store, Clock),
    identities: Sessions,
    sender: mpsc::UnboundedSender<Incoming>,
) {
    let (peer, identity) = (session.peer(), session.identity().to_owned());
    // The key the handshake used may have changed (or the device gone) between its lookup
    // and now, before this session could be ended by the change: ask again.
    let current = store.login_secret(&identity, clock.now_ms()).await;
    if !matches!(&current, Ok(Some(secret)) if session.keyed_with(secret.as_bytes())) {
        tracing::info!(device.id = %identity, %peer, "DTLS session ended: the device's key changed during its handshake");
        forget_session(&identities, generation);
        return;
    }
    tracing::info!(device.id = %identity, %peer, "CoAP device connected over DTLS");
    let transport = Transport::Dtls { device: identity, session: generation };
    let responder: Arc<dyn Responder> = Arc::new(DtlsResponder { sender: session.sender(), peer });
    loop {
        tokio::select! {
            request = session.recv() => match request {
                Some(request) => {
                    if sender.send((request, responder.clone(), transport.clone())).is_err() {
                        break;
                    }
                }
                None => break,
            },
            () = ended.cancelled() => {
                tracing::info!(%peer, "DTLS session ended: the device's credentials changed");
                break;
            }
        }
    }
    forget_session(&identities, generation);
}

fn forget_session(identities: &Sessions, generation: u64) {
    if let Ok(mut map) = identities.lock() {
        map.remove(&generation);
    }
}

/// Answers within one DTLS session.
struct DtlsResponder {
    sender: hearth_dtls::Sender,
    peer: SocketAddr,
}

#[async_trait::async_trait]
impl Responder for DtlsResponder {
    async fn respond(&self, response: Vec<u8>) {
        // A session that ended meanwhile: the device will ask again in a new one.
        let _ = self.sender.send(&response);
    }

    fn address(&self) -> SocketAddr {
        self.peer
    }
}

static BUSY: crate::repeated::Repeated = crate::repeated::Repeated::new("DTLS handshake ended to make room");
static FAILED: crate::repeated::Repeated = crate::repeated::Repeated::new("DTLS handshake failed");

/// Pre-shared keys: the device id is the PSK identity, its secret the key.
fn psk_lookup(store: Store, clock: Clock) -> hearth_dtls::PskLookup {
    Arc::new(move |id: &str| {
        if !valid_device_id(id) {
            return None;
        }
        // The handshake runs on a runtime worker; the lookup is one indexed SQLite read.
        // (Blocking in place needs the multi-threaded runtime the hub runs on; a panic in
        // this callback could not unwind through OpenSSL.)
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            tracing::error!("a DTLS handshake needs the multi-threaded runtime");
            return None;
        }
        let (store, id, now) = (store.clone(), id.to_owned(), clock.now_ms());
        let secret =
            tokio::task::block_in_place(|| runtime.block_on(async move { store.login_secret(&id, now).await }));
        match secret {
            Ok(secret) => secret.map(|s| Zeroizing::new(s.as_bytes().to_vec())),
            Err(error) => {
                tracing::error!(%error, "device lookup for a DTLS handshake failed");
                None
            }
        }
    })
}

static FULL: crate::repeated::Repeated = crate::repeated::Repeated::new("CoAP observer refused: too many");

/// A client observing one metric of one device.
struct Observer {
    peer: SocketAddr,
    /// The DTLS session it registered in (0: plain CoAP). A Reset or a deregistration
    /// counts only from the same session, so one forged in clear from the device's address
    /// cannot end an observation made over DTLS; it ends with its session.
    session: u64,
    token: Vec<u8>,
    device: String,
    metric: String,
    responder: Arc<dyn Responder>,
    /// Message id of the last notification, to match a Reset from the client.
    last_mid: u16,
}

/// What we answered to a (peer, message id), for retransmissions.
enum Exchange {
    InProgress(Instant),
    Done(Instant, Vec<u8>),
}

struct Server {
    ctx: CoapContext,
    identities: Sessions,
    observers: Mutex<Vec<Observer>>,
    exchanges: Mutex<HashMap<(SocketAddr, u64, u16), Exchange>>,
    next_mid: AtomicU16,
    next_observe: AtomicU32,
}

/// A response to send: code, payload, and options.
struct Reply {
    code: ResponseType,
    payload: Vec<u8>,
    format: Option<ContentFormat>,
    observe: Option<u32>,
}

impl Reply {
    fn new(code: ResponseType) -> Self {
        Self { code, payload: Vec::new(), format: None, observe: None }
    }

    /// An error with a diagnostic payload (RFC 7252 5.5.2), which clients print.
    fn error(code: ResponseType, why: impl std::fmt::Display) -> Self {
        Self { code, payload: why.to_string().into_bytes(), format: Some(ContentFormat::TextPlain), observe: None }
    }

    fn content(payload: Vec<u8>, format: ContentFormat) -> Self {
        Self { code: ResponseType::Content, payload, format: Some(format), observe: None }
    }
}

impl Server {
    async fn handle(self: Arc<Self>, bytes: Vec<u8>, responder: Arc<dyn Responder>, transport: Transport) {
        let peer = responder.address();
        let packet = match Packet::from_bytes(&bytes) {
            Ok(p) => p,
            Err(error) => {
                tracing::info!(%peer, %error, "garbage CoAP packet dropped");
                // A confirmable message we cannot parse is rejected with a Reset (RFC 7252 4.2).
                if bytes.len() >= 4 && bytes[0] >> 6 == 1 && (bytes[0] >> 4) & 0b11 == 0 {
                    let mut rst = Packet::new();
                    rst.header.set_type(MessageType::Reset);
                    rst.header.code = MessageClass::Empty;
                    rst.header.message_id = u16::from_be_bytes([bytes[2], bytes[3]]);
                    if let Ok(out) = rst.to_bytes() {
                        responder.respond(out).await;
                    }
                }
                return;
            }
        };
        let mid = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Reset, _) => {
                self.forget_observer(peer, transport.session(), |o| o.last_mid == mid);
                return;
            }
            (MessageType::Acknowledgement, _) | (_, MessageClass::Empty) => {
                if packet.header.get_type() == MessageType::Confirmable {
                    // A CoAP ping: answer with a Reset (RFC 7252 4.3).
                    let mut rst = Packet::new();
                    rst.header.set_type(MessageType::Reset);
                    rst.header.message_id = mid;
                    if let Ok(out) = rst.to_bytes() {
                        responder.respond(out).await;
                    }
                }
                return;
            }
            (_, MessageClass::Request(_)) => {}
            _ => return,
        }
        // Retransmission of a request we have seen: answer the same, or stay quiet while the
        // first copy is still being stored.
        let exchange = (peer, transport.session(), mid);
        if let Some(previous) = self.begin_exchange(exchange) {
            if let Some(out) = previous {
                responder.respond(out).await;
            }
            return;
        }
        let reply = self.route(&packet, peer, &responder, &transport).await;
        let out = self.encode_reply(&packet, reply);
        if let Ok(mut exchanges) = self.exchanges.lock() {
            exchanges.insert(exchange, Exchange::Done(Instant::now(), out.clone()));
        }
        responder.respond(out).await;
    }

    /// `None` if this (peer, session, message id) is new (and marks it in progress);
    /// otherwise the stored answer, if there is one yet.
    fn begin_exchange(&self, exchange: (SocketAddr, u64, u16)) -> Option<Option<Vec<u8>>> {
        let Ok(mut exchanges) = self.exchanges.lock() else { return None };
        let now = Instant::now();
        if exchanges.len() >= MAX_EXCHANGES {
            exchanges.retain(|_, e| match e {
                Exchange::InProgress(t) | Exchange::Done(t, _) => now.duration_since(*t) < EXCHANGE_LIFETIME,
            });
        }
        match exchanges.get(&exchange) {
            Some(Exchange::InProgress(t)) if now.duration_since(*t) < EXCHANGE_LIFETIME => Some(None),
            Some(Exchange::Done(t, out)) if now.duration_since(*t) < EXCHANGE_LIFETIME => Some(Some(out.clone())),
            _ => {
                exchanges.insert(exchange, Exchange::InProgress(now));
                None
            }
        }
    }

    /// A piggybacked ACK for a confirmable request, a NON response to a NON request.
    fn encode_reply(&self, request: &Packet, reply: Reply) -> Vec<u8> {
        let mut p = Packet::new();
        if request.header.get_type() == MessageType::Confirmable {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = request.header.message_id;
        } else {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = self.next_mid.fetch_add(1, Ordering::Relaxed);
        }
        p.header.code = MessageClass::Response(reply.code);
        p.set_token(request.get_token().to_vec());
        if let Some(seq) = reply.observe {
            p.set_observe_value(seq);
        }
        if let Some(format) = reply.format {
            p.set_content_format(format);
        }
        p.payload = reply.payload;
        p.to_bytes().unwrap_or_default()
    }

    /// Who is asking: the DTLS identity, or (plain CoAP) the `k=<secret>` query checked
    /// against the device named in the path.
    async fn identify(&self, packet: &Packet, transport: &Transport, claimed: Option<&str>) -> Option<String> {
        match transport {
            // Only while the session is open: requests queued before the device's
            // credentials changed are not its any more.
            Transport::Dtls { device, session } => {
                self.identities.lock().ok().filter(|open| open.contains_key(session)).map(|_| device.clone())
            }
            Transport::Plain => {
                let device = claimed?;
                let key =
                    packet.get_option(CoapOption::UriQuery).into_iter().flatten().find_map(|q| {
                        std::str::from_utf8(q).ok().and_then(|q| q.strip_prefix("k=")).map(str::to_owned)
                    })?;
                let now = self.ctx.ingest.now_ms();
                match crate::devices::verify(&self.ctx.store, device, key.as_bytes(), now).await {
                    Ok(true) => Some(device.to_owned()),
                    _ => None,
                }
            }
        }
    }

    async fn route(
        &self,
        packet: &Packet,
        peer: SocketAddr,
        responder: &Arc<dyn Responder>,
        transport: &Transport,
    ) -> Reply {
        let path: Vec<String> = packet
            .get_option(CoapOption::UriPath)
            .into_iter()
            .flatten()
            .map(|segment| String::from_utf8_lossy(segment).into_owned())
            .collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let MessageClass::Request(method) = packet.header.code else { return Reply::new(ResponseType::BadRequest) };
        let claimed = match path.as_slice() {
            ["d", device, ..] => Some(*device),
            _ => None,
        };
        // Discovery over plain CoAP names the device with `?d=<id>&k=<secret>`.
        let discovery_claim = packet
            .get_option(CoapOption::UriQuery)
            .into_iter()
            .flatten()
            .find_map(|q| std::str::from_utf8(q).ok().and_then(|q| q.strip_prefix("d=")).map(str::to_owned));
        let Some(identity) = self.identify(packet, transport, claimed.or(discovery_claim.as_deref())).await else {
            return Reply::error(ResponseType::Unauthorized, "unknown device or wrong key");
        };
        match (method, path.as_slice()) {
            (RequestType::Get, [".well-known", "core"]) => self.discovery(&identity).await,
            (RequestType::Post | RequestType::Put, ["d", device]) if *device == identity => {
                self.store(&identity, decode::decode_object(device, &packet.payload, self.ctx.ingest.now_ms())).await
            }
            (RequestType::Post | RequestType::Put, ["d", device, metric]) if *device == identity => {
                self.store(
                    &identity,
                    decode::decode_metric(device, metric, &packet.payload, self.ctx.ingest.now_ms()).map(|r| vec![r]),
                )
                .await
            }
            (RequestType::Get, ["d", device, metric]) if *device == identity => {
                self.latest(packet, (peer, transport.session()), responder, device, metric).await
            }
            (_, ["d", device, ..]) if *device != identity => {
                self.ctx.rejections.record(
                    &identity,
                    "coap",
                    &format!("tried to use the resources of device {device:?}"),
                    self.ctx.ingest.now_ms(),
                );
                Reply::error(ResponseType::Forbidden, "a device may only use its own resources")
            }
            (_, [".well-known", "core"] | ["d", _] | ["d", _, _]) => {
                Reply::error(ResponseType::MethodNotAllowed, "method not allowed here")
            }
            _ => Reply::error(ResponseType::NotFound, "no such resource; see /.well-known/core"),
        }
    }

    /// Stores readings and answers once they are committed (2.04), or says why not.
    async fn store(&self, device: &str, decoded: Result<Vec<Reading>, DecodeError>) -> Reply {
        let readings = match decoded {
            Ok(readings) => readings,
            Err(error) => {
                self.ctx.rejections.record(device, "coap", &error.to_string(), self.ctx.ingest.now_ms());
                let code = if matches!(error, DecodeError::TooLarge(_)) {
                    ResponseType::RequestEntityTooLarge
                } else {
                    ResponseType::BadRequest
                };
                return Reply::error(code, error);
            }
        };
        // A confirmable request waits for its answer; CoAP's own retransmission waits 2 s
        // or more, so gathering it with others for a moment is safe.
        match self.ctx.ingest.submit_acked(readings, Urgency::Quiet).await {
            Ok(receipt) => match receipt.await {
                Ok(Ok(())) => Reply::new(ResponseType::Changed),
                _ => Reply::error(ResponseType::ServiceUnavailable, "could not store the reading; try again"),
            },
            Err(_) => Reply::error(ResponseType::ServiceUnavailable, "the hub is shutting down"),
        }
    }

    /// RFC 6690 link format: the requesting device's resources.
    async fn discovery(&self, device: &str) -> Reply {
        let mut links = vec![format!("</d/{device}>;rt=\"hearth.readings\";ct=50")];
        if let Ok(series) = self.ctx.store.series_of(device).await {
            links.extend(series.iter().map(|s| format!("</d/{device}/{}>;rt=\"hearth.reading\";obs;ct=0", s.metric)));
        }
        Reply::content(links.join(",").into_bytes(), ContentFormat::ApplicationLinkFormat)
    }

    /// The latest value, registering or removing an observer as the Observe option asks.
    async fn latest(
        &self,
        packet: &Packet,
        (peer, session): (SocketAddr, u64),
        responder: &Arc<dyn Responder>,
        device: &str,
        metric: &str,
    ) -> Reply {
        // Only readings the credentials' holder owns: not a tenant's, to the owner's key.
        let keys = self.ctx.store.device_keys(device);
        let latest = match self.ctx.store.latest_values(Some(device), Keys::Only(&keys)).await {
            Ok(mut values) => {
                self.ctx.ingest.unrecorded().merge_into(&mut values, Some(device), Keys::Only(&keys));
                values.into_iter().find(|v| v.metric == metric)
            }
            Err(error) => {
                tracing::error!(%error, "reading the latest value failed");
                return Reply::error(ResponseType::InternalServerError, "internal error");
            }
        };
        let token = packet.get_token().to_vec();
        let observe = match packet.get_observe_value() {
            Some(Ok(0)) => {
                let registered = self.add_observer(Observer {
                    peer,
                    session,
                    token,
                    device: device.to_owned(),
                    metric: metric.to_owned(),
                    responder: responder.clone(),
                    last_mid: 0,
                });
                registered.then(|| self.next_observe.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
            }
            Some(Ok(1)) => {
                self.forget_observer(peer, session, |o| o.token == token);
                None
            }
            _ => None,
        };
        match latest {
            Some(v) => Reply { observe, ..Reply::content(render(&v.value).into_bytes(), ContentFormat::TextPlain) },
            // Observing a metric before its first reading is allowed: notifications follow.
            None if observe.is_some() => Reply { observe, ..Reply::new(ResponseType::Content) },
            None => Reply::error(ResponseType::NotFound, "no reading of this metric yet"),
        }
    }

    /// Adds (or renews, for the same peer, session and token) an observer. False if full.
    /// Observations of DTLS sessions that have ended go first.
    fn add_observer(&self, observer: Observer) -> bool {
        let open: std::collections::HashSet<u64> =
            self.identities.lock().map(|open| open.keys().copied().collect()).unwrap_or_default();
        let Ok(mut observers) = self.observers.lock() else { return false };
        observers.retain(|o| {
            (o.session == 0 || open.contains(&o.session))
                && !(o.peer == observer.peer && o.session == observer.session && o.token == observer.token)
        });
        // A device at its share (observations left behind by sessions that ended, say):
        // its oldest observation gives way. The hub at its limit: refused.
        let of_device = observers.iter().filter(|o| o.device == observer.device).count();
        if of_device >= MAX_OBSERVERS_PER_DEVICE
            && let Some(oldest) = observers.iter().position(|o| o.device == observer.device)
        {
            observers.remove(oldest);
        }
        if observers.len() >= MAX_OBSERVERS {
            if FULL.log_this(observer.peer.ip()) {
                tracing::warn!(peer = %observer.peer, device.id = %observer.device, "too many CoAP observers; registration ignored");
            }
            return false;
        }
        observers.push(observer);
        true
    }

    fn forget_observer(&self, peer: SocketAddr, session: u64, which: impl Fn(&Observer) -> bool) {
        if let Ok(mut observers) = self.observers.lock() {
            observers.retain(|o| !(o.peer == peer && o.session == session && which(o)));
        }
    }

    /// Ends every DTLS session and observation.
    fn end_all(&self) {
        tracing::warn!("device events were missed: every CoAP session and observation ends");
        if let Ok(mut sessions) = self.identities.lock() {
            for (_, session) in sessions.drain() {
                session.ended.cancel();
            }
        }
        if let Ok(mut observers) = self.observers.lock() {
            observers.clear();
        }
    }

    /// Ends `device`'s DTLS sessions and observations (its credentials changed, or it was
    /// removed): what was opened with the old credentials stops at once.
    fn end_device(&self, device: &str) {
        if let Ok(mut sessions) = self.identities.lock() {
            sessions.retain(|_, session| {
                let keep = session.device != device;
                if !keep {
                    session.ended.cancel();
                }
                keep
            });
        }
        if let Ok(mut observers) = self.observers.lock() {
            observers.retain(|o| o.device != device);
        }
    }

    /// Sends each observer of a committed reading a notification (NON, 2.05, fresh Observe
    /// sequence number, the registration's token).
    async fn notify(&self, batch: &[Committed]) {
        let mut sends = Vec::new();
        if let Ok(mut observers) = self.observers.lock() {
            for Committed { reading, key } in batch {
                if !observers.iter().any(|o| o.device == reading.device) {
                    continue;
                }
                // As for GET: only readings the device's credentials may read back.
                if !self.ctx.store.device_keys(&reading.device).contains(key) {
                    continue;
                }
                for o in observers.iter_mut().filter(|o| o.device == reading.device && o.metric == reading.metric) {
                    let mut p = Packet::new();
                    p.header.set_type(MessageType::NonConfirmable);
                    p.header.code = MessageClass::Response(ResponseType::Content);
                    p.header.message_id = self.next_mid.fetch_add(1, Ordering::Relaxed);
                    p.set_token(o.token.clone());
                    p.set_observe_value(self.next_observe.fetch_add(1, Ordering::Relaxed) & 0xff_ffff);
                    p.set_content_format(ContentFormat::TextPlain);
                    p.payload = render(&reading.value).into_bytes();
                    o.last_mid = p.header.message_id;
                    if let Ok(out) = p.to_bytes() {
                        sends.push((o.responder.clone(), out));
                    }
                }
            }
        }
        for (responder, out) in sends {
            responder.respond(out).await;
        }
    }
}

/// Values as CoAP clients print them (text/plain).
fn render(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Text(t) => t.clone(),
    }
}
