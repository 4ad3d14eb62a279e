//! A DTLS 1.2 server for CoAP devices with pre-shared keys (RFC 7252 §9), on OpenSSL.
//!
//! It keeps nothing for a source address until that address has returned the cookie sent
//! to it (RFC 6347 §4.2.1): the first ClientHello of a source is answered by OpenSSL's
//! stateless `DTLSv1_listen` with a HelloVerifyRequest whose cookie is an HMAC of the
//! source address and port under a secret that changes every few minutes. A forged source
//! never sees its cookie, so a flood of forged ClientHellos costs one HMAC each and leaves
//! no state or task behind. Only a source that can receive gets a handshake of its own;
//! those are bounded overall and per address, and so are sessions (decisions 0012, 0014).
//!
//! One UDP socket serves every peer: a loop reads each datagram and hands it to the peer's
//! task, or (a ClientHello from a source without a session) to the cookie check. Each task
//! drives its peer's OpenSSL object over an in-memory queue of datagrams, with OpenSSL's
//! retransmission timer, under a handshake deadline.

mod ffi;
mod hello;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslRef, SslSessionCacheMode, SslStream, SslVersion,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use hello::{ClientHello, client_hello, has_short_record};

/// The suites CoAP devices implement: CCM_8 is the one RFC 7252 requires. OpenSSL 3 places
/// CCM_8's 64-bit tag below its default security level, hence level 0 for this list alone.
const CIPHERS: &str = "PSK-AES128-CCM8:PSK-AES128-CCM:PSK-AES128-GCM-SHA256:@SECLEVEL=0";
/// Largest datagram the hub sends: IPv6's minimum MTU less its and UDP's headers.
const MTU: u32 = 1232;
/// Datagrams waiting for one peer's task; more are dropped, as the network would.
const INBOX: usize = 32;
/// Application datagrams decrypted and not yet taken by the application, per session.
const OUTBOX: usize = 64;
/// How long a cookie secret is used before the next; a cookie made with the one before is
/// still taken, so a cookie is good for one to two periods.
const COOKIE_PERIOD: Duration = Duration::from_secs(300);
/// How often a handshake looks at OpenSSL's retransmission timer (OpenSSL retransmits only
/// when it has expired, 1 s after a flight at first).
const TIMER_TICK: Duration = Duration::from_millis(200);
/// A fatal handshake_failure alert in the clear, at epoch 0: a client that has sent its
/// Finished still reads epoch 0 until the server's ChangeCipherSpec. The sequence number
/// is past any the handshake used.
const HANDSHAKE_FAILURE: [u8; 15] = [21, 0xfe, 0xfd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 2, 40];

/// A device's pre-shared key from its PSK identity, or `None` for an unknown identity.
pub type PskLookup = Arc<dyn Fn(&str) -> Option<Zeroizing<Vec<u8>>> + Send + Sync>;

/// What the server needs and its bounds.
#[derive(Clone)]
pub struct Config {
    pub psk: PskLookup,
    /// How long a handshake may take from the returned cookie to the Finished messages.
    pub handshake_timeout: Duration,
    /// Handshakes at once, and from one address. Past either, the oldest handshake of the
    /// address holding the most gives way.
    pub max_handshakes: usize,
    pub max_handshakes_per_address: usize,
    /// Sessions at once, from one address, and with one identity. Past any, the least
    /// recently heard session (of the address holding the most, of the address, of the
    /// identity) gives way.
    pub max_sessions: usize,
    pub max_sessions_per_address: usize,
    pub max_sessions_per_identity: usize,
}

impl Config {
    pub fn new(psk: PskLookup) -> Self {
        Self {
            psk,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 32,
            max_handshakes_per_address: 4,
            max_sessions: 512,
            max_sessions_per_address: 32,
            max_sessions_per_identity: 4,
        }
    }
}

