//! Devices as they announce themselves: names, classes and the rest of what each
//! convention says, read right; a device that is its own connection is one device. Each
//! test is an observation of a home of real devices, replayed through the embedded server.

use std::time::Duration;

use hearth_tests::discovered::{
    connection, corpus, described, devices, herdsman_devices, messages, metric, named, publish_all, with_id,
};
use hearth_tests::{Listener, TestHub, wait_until};
use serde_json::{Value, json};

/// Publishes `list` as the connection `device`.
async fn send(hub: &TestHub, device: &(String, String), list: Vec<(String, String)>) -> anyhow::Result<()> {
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    publish_all(addr, (&device.0, &device.1), list).await
}

fn config(value: Value) -> String {
    value.to_string()
}

/// DIY devices whose configs repeat only the device block's `identifiers` (as Home
/// Assistant allows for the entities of one device) keep the name the first gave: not the
/// name of whichever entity came last.
#[tokio::test]
async fn a_device_keeps_the_name_its_config_gave_when_the_others_repeat_only_its_identifiers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    // A DIY gateway that speaks for the devices it reaches (they say so: via_device).
    let gateway = connection(&hub, &owner, "DIY gateway", &["homeassistant/#", "diy/#"]).await?;
    let via = |ids: &str, name: Option<&str>| {
        let mut block = json!({ "ids": ids, "via_device": "diy_gateway" });
        if let Some(name) = name {
            block["name"] = json!(name);
        }
        block
    };
    send(
        &hub,
        &gateway,
        vec![
            (
                "homeassistant/sensor/wm1/flow/config".into(),
                config(json!({ "name": "Flow", "stat_t": "diy/wm1/flow", "unit_of_meas": "L/min",
                    "uniq_id": "wm1_flow", "dev": via("wm1", Some("Water Meter")) })),
            ),
            (
                "homeassistant/binary_sensor/wm1/leak/config".into(),
                config(json!({ "name": "Leak", "stat_t": "diy/wm1/leak", "dev_cla": "moisture",
                    "uniq_id": "wm1_leak", "dev": via("wm1", None) })),
            ),
            (
                "homeassistant/sensor/cm1/strength/config".into(),
                config(json!({ "name": "Brew Strength", "stat_t": "diy/cm1/strength", "uniq_id": "cm1_strength",
                    "dev": via("cm1", Some("Coffee Machine")) })),
            ),
            (
                "homeassistant/sensor/cm1/level/config".into(),
                config(json!({ "name": "Water Level", "stat_t": "diy/cm1/level", "unit_of_meas": "%",
                    "uniq_id": "cm1_level", "dev": via("cm1", None) })),
            ),
        ],
    )
    .await?;
    let list = devices(&hub, &owner).await?;
    let names: Vec<&str> = list.iter().filter_map(|d| d["name"].as_str()).collect();
    for name in ["Water Meter", "Coffee Machine"] {
        assert!(names.contains(&name), "no device named {name:?}: {names:?}");
    }
    for entity in ["Leak", "Water Level", "Flow", "Brew Strength"] {
        assert!(!names.contains(&entity), "a device is named after its entity {entity:?}: {names:?}");
    }
    // A stray state under the gateway's namespace that no config names is no one's: not a
    // value of whichever device its topic resembles.
    send(&hub, &gateway, messages(&[("diy/cm1/valve/state", "open")])).await?;
    let list = devices(&hub, &owner).await?;
    assert!(list.iter().all(|d| metric(d, "valve").is_none()), "a stray value joined a device: {list:?}");
    let refused = with_id(&list, &gateway.0).map(|d| d["rejected"]["last_reason"].to_string()).unwrap_or_default();
    assert!(refused.contains("diy/cm1/valve/state"), "{refused}");
    // A station that is its own connection says its name in its first config only.
    let station = connection(&hub, &owner, "Weather station", &["homeassistant/sensor/garden/#", "garden/#"]).await?;
    send(
        &hub,
        &station,
        vec![
            (
                "homeassistant/sensor/garden/temperature/config".into(),
                config(json!({ "name": "Temperature", "stat_t": "garden/t", "dev_cla": "temperature",
                    "unit_of_meas": "°C", "dev": { "ids": "garden", "name": "Garden Weather Station" } })),
            ),
            (
                "homeassistant/sensor/garden/rain/config".into(),
                config(json!({ "name": "Rain Today", "stat_t": "garden/rain", "unit_of_meas": "mm",
                    "dev": { "ids": "garden" } })),
            ),
        ],
    )
    .await?;
    let list = devices(&hub, &owner).await?;
    let station = with_id(&list, &station.0).ok_or_else(|| anyhow::anyhow!("no station"))?;
    assert_eq!(station["discovered"]["name"], "Garden Weather Station", "{station}");
    assert_eq!(described(station, "rain").map(|v| v["name"].clone()), Some(json!("Rain Today")), "{station}");
    Ok(())
}

