//! Devices over CoAP: libcoap's `coap-client-openssl` over DTLS with each device's own
//! pre-shared key, and Observe seen by both libcoap and aiocoap.

use std::process::{Command, Stdio};
use std::time::Duration;

use hearth_tests::{Output, Peer, TestHub, free_udp_port, path_str, run_tool, wait_until};
use serde_json::{Value, json};

fn coaps(hub: &TestHub, path: &str) -> anyhow::Result<String> {
    let addr = hub.coap_dtls.ok_or_else(|| anyhow::anyhow!("no CoAP/DTLS"))?;
    Ok(format!("coaps://{addr}{path}"))
}

/// libcoap's client over DTLS-PSK; returns everything it printed. (It exits 0 even when the
/// handshake fails, so tests look at what it printed.)
fn coap_client(args: &[&str]) -> anyhow::Result<String> {
    let (_, out) = run_tool("coap-client-openssl", args)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_posts_and_reads_over_dtls_with_its_own_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (a, a_key) = hub.add_device(&owner, "Thermostat").await?;
    let (b, b_key) = hub.add_device(&owner, "Window").await?;
    let uri = coaps(&hub, &format!("/d/{a}/temperature"))?;

    // A confirmable POST is answered after the commit: the reading is there at once.
    let out = coap_client(&["-m", "post", "-u", &a, "-k", &a_key, "-e", "21.5", &uri])?;
    assert!(!out.contains("4.") && !out.contains("5."), "{out}");
    let stored = hub.readings(&owner, &a, "temperature").await?;
    assert_eq!(stored.len(), 1, "{out}");
    assert_eq!(stored[0]["value"], 21.5);
    let multi = coaps(&hub, &format!("/d/{a}"))?;
    coap_client(&["-m", "put", "-u", &a, "-k", &a_key, "-e", r#"{"humidity":41,"window":"closed"}"#, &multi])?;
    assert_eq!(hub.readings(&owner, &a, "humidity").await?[0]["value"], 41.0);

    let out = coap_client(&["-m", "get", "-u", &a, "-k", &a_key, &uri])?;
    assert_eq!(out.trim(), "21.5");
    let out = coap_client(&["-m", "get", "-u", &a, "-k", &a_key, &coaps(&hub, "/.well-known/core")?])?;
    assert!(out.contains(&format!("</d/{a}/temperature>;rt=\"hearth.reading\";obs")), "{out}");
    assert!(!out.contains(&b), "discovery lists only the device's own resources: {out}");

    // Bad input: a clear 4.xx with a diagnostic, nothing stored.
    let out = coap_client(&["-m", "post", "-u", &a, "-k", &a_key, "-e", "NaN", &uri])?;
    assert!(out.contains("4.00") && out.contains("not finite"), "{out}");
    let out =
        coap_client(&["-m", "post", "-u", &a, "-k", &a_key, "-e", "1", &coaps(&hub, &format!("/d/{a}/bad%20name"))?])?;
    assert!(out.contains("4.00") && out.contains("invalid metric name"), "{out}");
    let out = coap_client(&["-m", "get", "-u", &a, "-k", &a_key, &coaps(&hub, "/nothing/here")?])?;
    assert!(out.contains("4.04"), "{out}");

    // A cannot write as B, even with a valid session of its own.
    let as_b = coaps(&hub, &format!("/d/{b}/temperature"))?;
    let out = coap_client(&["-m", "post", "-u", &a, "-k", &a_key, "-e", "99", &as_b])?;
    assert!(out.contains("4.03"), "{out}");
    // A wrong key or an unknown identity fails the handshake.
    let out = coap_client(&["-m", "post", "-u", &b, "-k", &a_key, "-e", "99", &as_b])?;
    assert!(out.to_lowercase().contains("alert") || out.contains("cannot send"), "{out}");
    let out = coap_client(&["-m", "post", "-u", "nosuchdev", "-k", &a_key, "-e", "99", &as_b])?;
    assert!(out.to_lowercase().contains("alert") || out.contains("cannot send"), "{out}");
    assert!(hub.readings(&owner, &b, "temperature").await?.is_empty());
    assert_eq!(hub.readings(&owner, &a, "temperature").await?.len(), 1);

    // B with its own key is fine.
    coap_client(&["-m", "post", "-u", &b, "-k", &b_key, "-e", "19", &as_b])?;
    assert_eq!(hub.readings(&owner, &b, "temperature").await?[0]["value"], 19.0);
    let device: Value = owner.get(hub.url(&format!("/api/devices/{a}"))).send().await?.json().await?;
    assert!(device["rejected"]["count"].as_u64().is_some_and(|n| n >= 3), "{device}");
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_packet_or_half_open_handshake_blocks_no_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, key) = hub.add_device(&owner, "Sensor").await?;
    let addr = hub.coap_dtls.ok_or_else(|| anyhow::anyhow!("no CoAP/DTLS"))?;
    // Garbage, and the first bytes of a ClientHello that never continues, from two peers.
    let stray = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    stray.send_to(b"\x00\x01garbage that is not DTLS", addr).await?;
    let half = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    half.send_to(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1, 0, 0], addr).await?;
    let started = std::time::Instant::now();
    let out = coap_client(&["-m", "post", "-u", &id, "-k", &key, "-e", "7", &coaps(&hub, &format!("/d/{id}/t"))?])?;
    assert!(started.elapsed() < Duration::from_secs(8), "a good device waited {:?}: {out}", started.elapsed());
    assert_eq!(hub.readings(&owner, &id, "t").await?[0]["value"], 7.0, "{out}");
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_and_aiocoap_observe_each_new_value() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = hearth_tests::Config::for_test(&dir.path().join("data"));
    config.coap.plain = true;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (id, key) = hub.add_device(&owner, "Display").await?;
    let plain = hub.coap_plain.ok_or_else(|| anyhow::anyhow!("no plain CoAP"))?;
    let uri = coaps(&hub, &format!("/d/{id}/power"))?;
    coap_client(&["-m", "post", "-u", &id, "-k", &key, "-e", "100", &uri])?;

    // Two observers: libcoap over DTLS, aiocoap over plain CoAP (key in the query). Their
    // output is read as it comes (libcoap's unbuffered through stdbuf), so the test knows
    // when each has seen a value instead of guessing how long that takes.
    let mut libcoap = Command::new("stdbuf")
        .args(["-o0", "coap-client-openssl", "-s", "6", "-m", "get", "-u", &id, "-k", &key, &uri])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aiocoap_observe.py");
    let mut aiocoap = Command::new("python3")
        .arg(&script)
        .arg(format!("coap://{plain}/d/{id}/power?k={key}"))
        .arg("5")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let lc = Output::watch(libcoap.stdout.take())?;
    let ai = Output::watch(aiocoap.stdout.take())?;
    // Once both have the first value they are registered; then two new values through
    // CoAP, each seen by both before the next: every committed value is a notification.
    for (value, seen) in [("200", "100"), ("300", "100200")] {
        wait_until(Duration::from_secs(10), &format!("both observers to see {seen}"), || async {
            (lc.text().ends_with(seen) && ai.text().contains(&format!("Content {}", &seen[seen.len() - 3..])))
                .then_some(())
        })
        .await?;
        coap_client(&["-m", "post", "-u", &id, "-k", &key, "-e", value, &uri])?;
    }

    let libcoap = tokio::task::spawn_blocking(move || libcoap.wait_with_output()).await??;
    let aiocoap = tokio::task::spawn_blocking(move || aiocoap.wait_with_output()).await??;
    let (lc, ai) = (lc.finish(), ai.finish());
    assert_eq!(lc.trim_end(), "100200300", "libcoap saw: {lc} {}", String::from_utf8_lossy(&libcoap.stderr));
    let lines: Vec<&str> = ai.lines().collect();
    assert_eq!(
        lines,
        ["2.05 Content 100", "2.05 Content 200", "2.05 Content 300"],
        "aiocoap saw: {ai} {}",
        String::from_utf8_lossy(&aiocoap.stderr)
    );

    // Plain CoAP without the key is refused.
    let (_, out) = run_tool("coap-client-notls", &["-m", "post", "-e", "1", &format!("coap://{plain}/d/{id}/power")])?;
    assert!(out.contains("4.01"), "{out}");
    hub.stop().await?;
    Ok(())
}

