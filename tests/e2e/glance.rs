//! The home at a glance, in a real headless Chromium, with a realistic home: 50 devices
//! through the five ecosystems (real Zigbee2MQTT definitions), rooms suggested by discovery
//! and chosen by people, a favourite, a sleeping light. Checked as a person would: one card
//! per device by room, names and values in words, a rename that survives a re-announce, a
//! Zigbee plug's own page, a control queued for a sleeping device, pickers without the
//! bridge. Screenshots of each page at 1280x800 and 390x844 go to `target/screenshots`.

use std::time::Duration;

use fantoccini::Locator;
use hearth_tests::browser::Browser;
use hearth_tests::discovered::{devices, publish_all};
use hearth_tests::home::{ROOMS, connect_the_home, home_of_fifty};
use hearth_tests::{OWNER_PASSWORD, TestHub, mqtt_session, subscribe_and_leave, wait_until};
use serde_json::{Value, json};

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

/// The id of the device whose model (as discovery said) is `model`.
fn by_model(list: &[Value], model: &str) -> anyhow::Result<String> {
    let found = list.iter().find(|d| d["discovered"]["model"] == model).and_then(|d| d["id"].as_str());
    found.map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no {model}"))
}

/// How many elements match `css`.
async fn count(b: &Browser, css: &str) -> anyhow::Result<usize> {
    Ok(b.client.find_all(Locator::Css(css)).await?.len())
}

/// Runs a script in the page and reads its number.
async fn number(b: &Browser, script: &str) -> anyhow::Result<f64> {
    b.client.execute(script, vec![]).await?.as_f64().ok_or_else(|| anyhow::anyhow!("{script}: no number"))
}

