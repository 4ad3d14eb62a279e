//! The web UI in a real headless Chromium: onboarding with the setup code, adding a device,
//! a reading published over MQTT appearing on the dashboard without a reload, the consent
//! journey, and a rule made in the automation editor switching a lamp.

use std::time::Duration;

use anyhow::Context;
use hearth_tests::browser::{Browser, ca_pin};
use hearth_tests::{Listener, OWNER_PASSWORD, TENANT_PASSWORD, TestHub, wait_puback, wait_until};
use rumqttc::QoS;
use serde_json::{Value, json};

/// The browser tests need the UI that Trunk builds into `dist/`.
fn ui_is_built() -> anyhow::Result<()> {
    hearth_tests::browser::ui_is_built()
}

/// A page as people meet it: a screenshot, axe-core's audit in both colour schemes, and a
/// phone's checks (nothing off the side at 360 px, a one-line header, 44 px targets).
async fn look(b: &Browser, name: &str) -> anyhow::Result<()> {
    b.screenshot(name).await?;
    b.audit(name).await?;
    b.phone_checks(name, (1280, 800)).await
}

/// Onboarding over HTTPS, as in a home: Chromium trusts the hub by its CA's key (pinned),
/// and the whole journey (setup, a device over MQTT with TLS, the live dashboard, logout and
/// login) runs under the Content-Security-Policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_then_a_live_reading_on_the_dashboard() -> anyhow::Result<()> {
    ui_is_built()?;
    let dir = tempfile::tempdir()?;
    let mut config = hearth_tests::Config::for_test(&dir.path().join("data"));
    config.http.tls = true;
    config.mqtt.plain_from_loopback = false;
    let hub = TestHub::start_with(config).await?;
    anyhow::ensure!(hub.url("/").starts_with("https://"), "the UI must be on HTTPS here");
    let browser = Browser::start_pinning(Some(&ca_pin(&hub)?)).await?;
    let b = &browser;

    // First run: the setup page asks for the code the hub printed.
    b.client.goto(&hub.url("/")).await?;
    b.find("#setup-code").await?;
    look(b, "setup").await?;
    b.fill("#setup-code", "WRONG-CODE-0000").await?;
    b.fill("#setup-username", "owner").await?;
    b.fill("#setup-password", OWNER_PASSWORD).await?;
    b.click("#setup-submit").await?;
    b.wait_for_text("wrong setup code", Duration::from_secs(10)).await?;
    // The problem is shown beside the field it is about.
    assert_eq!(b.text("#setup-code + #code-problem").await?, "wrong setup code");
    let code = b.find("#setup-code").await?;
    code.clear().await?;
    code.send_keys(&hub.setup_code()?).await?;
    b.click("#setup-submit").await?;
    b.wait_for_text("No devices yet", Duration::from_secs(10)).await?;

    // Add a device in the UI; its credentials are shown once.
    b.fill("#device-name", "Kitchen sensor").await?;
    b.click("#device-add").await?;
    let id = b.text("#cred-id").await?;
    let secret = b.text("#cred-secret").await?;
    b.wait_for_text("mosquitto_pub", Duration::from_secs(5)).await?;
    b.wait_for_text("--cafile hearth-ca.pem", Duration::from_secs(5)).await?;
    b.wait_for_text("coap-client-openssl", Duration::from_secs(5)).await?;
    look(b, "credentials").await?;
    b.click("#credentials button").await?;
    b.wait_for_text("Kitchen sensor", Duration::from_secs(10)).await?;
    b.wait_for_text("No readings yet", Duration::from_secs(10)).await?;

    // A device publishes with those credentials, over TLS: the value appears without a reload.
    let mqtts = hub.mqtts.ok_or_else(|| anyhow::anyhow!("no MQTT over TLS"))?;
    let (client, mut events) = hearth_tests::mqtt_connect_tls(mqtts, &hub.ca_pem()?, "kitchen", &id, &secret).await?;
    client
        .publish(format!("hearth/{id}/temperature"), QoS::AtLeastOnce, false, r#"{"value":21.5,"unit":"°C"}"#)
        .await?;
    wait_puback(&mut events, None).await?;
    // Its key in words, at the precision a temperature reads best with, with its unit.
    let text = b.wait_for_text("21.5 °C", Duration::from_secs(10)).await?;
    assert!(text.contains("Temperature"), "{text}");
    client.publish(format!("hearth/{id}/temperature"), QoS::AtLeastOnce, false, "22.4").await?;
    wait_puback(&mut events, None).await?;
    b.wait_for_text("22.4 °C", Duration::from_secs(10)).await?;
    look(b, "dashboard").await?;

    // Phone-sized screen: nothing runs off the side.
    b.client.set_window_size(390, 844).await?;
    let overflow = b.client.execute("return document.documentElement.scrollWidth - window.innerWidth", vec![]).await?;
    assert!(overflow.as_i64().is_some_and(|o| o <= 0), "horizontal overflow on a phone: {overflow}");
    b.screenshot("dashboard-phone").await?;

    // The device page draws its history chart.
    b.client.set_window_size(1280, 800).await?;
    b.click(&format!("article[data-device='{id}'] h3 a")).await?;
    b.find("svg.chart polyline").await?;
    look(b, "device").await?;

    // The People page shows the CA's fingerprint, to compare with what the hub printed.
    let tls: Value = hub.client_builder()?.build()?.get(hub.url("/api/tls")).send().await?.json().await?;
    let fingerprint = tls["fingerprint"].as_str().ok_or_else(|| anyhow::anyhow!("no fingerprint"))?;
    b.client.goto(&hub.url("/people")).await?;
    b.wait_for_text(fingerprint, Duration::from_secs(10)).await?;

    // Log out, log back in: still there.
    b.client.goto(&hub.url("/")).await?;
    b.click("#logout").await?;
    b.find("#login-username").await?;
    look(b, "login").await?;
    b.fill("#login-username", "owner").await?;
    b.fill("#login-password", OWNER_PASSWORD).await?;
    b.click("#login-submit").await?;
    b.wait_for_text("22.4 °C", Duration::from_secs(10)).await?;

    browser.close().await?;
    hub.stop().await?;
    Ok(())
}

