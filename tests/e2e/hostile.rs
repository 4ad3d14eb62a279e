//! A hostile home network: what someone on it tried, each as a test. Actors get their own
//! loopback source addresses (127.0.0.2, 127.0.0.3, ...), so per-address limits are really
//! exercised: the attacker, the owner and the device are told apart as they would be on a
//! home network. Every loop is bounded in count and time.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use hearth_tests::{Config, OWNER_PASSWORD, TestHub, mqtt_connect, wait_closed, wait_puback, wait_until};
use rumqttc::{Event, Packet, QoS, SubscribeFilter};
use serde_json::{Value, json};

/// A client whose connections come from `127.0.0.<n>`.
fn from(n: u8) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))).cookie_store(true).build()?)
}

async fn login(hub: &TestHub, client: &reqwest::Client, password: &str) -> anyhow::Result<u16> {
    let body = json!({ "username": "owner", "password": password });
    Ok(client.post(hub.url("/api/login")).json(&body).send().await?.status().as_u16())
}

/// Connecting with another device's client id once took that device's session over (client
/// ids were global, and automatic ones sequential). Now a client id is the device's own: the
/// first device stays connected and keeps publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_take_over_another_devices_session() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (a, a_secret) = hub.add_device(&owner, "Thermostat").await?;
    let (b, b_secret) = hub.add_device(&owner, "Cheap plug").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let (victim, mut victim_events) = mqtt_connect(addr, "living-room", &a, &a_secret).await?;
    let (_attacker, _attacker_events) = mqtt_connect(addr, "living-room", &b, &b_secret).await?;
    victim.publish(format!("hearth/{a}/temperature"), QoS::AtLeastOnce, false, "21.5").await?;
    wait_puback(&mut victim_events, None).await.map_err(|e| anyhow::anyhow!("the first device was cut off: {e}"))?;
    hub.stop().await?;
    Ok(())
}

/// A hundred wrong guesses sent at once were all hashed and judged, because the limit was
/// checked before the hash and counted after it. Now each attempt is counted before its
/// hash: a burst gets a handful of answers and the rest are told to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_guesses_is_counted_before_it_is_hashed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    hub.owner().await?;
    let attacker = from(2)?;
    let guesses = (0..100).map(|n| {
        let (hub, attacker) = (&hub, &attacker);
        async move { login(hub, attacker, &format!("guess number {n}")).await }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let judged = answers.iter().filter(|a| matches!(a, Ok(401))).count();
    // The rest are told to wait: by the login limits (429), or, past the connections one
    // address may hold, by the server (503, or a closed connection once even its refusals
    // are busy).
    let refused = answers.iter().filter(|a| matches!(a, Ok(429 | 503) | Err(_))).count();
    assert_eq!(judged + refused, 100, "every guess is answered 401, 429 or 503: {answers:?}");
    assert!(judged <= 5, "{judged} of 100 guesses sent at once were judged");
    hub.stop().await?;
    Ok(())
}

/// Five wrong guesses once locked the owner out for 15 minutes, wherever they came from. The
/// limits are per user name and source address now: the owner, elsewhere on the network,
/// still logs in while a stranger is being slowed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_lock_the_owner_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    hub.owner().await?;
    let stranger = from(2)?;
    let mut answers = Vec::new();
    for n in 0..10 {
        answers.push(login(&hub, &stranger, &format!("wrong {n}")).await?);
    }
    assert!(answers.contains(&429), "the stranger is slowed down: {answers:?}");
    assert_eq!(login(&hub, &from(3)?, OWNER_PASSWORD).await?, 200, "the owner, elsewhere, logs in");
    hub.stop().await?;
    Ok(())
}

/// Accepting an invite hashed the new password before looking at the code, so a flood of
/// made-up codes kept the hub's cores busy hashing and real logins waited behind it. Codes
/// are checked first now: the flood costs a lookup each, and the owner's login takes about
/// as long as it does on a quiet hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_invite_codes_does_not_hold_up_logins() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    hub.owner().await?;
    let owner = from(3)?;
    let quiet = Instant::now();
    assert_eq!(login(&hub, &owner, OWNER_PASSWORD).await?, 200);
    let quiet = quiet.elapsed();

    let attacker = from(2)?;
    let flood = futures_util::future::join_all((0..300).map(|n| {
        let body = json!({ "code": format!("MADE-UP-{n:04}"), "username": format!("intruder{n}"),
            "password": "a long enough password" });
        let request = attacker.post(hub.url("/api/invites/accept")).json(&body);
        async move { request.send().await.map(|r| r.status().as_u16()) }
    }));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let busy = Instant::now();
        let status = login(&hub, &owner, OWNER_PASSWORD).await;
        (status, busy.elapsed())
    };
    let (answers, (status, busy)) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(flood, probe) }).await?;
    assert_eq!(status?, 200);
    assert!(answers.iter().all(|a| matches!(a, Ok(422 | 503) | Err(_))), "made-up codes are refused: {answers:?}");
    assert!(answers.iter().any(|a| matches!(a, Ok(422))), "and some were looked at: {answers:?}");
    println!("owner login: {quiet:?} on a quiet hub, {busy:?} during the flood");
    assert!(busy < quiet * 10 + Duration::from_millis(500), "the owner's login waited behind the flood: {busy:?}");
    hub.stop().await?;
    Ok(())
}

