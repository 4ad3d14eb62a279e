//! Nothing destructive happens on one tap: deleting a rule, new credentials, removing a
//! device, ending a tenancy, removing a guest and revoking a token each ask first, in a
//! dialog that names what will happen, with Cancel focused. Dismissing it (Cancel, or
//! Escape) sends nothing: the hub's state is checked, not the page's; so does going Back
//! with the question open. (Revoking a grant is
//! asked the same way, in `ui::a_tenant_grants_and_revokes_in_the_consent_inbox`.)

use std::time::Duration;

use anyhow::Context;
use fantoccini::key::Key;
use hearth_tests::browser::Browser;
use hearth_tests::{OWNER_PASSWORD, TestHub, mqtt_connect, wait_until};
use serde_json::{Value, json};

/// How a question is turned down.
#[derive(Clone, Copy)]
enum No {
    Cancel,
    Escape,
}

/// Clicks `button`, checks the question names `what` and that Cancel has the focus, then
/// answers: `None` confirms.
async fn ask(b: &Browser, button: &str, what: &str, answer: Option<No>) -> anyhow::Result<()> {
    b.click(button).await?;
    let title = b.text("#confirm-title").await?;
    anyhow::ensure!(title.contains(what), "{button} asks {title:?}, not about {what:?}");
    anyhow::ensure!(!b.text("#confirm-consequence").await?.is_empty(), "{button}: the dialog says what will happen");
    let focused = b.client.execute("return document.activeElement && document.activeElement.id", vec![]).await?;
    assert_eq!(focused, json!("confirm-no"), "{button}: the safe answer is focused first");
    match answer {
        Some(No::Cancel) => b.click("#confirm-no").await?,
        Some(No::Escape) => b.find("#confirm").await?.send_keys(&char::from(Key::Escape).to_string()).await?,
        None => b.click("#confirm-yes").await?,
    }
    let open = b.client.execute("return document.querySelector('#confirm').open", vec![]).await?;
    assert_eq!(open, json!(false), "{button}: the dialog is gone after the answer");
    Ok(())
}