/// An ESPHome node says it is online before its discovery configs: that makes no device of
/// its own, and the node's device shows what its status says.
#[tokio::test]
async fn an_esphome_node_s_status_before_its_configs_makes_no_device_of_its_own() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let node = connection(&hub, &owner, "Mailbox", &["mailbox/#", "homeassistant/+/mailbox/#"]).await?;
    let mail =
        config(json!({ "name": "Mail", "stat_t": "mailbox/binary_sensor/mail/state", "avty_t": "mailbox/status",
        "uniq_id": "ESPbinary_sensormail", "dev": { "ids": "a0b1c2d3e4f5", "name": "Mailbox", "mf": "Espressif" } }));
    send(
        &hub,
        &node,
        messages(&[
            ("mailbox/status", "online"),
            ("homeassistant/binary_sensor/mailbox/mail/config", &mail),
            ("mailbox/binary_sensor/mail/state", "ON"),
        ]),
    )
    .await?;
    let list = devices(&hub, &owner).await?;
    let shown: Vec<(&str, &Value)> =
        list.iter().map(|d| (d["name"].as_str().unwrap_or_default(), &d["bridge"])).collect();
    assert_eq!(list.len(), 1, "one node, one device: {shown:?}");
    let device = &list[0];
    assert_eq!(device["discovered"]["online"], true, "{device}");
    assert_eq!(metric(device, "mail").map(|m| m["value"].clone()), Some(json!(true)), "{device}");
    send(&hub, &node, messages(&[("mailbox/status", "offline")])).await?;
    let list = devices(&hub, &owner).await?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["discovered"]["online"], false, "the node went offline: {}", list[0]);
    Ok(())
}

/// Zigbee2MQTT's devices get the device and state classes Zigbee2MQTT's own exposes carry;
/// a Home Assistant config's state class, display precision and suggested area are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_have_the_classes_precision_and_area_their_devices_give() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let z2m = connection(&hub, &owner, "Zigbee2MQTT", &["zigbee2mqtt/#"]).await?;
    let list = tokio::task::block_in_place(|| herdsman_devices(&["--models", "WSDCGQ11LM,MCCGQ11LM,ZNCZ02LM"]))?;
    let names: Vec<String> = list.iter().filter_map(|d| d["friendly_name"].as_str().map(str::to_owned)).collect();
    send(&hub, &z2m, vec![("zigbee2mqtt/bridge/devices".into(), Value::Array(list).to_string())]).await?;
    let found = devices(&hub, &owner).await?;
    let class = |name: &str, metric: &str| {
        let device = named(&found, name)?;
        let value = described(device, metric)?;
        Some((value["class"].as_str()?.to_owned(), value["state_class"].as_str().map(str::to_owned)))
    };
    let [weather, door, plug] = &names[..] else { anyhow::bail!("three devices: {names:?}") };
    assert_eq!(class(weather, "temperature"), Some(("temperature".into(), Some("measurement".into()))));
    assert_eq!(class(weather, "humidity"), Some(("humidity".into(), Some("measurement".into()))));
    assert_eq!(class(weather, "pressure"), Some(("atmospheric_pressure".into(), Some("measurement".into()))));
    assert_eq!(class(weather, "battery"), Some(("battery".into(), Some("measurement".into()))));
    assert_eq!(class(door, "contact"), Some(("door".into(), None)));
    assert_eq!(class(plug, "power"), Some(("power".into(), Some("measurement".into()))));
    assert_eq!(class(plug, "energy"), Some(("energy".into(), Some("total_increasing".into()))));

    let meter = connection(&hub, &owner, "Energy meter", &["homeassistant/sensor/meter/#", "meter/#"]).await?;
    let energy = config(json!({ "name": "Energy", "stat_t": "meter/energy", "unit_of_meas": "kWh",
        "dev_cla": "energy", "stat_cla": "total_increasing", "sug_dsp_prc": 2,
        "dev": { "ids": "meter1", "name": "Meter", "sa": "Utility room" } }));
    send(&hub, &meter, messages(&[("homeassistant/sensor/meter/energy/config", &energy)])).await?;
    let found = devices(&hub, &owner).await?;
    let meter = with_id(&found, &meter.0).ok_or_else(|| anyhow::anyhow!("no meter"))?;
    assert_eq!(meter["discovered"]["area"], "Utility room", "{meter}");
    let value = described(meter, "energy").ok_or_else(|| anyhow::anyhow!("no energy value: {meter}"))?;
    assert_eq!((&value["state_class"], &value["precision"]), (&json!("total_increasing"), &json!(2)), "{value}");
    Ok(())
}