/// What happened to a peer whose cookie checked out.
pub enum Event {
    /// The handshake finished: a session with the device the PSK identity names.
    Connected(Session),
    /// The handshake did not finish.
    Refused { peer: SocketAddr, why: Refusal },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Ended to make room for others.
    GaveWay,
    /// The same source began again (a device that restarted): nothing to tell anyone.
    Replaced,
    /// Not finished in time; also what a wrong key or an unknown identity looks like (the
    /// client's Finished cannot be decrypted, and DTLS drops it without a word).
    TimedOut,
    /// OpenSSL ended it: no common suite, a malformed message.
    Failed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GaveWay => f.write_str("ended to make room for others"),
            Self::Replaced => f.write_str("replaced by a new handshake from the same source"),
            Self::TimedOut => f.write_str("not finished in time (a wrong key, an unknown identity, or a lost peer)"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// A finished handshake. Dropping it ends the session (with a close_notify).
pub struct Session {
    peer: SocketAddr,
    identity: String,
    /// SHA-256 of the key the handshake used.
    key: [u8; 32],
    incoming: mpsc::Receiver<Vec<u8>>,
    sender: Sender,
    ended: CancellationToken,
}

impl Session {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The PSK identity the peer proved it holds the key of.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the handshake used `key`: a key changed after the handshake looked it up
    /// (while the client held back its Finished, say) is caught by asking again.
    pub fn keyed_with(&self, key: &[u8]) -> bool {
        openssl::memcmp::eq(&self.key, &openssl::sha::sha256(key))
    }

    /// The next application datagram, decrypted; `None` once the session has ended (the
    /// peer closed it, it gave way, or a new session from the same source replaced it).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        tokio::select! {
            datagram = self.incoming.recv() => datagram,
            () = self.ended.cancelled() => None,
        }
    }

    /// Sends to the peer within this session; may be kept after the session is dropped,
    /// and then sends nothing.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

/// Encrypts and sends application datagrams to one session's peer. It does not keep the
/// session's state alive once the session has ended.
#[derive(Clone)]
pub struct Sender {
    stream: Weak<Mutex<SslStream<Datagrams>>>,
    ended: CancellationToken,
}

impl Sender {
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let ended = || io::Error::new(io::ErrorKind::NotConnected, "the DTLS session has ended");
        if self.ended.is_cancelled() {
            return Err(ended());
        }
        let stream = self.stream.upgrade().ok_or_else(ended)?;
        let mut stream = stream.lock().map_err(|_| io::Error::other("a DTLS session's lock is poisoned"))?;
        stream.ssl_write(datagram).map(drop).map_err(|e| e.into_io_error().unwrap_or_else(io::Error::other))
    }
}

/// How many peers the server holds state for: what a flood of forged sources must not raise.
#[derive(Clone)]
pub struct Census(Peers);

impl Census {
    /// Handshakes under way (their cookie checked out).
    pub fn handshakes(&self) -> usize {
        self.0.lock().map_or(0, |sources| sources.values().filter(|s| s.handshake.is_some()).count())
    }

    pub fn sessions(&self) -> usize {
        self.0.lock().map_or(0, |sources| sources.values().filter(|s| s.session.is_some()).count())
    }
}

/// What the server holds for one source address and port: a handshake under way, a
/// session, or both (a device that began again: its session stays until the new handshake
/// has finished, so a replayed ClientHello cannot end it).
#[derive(Default)]
struct Source {
    handshake: Option<Peer>,
    session: Option<Peer>,
    /// Randoms of the handshakes and sessions this source had before: a late or replayed
    /// copy of their ClientHello (its cookie may still be good) must not begin again.
    retired: VecDeque<[u8; 32]>,
}

/// Randoms remembered per source.
const RETIRED: usize = 4;

impl Source {
    fn retire(&mut self, peer: &Peer) {
        if self.retired.len() >= RETIRED {
            self.retired.pop_front();
        }
        self.retired.push_back(peer.random);
    }
}

struct Peer {
    id: u64,
    inbox: mpsc::Sender<Vec<u8>>,
    ended: CancellationToken,
    /// The random of the ClientHello that began it: the same again is a retransmission
    /// (to a handshake) or a replay (to a session).
    random: [u8; 32],
    /// A session's PSK identity.
    identity: String,
    /// When it began, or was last heard from.
    heard: Instant,
}