/// Screenshots at both sizes, axe-core's audit in both colour schemes and a phone's checks
/// (nothing off the side, a one-line header, touch targets); leaves the window at the
/// desktop's size.
async fn shots(b: &Browser, name: &str) -> anyhow::Result<()> {
    b.client.set_window_size(DESKTOP.0, DESKTOP.1).await?;
    b.screenshot(&format!("{name}-desktop")).await?;
    b.audit(name).await?;
    b.phone_checks(name, DESKTOP).await?;
    b.client.set_window_size(PHONE.0, PHONE.1).await?;
    let overflow = number(b, "return document.documentElement.scrollWidth - window.innerWidth").await?;
    anyhow::ensure!(overflow <= 0.0, "{name}: {overflow} px run off the side of a phone");
    b.screenshot(&format!("{name}-phone")).await?;
    b.client.set_window_size(DESKTOP.0, DESKTOP.1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_at_a_glance() -> anyhow::Result<()> {
    hearth_tests::browser::ui_is_built()?;
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let mqtt = hub.mqtt.ok_or_else(|| anyhow::anyhow!("MQTT is off"))?;
    let owner = hub.owner().await?;
    let (home, _) = tokio::task::block_in_place(home_of_fifty)?;
    let logins = connect_the_home(&hub, &owner, &home).await?;
    let announce = home[0].messages[0].clone();
    for (connection, (id, key)) in home.iter().zip(&logins) {
        publish_all(mqtt, (id, key), connection.messages.clone()).await?;
    }
    let list = wait_until(Duration::from_secs(20), "the home's devices", || async {
        let list = devices(&hub, &owner).await.ok()?;
        (list.len() == 51).then_some(list)
    })
    .await?;
    let (z2m, z2m_key) = logins[0].clone();
    let (porch, porch_key) = logins[1].clone();
    let plug = by_model(&list, "ZNCZ02LM")?;
    let door = by_model(&list, "MCCGQ11LM")?;
    // People put the Zigbee devices in rooms (but two), and pin the plug first.
    let zigbee: Vec<String> = list
        .iter()
        .filter(|d| d["bridge"] == z2m.as_str())
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect();
    for (n, id) in zigbee.iter().enumerate().skip(2) {
        let room = if *id == plug { "Kitchen" } else { ROOMS[n % ROOMS.len()] };
        let placed = owner.patch(hub.url(&format!("/api/devices/{id}"))).json(&json!({ "room": room }));
        anyhow::ensure!(placed.send().await?.status() == 200, "placing {id}");
    }
    let pinned = owner.patch(hub.url(&format!("/api/devices/{plug}"))).json(&json!({ "favourite": true }));
    assert_eq!(pinned.send().await?.status(), 200);
    // The door is open, its battery low; the plug is on.
    let sent = [(&door, r#"{"contact":false,"battery":9}"#), (&plug, r#"{"state":"ON","power":3.5}"#)];
    for (id, state) in sent {
        let name = list.iter().find(|d| d["id"] == id.as_str()).and_then(|d| d["discovered"]["name"].as_str());
        let topic = format!("zigbee2mqtt/{}", name.unwrap_or_default());
        hub.publish((&z2m, &z2m_key), &topic, state.into()).await?;
    }
    // The porch light's node sleeps, keeping its session and its subscription.
    let (client, events, _) = mqtt_session(mqtt, (&porch, &porch_key), "porch-node", false).await?;
    subscribe_and_leave(client, events, "diy/00/light/set").await?;

    let browser = Browser::start().await?;
    let b = &browser;
    let t = Duration::from_secs(10);
    b.client.set_window_size(DESKTOP.0, DESKTOP.1).await?;
    b.client.goto(&hub.url("/")).await?;
    b.fill("#login-username", "owner").await?;
    b.fill("#login-password", OWNER_PASSWORD).await?;
    b.click("#login-submit").await?;
    b.wait_for_text("Favourites", t).await?;
    wait_until(t, "the home's cards", || async { (count(b, "article.card.device").await.ok()? == 50).then_some(()) })
        .await?;

    // Exactly 50 cards: one per device, none for the bridge, which is on its own page.
    assert_eq!(count(b, &format!("article[data-device='{z2m}']")).await?, 0, "the bridge has a card");
    for room in ROOMS {
        let cards = count(b, &format!("section.room[data-room='{room}'] article.card.device")).await?;
        assert!(cards >= 2, "{room}: {cards} cards");
    }
    let first = b.text("section.room article.card.device").await?;
    assert!(
        first.contains("On") && first.contains("Off"),
        "the first card is the favourite plug with its switch: {first}"
    );
    // The first screen shows readings and controls, not plumbing.
    let top =
        number(b, "return document.querySelector('article.card.device .switches').getBoundingClientRect().top").await?;
    assert!(top < f64::from(DESKTOP.1), "the first control is below the first screen: {top} px");
    let page = b.text("body").await?;
    for plumbing in ["bridge for", "publishes in", "tasmota/discovery", "No readings yet"] {
        assert!(!page.contains(plumbing), "the home page shows {plumbing:?}");
    }
    // Values read: a door in words, a low battery, units.
    let door_card = b.text(&format!("article[data-device='{door}']")).await?;
    assert!(door_card.contains("Open") && door_card.contains("Battery low"), "{door_card}");
    // DIY 01 suggested the kitchen for itself.
    let diy = b.text(&format!("section.room[data-room='Kitchen'] article[data-device='{}']", logins[2].0)).await?;
    assert!(diy.contains("DIY 01") && diy.contains("19.5 °C"), "{diy}");
    let tall = number(b, "return document.documentElement.scrollHeight").await?;
    println!("the 50-device home page is {tall} px tall at {}x{}", DESKTOP.0, DESKTOP.1);
    shots(b, "glance-home").await?;
    b.client.set_window_size(PHONE.0, PHONE.1).await?;
    let tall = number(b, "return document.documentElement.scrollHeight").await?;
    println!("the 50-device home page is {tall} px tall at {}x{}", PHONE.0, PHONE.1);
    b.client.set_window_size(DESKTOP.0, DESKTOP.1).await?;

    // Search: only the kitchen's devices (the pinned plug among them), once the whole word
    // is typed (keys arrive one by one: "k" alone matches more).
    b.fill("#search", "kitchen").await?;
    // Seven keys, each filtering fifty cards: on a loaded machine that takes a while.
    let searched = wait_until(Duration::from_secs(30), "the search", || async {
        let shown = count(b, "article.card.device").await.ok()?;
        let kitchen = count(b, "section.room[data-room='Kitchen'] article.card.device").await.ok()?;
        (shown < 50 && shown == kitchen + 1).then_some(())
    })
    .await;
    if let Err(e) = searched {
        let typed = b.client.execute("return document.querySelector('#search').value", vec![]).await?;
        let shown = b
            .client
            .execute(
                "return [...document.querySelectorAll('article.card.device')].map(a => \
            a.closest('section') ? a.closest('section').dataset.room + ': ' + a.querySelector('h3').textContent : '?')",
                vec![],
            )
            .await?;
        anyhow::bail!("{e}: the search box holds {typed}; the cards shown: {shown}");
    }
    b.client.goto(&hub.url("/")).await?;

    // A control for a sleeping device says its command waits for it.
    let light = format!("article[data-device='{porch}'] .switch");
    b.click(&format!("{light} button.on")).await?;
    wait_until(t, "the light's command queued", || async {
        b.text(&format!("{light} .feedback.queued")).await.ok().filter(|x| x.contains("Queued until the device wakes"))
    })
    .await?;

    // The Zigbee plug's own page: what it is and its switch; no connection plumbing.
    b.client.goto(&hub.url(&format!("/devices/{plug}"))).await?;
    let about = b.text("#device-about").await?;
    for what in ["Maker", "Model", "ZNCZ02LM", "Via", "Zigbee2MQTT", "Room", "Kitchen"] {
        assert!(about.contains(what), "{what} missing: {about}");
    }
    b.find(".switch[data-metric='state'] button.on").await?;
    assert_eq!(count(b, "#connection").await?, 0, "a device behind a bridge has no connection of its own");
    let page = b.text("body").await?;
    for plumbing in ["New credentials", "Allow plain MQTT", "CoAP address"] {
        assert!(!page.contains(plumbing), "the plug's page shows {plumbing:?}");
    }
    shots(b, "glance-plug").await?;

    // The door's page: its logbook says when it opened, in words.
    b.client.goto(&hub.url(&format!("/devices/{door}"))).await?;
    wait_until(t, "the door's logbook", || async {
        let logbook = b.text("#logbook").await.ok()?;
        (logbook.contains("Contact: Open") && logbook.contains("Contact: Closed")).then_some(())
    })
    .await?;
    b.client.goto(&hub.url(&format!("/devices/{plug}"))).await?;

    // Renamed on its page, it keeps the name when Zigbee2MQTT announces its devices again.
    b.find("#arrange-name").await?.clear().await?;
    b.fill("#arrange-name", "Kettle plug").await?;
    // And its power, as the household calls it.
    b.click("#arrange details.labels summary").await?;
    b.fill("#arrange .value-choice[data-metric='power'] input:not([type='checkbox'])", "Kettle draw").await?;
    // Its energy total folded away from its card.
    b.click("#arrange .value-choice[data-metric='energy'] input.hide-value").await?;
    // Its link quality shown live, never recorded.
    b.click("#arrange .value-choice[data-metric='linkquality'] input.unrecorded-value").await?;
    b.click("#arrange-save").await?;
    b.wait_for_text("Saved.", t).await?;
    let saved: Value = owner.get(hub.url(&format!("/api/devices/{plug}"))).send().await?.json().await?;
    assert_eq!((&saved["unrecorded"], &saved["unrecorded_values"]), (&json!(false), &json!(["linkquality"])));
    hub.publish((&z2m, &z2m_key), &announce.0, announce.1.clone()).await?;
    b.client.goto(&hub.url("/")).await?;
    wait_until(t, "the renamed plug", || async {
        let card = b.text(&format!("article[data-device='{plug}'] h3")).await.ok()?;
        (card == "Kettle plug").then_some(())
    })
    .await?;
    let card = b.text(&format!("article[data-device='{plug}'] li[data-metric='power']")).await?;
    assert!(card.contains("Kettle draw"), "{card}");
    let shown = count(b, &format!("article[data-device='{plug}'] > ul.metrics li[data-metric='energy']")).await?;
    assert_eq!(shown, 0, "the folded energy total is still on the card");
    let list = devices(&hub, &owner).await?;
    let renamed = list.iter().find(|d| d["id"] == plug.as_str()).map(|d| d["name"].clone());
    assert_eq!(renamed, Some(json!("Kettle plug")), "after the re-announce");

    // The bridge on its page, with its devices.
    b.click("#bridges-link").await?;
    let bridges = b.wait_for_text("devices behind it", t).await?;
    assert!(bridges.contains("Zigbee2MQTT") && bridges.contains("20 devices behind it"), "{bridges}");
    shots(b, "glance-bridges").await?;

    // The rule editor picks among the home's 50 devices, by room, never the bridge.
    b.client.goto(&hub.url("/automations")).await?;
    b.find("#trigger-device").await?;
    wait_until(t, "the device picker", || async {
        (count(b, "#trigger-device option").await.ok()? == 50).then_some(())
    })
    .await?;
    assert_eq!(count(b, &format!("#trigger-device option[value='{z2m}']")).await?, 0);
    assert!(count(b, "#trigger-device optgroup").await? >= ROOMS.len());
    // A device trigger in words: "the door opens".
    b.choose("#trigger-type", "change").await?;
    b.choose("#trigger-device", &door).await?;
    b.fill("#trigger-metric", "contact").await?;
    b.choose("#trigger-to", "true").await?;
    let words = b.text("#trigger-words").await?;
    assert!(words.ends_with("Contact becomes Open"), "{words}");
    b.fill("#rule-name", "Door opened").await?;
    b.choose("#action-type", "notify").await?;
    b.fill("#action-message", "The door is open").await?;
    b.click("#action-add").await?;
    b.click("#rule-save").await?;
    b.wait_for_text("Saved \"Door opened\"", t).await?;
    shots(b, "glance-rules").await?;
    let rules: Value = owner.get(hub.url("/api/rules")).send().await?.json().await?;
    let trigger = &rules[0]["rule"]["triggers"][0];
    assert_eq!((&trigger["metric"], &trigger["to"]), (&json!("contact"), &json!(true)), "{trigger}");
    // It fires when the door opens, not when it closes.
    let door_name = list.iter().find(|d| d["id"] == door.as_str()).and_then(|d| d["discovered"]["name"].as_str());
    let door_topic = format!("zigbee2mqtt/{}", door_name.unwrap_or_default());
    hub.publish((&z2m, &z2m_key), &door_topic, r#"{"contact":true}"#.into()).await?;
    hub.publish((&z2m, &z2m_key), &door_topic, r#"{"contact":false}"#.into()).await?;
    wait_until(t, "the door's notification", || async {
        let notes: Value = owner.get(hub.url("/api/notifications")).send().await.ok()?.json().await.ok()?;
        let n = notes.as_array()?.iter().filter(|n| n["message"] == "The door is open").count();
        (n == 1).then_some(())
    })
    .await?;
    browser.close().await?;
    hub.stop().await?;
    Ok(())
}