/// The consent journey in the browser: the owner invites a tenant, the tenant joins, a
/// company asks for hourly energy data, the tenant grants it in the inbox, the company gets
/// hourly aggregates of the tenant's period only, the tenant revokes, and the access log in
/// the UI shows the reads and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_grants_and_revokes_in_the_consent_inbox() -> anyhow::Result<()> {
    ui_is_built()?;
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let topic = format!("hearth/{meter}/energy");
    // The owner's reading, an hour before anything else.
    let before = hub.now_ms() - 3_600_000;
    hub.publish((&meter, &secret), &topic, json!({ "value": 999.0, "ts": before }).to_string()).await?;

    let browser = Browser::start().await?;
    let b = &browser;
    let t = Duration::from_secs(10);

    // The owner creates a tenancy in the UI and gets the invite code.
    b.owner_logs_in(&hub).await?;
    b.click("header nav a[href='/people']").await?;
    b.click("#tenancy-create").await?;
    let code = b.text("#invite-code").await?;
    look(b, "tenancy-invite").await?;
    // On the same page: an API token, shown once, that works; and the security log.
    b.fill("#token-name", "dashboard").await?;
    b.click("#tokens button[type=submit]").await?;
    let token = b.text("#new-token").await?;
    let me = reqwest::Client::new().get(hub.url("/api/me")).bearer_auth(token.trim()).send().await?;
    assert_eq!(me.status(), 200, "the token from the UI works");
    b.click("#security-log button").await?;
    b.wait_for_text("tenancy: tenancy", t).await?;
    b.wait_for_text("(\"dashboard\") created", t).await?;
    look(b, "security-log").await?;
    // And the hub's storage: free space, the database, what the hub writes a day.
    b.wait_for_text("The hub writes about", t).await?;
    let storage = b.text("#storage").await?;
    for what in [" free; new readings are refused below ", "The database takes ", "The hub writes about "] {
        assert!(storage.contains(what), "{what:?} missing: {storage}");
    }
    b.click("#logout").await?;

    // The tenant joins with it and chooses their own password.
    b.find("#login-username").await?;
    b.client.goto(&hub.url("/invite")).await?;
    b.find("#invite-code-input").await?;
    look(b, "invite").await?;
    b.fill("#invite-code-input", &code).await?;
    b.fill("#invite-username", "tessa").await?;
    b.fill("#invite-password", TENANT_PASSWORD).await?;
    b.click("#invite-submit").await?;
    b.wait_for_text("tessa (tenant)", t).await?;
    b.wait_for_text("Meter", t).await?;
    // The tenancy starts a moment after it is made.
    hub.clock.advance(Duration::from_millis(1100));
    let start = hub.now_ms();
    // Four readings in one hour: an hourly summary of fewer would give readings away.
    let mine = [(start, 2.0), (start + 5, 4.0), (start + 9, 5.0), (start + 12, 9.0)];
    for (ts, v) in mine {
        hub.publish((&meter, &secret), &topic, json!({ "value": v, "ts": ts }).to_string()).await?;
    }

    // The tenant registers the power company; the company asks for hourly energy data.
    b.click("header nav a[href='/sharing']").await?;
    b.fill("#recipient-name", "Northwind Energy").await?;
    b.fill("#recipient-kind", "power company").await?;
    b.click("#recipients button[type='submit']").await?;
    let client_id = b.text("#client-id").await?;
    let client_secret = b.text("#client-secret").await?;
    let company = reqwest::Client::new();
    let ask = json!({ "categories": ["energy"], "granularity": "hour", "window_from": before - 1000,
        "duration_days": 90, "purpose": "Suggest a cheaper tariff",
        "offer": { "text": "5 EUR off each month", "amount": 5, "currency": "EUR", "period": "month" } });
    let resp = company
        .post(hub.url("/api/share/requests"))
        .basic_auth(&client_id, Some(&client_secret))
        .json(&ask)
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    let request = resp.json::<Value>().await?["id"].as_i64().unwrap_or_default();

    // The inbox says it in plain words; the tenant grants it.
    b.client.goto(&hub.url("/sharing")).await?;
    b.wait_for_text("Northwind Energy (power company) asks to see your energy data as hourly summaries", t).await?;
    b.wait_for_text("Suggest a cheaper tariff", t).await?;
    look(b, "consent-inbox").await?;
    b.click(&format!("#request-{request} .grant")).await?;
    b.find("#grants [data-status='active']").await?;
    b.wait_for_text("Receipt (granted", t).await?;
    let grants: Value = company
        .get(hub.url("/api/share/grants"))
        .basic_auth(&client_id, Some(&client_secret))
        .send()
        .await?
        .json()
        .await?;
    let grant = grants[0]["id"].as_str().unwrap_or_default().to_owned();

    // Once the hour is over, the company reads hourly aggregates of the tenant's readings only.
    hub.clock.advance_to(start - start.rem_euclid(3_600_000) + 3_600_000 + 1000);
    let data_url = hub.url(&format!("/api/share/grants/{grant}/data"));
    let data: Value = company.get(&data_url).basic_auth(&client_id, Some(&client_secret)).send().await?.json().await?;
    let aggregates = data["series"][0]["aggregates"].as_array().cloned().unwrap_or_default();
    let count: u64 = aggregates.iter().filter_map(|a| a["count"].as_u64()).sum();
    assert_eq!(count, 4, "only the tenant's four readings, not the owner's: {data}");
    assert!(aggregates.iter().all(|a| a["max"].as_f64().is_some_and(|m| m < 999.0)), "{data}");
    assert!(data["series"][0].get("readings").is_none());

    // The tenant revokes; the company's next read is refused.
    b.client.goto(&hub.url("/sharing")).await?;
    b.click("#grants .revoke").await?;
    assert!(b.text("#confirm-title").await?.contains("Northwind Energy"), "revoking asks first, naming who");
    b.click("#confirm-no").await?;
    let kept: Value = company
        .get(hub.url("/api/share/grants"))
        .basic_auth(&client_id, Some(&client_secret))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(kept[0]["status"], "active", "Cancel revoked nothing: {kept}");
    b.click("#grants .revoke").await?;
    b.click("#confirm-yes").await?;
    b.find("#grants [data-status='revoked']").await?;
    let resp = company.get(&data_url).basic_auth(&client_id, Some(&client_secret)).send().await?;
    assert_eq!(resp.status(), 403);

    // The access log in the UI shows the read, and verifies.
    b.client.goto(&hub.url("/sharing")).await?;
    b.wait_for_text(&format!("read energy ({} rows)", data["rows"]), t).await?;
    b.click("#verify-log").await?;
    let text = b.wait_for_text("Intact: 3 entries verified", t).await?;
    assert!(text.contains("revoked") && text.contains("granted"), "{text}");
    look(b, "consent-log").await?;

    // The tenant invites a guest for the meter; the guest sees the tenant's latest value,
    // read-only.
    b.client.goto(&hub.url("/people")).await?;
    b.click(".guest-device").await?;
    b.click("#guest-invite").await?;
    let guest_code = b.text("#guest-code").await?;
    b.click("#logout").await?;
    b.find("#login-username").await?;
    b.client.goto(&hub.url("/invite")).await?;
    b.fill("#invite-code-input", &guest_code).await?;
    b.fill("#invite-username", "gus").await?;
    b.fill("#invite-password", TENANT_PASSWORD).await?;
    b.click("#invite-submit").await?;
    b.wait_for_text("gus (guest)", t).await?;
    let value = b.text(&format!("article[data-device='{meter}'] .value")).await?;
    // Energy reads with two decimals, with its unit if it gave one.
    assert!(value.starts_with("9.00"), "the guest sees the tenant's latest reading: {value}");
    assert!(b.client.find(fantoccini::Locator::Css("#device-name")).await.is_err(), "guests cannot add devices");
    let pages = b.client.find_all(fantoccini::Locator::Css("header nav a")).await?;
    assert_eq!(pages.len(), 1, "nor share anything: Home is their only page");
    look(b, "guest-home").await?;

    browser.close().await?;
    hub.stop().await?;
    Ok(())
}

