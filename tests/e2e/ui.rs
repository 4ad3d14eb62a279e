//! The web UI in a real headless Chromium: onboarding with the setup code, adding a device,
//! and a reading published over MQTT appearing on the dashboard without a reload.

use std::time::Duration;

use hearth_tests::browser::Browser;
use hearth_tests::{OWNER_PASSWORD, TestHub, mqtt_connect, wait_puback};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_then_a_live_reading_on_the_dashboard() -> anyhow::Result<()> {
    let index = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/index.html");
    anyhow::ensure!(index.exists(), "the UI is not built: run `trunk build --release --offline` (tests/run does)");
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let browser = Browser::start().await?;
    let b = &browser;

    // First run: the setup page asks for the code the hub printed.
    b.client.goto(&hub.url("/")).await?;
    b.fill("#setup-code", "WRONG-CODE-0000").await?;
    b.fill("#setup-username", "owner").await?;
    b.fill("#setup-password", OWNER_PASSWORD).await?;
    b.click("#setup-submit").await?;
    b.wait_for_text("wrong setup code", Duration::from_secs(10)).await?;
    let code = b.find("#setup-code").await?;
    code.clear().await?;
    code.send_keys(&hub.setup_code()?).await?;
    b.click("#setup-submit").await?;
    b.wait_for_text("No devices yet", Duration::from_secs(10)).await?;

    // Add a device in the UI; its credentials are shown once.
    b.fill("#device-name", "Kitchen sensor").await?;
    b.click("#device-add").await?;
    let id = b.find("#cred-id").await?.text().await?;
    let secret = b.find("#cred-secret").await?.text().await?;
    b.wait_for_text("mosquitto_pub", Duration::from_secs(5)).await?;
    b.wait_for_text("coap-client-openssl", Duration::from_secs(5)).await?;
    b.screenshot("credentials").await?;
    b.click("#credentials button").await?;
    b.wait_for_text("Kitchen sensor", Duration::from_secs(10)).await?;
    b.wait_for_text("No readings yet", Duration::from_secs(10)).await?;

    // A device publishes with those credentials: the value appears without a reload.
    let (client, mut events) =
        mqtt_connect(hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?, "kitchen", &id, &secret).await?;
    client
        .publish(format!("hearth/{id}/temperature"), QoS::AtLeastOnce, false, r#"{"value":21.5,"unit":"°C"}"#)
        .await?;
    wait_puback(&mut events, None).await?;
    let text = b.wait_for_text("21.5", Duration::from_secs(10)).await?;
    assert!(text.contains("temperature") && text.contains("°C"), "{text}");
    client.publish(format!("hearth/{id}/temperature"), QoS::AtLeastOnce, false, "22.25").await?;
    wait_puback(&mut events, None).await?;
    b.wait_for_text("22.25", Duration::from_secs(10)).await?;
    b.screenshot("dashboard").await?;

    // Phone-sized screen: nothing runs off the side.
    b.client.set_window_size(390, 844).await?;
    let overflow = b.client.execute("return document.documentElement.scrollWidth - window.innerWidth", vec![]).await?;
    assert!(overflow.as_i64().is_some_and(|o| o <= 0), "horizontal overflow on a phone: {overflow}");
    b.screenshot("dashboard-phone").await?;

    // The device page draws its history chart.
    b.client.set_window_size(1280, 800).await?;
    b.click(&format!("article[data-device='{id}'] h2 a")).await?;
    b.find("svg.chart polyline").await?;
    b.screenshot("device").await?;

    // Log out, log back in: still there.
    b.client.goto(&hub.url("/")).await?;
    b.click("header button").await?;
    b.fill("#login-username", "owner").await?;
    b.fill("#login-password", OWNER_PASSWORD).await?;
    b.click("#login-submit").await?;
    b.wait_for_text("22.25", Duration::from_secs(10)).await?;

    browser.close().await?;
    hub.stop().await?;
    Ok(())
}
