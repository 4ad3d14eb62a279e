//! What a connection's namespaces cost: a Zigbee2MQTT network of 200 devices reports its
//! states through `Bridges::publish` (the namespace check, the conventions layer, the
//! catalog), its bridge granted `zigbee2mqtt/#` alone (the baseline), then as it would be
//! with its Home Assistant discovery granted device by device (202 namespaces), then with
//! as many as a connection may hold. Also a DIY connection whose one state topic 64 values
//! read (through their templates), against one value reading it.
//!
//! `cargo bench -p hub --bench conventions -- [MESSAGES]` (default 20,000 per case).
//! Bounded: each case stops after its count or after 60 s.

use std::time::{Duration, Instant};

use serde_json::json;

const TIME_LIMIT: Duration = Duration::from_secs(60);
const DEVICES: usize = 200;

fn main() -> anyhow::Result<()> {
    let messages = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20_000usize).max(1);
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(messages))
}

/// A Zigbee2MQTT device list of `DEVICES` weather sensors.
fn device_list() -> String {
    let exposes = json!([
        { "type": "numeric", "name": "temperature", "property": "temperature", "unit": "°C", "access": 1 },
        { "type": "numeric", "name": "humidity", "property": "humidity", "unit": "%", "access": 1 },
        { "type": "numeric", "name": "battery", "property": "battery", "unit": "%", "access": 1 },
        { "type": "numeric", "name": "linkquality", "property": "linkquality", "unit": "lqi", "access": 1 }
    ]);
    let devices: Vec<_> = (0..DEVICES)
        .map(|n| {
            json!({ "ieee_address": format!("0x00158d00{n:08x}"), "friendly_name": format!("sensor_{n}"),
                "definition": { "model": "WSDCGQ11LM", "vendor": "Aqara", "exposes": exposes } })
        })
        .collect();
    serde_json::Value::Array(devices).to_string()
}

/// A bridge granted `namespaces` reports `messages` states; returns messages per second.
async fn states(namespaces: Vec<String>, messages: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let config = hub::config::Config::for_test(&dir.path().join("data"));
    let store = hub::open_store(&config, hub::clock::Clock::system().now_ms()).await?;
    let lifecycle = hub::lifecycle::Lifecycle::new(store.clone());
    let budgets = hub::budgets::Budgets::new(config.budgets.clone(), store.clone(), hub::clock::Clock::system());
    let rejections = hub::ingest::Rejections::default();
    let bridges = hub::bridges::Bridges::load(store.clone(), rejections, lifecycle, budgets).await?;
    let bridge = hub::devices::add(&store, "Zigbee2MQTT", 0).await?;
    store.set_device_namespaces(&bridge.id, &namespaces).await?;
    let record = store.device(&bridge.id).await?.ok_or_else(|| anyhow::anyhow!("no bridge"))?;
    bridges.set_namespaces(&record, &namespaces);
    bridges.publish(&bridge.id, "zigbee2mqtt/bridge/devices", device_list().as_bytes(), 1).await?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages && started.elapsed() < TIME_LIMIT {
        let topic = format!("zigbee2mqtt/sensor_{}", sent % DEVICES);
        let state = format!(r#"{{"temperature":{}.5,"humidity":41,"battery":97,"linkquality":120}}"#, sent % 30);
        let read = bridges.publish(&bridge.id, &topic, state.as_bytes(), 2).await?;
        anyhow::ensure!(read.readings.len() >= 4, "{topic}: {:?}", read.readings);
        sent += 1;
    }
    store.close().await;
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

/// A DIY connection whose state topic `values` values read, each through its template;
/// returns messages per second.
async fn listened(values: usize, messages: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let config = hub::config::Config::for_test(&dir.path().join("data"));
    let store = hub::open_store(&config, hub::clock::Clock::system().now_ms()).await?;
    let lifecycle = hub::lifecycle::Lifecycle::new(store.clone());
    let budgets = hub::budgets::Budgets::new(config.budgets.clone(), store.clone(), hub::clock::Clock::system());
    let rejections = hub::ingest::Rejections::default();
    let bridges = hub::bridges::Bridges::load(store.clone(), rejections, lifecycle, budgets).await?;
    let node = hub::devices::add(&store, "Node", 0).await?;
    let namespaces = vec!["homeassistant/+/node/#".to_owned(), "node/#".to_owned()];
    store.set_device_namespaces(&node.id, &namespaces).await?;
    let record = store.device(&node.id).await?.ok_or_else(|| anyhow::anyhow!("no node"))?;
    bridges.set_namespaces(&record, &namespaces);
    let mut state = serde_json::Map::new();
    for n in 0..values {
        let config = json!({ "name": format!("Value {n}"), "stat_t": "node/state", "unit_of_meas": "W",
            "val_tpl": format!("{{{{ value_json.v{n} | float | round(1) }}}}"), "dev": { "ids": "node", "name": "Node" } });
        let topic = format!("homeassistant/sensor/node/v{n}/config");
        bridges.publish(&node.id, &topic, config.to_string().as_bytes(), 1).await?;
        state.insert(format!("v{n}"), json!(n as f64 + 0.25));
    }
    let payload = serde_json::Value::Object(state).to_string();
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages && started.elapsed() < TIME_LIMIT {
        let read = bridges.publish(&node.id, "node/state", payload.as_bytes(), 2).await?;
        anyhow::ensure!(read.readings.len() >= values, "{} readings", read.readings.len());
        sent += 1;
    }
    store.close().await;
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

async fn run(messages: usize) -> anyhow::Result<()> {
    let per_device = |count: usize| -> Vec<String> {
        let mut namespaces = vec!["zigbee2mqtt/#".to_owned()];
        namespaces.extend((0..count).map(|n| format!("homeassistant/+/0x00158d00{n:08x}/#")));
        namespaces
    };
    let baseline = states(per_device(0), messages).await?;
    println!("{DEVICES} Zigbee devices' states through Bridges::publish, {messages} messages per case");
    println!("| namespaces | messages/s | ratio to 1 namespace |");
    println!("|---:|---:|---:|");
    println!("| 1 (baseline) | {baseline:.0} | 1.00 |");
    for count in [201, hub::bridges::MAX_NAMESPACES - 1] {
        let rate = states(per_device(count), messages).await?;
        println!("| {} | {rate:.0} | {:.2} |", count + 1, rate / baseline);
    }
    let one = listened(1, messages).await?;
    let many = listened(64, messages / 8).await?;
    println!();
    println!("One state topic read by its values' templates (parsed once, the message's JSON once)");
    println!("| values on the topic | messages/s | values/s |");
    println!("|---:|---:|---:|");
    println!("| 1 (baseline) | {one:.0} | {one:.0} |");
    println!("| 64 | {many:.0} | {:.0} |", many * 64.0);
    println!("values/s with 64 values per message, as a ratio to 1: {:.2}", many * 64.0 / one);
    Ok(())
}