/// Values are named as their devices name them: a config's entity name, Tasmota's relay
/// names (`fn`), a thermostat's unit (`temperature_unit`); a Shelly is asked the name its
/// owner gave it.
#[tokio::test]
async fn values_and_devices_are_named_as_their_configs_name_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let mqtt = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let owner = hub.owner().await?;
    let coffee = connection(&hub, &owner, "Coffee machine", &["homeassistant/+/coffee/#", "coffee/#"]).await?;
    let strength = config(json!({ "name": "Brew Strength", "stat_t": "coffee/strength", "uniq_id": "coffee_strength",
        "dev": { "ids": "coffee", "name": "Coffee Machine" } }));
    let thermostat = config(json!({ "name": "Boiler", "curr_temp_t": "coffee/boiler", "temp_stat_t": "coffee/target",
        "temp_cmd_t": "coffee/target/set", "temp_unit": "F", "dev": { "ids": "coffee" } }));
    send(
        &hub,
        &coffee,
        messages(&[
            ("homeassistant/sensor/coffee/strength/config", &strength),
            ("homeassistant/climate/coffee/boiler/config", &thermostat),
        ]),
    )
    .await?;
    let strip =
        connection(&hub, &owner, "Power strip", &["tasmota/discovery/AABBCCDDEEFF/#", "tele/strip/#", "stat/strip/#"])
            .await?;
    let discovery = config(json!({ "t": "strip", "dn": "Power strip", "md": "Gosund P1", "sw": "13.1.0",
        "fn": ["Kettle", "TV", null, "Pump"], "rl": [1, 1, 0, 1] }));
    send(&hub, &strip, messages(&[("tasmota/discovery/AABBCCDDEEFF/config", &discovery)])).await?;
    let found = devices(&hub, &owner).await?;
    let coffee_device = with_id(&found, &coffee.0).ok_or_else(|| anyhow::anyhow!("no coffee machine"))?;
    let name = |device: &Value, metric: &str| described(device, metric).map(|v| v["name"].clone());
    assert_eq!(name(coffee_device, "strength"), Some(json!("Brew Strength")), "{coffee_device}");
    let unit = |metric: &str| described(coffee_device, metric).map(|v| v["unit"].clone());
    assert_eq!((unit("boiler_current"), unit("boiler_target")), (Some(json!("°F")), Some(json!("°F"))));
    let strip_device = with_id(&found, &strip.0).ok_or_else(|| anyhow::anyhow!("no strip"))?;
    let relays: Vec<Value> = ["POWER1", "POWER2", "POWER4"].iter().filter_map(|m| name(strip_device, m)).collect();
    assert_eq!(relays, [json!("Kettle"), json!("TV"), json!("Pump")], "{strip_device}");

    // A Shelly, met for the first time, is asked its name inside its own namespace.
    let id = "shellyplus2pm-a8032ab1c2d4";
    let shelly = connection(&hub, &owner, "Shelly", &[&format!("{id}/#")]).await?;
    let mut asked = Listener::start(mqtt, &shelly.0, &shelly.1, &format!("{id}/rpc")).await?;
    let (_, status) = corpus("shelly-gen2-status-switch0")?;
    send(&hub, &shelly, vec![(format!("{id}/status/switch:0"), status)]).await?;
    let mut sources = Vec::new();
    for _ in 0..2 {
        let (topic, payload) = asked.next().await?;
        assert_eq!(topic, format!("{id}/rpc"));
        let request: Value = serde_json::from_str(&payload)?;
        sources.push(request["src"].clone());
        if request["method"] == "Sys.GetConfig" {
            let answer = json!({ "id": request["id"], "src": id, "dst": request["src"],
                "result": { "device": { "name": "Hall lights", "mac": "A8032AB1C2D4" } } });
            let src = request["src"].as_str().unwrap_or_default();
            send(&hub, &shelly, vec![(format!("{src}/rpc"), answer.to_string())]).await?;
        }
    }
    assert!(sources.iter().all(|s| s == &json!(format!("{id}/hearth"))), "{sources:?}");
    let found = devices(&hub, &owner).await?;
    let shelly_device = with_id(&found, &shelly.0).ok_or_else(|| anyhow::anyhow!("no shelly"))?;
    assert_eq!(shelly_device["discovered"]["name"], "Hall lights", "{shelly_device}");
    assert!(shelly_device["rejected"].is_null(), "its answer was refused: {shelly_device}");
    Ok(())
}

