//! The UI on a phone and when the hub goes away: the menu folds behind one button and
//! unfolds on a tap; a stopped hub is said above every page within seconds, and said to be
//! back when it is.

use std::time::{Duration, Instant};

use fantoccini::key::Key;
use hearth_tests::TestHub;
use hearth_tests::browser::Browser;
use serde_json::json;

async fn logged_in(b: &Browser, hub: &TestHub) -> anyhow::Result<()> {
    b.owner_logs_in(hub).await?;
    b.find(".card.device").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_menu_folds_into_one_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    hub.add_device(&owner, "Hall sensor").await?;
    let browser = Browser::start().await?;
    let b = &browser;
    b.client.set_window_size(390, 844).await?;
    logged_in(b, &hub).await?;

    let shown = |css: &'static str| async move {
        let script = format!("const e = document.querySelector('{css}'); return !!e && e.getClientRects().length > 0");
        anyhow::Ok(b.client.execute(&script, vec![]).await? == json!(true))
    };
    assert!(!shown("#menu nav").await?, "the menu is folded on a phone");
    let header =
        b.client.execute("return document.querySelector('header').getBoundingClientRect().height", vec![]).await?;
    println!("the header is {header} px tall at 390x844");
    assert_eq!(b.find("#menu-toggle").await?.attr("aria-expanded").await?.as_deref(), Some("false"));
    b.click("#menu-toggle").await?;
    assert!(shown("#menu nav").await?, "a tap unfolds it");
    assert_eq!(b.find("#menu-toggle").await?.attr("aria-expanded").await?.as_deref(), Some("true"));
    b.click("#menu nav a[href='/automations']").await?;
    b.find("#rule-name").await?;
    assert!(!shown("#menu nav").await?, "following a link folds it again");
    b.phone_checks("automations (phone)", (390, 844)).await?;

    // The skip link is the first thing a keyboard reaches, and lands on the page's content.
    b.client.goto(&hub.url("/")).await?;
    b.find(".card.device").await?;
    let focused = || async {
        let script = "const e = document.activeElement; return e ? (e.id || e.className) : ''";
        anyhow::Ok(b.client.execute(script, vec![]).await?)
    };
    b.find("body").await?.send_keys(&char::from(Key::Tab).to_string()).await?;
    assert_eq!(focused().await?, json!("skip"), "the first Tab reaches the skip link");
    b.client.active_element().await?.send_keys(&char::from(Key::Enter).to_string()).await?;
    assert_eq!(focused().await?, json!("main"), "Enter on it lands on the page's content");
    browser.close().await
}

/// The hub stops: the page says so within 5 s, keeping the values it had and saying from
/// when they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_hub_is_said_within_seconds() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Hall sensor").await?;
    hub.publish((&id, &secret), &format!("hearth/{id}/temperature"), "20.5".into()).await?;
    let browser = Browser::start().await?;
    let b = &browser;
    logged_in(b, &hub).await?;
    b.wait_for_text("20.5", Duration::from_secs(10)).await?;
    b.find(".live.on").await?;
    let away = b.client.execute("return document.querySelectorAll('#hub-away').length", vec![]).await?;
    assert_eq!(away, json!(0), "no banner while the hub is there");

    let stopped = Instant::now();
    hub.stop().await?;
    let banner = b.find("#hub-away").await?;
    let after = stopped.elapsed();
    assert!(after < Duration::from_secs(5), "the banner took {after:?}");
    println!("the banner showed {} ms after the hub stopped", after.as_millis());
    let text = banner.text().await?;
    assert!(text.contains("can't be reached") && text.contains("from"), "{text}");
    assert!(b.text("body").await?.contains("20.5"), "the last values stay, under the banner");
    b.screenshot("hub-away").await?;
    b.audit("hub-away").await?;
    browser.close().await
}

/// Numbers and times are written as the browser's locale writes them: a German browser
/// reads 1.234,5 and 20,5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_in_the_browser_s_locale() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Hall sensor").await?;
    hub.publish((&id, &secret), &format!("hearth/{id}/temperature"), "20.5".into()).await?;
    hub.publish((&id, &secret), &format!("hearth/{id}/energy"), "1234.5".into()).await?;
    let browser = Browser::start().await?;
    let b = &browser;
    b.cdp("Emulation.setLocaleOverride", json!({ "locale": "de-DE" })).await?;
    logged_in(b, &hub).await?;
    let card = b.wait_for_text("20,5", Duration::from_secs(10)).await?;
    assert!(card.contains("1.234,50"), "energy at two decimals, grouped as in German: {card}");
    assert!(!card.contains("20.5"), "{card}");
    browser.close().await
}

