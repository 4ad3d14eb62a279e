//! Ending things: a tenancy that ends, a tenancy shredded when its retention runs out, a
//! device taken back by what its connection says. Whoever starts it, nothing of what ended
//! stays alive anywhere in the hub: its sessions end, its bridge cannot log in, its live
//! streams close, its commands are not handed out again.

use std::time::Duration;

use hearth_tests::{TestHub, mqtt_connect, wait_closed, wait_until};
use rumqttc::{Event, EventLoop, Packet, QoS};
use serde_json::{Value, json};

/// A tenancy whose tenant has a sensor and a Zigbee bridge with a device behind it, all
/// connected, and a live stream open.
struct Household {
    tenancy: i64,
    tenant: reqwest::Client,
    sensor: (String, String),
    bridge: (String, String),
    behind: String,
}

async fn household(hub: &TestHub, owner: &reqwest::Client) -> anyhow::Result<Household> {
    let (tenant, tenancy) = hub.tenant(owner, "ana", json!({ "retention_days": 1 })).await?;
    // A tenancy starts a moment after it is made.
    hub.clock.advance(Duration::from_secs(2));
    let sensor = hub.add_device(&tenant, "Tenant's sensor").await?;
    let bridge = hub.add_device(&tenant, "Tenant's Zigbee").await?;
    let grant = tenant.put(hub.url(&format!("/api/devices/{}/bridge", bridge.0)));
    let granted = grant.json(&json!({ "namespaces": ["zigbee2mqtt/#"] })).send().await?;
    anyhow::ensure!(granted.status() == 200, "granting namespaces: {}", granted.text().await?);
    Ok(Household { tenancy, tenant, sensor, bridge, behind: String::new() })
}

/// The bridge's device list: one sensor behind it.
const LIST: &str = r#"[{"ieee_address":"0x00158d0001a2b3c4","friendly_name":"hall_sensor","type":"EndDevice",
"definition":{"model":"WSDCGQ11LM","vendor":"Aqara","description":"Temperature sensor",
"exposes":[{"type":"numeric","name":"temperature","property":"temperature","access":1,"unit":"°C"}]}}]"#;

/// Connects `device` (a persistent session when `client` is given) and keeps its events.
async fn connect(hub: &TestHub, device: &(String, String), client: &str) -> anyhow::Result<EventLoop> {
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let (mqtt, events) = mqtt_connect(addr, client, &device.0, &device.1).await?;
    // The client handle lives in the event loop's requests; keep it alive with the loop.
    std::mem::forget(mqtt);
    Ok(events)
}

/// Publishes at QoS 1 and waits for the hub's acknowledgement.
async fn publish(hub: &TestHub, device: &(String, String), topic: &str, payload: &str) -> anyhow::Result<()> {
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let (client, mut events) = mqtt_connect(addr, &format!("{}-pub", device.0), &device.0, &device.1).await?;
    client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await?;
    hearth_tests::wait_puback(&mut events, None).await?;
    client.disconnect().await?;
    Ok(())
}

async fn devices(hub: &TestHub, client: &reqwest::Client) -> anyhow::Result<Vec<Value>> {
    Ok(client.get(hub.url("/api/devices")).send().await?.error_for_status()?.json().await?)
}

/// Everything of the household connected and seen: its sessions, the device behind its
/// bridge, a live stream of the tenant's.
async fn connected(hub: &TestHub, home: &mut Household) -> anyhow::Result<(EventLoop, EventLoop, reqwest::Response)> {
    let sensor = connect(hub, &home.sensor, "sensor-kept").await?;
    let bridge = connect(hub, &home.bridge, "bridge").await?;
    publish(hub, &home.bridge, "zigbee2mqtt/bridge/devices", LIST).await?;
    publish(hub, &home.sensor, &format!("hearth/{}/temperature", home.sensor.0), "20.5").await?;
    home.behind = wait_until(Duration::from_secs(5), "the device behind the bridge", || async {
        let list = devices(hub, &home.tenant).await.ok()?;
        list.iter().find(|d| d["bridge"] == home.bridge.0.as_str())?["id"].as_str().map(str::to_owned)
    })
    .await?;
    let live = home.tenant.get(hub.url("/api/live")).send().await?;
    anyhow::ensure!(live.status() == 200, "live stream: {}", live.status());
    Ok((sensor, bridge, live))
}

