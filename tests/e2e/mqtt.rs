//! Devices over MQTT: the embedded server with rumqttc and Debian's mosquitto_pub, and the
//! hub as a client of a real Mosquitto.

use std::time::Duration;

use anyhow::Context;
use hearth_tests::{Mosquitto, TestHub, mqtt_connect, run_tool, wait_closed, wait_puback, wait_until};
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_reading_is_stored_before_its_puback() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Living room").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let (client, mut events) = mqtt_connect(addr, "living-room", &id, &secret).await?;

    for (i, value) in [21.5, 21.75, 22.0].iter().enumerate() {
        client.publish(format!("hearth/{id}/temperature"), QoS::AtLeastOnce, false, value.to_string()).await?;
        wait_puback(&mut events, None).await?;
        // No waiting here: the PUBACK means the reading is committed, so it must be there.
        let stored = hub.readings(&owner, &id, "temperature").await?;
        assert_eq!(stored.len(), i + 1, "after PUBACK {i}: {stored:?}");
        assert_eq!(stored[i]["value"], json!(value));
    }

    // A JSON reading with unit and timestamp, and a multi-metric object.
    client
        .publish(format!("hearth/{id}/power"), QoS::AtLeastOnce, false, r#"{"value":230.5,"unit":"W","ts":1780000000}"#)
        .await?;
    wait_puback(&mut events, None).await?;
    client
        .publish(format!("hearth/{id}"), QoS::AtLeastOnce, false, r#"{"humidity":40,"door":"open","motion":true}"#)
        .await?;
    wait_puback(&mut events, None).await?;
    let device: Value = owner.get(hub.url(&format!("/api/devices/{id}"))).send().await?.json().await?;
    let metrics: Vec<(String, Value)> = device["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["metric"].as_str().unwrap_or_default().to_owned(), m["value"].clone()))
        .collect();
    assert_eq!(
        metrics,
        vec![
            ("door".to_owned(), json!("open")),
            ("humidity".to_owned(), json!(40.0)),
            ("motion".to_owned(), json!(true)),
            ("power".to_owned(), json!(230.5)),
            ("temperature".to_owned(), json!(22.0)),
        ]
    );
    let power = hub.readings(&owner, &id, "power").await?;
    assert_eq!(power[0]["ts"], 1_780_000_000_000i64);
    assert_eq!(device["metrics"][3]["unit"], "W");

    // Downsampled history: 3 temperature readings in one bucket.
    let url = hub.url(&format!("/api/devices/{id}/metrics/temperature/readings?from=0&to=99999999999999&points=1"));
    let history: Value = owner.get(url).send().await?.json().await?;
    assert_eq!(history["buckets"][0]["count"], 3);
    assert_eq!(history["buckets"][0]["min"], 21.5);
    assert_eq!(history["buckets"][0]["max"], 22.0);
    assert_eq!(history["buckets"][0]["avg"], 21.75);
    // On/off: the share that was on and the last value, not an average of 0s and 1s.
    let url = hub.url(&format!("/api/devices/{id}/metrics/motion/readings?from=0&to=99999999999999&points=1"));
    let history: Value = owner.get(url).send().await?.json().await?;
    let bucket = &history["buckets"][0];
    assert_eq!((&bucket["on"], &bucket["last"], bucket.get("avg")), (&json!(1.0), &json!(true), None), "{history}");
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_at_connect() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Porch").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;

    let err = mqtt_connect(addr, "c1", &id, "wrong-secret").await.err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("BadUserNamePassword")), "{err:?}");
    let err = mqtt_connect(addr, "c2", "nosuchdevice", &secret).await.err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("BadUserNamePassword")), "{err:?}");

    // Debian's mosquitto_pub sees the refusal too.
    let port = addr.port().to_string();
    let (ok, out) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            &id,
            "-P",
            "wrong",
            "-q",
            "1",
            "-t",
            &format!("hearth/{id}/t"),
            "-m",
            "1",
        ],
    )?;
    assert!(!ok, "mosquitto_pub with a wrong password must fail: {out}");
    assert!(out.contains("not authorised") || out.contains("bad user name or password"), "{out}");
    let (ok, out) = run_tool(
        "mosquitto_pub",
        &["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", &format!("hearth/{id}/t"), "-m", "1"],
    )?;
    assert!(!ok, "anonymous publish must fail: {out}");
    assert!(hub.readings(&owner, &id, "t").await?.is_empty());

    // Regenerated credentials: the old secret stops working and the open session ends.
    let (_client, mut events) = mqtt_connect(addr, "porch", &id, &secret).await?;
    let resp: Value = owner.post(hub.url(&format!("/api/devices/{id}/credentials"))).send().await?.json().await?;
    let new_secret = resp["secret"].as_str().unwrap_or_default().to_owned();
    wait_closed(&mut events).await.context("the old session is closed when credentials change")?;
    assert!(mqtt_connect(addr, "porch", &id, &secret).await.is_err(), "old secret refused");
    mqtt_connect(addr, "porch", &id, &new_secret).await?;
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_and_bad_input_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (a, a_secret) = hub.add_device(&owner, "A").await?;
    let (b, _) = hub.add_device(&owner, "B").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let (client, mut events) = mqtt_connect(addr, "a", &a, &a_secret).await?;

    // Each refused message is still acknowledged (so the device does not resend it
    // forever) but nothing is stored, and the reason is visible on the device.
    let bad = [
        (format!("hearth/{b}/temperature"), "19".to_owned(), "is not this device's"),
        (format!("hearth/{a}/temperature"), "NaN".to_owned(), "not finite"),
        (format!("hearth/{a}/temperature"), "{\"value\":".to_owned(), "invalid JSON"),
        (format!("hearth/{a}/bad metric"), "1".to_owned(), "invalid metric name"),
        (format!("hearth/{a}"), "[1,2,3]".to_owned(), "expected a JSON object"),
        (format!("hearth/{a}/temperature"), "9".repeat(17_000), "more than the"),
    ];
    for (topic, payload, reason) in &bad {
        client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await?;
        wait_puback(&mut events, None).await?;
        let device: Value = owner.get(hub.url(&format!("/api/devices/{a}"))).send().await?.json().await?;
        let last = device["rejected"]["last_reason"].as_str().unwrap_or_default();
        assert!(last.contains(reason), "{topic}: expected {reason:?} in {last:?}");
    }
    assert!(hub.readings(&owner, &b, "temperature").await?.is_empty(), "A could not write as B");
    assert!(hub.readings(&owner, &a, "temperature").await?.is_empty());

    // A may subscribe to its own commands but not to other devices' topics.
    for (filter, allowed) in
        [(format!("hearth/{b}/#"), false), ("hearth/#".to_owned(), false), (format!("hearth/{a}/set/#"), true)]
    {
        client.subscribe(filter.as_str(), QoS::AtMostOnce).await?;
        let codes = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) = events.poll().await {
                    return ack.return_codes;
                }
            }
        })
        .await?;
        let granted = codes == [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)];
        assert_eq!(granted, allowed, "subscribe {filter}: {codes:?}");
    }

    // A packet over the server's limit ends that connection (MQTT has no way to refuse
    // one packet); the device reconnects and carries on.
    client.publish(format!("hearth/{a}/temperature"), QoS::AtLeastOnce, false, vec![b'1'; 100_000]).await?;
    wait_closed(&mut events).await.context("an oversize packet closes the connection")?;
    let (client, mut events) = mqtt_connect(addr, "a", &a, &a_secret).await?;

    // Garbage on the MQTT port, and a connection that never sends CONNECT, do not stall
    // the server or the store.
    let mut garbage = tokio::net::TcpStream::connect(addr).await?;
    garbage.write_all(b"\x10\xff\xff\xff\xff\x7fGET / HTTP/1.1\r\n\r\n").await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await??;
    assert_eq!(n, 0, "the server closes a connection that sends garbage");
    let mut silent = tokio::net::TcpStream::connect(addr).await?;

    client.publish(format!("hearth/{a}/temperature"), QoS::AtLeastOnce, false, "20.5").await?;
    wait_puback(&mut events, None).await?;
    let stored = hub.readings(&owner, &a, "temperature").await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["value"], 20.5);
    let health = reqwest::get(hub.url("/api/health")).await?;
    assert_eq!(health.status(), 200);
    // The silent one is closed once `mqtt.connect_timeout_s` (2 s in tests) has passed.
    let waited = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await??;
    assert_eq!(n, 0, "a connection that never logs in is closed");
    assert!(waited.elapsed() < Duration::from_secs(5), "closed after {:?}", waited.elapsed());
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_publishes_into_the_embedded_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Boiler").await?;
    let port = hub.mqtt.map(|a| a.port().to_string()).unwrap_or_default();
    let base = ["-h", "127.0.0.1", "-p", &port, "-u", &id, "-P", &secret, "-q", "1"];
    let topic = format!("hearth/{id}/pressure");
    let (ok, out) = run_tool("mosquitto_pub", &[&base[..], &["-t", &topic, "-m", "1.8"]].concat())?;
    assert!(ok, "{out}");
    let multi = format!("hearth/{id}");
    let (ok, out) =
        run_tool("mosquitto_pub", &[&base[..], &["-t", &multi, "-m", r#"{"flow":55.5,"return":41}"#]].concat())?;
    assert!(ok, "{out}");
    // mosquitto_pub exits after its PUBACK, which the hub sends after the commit.
    assert_eq!(hub.readings(&owner, &id, "pressure").await?[0]["value"], 1.8);
    assert_eq!(hub.readings(&owner, &id, "flow").await?[0]["value"], 55.5);
    assert_eq!(hub.readings(&owner, &id, "return").await?[0]["value"], 41.0);
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_ingests_from_an_external_mosquitto() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // First run with the embedded server, to create the device and its credentials.
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Meter").await?;
    let (other, other_secret) = hub.add_device(&owner, "Other").await?;
    let mut config = hub.stop().await?;

    let broker =
        Mosquitto::start(dir.path(), &[(&id, &secret), (&other, &other_secret), ("hub", "hub-password")], "hub")?;
    config.mqtt.mode = hub::config::MqttMode::External;
    config.mqtt.external = Some(hearth_tests::external_broker(broker.port)?);
    let hub = TestHub::start_with(config).await?;
    assert!(hub.mqtt.is_none(), "nothing listens for MQTT in external mode");
    let owner = hub.login().await?;

    let port = broker.port.to_string();
    let publish = |user: &str, pass: &str, topic: String, msg: &str| {
        run_tool(
            "mosquitto_pub",
            &["-h", "127.0.0.1", "-p", &port, "-u", user, "-P", pass, "-q", "1", "-t", &topic, "-m", msg],
        )
    };
    // Wait for the hub's subscription, then publish through Mosquitto.
    wait_until(Duration::from_secs(15), "a reading via Mosquitto", || {
        let _ = publish(&id, &secret, format!("hearth/{id}/energy"), "12.5");
        let (hub, owner, id) = (&hub, &owner, &id);
        async move { hub.readings(owner, id, "energy").await.ok().filter(|r| !r.is_empty()) }
    })
    .await?;
    // Mosquitto's ACL (`pattern write hearth/%u/#`) stops a device writing as another.
    let (ok, out) = publish(&other, &other_secret, format!("hearth/{id}/energy"), "999")?;
    assert!(ok, "{out}");
    publish(&id, &secret, format!("hearth/{id}"), r#"{"energy":13.0}"#)?;
    let readings = wait_until(Duration::from_secs(10), "the JSON reading", || {
        let (hub, owner, id) = (&hub, &owner, &id);
        async move { hub.readings(owner, id, "energy").await.ok().filter(|r| r.iter().any(|x| x["value"] == 13.0)) }
    })
    .await?;
    assert!(readings.iter().all(|r| r["value"] != 999.0), "{readings:?}");
    hub.stop().await?;
    drop(broker);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_sends_each_commit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Desk").await?;
    let mut live = owner.get(hub.url("/api/live")).send().await?;
    assert_eq!(live.status(), 200);
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let (client, mut events) = mqtt_connect(addr, "desk", &id, &secret).await?;
    client.publish(format!("hearth/{id}/co2"), QoS::AtLeastOnce, false, "612").await?;
    wait_puback(&mut events, None).await?;
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("612") {
            match live.chunk().await {
                Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
    })
    .await?;
    assert!(seen.contains("event: readings"), "{seen}");
    assert!(seen.contains(&format!("\"device\":\"{id}\"")) && seen.contains("\"metric\":\"co2\""), "{seen}");
    hub.stop().await?;
    Ok(())
}
