//! Homes, people and consent end to end over real HTTP and MQTT: a tenancy, a recipient's
//! request, a grant with a signed receipt (checked with OpenSSL), hourly aggregates of the
//! tenant's period only, revocation, the hash-chained access log, the ledger, export, and
//! crypto-shredding checked against the database file and the hub key.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hearth_tests::{TestHub, run_tool, wait_until};
use hub::crypto::Key;
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;

/// Checks a compact JWS receipt with `openssl pkeyutl` and the hub's published PEM key.
fn openssl_verifies(dir: &std::path::Path, pem: &str, jws: &str) -> anyhow::Result<bool> {
    let (input, sig) = jws.rsplit_once('.').ok_or_else(|| anyhow::anyhow!("not a JWS"))?;
    std::fs::write(dir.join("key.pem"), pem)?;
    std::fs::write(dir.join("input"), input)?;
    std::fs::write(dir.join("sig"), URL_SAFE_NO_PAD.decode(sig)?)?;
    let p = |f: &str| dir.join(f).display().to_string();
    let (ok, out) = run_tool(
        "openssl",
        &["pkeyutl", "-verify", "-pubin", "-inkey", &p("key.pem"), "-rawin", "-in", &p("input"), "-sigfile", &p("sig")],
    )?;
    Ok(ok && out.contains("Signature Verified Successfully"))
}

fn claims(jws: &str) -> anyhow::Result<Value> {
    let payload = jws.split('.').nth(1).ok_or_else(|| anyhow::anyhow!("not a JWS"))?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?)
}

