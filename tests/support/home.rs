//! A realistic home for tests: 50 devices through the five ecosystems (a Zigbee2MQTT
//! bridge with 20 real device definitions, DIY sensors with Home Assistant discovery in
//! rooms, Tasmota plugs, Shelly relays, ESPHome nodes), each connection with credentials
//! of its own.

use serde_json::{Value, json};

use crate::TestHub;
use crate::discovered::{corpus_file as corpus, herdsman_devices};

/// What a home of 50 devices across the five conventions should show: each device's name,
/// one metric with its unit, and (from Home Assistant discovery) its device class.
pub struct Expected {
    pub name: String,
    pub metric: String,
    pub unit: Option<String>,
    pub class: Option<&'static str>,
}

/// A connection of the home: its name, its namespaces, and what it sends.
pub struct Connection {
    pub name: String,
    pub namespaces: Vec<String>,
    pub messages: Vec<(String, String)>,
}

/// Twenty Zigbee models of the home (zigbee-herdsman-converters' names).
pub const HOME_ZIGBEE: &str = "WSDCGQ11LM,ZNCZ02LM,SNZB-02,RTCGQ11LM,MCCGQ11LM,SJCGQ11LM,E1743,SNZB-03,\
    TS0601_thermostat,SPZB0001,9290012607,ZNCLDJ12LM,WXKG11LM,QBKG12LM,SNZB-01,TS011F_plug_1,ZG-204ZL,SP-EUC01,\
    E1525/E1745,SNZB-04";

/// A reading in `unit` such as a home's device reports (the `n`th varies a little).
fn plausible(unit: &str, n: usize) -> f64 {
    let base = match unit {
        "%" => 87.0,
        "°C" => 21.0,
        "hPa" => 1012.0,
        "lx" => 320.0,
        "W" => 42.0,
        "V" => 230.0,
        "A" => 0.2,
        "kWh" => 12.34,
        "mV" => 3000.0,
        _ => 20.0,
    };
    base + n as f64 / 10.0
}

/// The rooms its DIY sensors suggest for themselves (`suggested_area`), in turn.
pub const ROOMS: [&str; 5] = ["Living room", "Kitchen", "Bedroom", "Bathroom", "Hall"];