/// libcoap's first ClientHello, as captured (no cookie yet).
const CLIENT_HELLO: &[u8] = include_bytes!("../../hub/tests/data/client-hello-libcoap-openssl.bin");

/// `hello` sent again with `cookie`, as a client answers a HelloVerifyRequest (RFC 6347
/// §4.2.1): the cookie in its field, the lengths grown to match, record and message
/// sequence numbers 1.
fn with_cookie(hello: &[u8], cookie: &[u8]) -> Vec<u8> {
    let session = usize::from(hello[13 + 12 + 34]);
    let at = 13 + 12 + 35 + session;
    let mut out = hello[..at].to_vec();
    out.push(u8::try_from(cookie.len()).unwrap_or(0));
    out.extend_from_slice(cookie);
    out.extend_from_slice(&hello[at + 1 + usize::from(hello[at])..]);
    let grow = |bytes: &mut [u8], by: usize| {
        let n = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)) + by;
        for (i, b) in bytes.iter_mut().rev().enumerate() {
            *b = (n >> (8 * i)) as u8;
        }
    };
    grow(&mut out[11..13], cookie.len());
    grow(&mut out[14..17], cookie.len());
    grow(&mut out[22..25], cookie.len());
    out[10] = 1;
    out[18] = 1;
    out
}