/// The hub's RPC to a Shelly names a source under the Shelly's own prefix, so its answer
/// lands inside the namespace its owner granted: nothing is refused.
#[tokio::test]
async fn a_shelly_answers_the_hub_inside_its_own_namespace() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let mqtt = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let owner = hub.owner().await?;
    // A connection granted the prefix its Shellies publish under (`shellies/<name>`).
    let shellies = connection(&hub, &owner, "Shellies", &["shellies/#"]).await?;
    let (_, status) = corpus("shelly-gen2-status-switch0")?;
    send(&hub, &shellies, vec![("shellies/plus1pm/status/switch:0".into(), status.clone())]).await?;
    let mut heard = Listener::start(mqtt, &shellies.0, &shellies.1, "shellies/+/rpc").await?;
    let found = devices(&hub, &owner).await?;
    let target =
        found.iter().find(|d| d["discovered"]["convention"] == "shelly").ok_or_else(|| anyhow::anyhow!("no shelly"))?;
    let target = target["id"].as_str().unwrap_or_default().to_owned();
    let sent = owner
        .post(hub.url(&format!("/api/devices/{target}/command")))
        .json(&json!({ "metric": "switch_0.output", "value": false }))
        .send()
        .await?;
    assert_eq!(sent.status(), 200, "{}", sent.text().await?);
    let request = loop {
        let (_, payload) = heard.next().await?;
        let request: Value = serde_json::from_str(&payload)?;
        if request["method"] == "Switch.Set" {
            break request;
        }
    };
    assert_eq!(request["src"], "shellies/plus1pm/hearth", "{request}");
    let answer = json!({ "id": request["id"], "src": "plus1pm", "dst": request["src"], "result": { "was_on": true } });
    send(&hub, &shellies, vec![(format!("{}/rpc", request["src"].as_str().unwrap_or_default()), answer.to_string())])
        .await?;
    let found = devices(&hub, &owner).await?;
    let connection = with_id(&found, &shellies.0).ok_or_else(|| anyhow::anyhow!("no connection"))?;
    assert!(connection["rejected"].is_null(), "the Shelly's answer was refused: {}", connection["rejected"]);
    Ok(())
}

/// A Zigbee2MQTT network of 200 devices granted its Home Assistant discovery device by
/// device: 202 namespaces, accepted, and a config under one of them read.
#[tokio::test]
async fn a_network_of_200_devices_is_granted_its_discovery_device_by_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let mut namespaces = vec!["zigbee2mqtt/#".to_owned()];
    namespaces.extend((0..200).map(|n| format!("homeassistant/+/0x00158d00{n:08x}/#")));
    namespaces.push("homeassistant/+/1221051039810110150109113116116_0x00124b00120144ae/#".to_owned());
    let granted: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let z2m = connection(&hub, &owner, "Zigbee2MQTT", &granted).await?;
    let sensor = config(json!({ "name": "Temperature", "stat_t": "zigbee2mqtt/kitchen", "unit_of_meas": "°C",
        "val_tpl": "{{ value_json.temperature }}",
        "dev": { "ids": "zigbee2mqtt_0x00158d00000000c7", "name": "kitchen", "via_device": "zigbee2mqtt_bridge_0x1" } }));
    send(
        &hub,
        &z2m,
        vec![
            ("homeassistant/sensor/0x00158d00000000c7/temperature/config".into(), sensor),
            ("zigbee2mqtt/kitchen".into(), r#"{"temperature":21.5}"#.into()),
        ],
    )
    .await?;
    let found = devices(&hub, &owner).await?;
    let kitchen = named(&found, "kitchen").ok_or_else(|| anyhow::anyhow!("no kitchen: {found:?}"))?;
    assert_eq!(metric(kitchen, "temperature").map(|m| m["value"].clone()), Some(json!(21.5)));
    Ok(())
}