/// The home's connections, built from the corpus and from Zigbee2MQTT's own device
/// definitions, and what they should make appear: a Zigbee2MQTT bridge with 20 Zigbee
/// devices behind it; 10 DIY sensors with Home Assistant discovery, 10 Tasmota plugs, 4
/// Shelly relays and 6 ESPHome nodes, each logging in with credentials of its own (named
/// by its owner as it names itself).
pub fn home_of_fifty() -> anyhow::Result<(Vec<Connection>, Vec<Expected>)> {
    let read = |name: &str| std::fs::read_to_string(corpus(name));
    let mut home = Vec::new();
    let mut expected = Vec::new();
    let mut connection = |name: String, namespaces: &[String], messages| {
        home.push(Connection { name, namespaces: namespaces.to_vec(), messages });
    };
    // Twenty real Zigbee devices, as Zigbee2MQTT lists them from its definitions, each
    // reporting the first number with a unit its definition exposes.
    let devices = herdsman_devices(&["--models", HOME_ZIGBEE])?;
    let mut zigbee = vec![("zigbee2mqtt/bridge/devices".to_owned(), Value::Array(devices.clone()).to_string())];
    for (n, device) in devices.iter().enumerate() {
        let name = device["friendly_name"].as_str().unwrap_or_default().to_owned();
        let numbers = reported_numbers(device);
        let (property, unit) = numbers.first().cloned().unwrap_or_default();
        let mut state = json!({ property.as_str(): 20.0 + n as f64 / 10.0, "linkquality": 120 });
        // And what else it reports, as such a device would: its other numbers, and its
        // binaries at rest (dry, clear, closed).
        for (other, unit) in numbers.iter().skip(1) {
            state[other.as_str()] = json!(plausible(unit, n));
        }
        for expose in device["definition"]["exposes"].as_array().into_iter().flatten() {
            if expose["type"] == "binary"
                && expose["access"].as_u64().is_some_and(|a| a & 1 == 1)
                && let Some(property) = expose["property"].as_str()
            {
                state[property] = expose["value_off"].clone();
            }
        }
        zigbee.push((format!("zigbee2mqtt/{name}"), state.to_string()));
        expected.push(Expected { name, metric: property, unit: Some(unit), class: None });
    }
    connection("Zigbee2MQTT".into(), &["zigbee2mqtt/#".into()], zigbee);
    for n in 0..10 {
        let config = json!({ "name": "Temperature", "stat_t": format!("diy/{n:02}/state"), "unit_of_meas": "°C",
            "dev_cla": "temperature", "uniq_id": format!("diy_{n:02}_t"),
            "dev": { "ids": format!("diy_{n:02}"), "name": format!("DIY {n:02}"), "mf": "Home-made", "mdl": "ESP8266",
                "sa": ROOMS[n % ROOMS.len()] } });
        let mut messages = vec![
            (format!("homeassistant/sensor/diy_{n:02}/temperature/config"), config.to_string()),
            (format!("diy/{n:02}/state"), "19.5".into()),
        ];
        // The first also switches the porch light.
        if n == 0 {
            let light = json!({ "name": "Porch light", "stat_t": "diy/00/light", "cmd_t": "diy/00/light/set",
                "uniq_id": "diy_00_light", "dev": { "ids": "diy_00" } });
            messages.push(("homeassistant/switch/diy_00/light/config".into(), light.to_string()));
            messages.push(("diy/00/light".into(), "OFF".into()));
        }
        let namespaces = [format!("homeassistant/+/diy_{n:02}/#"), format!("diy/{n:02}/#")];
        connection(format!("DIY {n:02}"), &namespaces, messages);
        expected.push(Expected {
            name: format!("DIY {n:02}"),
            metric: "temperature".into(),
            unit: Some("°C".into()),
            class: Some("temperature"),
        });
    }
    let energy = read("tasmota-tele-SENSOR-energy.json")?;
    for n in 0..10 {
        let messages = vec![
            (format!("tele/plug_{n:02}/LWT"), "Online".into()),
            (format!("tele/plug_{n:02}/SENSOR"), energy.clone()),
        ];
        let namespaces = [format!("tele/plug_{n:02}/#"), format!("stat/plug_{n:02}/#")];
        connection(format!("plug_{n:02}"), &namespaces, messages);
        expected.push(Expected {
            name: format!("plug_{n:02}"),
            metric: "ENERGY.Power".into(),
            unit: Some("W".into()),
            class: Some("power"),
        });
    }
    let switch = read("shelly-gen2-status-switch0.json")?;
    for n in 1..=4 {
        let messages = vec![
            (format!("shellyplus1pm-{n:02}/online"), "true".into()),
            (format!("shellyplus1pm-{n:02}/status/switch:0"), switch.clone()),
        ];
        connection(format!("shellyplus1pm-{n:02}"), &[format!("shellyplus1pm-{n:02}/#")], messages);
        expected.push(Expected {
            name: format!("shellyplus1pm-{n:02}"),
            metric: "switch_0.voltage".into(),
            unit: Some("V".into()),
            class: Some("voltage"),
        });
    }
    for n in 1..=6 {
        let messages = vec![
            (format!("esp-{n:02}/status"), "online".into()),
            (format!("esp-{n:02}/sensor/garage_temperature/state"), "23.8".into()),
        ];
        connection(format!("esp-{n:02}"), &[format!("esp-{n:02}/#")], messages);
        expected.push(Expected {
            name: format!("esp-{n:02}"),
            metric: "garage_temperature".into(),
            unit: None,
            class: None,
        });
    }
    Ok((home, expected))
}

/// Adds the home's connections, each granted its namespaces; returns their credentials.
pub async fn connect_the_home(
    hub: &TestHub,
    owner: &reqwest::Client,
    home: &[Connection],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut logins = Vec::new();
    for connection in home {
        let (id, key) = hub.add_device(owner, &connection.name).await?;
        let grant = owner.put(hub.url(&format!("/api/devices/{id}/bridge")));
        let granted = grant.json(&json!({ "namespaces": connection.namespaces })).send().await?;
        anyhow::ensure!(granted.status() == 200, "{}: {}", connection.name, granted.text().await?);
        logins.push((id, key));
    }
    Ok(logins)
}

/// The numbers a definition says its device reports, with their units: (property, unit)
/// of each top-level numeric expose that is published. A unit is kept as Hearth keeps one:
/// 1 to 16 characters (one definition says "minutes or litres"; one says "").
pub fn reported_numbers(device: &Value) -> Vec<(String, String)> {
    let exposes = device["definition"]["exposes"].as_array().cloned().unwrap_or_default();
    exposes
        .iter()
        .filter(|e| e["type"] == "numeric" && e["access"].as_u64().is_some_and(|a| a & 1 == 1))
        .filter_map(|e| Some((e["property"].as_str()?.to_owned(), e["unit"].as_str()?.to_owned())))
        .filter(|(_, unit)| (1..=16).contains(&unit.chars().count()))
        .collect()
}