/// The owner makes a rule in the editor (a form, no JSON): tries it on past data, saves it,
/// and a button press then switches the lamp; the page shows the run and its trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_made_in_the_editor_switches_a_lamp() -> anyhow::Result<()> {
    ui_is_built()?;
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (button, button_secret) = hub.add_device(&owner, "Button").await?;
    let (lamp, lamp_secret) = hub.add_device(&owner, "Lamp").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let mut lamp_in = Listener::start(addr, &lamp, &lamp_secret, &format!("hearth/{lamp}/set/#")).await?;
    let press = |value: &'static str| {
        let topic = format!("hearth/{button}/pressed");
        let hub = &hub;
        let dev = (button.as_str(), button_secret.as_str());
        async move { hub.publish(dev, &topic, value.into()).await }
    };
    // A press before the rule exists: history for the dry run.
    press("true").await?;

    let browser = Browser::start().await?;
    let b = &browser;
    let t = Duration::from_secs(10);
    b.owner_logs_in(&hub).await?;
    b.click("header nav a[href='/automations']").await?;
    b.wait_for_text("Nothing new.", t).await?;

    b.fill("#rule-name", "Lamp follows the button").await?;
    b.choose("#trigger-type", "change").await?;
    b.choose("#trigger-device", &button).await?;
    b.fill("#trigger-metric", "pressed").await?;
    b.choose("#action-type", "mqtt").await?;
    b.choose("#action-device", &lamp).await?;
    b.fill("#action-metric", "power").await?;
    b.fill("#action-value", "on").await?;
    b.click("#action-add").await?;
    // The editor lists the action in the words its runs will be traced in.
    b.wait_for_text("MQTT hearth/Lamp/set/power = on", t).await?;
    // Tried on the last day's data, it would have fired once, for the earlier press.
    b.click("#rule-dry-run").await?;
    let text = b.wait_for_text("Would have fired 1 time", t).await?;
    assert!(text.contains(&format!("MQTT hearth/{lamp}/set/power = on")), "{text}");
    lamp_in.nothing_before_marker(&hub, &owner, &lamp, 1).await.context("a dry run sends nothing")?;
    look(b, "rule-editor").await?;
    // The lamp never said it takes "power": the hub says so, and the author insists.
    b.click("#rule-save").await?;
    let refused = b.wait_for_text("never announced taking \"power\"", t).await?;
    assert!(!refused.contains("Saved"), "{refused}");
    b.click("#rule-insist").await?;
    b.wait_for_text("Saved \"Lamp follows the button\"", t).await?;
    b.wait_for_text("Not run yet.", t).await?;

    // The button changes: the lamp gets its command, and the page shows the run.
    press("false").await?;
    assert_eq!(lamp_in.next().await?, (format!("hearth/{lamp}/set/power"), "on".to_owned()));
    b.wait_for_text("Last: done — pressed of Button changed from on to off", t).await?;
    b.click(".rule .runs").await?;
    b.wait_for_text(&format!("→ MQTT hearth/{lamp}/set/power = on: sent"), t).await?;
    look(b, "rule-runs").await?;

    // Switched off in the UI, it no longer fires.
    b.click(".rule-enabled").await?;
    let rule = wait_until(t, "the rule to be off", || async {
        let rules: Value = owner.get(hub.url("/api/rules")).send().await.ok()?.json().await.ok()?;
        (rules[0]["rule"]["enabled"] == false).then(|| rules[0].clone())
    })
    .await?;
    // Saving a rule answers once the runtime runs it: saved again as it is, the change the
    // page made is in effect too.
    let url = hub.url(&format!("/api/rules/{}", rule["id"]));
    assert_eq!(owner.put(url).json(&rule["rule"]).send().await?.status(), 200);
    press("true").await?;
    lamp_in.nothing_before_marker(&hub, &owner, &lamp, 2).await.context("a disabled rule sends nothing")?;

    // Rules from a file: paste YAML, and the rule is there.
    let yaml = "rules:\n- name: Say hello at start\n  triggers:\n  - type: start\n  actions:\n  - type: notify\n    message: hello\n";
    b.fill("#rules-import", yaml).await?;
    b.click("#rules-import-submit").await?;
    b.wait_for_text("Imported 1 rule(s).", t).await?;
    b.wait_for_text("Say hello at start", t).await?;
    let rules: Value = owner.get(hub.url("/api/rules")).send().await?.json().await?;
    assert_eq!(rules.as_array().map(Vec::len), Some(2));
    browser.close().await?;
    hub.stop().await?;
    Ok(())
}