impl Peer {
    /// Queues `datagram` for the peer's task. Only a session counts it as being heard from:
    /// anyone who forges a handshake's source could send junk to keep it looking fresh.
    fn pass(&mut self, datagram: &[u8], heard: bool) {
        if heard {
            self.heard = Instant::now();
        }
        // A full inbox drops the datagram, as a congested network would.
        let _ = self.inbox.try_send(datagram.to_vec());
    }
}

type Peers = Arc<Mutex<HashMap<SocketAddr, Source>>>;

/// The bound UDP socket, before it serves.
pub struct Listener {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    peers: Peers,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        Ok(Self { socket: Arc::new(socket), addr, peers: Peers::default() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn census(&self) -> Census {
        Census(self.peers.clone())
    }

    /// Serves until `shutdown`, telling `events` of each peer whose cookie checked out.
    pub async fn run(self, config: Config, events: mpsc::Sender<Event>, shutdown: CancellationToken) -> io::Result<()> {
        let cookies = Arc::new(Mutex::new(Cookies::new().map_err(io::Error::other)?));
        let context = context(&config, &cookies).map_err(io::Error::other)?;
        let server = Arc::new(Server { config, socket: self.socket.clone(), peers: self.peers.clone(), events });
        let mut listening = server.listening(&context).map_err(io::Error::other)?;
        let mut buf = vec![0u8; 4096];
        let mut next_id = 0u64;
        loop {
            let (len, from) = tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok(received) => received,
                    // An ICMP error for an earlier send, or a transient failure: go on.
                    Err(_) => continue,
                },
            };
            let datagram = &buf[..len];
            let hello = client_hello(datagram);
            if server.deliver(from, datagram, hello) {
                continue;
            }
            let Some(hello) = hello else { continue };
            // A ClientHello that starts something new: the stateless cookie check.
            if let Ok(mut cookies) = cookies.lock() {
                cookies.rotate().map_err(io::Error::other)?;
            }
            listening.get_mut().load(from, datagram);
            let verified = ffi::listen(listening.ssl());
            listening.get_mut().pending.clear();
            match verified {
                Ok(false) => {}
                Ok(true) => {
                    let fresh = server.listening(&context).map_err(io::Error::other)?;
                    let stream = std::mem::replace(&mut listening, fresh);
                    next_id += 1;
                    server.admit(next_id, from, hello.random, stream, &shutdown);
                }
                // OpenSSL gave up on the listening object: start a clean one.
                Err(_) => listening = server.listening(&context).map_err(io::Error::other)?,
            }
        }
        if let Ok(mut peers) = self.peers.lock() {
            for (_, source) in peers.drain() {
                for peer in [source.handshake, source.session].into_iter().flatten() {
                    peer.ended.cancel();
                }
            }
        }
        Ok(())
    }
}

struct Server {
    config: Config,
    socket: Arc<UdpSocket>,
    peers: Peers,
    events: mpsc::Sender<Event>,
}