/// A temperature reading made at `ts`.
async fn send(hub: &TestHub, device: (&str, &str), ts: i64, v: f64) -> anyhow::Result<()> {
    let topic = format!("hearth/{}/temperature", device.0);
    hub.publish(device, &topic, json!({ "value": v, "ts": ts }).to_string()).await
}

/// A value knows how often it usually comes (an average of the gaps, each new gap weighing
/// a quarter); once its device has been silent for three of those, its card says how old
/// it is. A device that keeps to its rhythm says nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_s_values_say_how_old_they_are() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let minute = 60_000;
    let now = hub.now_ms();
    let (quiet, quiet_key) = hub.add_device(&owner, "Attic sensor").await?;
    let (busy, busy_key) = hub.add_device(&owner, "Hall sensor").await?;
    for (n, ago) in [50, 45, 40].into_iter().enumerate() {
        send(&hub, (&quiet, &quiet_key), now - ago * minute, 18.0 + n as f64).await?;
    }
    for ago in [2, 1] {
        send(&hub, (&busy, &busy_key), now - ago * minute, 21.0).await?;
    }

    let list: serde_json::Value = owner.get(hub.url("/api/devices")).send().await?.json().await?;
    let every = |id: &str| {
        let device = list.as_array().and_then(|l| l.iter().find(|d| d["id"] == id)).cloned().unwrap_or_default();
        device["metrics"][0]["every"].as_i64()
    };
    assert_eq!(every(&quiet), Some(5 * minute), "two gaps of 5 min: {list}");
    assert_eq!(every(&busy), Some(minute));
    // A reading older than the latest does not count as a gap.
    send(&hub, (&quiet, &quiet_key), now - 60 * minute, 10.0).await?;
    let list: serde_json::Value = owner.get(hub.url("/api/devices")).send().await?.json().await?;
    let quiet_every = list
        .as_array()
        .and_then(|l| l.iter().find(|d| d["id"] == quiet.as_str()))
        .map(|d| d["metrics"][0]["every"].clone());
    assert_eq!(quiet_every, Some(json!(5 * minute)));

    let browser = Browser::start().await?;
    let b = &browser;
    logged_in(b, &hub).await?;
    let old = b.text(&format!("article[data-device='{quiet}'] .old")).await?;
    assert!(old.contains("min ago"), "the attic's value says how old it is: {old}");
    let marks = b.client.find_all(fantoccini::Locator::Css(&format!("article[data-device='{busy}'] .old"))).await?;
    assert!(marks.is_empty(), "the hall keeps to its rhythm");
    b.audit("a silent device's card").await?;
    browser.close().await
}

/// A person whose access ends while their page is open (a guest removed) is not left with
/// a page that says the hub is away for ever: the stream's refusal sends the page back to
/// the login screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_guest_s_page_goes_back_to_the_login() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (lamp, _) = hub.add_device(&owner, "Porch lamp").await?;
    let invite: serde_json::Value =
        owner.post(hub.url("/api/guests")).json(&json!({ "devices": [lamp] })).send().await?.json().await?;
    hub.accept_invite(invite["code"].as_str().unwrap_or_default(), "gus").await?;
    let guests: serde_json::Value = owner.get(hub.url("/api/guests")).send().await?.json().await?;
    let guest = guests[0]["id"].as_i64().unwrap_or_default();

    let browser = Browser::start().await?;
    let b = &browser;
    b.client.goto(&hub.url("/")).await?;
    b.fill("#login-username", "gus").await?;
    b.fill("#login-password", hearth_tests::TENANT_PASSWORD).await?;
    b.click("#login-submit").await?;
    b.find(".card.device").await?;
    b.find(".live.on").await?;

    let removed = owner.delete(hub.url(&format!("/api/guests/{guest}"))).send().await?;
    assert_eq!(removed.status(), 204);
    b.find("#login-username").await?;
    browser.close().await
}
