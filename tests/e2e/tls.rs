//! TLS by default: the hub as its own certificate authority, HTTPS for the UI and API, MQTT
//! over TLS for devices, plain MQTT only for devices marked as unable to do TLS. Checked
//! with real clients: OpenSSL's `s_client`, curl, Debian's Mosquitto clients and rumqttc.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_tests::{Config, TestHub, mqtt_connect, mqtt_connect_tls, path_str, run_tool, wait_puback};
use rumqttc::QoS;
use serde_json::{Value, json};

/// A hub with everything on TLS, as it runs in a home, and no loopback exemption for
/// plain MQTT (so that these tests, all on loopback, see what another machine would).
fn tls_config(dir: &std::path::Path) -> Config {
    let mut config = Config::for_test(&dir.join("data"));
    config.http.tls = true;
    config.mqtt.plain_from_loopback = false;
    config
}

fn port(addr: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    addr.context("listener not enabled")
}

/// Runs `openssl s_client` against `addr`, verifying the chain against the hub's CA and the
/// name; returns whether it verified, and what it said.
fn s_client(hub: &TestHub, addr: SocketAddr, name: &str) -> anyhow::Result<(bool, String)> {
    let ca = hub.ca_file();
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", &connect, "-CAfile", path_str(&ca)?, "-verify_return_error", "-brief"];
    match name.parse::<IpAddr>() {
        Ok(_) => args.extend(["-verify_ip", name]),
        Err(_) => args.extend(["-verify_hostname", name, "-servername", name]),
    }
    let (ok, out) = run_tool("openssl", &args)?;
    Ok((ok && out.contains("Verification: OK"), out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_and_api_are_served_over_https_under_the_hubs_own_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start_with(tls_config(dir.path())).await?;
    let https = port(hub.https)?;

    // OpenSSL verifies the chain and the names against the CA, on HTTPS and on MQTT.
    for name in ["localhost", "127.0.0.1"] {
        let (ok, out) = s_client(&hub, https, name)?;
        assert!(ok, "HTTPS as {name}: {out}");
        let (ok, out) = s_client(&hub, port(hub.mqtts)?, name)?;
        assert!(ok, "MQTTS as {name}: {out}");
    }
    // A name the certificate does not cover is refused.
    let (ok, _) = s_client(&hub, https, "elsewhere.example")?;
    assert!(!ok, "a name outside the certificate must not verify");

    // The CA vouches only for the home: OpenSSL reads its name constraints.
    let (_, constraints) =
        run_tool("openssl", &["x509", "-noout", "-ext", "nameConstraints", "-in", path_str(&hub.ca_file())?])?;
    assert!(constraints.contains("Permitted") && constraints.contains("DNS:local"), "{constraints}");
    assert!(constraints.contains("IP:192.168.0.0/255.255.0.0"), "{constraints}");

    // curl with the CA only.
    let url = format!("https://localhost:{}/api/health", https.port());
    let (ok, out) = run_tool("curl", &["-sS", "--fail", "--cacert", path_str(&hub.ca_file())?, &url])?;
    assert!(ok && out.contains("\"ok\""), "curl --cacert: {out}");
    // Without it, curl refuses the hub's certificate.
    let (ok, _) = run_tool("curl", &["-sS", "--fail", "--capath", "/nonexistent", "--cacert", "/dev/null", &url])?;
    assert!(!ok, "curl must not trust the hub without its CA");

    // The fingerprint the API shows is the CA certificate's, as OpenSSL computes it.
    let client = hub.client_builder()?.build()?;
    let tls: Value = client.get(hub.url("/api/tls")).send().await?.json().await?;
    let (_, openssl) =
        run_tool("openssl", &["x509", "-noout", "-fingerprint", "-sha256", "-in", path_str(&hub.ca_file())?])?;
    let fingerprint = tls["fingerprint"].as_str().context("no fingerprint")?;
    assert!(openssl.contains(fingerprint), "API {fingerprint} vs OpenSSL {openssl}");
    assert_eq!(tls["mqtts_port"], json!(port(hub.mqtts)?.port()));

    // The session cookie is Secure.
    let resp = client
        .post(hub.url("/api/setup"))
        .json(&json!({ "code": hub.setup_code()?, "username": "owner", "password": hearth_tests::OWNER_PASSWORD }))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    let cookie = resp.headers().get("set-cookie").context("no cookie")?.to_str()?.to_owned();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    assert_eq!(client.get(hub.url("/api/me")).send().await?.status(), 200);
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_port_only_redirects_and_hands_out_the_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start_with(tls_config(dir.path())).await?;
    let https = port(hub.https)?;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let base = format!("http://localhost:{}", hub.http.port());

    // Everything moves to HTTPS, on the name the client used, method kept.
    let resp = plain.get(format!("{base}/devices/abc?x=1")).send().await?;
    assert_eq!(resp.status(), 308);
    let location = resp.headers().get("location").context("no location")?.to_str()?;
    assert_eq!(location, format!("https://localhost:{}/devices/abc?x=1", https.port()));
    let resp =
        plain.post(format!("{base}/api/login")).json(&json!({"username": "owner", "password": "x"})).send().await?;
    assert_eq!(resp.status(), 308, "no login in clear");
    assert!(resp.headers().get("set-cookie").is_none());
    for path in ["/api/me", "/api/devices", "/"] {
        assert_eq!(plain.get(format!("{base}{path}")).send().await?.status(), 308, "{path}");
    }
    // A Host header that is not a name is not echoed into a URL.
    let resp = plain.get(format!("{base}/")).header("host", "a b").send().await?;
    assert_eq!(resp.status(), 400);

    // What a newcomer needs before trusting the hub is there in clear.
    assert_eq!(plain.get(format!("{base}/api/health")).send().await?.status(), 200);
    let pem = plain.get(format!("{base}/hearth-ca.pem")).send().await?.text().await?;
    assert_eq!(pem, hub.ca_pem()?);
    let der = plain.get(format!("{base}/hearth-ca.crt")).send().await?.bytes().await?;
    assert!(der.len() > 200 && der[0] == 0x30, "DER certificate");
    let page = plain.get(format!("{base}/trust")).send().await?.text().await?;
    let client = hub.client_builder()?.build()?;
    let tls: Value = client.get(hub.url("/api/tls")).send().await?.json().await?;
    assert!(page.contains(tls["fingerprint"].as_str().context("fingerprint")?), "{page}");
    assert!(page.contains(&format!("https://localhost:{}/", https.port())));
    hub.stop().await?;
    Ok(())
}

/// Publishes one reading with Debian's `mosquitto_pub`; `ca` for TLS.
fn mosquitto_pub(
    addr: SocketAddr,
    ca: Option<&str>,
    device: &str,
    secret: &str,
    value: &str,
) -> anyhow::Result<(bool, String)> {
    let port = addr.port().to_string();
    let topic = format!("hearth/{device}/temperature");
    let mut args =
        vec!["-h", "localhost", "-p", &port, "-u", device, "-P", secret, "-q", "1", "-t", &topic, "-m", value];
    if let Some(ca) = ca {
        args.extend(["--cafile", ca]);
    }
    run_tool("mosquitto_pub", &args)
}

async fn temperatures(hub: &TestHub, owner: &reqwest::Client, device: &str) -> anyhow::Result<Vec<f64>> {
    Ok(hub.readings(owner, device, "temperature").await?.iter().filter_map(|r| r["value"].as_f64()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_connect_over_tls_and_in_clear_only_when_marked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start_with(tls_config(dir.path())).await?;
    let owner = hub.owner().await?;
    let (id, _) = hub.add_device(&owner, "Thermostat").await?;
    let (mqtts, mqtt) = (port(hub.mqtts)?, port(hub.mqtt)?);
    let ca = hub.ca_file();
    let ca = path_str(&ca)?;

    // The credentials tell the device to use TLS with the hub's CA.
    let creds: Value = owner.post(hub.url(&format!("/api/devices/{id}/credentials"))).send().await?.json().await?;
    let secret = creds["secret"].as_str().context("secret")?.to_owned();
    assert_eq!(creds["mqtt"]["tls"], json!(true));
    assert_eq!(creds["mqtt"]["port"], json!(mqtts.port()));
    let example = creds["mqtt"]["mosquitto_pub"].as_str().context("example")?;
    assert!(
        example.contains("--cafile hearth-ca.pem") && example.contains(&format!("-p {}", mqtts.port())),
        "{example}"
    );

    // mosquitto_pub over TLS, then rumqttc over TLS.
    let (ok, out) = mosquitto_pub(mqtts, Some(ca), &id, &secret, "20.5")?;
    assert!(ok, "mosquitto_pub --cafile: {out}");
    let (client, mut events) = mqtt_connect_tls(mqtts, &hub.ca_pem()?, "thermostat", &id, &secret).await?;
    client.publish(format!("hearth/{id}/temperature"), QoS::AtLeastOnce, false, "20.75").await?;
    wait_puback(&mut events, None).await?;
    drop(client);
    // Without the CA, the device does not trust the hub.
    let (ok, _) = mosquitto_pub(mqtts, Some("/etc/ssl/certs/ca-certificates.crt"), &id, &secret, "99")?;
    assert!(!ok, "a device must not connect trusting other CAs only");

    // In clear, the device is refused: it is not marked as unable to do TLS.
    let (ok, out) = mosquitto_pub(mqtt, None, &id, &secret, "1")?;
    assert!(!ok, "plain MQTT must be refused: {out}");
    assert!(mqtt_connect(mqtt, "plain", &id, &secret).await.is_err());
    assert_eq!(temperatures(&hub, &owner, &id).await?, vec![20.5, 20.75]);
    let device: Value = owner.get(hub.url(&format!("/api/devices/{id}"))).send().await?.json().await?;
    assert_eq!(device["plaintext"], json!(false));

    // Marked, it may; the owner sees when it last did.
    let resp =
        owner.put(hub.url(&format!("/api/devices/{id}/plaintext"))).json(&json!({"plaintext": true})).send().await?;
    assert_eq!(resp.status(), 200);
    let (ok, out) = mosquitto_pub(mqtt, None, &id, &secret, "21")?;
    assert!(ok, "a marked device may use plain MQTT: {out}");
    let (plain, mut plain_events) = mqtt_connect(mqtt, "plain", &id, &secret).await?;
    let device: Value = owner.get(hub.url(&format!("/api/devices/{id}"))).send().await?.json().await?;
    assert_eq!(device["plaintext"], json!(true));
    assert!(device["clear_seen"].as_i64().is_some(), "{device}");

    // Unmarked again: its session in clear ends at once, and the next is refused.
    let resp =
        owner.put(hub.url(&format!("/api/devices/{id}/plaintext"))).json(&json!({"plaintext": false})).send().await?;
    assert_eq!(resp.status(), 200);
    hearth_tests::wait_closed(&mut plain_events).await?;
    drop(plain);
    assert!(mqtt_connect(mqtt, "plain", &id, &secret).await.is_err());
    assert_eq!(temperatures(&hub, &owner, &id).await?, vec![20.5, 20.75, 21.0]);

    // The security log has the marks and the refusals.
    let log: Value = owner.get(hub.url("/api/security-log")).send().await?.json().await?;
    let text = log.to_string();
    assert!(text.contains("plain MQTT allowed") && text.contains("plain MQTT no longer allowed"), "{text}");
    assert!(text.contains("plain MQTT refused"), "{text}");
    hub.stop().await?;
    Ok(())
}

/// Clients on the hub itself (a bridge running beside it) may use plain MQTT unless the
/// configuration says otherwise; only loopback addresses count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mqtt_from_the_hub_itself_is_allowed_by_default() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = tls_config(dir.path());
    config.mqtt.plain_from_loopback = true;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Bridge").await?;
    let (ok, out) = mosquitto_pub(port(hub.mqtt)?, None, &id, &secret, "5")?;
    assert!(ok, "{out}");
    assert_eq!(temperatures(&hub, &owner, &id).await?, vec![5.0]);
    let device: Value = owner.get(hub.url(&format!("/api/devices/{id}"))).send().await?.json().await?;
    assert!(device.get("clear_seen").is_none(), "loopback is not in clear on the network: {device}");
    hub.stop().await?;
    Ok(())
}

/// The bar of the flood tests, over TLS: 600 idle sockets at the MQTT over TLS port from one
/// address and 100 concurrent wrong logins over HTTPS from another; a device still connects
/// over TLS and publishes, and the owner still logs in. Times are printed (the release-build
/// figures are in the security document); the assertion only catches "never".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_flood_a_device_connects_over_tls_and_the_owner_logs_in() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start_with(tls_config(dir.path())).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Door sensor").await?;
    let mqtts = port(hub.mqtts)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = tokio::spawn(crate::hostile::idle_flood(mqtts, 600, stop.clone(), so_far.clone()));
    let attacker = hub.client_builder()?.local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))).build()?;
    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..100 {
        let (attacker, url) = (attacker.clone(), hub.url("/api/login"));
        guesses.spawn(async move {
            let body = json!({ "username": "owner", "password": format!("guess number {n}") });
            attacker.post(url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        });
    }
    // The flood has opened its 600 sockets, the guesses are on their way.
    crate::hostile::flooded(&so_far, 600).await?;

    let started = Instant::now();
    let (client, mut events) = mqtt_connect_tls(mqtts, &hub.ca_pem()?, "door", &id, &secret).await?;
    client.publish(format!("hearth/{id}/open"), QoS::AtLeastOnce, false, "true").await?;
    wait_puback(&mut events, None).await?;
    let device_took = started.elapsed();

    let started = Instant::now();
    let owner_again = hub.client_builder()?.local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))).build()?;
    let body = json!({ "username": "owner", "password": hearth_tests::OWNER_PASSWORD });
    let status = owner_again.post(hub.url("/api/login")).json(&body).send().await?.status();
    let owner_took = started.elapsed();
    assert_eq!(status, 200);

    stop.cancel();
    let opened = flood.await??;
    let mut judged = 0;
    while let Some(status) = guesses.join_next().await {
        judged += usize::from(status? == 401);
    }
    println!(
        "over TLS, under {opened} idle sockets and 100 wrong logins ({judged} judged): device {device_took:?}, owner {owner_took:?}"
    );
    assert!(device_took < Duration::from_secs(15) && owner_took < Duration::from_secs(15));
    drop(owner);
    hub.stop().await?;
    Ok(())
}

