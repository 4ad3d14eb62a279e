//! First-run setup, login, tokens, and the rule that only /api/health answers without auth.

use hearth_tests::{OWNER_PASSWORD, TestHub};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_health_needs_auth() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let anon = reqwest::Client::new();

    let health: Value = anon.get(hub.url("/api/health")).send().await?.json().await?;
    assert_eq!(health["status"], "ok");

    let owner = hub.owner().await?;
    let (device, _) = hub.add_device(&owner, "Hall").await?;
    let protected = [
        ("GET", "/api/me".to_owned()),
        ("GET", "/api/devices".to_owned()),
        ("POST", "/api/devices".to_owned()),
        ("GET", format!("/api/devices/{device}")),
        ("DELETE", format!("/api/devices/{device}")),
        ("POST", format!("/api/devices/{device}/credentials")),
        ("GET", format!("/api/devices/{device}/metrics/temperature/readings")),
        ("GET", "/api/live".to_owned()),
        ("POST", "/api/tokens".to_owned()),
    ];
    for (method, path) in &protected {
        let req = anon.request(method.parse()?, hub.url(path)).header("content-type", "application/json").body("{}");
        let resp = req.send().await?;
        assert_eq!(resp.status(), 401, "{method} {path} without auth");
        let body: Value = resp.json().await?;
        assert_eq!(body["error"], "authentication required");
        // A forged cookie or token is no better than none.
        let resp =
            anon.request(method.parse()?, hub.url(path)).header("cookie", "hearth_session=forged").send().await?;
        assert_eq!(resp.status(), 401, "{method} {path} with a forged cookie");
        let resp = anon.request(method.parse()?, hub.url(path)).bearer_auth("forged").send().await?;
        assert_eq!(resp.status(), 401, "{method} {path} with a forged token");
    }
    // The device survived all of that.
    let devices: Value = owner.get(hub.url("/api/devices")).send().await?.json().await?;
    assert_eq!(devices[0]["id"], device.as_str());
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_code_creates_the_owner_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let anon = reqwest::Client::new();
    let status: Value = anon.get(hub.url("/api/setup")).send().await?.json().await?;
    assert_eq!(status["setup_required"], true);

    let code = hub.setup_code()?;
    let setup = |code: String, password: &'static str| {
        let anon = anon.clone();
        let url = hub.url("/api/setup");
        async move { anon.post(url).json(&json!({ "code": code, "username": "owner", "password": password })).send().await }
    };
    let wrong = setup("AAAA-BBBB-CCCC".into(), OWNER_PASSWORD).await?;
    assert_eq!(wrong.status(), 422);
    assert_eq!(wrong.json::<Value>().await?["fields"]["code"], "wrong setup code");
    let short = setup(code.clone(), "short").await?;
    assert_eq!(short.status(), 422, "a short password is refused");

    let owner = hub.owner().await?;
    let me: Value = owner.get(hub.url("/api/me")).send().await?.json().await?;
    assert_eq!(me, json!({ "username": "owner", "role": "owner" }));
    assert!(!hub.data_dir.join("setup-code").exists(), "the code file is removed");
    let again = setup(code, OWNER_PASSWORD).await?;
    assert_eq!(again.status(), 409, "the code stops working once the owner exists");

    // Login: wrong password refused, right one accepted; garbage JSON gets a clear error.
    let bad = anon
        .post(hub.url("/api/login"))
        .json(&json!({ "username": "owner", "password": "wrong password!" }))
        .send()
        .await?;
    assert_eq!(bad.status(), 401);
    let garbage =
        anon.post(hub.url("/api/login")).header("content-type", "application/json").body("{not json").send().await?;
    assert_eq!(garbage.status(), 400);
    assert!(garbage.json::<Value>().await?["error"].as_str().is_some_and(|e| !e.is_empty()));
    let client = hub.login().await?;
    assert_eq!(client.get(hub.url("/api/me")).send().await?.status(), 200);

    // A bearer token works for scripts; logout ends the cookie session.
    let token: Value =
        client.post(hub.url("/api/tokens")).json(&json!({ "name": "script" })).send().await?.json().await?;
    let token = token["token"].as_str().unwrap_or_default().to_owned();
    let by_token = anon.get(hub.url("/api/devices")).bearer_auth(&token).send().await?;
    assert_eq!(by_token.status(), 200);
    assert_eq!(client.post(hub.url("/api/logout")).send().await?.status(), 204);
    assert_eq!(client.get(hub.url("/api/me")).send().await?.status(), 401);

    // Setup is not required after a restart.
    let config = hub.stop().await?;
    let hub = TestHub::start_with(config).await?;
    let status: Value = anon.get(hub.url("/api/setup")).send().await?.json().await?;
    assert_eq!(status["setup_required"], false);
    assert!(!hub.data_dir.join("setup-code").exists());
    hub.login().await?;
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lifecycle_and_validation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    for bad in [json!({ "name": "" }), json!({ "name": "x".repeat(65) }), json!({ "nom": "x" }), json!([1])] {
        let resp = owner.post(hub.url("/api/devices")).json(&bad).send().await?;
        assert!(resp.status() == 422 || resp.status() == 400, "{bad} gave {}", resp.status());
    }
    let resp = owner.post(hub.url("/api/devices")).json(&json!({ "name": "Kitchen" })).send().await?;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await?;
    let id = created["id"].as_str().unwrap_or_default();
    let secret = created["secret"].as_str().unwrap_or_default();
    assert_eq!(secret.len(), 32);
    let example = created["mqtt"]["mosquitto_pub"].as_str().unwrap_or_default();
    assert!(example.contains(&format!("-u {id}")) && example.contains(secret), "{example}");
    let coap = created["coap"]["coap_client"].as_str().unwrap_or_default();
    assert!(
        coap.contains(&format!("-u {id} -k '{secret}'")) && coap.contains(&format!("/d/{id}/temperature")),
        "{coap}"
    );

    let listed: Value = owner.get(hub.url("/api/devices")).send().await?.json().await?;
    assert_eq!(listed[0]["name"], "Kitchen");
    assert!(listed[0].get("secret").is_none(), "the secret is shown once, never listed");

    let resp = owner.post(hub.url(&format!("/api/devices/{id}/credentials"))).send().await?;
    let regenerated: Value = resp.json().await?;
    assert_ne!(regenerated["secret"], created["secret"]);

    assert_eq!(owner.delete(hub.url(&format!("/api/devices/{id}"))).send().await?.status(), 204);
    assert_eq!(owner.get(hub.url(&format!("/api/devices/{id}"))).send().await?.status(), 404);
    assert_eq!(owner.delete(hub.url(&format!("/api/devices/{id}"))).send().await?.status(), 404);
    assert_eq!(owner.get(hub.url("/api/devices/NOT..valid")).send().await?.status(), 404);
    hub.stop().await?;
    Ok(())
}