/// Tried as a new user would: what a page shows stays put while the hub refreshes it (a
/// rule's runs, once opened, stay open and follow new runs), and pages say plainly what is
/// wrong (an unknown device, a refused reading as it happens, a failed save without a stale
/// "Saved" beside it, a hub that is down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_keep_what_is_open_and_say_what_is_wrong() -> anyhow::Result<()> {
    ui_is_built()?;
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (button, secret) = hub.add_device(&owner, "Button").await?;
    let dev = (button.as_str(), secret.as_str());
    let topic = format!("hearth/{button}/pressed");
    let rule = json!({ "insist": true, "name": "Count presses", "triggers": [{ "type": "reading", "device": button, "metric": "pressed" }],
        "actions": [{ "type": "notify", "message": "pressed" }] });
    let resp = owner.post(hub.url("/api/rules")).json(&rule).send().await?;
    anyhow::ensure!(resp.status() == 201, "creating the rule: {}", resp.status());
    let rule_id = resp.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    hub.publish(dev, &topic, "true".into()).await?;

    let browser = Browser::start().await?;
    let b = &browser;
    let t = Duration::from_secs(10);
    b.owner_logs_in(&hub).await?;
    b.click("header nav a[href='/automations']").await?;
    b.wait_for_text("Last: done", t).await?;

    // The runs, once open, stay open through the page's refreshes and show the next run.
    let card = b.find(&format!(".rule[data-rule='{rule_id}']")).await?;
    b.click(".rule .runs").await?;
    b.wait_for_text("notify: pressed: shown in the app", t).await?;
    hub.publish(dev, &topic, "false".into()).await?;
    wait_until(t, "the second run in the open list", || async {
        let n = b.client.find_all(fantoccini::Locator::Css(".rule .traces li.trace")).await.ok()?.len();
        (n == 2).then_some(())
    })
    .await?;
    let text = card.text().await?;
    assert!(text.contains("Count presses"), "the card was not rebuilt under the reader: {text}");
    look(b, "rule-runs-stay-open").await?;

    // A save that works, then one that fails: only the failure shows.
    b.fill("#rule-name", "Another").await?;
    b.choose("#trigger-type", "change").await?;
    b.choose("#trigger-device", &button).await?;
    b.fill("#trigger-metric", "pressed").await?;
    b.choose("#action-type", "notify").await?;
    b.fill("#action-message", "changed").await?;
    b.click("#action-add").await?;
    b.click("#rule-save").await?;
    b.wait_for_text("Saved \"Another\"", t).await?;
    b.click("#rule-save").await?;
    let text = b.wait_for_text("add at least one action", t).await?;
    assert!(!text.contains("Saved \"Another\""), "a stale success beside a fresh error: {text}");

    // A device that is not there says so.
    b.client.goto(&hub.url("/devices/no-such-device")).await?;
    b.wait_for_text("No such device", t).await?;

    // A refused reading shows on the dashboard as it happens, without a reload.
    b.click("header h1 a").await?;
    b.wait_for_text("Button", t).await?;
    hub.publish(dev, &format!("hearth/{button}/pressed"), "{\"value\":".into()).await?;
    b.wait_for_text("Refused 1", t).await?;

    // The hub goes away: the page says so in words, not the browser's error.
    b.click("header nav a[href='/automations']").await?;
    b.wait_for_text("Count presses", t).await?;
    hub.stop().await?;
    let text = b.wait_for_text("Your hub cannot be reached", t).await?;
    assert!(!text.contains("TypeError"), "{text}");
    browser.close().await?;
    Ok(())
}