async fn get(client: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    let resp = client.get(url).send().await?;
    anyhow::ensure!(resp.status() == 200, "GET: HTTP {}", resp.status());
    Ok(resp.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_shares_hourly_energy_revokes_and_shreds() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    // A minute past an hour, so that the tenant's readings below share one hour.
    hub.clock.advance_to(hub.next_boundary(HOUR) + 60_000);
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let dev = (meter.as_str(), secret.as_str());
    let topic = format!("hearth/{meter}/energy");

    // Two hours ago, before any tenancy: the owner's reading.
    let before = hub.now_ms() - 2 * HOUR;
    hub.publish(dev, &topic, json!({ "value": 999.0, "ts": before }).to_string()).await?;

    // The owner invites a tenant; the tenancy starts a moment from now.
    let (tenant, tenancy) = hub.tenant(&owner, "tessa", json!({})).await?;
    let me: Value = get(&tenant, hub.url("/api/me")).await?;
    assert_eq!((me["role"].as_str(), me["tenancy"].as_i64()), (Some("tenant"), Some(tenancy)));
    let start = get(&owner, hub.url("/api/tenancies")).await?[0]["start"].as_i64().unwrap_or_default();
    hub.clock.advance_to(start + 50);

    // The tenant's readings, stamped just after the start.
    let mine: Vec<(i64, f64)> = (0..6).map(|i| (start + 10 + i * 7, 1.0 + i as f64)).collect();
    for (ts, v) in &mine {
        hub.publish(dev, &topic, json!({ "value": v, "ts": ts }).to_string()).await?;
    }

    // Owner and tenant each see only their own readings of the same device.
    let seen = |r: Vec<Value>| r.iter().filter_map(|x| x["value"].as_f64()).collect::<Vec<f64>>();
    assert_eq!(seen(hub.readings(&owner, &meter, "energy").await?), vec![999.0], "the owner sees none of the tenant's");
    assert_eq!(seen(hub.readings(&tenant, &meter, "energy").await?), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let devices = get(&tenant, hub.url("/api/devices")).await?;
    assert_eq!(devices[0]["class"], "household", "the tenant sees the class of every device");

    // A power company registered by the tenant asks for hourly energy data, with history.
    let (rid, rsecret) = hub.recipient(&tenant, "Northwind Energy", "power company").await?;
    let recipient = reqwest::Client::new();
    let as_rc = |r: reqwest::RequestBuilder| r.basic_auth(&rid, Some(&rsecret));
    let request = json!({
        "categories": ["energy"], "granularity": "hour", "window_from": hub.now_ms() - 24 * HOUR,
        "duration_days": 90, "purpose": "Suggest a cheaper tariff",
        "offer": { "text": "5 EUR off your bill each month", "amount": 5.0, "currency": "EUR", "period": "month" }
    });
    let resp = as_rc(recipient.post(hub.url("/api/share/requests"))).json(&request).send().await?;
    assert_eq!(resp.status(), 201);
    let request_id = resp.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    let bad = json!({ "categories": ["dreams"], "granularity": "hour", "window_from": 0, "duration_days": 1,
        "purpose": "x", "offer": { "text": "y" } });
    let resp = as_rc(recipient.post(hub.url("/api/share/requests"))).json(&bad).send().await?;
    assert_eq!(resp.status(), 422, "an unknown category is refused");

    // The tenant's inbox has it; the owner's does not.
    let inbox = get(&tenant, hub.url("/api/consent/requests")).await?;
    assert_eq!((inbox[0]["id"].as_i64(), inbox[0]["recipient"].as_str()), (Some(request_id), Some("Northwind Energy")));
    assert_eq!(get(&owner, hub.url("/api/consent/requests")).await?, json!([]));

    // Granting finer than asked is refused; granting as asked gives a signed receipt.
    let url = hub.url(&format!("/api/consent/requests/{request_id}/grant"));
    assert_eq!(tenant.post(&url).json(&json!({ "granularity": "raw" })).send().await?.status(), 422);
    let resp = tenant.post(&url).json(&json!({})).send().await?;
    assert_eq!(resp.status(), 201);
    let grant: Value = resp.json().await?;
    let grant_id = grant["id"].as_str().unwrap_or_default().to_owned();
    let receipt = grant["receipts"][0]["jws"].as_str().unwrap_or_default().to_owned();
    let key: Value = reqwest::get(hub.url("/api/consent/key")).await?.json().await?;
    let pem = key["pem"].as_str().unwrap_or_default();
    assert!(openssl_verifies(dir.path(), pem, &receipt)?, "openssl verifies the receipt with the published key");
    let c = claims(&receipt)?;
    assert_eq!((c["version"].as_str(), c["piiPrincipalId"].as_str()), (Some("KI-CR-v1.1.0"), Some("tessa")));
    assert_eq!(c["piiControllers"][0]["piiController"], "Northwind Energy");
    assert_eq!((c["hearth"]["event"].as_str(), c["hearth"]["granularity"].as_str()), (Some("granted"), Some("hour")));
    // A receipt changed to say "raw" does not verify.
    let parts: Vec<&str> = receipt.split('.').collect();
    let mut forged_claims = c.clone();
    forged_claims["hearth"]["granularity"] = json!("raw");
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged_claims.to_string()), parts[2]);
    assert!(!openssl_verifies(dir.path(), pem, &forged)?, "a changed receipt must not verify");
    // The recipient can download it too.
    let theirs: Value =
        as_rc(recipient.get(hub.url(&format!("/api/share/grants/{grant_id}/receipts")))).send().await?.json().await?;
    assert_eq!(theirs[0]["jws"], receipt.as_str());

    // The recipient reads hourly aggregates of the tenant's period only: no raw values, and
    // not the owner's reading from before the tenancy although the window covers it.
    // An hour is served once it is over: the one in progress is not.
    let data_url = hub.url(&format!("/api/share/grants/{grant_id}/data"));
    let early: Value = as_rc(recipient.get(&data_url)).send().await?.json().await?;
    assert_eq!(early["series"], json!([]), "{early}");
    hub.clock.advance_to(start - start.rem_euclid(HOUR) + HOUR + 1000);
    let data: Value = as_rc(recipient.get(&data_url)).send().await?.json().await?;
    assert_eq!(data["granularity"], "hour");
    let series = data["series"].as_array().cloned().unwrap_or_default();
    assert_eq!(series.len(), 1, "{data}");
    assert!(series[0].get("readings").is_none(), "raw values never leave for an hourly grant");
    let mut expected: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (ts, v) in &mine {
        expected.entry(ts - ts.rem_euclid(HOUR)).or_default().push(*v);
    }
    let got = series[0]["aggregates"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), expected.len(), "{data}");
    for (bucket, (start, values)) in got.iter().zip(&expected) {
        assert_eq!(bucket["start"].as_i64(), Some(*start));
        assert_eq!(bucket["count"].as_u64(), Some(values.len() as u64));
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        assert!((bucket["avg"].as_f64().unwrap_or_default() - avg).abs() < 1e-9, "{bucket}");
        assert_eq!(bucket["max"].as_f64(), values.iter().copied().reduce(f64::max));
    }
    let second: Value = as_rc(recipient.get(&data_url)).send().await?.json().await?;
    assert_eq!(second["rows"], data["rows"]);

    // The owner's client cannot use the recipient's routes, and vice versa.
    assert_eq!(owner.get(&data_url).send().await?.status(), 401);
    assert_eq!(as_rc(recipient.get(hub.url("/api/devices"))).send().await?.status(), 403);

    // The tenant revokes: the next read is refused, and the revocation has its receipt.
    let resp = tenant.post(hub.url(&format!("/api/consent/grants/{grant_id}/revoke"))).send().await?;
    assert_eq!(resp.status(), 200);
    let revoked: Value = resp.json().await?;
    let revoke_jws = revoked["jws"].as_str().unwrap_or_default();
    assert!(openssl_verifies(dir.path(), pem, revoke_jws)?);
    assert_eq!(claims(revoke_jws)?["hearth"]["event"], "revoked");
    assert_eq!(as_rc(recipient.get(&data_url)).send().await?.status(), 403);

    // The access log shows the grant, both reads (with rows served) and the revocation.
    let log = get(&tenant, hub.url("/api/consent/access-log")).await?;
    let kinds: Vec<&str> = log.as_array().into_iter().flatten().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, vec!["granted", "read", "read", "read", "revoked"]);
    assert_eq!(log[2]["detail_json"]["rows"], data["rows"]);
    assert_eq!(log[1]["recipient"], "Northwind Energy");
    assert_eq!(get(&owner, hub.url("/api/consent/access-log")).await?, json!([]), "the owner's log is empty");
    let verified = get(&tenant, hub.url("/api/consent/access-log/verify")).await?;
    assert_eq!((verified["ok"].as_bool(), verified["entries"].as_u64()), (Some(true), Some(5)));
    // A checkpoint the tenant keeps, given back, holds.
    let checkpoint = get(&tenant, hub.url("/api/consent/access-log/checkpoint")).await?;
    assert_eq!(checkpoint["seq"].as_i64(), Some(5), "{checkpoint}");
    let jws = checkpoint["jws"].as_str().unwrap_or_default();
    let held = get(&tenant, hub.url(&format!("/api/consent/access-log/verify?checkpoint={jws}"))).await?;
    assert_eq!((held["ok"].as_bool(), held["checkpoint"].as_bool()), (Some(true), Some(true)), "{held}");
    // Its signature with one character changed.
    let (signed, signature) = jws.rsplit_once('.').unwrap_or_default();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let refused = tenant.get(hub.url(&format!("/api/consent/access-log/verify?checkpoint={forged}"))).send().await?;
    assert_eq!(refused.status(), 422, "a checkpoint the hub did not sign is refused");

    // The ledger shows the offer; revoked within the first month, nothing accrued.
    let ledger = get(&tenant, hub.url("/api/consent/ledger")).await?;
    assert_eq!((ledger[0]["offer"]["amount"].as_f64(), ledger[0]["status"].as_str()), (Some(5.0), Some("revoked")));
    assert_eq!(ledger[0]["accrued"]["periods"], 0);

    // Export: the tenant's readings only, as JSON and as CSV.
    let export = get(&tenant, hub.url("/api/export")).await?;
    let exported: Vec<f64> =
        export["series"][0]["readings"].as_array().into_iter().flatten().filter_map(|r| r[1].as_f64()).collect();
    assert_eq!(exported, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let csv = tenant.get(hub.url("/api/export?format=csv")).send().await?.text().await?;
    assert_eq!(csv.lines().count(), 1 + mine.len(), "{csv}");
    assert!(csv.contains(",Meter,energy,") && !csv.contains("999"), "{csv}");

    // Tampering with the log (past its triggers, as an attacker with the file could) is found.
    let db = hub.data_dir.join("hearth.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
    sqlx::query("DROP TRIGGER access_log_no_update").execute(&pool).await?;
    sqlx::query("UPDATE access_log SET detail = '{\"rows\":0}' WHERE seq = 2").execute(&pool).await?;
    let verified = get(&tenant, hub.url("/api/consent/access-log/verify")).await?;
    assert_eq!((verified["ok"].as_bool(), verified["seq"].as_i64()), (Some(false), Some(2)), "{verified}");

    // The owner ends the tenancy; the tenant asks for shredding at once.
    let shred_url = hub.url(&format!("/api/tenancies/{tenancy}/shred"));
    assert_eq!(tenant.post(&shred_url).send().await?.status(), 409, "not before the tenancy ends");
    let end = owner.post(hub.url(&format!("/api/tenancies/{tenancy}/end"))).json(&json!({})).send().await?;
    assert_eq!(end.status(), 200);
    let end_at = end.json::<Value>().await?["end"].as_i64().unwrap_or_default();
    hub.clock.advance_to(end_at + 50);

    // Before shredding: the tenancy's chunks open with its key, unwrapped by the hub key.
    let hub_key = Key::load_or_create(&hub.data_dir.join("hub.key"))?.0;
    let tenancy_key: i64 =
        sqlx::query_scalar("SELECT key_id FROM tenancies WHERE id = ?").bind(tenancy).fetch_one(&pool).await?;
    let wrapped: Vec<u8> =
        sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE id = ?").bind(tenancy_key).fetch_one(&pool).await?;
    // Sealed readings, with the associated data each was sealed with: chunks, and the rows
    // of recent commits not yet folded into chunks.
    let chunks: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT CAST('chunk:' || series_id || ':' || hour || ':' || seq || ':' || key_id AS BLOB), body
           FROM chunks WHERE key_id = ?1
         UNION ALL SELECT CAST('recent:' || seq || ':' || key_id || ':' || first_hour || ':' || last_hour AS BLOB), body
           FROM recent WHERE key_id = ?1",
    )
    .bind(tenancy_key)
    .fetch_all(&pool)
    .await?;
    assert!(!chunks.is_empty());
    let key = hub_key.unwrap_key(&wrapped, format!("data-key:{tenancy_key}").as_bytes())?;
    assert!(chunks.iter().all(|(aad, body)| key.open(body, aad).is_ok()), "the test can open them before");
    drop(key);

    assert_eq!(tenant.post(&shred_url).send().await?.status(), 204);
    assert_eq!(tenant.get(hub.url("/api/me")).send().await?.status(), 401, "the tenant's account went with it");
    pool.close().await;

    // After: the database file and the hub key open none of the tenancy's sealed chunks,
    // with any key they hold; the wrapped key is nowhere in the files; the owner's reading
    // is untouched.
    let files: Vec<u8> = ["hearth.db", "hearth.db-wal"]
        .iter()
        .flat_map(|f| std::fs::read(hub.data_dir.join(f)).unwrap_or_default())
        .collect();
    assert!(!files.windows(wrapped.len()).any(|w| w == wrapped.as_slice()), "the wrapped key bytes are gone");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
    let keys: Vec<(i64, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, wrapped FROM data_keys").fetch_all(&pool).await?;
    let mut opened_keys = 0;
    for (id, wrapped) in keys {
        let Some(wrapped) = wrapped else { continue };
        let key = hub_key.unwrap_key(&wrapped, format!("data-key:{id}").as_bytes())?;
        opened_keys += 1;
        assert!(chunks.iter().all(|(aad, body)| key.open(body, aad).is_err()), "key {id} opens shredded data");
    }
    assert_eq!(opened_keys, 1, "only the owner's key is left");
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM chunks WHERE key_id = ?1) + (SELECT COUNT(*) FROM recent WHERE key_id = ?1)",
    )
    .bind(tenancy_key)
    .fetch_one(&pool)
    .await?;
    assert_eq!(left, 0);
    pool.close().await;
    assert_eq!(seen(hub.readings(&owner, &meter, "energy").await?), vec![999.0]);

    // After the tenancy, the meter's readings are the owner's again.
    let after = hub.now_ms();
    hub.publish(dev, &topic, json!({ "value": 7.0, "ts": after }).to_string()).await?;
    wait_until(Duration::from_secs(5), "the owner's new reading", || async {
        hub.readings(&owner, &meter, "energy").await.ok().filter(|r| r.len() == 2)
    })
    .await?;
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_change_applies_forward_and_building_data_stays_the_owners() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (boiler, secret) = hub.add_device(&owner, "Boiler").await?;
    let dev = (boiler.as_str(), secret.as_str());
    let topic = format!("hearth/{boiler}/pressure");
    let (tenant, _) = hub.tenant(&owner, "tom", json!({})).await?;
    // The tenancy starts a moment after it is made.
    hub.clock.advance(Duration::from_millis(1100));

    // Household (the default) during a tenancy: the tenant's.
    hub.publish(dev, &topic, json!({ "value": 1.5, "ts": hub.now_ms() }).to_string()).await?;
    // Classed as building, once the tenant agrees: from then on the owner's; the earlier
    // reading stays the tenant's.
    let resp = owner
        .put(hub.url(&format!("/api/devices/{boiler}/class")))
        .json(&json!({ "class": "building" }))
        .send()
        .await?;
    assert_eq!(resp.status(), 202, "during a tenancy it waits for the tenant");
    let proposal = resp.json::<Value>().await?["proposal"].as_i64().unwrap_or_default();
    let agreed = tenant.post(hub.url(&format!("/api/class-proposals/{proposal}/accept"))).send().await?;
    assert_eq!(agreed.status(), 200);
    hub.clock.advance(Duration::from_millis(1100));
    hub.publish(dev, &topic, json!({ "value": 1.8, "ts": hub.now_ms() }).to_string()).await?;

    let values = |r: Vec<Value>| r.iter().filter_map(|x| x["value"].as_f64()).collect::<Vec<f64>>();
    assert_eq!(values(hub.readings(&tenant, &boiler, "pressure").await?), vec![1.5]);
    assert_eq!(values(hub.readings(&owner, &boiler, "pressure").await?), vec![1.8]);
    let devices = get(&tenant, hub.url("/api/devices")).await?;
    assert_eq!(devices[0]["class"], "building", "the tenant sees the new class");
    assert_eq!(
        tenant
            .put(hub.url(&format!("/api/devices/{boiler}/class")))
            .json(&json!({ "class": "household" }))
            .send()
            .await?
            .status(),
        403
    );

    // Rules: a building device is the owner's to automate, not the tenant's.
    let rule = json!({ "insist": true, "name": "Boiler alarm", "triggers": [{ "type": "threshold", "device": boiler,
        "metric": "pressure", "below": 1.0 }], "actions": [{ "type": "notify", "message": "Low pressure" }] });
    let resp = tenant.post(hub.url("/api/rules")).json(&rule).send().await?;
    assert_eq!(resp.status(), 422);
    assert!(resp.json::<Value>().await?["error"].as_str().unwrap_or_default().contains("building device"));
    assert_eq!(owner.post(hub.url("/api/rules")).json(&rule).send().await?.status(), 201);

    // A tenant's own device is theirs; the owner does not even see it.
    let (plug, _) = hub.add_device(&tenant, "Tom's plug").await?;
    assert!(
        get(&owner, hub.url("/api/devices"))
            .await?
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["id"] != plug.as_str()))
    );
    assert_eq!(owner.get(hub.url(&format!("/api/devices/{plug}"))).send().await?.status(), 404);
    assert_eq!(owner.delete(hub.url(&format!("/api/devices/{plug}"))).send().await?.status(), 404);
    assert_eq!(tenant.delete(hub.url(&format!("/api/devices/{boiler}"))).send().await?.status(), 403);
    hub.stop().await?;
    Ok(())
}