/// A device could subscribe to any number of filters (and every command was matched against
/// all of them). A session holds a bounded number now; the rest are refused in the SUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_holds_only_so_many_subscriptions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Greedy").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let (client, mut events) = mqtt_connect(addr, "greedy", &id, &secret).await?;
    let (mut granted, mut refused) = (0, 0);
    for batch in 0..10 {
        let filters = (0..100).map(|n| SubscribeFilter::new(format!("hearth/{id}/set/f{batch}-{n}"), QoS::AtMostOnce));
        client.subscribe_many(filters).await?;
        let codes = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => return Ok(ack.return_codes),
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!("{e}")),
                }
            }
        })
        .await??;
        for code in codes {
            match code {
                rumqttc::SubscribeReasonCode::Success(_) => granted += 1,
                rumqttc::SubscribeReasonCode::Failure => refused += 1,
            }
        }
    }
    println!("{granted} of 1000 subscriptions granted, {refused} refused");
    assert!(granted > 0 && granted <= 100, "{granted} subscriptions granted to one session");
    assert_eq!(granted + refused, 1000);
    hub.stop().await?;
    Ok(())
}

/// Keep-alive 0 once meant a session that never timed out. The hub has a maximum: a
/// session that asks for none, or for more, is closed once idle for longer than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_keep_alive_still_ends_when_idle() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_test(&dir.path().join("data"));
    config.mqtt.max_keep_alive_s = 1;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Sleepy").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let mut options = rumqttc::MqttOptions::new("sleepy", addr.ip().to_string(), addr.port());
    options.set_credentials(&id, &secret);
    options.set_keep_alive(Duration::ZERO);
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let opened = Instant::now();
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) =
            tokio::time::timeout(Duration::from_secs(5), events.poll()).await??
        {
            break;
        }
    }
    wait_closed(&mut events).await?;
    println!("an idle session without keep-alive closed after {:?}", opened.elapsed());
    hub.stop().await?;
    Ok(())
}

/// Six hundred idle TCP connections to the MQTT port (re-opened whenever the hub closed
/// them) kept every real device out: connections that had not logged in shared the slots
/// of devices. Now they have a small budget of their own, per source address too: a device
/// connects and publishes through the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_idle_sockets_do_not_keep_a_device_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Door sensor").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = tokio::spawn(idle_flood(addr, 600, stop.clone(), opened.clone()));
    // The flood has opened its 600 sockets.
    flooded(&opened, 600).await?;
    let started = Instant::now();
    let (client, mut events) = mqtt_connect(addr, "door", &id, &secret).await?;
    client.publish(format!("hearth/{id}/open"), QoS::AtLeastOnce, false, "true").await?;
    wait_puback(&mut events, None).await?;
    let took = started.elapsed();
    stop.cancel();
    let opened = flood.await??;
    println!("a device connected and published in {took:?} while {opened} idle sockets were opened at it");
    hub.stop().await?;
    Ok(())
}

