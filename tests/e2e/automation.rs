//! Automations end to end: a device's reading fires a rule and another device receives the
//! command (over the embedded MQTT server, and over CoAP to libcoap's server); traces,
//! notifications and refused rules; the cloud cut (upstream Mosquitto stopped, hub
//! restarted, outbox drained in order, each message once); delays and missed time triggers
//! across a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;

use hearth_tests::{
    Config, Listener, Mosquitto, MosquittoOptions, Peer, TestHub, TlsListener, free_udp_port, path_str, run_tool,
    test_certificates, wait_until,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

async fn create_rule(hub: &TestHub, client: &reqwest::Client, rule: Value) -> anyhow::Result<i64> {
    let resp = client.post(hub.url("/api/rules")).json(&rule).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    anyhow::ensure!(status == 201, "creating a rule: {status} {body}");
    body["id"].as_i64().ok_or_else(|| anyhow::anyhow!("no id in {body}"))
}

/// Waits until `rule` has `n` traces: the runtime has dealt with that many of its triggers
/// (and so with every rule's reaction to the readings before).
async fn traced(hub: &TestHub, owner: &reqwest::Client, rule: i64, n: usize) -> anyhow::Result<Vec<Value>> {
    wait_until(Duration::from_secs(5), &format!("{n} traces of rule {rule}"), || async {
        runs(hub, owner, rule).await.ok().filter(|r| r.len() == n)
    })
    .await
}

async fn runs(hub: &TestHub, client: &reqwest::Client, rule: i64) -> anyhow::Result<Vec<Value>> {
    let v: Value = client.get(hub.url(&format!("/api/rules/{rule}/runs"))).send().await?.json().await?;
    v.as_array().cloned().ok_or_else(|| anyhow::anyhow!("runs of rule {rule}: not a list: {v}"))
}

/// The outbox status of one destination.
async fn outbox(hub: &TestHub, owner: &reqwest::Client, destination: &str) -> anyhow::Result<Value> {
    let v: Value = owner.get(hub.url("/api/outbox")).send().await?.json().await?;
    let found = v["destinations"].as_array().and_then(|d| d.iter().find(|d| d["destination"] == destination));
    found.cloned().ok_or_else(|| anyhow::anyhow!("no destination {destination} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_fires_a_rule_and_the_device_gets_its_command() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (sensor, sensor_secret) = hub.add_device(&owner, "Hall sensor").await?;
    let (plug, plug_secret) = hub.add_device(&owner, "Heater plug").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let mut heater = Listener::start(addr, &plug, &plug_secret, &format!("hearth/{plug}/set/#")).await?;
    let sensor_dev = (sensor.as_str(), sensor_secret.as_str());
    let topic = format!("hearth/{sensor}/temperature");

    let heat = create_rule(
        &hub,
        &owner,
        json!({
            "insist": true,
            "name": "Heat when cold",
            "triggers": [{ "type": "threshold", "device": sensor, "metric": "temperature", "below": 18.0 }],
            "actions": [
                { "type": "mqtt", "device": plug, "metric": "power", "value": "on" },
                { "type": "notify", "message": "Heating on" }
            ]
        }),
    )
    .await?;
    let guarded = create_rule(
        &hub,
        &owner,
        json!({
            "insist": true,
            "name": "Alarm when away",
            "triggers": [{ "type": "reading", "device": sensor, "metric": "temperature" }],
            "conditions": [{ "type": "virtual", "name": "away", "op": "==", "value": true }],
            "actions": [{ "type": "mqtt", "device": plug, "metric": "alarm", "value": true }]
        }),
    )
    .await?;

    // Crossing below 18 sends the command; staying below does not; crossing again does.
    hub.publish(sensor_dev, &topic, "17.5".into()).await?;
    assert_eq!(heater.next().await?, (format!("hearth/{plug}/set/power"), "on".to_owned()));
    // The guarded rule runs on every reading: its traces say the runtime has dealt with it.
    hub.publish(sensor_dev, &topic, "17.0".into()).await?;
    traced(&hub, &owner, guarded, 2).await?;
    heater.nothing_before_marker(&hub, &owner, &plug, 1).await.context("no command while it stays cold")?;
    hub.publish(sensor_dev, &topic, "21".into()).await?;
    hub.publish(sensor_dev, &topic, "16".into()).await?;
    assert_eq!(heater.next().await?.1, "on");
    traced(&hub, &owner, guarded, 4).await?;
    heater.nothing_before_marker(&hub, &owner, &plug, 2).await.context("the alarm's condition failed")?;

    // The traces say what triggered each run and what it did, or which condition failed.
    let traces = wait_until(Duration::from_secs(5), "two finished runs", || async {
        runs(&hub, &owner, heat).await.ok().filter(|r| r.len() == 2 && r.iter().all(|t| t["status"] == "done"))
    })
    .await?;
    assert_eq!(traces[0]["trigger"]["text"], "temperature of ".to_owned() + &sensor + " went below 18: 16");
    assert_eq!(traces[0]["steps"][0]["action"], format!("MQTT hearth/{plug}/set/power = on"));
    assert_eq!(traces[0]["steps"][1]["result"], "shown in the app");
    let skipped = wait_until(Duration::from_secs(5), "four traces of the guarded rule", || async {
        runs(&hub, &owner, guarded).await.ok().filter(|r| r.len() == 4)
    })
    .await?;
    assert!(skipped.iter().all(|t| t["status"] == "conditions not met"), "{skipped:?}");
    assert_eq!(skipped[0]["checks"][0], json!({ "condition": "away (not set) == on", "passed": false }));
    let notes: Value = owner.get(hub.url("/api/notifications")).send().await?.json().await?;
    assert_eq!(notes.as_array().map(Vec::len), Some(2), "{notes}");
    assert_eq!((notes[0]["rule"].as_str(), notes[0]["message"].as_str()), (Some("Heat when cold"), Some("Heating on")));

    // Disabled, the rule keeps its definition but does nothing.
    let mut def: Value = owner.get(hub.url(&format!("/api/rules/{heat}"))).send().await?.json().await?;
    def["rule"]["enabled"] = json!(false);
    let resp = owner.put(hub.url(&format!("/api/rules/{heat}"))).json(&def["rule"]).send().await?;
    assert_eq!(resp.status(), 200);
    hub.publish(sensor_dev, &topic, "25".into()).await?;
    hub.publish(sensor_dev, &topic, "10".into()).await?;
    traced(&hub, &owner, guarded, 6).await?;
    heater.nothing_before_marker(&hub, &owner, &plug, 3).await.context("a disabled rule sends nothing")?;

    // Bad rules are refused with a reason, and nothing is stored.
    let bad = |rule: Value| {
        let owner = owner.clone();
        let url = hub.url("/api/rules");
        async move {
            let resp = owner.post(url).json(&rule).send().await?;
            let status = resp.status().as_u16();
            anyhow::Ok((status, resp.json::<Value>().await?["error"].as_str().unwrap_or_default().to_owned()))
        }
    };
    let notify = json!([{ "type": "notify", "message": "x" }]);
    let (status, error) =
        bad(json!({ "insist": true, "name": "r", "triggers": [{ "type": "reading", "device": "nosuchdevice",
        "metric": "t" }], "actions": notify }))
        .await?;
    assert_eq!((status, error.contains("no device \"nosuchdevice\"")), (422, true), "{error}");
    let (status, error) =
        bad(json!({ "insist": true, "name": "r", "triggers": [{ "type": "cron", "expr": "every tuesday" }], "actions": notify }))
            .await?;
    assert_eq!((status, error.contains("cron")), (422, true), "{error}");
    let (status, _) =
        bad(json!({ "insist": true, "name": "r", "triggers": [{ "type": "start" }], "actions": [] })).await?;
    assert_eq!(status, 422);
    create_rule(
        &hub,
        &owner,
        json!({ "insist": true, "name": "A", "triggers": [{ "type": "virtual", "name": "x" }],
            "actions": [{ "type": "set", "name": "y", "value": true }] }),
    )
    .await?;
    let (status, error) = bad(json!({ "insist": true, "name": "B", "triggers": [{ "type": "virtual", "name": "y" }],
        "actions": [{ "type": "set", "name": "x", "value": true }] }))
    .await?;
    assert_eq!((status, error.contains("forever") && error.contains("A")), (422, true), "{error}");
    let all: Value = owner.get(hub.url("/api/rules")).send().await?.json().await?;
    assert_eq!(all.as_array().map(Vec::len), Some(3));

    // Export and import round-trip, as YAML.
    let yaml = owner.get(hub.url("/api/rules/export?format=yaml")).send().await?.text().await?;
    assert!(yaml.contains("name: Heat when cold"), "{yaml}");
    let other_dir = tempfile::tempdir()?;
    let other = TestHub::start(other_dir.path()).await?;
    let other_owner = other.owner().await?;
    // The devices are this hub's: on another hub they do not exist, so the import is refused.
    let resp = other_owner
        .post(other.url("/api/rules/import"))
        .header("content-type", "application/yaml")
        .body(yaml.clone())
        .send()
        .await?;
    assert_eq!(resp.status(), 422);
    let resp = owner
        .post(hub.url("/api/rules/import"))
        .header("content-type", "application/yaml")
        .body(yaml.replace("name: Heat when cold", "name: Heat when cold (copy)").replace("name: A\n", "name: A2\n"))
        .send()
        .await?;
    // Importing A again would make a second rule that sets y from x: no loop, accepted.
    assert_eq!(resp.status(), 201, "{}", resp.text().await?);
    other.stop().await?;
    hub.stop().await?;
    Ok(())
}

/// A rule commands a CoAP device over DTLS with the device's own key: libcoap's
/// `coap-server-openssl` accepts only the lamp's identity and key on its DTLS port, where a
/// plain request gets no answer. A device marked as unable to do DTLS is commanded in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_commands_a_coap_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (button, secret) = hub.add_device(&owner, "Button").await?;
    let (lamp, lamp_key) = hub.add_device(&owner, "Lamp").await?;

    // The lamp: plain CoAP on `port`, DTLS on `port + 1`, only for the lamp's identity.
    let port = free_udp_port()?;
    let identities = dir.path().join("identities");
    std::fs::write(&identities, format!("CoAP,{lamp},{lamp_key}\n"))?;
    let _lamp = Peer::spawn(
        "coap-server-openssl",
        &["-A", "127.0.0.1", "-p", &port.to_string(), "-k", "not-the-lamps-key", "-i", path_str(&identities)?],
    )?;
    let uri = format!("coap://127.0.0.1:{port}/example_data");
    let get = || run_tool("coap-client-notls", &["-m", "get", "-B", "2", &uri]);
    wait_until(Duration::from_secs(10), "libcoap's server", || async { get().ok().filter(|(ok, _)| *ok) }).await?;

    let lamp_on = json!({
        "insist": true,
        "name": "Lamp on",
        "triggers": [{ "type": "change", "device": button, "metric": "pressed" }],
        "actions": [{ "type": "coap", "device": lamp, "path": "example_data", "method": "put", "payload": "lamp-on" }]
    });
    let refused = owner.post(hub.url("/api/rules")).json(&lamp_on).send().await?;
    assert_eq!(refused.status(), 422, "the lamp has no CoAP address yet");
    assert!(refused.text().await?.contains("no CoAP address"));
    let dtls = format!("127.0.0.1:{}", port + 1);
    let address = owner
        .put(hub.url(&format!("/api/devices/{lamp}/coap-address")))
        .json(&json!({ "address": dtls }))
        .send()
        .await?;
    assert_eq!(address.status(), 200);
    assert_eq!(address.json::<Value>().await?["coap_address"], dtls);
    let rule = create_rule(&hub, &owner, lamp_on).await?;
    hub.publish((&button, &secret), &format!("hearth/{button}/pressed"), "true".into()).await?;
    wait_until(Duration::from_secs(15), "the lamp to hold what the rule PUT over DTLS", || async {
        get().ok().filter(|(_, out)| out.trim() == "lamp-on")
    })
    .await?;
    let traces = wait_until(Duration::from_secs(5), "the run's trace", || async {
        runs(&hub, &owner, rule).await.ok().filter(|r| r.first().is_some_and(|t| t["status"] == "done"))
    })
    .await?;
    let step = &traces[0]["steps"][0];
    assert_eq!(step["action"], format!("CoAP PUT {lamp}/example_data"));
    assert!(step["result"].as_str().is_some_and(|r| r.starts_with("2.0")), "{step}");

    // Marked as unable to do DTLS, the lamp is commanded in clear, on its plain port.
    assert_eq!(owner.delete(hub.url(&format!("/api/rules/{rule}"))).send().await?.status(), 204);
    let mark = owner.put(hub.url(&format!("/api/devices/{lamp}/plaintext"))).json(&json!({ "plaintext": true }));
    assert_eq!(mark.send().await?.status(), 200);
    let plain = format!("127.0.0.1:{port}");
    let address = owner
        .put(hub.url(&format!("/api/devices/{lamp}/coap-address")))
        .json(&json!({ "address": plain }))
        .send()
        .await?;
    assert_eq!(address.status(), 200);
    let lamp_off = json!({
        "insist": true,
        "name": "Lamp off",
        "triggers": [{ "type": "change", "device": button, "metric": "pressed" }],
        "actions": [{ "type": "coap", "device": lamp, "path": "example_data", "method": "put", "payload": "lamp-off" }]
    });
    create_rule(&hub, &owner, lamp_off).await?;
    hub.publish((&button, &secret), &format!("hearth/{button}/pressed"), "false".into()).await?;
    wait_until(Duration::from_secs(15), "the lamp to hold what the rule PUT in clear", || async {
        get().ok().filter(|(_, out)| out.trim() == "lamp-off")
    })
    .await?;
    hub.stop().await?;
    Ok(())
}

/// The receiving end of the cloud: a client of the upstream broker with a persistent
/// session (so messages published while it is away, or the broker restarts, wait for it),
/// subscribed to the home's topics. Yields each message's JSON; reconnects by itself.
async fn cloud_watcher(
    port: u16,
) -> anyhow::Result<(AsyncClient, mpsc::UnboundedReceiver<Value>, tokio::task::JoinHandle<()>)> {
    let mut options = MqttOptions::new("watcher", "127.0.0.1", port);
    options.set_credentials("watcher", "watcher-password");
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    client.subscribe("hearth/home/#", QoS::AtLeastOnce).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(serde_json::from_slice(&p.payload).unwrap_or(Value::Null));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok((client, rx, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_is_cut_local_rules_keep_firing_and_the_outbox_drains_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cloud_dir = dir.path().join("cloud");
    std::fs::create_dir_all(&cloud_dir)?;
    let users = [("home", "home-password"), ("watcher", "watcher-password")];
    let cloud =
        Mosquitto::start_with(&cloud_dir, &users, "watcher", MosquittoOptions { persist: true, ..Default::default() })?;
    let port = cloud.port;

    // The watcher subscribes once; its session outlives the broker's restart.
    let (_watcher, mut seen, watch) = cloud_watcher(port).await?;

    let mut config = Config::for_test(&dir.path().join("data"));
    config.cloud = toml::from_str(&format!(
        "retry_max_s = 1\n[[destinations]]\nname = 'upstream'\nkind = 'mqtt'\nurl = 'mqtt://127.0.0.1:{port}'\n\
         username = 'home'\npassword = 'home-password'\ntopic_prefix = 'hearth/home/'"
    ))?;
    let hub = TestHub::start_with(config.clone()).await?;
    let owner = hub.owner().await?;
    let (meter, meter_secret) = hub.add_device(&owner, "Meter").await?;
    let (relay, relay_secret) = hub.add_device(&owner, "Relay").await?;
    let meter_dev = (meter.as_str(), meter_secret.as_str());
    create_rule(
        &hub,
        &owner,
        json!({
            "insist": true,
            "name": "Report and switch",
            "mode": "queued",
            "triggers": [{ "type": "reading", "device": meter, "metric": "power" }],
            "actions": [
                { "type": "mqtt", "device": relay, "metric": "state", "value": "toggle" },
                { "type": "cloud", "destination": "upstream", "topic": "power", "payload": { "note": "meter read" } }
            ]
        }),
    )
    .await?;
    let topic = format!("hearth/{meter}/power");
    let mut relay_in =
        Listener::start(hub.mqtt.unwrap_or(hub.http), &relay, &relay_secret, &format!("hearth/{relay}/set/#")).await?;

    // Cloud up: the first message goes straight through.
    hub.publish(meter_dev, &topic, "1".into()).await?;
    assert_eq!(relay_in.next().await?.1, "toggle");
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await?.unwrap_or_default();
    assert_eq!(first["message"]["trigger"]["value"], 1.0);
    wait_until(Duration::from_secs(5), "the outbox to be empty", || async {
        outbox(&hub, &owner, "upstream").await.ok().filter(|o| o["queued"] == 0 && o["delivered"] == 1)
    })
    .await?;

    // Cloud cut: every local trigger still switches the relay at once; the outbox grows.
    cloud.stop()?;
    for v in 2..=6 {
        hub.publish(meter_dev, &topic, v.to_string()).await?;
        assert_eq!(relay_in.next().await?.1, "toggle", "reading {v}: the local command");
    }
    let status = wait_until(Duration::from_secs(5), "five queued messages", || async {
        outbox(&hub, &owner, "upstream").await.ok().filter(|o| o["queued"] == 5)
    })
    .await?;
    assert!(status["last_error"].is_string(), "{status}");

    // The hub restarts while the cloud is still down: the outbox is intact, rules still fire.
    drop(relay_in);
    hub.stop().await?;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.login().await?;
    assert_eq!(outbox(&hub, &owner, "upstream").await?["queued"], 5);
    let mut relay_in =
        Listener::start(hub.mqtt.unwrap_or(hub.http), &relay, &relay_secret, &format!("hearth/{relay}/set/#")).await?;
    hub.publish(meter_dev, &topic, "7".into()).await?;
    assert_eq!(relay_in.next().await?.1, "toggle");
    wait_until(Duration::from_secs(5), "six queued", || async {
        outbox(&hub, &owner, "upstream").await.ok().filter(|o| o["queued"] == 6)
    })
    .await?;

    // The cloud comes back: the outbox drains, in order, each message once.
    let cloud = Mosquitto::start_with(
        &cloud_dir,
        &users,
        "watcher",
        MosquittoOptions { port: Some(port), persist: true, ..Default::default() },
    )?;
    let mut values = vec![1.0];
    let mut ids = BTreeSet::from([first["id"].as_str().unwrap_or_default().to_owned()]);
    while values.len() < 7 {
        let m = tokio::time::timeout(Duration::from_secs(20), seen.recv())
            .await
            .map_err(|_| anyhow::anyhow!("only {values:?} arrived"))?
            .unwrap_or_default();
        assert!(ids.insert(m["id"].as_str().unwrap_or_default().to_owned()), "a message arrived twice: {m}");
        values.push(m["message"]["trigger"]["value"].as_f64().unwrap_or_default());
    }
    assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    wait_until(Duration::from_secs(5), "an empty outbox", || async {
        outbox(&hub, &owner, "upstream").await.ok().filter(|o| o["queued"] == 0)
    })
    .await?;
    // Nothing more arrives: the next message, made now, is the next to arrive.
    hub.publish(meter_dev, &topic, "8".into()).await?;
    let next = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await?.unwrap_or_default();
    assert_eq!(next["message"]["trigger"]["value"], 8.0, "sent again: {next}");
    watch.abort();
    hub.stop().await?;
    drop(cloud);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_and_missed_time_triggers_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let config = hub.config.clone();
    let owner = hub.owner().await?;
    let (door, door_secret) = hub.add_device(&owner, "Door").await?;
    let (light, light_secret) = hub.add_device(&owner, "Porch light").await?;
    let delayed = create_rule(
        &hub,
        &owner,
        json!({
            "insist": true,
            "name": "Light off later",
            "triggers": [{ "type": "reading", "device": door, "metric": "open" }],
            "actions": [{ "type": "delay", "seconds": 6 }, { "type": "mqtt", "device": light, "metric": "power", "value": "off" }]
        }),
    )
    .await?;
    let every_second = json!([{ "type": "cron", "expr": "* * * * * *" }]);
    let notify = json!([{ "type": "notify", "message": "tick" }]);
    let caught = create_rule(
        &hub,
        &owner,
        json!({ "insist": true, "name": "Catch up", "catch_up": true, "triggers": every_second, "actions": notify }),
    )
    .await?;
    let not_caught = create_rule(
        &hub,
        &owner,
        json!({ "insist": true, "name": "No catch up", "triggers": every_second, "actions": notify }),
    )
    .await?;
    // The rule's trigger fires, and the hub stops during its delay, once both schedules
    // have run.
    let clock = hub.clock.clone();
    let triggered = clock.now_ms();
    hub.publish((&door, &door_secret), &format!("hearth/{door}/open"), "true".into()).await?;
    wait_until(Duration::from_secs(5), "the run to be waiting", || async {
        runs(&hub, &owner, delayed).await.ok().filter(|r| r.first().is_some_and(|t| t["status"] == "waiting"))
    })
    .await?;
    clock.advance(Duration::from_millis(1200));
    wait_until(Duration::from_secs(5), "both schedules to run", || async {
        let (a, b) = (runs(&hub, &owner, caught).await.ok()?, runs(&hub, &owner, not_caught).await.ok()?);
        (!a.is_empty() && !b.is_empty()).then_some(())
    })
    .await?;
    hub.stop().await?;

    // Down for a while: the time triggers of that span are missed.
    clock.advance(Duration::from_millis(1500));
    let before_caught = runs_count(dir.path(), caught).await?;
    let before_not = runs_count(dir.path(), not_caught).await?;
    let hub = TestHub::start_with_clock(config, clock.clone()).await?;
    let owner = hub.login().await?;
    let mut light_in =
        Listener::start(hub.mqtt.unwrap_or(hub.http), &light, &light_secret, &format!("hearth/{light}/set/#")).await?;
    // The delay goes on after the restart; when it ends, the rest of the run happens.
    assert!(light_in.quiet(Duration::from_millis(200)).await, "the command came before the delay ended");
    clock.advance_to(triggered + 6000);
    assert_eq!(light_in.next().await?, (format!("hearth/{light}/set/power"), "off".to_owned()));
    let traces = wait_until(Duration::from_secs(5), "the resumed run to finish", || async {
        runs(&hub, &owner, delayed).await.ok().filter(|r| r.first().is_some_and(|t| t["status"] == "done"))
    })
    .await?;
    assert_eq!(traces.len(), 1, "one run, resumed: {traces:?}");
    assert_eq!(traces[0]["steps"][0]["result"], "waited");
    // The catch-up rule ran once for the missed span; the other did not.
    let caught_runs = wait_until(Duration::from_secs(5), "the catch-up run", || async {
        let r = runs(&hub, &owner, caught).await.ok()?;
        r.iter().any(|t| t["trigger"]["text"].as_str().is_some_and(|s| s.contains("missed"))).then_some(r)
    })
    .await?;
    let missed =
        caught_runs.iter().filter(|t| t["trigger"]["text"].as_str().is_some_and(|s| s.contains("missed"))).count();
    assert_eq!(missed, 1, "caught up exactly once: {caught_runs:?}");
    let not_runs = runs(&hub, &owner, not_caught).await?;
    assert!(not_runs.iter().all(|t| !t["trigger"]["text"].as_str().unwrap_or_default().contains("missed")));
    assert!(before_caught > 0 && before_not > 0, "both ran every second before the stop");
    hub.stop().await?;
    Ok(())
}

/// Runs recorded for `rule`, read from the database file while the hub is stopped.
async fn runs_count(dir: &std::path::Path, rule: i64) -> anyhow::Result<i64> {
    let db = dir.join("data/hearth.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM rule_runs WHERE rule_id = ?").bind(rule).fetch_one(&pool).await?;
    pool.close().await;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_over_history_matches_what_the_rule_did_live() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (sensor, secret) = hub.add_device(&owner, "Sensor").await?;
    let (plug, _) = hub.add_device(&owner, "Plug").await?;
    let rule = json!({
        "insist": true,
        "name": "Cold, or the door opens while it is cool",
        "mode": "parallel",
        "triggers": [
            { "type": "threshold", "device": sensor, "metric": "temperature", "below": 18.0 },
            { "type": "reading", "device": sensor, "metric": "door" }
        ],
        "conditions": [{ "type": "compare", "device": sensor, "metric": "temperature", "op": "<", "value": 20 }],
        "actions": [{ "type": "mqtt", "device": plug, "metric": "power", "value": "on" }]
    });
    let id = create_rule(&hub, &owner, rule.clone()).await?;
    let from = hub.now_ms();
    let dev = (sensor.as_str(), secret.as_str());
    for (metric, value) in [
        ("temperature", "20"),
        ("temperature", "17"),
        ("temperature", "16"),
        ("temperature", "19"),
        ("door", "true"),
        ("temperature", "21"),
        ("door", "true"),
        ("temperature", "15"),
    ] {
        hub.publish(dev, &format!("hearth/{sensor}/{metric}"), value.into()).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let to = hub.now_ms() + 1;
    let live = wait_until(Duration::from_secs(5), "four live runs", || async {
        runs(&hub, &owner, id).await.ok().filter(|r| r.len() == 4)
    })
    .await?;
    let mut live: Vec<(i64, String, bool)> = live
        .iter()
        .map(|t| {
            let at = t["trigger"]["at"].as_i64().unwrap_or_default();
            (at, t["trigger"]["text"].as_str().unwrap_or_default().to_owned(), t["status"] == "done")
        })
        .collect();
    live.sort();
    let resp =
        owner.post(hub.url("/api/rules/dry-run")).json(&json!({ "rule": rule, "from": from, "to": to })).send().await?;
    assert_eq!(resp.status(), 200);
    let dry: Value = resp.json().await?;
    let replayed: Vec<(i64, String, bool)> = dry["fires"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let at = f["at"].as_i64().unwrap_or_default();
            (at, f["trigger"].as_str().unwrap_or_default().to_owned(), f["run"].as_bool().unwrap_or_default())
        })
        .collect();
    assert_eq!(replayed, live, "the dry run lists exactly what happened live");
    // Two went below 18, the door opened once while it was cool and once while it was not.
    assert_eq!(replayed.iter().map(|f| f.2).collect::<Vec<_>>(), vec![true, true, false, true]);
    assert_eq!(dry["fires"][0]["actions"][0], format!("MQTT hearth/{plug}/set/power = on"));
    assert_eq!(dry["readings"], 8);
    hub.stop().await?;
    Ok(())
}

/// A webhook receiver: answers each POST with the next status of `script` (200 once it is
/// used up) and reports (status, Idempotency-Key, body) for each.
async fn webhook_receiver(
    script: Vec<u16>,
) -> anyhow::Result<(std::net::SocketAddr, mpsc::UnboundedReceiver<(u16, String, Value)>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut script = std::collections::VecDeque::from(script);
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            let (head, body_start) = loop {
                let Ok(n) = stream.read(&mut chunk).await else { break (String::new(), 0) };
                if n == 0 {
                    break (String::new(), 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..i]).to_lowercase(), i + 4);
                }
            };
            let header = |name: &str| {
                head.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
            };
            let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < body_start + length {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = serde_json::from_slice(&buf[body_start.min(buf.len())..]).unwrap_or(Value::Null);
            let status = script.pop_front().unwrap_or(200);
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = tx.send((status, header("idempotency-key").unwrap_or_default(), body));
        }
    });
    Ok((addr, rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_retried_refusals_dropped_and_a_full_outbox_drops_its_oldest() -> anyhow::Result<()> {
    let (addr, mut received) = webhook_receiver(vec![503, 200, 422]).await?;
    let closed = hearth_tests::free_port()?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_test(&dir.path().join("data"));
    config.cloud = toml::from_str(&format!(
        "retry_max_s = 1\nmax_queued = 3\n\
         [[destinations]]\nname = 'hook'\nkind = 'webhook'\nurl = 'http://{addr}/hook'\n\
         [[destinations]]\nname = 'down'\nkind = 'webhook'\nurl = 'http://127.0.0.1:{closed}/nobody'"
    ))?;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (sensor, secret) = hub.add_device(&owner, "Sensor").await?;
    let dev = (sensor.as_str(), secret.as_str());
    for (metric, destination) in [("x", "hook"), ("y", "down")] {
        create_rule(
            &hub,
            &owner,
            json!({ "insist": true, "name": format!("to {destination}"), "mode": "queued",
                "triggers": [{ "type": "reading", "device": sensor, "metric": metric }],
                "actions": [{ "type": "cloud", "destination": destination, "payload": { "metric": metric } }] }),
        )
        .await?;
    }

    // Three messages: the first is refused with 503 once, then taken; the second is refused
    // for good (422) and dropped; the third goes through. In order, each with its id.
    for v in 1..=3 {
        hub.publish(dev, &format!("hearth/{sensor}/x"), v.to_string()).await?;
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (status, key, body) = tokio::time::timeout(Duration::from_secs(15), received.recv())
            .await
            .map_err(|_| anyhow::anyhow!("only {seen:?} arrived"))?
            .unwrap_or_default();
        assert_eq!(key, body["id"].as_str().unwrap_or_default(), "the Idempotency-Key is the message id");
        seen.push((status, key, body["message"]["trigger"]["value"].as_f64().unwrap_or_default()));
    }
    let statuses: Vec<(u16, f64)> = seen.iter().map(|(s, _, v)| (*s, *v)).collect();
    assert_eq!(statuses, vec![(503, 1.0), (200, 1.0), (422, 2.0), (200, 3.0)]);
    assert_eq!(seen[0].1, seen[1].1, "a retry carries the same id");
    // Nothing is sent again: the next message, made now, is the next to arrive.
    hub.publish(dev, &format!("hearth/{sensor}/x"), "4".into()).await?;
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(15), received.recv()).await?.unwrap_or_default();
    assert_eq!((status, body["message"]["trigger"]["value"].as_f64()), (200, Some(4.0)), "sent again: {body}");

    // A destination that never answers: five messages, room for three; the oldest two go.
    for v in 1..=5 {
        hub.publish(dev, &format!("hearth/{sensor}/y"), v.to_string()).await?;
    }
    let status: Value = wait_until(Duration::from_secs(10), "five messages for the dead destination", || async {
        outbox(&hub, &owner, "down").await.ok().filter(|d| d["dropped"] == 2)
    })
    .await?;
    assert_eq!((status["queued"].as_i64(), status["full"].as_bool()), (Some(3), Some(true)), "{status}");
    let notes: Value = owner.get(hub.url("/api/notifications")).send().await?.json().await?;
    let texts: Vec<&str> = notes.as_array().into_iter().flatten().filter_map(|n| n["message"].as_str()).collect();
    assert!(texts.iter().any(|t| t.contains("outbox for down is full")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("hook refused a message for good (HTTP 422")), "{texts:?}");
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_bridge_speaks_tls_and_checks_the_broker_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cloud_dir = dir.path().join("cloud");
    std::fs::create_dir_all(&cloud_dir)?;
    let (ca, cert, key) = test_certificates(&cloud_dir)?;
    let tls_port = hearth_tests::free_port()?;
    let users = [("home", "home-password"), ("watcher", "watcher-password")];
    let options =
        MosquittoOptions { tls: Some(TlsListener { port: tls_port, ca: ca.clone(), cert, key }), ..Default::default() };
    let cloud = Mosquitto::start_with(&cloud_dir, &users, "watcher", options)?;
    // The watcher reads on the plain listener (the test's client has no TLS).
    let (_watcher, mut seen, watch) = cloud_watcher(cloud.port).await?;

    // One destination trusts the test's certificate authority; the other trusts only the
    // system's, which do not know it, so its TLS handshake must fail.
    let mut config = Config::for_test(&dir.path().join("data"));
    let common = format!(
        "kind = 'mqtt'\nurl = 'mqtts://localhost:{tls_port}'\nusername = 'home'\npassword = 'home-password'\ntopic_prefix = 'hearth/home/'"
    );
    config.cloud = toml::from_str(&format!(
        "retry_max_s = 1\n[[destinations]]\nname = 'trusted'\nclient_id = 'hub-a'\n{common}\nca_file = '{}'\n\
         [[destinations]]\nname = 'untrusted'\nclient_id = 'hub-b'\n{common}",
        ca.display()
    ))?;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (sensor, secret) = hub.add_device(&owner, "Sensor").await?;
    create_rule(
        &hub,
        &owner,
        json!({ "insist": true, "name": "up", "triggers": [{ "type": "reading", "device": sensor, "metric": "t" }],
            "actions": [
                { "type": "cloud", "destination": "trusted", "topic": "secure", "payload": {} },
                { "type": "cloud", "destination": "untrusted", "topic": "insecure", "payload": {} }
            ] }),
    )
    .await?;
    hub.publish((&sensor, &secret), &format!("hearth/{sensor}/t"), "42".into()).await?;
    let m = tokio::time::timeout(Duration::from_secs(15), seen.recv()).await?.unwrap_or_default();
    assert_eq!(m["message"]["trigger"]["value"], 42.0);
    let status = wait_until(Duration::from_secs(10), "the untrusted destination's error", || async {
        outbox(&hub, &owner, "untrusted").await.ok().filter(|d| d["last_error"].is_string())
    })
    .await?;
    assert_eq!(status["queued"], 1, "{status}");
    let error = status["last_error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("certificate") || error.contains("unknownissuer"), "{error}");
    // Nothing over the unverified link: the next message through is the trusted one's next.
    hub.publish((&sensor, &secret), &format!("hearth/{sensor}/t"), "43".into()).await?;
    let m = tokio::time::timeout(Duration::from_secs(15), seen.recv()).await?.unwrap_or_default();
    assert_eq!(m["message"]["trigger"]["value"], 43.0, "over the unverified link: {m}");
    watch.abort();
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_made_after_a_restart_knows_the_values_from_before() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let config = hub.config.clone();
    let owner = hub.owner().await?;
    let (sensor, secret) = hub.add_device(&owner, "Sensor").await?;
    let dev = (sensor.as_str(), secret.as_str());
    hub.publish(dev, &format!("hearth/{sensor}/temperature"), "20".into()).await?;
    hub.stop().await?;

    let hub = TestHub::start_with(config).await?;
    let owner = hub.login().await?;
    // Another metric first, so the hub has heard from this home since it started.
    hub.publish(dev, &format!("hearth/{sensor}/humidity"), "50".into()).await?;
    let id = create_rule(
        &hub,
        &owner,
        json!({ "insist": true, "name": "On change", "triggers": [{ "type": "change", "device": sensor, "metric": "temperature" }],
            "actions": [{ "type": "notify", "message": "changed" }] }),
    )
    .await?;
    // 20 again is no change: the rule knows 20 from before the restart.
    hub.publish(dev, &format!("hearth/{sensor}/temperature"), "20".into()).await?;
    hub.publish(dev, &format!("hearth/{sensor}/temperature"), "21".into()).await?;
    // A last change marks the end: once its run is traced, so is any run before it.
    hub.publish(dev, &format!("hearth/{sensor}/temperature"), "22".into()).await?;
    let expected = [
        format!("temperature of {sensor} changed from 21 to 22"),
        format!("temperature of {sensor} changed from 20 to 21"),
    ];
    let traces = wait_until(Duration::from_secs(5), "both runs to finish", || async {
        let r = runs(&hub, &owner, id).await.ok()?;
        let done = |text: &str| r.iter().any(|t| t["trigger"]["text"] == text && t["status"] == "done");
        expected.iter().all(|e| done(e)).then_some(r)
    })
    .await?;
    let texts: Vec<&str> = traces.iter().filter_map(|t| t["trigger"]["text"].as_str()).collect();
    assert_eq!(texts, expected, "{traces:?}");
    hub.stop().await?;
    Ok(())
}