impl Server {
    /// A fresh OpenSSL object for the stateless listen, its stream not yet tied to a peer.
    fn listening(&self, context: &SslContext) -> Result<SslStream<Datagrams>, ErrorStack> {
        let peer = Arc::new(Mutex::new(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))));
        let mut ssl = Ssl::new(context)?;
        ssl.set_mtu(MTU)?;
        ssl.set_ex_data(peer_index()?, peer.clone());
        ssl.set_accept_state();
        SslStream::new(ssl, Datagrams { socket: self.socket.clone(), peer, pending: VecDeque::new() })
    }

    /// Passes `datagram` to what `from` has, and says whether it was taken. A ClientHello
    /// is taken only as a retransmission of the one that began the handshake under way, or
    /// (dropped) as a replay of the one that began the session or an earlier one; any other
    /// ClientHello goes to the cookie check. Anything else goes to both the handshake and the session: each
    /// drops what it cannot decrypt.
    fn deliver(&self, from: SocketAddr, datagram: &[u8], hello: Option<ClientHello>) -> bool {
        let Ok(mut peers) = self.peers.lock() else { return false };
        let Some(source) = peers.get_mut(&from) else { return false };
        match hello {
            Some(hello) if !hello.has_cookie => false,
            Some(hello) => {
                if let Some(handshake) = source.handshake.as_mut().filter(|h| h.random == hello.random) {
                    handshake.pass(datagram, false);
                    return true;
                }
                source.session.as_ref().is_some_and(|s| s.random == hello.random)
                    || source.retired.contains(&hello.random)
            }
            None => {
                if let Some(handshake) = source.handshake.as_mut() {
                    handshake.pass(datagram, false);
                }
                if let Some(session) = source.session.as_mut() {
                    session.pass(datagram, true);
                }
                true
            }
        }
    }

    /// Gives a source whose cookie checked out a handshake task, making room if need be. A
    /// handshake the source already had gives way; its session stays until this one ends.
    fn admit(
        self: &Arc<Self>,
        id: u64,
        from: SocketAddr,
        random: [u8; 32],
        stream: SslStream<Datagrams>,
        shutdown: &CancellationToken,
    ) {
        let (inbox, datagrams) = mpsc::channel(INBOX);
        let ended = shutdown.child_token();
        if let Ok(mut peers) = self.peers.lock() {
            if let Some(source) = peers.get_mut(&from)
                && let Some(replaced) = source.handshake.take()
            {
                source.retire(&replaced);
                replaced.ended.cancel();
            }
            let (max, per_address) = (self.config.max_handshakes, self.config.max_handshakes_per_address);
            make_room(&mut peers, Kind::Handshake, |addr, _| addr.ip() == from.ip(), per_address);
            make_room(&mut peers, Kind::Handshake, |_, _| true, max);
            let peer = Peer { id, inbox, ended: ended.clone(), random, identity: String::new(), heard: Instant::now() };
            peers.entry(from).or_default().handshake = Some(peer);
        }
        tokio::spawn(self.clone().drive(id, from, stream, datagrams, ended));
    }

    /// One peer's handshake, then its session, until it ends.
    async fn drive(
        self: Arc<Self>,
        id: u64,
        peer: SocketAddr,
        mut stream: SslStream<Datagrams>,
        mut datagrams: mpsc::Receiver<Vec<u8>>,
        ended: CancellationToken,
    ) {
        if let Err(mut why) = handshake(&mut stream, &mut datagrams, &ended, self.config.handshake_timeout).await {
            // A newer handshake from the same source took its place: the peer is busy with
            // that one, and an alert now would end it.
            let replaced = self
                .peers
                .lock()
                .is_ok_and(|peers| peers.get(&peer).and_then(|s| s.handshake.as_ref()).is_some_and(|h| h.id != id));
            if replaced {
                why = Refusal::Replaced;
            }
            // OpenSSL sent an alert for what it refused; for a handshake ended here, the
            // peer (whose address is proven) is told too, instead of waiting for its own
            // timeout: a wrong key, say, leaves the hub waiting for a Finished message it
            // cannot decrypt, and DTLS drops such records without a word.
            if matches!(why, Refusal::GaveWay | Refusal::TimedOut) {
                let _ = self.socket.try_send_to(&HANDSHAKE_FAILURE, peer);
            }
            self.forget(id, peer);
            let _ = self.events.try_send(Event::Refused { peer, why });
            return;
        }
        let identity = String::from_utf8_lossy(stream.ssl().psk_identity().unwrap_or_default()).into_owned();
        let key = key_index().ok().and_then(|index| stream.ssl().ex_data(index).copied()).unwrap_or_default();
        if !self.establish(id, peer, &identity) {
            return;
        }
        let stream = Arc::new(Mutex::new(stream));
        let (decrypted, incoming) = mpsc::channel(OUTBOX);
        let sender = Sender { stream: Arc::downgrade(&stream), ended: ended.clone() };
        let session = Session { peer, identity, key, incoming, sender, ended: ended.clone() };
        if self.events.send(Event::Connected(session)).await.is_ok() {
            serve(&stream, &mut datagrams, &decrypted, &ended).await;
        }
        ended.cancel();
        if let Ok(mut stream) = stream.lock() {
            let _ = stream.shutdown();
        }
        self.forget(id, peer);
    }

    /// Makes the handshake `id` of `peer` its session, in place of the session it had, and
    /// makes room among sessions. False if the handshake gave way meanwhile.
    fn establish(&self, id: u64, peer: SocketAddr, identity: &str) -> bool {
        let Ok(mut peers) = self.peers.lock() else { return false };
        let Some(mut new) = peers.get_mut(&peer).and_then(|s| s.handshake.take_if(|h| h.id == id)) else {
            return false;
        };
        if let Some(source) = peers.get_mut(&peer)
            && let Some(old) = source.session.take()
        {
            source.retire(&old);
            old.ended.cancel();
        }
        let config = &self.config;
        make_room(&mut peers, Kind::Session, |_, p| p.identity == identity, config.max_sessions_per_identity);
        make_room(&mut peers, Kind::Session, |addr, _| addr.ip() == peer.ip(), config.max_sessions_per_address);
        make_room(&mut peers, Kind::Session, |_, _| true, config.max_sessions);
        new.identity = identity.to_owned();
        new.heard = Instant::now();
        peers.entry(peer).or_default().session = Some(new);
        true
    }

    /// Drops what `peer` holds under `id` (a handshake that failed, a session that ended).
    fn forget(&self, id: u64, peer: SocketAddr) {
        let Ok(mut peers) = self.peers.lock() else { return };
        let Some(source) = peers.get_mut(&peer) else { return };
        for slot in [&mut source.handshake, &mut source.session] {
            if slot.as_ref().is_some_and(|p| p.id == id) {
                *slot = None;
            }
        }
        if source.handshake.is_none() && source.session.is_none() {
            peers.remove(&peer);
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Handshake,
    Session,
}

impl Source {
    fn slot(&mut self, kind: Kind) -> &mut Option<Peer> {
        match kind {
            Kind::Handshake => &mut self.handshake,
            Kind::Session => &mut self.session,
        }
    }
}

/// Ends peers of `kind` among those `counted` until fewer than `most` are left, so one
/// more fits: each time, of the address holding the most of them, the least recently
/// heard.
fn make_room(
    peers: &mut HashMap<SocketAddr, Source>,
    kind: Kind,
    counted: impl Fn(&SocketAddr, &Peer) -> bool,
    most: usize,
) {
    loop {
        let mut held: HashMap<IpAddr, (usize, Option<(Instant, SocketAddr)>)> = HashMap::new();
        for (addr, source) in peers.iter_mut() {
            if let Some(peer) = source.slot(kind).as_ref().filter(|p| counted(addr, p)) {
                let (n, oldest) = held.entry(addr.ip()).or_default();
                *n += 1;
                if oldest.is_none_or(|(heard, _)| peer.heard < heard) {
                    *oldest = Some((peer.heard, *addr));
                }
            }
        }
        if held.values().map(|(n, _)| n).sum::<usize>() < most {
            return;
        }
        // The address holding the most; of equals, the one whose oldest is oldest.
        let victim = held.values().max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1))).and_then(|(_, oldest)| *oldest);
        let Some(gone) = victim.and_then(|(_, addr)| peers.get_mut(&addr)).and_then(|s| s.slot(kind).take()) else {
            return;
        };
        gone.ended.cancel();
        peers.retain(|_, s| s.handshake.is_some() || s.session.is_some());
    }
}