/// Keeps `count` idle connections open to `addr` from 127.0.0.2, re-opening those the hub
/// closes, until `stop` (at most 20 s, at most 20,000 connections); returns how many it
/// opened.
pub(crate) async fn idle_flood(
    addr: std::net::SocketAddr,
    count: usize,
    stop: tokio_util::sync::CancellationToken,
    so_far: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut open: Vec<tokio::net::TcpStream> = Vec::new();
    let mut opened = 0;
    while !stop.is_cancelled() && Instant::now() < deadline && opened < 20_000 {
        // Drop the ones the hub closed.
        open.retain(|s| {
            let mut byte = [0u8; 1];
            match s.try_read(&mut byte) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        });
        while open.len() < count && opened < 20_000 {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((Ipv4Addr::new(127, 0, 0, 2), 0).into())?;
            match tokio::time::timeout(Duration::from_millis(500), socket.connect(addr)).await {
                Ok(Ok(stream)) => open.push(stream),
                _ => break,
            }
            opened += 1;
            so_far.store(opened, std::sync::atomic::Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(opened)
}

/// Returns once an [`idle_flood`] has opened `count` sockets (it goes on re-opening those
/// the hub closes).
pub(crate) async fn flooded(so_far: &std::sync::atomic::AtomicUsize, count: usize) -> anyhow::Result<()> {
    let what = format!("{count} idle sockets opened");
    wait_until(Duration::from_secs(20), &what, || async {
        (so_far.load(std::sync::atomic::Ordering::SeqCst) >= count).then_some(())
    })
    .await
}

/// Range parameters near the limits of a 64-bit number wrapped past the caps. They are
/// refused now, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_that_would_overflow_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Meter").await?;
    hub.publish((&id, &secret), &format!("hearth/{id}/power"), "5".into()).await?;
    for query in [
        "from=-9000000000000000000&to=9000000000000000000&points=1",
        "from=-9223372036854775808&to=9223372036854775807",
        "from=0&to=9223372036854775807&points=18446744073709551615",
        "from=9223372036854775807&to=-9223372036854775808",
    ] {
        let url = hub.url(&format!("/api/devices/{id}/metrics/power/readings?{query}"));
        let resp = owner.get(url).send().await?;
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        assert_eq!(status, 422, "{query}: {body}");
    }
    hub.stop().await?;
    Ok(())
}

/// A device named like a spreadsheet formula went into the CSV export as it was, and a
/// spreadsheet would run it. Such cells are neutralised now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_does_not_carry_formulas() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let name = "=HYPERLINK(\"http://192.0.2.1/x\";\"open\")";
    let (id, secret) = hub.add_device(&owner, name).await?;
    hub.publish((&id, &secret), &format!("hearth/{id}/power"), "-5".into()).await?;
    // A device's text reading is a cell too.
    hub.publish((&id, &secret), &format!("hearth/{id}/mode"), "\"@SUM(1+1)*cmd|' /C calc'!A0\"".into()).await?;
    let csv = owner.get(hub.url("/api/export?format=csv")).send().await?.text().await?;
    let rows: Vec<&str> = csv.lines().filter(|l| l.contains(&id)).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    for row in &rows {
        for cell in row.split(',') {
            let text = cell.trim_start_matches('"');
            assert!(!text.starts_with(['=', '+', '-', '@', '\t', '\r']) || text.parse::<f64>().is_ok(), "{row}");
        }
        assert!(row.contains("HYPERLINK"), "the name is still there, as text: {row}");
    }
    assert!(csv.contains("-5\r\n"), "a negative number stays a number: {csv}");
    assert!(csv.contains("'@SUM"), "the text reading is kept, neutralised: {csv}");
    hub.stop().await?;
    Ok(())
}

/// There was no Content-Security-Policy. Every answer carries a strict one now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_a_strict_content_security_policy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    for path in ["/", "/api/health", "/devices/x"] {
        let resp = reqwest::get(hub.url(path)).await?;
        let csp = resp.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        for directive in ["default-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
            assert!(csp.contains(directive), "{path}: {directive:?} not in {csp:?}");
        }
        assert!(!csp.contains("'unsafe-inline'") && !csp.contains("'unsafe-eval'"), "{path}: {csp}");
    }
    hub.stop().await?;
    Ok(())
}

/// Bearer tokens never expired and could be neither listed nor revoked. They expire now
/// (90 days unless asked otherwise), and their holder sees and revokes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_can_be_listed_and_revoked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let mut tokens = Vec::new();
    for name in ["dashboard", "script"] {
        let made: Value =
            owner.post(hub.url("/api/tokens")).json(&json!({ "name": name })).send().await?.json().await?;
        tokens.push((made["id"].as_i64().unwrap_or_default(), made["token"].as_str().unwrap_or_default().to_owned()));
    }
    let with = |token: &str| reqwest::Client::new().get(hub.url("/api/me")).bearer_auth(token.to_owned()).send();
    assert_eq!(with(&tokens[0].1).await?.status(), 200);
    let listed = owner.get(hub.url("/api/tokens")).send().await?;
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await?;
    assert!(listed.contains("dashboard") && listed.contains("expires"), "{listed}");
    assert!(!listed.contains(&tokens[0].1), "a token is shown once, never listed: {listed}");
    let revoked = owner.delete(hub.url(&format!("/api/tokens/{}", tokens[0].0))).send().await?;
    assert_eq!(revoked.status(), 204);
    assert_eq!(with(&tokens[0].1).await?.status(), 401, "a revoked token no longer works");
    assert_eq!(with(&tokens[1].1).await?.status(), 200);
    hub.clock.advance(Duration::from_secs(91 * 24 * 3600));
    assert_eq!(with(&tokens[1].1).await?.status(), 401, "after 90 days a token has expired");
    hub.stop().await?;
    Ok(())
}

