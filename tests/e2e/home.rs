//! The home as people arrange it: names they choose that discovery never overwrites, rooms
//! (suggested by discovery, chosen by people), favourites and hidden devices, bridges told
//! apart from the devices behind them.

use hearth_tests::TestHub;
use hearth_tests::discovered::{connection, devices, herdsman_devices, messages, publish_all, with_id};
use serde_json::{Value, json};

async fn send(hub: &TestHub, device: &(String, String), list: Vec<(String, String)>) -> anyhow::Result<()> {
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    publish_all(addr, (&device.0, &device.1), list).await
}

async fn change(hub: &TestHub, client: &reqwest::Client, id: &str, changes: Value) -> anyhow::Result<(u16, Value)> {
    let resp = client.patch(hub.url(&format!("/api/devices/{id}"))).json(&changes).send().await?;
    Ok((resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null)))
}

/// A renamed Zigbee plug, a renamed value and a chosen room survive Zigbee2MQTT announcing
/// its devices again and the hub restarting; the name the device announced stays readable
/// apart. A room suggested by discovery (`suggested_area`) is the room until people choose
/// another, and comes back when they clear theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_rooms_people_choose_survive_a_re_announce_and_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let z2m = connection(&hub, &owner, "Zigbee2MQTT", &["zigbee2mqtt/#"]).await?;
    let list = tokio::task::block_in_place(|| herdsman_devices(&["--models", "WSDCGQ11LM,ZNCZ02LM"]))?;
    let announce = vec![("zigbee2mqtt/bridge/devices".to_owned(), Value::Array(list.clone()).to_string())];
    send(&hub, &z2m, announce.clone()).await?;
    let plug_name = list[1]["friendly_name"].as_str().unwrap_or_default().to_owned();
    let meter = connection(&hub, &owner, "Energy meter", &["homeassistant/sensor/meter/#", "meter/#"]).await?;
    let config = |name: &str| {
        json!({ "name": "Energy", "stat_t": "meter/energy", "unit_of_meas": "kWh", "dev_cla": "energy",
            "dev": { "ids": "meter1", "name": name, "sa": "Utility room" } })
        .to_string()
    };
    send(&hub, &meter, messages(&[("homeassistant/sensor/meter/energy/config", &config("Meter"))])).await?;

    let found = devices(&hub, &owner).await?;
    let plug = found.iter().find(|d| d["name"] == plug_name.as_str()).ok_or_else(|| anyhow::anyhow!("no plug"))?;
    let plug = plug["id"].as_str().unwrap_or_default().to_owned();
    let bridge = with_id(&found, &z2m.0).ok_or_else(|| anyhow::anyhow!("no bridge"))?;
    assert_eq!(bridge["kind"], "bridge", "a coordinator that says nothing of itself is a bridge: {bridge}");
    let the_plug = with_id(&found, &plug).ok_or_else(|| anyhow::anyhow!("no plug"))?;
    assert_eq!(the_plug["kind"], "device", "{the_plug}");
    let the_meter = with_id(&found, &meter.0).ok_or_else(|| anyhow::anyhow!("no meter"))?;
    assert_eq!((&the_meter["kind"], &the_meter["room"]), (&json!("device"), &json!("Utility room")), "{the_meter}");

    let (status, changed) = change(
        &hub,
        &owner,
        &plug,
        json!({ "name": "Kettle plug", "room": "Kitchen", "favourite": true, "labels": { "power": "Kettle draw" } }),
    )
    .await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (&changed["name"], &changed["room"], &changed["favourite"]),
        (&json!("Kettle plug"), &json!("Kitchen"), &json!(true))
    );
    let (status, _) = change(&hub, &owner, &meter.0, json!({ "room": "Cellar", "hidden": true })).await?;
    assert_eq!(status, 200);

    // Discovery announces again, the meter under another name; then the hub restarts.
    send(&hub, &z2m, announce).await?;
    send(&hub, &meter, messages(&[("homeassistant/sensor/meter/energy/config", &config("Power meter"))])).await?;
    let config = hub.stop().await?;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.login().await?;
    let found = devices(&hub, &owner).await?;
    let the_plug = with_id(&found, &plug).ok_or_else(|| anyhow::anyhow!("no plug"))?;
    assert_eq!(the_plug["name"], "Kettle plug", "{the_plug}");
    assert_eq!(the_plug["discovered"]["name"], plug_name.as_str(), "what it announced stays readable: {the_plug}");
    assert_eq!((&the_plug["room"], &the_plug["favourite"]), (&json!("Kitchen"), &json!(true)));
    assert_eq!(the_plug["labels"]["power"], "Kettle draw", "{the_plug}");
    let the_meter = with_id(&found, &meter.0).ok_or_else(|| anyhow::anyhow!("no meter"))?;
    assert_eq!((&the_meter["room"], &the_meter["hidden"]), (&json!("Cellar"), &json!(true)), "{the_meter}");
    assert_eq!(the_meter["name"], "Energy meter", "the name its owner gave when adding it: {the_meter}");

    // Cleared, the suggested room and the announced name come back.
    let (status, changed) = change(&hub, &owner, &meter.0, json!({ "room": "", "hidden": false })).await?;
    assert_eq!((status, &changed["room"], &changed["hidden"]), (200, &json!("Utility room"), &json!(false)));
    let (status, changed) = change(&hub, &owner, &plug, json!({ "name": "" })).await?;
    assert_eq!((status, &changed["name"]), (200, &json!(plug_name)));
    // What is no name is refused, field by field.
    let (status, refused) = change(&hub, &owner, &plug, json!({ "name": "a\u{7}b" })).await?;
    assert_eq!((status, refused["fields"]["name"].is_string()), (422, true), "{refused}");
    let (status, refused) = change(&hub, &owner, &plug, json!({ "labels": { "not a metric": "x" } })).await?;
    assert_eq!((status, refused["fields"]["labels"].is_string()), (422, true), "{refused}");
    // A value folded away from its card, and one it does not have.
    let (status, changed) = change(&hub, &owner, &plug, json!({ "hidden_values": ["state", "power"] })).await?;
    assert_eq!((status, &changed["hidden_values"]), (200, &json!(["power", "state"])), "{changed}");
    let (status, refused) = change(&hub, &owner, &plug, json!({ "hidden_values": ["power", "colour"] })).await?;
    assert_eq!((status, refused["fields"]["hidden_values"].is_string()), (422, true), "{refused}");
    let (status, changed) = change(&hub, &owner, &plug, json!({ "hidden_values": [] })).await?;
    assert_eq!((status, changed.get("hidden_values")), (200, None), "{changed}");
    let (status, _) = change(&hub, &owner, &plug, json!({ "colour": "red" })).await?;
    assert_eq!(status, 422, "unknown fields are refused");
    hub.stop().await?;
    Ok(())
}