/// A Zigbee2MQTT bridge's devices appear on the dashboard with their names, units and the
/// bridge they come through; switching the plug on in the UI sends Zigbee2MQTT's own
/// payload on its own topic to that bridge; the bridge's page lists its devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zigbee2mqtt_bridge_s_devices_on_the_dashboard_and_a_switch_that_works() -> anyhow::Result<()> {
    ui_is_built()?;
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let mqtt = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let (bridge, key) = hub.add_device(&owner, "Zigbee2MQTT").await?;
    let grant = owner.put(hub.url(&format!("/api/devices/{bridge}/bridge")));
    assert_eq!(grant.json(&json!({ "namespaces": ["zigbee2mqtt/#"] })).send().await?.status(), 200);
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub/tests/data/ecosystems");
    let list = std::fs::read_to_string(corpus.join("z2m-bridge-devices.json"))?;
    hub.publish((&bridge, &key), "zigbee2mqtt/bridge/devices", list).await?;
    let weather = r#"{"battery":91,"humidity":48.2,"pressure":1012.5,"temperature":21.75}"#;
    hub.publish((&bridge, &key), "zigbee2mqtt/weather_sensor", weather.into()).await?;
    hub.publish((&bridge, &key), "zigbee2mqtt/power_plug", r#"{"state":"OFF","power":0}"#.into()).await?;
    let plug = wait_until(Duration::from_secs(5), "the plug's state", || async {
        let list: Value = owner.get(hub.url("/api/devices")).send().await.ok()?.json().await.ok()?;
        let plug = list.as_array()?.iter().find(|d| d["name"] == "power_plug")?;
        plug["metrics"]
            .as_array()?
            .iter()
            .any(|m| m["metric"] == "state")
            .then(|| plug["id"].as_str().map(str::to_owned))?
    })
    .await?;
    let mut heard = Listener::start(mqtt, &bridge, &key, "zigbee2mqtt/#").await?;

    let browser = Browser::start().await?;
    let b = &browser;
    let t = Duration::from_secs(10);
    b.owner_logs_in(&hub).await?;
    b.wait_for_text("weather_sensor", t).await?;
    let card = b.text(&format!("article[data-device='{plug}']")).await?;
    assert!(card.contains("via Zigbee2MQTT") && card.contains("Xiaomi"), "{card}");
    let sensor = b.text("article.device:has([data-metric='temperature'])").await?;
    // At the precision its class reads best with, with its unit.
    assert!(sensor.contains("21.8 °C") && sensor.contains(" hPa") && sensor.contains("48 %"), "{sensor}");
    // Each value under the name its device gives it, not its key.
    let temperature = b.text("article.device li[data-metric='temperature'] > span").await?;
    assert!(temperature.contains("Temperature"), "{temperature}");
    look(b, "bridge-dashboard").await?;

    // The bridge is on the bridges page, not among the home's cards.
    let cards = b.client.find_all(fantoccini::Locator::Css(&format!("article[data-device='{bridge}']"))).await?;
    assert!(cards.is_empty(), "the bridge has a card among the devices");
    assert!(b.text("#bridges-link").await?.contains("Bridges (1)"));

    // A control says it is sending, then that the device did it when its report says so.
    let switch = format!("article[data-device='{plug}'] .switch[data-metric='state']");
    b.click(&format!("{switch} button.on")).await?;
    let (topic, payload) = heard.next().await?;
    assert_eq!(topic, "zigbee2mqtt/power_plug/set");
    assert_eq!(serde_json::from_str::<Value>(&payload)?, json!({ "state": "ON" }));
    assert!(b.text(&format!("{switch} .feedback")).await?.contains("Sending"), "no pending state");
    hub.publish((&bridge, &key), "zigbee2mqtt/power_plug", r#"{"state":"ON","power":3}"#.into()).await?;
    wait_until(t, "the switch confirmed", || async {
        b.text(&format!("{switch} .feedback.confirmed")).await.ok().filter(|x| x.contains("Done"))
    })
    .await?;
    // A number: the bulb's brightness.
    let list: Value = owner.get(hub.url("/api/devices")).send().await?.json().await?;
    let bulb = list.as_array().and_then(|l| l.iter().find(|d| d["name"] == "bulb")).map(|d| d["id"].clone());
    let bulb = bulb.and_then(|b| b.as_str().map(str::to_owned)).ok_or_else(|| anyhow::anyhow!("no bulb"))?;
    let control = format!("article[data-device='{bulb}'] .number[data-metric='brightness']");
    b.fill(&format!("{control} input"), "128").await?;
    b.click(&format!("{control} button")).await?;
    let (topic, payload) = heard.next().await?;
    assert_eq!(topic, "zigbee2mqtt/bulb/set");
    assert_eq!(serde_json::from_str::<Value>(&payload)?, json!({ "brightness": 128 }));
    // The bulb never reports it: after the stated time the control says so.
    wait_until(Duration::from_secs(15), "no answer from the bulb", || async {
        b.text(&format!("{control} .feedback.no-answer")).await.ok().filter(|x| x.contains("No answer"))
    })
    .await?;
    // Its settings (Zigbee2MQTT's config category) are folded apart from its light, and
    // work from there.
    let main = b.text(&format!("article[data-device='{bulb}'] > .switches")).await?;
    assert!(main.contains("Brightness") && !main.contains("Power-on behavior"), "{main}");
    b.click(&format!("article[data-device='{bulb}'] details.settings summary")).await?;
    let setting = format!("article[data-device='{bulb}'] details.settings .choice[data-metric='power_on_behavior']");
    b.choose(&format!("{setting} select"), "previous").await?;
    b.click(&format!("{setting} button")).await?;
    let (topic, payload) = heard.next().await?;
    assert_eq!(topic, "zigbee2mqtt/bulb/set");
    assert_eq!(serde_json::from_str::<Value>(&payload)?, json!({ "power_on_behavior": "previous" }));
    // A choice: one of zigfred's covers, closed.
    let zigfred = list.as_array().and_then(|l| l.iter().find(|d| d["name"] == "zigfred_plus")).map(|d| d["id"].clone());
    let zigfred = zigfred.and_then(|z| z.as_str().map(str::to_owned)).ok_or_else(|| anyhow::anyhow!("no zigfred"))?;
    let control = format!("article[data-device='{zigfred}'] .choice[data-metric='state_l6']");
    b.choose(&format!("{control} select"), "CLOSE").await?;
    b.click(&format!("{control} button")).await?;
    let (topic, payload) = heard.next().await?;
    assert_eq!(topic, "zigbee2mqtt/zigfred_plus/set");
    assert_eq!(serde_json::from_str::<Value>(&payload)?, json!({ "state_l6": "CLOSE" }));

    b.client.goto(&hub.url(&format!("/devices/{bridge}"))).await?;
    let page = b.wait_for_text("Devices behind this bridge", t).await?;
    for name in ["weather_sensor", "power_plug", "bulb"] {
        assert!(page.contains(name), "{name} is not listed on the bridge's page: {page}");
    }
    browser.close().await
}