/// A connection refused for two things shows both.
#[tokio::test]
async fn a_connection_keeps_its_recent_refusals() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let bridge = connection(&hub, &owner, "Gateway", &["gateway/#", "homeassistant/#"]).await?;
    send(
        &hub,
        &bridge,
        messages(&[
            ("homeassistant/vacuum/robot/config", r#"{"stat_t":"gateway/robot"}"#),
            ("elsewhere/thing", "1"),
            ("gateway/unknown/topic/here", "1"),
        ]),
    )
    .await?;
    let found = devices(&hub, &owner).await?;
    let gateway = with_id(&found, &bridge.0).ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    let recent: Vec<&str> =
        gateway["rejected"]["recent"].as_array().into_iter().flatten().filter_map(|r| r["reason"].as_str()).collect();
    assert_eq!(recent.len(), 3, "{}", gateway["rejected"]);
    assert!(recent[0].contains("gateway/unknown/topic/here"), "newest first: {recent:?}");
    assert!(recent[1].contains("outside"), "{recent:?}");
    assert!(recent[2].contains("vacuum"), "{recent:?}");
    Ok(())
}

/// A device's plumbing (a Shelly's connection to its broker, the energy a relay returned,
/// when a Tasmota's counter started) is not a reading.
#[tokio::test]
async fn plumbing_is_not_shown_as_readings() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let shelly = connection(&hub, &owner, "Shelly", &["shellyplus1pm-01/#"]).await?;
    let plug = connection(&hub, &owner, "Plug", &["tele/tasmota_F17F56/#"]).await?;
    let switch = r#"{"id":0,"source":"init","output":true,"apower":12.5,"voltage":230.1,"current":0.054,
        "aenergy":{"total":1234.5,"by_minute":[1,2,3],"minute_ts":1700000000},"ret_aenergy":{"total":0.0},
        "temperature":{"tC":41.2,"tF":106.2}}"#;
    send(
        &hub,
        &shelly,
        messages(&[
            ("shellyplus1pm-01/status/mqtt", r#"{"connected":true}"#),
            ("shellyplus1pm-01/status/switch:0", switch),
        ]),
    )
    .await?;
    let (topic, energy) = corpus("tasmota-tele-SENSOR-energy")?;
    send(&hub, &plug, vec![(topic, energy)]).await?;
    let found = devices(&hub, &owner).await?;
    let metrics: Vec<&str> = found
        .iter()
        .flat_map(|d| d["metrics"].as_array().into_iter().flatten())
        .filter_map(|m| m["metric"].as_str())
        .collect();
    assert!(metrics.contains(&"switch_0.apower") && metrics.contains(&"ENERGY.Power"), "{metrics:?}");
    for plumbing in ["mqtt.connected", "switch_0.ret_aenergy.total", "ENERGY.TotalStartTime"] {
        assert!(!metrics.contains(&plumbing), "{plumbing} is shown as a reading: {metrics:?}");
    }
    Ok(())
}

/// A device removed from a Zigbee2MQTT network leaves Hearth with the next device list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_from_zigbee2mqtt_leaves_hearth() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let z2m = connection(&hub, &owner, "Zigbee2MQTT", &["zigbee2mqtt/#"]).await?;
    let list = tokio::task::block_in_place(|| herdsman_devices(&["--models", "WSDCGQ11LM,ZNCZ02LM"]))?;
    let [weather, plug] = &list[..] else { anyhow::bail!("two devices") };
    let plug_name = plug["friendly_name"].as_str().unwrap_or_default().to_owned();
    let weather_name = weather["friendly_name"].as_str().unwrap_or_default().to_owned();
    send(&hub, &z2m, vec![("zigbee2mqtt/bridge/devices".into(), Value::Array(list.clone()).to_string())]).await?;
    let found = devices(&hub, &owner).await?;
    anyhow::ensure!(named(&found, &plug_name).is_some(), "the plug was never added");
    send(&hub, &z2m, vec![("zigbee2mqtt/bridge/devices".into(), json!([weather]).to_string())]).await?;
    let found = devices(&hub, &owner).await?;
    assert!(named(&found, &weather_name).is_some());
    assert!(named(&found, &plug_name).is_none(), "the removed plug is still there");
    // A list with nothing in it, or one whose entry for the sensor cannot be read (a name
    // with a wildcard), says nothing of the sensor leaving.
    let mut unreadable = weather.clone();
    unreadable["friendly_name"] = json!("weather+sensor");
    for list in [json!([]), json!([unreadable])] {
        send(&hub, &z2m, vec![("zigbee2mqtt/bridge/devices".into(), list.to_string())]).await?;
        let found = devices(&hub, &owner).await?;
        assert!(named(&found, &weather_name).is_some(), "the sensor left with {list}");
    }
    Ok(())
}