/// Runs the handshake after `DTLSv1_listen` handed it over, feeding OpenSSL the peer's
/// datagrams and firing its retransmission timer, within `timeout`.
async fn handshake(
    stream: &mut SslStream<Datagrams>,
    datagrams: &mut mpsc::Receiver<Vec<u8>>,
    ended: &CancellationToken,
    timeout: Duration,
) -> Result<(), Refusal> {
    // The deadline and the timer's ticks are fixed in time: datagrams arriving (anyone's,
    // forged ones too) neither put them off nor stop retransmissions.
    let deadline = Instant::now() + timeout;
    let mut tick = Instant::now() + TIMER_TICK;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(Refusal::TimedOut);
        }
        if now >= tick {
            ffi::handle_timeout(stream.ssl());
            tick = now + TIMER_TICK;
        }
        match stream.accept() {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
            Err(e) => return Err(Refusal::Failed(e.to_string())),
        }
        tokio::select! {
            () = ended.cancelled() => return Err(Refusal::GaveWay),
            datagram = datagrams.recv() => match datagram {
                Some(datagram) if !has_short_record(&datagram, least_record(stream.ssl())) => {
                    stream.get_mut().pending.push_back(datagram);
                }
                Some(_) => {}
                None => return Err(Refusal::GaveWay),
            },
            () = tokio::time::sleep_until(tick.min(deadline)) => {}
        }
    }
}