/// The handshake message type in the first record of each datagram that arrives on `socket`
/// within `wait`, with the cookie of a HelloVerifyRequest (type 3).
async fn answers(socket: &tokio::net::UdpSocket, wait: Duration) -> Vec<(u8, Vec<u8>)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    let until = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
        let Some(&kind) = buf[..n].get(13) else { continue };
        let cookie = match buf[..n].get(27) {
            Some(&len) if kind == 3 => buf[28..n].get(..usize::from(len)).unwrap_or_default().to_vec(),
            _ => Vec::new(),
        };
        seen.push((kind, cookie));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_client_hellos_cost_no_state_and_push_no_one_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, key) = hub.add_device(&owner, "Sensor").await?;
    let addr = hub.coap_dtls.ok_or_else(|| anyhow::anyhow!("no CoAP/DTLS"))?;

    // A peer at 127.0.0.2 asks, and gets a cookie.
    let peer = tokio::net::UdpSocket::bind("127.0.0.2:0").await?;
    peer.connect(addr).await?;
    peer.send(CLIENT_HELLO).await?;
    let first = answers(&peer, Duration::from_secs(1)).await;
    let [(3, cookie)] = first.as_slice() else { anyhow::bail!("not one HelloVerifyRequest: {first:?}") };
    anyhow::ensure!(!cookie.is_empty(), "an empty cookie");

    // The cookie is bound to the address it was sent to: from elsewhere it buys nothing.
    let elsewhere = tokio::net::UdpSocket::bind("127.0.0.3:0").await?;
    elsewhere.connect(addr).await?;
    elsewhere.send(&with_cookie(CLIENT_HELLO, cookie)).await?;
    let replayed = answers(&elsewhere, Duration::from_millis(500)).await;
    assert!(replayed.iter().all(|(kind, _)| *kind == 3), "a cookie worked from another address: {replayed:?}");

    // Two hundred forged sources, each sending ClientHellos and never answering.
    let mut forged = Vec::new();
    for n in 10..210u8 {
        let socket = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, n), 0)).await?;
        socket.connect(addr).await?;
        forged.push(socket);
    }
    for _ in 0..3 {
        for socket in &forged {
            socket.send(CLIENT_HELLO).await?;
        }
    }
    // The hub has read the flood (or the kernel dropped what it could not hold): a source
    // that asks after it gets its cookie request, and the hub reads its socket in order.
    // Asked again every 100 ms, as a DTLS client would (a datagram may be dropped).
    let probe = tokio::net::UdpSocket::bind("127.0.0.250:0").await?;
    probe.connect(addr).await?;
    let answered = wait_until(Duration::from_secs(10), "the hub's answer after the flood", || async {
        probe.send(CLIENT_HELLO).await.ok()?;
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_millis(100), probe.recv(&mut buf)).await.ok()?.ok()?;
        Some(buf[..n].get(13).copied())
    })
    .await?;
    assert_eq!(answered, Some(3), "the hub's answer after the flood is no cookie request");

    // The first peer answers with its cookie, after the flood: the handshake goes on (a
    // ServerHello, type 2), because nothing was kept that the flood could push out.
    peer.send(&with_cookie(CLIENT_HELLO, cookie)).await?;
    let second = answers(&peer, Duration::from_secs(1)).await;
    assert_eq!(second.first().map(|(kind, _)| *kind), Some(2), "no ServerHello after the flood: {second:?}");

    // And a real device, with forged ClientHellos still arriving, posts its reading. The
    // flood is paced (200 every 20 ms, for at most 40 s): a flood faster than the hub reads
    // fills the socket's receive buffer, and the kernel drops the device's datagrams with
    // the rest (it retransmits after a second); that is the network's limit, not state.
    let flooding = tokio_util::sync::CancellationToken::new();
    let flood = tokio::spawn({
        let stop = flooding.clone();
        async move {
            for _ in 0..2_000 {
                for socket in &forged {
                    let _ = socket.send(CLIENT_HELLO).await;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        }
    });
    let started = std::time::Instant::now();
    let device = id.clone();
    let out = tokio::task::spawn_blocking({
        let url = coaps(&hub, &format!("/d/{id}/t"))?;
        move || coap_client(&["-m", "post", "-u", &id, "-k", &key, "-e", "7", &url])
    })
    .await??;
    let took = started.elapsed();
    flooding.cancel();
    flood.await?;
    // Within a retransmission or two of a lost datagram (timing on a shared machine is no
    // benchmark: tests/attack/hostile.py measures this on a release build).
    assert!(took < Duration::from_secs(8), "the device waited {took:?} during the flood: {out}");
    assert_eq!(hub.readings(&owner, &device, "t").await?[0]["value"], 7.0, "{out}");
    hub.stop().await?;
    Ok(())
}

/// The hub observes a device that serves its readings (libcoap's `coap-server-openssl`,
/// which accepts only the device's identity and key on its DTLS port): the value it holds
/// when the hub registers, and each new one it notifies, become readings of the device.
/// Plain CoAP is refused for a device not marked as unable to do DTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_observes_a_device_that_serves_its_readings() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (thermo, key) = hub.add_device(&owner, "Thermometer").await?;
    let port = free_udp_port()?;
    let identities = dir.path().join("identities");
    std::fs::write(&identities, format!("CoAP,{thermo},{key}\n"))?;
    let _device = Peer::spawn(
        "coap-server-openssl",
        &["-A", "127.0.0.1", "-p", &port.to_string(), "-k", "not-the-devices-key", "-i", path_str(&identities)?],
    )?;
    let plain = format!("coap://127.0.0.1:{port}/example_data");
    let put = |value: &str| run_tool("coap-client-notls", &["-m", "put", "-B", "2", "-e", value, &plain]);
    // libcoap's clients exit 0 even when nothing answered: read the value back.
    wait_until(Duration::from_secs(10), "libcoap's server", || async {
        put("21.5").ok()?;
        let (_, got) = run_tool("coap-client-notls", &["-m", "get", "-B", "2", &plain]).ok()?;
        got.contains("21.5").then_some(())
    })
    .await?;

    let observe =
        |uris: Value| owner.put(hub.url(&format!("/api/devices/{thermo}/observe"))).json(&json!({ "uris": uris }));
    let refused = observe(json!([plain])).send().await?;
    assert_eq!(refused.status(), 422, "plain CoAP for a device that can do DTLS");
    let secure = format!("coaps://127.0.0.1:{}/example_data", port + 1);
    let set = observe(json!([secure])).send().await?;
    assert_eq!(set.status(), 200, "{}", set.text().await?);
    assert_eq!(set.json::<Value>().await?["observe"], json!([secure]));

    let values = || async {
        let readings = hub.readings(&owner, &thermo, "example_data").await.ok()?;
        Some(readings.iter().filter_map(|r| r["value"].as_f64()).collect::<Vec<f64>>())
    };
    let held = wait_until(Duration::from_secs(15), "the value it held", || async {
        values().await.filter(|v| v.contains(&21.5))
    })
    .await;
    if let Err(e) = held {
        let seen: Value = owner.get(hub.url(&format!("/api/devices/{thermo}"))).send().await?.json().await?;
        anyhow::bail!("{e}: the device says {}", seen["rejected"]);
    }
    // A new value on the device: notified over DTLS, stored.
    put("23.25")?;
    wait_until(Duration::from_secs(10), "the notified value", || async {
        values().await.filter(|v| v.contains(&23.25))
    })
    .await?;

    // Observing another of its resources instead stops observing this one: a later value
    // is not stored. The proof that it would have come: the server's clock (`/time`, which
    // it notifies every second) notified twice after the new value, on the same path.
    let clock = format!("coaps://127.0.0.1:{}/time", port + 1);
    assert_eq!(observe(json!([clock])).send().await?.status(), 200);
    let ticks = || async {
        let readings = hub.readings(&owner, &thermo, "time").await.ok()?;
        Some(readings.iter().filter_map(|r| r["ts"].as_i64()).collect::<Vec<i64>>())
    };
    wait_until(Duration::from_secs(10), "the clock observed", || async { ticks().await.filter(|t| !t.is_empty()) })
        .await?;
    put("30.5")?;
    let put_at = hub.now_ms();
    wait_until(Duration::from_secs(10), "two ticks after the new value", || async {
        ticks().await.filter(|t| t.iter().filter(|ts| **ts > put_at).count() >= 2)
    })
    .await?;
    assert!(!values().await.unwrap_or_default().contains(&30.5), "a value came after observing stopped");
    Ok(())
}