/// The rule editor's observation: a rule on a misspelt "temprature" of a sensor that never
/// reported it, and "power on" sent to the Zigbee2MQTT bridge itself, were saved and could
/// never do anything. Now each is refused with its reason (the nearest value the device
/// has, or that it is a bridge); a rule on a value the device announced, or one its author
/// insists on, is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_a_value_no_device_has_is_refused_unless_its_author_insists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let z2m = connection(&hub, &owner, "Zigbee2MQTT", &["zigbee2mqtt/#"]).await?;
    let list = tokio::task::block_in_place(|| herdsman_devices(&["--models", "WSDCGQ11LM,ZNCZ02LM"]))?;
    let [sensor, plug] = [&list[0], &list[1]].map(|d| d["friendly_name"].as_str().unwrap_or_default().to_owned());
    send(&hub, &z2m, vec![("zigbee2mqtt/bridge/devices".to_owned(), Value::Array(list).to_string())]).await?;
    let found = devices(&hub, &owner).await?;
    let id = |name: &str| found.iter().find(|d| d["name"] == name).and_then(|d| d["id"].as_str()).unwrap_or_default();
    let (sensor, plug) = (id(&sensor).to_owned(), id(&plug).to_owned());
    let (native, native_key) = hub.add_device(&owner, "Hall sensor").await?;
    let rule = |trigger: (&str, &str), action: (&str, &str), insist: bool| {
        json!({ "name": "r", "insist": insist,
            "triggers": [{ "type": "threshold", "device": trigger.0, "metric": trigger.1, "below": 18.0 }],
            "actions": [{ "type": "mqtt", "device": action.0, "metric": action.1, "value": true }] })
    };
    let save = |rule: Value| {
        let request = owner.post(hub.url("/api/rules")).json(&rule);
        async move {
            let resp = request.send().await?;
            anyhow::Ok((resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let (status, refused) = save(rule((&sensor, "temprature"), (&plug, "state"), false)).await?;
    let reason = refused["fields"]["metric"].as_str().unwrap_or_default();
    assert_eq!(status, 422, "{refused}");
    assert!(reason.contains("\"temprature\"") && reason.contains("did you mean \"temperature\""), "{reason}");
    let (status, refused) = save(rule((&sensor, "temperature"), (&z2m.0, "state"), false)).await?;
    let reason = refused["fields"]["rule"].as_str().unwrap_or_default();
    assert_eq!((status, reason.contains("is a bridge")), (422, true), "{refused}");
    // The plug announced its power, but takes no command for it.
    let (status, refused) = save(rule((&sensor, "temperature"), (&plug, "power"), false)).await?;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["fields"]["metric"].as_str().is_some_and(|r| r.contains("never announced taking")), "{refused}");
    let (status, saved) = save(rule((&sensor, "temperature"), (&plug, "state"), false)).await?;
    assert_eq!(status, 201, "what both announced: {saved}");
    // A device that says nothing of itself: what it reported is known, the rest insisted on.
    let (status, _) = save(rule((&native, "temperature"), (&plug, "state"), false)).await?;
    assert_eq!(status, 422);
    hub.publish((&native, &native_key), &format!("hearth/{native}/temperature"), "17.5".into()).await?;
    let (status, saved) = save(rule((&native, "temperature"), (&plug, "state"), false)).await?;
    assert_eq!(status, 201, "{saved}");
    let (status, saved) = save(rule((&sensor, "temprature"), (&plug, "state"), true)).await?;
    assert_eq!((status, &saved["rule"]["insist"]), (201, &json!(true)), "the author insisted: {saved}");
    // A bridge is never a command's target, insisted or not.
    let (status, _) = save(rule((&sensor, "temperature"), (&z2m.0, "state"), true)).await?;
    assert_eq!(status, 422);
    hub.stop().await?;
    Ok(())
}

/// Names and rooms are their device's manager's to choose: a tenant names their own
/// devices, not the home's (their choices would outlive the tenancy and tell the next
/// people who lived where); a name that hides characters is refused; what a tenant chose
/// is gone from the store when the tenancy is shredded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_names_only_their_own_devices_and_the_names_go_with_the_tenancy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (meter, _) = hub.add_device(&owner, "Meter").await?;
    let (tenant, tenancy) = hub.tenant(&owner, "ana", json!({ "retention_days": 1 })).await?;
    hub.clock.advance(std::time::Duration::from_secs(2));
    let (lamp, lamp_key) = hub.add_device(&tenant, "Lamp").await?;
    hub.publish((&lamp, &lamp_key), &format!("hearth/{lamp}/power"), "true".into()).await?;

    let (status, _) = change(&hub, &tenant, &meter, json!({ "room": "Ana's bedroom" })).await?;
    assert_eq!(status, 403, "a tenant renames the home's device");
    let (status, _) = change(&hub, &owner, &meter, json!({ "room": "Hall" })).await?;
    assert_eq!(status, 200);
    let (status, mine) = change(
        &hub,
        &tenant,
        &lamp,
        json!({ "name": "Ana's lamp", "room": "Ana's bedroom", "labels": { "power": "On" } }),
    )
    .await?;
    assert_eq!((status, &mine["room"], &mine["labels"]["power"]), (200, &json!("Ana's bedroom"), &json!("On")));
    for name in ["\u{202E}pmal", "lamp\u{200B}", "a\u{2028}b"] {
        let (status, refused) = change(&hub, &tenant, &lamp, json!({ "name": name })).await?;
        assert_eq!(status, 422, "{name:?}: {refused}");
    }
    let (status, _) = change(&hub, &owner, &lamp, json!({ "name": "Spy" })).await?;
    assert_eq!(status, 404, "the owner does not even see the tenant's lamp");

    let ended = owner.post(hub.url(&format!("/api/tenancies/{tenancy}/end")));
    assert_eq!(ended.json(&json!({})).send().await?.status(), 200);
    hub.clock.advance(std::time::Duration::from_secs(2));
    let shredded = tenant.post(hub.url(&format!("/api/tenancies/{tenancy}/shred"))).send().await?;
    assert_eq!(shredded.status(), 204, "{}", shredded.text().await?);
    let config = hub.stop().await?;
    let db =
        sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", config.data_dir.join("hearth.db").display())).await?;
    let (gone,): (bool,) =
        sqlx::query_as("SELECT chosen_sealed IS NULL FROM devices WHERE id = ?").bind(&lamp).fetch_one(&db).await?;
    assert!(gone, "what the tenant chose for their lamp outlived the shredded tenancy");
    let (kept,): (bool,) = sqlx::query_as("SELECT chosen_sealed IS NOT NULL FROM devices WHERE id = ?")
        .bind(&meter)
        .fetch_one(&db)
        .await?;
    assert!(kept, "the owner's choice for the meter stays");
    Ok(())
}

/// The value of `metric` on `device`'s card, as `GET /api/devices/{id}` gives it.
async fn shown(hub: &TestHub, client: &reqwest::Client, device: &str, metric: &str) -> anyhow::Result<Value> {
    let view: Value = client.get(hub.url(&format!("/api/devices/{device}"))).send().await?.json().await?;
    Ok(hearth_tests::discovered::metric(&view, metric).map_or(Value::Null, |m| m["value"].clone()))
}

/// Publishes one value as `device` and waits for its acknowledgement.
async fn report(hub: &TestHub, device: (&str, &str), metric: &str, value: f64) -> anyhow::Result<()> {
    let topic = format!("hearth/{}/{metric}", device.0);
    hub.publish(device, &topic, json!({ "value": value }).to_string()).await
}

async fn stored(hub: &TestHub, client: &reqwest::Client, device: &str, metric: &str) -> anyhow::Result<Vec<Value>> {
    Ok(hub.readings(client, device, metric).await?.into_iter().map(|r| r["value"].clone()).collect())
}

/// "Don't record": a chatty value (link quality), then a whole device, are shown live and
/// acknowledged, never stored; the choice survives a restart, the values held in memory do
/// not; a value the device does not have is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_not_recorded_are_shown_live_and_never_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (plug, secret) = hub.add_device(&owner, "Plug").await?;
    let dev = (plug.as_str(), secret.as_str());
    report(&hub, dev, "power", 5.0).await?;
    report(&hub, dev, "linkquality", 80.0).await?;

    let (status, changed) = change(&hub, &owner, &plug, json!({ "unrecorded_values": ["linkquality"] })).await?;
    assert_eq!((status, &changed["unrecorded_values"]), (200, &json!(["linkquality"])), "{changed}");
    let (status, refused) = change(&hub, &owner, &plug, json!({ "unrecorded_values": ["colour"] })).await?;
    assert_eq!((status, refused["fields"]["unrecorded_values"].is_string()), (422, true), "{refused}");
    // Acknowledged (publish waits for the PUBACK) and shown, not stored.
    report(&hub, dev, "linkquality", 42.0).await?;
    report(&hub, dev, "power", 7.0).await?;
    assert_eq!(shown(&hub, &owner, &plug, "linkquality").await?, json!(42.0));
    assert_eq!(stored(&hub, &owner, &plug, "linkquality").await?, [json!(80.0)]);
    assert_eq!(stored(&hub, &owner, &plug, "power").await?, [json!(5.0), json!(7.0)]);

    // The whole device.
    let (status, changed) = change(&hub, &owner, &plug, json!({ "unrecorded": true })).await?;
    assert_eq!((status, &changed["unrecorded"]), (200, &json!(true)), "{changed}");
    report(&hub, dev, "power", 9.0).await?;
    assert_eq!(shown(&hub, &owner, &plug, "power").await?, json!(9.0));
    assert_eq!(stored(&hub, &owner, &plug, "power").await?, [json!(5.0), json!(7.0)]);
    // A value never stored, known only live, can be chosen too.
    report(&hub, dev, "rssi", -70.0).await?;
    let both = json!({ "unrecorded_values": ["linkquality", "rssi"] });
    let (status, changed) = change(&hub, &owner, &plug, both.clone()).await?;
    assert_eq!((status, &changed["unrecorded_values"]), (200, &json!(["linkquality", "rssi"])), "{changed}");

    // After a restart the choice stays; what was only in memory is gone.
    let config = hub.stop().await?;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.login().await?;
    let view: Value = owner.get(hub.url(&format!("/api/devices/{plug}"))).send().await?.json().await?;
    let chosen = (&view["unrecorded"], &view["unrecorded_values"]);
    assert_eq!(chosen, (&json!(true), &json!(["linkquality", "rssi"])), "{view}");
    assert_eq!(shown(&hub, &owner, &plug, "power").await?, json!(7.0));
    assert_eq!(shown(&hub, &owner, &plug, "linkquality").await?, json!(80.0));
    assert_eq!(shown(&hub, &owner, &plug, "rssi").await?, Value::Null);
    // Nothing shows the value never stored now; a form sending its choices back is not
    // refused for it.
    let (status, changed) = change(&hub, &owner, &plug, both).await?;
    assert_eq!(status, 200, "{changed}");

    // Recorded again: stored again.
    let (status, _) = change(&hub, &owner, &plug, json!({ "unrecorded": false, "unrecorded_values": [] })).await?;
    assert_eq!(status, 200);
    report(&hub, dev, "power", 11.0).await?;
    assert_eq!(stored(&hub, &owner, &plug, "power").await?, [json!(5.0), json!(7.0), json!(11.0)]);
    Ok(())
}

/// A value not recorded is still whoever's lived there when it was made: a tenant's live
/// reading of the home's meter, held in memory only, is the tenant's to see and not the
/// owner's, as if it were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_not_recorded_is_still_only_its_owners_to_see() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let dev = (meter.as_str(), secret.as_str());
    report(&hub, dev, "power", 1.0).await?;
    let (status, _) = change(&hub, &owner, &meter, json!({ "unrecorded_values": ["power"] })).await?;
    assert_eq!(status, 200);
    report(&hub, dev, "power", 2.0).await?;
    assert_eq!(shown(&hub, &owner, &meter, "power").await?, json!(2.0));

    let (tenant, _) = hub.tenant(&owner, "tessa", json!({})).await?;
    // The tenancy starts a moment after it is made.
    hub.clock.advance(std::time::Duration::from_millis(1100));
    report(&hub, dev, "power", 3.0).await?;
    assert_eq!(shown(&hub, &tenant, &meter, "power").await?, json!(3.0));
    // The owner's card keeps the owner's last value, not the tenant's.
    assert_eq!(shown(&hub, &owner, &meter, "power").await?, json!(1.0));
    assert!(stored(&hub, &tenant, &meter, "power").await?.is_empty());
    Ok(())
}