/// A Tasmota plug, a Shelly and an ESPHome node that each log in with credentials of their
/// own are one device each: what they announce is the device their credentials are.
#[tokio::test]
async fn a_device_that_is_its_own_connection_is_one_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let plug =
        connection(&hub, &owner, "Kettle plug", &["tasmota/discovery/E09806F17F56/#", "tele/tasmota_F17F56/#"]).await?;
    let shelly = connection(&hub, &owner, "Hall relay", &["shellies/plus1pm/#"]).await?;
    let node = connection(&hub, &owner, "Garage", &["garagedoor1/#", "homeassistant/+/garagedoor1/#"]).await?;
    let replay = |names: &[&str]| names.iter().map(|n| corpus(n)).collect::<anyhow::Result<Vec<_>>>();
    send(
        &hub,
        &plug,
        replay(&["tasmota-discovery-athom-plug.config", "tasmota-tele-LWT-online", "tasmota-tele-SENSOR-energy"])?,
    )
    .await?;
    send(&hub, &shelly, replay(&["shelly-gen2-online-true", "shelly-gen2-status-switch0"])?).await?;
    send(
        &hub,
        &node,
        replay(&[
            "esphome-status-online",
            "esphome-sensor-state",
            "esphome-ha-sensor-temperature.config",
            "esphome-ha-light-json.config",
        ])?,
    )
    .await?;
    let found = devices(&hub, &owner).await?;
    let shown: Vec<&Value> = found.iter().map(|d| &d["name"]).collect();
    assert_eq!(found.len(), 3, "three devices, three entries: {shown:?}");
    for ((id, _), value) in [(&plug, "ENERGY.Power"), (&shelly, "switch_0.apower"), (&node, "garage_temperature")] {
        let device = with_id(&found, id).ok_or_else(|| anyhow::anyhow!("no {id}"))?;
        assert!(device["bridge"].is_null(), "{device}");
        assert!(!device["namespaces"].as_array().is_none_or(Vec::is_empty), "its connection is its own: {device}");
        assert!(metric(device, value).is_some(), "no {value}: {device}");
        assert_eq!(device["discovered"]["online"], true, "{device}");
    }
    let garage = with_id(&found, &node.0).ok_or_else(|| anyhow::anyhow!("no node"))?;
    assert_eq!(garage["discovered"]["name"], "GarageDoor1", "{garage}");
    let temperature = described(garage, "garage_temperature").ok_or_else(|| anyhow::anyhow!("{garage}"))?;
    assert_eq!(temperature["class"], "temperature", "the node's config describes its own value");
    // Its readings are its own; a reading afterwards arrives on the same device.
    send(&hub, &node, messages(&[("garagedoor1/sensor/garage_temperature/state", "24.5")])).await?;
    let readings = wait_until(Duration::from_secs(5), "the node's reading", || async {
        let readings = hub.readings(&owner, &node.0, "garage_temperature").await.ok()?;
        (readings.len() >= 2).then_some(readings)
    })
    .await?;
    assert_eq!(readings.last().map(|r| r["value"].clone()), Some(json!(24.5)));
    // What its description does not set it takes on Hearth's own topics, as before it
    // described itself.
    let sent = owner
        .post(hub.url(&format!("/api/devices/{}/command", plug.0)))
        .json(&json!({ "metric": "led", "value": true }))
        .send()
        .await?;
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.json::<Value>().await?["topic"], format!("hearth/{}/set/led", plug.0));
    Ok(())
}
