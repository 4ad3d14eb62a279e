//! The listener against libcoap's real DTLS clients over loopback UDP, and against forged
//! ClientHellos from many loopback addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hearth_dtls::{Census, Config, Event, Listener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

const CLIENT_HELLO: &[u8] = include_bytes!("../../tests/data/client-hello-libcoap-openssl.bin");

/// A listener whose only device is `dev1` with key `secret`, answering every confirmable
/// CoAP request with a piggybacked 2.04 and reporting each session's identity.
async fn start() -> (SocketAddr, Census, mpsc::UnboundedReceiver<String>, CancellationToken) {
    let listener = Listener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap_or_else(|e| panic!("{e}"));
    let (addr, census) = (listener.local_addr(), listener.census());
    let psk = Arc::new(|identity: &str| (identity == "dev1").then(|| Zeroizing::new(b"secret".to_vec())));
    let mut config = Config::new(psk);
    config.handshake_timeout = Duration::from_secs(3);
    let (events, mut happened) = mpsc::channel(16);
    let (identities, seen) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    tokio::spawn(listener.run(config, events, stop.clone()));
    tokio::spawn(async move {
        while let Some(event) = happened.recv().await {
            let Event::Connected(mut session) = event else { continue };
            let _ = identities.send(session.identity().to_owned());
            tokio::spawn(async move {
                while let Some(request) = session.recv().await {
                    let Some(&first) = request.first() else { continue };
                    let token = usize::from(first & 0x0f);
                    let mut reply = vec![0x60 | (first & 0x0f), 0x44, request[2], request[3]];
                    reply.extend_from_slice(&request[4..4 + token]);
                    let _ = session.sender().send(&reply);
                }
            });
        }
    });
    (addr, census, seen, stop)
}

/// libcoap's client: a confirmable PUT over DTLS-PSK. True if it got the 2.04 and
/// complained of nothing.
fn put(tool: &str, addr: SocketAddr, identity: &str, key: &str) -> bool {
    let out = Command::new(tool)
        .args(["-m", "put", "-u", identity, "-k", key, "-e", "1", "-B", "5", &format!("coaps://{addr}/x")])
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // It exits 0 whatever happened; a 2.04 without payload prints nothing.
    out.status.success() && printed.trim().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_clients_handshake_with_their_key() {
    let (addr, census, mut seen, stop) = start().await;
    for tool in ["coap-client-openssl", "coap-client-gnutls"] {
        assert!(
            tokio::task::spawn_blocking(move || put(tool, addr, "dev1", "secret")).await.unwrap_or(false),
            "{tool}"
        );
        assert_eq!(seen.recv().await.as_deref(), Some("dev1"), "{tool}");
    }
    // A wrong key, or an identity nobody has, gets no session.
    let wrong = tokio::task::spawn_blocking(move || put("coap-client-openssl", addr, "dev1", "guess")).await;
    assert!(!wrong.unwrap_or(true));
    let unknown = tokio::task::spawn_blocking(move || put("coap-client-openssl", addr, "dev2", "secret")).await;
    assert!(!unknown.unwrap_or(true));
    assert!(seen.try_recv().is_err());
    // A client that gave up may leave its handshake behind until the handshake deadline (3 s
    // here): none is left once it has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while census.handshakes() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(census.handshakes(), 0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_client_hellos_leave_nothing_and_a_device_gets_through() {
    let (addr, census, mut seen, stop) = start().await;
    let mut forged = Vec::new();
    for n in 10..210u8 {
        let socket =
            tokio::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, n), 0)).await.unwrap_or_else(|e| panic!("{e}"));
        socket.connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        forged.push(socket);
    }
    // Each forged source sends ClientHellos and never answers the HelloVerifyRequest. The
    // flood is bounded: 200 sources, at most 500 rounds, stopped when the device is done.
    let done = CancellationToken::new();
    let flood = tokio::spawn({
        let (done, census) = (done.clone(), census.clone());
        async move {
            let (mut sent, mut most) = (0usize, 0usize);
            for _ in 0..500 {
                for socket in &forged {
                    if socket.send(CLIENT_HELLO).await.is_ok() {
                        sent += 1;
                    }
                }
                most = most.max(census.handshakes() + census.sessions());
                if done.is_cancelled() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            (sent, most)
        }
    });
    let got_through = tokio::task::spawn_blocking(move || put("coap-client-openssl", addr, "dev1", "secret")).await;
    done.cancel();
    let (sent, most) = flood.await.unwrap_or_default();
    assert!(got_through.unwrap_or(false), "the device did not get through {sent} forged ClientHellos");
    assert_eq!(seen.recv().await.as_deref(), Some("dev1"));
    assert!(sent >= 200, "the flood sent only {sent}");
    // Only the device ever had state: a handshake, then a session (it ends as the client exits).
    assert!(most <= 1, "{most} peers held state during a flood of {sent} forged ClientHellos");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_suite_completes_a_handshake() {
    let (addr, _, mut seen, stop) = start().await;
    for suite in ["PSK-AES128-CCM8", "PSK-AES128-CCM", "PSK-AES128-GCM-SHA256"] {
        let out = tokio::task::spawn_blocking(move || {
            Command::new("openssl")
                .args(["s_client", "-dtls1_2", "-connect", &addr.to_string(), "-psk_identity", "dev1"])
                .args(["-psk", "736563726574", "-cipher", &format!("{suite}:@SECLEVEL=0")])
                .stdin(std::process::Stdio::null())
                .output()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("openssl: {e}"));
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains(&format!("Cipher is {suite}")), "{suite}: {printed}");
        assert_eq!(seen.recv().await.as_deref(), Some("dev1"), "{suite}");
    }
    stop.cancel();
}

/// A DTLS client on OpenSSL over a loopback UDP socket, whose datagrams the test can see
/// and add to: what an attacker who forges the device's address could send.
struct Client {
    stream: openssl::ssl::SslStream<Wire>,
    socket: std::net::UdpSocket,
}

struct Wire {
    socket: std::net::UdpSocket,
    sent: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl std::io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.socket.recv(buf)
    }
}

