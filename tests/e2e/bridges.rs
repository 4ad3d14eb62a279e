//! Devices behind a bridge: a Zigbee2MQTT-style bridge logs in with its own credentials,
//! publishes inside the topic namespaces its owner granted it, and each device it speaks
//! for appears as a Hearth device of its own. The messages are the corpus in
//! `hub/tests/data/ecosystems`, replayed with Debian's `mosquitto_pub`.

use std::path::PathBuf;
use std::time::Duration;

use hearth_tests::{Listener, TestHub, path_str, run_tool, wait_until};
use serde_json::{Value, json};

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hub/tests/data/ecosystems").join(name)
}

/// Publishes with `mosquitto_pub` as `device` over the embedded server in clear (allowed
/// from the hub's own machine), at QoS 1: it returns once the hub has acknowledged.
async fn mosquitto_pub(hub: &TestHub, device: (&str, &str), topic: &str, message: Message<'_>) -> anyhow::Result<()> {
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let mut args: Vec<String> = ["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-u", device.0, "-P", device.1]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.extend(["-q", "1", "-t", topic].map(str::to_owned));
    match message {
        Message::Text(text) => args.extend(["-m".to_owned(), text.to_owned()]),
        Message::File(name) => args.extend(["-f".to_owned(), path_str(&corpus(name))?.to_owned()]),
    }
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_tool("mosquitto_pub", &args)
    })
    .await??;
    anyhow::ensure!(ok, "mosquitto_pub -t {topic}: {out}");
    Ok(())
}

enum Message<'a> {
    Text(&'a str),
    File(&'a str),
}

async fn devices(hub: &TestHub, client: &reqwest::Client) -> anyhow::Result<Vec<Value>> {
    let list: Value = client.get(hub.url("/api/devices")).send().await?.json().await?;
    Ok(list.as_array().cloned().unwrap_or_default())
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|d| d["name"] == name)
}

fn metric<'a>(device: &'a Value, name: &str) -> Option<&'a Value> {
    device["metrics"].as_array()?.iter().find(|m| m["metric"] == name)
}

/// The observation of the issue, as a new user tries it: a Zigbee2MQTT bridge publishes its
/// device list and a sensor's state through the embedded server, and nothing showed up.
#[tokio::test]
async fn a_zigbee2mqtt_bridge_s_devices_appear_with_names_and_units() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (bridge, key) = hub.add_device(&owner, "Zigbee2MQTT").await?;
    let grant = owner.put(hub.url(&format!("/api/devices/{bridge}/bridge")));
    let granted = grant.json(&json!({ "namespaces": ["zigbee2mqtt/#"] })).send().await?;
    assert_eq!(granted.status(), 200, "{}", granted.text().await?);

    mosquitto_pub(&hub, (&bridge, &key), "zigbee2mqtt/bridge/devices", Message::File("z2m-bridge-devices.json"))
        .await?;
    mosquitto_pub(
        &hub,
        (&bridge, &key),
        "zigbee2mqtt/weather_sensor",
        Message::Text(r#"{"battery":91,"humidity":48.2,"pressure":1012.5,"temperature":21.75,"linkquality":120}"#),
    )
    .await?;
    let list = wait_until(Duration::from_secs(5), "the weather sensor's readings", || async {
        let list = devices(&hub, &owner).await.ok()?;
        let sensor = named(&list, "weather_sensor")?;
        metric(sensor, "temperature").is_some().then_some(list)
    })
    .await?;

    // Every device of the list but the coordinator, each a device of its own under its bridge.
    let under: Vec<&str> =
        list.iter().filter(|d| d["bridge"] == bridge.as_str()).filter_map(|d| d["name"].as_str()).collect();
    for name in ["bulb", "bulb_color_2", "remote", "button", "weather_sensor", "power_plug", "zigfred_plus"] {
        assert!(under.contains(&name), "{name} is not under the bridge: {under:?}");
    }
    assert!(!under.contains(&"Coordinator"), "the coordinator is the bridge itself: {under:?}");
    let sensor = named(&list, "weather_sensor").ok_or_else(|| anyhow::anyhow!("no weather sensor"))?;
    assert_ne!(sensor["id"], bridge.as_str());
    assert_eq!(sensor["discovered"]["model"], "WSDCGQ11LM", "{sensor}");
    assert_eq!(sensor["discovered"]["manufacturer"], "Aqara", "{sensor}");
    assert_eq!(sensor["discovered"]["convention"], "zigbee2mqtt", "{sensor}");
    for (name, value, unit) in
        [("temperature", 21.75, "°C"), ("humidity", 48.2, "%"), ("pressure", 1012.5, "hPa"), ("battery", 91.0, "%")]
    {
        let m = metric(sensor, name).ok_or_else(|| anyhow::anyhow!("no {name} in {sensor}"))?;
        assert_eq!(m["value"], value, "{m}");
        assert_eq!(m["unit"], unit, "{m}");
    }
    let bridge_view = list.iter().find(|d| d["id"] == bridge.as_str()).ok_or_else(|| anyhow::anyhow!("no bridge"))?;
    assert_eq!(bridge_view["namespaces"], json!(["zigbee2mqtt/#"]));
    Ok(())
}