/// A device without Observe (an aiocoap server whose resource is not observable) is polled:
/// each GET's value is stored, again when Max-Age (5 s here) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_observe_is_polled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (thermo, _) = hub.add_device(&owner, "Old thermometer").await?;
    let mark = owner.put(hub.url(&format!("/api/devices/{thermo}/plaintext"))).json(&json!({ "plaintext": true }));
    assert_eq!(mark.send().await?.status(), 200);
    let port = free_udp_port()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aiocoap_poll_server.py");
    let _device =
        Peer::ready("python3", &[path_str(&script)?, &port.to_string()], "listening", Duration::from_secs(60)).await?;
    let uri = format!("coap://127.0.0.1:{port}/temperature");
    wait_until(Duration::from_secs(10), "aiocoap's server", || async {
        let (_, got) = run_tool("coap-client-notls", &["-m", "get", "-B", "2", &uri]).ok()?;
        got.contains("18.5").then_some(())
    })
    .await?;
    let set = owner.put(hub.url(&format!("/api/devices/{thermo}/observe"))).json(&json!({ "uris": [uri] }));
    assert_eq!(set.send().await?.status(), 200);
    let values = || async {
        let readings = hub.readings(&owner, &thermo, "temperature").await.ok()?;
        Some(readings.iter().filter_map(|r| r["value"].as_f64()).collect::<Vec<f64>>())
    };
    wait_until(Duration::from_secs(10), "the first value", || async { values().await.filter(|v| v.contains(&18.5)) })
        .await?;
    run_tool("coap-client-notls", &["-m", "put", "-B", "2", "-e", "19.25", &uri])?;
    wait_until(Duration::from_secs(15), "the polled value", || async { values().await.filter(|v| v.contains(&19.25)) })
        .await?;
    Ok(())
}

