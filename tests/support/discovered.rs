//! Helpers for devices that announce themselves: the corpus of real messages in
//! `hub/tests/data/ecosystems`, Zigbee2MQTT device lists built from the real device
//! definitions, publishing a series of messages as a connection, and reading the devices
//! back through the API.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::TestHub;

/// A file of the corpus in `hub/tests/data/ecosystems`.
pub fn corpus_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hub/tests/data/ecosystems").join(name)
}

/// A message of the corpus: its topic (`<name>.topic`) and payload (`<name>.json` or
/// `<name>.txt`).
pub fn corpus(name: &str) -> anyhow::Result<(String, String)> {
    let topic = std::fs::read_to_string(corpus_file(&format!("{name}.topic")))?;
    let file = [format!("{name}.json"), format!("{name}.txt")].into_iter().find(|f| corpus_file(f).exists());
    let file = file.ok_or_else(|| anyhow::anyhow!("no payload for {name}"))?;
    Ok((topic.trim().to_owned(), std::fs::read_to_string(corpus_file(&file))?))
}

/// Zigbee2MQTT's device list built from the real device definitions of npm's
/// zigbee-herdsman-converters (installed by `.ci/install-tools test`) by
/// `tests/peers/z2m_definitions.mjs`; `args` pick the definitions.
pub fn herdsman_devices(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/peers/z2m_definitions.mjs");
    let modules = root.join(".tools/node_modules");
    let out = std::process::Command::new("node").arg(&script).arg(&modules).args(args).output()?;
    anyhow::ensure!(out.status.success(), "z2m_definitions.mjs: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Publishes `messages` at QoS 1 over one connection as `device`, in order; returns once
/// every one is acknowledged (its readings committed).
pub async fn publish_all(
    addr: std::net::SocketAddr,
    (device, secret): (&str, &str),
    messages: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let (client, mut events) = crate::mqtt_connect(addr, &format!("{device}-all"), device, secret).await?;
    let count = messages.len();
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < count {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("after {acked} acks: {e}")),
            }
        }
        Ok(())
    });
    for (topic, payload) in messages {
        if client.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload).await.is_err() {
            let why = acks.await?.err().map(|e| e.to_string()).unwrap_or_default();
            anyhow::bail!("publishing {topic}: the connection ended: {why}");
        }
    }
    // Once all are acknowledged the event loop is gone, and the connection with it.
    tokio::time::timeout(Duration::from_secs(120), acks).await???;
    Ok(())
}

/// (topic, payload) pairs from string slices.
pub fn messages(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(t, p)| ((*t).to_owned(), (*p).to_owned())).collect()
}

/// Every device the client sees.
pub async fn devices(hub: &TestHub, client: &reqwest::Client) -> anyhow::Result<Vec<Value>> {
    let list: Value = client.get(hub.url("/api/devices")).send().await?.json().await?;
    Ok(list.as_array().cloned().unwrap_or_default())
}

/// The device named `name`.
pub fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|d| d["name"] == name)
}

/// The device with id `id`.
pub fn with_id<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|d| d["id"] == id)
}

/// A device's latest value of `name`.
pub fn metric<'a>(device: &'a Value, name: &str) -> Option<&'a Value> {
    device["metrics"].as_array()?.iter().find(|m| m["metric"] == name)
}

/// What a device said of its value `name`.
pub fn described<'a>(device: &'a Value, name: &str) -> Option<&'a Value> {
    device["discovered"]["values"].as_array()?.iter().find(|v| v["metric"] == name)
}

/// Adds a device and grants it `namespaces`; returns its credentials.
pub async fn connection(
    hub: &TestHub,
    owner: &reqwest::Client,
    name: &str,
    namespaces: &[&str],
) -> anyhow::Result<(String, String)> {
    let (id, key) = hub.add_device(owner, name).await?;
    let grant = owner.put(hub.url(&format!("/api/devices/{id}/bridge")));
    let granted = grant.json(&json!({ "namespaces": namespaces })).send().await?;
    anyhow::ensure!(granted.status() == 200, "granting {namespaces:?}: {}", granted.text().await?);
    Ok((id, key))
}
