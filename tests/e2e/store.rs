//! Durability and confidentiality of the store, seen from outside: restarts keep data, a
//! clean stop commits what was accepted, and the database file holds no plaintext.

use hearth_tests::{TestHub, mqtt_connect, wait_puback};
use rumqttc::QoS;

/// Values no encoding of ours would produce by accident.
const MARKER_TEXT: &str = "MARKER-plaintext-7e3a91";
const MARKER_NUMBER: f64 = 98_765.432_1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_and_the_database_holds_no_plaintext() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let device_name = "Secret-Name-Of-Bedroom-Sensor";
    let (id, secret) = hub.add_device(&owner, device_name).await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let (client, mut events) = mqtt_connect(addr, "bedroom", &id, &secret).await?;
    client.publish(format!("hearth/{id}/note"), QoS::AtLeastOnce, false, MARKER_TEXT).await?;
    wait_puback(&mut events, None).await?;
    client.publish(format!("hearth/{id}/energy"), QoS::AtLeastOnce, false, MARKER_NUMBER.to_string()).await?;
    wait_puback(&mut events, None).await?;
    // QoS 0 readings sent just before a clean stop are committed by the stop.
    for i in 0..50 {
        client.publish(format!("hearth/{id}/count"), QoS::AtMostOnce, false, i.to_string()).await?;
    }
    client.publish(format!("hearth/{id}/done"), QoS::AtLeastOnce, false, "true").await?;
    wait_puback(&mut events, None).await?;
    let config = hub.stop().await?;

    // Every file SQLite wrote (database, WAL): none holds a value, the device name or the secret.
    let mut files = 0;
    for entry in std::fs::read_dir(&config.data_dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !name.starts_with("hearth.db") {
            continue;
        }
        files += 1;
        let raw = std::fs::read(&path)?;
        for needle in [
            MARKER_TEXT.as_bytes(),
            device_name.as_bytes(),
            secret.as_bytes(),
            &MARKER_NUMBER.to_le_bytes(),
            b"987654321",
        ] {
            assert!(!contains(&raw, needle), "{name} contains {:?}", String::from_utf8_lossy(needle));
        }
    }
    assert!(files >= 1);

    let hub = TestHub::start_with(config).await?;
    let owner = hub.login().await?;
    let note = hub.readings(&owner, &id, "note").await?;
    assert_eq!(note[0]["value"], MARKER_TEXT);
    assert_eq!(hub.readings(&owner, &id, "energy").await?[0]["value"], MARKER_NUMBER);
    assert_eq!(hub.readings(&owner, &id, "count").await?.len(), 50);
    let devices: serde_json::Value = owner.get(hub.url("/api/devices")).send().await?.json().await?;
    assert_eq!(devices[0]["name"], device_name);
    // The device's credentials survive the restart.
    mqtt_connect(hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?, "bedroom", &id, &secret).await?;
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_is_unreadable_without_the_hub_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Hall").await?;
    let (client, mut events) =
        mqtt_connect(hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?, "hall", &id, &secret).await?;
    client.publish(format!("hearth/{id}/t"), QoS::AtLeastOnce, false, "1").await?;
    wait_puback(&mut events, None).await?;
    let config = hub.stop().await?;
    // A copied database with a different key file: the hub refuses to start rather than
    // serve garbage, and says why.
    std::fs::write(config.data_dir.join("hub.key"), [0u8; 32])?;
    let err = TestHub::start_with(config).await.err().map(|e| format!("{e:#}"));
    assert!(err.as_deref().is_some_and(|e| e.contains("failed authentication")), "{err:?}");
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