/// The shortest encrypted record the suite of `ssl` can decrypt: explicit nonce (8) and tag
/// (8 for CCM_8, else 16). Before a suite is chosen, the longer.
fn least_record(ssl: &SslRef) -> usize {
    match ssl.current_cipher() {
        Some(cipher) if cipher.name().contains("CCM8") => 16,
        _ => 24,
    }
}

/// Decrypts a session's datagrams for the application until the session ends.
async fn serve(
    stream: &Mutex<SslStream<Datagrams>>,
    datagrams: &mut mpsc::Receiver<Vec<u8>>,
    decrypted: &mpsc::Sender<Vec<u8>>,
    ended: &CancellationToken,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let datagram = tokio::select! {
            () = ended.cancelled() => return,
            () = decrypted.closed() => return,
            datagram = datagrams.recv() => match datagram {
                Some(datagram) => datagram,
                None => return,
            },
        };
        let Ok(mut stream) = stream.lock() else { return };
        if has_short_record(&datagram, least_record(stream.ssl())) {
            continue;
        }
        stream.get_mut().pending.push_back(datagram);
        loop {
            match stream.ssl_read(&mut buf) {
                // An application datagram; when the application is behind, it is dropped
                // (CoAP retransmits what it must).
                Ok(len) => {
                    let _ = decrypted.try_send(buf[..len].to_vec());
                }
                // Records OpenSSL discarded (RFC 6347 §4.1.2.7), or all read.
                Err(e) if e.code() == ErrorCode::WANT_READ => break,
                // close_notify, or a fatal alert: the session is over.
                Err(_) => return,
            }
        }
    }
}

/// The OpenSSL context all peers share: DTLS 1.2, the PSK suites, the cookie exchange, no
/// resumption (a resumed session would skip the key lookup, so a changed or removed key
/// would still let its old holder in).
fn context(config: &Config, cookies: &Arc<Mutex<Cookies>>) -> Result<SslContext, ErrorStack> {
    let mut builder = SslContext::builder(SslMethod::dtls())?;
    builder.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_cipher_list(CIPHERS)?;
    builder.set_options(
        SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET | SslOptions::NO_RENEGOTIATION,
    );
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    let psk = config.psk.clone();
    let keys = key_index()?;
    builder.set_psk_server_callback(move |ssl, identity, key| {
        let secret = identity.and_then(|i| std::str::from_utf8(i).ok()).and_then(|i| psk(i));
        // An unknown identity gets a random key, so it fails as a wrong key does: the same
        // way and after the same time, and no one learns which device ids exist.
        let secret = match secret {
            Some(secret) if secret.len() <= key.len() => secret,
            _ => {
                let mut random = Zeroizing::new(vec![0u8; 32]);
                openssl::rand::rand_bytes(&mut random)?;
                random
            }
        };
        key[..secret.len()].copy_from_slice(&secret);
        ssl.set_ex_data(keys, openssl::sha::sha256(&secret));
        Ok(secret.len())
    });
    let generating = cookies.clone();
    builder.set_cookie_generate_cb(move |ssl, out| {
        let peer = peer_of(ssl)?;
        let cookie = generating.lock().map_err(|_| ErrorStack::get())?.current(peer)?;
        out[..cookie.len()].copy_from_slice(&cookie);
        Ok(cookie.len())
    });
    let verifying = cookies.clone();
    builder.set_cookie_verify_cb(move |ssl, cookie| {
        let (Ok(peer), Ok(cookies)) = (peer_of(ssl), verifying.lock()) else { return false };
        cookies.verify(peer, cookie)
    });
    Ok(builder.build())
}