/// A bridge writes only inside its namespaces; what it sends elsewhere is refused with the
/// reason shown on the bridge, and it stays connected for the rest.
#[tokio::test]
async fn a_bridge_cannot_write_outside_its_namespaces() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (bridge, key) = hub.add_device(&owner, "Zigbee2MQTT").await?;
    let (meter, _) = hub.add_device(&owner, "Meter").await?;
    let grant = owner.put(hub.url(&format!("/api/devices/{bridge}/bridge")));
    assert_eq!(grant.json(&json!({ "namespaces": ["zigbee2mqtt/#"] })).send().await?.status(), 200);

    for topic in [format!("hearth/{meter}/power"), "tele/kitchen/SENSOR".into(), "zigbee2mqttx/sensor".into()] {
        mosquitto_pub(&hub, (&bridge, &key), &topic, Message::Text(r#"{"power":5}"#)).await?;
        let shown = wait_until(Duration::from_secs(5), "the refusal on the bridge", || async {
            let list = devices(&hub, &owner).await.ok()?;
            let reason = list.iter().find(|d| d["id"] == bridge.as_str())?["rejected"]["last_reason"].clone();
            reason.as_str().filter(|r| r.contains(&topic)).map(str::to_owned)
        })
        .await?;
        assert!(shown.contains("outside"), "{shown}");
    }
    let list = devices(&hub, &owner).await?;
    let m = list.iter().find(|d| d["id"] == meter.as_str()).ok_or_else(|| anyhow::anyhow!("no meter"))?;
    assert_eq!(m["metrics"], json!([]), "the bridge wrote as the meter: {m}");

    // Namespaces are checked when granted: nothing of Hearth's own, nothing that covers all.
    for namespaces in [json!(["#"]), json!(["hearth/#"]), json!(["+/status"]), json!(["a/#/b"]), json!(["$SYS/#"])] {
        let grant = owner.put(hub.url(&format!("/api/devices/{bridge}/bridge")));
        let refused = grant.json(&json!({ "namespaces": namespaces })).send().await?;
        assert_eq!(refused.status(), 422, "{namespaces} was granted");
    }

    // A device's own credentials cannot make it a bridge, and a tenant cannot grant the
    // owner's device anything.
    let (tenant, _) = hub.tenant(&owner, "ana", json!({})).await?;
    let grant = tenant.put(hub.url(&format!("/api/devices/{meter}/bridge")));
    assert_eq!(grant.json(&json!({ "namespaces": ["x/#"] })).send().await?.status(), 403);
    Ok(())
}

/// Whatever a bridge subscribes to, it receives only the commands of its own devices: not
/// another device's, not another bridge's, not the readings others publish.
#[tokio::test]
async fn a_bridge_receives_only_its_own_devices_commands() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let mqtt = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let owner = hub.owner().await?;
    let (first, first_key) = hub.add_device(&owner, "Upstairs Zigbee").await?;
    let (second, second_key) = hub.add_device(&owner, "Downstairs Zigbee").await?;
    for bridge in [&first, &second] {
        let grant = owner.put(hub.url(&format!("/api/devices/{bridge}/bridge")));
        assert_eq!(grant.json(&json!({ "namespaces": ["zigbee2mqtt/#"] })).send().await?.status(), 200);
    }
    mosquitto_pub(&hub, (&first, &first_key), "zigbee2mqtt/bridge/devices", Message::File("z2m-bridge-devices.json"))
        .await?;
    let mut second_hears = Listener::start(mqtt, &second, &second_key, "#").await?;
    let mut first_hears = Listener::start(mqtt, &first, &first_key, "#").await?;
    let plug = wait_until(Duration::from_secs(5), "the plug", || async {
        let list = devices(&hub, &owner).await.ok()?;
        named(&list, "power_plug").and_then(|d| d["id"].as_str()).map(str::to_owned)
    })
    .await?;

    // Readings another bridge publishes are nobody's to receive.
    mosquitto_pub(&hub, (&second, &second_key), "zigbee2mqtt/power_plug", Message::Text(r#"{"power":5}"#)).await?;
    // A rule commands the plug when a wall switch reports: it goes to the plug's bridge, on
    // Zigbee2MQTT's set topic, with Zigbee2MQTT's own on value.
    let (wall, wall_key) = hub.add_device(&owner, "Wall switch").await?;
    let rule = json!({ "name": "Plug on", "triggers": [{ "type": "reading", "device": wall, "metric": "pressed" }],
        "actions": [{ "type": "mqtt", "device": plug, "metric": "state", "value": true }] });
    let created = owner.post(hub.url("/api/rules")).json(&rule).send().await?;
    assert_eq!(created.status(), 201, "{}", created.text().await?);
    hub.publish((&wall, &wall_key), &format!("hearth/{wall}/pressed"), "1".into()).await?;
    let (topic, payload) = first_hears.next().await?;
    assert_eq!(topic, "zigbee2mqtt/power_plug/set");
    assert_eq!(serde_json::from_str::<Value>(&payload)?, json!({ "state": "ON" }));
    assert!(second_hears.quiet(Duration::from_millis(500)).await, "the other bridge heard something");
    assert!(first_hears.quiet(Duration::from_millis(200)).await, "the bridge heard more than its command");
    Ok(())
}