/// When the server certificate HTTPS presents expires, as OpenSSL reads it.
async fn presented_until(addr: SocketAddr) -> anyhow::Result<String> {
    let script = format!("openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -enddate");
    let (ok, out) = tokio::task::spawn_blocking(move || run_tool("bash", &["-c", &script])).await??;
    anyhow::ensure!(ok && out.starts_with("notAfter="), "{out}");
    Ok(out.trim().to_owned())
}

/// The running hub renews its server certificate a month before it expires, by the hub's
/// clock (moved on here, not waited for), under the same CA, and presents it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_hub_renews_its_certificate_a_month_before_it_expires() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start_with(tls_config(dir.path())).await?;
    let https = port(hub.https)?;
    let first = presented_until(https).await?;
    // 397 days of validity; renewed once fewer than 30 are left, at the twice-daily check.
    hub.clock.advance(Duration::from_secs(360 * 86_400));
    assert_eq!(presented_until(https).await?, first, "renewed with 37 days left");
    hub.clock.advance(Duration::from_secs(8 * 86_400 + 13 * 3600));
    let renewed = hearth_tests::wait_until(Duration::from_secs(10), "the renewed certificate", || async {
        presented_until(https).await.ok().filter(|until| *until != first)
    })
    .await?;
    println!("certificate {first}, renewed: {renewed}");
    Ok(())
}