/// The address a peer's OpenSSL object talks to, kept in its ex data for the cookie.
type PeerCell = Arc<Mutex<SocketAddr>>;

fn peer_index() -> Result<Index<Ssl, PeerCell>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, PeerCell>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| index))
}

/// SHA-256 of the key a handshake used, kept in its ex data.
fn key_index() -> Result<Index<Ssl, [u8; 32]>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, [u8; 32]>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| index))
}

fn peer_of(ssl: &SslRef) -> Result<SocketAddr, ErrorStack> {
    let cell = ssl.ex_data(peer_index()?).ok_or_else(ErrorStack::get)?;
    cell.lock().map(|peer| *peer).map_err(|_| ErrorStack::get())
}

/// Cookies: HMAC-SHA256 of the source address and port, under a secret that changes
/// every `COOKIE_PERIOD`, cut to 16 bytes.
struct Cookies {
    current: PKey<Private>,
    previous: PKey<Private>,
    since: Instant,
}

impl Cookies {
    fn new() -> Result<Self, ErrorStack> {
        Ok(Self { current: secret()?, previous: secret()?, since: Instant::now() })
    }

    /// Moves to a new secret once a period has passed; after two idle periods, to two new
    /// ones, so no cookie lives longer than two periods.
    fn rotate(&mut self) -> Result<(), ErrorStack> {
        let elapsed = self.since.elapsed();
        if elapsed >= 2 * COOKIE_PERIOD {
            *self = Self::new()?;
        } else if elapsed >= COOKIE_PERIOD {
            self.previous = std::mem::replace(&mut self.current, secret()?);
            self.since = Instant::now();
        }
        Ok(())
    }

    fn current(&self, peer: SocketAddr) -> Result<[u8; 16], ErrorStack> {
        cookie(&self.current, peer)
    }

    fn verify(&self, peer: SocketAddr, cookie: &[u8]) -> bool {
        [&self.current, &self.previous].into_iter().any(|secret| {
            self::cookie(secret, peer)
                .is_ok_and(|made| cookie.len() == made.len() && openssl::memcmp::eq(&made, cookie))
        })
    }
}

/// A random HMAC key (OpenSSL holds it, and clears it when it is freed).
fn secret() -> Result<PKey<Private>, ErrorStack> {
    let mut secret = Zeroizing::new([0u8; 32]);
    openssl::rand::rand_bytes(secret.as_mut())?;
    PKey::hmac(secret.as_ref())
}

fn cookie(secret: &PKey<Private>, peer: SocketAddr) -> Result<[u8; 16], ErrorStack> {
    let mut signer = Signer::new(MessageDigest::sha256(), secret)?;
    match peer.ip() {
        IpAddr::V4(ip) => signer.update(&ip.octets())?,
        IpAddr::V6(ip) => signer.update(&ip.octets())?,
    }
    signer.update(&peer.port().to_be_bytes())?;
    let mac = signer.sign_to_vec()?;
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&mac[..16]);
    Ok(cookie)
}

/// The datagrams one OpenSSL object reads (queued by its task) and writes (straight to the
/// shared socket, to its peer). Never blocks: an empty queue is `WouldBlock`, which
/// OpenSSL reports as WANT_READ.
struct Datagrams {
    socket: Arc<UdpSocket>,
    peer: PeerCell,
    pending: VecDeque<Vec<u8>>,
}

impl Datagrams {
    /// For the listening object: the one datagram to check, and where an answer goes.
    fn load(&mut self, from: SocketAddr, datagram: &[u8]) {
        if let Ok(mut peer) = self.peer.lock() {
            *peer = from;
        }
        self.pending.clear();
        self.pending.push_back(datagram.to_vec());
    }
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let datagram = self.pending.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Ok(len)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let peer = *self.peer.lock().map_err(|_| io::Error::other("a DTLS peer's lock is poisoned"))?;
        match self.socket.try_send_to(buf, peer) {
            Ok(sent) => Ok(sent),
            // The socket's send buffer is full: the datagram is lost, as on the wire;
            // DTLS retransmits handshake flights, CoAP its confirmable messages.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(buf.len()),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