/// Reads the live stream until it ends; errs if it is still open after 5 s.
async fn wait_ended(mut live: reqwest::Response) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = live.chunk().await {} })
        .await
        .map_err(|_| anyhow::anyhow!("the live stream stayed open"))
}

/// Whether `device` can log in now.
async fn logs_in(hub: &TestHub, device: &(String, String)) -> anyhow::Result<bool> {
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    Ok(mqtt_connect(addr, &format!("{}-again", device.0), &device.0, &device.1).await.is_ok())
}

/// The bar of the lifecycle: the retention sweep, moved by the clock, shreds a tenancy
/// while its sensor and its bridge are connected and its tenant watches the live stream.
/// Afterwards nothing of it is alive: both sessions end, neither logs in again, the stream
/// closes, and none of its devices is listed.
#[tokio::test]
async fn the_retention_sweep_leaves_nothing_of_a_shredded_tenancy_alive() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let mut home = household(&hub, &owner).await?;
    let (mut sensor, mut bridge, live) = connected(&hub, &mut home).await?;

    let end = hub.now_ms() + 1000;
    let ended = owner.post(hub.url(&format!("/api/tenancies/{}/end", home.tenancy)));
    assert_eq!(ended.json(&json!({ "at": end })).send().await?.status(), 200);
    // Past the end and the one day of retention: the sweep shreds it.
    hub.clock.advance_to(end + 86_400_000 + 1000);
    wait_until(Duration::from_secs(5), "the sweep's shred", || async {
        let list: Vec<Value> = owner.get(hub.url("/api/tenancies")).send().await.ok()?.json().await.ok()?;
        list.iter().any(|t| t["id"] == home.tenancy && !t["shredded"].is_null()).then_some(())
    })
    .await?;

    wait_closed(&mut sensor).await.map_err(|e| e.context("the sensor's session"))?;
    wait_closed(&mut bridge).await.map_err(|e| e.context("the bridge's session"))?;
    wait_ended(live).await?;
    assert!(!logs_in(&hub, &home.sensor).await?, "the shredded tenancy's sensor logs in");
    assert!(!logs_in(&hub, &home.bridge).await?, "the shredded tenancy's bridge logs in");
    let left: Vec<Value> = devices(&hub, &owner).await?;
    for id in [&home.sensor.0, &home.bridge.0, &home.behind] {
        assert!(!left.iter().any(|d| d["id"] == id.as_str()), "{id} is still listed: {left:?}");
    }
    Ok(())
}

/// Observation 2: a former tenant's bridge logged in after the tenancy ended and added
/// devices. At the end, the tenancy's sessions end (the hub's clock reaches it; nobody
/// calls anything) and its devices and bridge are refused from then on.
#[tokio::test]
async fn at_a_tenancy_s_end_its_devices_and_bridge_stop_logging_in() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let mut home = household(&hub, &owner).await?;
    let (mut sensor, mut bridge, _live) = connected(&hub, &mut home).await?;

    let end = hub.now_ms() + 1000;
    let ended = owner.post(hub.url(&format!("/api/tenancies/{}/end", home.tenancy)));
    assert_eq!(ended.json(&json!({ "at": end })).send().await?.status(), 200);
    hub.clock.advance_to(end + 1);

    wait_closed(&mut sensor).await.map_err(|e| e.context("the sensor's session"))?;
    wait_closed(&mut bridge).await.map_err(|e| e.context("the bridge's session"))?;
    assert!(!logs_in(&hub, &home.bridge).await?, "the former tenant's bridge logs in");
    assert!(!logs_in(&hub, &home.sensor).await?, "the former tenant's sensor logs in");
    // The owner's own devices are not touched.
    let (mine, key) = hub.add_device(&owner, "Owner's meter").await?;
    assert!(logs_in(&hub, &(mine, key)).await?, "the owner's device is refused");
    Ok(())
}