/// HTTP had no header timeout, no idle timeout and no connection cap: a few hundred
/// half-sent requests from one address held the server. Now a request's headers must
/// arrive in time (which also ends idle connections), one address holds a bounded number of
/// connections, and the owner, elsewhere, still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_do_not_hold_the_web_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_test(&dir.path().join("data"));
    config.http.header_timeout_s = 1;
    let hub = TestHub::start_with(config).await?;
    hub.owner().await?;
    // One slow request: its headers never finish, so it is closed.
    let mut slow = connect_from(2, hub.http).await?;
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /api/health HTTP/1.1\r\nHost: hub\r\n").await?;
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut slow, &mut buf)).await;
    assert!(read.is_ok(), "a request whose headers never finish is not held open");
    // Hundreds more from the same address: most are refused at once.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = connect_from(2, hub.http).await?;
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\n").await?;
        held.push(s);
    }
    let started = Instant::now();
    assert_eq!(login(&hub, &from(3)?, OWNER_PASSWORD).await?, 200, "the owner, elsewhere, logs in");
    println!("the owner logged in in {:?} while 300 half-sent requests were open", started.elapsed());
    // A refused connection is told 503 (once its request head is in, or after 2 s) and
    // closed; a held one is still waiting for its headers.
    let still_open = || {
        let mut open = 0;
        for s in &held {
            let mut byte = [0u8; 1];
            if matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                open += 1;
            }
        }
        open
    };
    let open = wait_until(Duration::from_secs(10), "the refused connections closed", || async {
        let open = still_open();
        (open <= 32).then_some(open)
    })
    .await
    .unwrap_or_else(|_| still_open());
    assert!(open <= 32, "{open} of 300 connections from one address were held");
    hub.stop().await?;
    Ok(())
}

/// Requests whose headers are complete but whose bodies never come were not bound by the
/// header timeout: from eight addresses they could hold every connection the web server
/// has, and everyone else got 503. Now, when it is full, the address holding the most gives
/// way: the owner still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_from_many_addresses_do_not_keep_the_owner_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    hub.owner().await?;
    let mut held = Vec::new();
    for n in 10..18u8 {
        for _ in 0..40 {
            let mut s = connect_from(n, hub.http).await?;
            let head = "POST /api/login HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{";
            tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes()).await?;
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(login(&hub, &from(4)?, OWNER_PASSWORD).await?, 200, "the owner still logs in");
    println!("the owner logged in in {:?} with 320 trickling requests open from 8 addresses", started.elapsed());
    drop(held);
    hub.stop().await?;
    Ok(())
}

async fn connect_from(n: u8, to: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((Ipv4Addr::new(127, 0, 0, n), 0).into())?;
    Ok(tokio::time::timeout(Duration::from_secs(5), socket.connect(to)).await??)
}

/// One device could register all 256 of the hub's Observe slots, and nobody else could
/// observe anything. Each device has a bounded share now (past it, its oldest observation
/// gives way): it is notified at most that many times per reading, and another device
/// still observes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_cannot_take_every_observe_slot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_test(&dir.path().join("data"));
    config.coap.plain = true;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (greedy, greedy_key) = hub.add_device(&owner, "Greedy").await?;
    let (other, other_key) = hub.add_device(&owner, "Display").await?;
    for (id, key) in [(&greedy, &greedy_key), (&other, &other_key)] {
        hub.publish((id, key), &format!("hearth/{id}/power"), "5".into()).await?;
    }
    let plain = hub.coap_plain.ok_or_else(|| anyhow::anyhow!("no plain CoAP"))?;
    let socket = tokio::net::UdpSocket::bind("127.0.0.2:0").await?;
    socket.connect(plain).await?;
    for n in 0..300u16 {
        observe(&socket, &greedy, &greedy_key, n).await?;
    }
    // The marker: the other device, observed from the same socket. Its next reading is
    // committed, and so notified, after the greedy one's.
    const MARKER: u16 = 9999;
    assert!(observe(&socket, &other, &other_key, MARKER).await?, "the marker's observation");
    // A new reading: how many of the 300 registrations are still notified?
    hub.publish((&greedy, &greedy_key), &format!("hearth/{greedy}/power"), "6".into()).await?;
    hub.publish((&other, &other_key), &format!("hearth/{other}/power"), "7".into()).await?;
    let mut notified = std::collections::BTreeSet::new();
    let mut buf = [0u8; 1500];
    for _ in 0..1000 {
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await??;
        let Ok(p) = coap_lite::Packet::from_bytes(&buf[..len]) else { continue };
        if p.get_token() == MARKER.to_be_bytes() {
            break;
        }
        if p.get_observe_value().is_some() {
            notified.insert(p.get_token().to_vec());
        }
    }
    println!("one device's 300 observations: {} notified of the next reading", notified.len());
    assert!(!notified.is_empty() && notified.len() <= 16, "{} notified", notified.len());
    let elsewhere = tokio::net::UdpSocket::bind("127.0.0.3:0").await?;
    elsewhere.connect(plain).await?;
    assert!(observe(&elsewhere, &other, &other_key, 1000).await?, "another device still observes");
    hub.stop().await?;
    Ok(())
}