/// A device that forgets its observers (it rebooted) sends nothing more: once Max-Age (1 s
/// here) and the hub's 10 s of grace have passed in silence (on the hub's clock, moved on
/// here), the hub registers again and stores what the device says now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_the_device_forgot_is_registered_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (thermo, _) = hub.add_device(&owner, "Cellar thermometer").await?;
    let mark = owner.put(hub.url(&format!("/api/devices/{thermo}/plaintext"))).json(&json!({ "plaintext": true }));
    assert_eq!(mark.send().await?.status(), 200);
    let port = free_udp_port()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aiocoap_forgetful_server.py");
    let uri = format!("coap://127.0.0.1:{port}/temperature");
    let start = |value: &'static str| {
        let script = script.clone();
        async move {
            let port = port.to_string();
            let args = [path_str(&script)?, &port, value];
            Peer::ready("python3", &args, "listening", Duration::from_secs(60)).await
        }
    };
    let device = start("20.5").await?;
    wait_until(Duration::from_secs(10), "aiocoap's server", || async {
        let uri = uri.clone();
        let (_, got) =
            tokio::task::spawn_blocking(move || run_tool("coap-client-notls", &["-m", "get", "-B", "2", &uri]))
                .await
                .ok()?
                .ok()?;
        got.contains("20.5").then_some(())
    })
    .await?;
    let set = owner.put(hub.url(&format!("/api/devices/{thermo}/observe"))).json(&json!({ "uris": [uri] }));
    assert_eq!(set.send().await?.status(), 200);
    let values = || async {
        let readings = hub.readings(&owner, &thermo, "temperature").await.ok()?;
        Some(readings.iter().filter_map(|r| r["value"].as_f64()).collect::<Vec<f64>>())
    };
    wait_until(Duration::from_secs(10), "the registration's value", || async {
        values().await.filter(|v| v.contains(&20.5))
    })
    .await?;
    // The device restarts: same address, no observers, a new value it never notifies.
    drop(device);
    let _device = start("21.75").await?;
    wait_until(Duration::from_secs(10), "the restarted device", || async {
        let uri = uri.clone();
        let get = move || run_tool("coap-client-notls", &["-m", "get", "-B", "2", &uri]);
        let (_, got) = tokio::task::spawn_blocking(get).await.ok()?.ok()?;
        got.contains("21.75").then_some(())
    })
    .await?;
    assert!(!values().await.unwrap_or_default().contains(&21.75), "stored before the grace ran out");
    hub.clock.advance(Duration::from_secs(12));
    wait_until(Duration::from_secs(10), "the value after registering again", || async {
        values().await.filter(|v| v.contains(&21.75))
    })
    .await?;
    Ok(())
}