/// A device its connection takes back (an empty retained discovery config) goes the way a
/// device removed in the UI goes: the command kept retained for it is not handed out to the
/// bridge's next session, and it is no longer listed.
#[tokio::test]
async fn a_device_removed_by_its_discovery_config_leaves_nothing_behind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let bridge = hub.add_device(&owner, "Home Assistant devices").await?;
    let grant = owner.put(hub.url(&format!("/api/devices/{}/bridge", bridge.0)));
    let granted = grant.json(&json!({ "namespaces": ["homeassistant/#", "garden/#"] })).send().await?;
    assert_eq!(granted.status(), 200, "{}", granted.text().await?);
    let config = json!({
        "name": "Garden valve", "unique_id": "garden_valve_1",
        "state_topic": "garden/valve/state", "command_topic": "garden/valve/set", "retain": true,
        "payload_on": "ON", "payload_off": "OFF",
        "device": { "identifiers": ["garden_valve"], "name": "Garden valve", "via_device": "garden_gateway" }
    });
    publish(&hub, &bridge, "homeassistant/switch/garden_valve/config", &config.to_string()).await?;
    let (valve, metric) = wait_until(Duration::from_secs(5), "the valve", || async {
        let list = devices(&hub, &owner).await.ok()?;
        let valve = list.iter().find(|d| d["bridge"] == bridge.0.as_str())?;
        let values = valve["discovered"]["values"].as_array()?;
        let metric = values.iter().find(|v| v["settable"] == true)?["metric"].as_str()?;
        Some((valve["id"].as_str()?.to_owned(), metric.to_owned()))
    })
    .await?;
    let command = owner.post(hub.url(&format!("/api/devices/{valve}/command")));
    let sent = command.json(&json!({ "metric": metric, "value": true })).send().await?;
    assert!(sent.status().is_success(), "{}", sent.text().await?);

    publish(&hub, &bridge, "homeassistant/switch/garden_valve/config", "").await?;
    wait_until(Duration::from_secs(5), "the valve's removal", || async {
        let list = devices(&hub, &owner).await.ok()?;
        (!list.iter().any(|d| d["id"] == valve.as_str())).then_some(())
    })
    .await?;

    // What the bridge says on the valve's topic now is read for no device: it is refused,
    // with the reason shown on the bridge.
    publish(&hub, &bridge, "garden/valve/state", "ON").await?;
    wait_until(Duration::from_secs(5), "the refusal of the removed valve's state", || async {
        let list = devices(&hub, &owner).await.ok()?;
        let reason = list.iter().find(|d| d["id"] == bridge.0.as_str())?["rejected"]["last_reason"].as_str()?;
        reason.contains("garden/valve/state").then_some(())
    })
    .await?;

    // The bridge's next session subscribes to the valve's topic, then to Home Assistant's
    // status: the birth message answers the second, so anything kept for the first would
    // have come before it.
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let (client, mut events) = mqtt_connect(addr, "bridge-next", &bridge.0, &bridge.1).await?;
    client.subscribe("garden/#", QoS::AtLeastOnce).await?;
    client.subscribe("homeassistant/status", QoS::AtLeastOnce).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await? {
                return anyhow::Ok((p.topic, String::from_utf8_lossy(&p.payload).into_owned()));
            }
        }
    })
    .await??;
    assert_eq!(first.0, "homeassistant/status", "the removed valve's command was handed out: {first:?}");
    Ok(())
}