/// Registers an observation of `device`'s power with token `n`; whether the answer
/// carries the Observe option (the registration was kept).
async fn observe(socket: &tokio::net::UdpSocket, device: &str, key: &str, n: u16) -> anyhow::Result<bool> {
    use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(RequestType::Get);
    packet.header.message_id = n;
    packet.set_token(n.to_be_bytes().to_vec());
    packet.set_observe_value(0);
    for segment in ["d", device, "power"] {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.add_option(CoapOption::UriQuery, format!("k={key}").into_bytes());
    socket.send(&packet.to_bytes().map_err(|e| anyhow::anyhow!("{e:?}"))?).await?;
    let mut buf = [0u8; 1500];
    loop {
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await??;
        let reply = Packet::from_bytes(&buf[..len]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if reply.get_token() == n.to_be_bytes() {
            return Ok(reply.get_observe_value().is_some());
        }
    }
}

/// The security log: each household reads what happened to it, with source addresses;
/// a flood of failures is one entry with its count; nothing in it is a reading; a tenant's
/// logins are the tenant's, not the owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_log_tells_each_household_what_happened_and_from_where() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    hub.owner().await?;
    let stranger = from(2)?;
    for n in 0..3 {
        assert_eq!(login(&hub, &stranger, &format!("wrong {n}")).await?, 401);
    }
    let owner = from(4)?;
    assert_eq!(login(&hub, &owner, OWNER_PASSWORD).await?, 200);
    let token: Value =
        owner.post(hub.url("/api/tokens")).json(&json!({ "name": "script" })).send().await?.json().await?;
    let revoked = owner.delete(hub.url(&format!("/api/tokens/{}", token["id"]))).send().await?;
    assert_eq!(revoked.status(), 204);
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let regenerated = owner.post(hub.url(&format!("/api/devices/{meter}/credentials"))).send().await?;
    assert_eq!(regenerated.status(), 200);
    let secret = regenerated.json::<Value>().await?["secret"].as_str().unwrap_or(&secret).to_owned();
    hub.publish((&meter, &secret), &format!("hearth/{meter}/power"), "987654.5".into()).await?;
    let (tenant, _) = hub.tenant(&owner, "tessa", json!({})).await?;

    let read = |client: &reqwest::Client| {
        let request = client.get(hub.url("/api/security-log"));
        async move {
            let resp = request.send().await?;
            anyhow::ensure!(resp.status() == 200, "security log: HTTP {}", resp.status());
            anyhow::Ok(resp.text().await?)
        }
    };
    let text = read(&owner).await?;
    let log: Value = serde_json::from_str(&text)?;
    let entries = log.as_array().cloned().unwrap_or_default();
    let has = |kind: &str, f: &dyn Fn(&Value) -> bool| entries.iter().any(|e| e["kind"] == kind && f(e));
    assert!(has("setup", &|_| true), "{text}");
    assert!(
        has("login failed", &|e| e["source"] == "127.0.0.2" && e["count"] == 3),
        "three failures, one entry: {text}"
    );
    assert!(has("login", &|e| e["source"] == "127.0.0.4" && e["actor"] == "owner"), "{text}");
    assert!(has("token", &|e| e["detail"].as_str().is_some_and(|d| d.contains("revoked"))), "{text}");
    assert!(has("device", &|e| e["detail"].as_str().is_some_and(|d| d.contains("new credentials"))), "{text}");
    assert!(has("tenancy", &|_| true), "{text}");
    assert!(!text.contains("987654"), "no reading in the log: {text}");
    assert!(!text.contains("tessa"), "the tenant's joining is theirs, not the owner's: {text}");
    let theirs = read(&tenant).await?;
    assert!(theirs.contains("joined as a tenant") && !theirs.contains("setup"), "{theirs}");
    hub.stop().await?;
    Ok(())
}