impl std::io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(buf.to_vec());
        }
        self.socket.send(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Client {
    /// Connects from `port` on 127.0.0.1 (0: any) as `dev1` with `key`; also returns every
    /// datagram it sent during the handshake.
    fn connect(addr: SocketAddr, port: u16, key: &'static [u8]) -> std::io::Result<(Self, Vec<Vec<u8>>)> {
        use openssl::ssl::{SslContext, SslMethod, SslStream};
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port))?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut context = SslContext::builder(SslMethod::dtls())?;
        context.set_cipher_list("PSK-AES128-CCM8:@SECLEVEL=0")?;
        context.set_psk_client_callback(move |_, _, identity, psk| {
            identity[..5].copy_from_slice(b"dev1\0");
            psk[..key.len()].copy_from_slice(key);
            Ok(key.len())
        });
        let mut ssl = openssl::ssl::Ssl::new(&context.build())?;
        ssl.set_mtu(1200)?;
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let wire = Wire { socket: socket.try_clone()?, sent: sent.clone() };
        let mut stream = SslStream::new(ssl, wire)?;
        stream.connect().map_err(std::io::Error::other)?;
        let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
        Ok((Self { stream, socket }, sent))
    }

    /// A confirmable CoAP PUT; true if the 2.04 came back.
    fn put(&mut self, mid: u8) -> bool {
        use std::io::{Read, Write};
        let request = [0x40, 0x03, 0, mid, 0xb1, b'x'];
        let mut reply = [0u8; 64];
        self.stream.write_all(&request).is_ok()
            && self.stream.read(&mut reply).is_ok_and(|n| n >= 4 && reply[1] == 0x44)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_short_record_does_not_end_a_session() {
    let (addr, _, _seen, stop) = start().await;
    let survived = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        let (mut client, _) = Client::connect(addr, 0, b"secret")?;
        assert!(client.put(1));
        // An encrypted record (epoch 1) too short to hold a nonce and a tag, as anyone can
        // send from the device's address and port.
        for length in [0u8, 10, 15] {
            let mut forged = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 99, 0, length];
            forged.extend(std::iter::repeat_n(0u8, usize::from(length)));
            client.socket.send(&forged)?;
        }
        Ok(client.put(2))
    })
    .await;
    assert!(matches!(survived, Ok(Ok(true))), "{survived:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_client_hello_does_not_end_a_session_and_a_new_one_replaces_it() {
    let (addr, census, mut seen, stop) = start().await;
    let outcome = tokio::task::spawn_blocking(move || -> std::io::Result<(bool, bool, u16)> {
        let (mut client, sent) = Client::connect(addr, 0, b"secret")?;
        // The second ClientHello, with its cookie, sent again later: a duplicate or a replay.
        let replayed = sent.get(1).cloned().unwrap_or_default();
        client.socket.send(&replayed)?;
        std::thread::sleep(Duration::from_millis(200));
        let kept = client.put(3);
        // The device restarts and begins again from the same port.
        let port = client.socket.local_addr()?.port();
        drop(client);
        let (mut again, _) = Client::connect(addr, port, b"secret")?;
        Ok((kept, again.put(4), port))
    })
    .await;
    let Ok(Ok((kept, renewed, _))) = outcome else { panic!("{outcome:?}") };
    assert!(kept, "a replayed ClientHello ended the session");
    assert!(renewed, "a device that began again from the same port was not served");
    assert_eq!(seen.recv().await.as_deref(), Some("dev1"));
    assert_eq!(seen.recv().await.as_deref(), Some("dev1"));
    assert!(census.sessions() <= 1, "{} sessions for one source", census.sessions());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_never_resumed_past_a_key_lookup() {
    let (addr, _, mut seen, stop) = start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let saved = dir.path().join("session.pem");
    let s_client = move |key: &str, session: &str| {
        let out = Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-connect", &addr.to_string(), "-psk_identity", "dev1", "-psk", key])
            .args(["-cipher", "PSK-AES128-CCM8:@SECLEVEL=0", session, &saved.to_string_lossy()])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = tokio::task::spawn_blocking({
        let s_client = s_client.clone();
        move || s_client("736563726574", "-sess_out")
    })
    .await
    .unwrap_or_default();
    assert!(first.contains("New, TLSv1.2, Cipher is PSK-AES128-CCM8"), "{first}");
    assert_eq!(seen.recv().await.as_deref(), Some("dev1"));
    // Offered the saved session with a wrong key, the hub does a full handshake, which fails.
    let second = tokio::task::spawn_blocking(move || s_client("0badc0de", "-sess_in")).await.unwrap_or_default();
    assert!(!second.contains("Reused"), "{second}");
    assert!(!second.contains("Cipher is PSK"), "{second}");
    assert!(seen.try_recv().is_err());
    stop.cancel();
}

/// `hello` sent again with `cookie`, lengths grown, record and message sequence numbers 1.
fn with_cookie(hello: &[u8], cookie: &[u8]) -> Vec<u8> {
    let at = 13 + 12 + 35 + usize::from(hello[13 + 12 + 34]);
    let mut out = [&hello[..at], &[u8::try_from(cookie.len()).unwrap_or(0)], cookie].concat();
    out.extend_from_slice(&hello[at + 1 + usize::from(hello[at])..]);
    for (from, to) in [(11, 13), (14, 17), (22, 25)] {
        let n = out[from..to].iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)) + cookie.len();
        for (i, b) in out[from..to].iter_mut().rev().enumerate() {
            *b = (n >> (8 * i)) as u8;
        }
    }
    (out[10], out[18]) = (1, 1);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_begins_again_mid_handshake_gets_through() {
    let (addr, _, mut seen, stop) = start().await;
    let outcome = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        // A handshake left halfway: the cookie returned, the server's flight never answered.
        let half = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        half.connect(addr)?;
        half.set_read_timeout(Some(Duration::from_secs(2)))?;
        half.send(CLIENT_HELLO)?;
        let mut buf = [0u8; 2048];
        let n = half.recv(&mut buf)?;
        let cookie = buf[28..n].get(..usize::from(buf[27])).unwrap_or_default().to_vec();
        half.send(&with_cookie(CLIENT_HELLO, &cookie))?;
        let n = half.recv(&mut buf)?;
        assert_eq!(buf[..n].get(13), Some(&2), "no ServerHello");
        // The device restarts and begins again from the same port, at once.
        let port = half.local_addr()?.port();
        drop(half);
        let (mut again, _) = Client::connect(addr, port, b"secret")?;
        Ok(again.put(5))
    })
    .await;
    assert!(matches!(outcome, Ok(Ok(true))), "{outcome:?}");
    assert_eq!(seen.recv().await.as_deref(), Some("dev1"));
    stop.cancel();
}