async fn get(client: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    Ok(client.get(url).send().await?.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_destructive_action_asks_first_and_no_sends_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let mqtt = hub.mqtt.context("MQTT is off")?;
    let owner = hub.owner().await?;
    let (lamp, secret) = hub.add_device(&owner, "Porch lamp").await?;
    let rule = json!({ "name": "Morning", "triggers": [{ "type": "cron", "expr": "0 7 * * *" }],
        "actions": [{ "type": "notify", "message": "good morning" }] });
    let made = owner.post(hub.url("/api/rules")).json(&rule).send().await?;
    anyhow::ensure!(made.status() == 201, "a rule: {}", made.status());
    let rule = made.json::<Value>().await?["id"].as_i64().context("rule id")?;
    let token: Value =
        owner.post(hub.url("/api/tokens")).json(&json!({ "name": "script" })).send().await?.json().await?;
    let token = token["token"].as_str().context("a token")?.to_owned();
    let invite: Value =
        owner.post(hub.url("/api/guests")).json(&json!({ "devices": [lamp] })).send().await?.json().await?;
    let guest = hub.accept_invite(invite["code"].as_str().context("guest code")?, "gus").await?;
    let (tenant, tenancy) = hub.tenant(&owner, "tessa", json!({})).await?;

    let me = |client: reqwest::Client| {
        let url = hub.url("/api/me");
        async move { anyhow::Ok(client.get(url).send().await?.status().as_u16()) }
    };
    let by_token = || {
        let url = hub.url("/api/me");
        let token = token.clone();
        async move { anyhow::Ok(reqwest::Client::new().get(url).bearer_auth(token).send().await?.status().as_u16()) }
    };
    let old_secret_works = || async { mqtt_connect(mqtt, &format!("{lamp}-check"), &lamp, &secret).await.is_ok() };
    let rules = || async { get(&owner, hub.url("/api/rules")).await.map(|r| r.as_array().map_or(0, Vec::len)) };
    let ended = || async {
        let list = get(&owner, hub.url("/api/tenancies")).await?;
        let this = list.as_array().and_then(|l| l.iter().find(|t| t["id"] == tenancy)).cloned().context("tenancy")?;
        anyhow::Ok(!this["end"].is_null())
    };
    let devices = || async {
        let list = get(&owner, hub.url("/api/devices")).await?;
        anyhow::Ok(list.as_array().is_some_and(|l| l.iter().any(|d| d["id"] == lamp.as_str())))
    };

    let browser = Browser::start().await?;
    let b = &browser;
    b.client.goto(&hub.url("/")).await?;
    b.fill("#login-username", "owner").await?;
    b.fill("#login-password", OWNER_PASSWORD).await?;
    b.click("#login-submit").await?;
    b.find(".card.device").await?;

    // Delete a rule: Escape keeps it. The dialog itself passes axe-core, in both schemes.
    b.client.goto(&hub.url("/automations")).await?;
    let delete = format!("[data-rule='{rule}'] .delete-rule");
    b.click(&delete).await?;
    b.audit("the confirmation dialog").await?;
    b.click("#confirm-no").await?;
    ask(b, &delete, "Morning", Some(No::Escape)).await?;
    assert_eq!(rules().await?, 1, "Escape deleted nothing");
    ask(b, &delete, "Morning", None).await?;
    wait_until(Duration::from_secs(5), "the rule deleted", || async { (rules().await.ok()? == 0).then_some(()) })
        .await?;

    // The People page: a token, a guest, a tenancy.
    b.client.goto(&hub.url("/people")).await?;
    ask(b, "#tokens .revoke-token", "script", Some(No::Cancel)).await?;
    assert_eq!(by_token().await?, 200, "Cancel revoked nothing");
    ask(b, "#tokens .revoke-token", "script", None).await?;
    wait_until(Duration::from_secs(5), "the token revoked", || async { (by_token().await.ok()? == 401).then_some(()) })
        .await?;

    ask(b, "#guests .remove-guest", "gus", Some(No::Cancel)).await?;
    assert_eq!(me(guest.clone()).await?, 200, "Cancel removed no guest");
    ask(b, "#guests .remove-guest", "gus", None).await?;
    wait_until(Duration::from_secs(5), "the guest removed", || async {
        (me(guest.clone()).await.ok()? == 401).then_some(())
    })
    .await?;

    let end = format!("[data-tenancy='{tenancy}'] .end-tenancy");
    ask(b, &end, "tessa", Some(No::Cancel)).await?;
    assert!(!ended().await?, "Cancel ended no tenancy");
    assert_eq!(me(tenant.clone()).await?, 200);
    ask(b, &end, "tessa", None).await?;
    wait_until(Duration::from_secs(5), "the tenancy ended", || async { ended().await.ok()?.then_some(()) }).await?;

    // The device page: new credentials, then removing it.
    b.client.goto(&hub.url(&format!("/devices/{lamp}"))).await?;
    b.click("#connection summary").await?;
    ask(b, "#new-credentials", "Porch lamp", Some(No::Cancel)).await?;
    assert!(old_secret_works().await, "Cancel left the secret as it was");
    ask(b, "#new-credentials", "Porch lamp", None).await?;
    b.find("#cred-secret").await?;
    assert!(!old_secret_works().await, "the old secret stops working once confirmed");

    // A question belongs to its page: going Back drops it, and nothing is removed.
    b.client.goto(&hub.url("/")).await?;
    b.click(&format!("article[data-device='{lamp}'] h3 a")).await?;
    b.click("#remove-device").await?;
    b.client.execute("history.back()", vec![]).await?;
    b.find("#search").await?;
    let open = b.client.execute("return document.querySelector('#confirm').open", vec![]).await?;
    assert_eq!(open, json!(false), "the question went with its page");
    assert!(devices().await?, "going Back removed nothing");
    b.client.execute("history.forward()", vec![]).await?;
    b.find("#remove-device").await?;

    ask(b, "#remove-device", "Porch lamp", Some(No::Cancel)).await?;
    assert!(devices().await?, "Cancel removed nothing");
    ask(b, "#remove-device", "Porch lamp", None).await?;
    wait_until(Duration::from_secs(5), "the device removed", || async { (!devices().await.ok()?).then_some(()) })
        .await?;
    browser.close().await
}
