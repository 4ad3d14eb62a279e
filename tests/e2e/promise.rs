//! The ownership promise on the paths it was found broken on: a reading belongs to whoever
//! lived in the home when it was made, and nobody else sees or uses it unless that person
//! says so. Each test drives a real hub over HTTP and MQTT.

use std::process::{Command, Stdio};
use std::time::Duration;

use hearth_tests::{Listener, Output, Peer, TestHub, free_udp_port, run_tool, wait_until};
use serde_json::{Value, json};

async fn get(client: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    let resp = client.get(url).send().await?;
    anyhow::ensure!(resp.status() == 200, "GET: HTTP {}", resp.status());
    Ok(resp.json().await?)
}

/// A landlord's tenants follow one another: each tenancy is created, holds its tenant's
/// readings, ends, and the next one starts; an overlapping one is refused in words; a
/// former tenant's shred takes their readings and nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenancies_follow_one_another() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let topic = format!("hearth/{meter}/energy");
    let mut tenants = Vec::new();
    for n in 1..=3_i64 {
        let (tenant, id) = hub.tenant(&owner, &format!("tenant{n}"), json!({})).await?;
        let listed = get(&owner, hub.url("/api/tenancies")).await?;
        let start = listed
            .as_array()
            .and_then(|all| all.iter().find(|t| t["id"] == id))
            .and_then(|t| t["start"].as_i64())
            .ok_or_else(|| anyhow::anyhow!("tenancy {id} is not listed: {listed}"))?;
        hub.clock.advance_to(start + 50);
        let reading = json!({ "value": 100 * n, "ts": start + 10 }).to_string();
        hub.publish((&meter, &secret), &topic, reading).await?;

        let overlap = owner.post(hub.url("/api/tenancies")).json(&json!({})).send().await?;
        assert_eq!(overlap.status(), 409, "tenancy {n}: a second tenancy at the same time is refused");
        let said = overlap.json::<Value>().await?["error"].as_str().unwrap_or_default().to_owned();
        assert!(said.contains("overlaps"), "tenancy {n}: the refusal says why: {said:?}");

        let end = owner.post(hub.url(&format!("/api/tenancies/{id}/end"))).json(&json!({})).send().await?;
        let status = end.status();
        let ended: Value = end.json().await?;
        assert_eq!(status, 200, "tenancy {n} ends: {ended}");
        hub.clock.advance_to(ended["end"].as_i64().unwrap_or_default() + 50);
        tenants.push((n, tenant, id));
    }
    assert_eq!(get(&owner, hub.url("/api/tenancies")).await?.as_array().map(Vec::len), Some(3));

    let values = |r: Vec<Value>| r.iter().filter_map(|x| x["value"].as_f64()).collect::<Vec<f64>>();
    for (n, tenant, _) in &tenants {
        let theirs = values(hub.readings(tenant, &meter, "energy").await?);
        assert_eq!(theirs, vec![100.0 * *n as f64], "tenant {n} sees their reading and no other tenant's");
    }
    assert_eq!(values(hub.readings(&owner, &meter, "energy").await?), Vec::<f64>::new(), "the owner sees none");

    // The first tenant shreds; the second and third keep theirs.
    let (_, first, first_id) = &tenants[0];
    let shred = first.post(hub.url(&format!("/api/tenancies/{first_id}/shred"))).send().await?;
    assert_eq!(shred.status(), 204);
    for (n, tenant, _) in &tenants[1..] {
        assert_eq!(values(hub.readings(tenant, &meter, "energy").await?), vec![100.0 * *n as f64], "tenant {n}");
    }
    hub.stop().await?;
    Ok(())
}

/// An hourly grant gives hourly summaries and nothing finer: a narrow range inside an hour
/// gets nothing, the hour in progress is not served, and an hour with too few readings to
/// hide them is left out. What the recipient still learns of a served hour: how many
/// readings it had, their mean, and its lowest and highest reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hourly_grant_never_gives_a_single_reading() -> anyhow::Result<()> {
    const HOUR: i64 = 3_600_000;
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let hour = hub.next_boundary(HOUR);
    hub.clock.advance_to(hour);
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let (tenant, _) = hub.tenant(&owner, "tessa", json!({})).await?;
    hub.clock.advance_to(hour + 60_000);

    // Hour 0: five readings. Hour 1: one. Hour 2: three. Each value is told apart below.
    let hours: [&[f64]; 3] = [&[10.5, 11.5, 12.5, 13.5, 14.5], &[41.25], &[51.125, 52.125, 53.125]];
    let mut stamps = Vec::new();
    for (h, values) in hours.iter().enumerate() {
        for (i, v) in values.iter().enumerate() {
            let ts = hour + h as i64 * HOUR + 120_000 + i as i64 * 60_000;
            hub.clock.advance_to(ts + 10);
            let body = json!({ "value": v, "ts": ts }).to_string();
            hub.publish((&meter, &secret), &format!("hearth/{meter}/energy"), body).await?;
            stamps.push((ts, *v));
        }
    }

    let (rid, rsecret) = hub.recipient(&tenant, "Northwind Energy", "power company").await?;
    let recipient = reqwest::Client::new();
    let request = json!({ "categories": ["energy"], "granularity": "hour", "window_from": hour, "duration_days": 30,
        "purpose": "tariff advice", "offer": { "text": "a discount" } });
    let resp =
        recipient.post(hub.url("/api/share/requests")).basic_auth(&rid, Some(&rsecret)).json(&request).send().await?;
    assert_eq!(resp.status(), 201);
    let request_id = resp.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    let resp =
        tenant.post(hub.url(&format!("/api/consent/requests/{request_id}/grant"))).json(&json!({})).send().await?;
    assert_eq!(resp.status(), 201);
    let grant = resp.json::<Value>().await?["id"].as_str().unwrap_or_default().to_owned();
    let read = |from: Option<i64>, to: Option<i64>| {
        let mut url = hub.url(&format!("/api/share/grants/{grant}/data"));
        if let (Some(f), Some(t)) = (from, to) {
            url = format!("{url}?from={f}&to={t}");
        }
        let request = recipient.get(url).basic_auth(&rid, Some(&rsecret));
        async move { anyhow::Ok(request.send().await?.text().await?) }
    };

    // Hour 2 is still in progress: only hours 0 and 1 are over.
    let body = read(None, None).await?;
    let data: Value = serde_json::from_str(&body)?;
    let served = data["series"][0]["aggregates"].as_array().cloned().unwrap_or_default();
    assert_eq!(served.len(), 1, "hour 0 alone (hour 1 has one reading): {body}");
    assert_eq!((served[0]["start"].as_i64(), served[0]["count"].as_u64()), (Some(hour), Some(5)));
    assert_eq!((served[0]["min"].as_f64(), served[0]["max"].as_f64()), (Some(10.5), Some(14.5)));
    assert_eq!(served[0]["avg"].as_f64(), Some(12.5));

    // Stepping through time a millisecond at a time, or a second, gets no reading at all.
    hub.clock.advance_to(hour + 3 * HOUR + 1000);
    for (ts, value) in &stamps {
        for (from, to) in
            [(*ts, ts + 1), (ts - 500, ts + 500), (ts - ts.rem_euclid(1000), ts - ts.rem_euclid(1000) + 1000)]
        {
            let body = read(Some(from), Some(to)).await?;
            let data: Value = serde_json::from_str(&body)?;
            assert_eq!(data["series"], json!([]), "[{from}, {to}) around the reading {value} at {ts}: {body}");
        }
    }
    // The sparse hours never show, in any range: neither their values nor that they exist.
    let body = read(Some(hour), Some(hour + 3 * HOUR)).await?;
    for v in hours[1].iter().chain(hours[2]) {
        assert!(!body.contains(&v.to_string()), "{v} leaked: {body}");
    }
    let data: Value = serde_json::from_str(&body)?;
    let starts: Vec<i64> =
        data["series"][0]["aggregates"].as_array().into_iter().flatten().filter_map(|b| b["start"].as_i64()).collect();
    assert_eq!(starts, vec![hour], "{body}");
    hub.stop().await?;
    Ok(())
}

/// A tenant's rules act for the tenancy and stop with it: once it has ended, a rule made
/// during it sends nothing more (its runs say why), and the former tenant cannot make new
/// ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_tenant_no_longer_commands_the_home() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (lamp, lamp_secret) = hub.add_device(&owner, "Lamp").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let mut lamp_in = Listener::start(addr, &lamp, &lamp_secret, &format!("hearth/{lamp}/set/#")).await?;
    let (tenant, id) = hub.tenant(&owner, "tessa", json!({})).await?;
    hub.clock.advance(Duration::from_secs(2));

    let rule = json!({ "insist": true, "name": "Blink", "triggers": [{ "type": "interval", "every_s": 5 }],
        "actions": [{ "type": "mqtt", "device": lamp, "metric": "power", "value": "on" }] });
    let resp = tenant.post(hub.url("/api/rules")).json(&rule).send().await?;
    assert_eq!(resp.status(), 201, "during the tenancy the tenant makes rules");
    let rule_id = resp.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    hub.clock.advance(Duration::from_secs(5));
    assert_eq!(lamp_in.next().await?, (format!("hearth/{lamp}/set/power"), "on".to_owned()), "the rule commands");

    let end = owner.post(hub.url(&format!("/api/tenancies/{id}/end"))).json(&json!({})).send().await?;
    assert_eq!(end.status(), 200);
    hub.clock.advance_to(end.json::<Value>().await?["end"].as_i64().unwrap_or_default() + 50);
    hub.clock.advance(Duration::from_secs(10));
    let refused = wait_until(Duration::from_secs(10), "a refused run", || async {
        let runs: Value =
            tenant.get(hub.url(&format!("/api/rules/{rule_id}/runs"))).send().await.ok()?.json().await.ok()?;
        runs.as_array()?.iter().find(|t| t["status"] == "failed").cloned()
    })
    .await?;
    let said = refused["steps"][0]["result"].as_str().unwrap_or_default();
    assert!(said.contains("tenancy"), "the run says why: {refused}");
    assert!(lamp_in.quiet(Duration::from_millis(200)).await, "no command after the tenancy ended");

    let again = tenant.post(hub.url("/api/rules")).json(&rule).send().await?;
    assert_eq!(again.status(), 403, "a former tenant makes no rules");
    let added = tenant.post(hub.url("/api/devices")).json(&json!({ "name": "Plug" })).send().await?;
    assert_eq!(added.status(), 403, "nor adds devices");
    hub.stop().await?;
    Ok(())
}

/// The owner holds a household device's credentials (they added it), but they read back
/// none of a tenant's readings with them: not by subscribing over MQTT, not by CoAP GET,
/// not by Observe. Each channel first shows it delivers what the owner may have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_credentials_read_back_no_tenants_reading() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = hearth_tests::Config::for_test(&dir.path().join("data"));
    config.coap.plain = true;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (id, key) = hub.add_device(&owner, "Meter").await?;
    let (mqtt, plain, dtls) = (hub.mqtt, hub.coap_plain, hub.coap_dtls);
    let (Some(mqtt), Some(plain), Some(dtls)) = (mqtt, plain, dtls) else { anyhow::bail!("a protocol is off") };
    let coaps = format!("coaps://{dtls}/d/{id}/power");
    let coap_get = || -> anyhow::Result<String> {
        let (_, out) = run_tool("coap-client-openssl", &["-m", "get", "-u", &id, "-k", &key, &coaps])?;
        Ok(out.trim().to_owned())
    };
    let coap_post = |v: &str| run_tool("coap-client-openssl", &["-m", "post", "-u", &id, "-k", &key, "-e", v, &coaps]);

    // Before any tenancy the readings are the owner's, and the device's credentials read them.
    coap_post("5")?;
    assert_eq!(coap_get()?, "5");
    let mut subscribed = Listener::start(mqtt, &id, &key, &format!("hearth/{id}/#")).await?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aiocoap_observe.py");
    let mut observer = Command::new("python3")
        .arg(&script)
        .arg(format!("coap://{plain}/d/{id}/power?k={key}"))
        .arg("20")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let observed = Output::watch(observer.stdout.take())?;
    wait_until(Duration::from_secs(10), "the observer's first value", || async {
        observed.text().contains("Content 5").then_some(())
    })
    .await?;

    // A tenant moves in; the device's next reading is theirs.
    let (_, tenancy) = hub.tenant(&owner, "tessa", json!({})).await?;
    hub.clock.advance(Duration::from_secs(2));
    hub.publish((&id, &key), &format!("hearth/{id}/power"), "7".into()).await?;
    // The latest value is the tenant's now, so the owner's credentials have none to read.
    let got = coap_get()?;
    assert!(got.starts_with("4.04") && !got.contains('7'), "CoAP GET gives none of the tenant's: {got}");

    // The owner's command still reaches the device's subscription: the channel works, and
    // the tenant's reading did not come before it.
    let rule = json!({ "insist": true, "name": "Ping", "triggers": [{ "type": "interval", "every_s": 5 }],
        "actions": [{ "type": "mqtt", "device": id, "metric": "relay", "value": "on" }] });
    assert_eq!(owner.post(hub.url("/api/rules")).json(&rule).send().await?.status(), 201);
    hub.clock.advance(Duration::from_secs(5));
    assert_eq!(subscribed.next().await?, (format!("hearth/{id}/set/relay"), "on".to_owned()), "a command, no reading");

    // The tenancy ends; the owner's next reading reaches the observer, the tenant's never did.
    let end = owner.post(hub.url(&format!("/api/tenancies/{tenancy}/end"))).json(&json!({})).send().await?;
    hub.clock.advance_to(end.json::<Value>().await?["end"].as_i64().unwrap_or_default() + 50);
    coap_post("9")?;
    wait_until(Duration::from_secs(10), "the observer to see the owner's 9", || async {
        observed.text().contains("Content 9").then_some(())
    })
    .await?;
    let _ = observer.kill();
    let _ = observer.wait();
    let seen = observed.finish();
    assert!(!seen.contains("Content 7"), "Observe leaked the tenant's reading: {seen}");
    assert_eq!(coap_get()?, "9");
    // Whatever else reached the subscription (bounded: the rule fires on clock steps only).
    for _ in 0..20 {
        let Ok(Ok((topic, payload))) = tokio::time::timeout(Duration::from_millis(100), subscribed.next()).await else {
            break;
        };
        assert!(topic.contains("/set/"), "only commands reach the subscription, not {topic} = {payload}");
    }
    hub.stop().await?;
    Ok(())
}

/// Reads a live stream until `want` shows up; `Ok(false)` if the stream ended first.
async fn live_until(live: &mut reqwest::Response, want: &str) -> anyhow::Result<bool> {
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(want) {
            match live.chunk().await {
                Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return false,
            }
        }
        true
    })
    .await;
    found.map_err(|_| anyhow::anyhow!("neither {want:?} nor the end of the stream within 10 s: {seen}"))
}

/// An open live stream follows the rights of whoever opened it: a removed guest's stream
/// and a logged-out owner's stream end at once, while they delivered until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_ends_with_its_callers_rights() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, secret) = hub.add_device(&owner, "Desk").await?;
    let invite: Value =
        owner.post(hub.url("/api/guests")).json(&json!({ "devices": [id] })).send().await?.json().await?;
    let guest = hub.accept_invite(invite["code"].as_str().unwrap_or_default(), "gus").await?;
    let guest_id = get(&owner, hub.url("/api/guests")).await?[0]["id"].as_i64().unwrap_or_default();

    let mut as_guest = guest.get(hub.url("/api/live")).send().await?;
    let mut as_owner = owner.get(hub.url("/api/live")).send().await?;
    assert_eq!((as_guest.status().as_u16(), as_owner.status().as_u16()), (200, 200));
    hub.publish((&id, &secret), &format!("hearth/{id}/co2"), "612".into()).await?;
    assert!(live_until(&mut as_guest, "612").await?, "the guest's stream delivers");
    assert!(live_until(&mut as_owner, "612").await?, "the owner's stream delivers");

    let removed = owner.delete(hub.url(&format!("/api/guests/{guest_id}"))).send().await?;
    assert_eq!(removed.status(), 204);
    hub.publish((&id, &secret), &format!("hearth/{id}/co2"), "613".into()).await?;
    assert!(!live_until(&mut as_guest, "613").await?, "the removed guest's stream ends, without 613");
    assert!(live_until(&mut as_owner, "613").await?, "the owner's goes on");

    assert_eq!(owner.post(hub.url("/api/logout")).send().await?.status(), 204);
    hub.publish((&id, &secret), &format!("hearth/{id}/co2"), "614".into()).await?;
    assert!(!live_until(&mut as_owner, "614").await?, "after logout the owner's stream ends, without 614");
    hub.stop().await?;
    Ok(())
}

/// How many messages wait in the outbox for each household, read from the database file.
async fn queued_by_subject(dir: &std::path::Path) -> anyhow::Result<Vec<(String, i64)>> {
    let db = dir.join("data/hearth.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
    let rows = sqlx::query_as("SELECT subject, COUNT(*) FROM outbox GROUP BY subject ORDER BY subject")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    Ok(rows)
}

/// Cloud destinations are the owner's: a tenant's rule may use one only if the owner
/// opened it to tenants, a tenant's flood drops only the tenant's own oldest messages, and
/// shredding the tenancy deletes what its rules left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_rules_cannot_crowd_out_the_owners_cloud_messages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let closed = hearth_tests::free_port()?;
    let mut config = hearth_tests::Config::for_test(&dir.path().join("data"));
    config.cloud = toml::from_str(&format!(
        "retry_max_s = 60\nmax_queued = 3\n\
         [[destinations]]\nname = 'mine'\nkind = 'webhook'\nurl = 'http://127.0.0.1:{closed}/a'\n\
         [[destinations]]\nname = 'shared'\nkind = 'webhook'\nurl = 'http://127.0.0.1:{closed}/b'\ntenants = true"
    ))?;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let every_5s = |name: &str, destination: &str| {
        json!({ "insist": true, "name": name, "triggers": [{ "type": "interval", "every_s": 5 }],
                "actions": [{ "type": "cloud", "destination": destination, "payload": { "from": name } }] })
    };
    let resp = owner.post(hub.url("/api/rules")).json(&every_5s("owner's", "shared")).send().await?;
    assert_eq!(resp.status(), 201);
    let owners_rule = resp.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    hub.clock.advance(Duration::from_secs(5));
    wait_until(Duration::from_secs(10), "the owner's message", || async {
        queued_by_subject(dir.path()).await.ok().filter(|q| q == &[("owner".to_owned(), 1)])
    })
    .await?;
    let off = owner.delete(hub.url(&format!("/api/rules/{owners_rule}"))).send().await?;
    assert_eq!(off.status(), 204);

    let (tenant, tenancy) = hub.tenant(&owner, "tessa", json!({})).await?;
    hub.clock.advance(Duration::from_secs(2));
    let refused = tenant.post(hub.url("/api/rules")).json(&every_5s("tenant's", "mine")).send().await?;
    assert_eq!(refused.status(), 422, "the owner's own destination is not the tenant's");
    let said = refused.json::<Value>().await?.to_string();
    assert!(said.contains("(configured: shared)"), "a tenant is told only of what they may use: {said}");
    let resp = tenant.post(hub.url("/api/rules")).json(&every_5s("tenant's", "shared")).send().await?;
    assert_eq!(resp.status(), 201, "one the owner opened to tenants is");
    let tenants_rule = resp.json::<Value>().await?["id"].as_i64().unwrap_or_default();
    for n in 1..=6 {
        // One step at a time: the runtime sees each interval, not two at once.
        hub.clock.advance(Duration::from_secs(5));
        wait_until(Duration::from_secs(10), &format!("run {n} of the tenant's rule"), || async {
            let runs: Value =
                tenant.get(hub.url(&format!("/api/rules/{tenants_rule}/runs"))).send().await.ok()?.json().await.ok()?;
            (runs.as_array()?.iter().filter(|t| t["status"] == "done").count() >= n).then_some(())
        })
        .await?;
    }
    let tenancy_key = format!("tenancy:{tenancy}");
    let expected = vec![("owner".to_owned(), 1), (tenancy_key.clone(), 3)];
    wait_until(Duration::from_secs(10), "the tenant's share to fill", || async {
        queued_by_subject(dir.path()).await.ok().filter(|q| *q == expected)
    })
    .await?;

    // The tenancy ends and the tenant shreds it: their waiting messages go, the owner's stay.
    let end = owner.post(hub.url(&format!("/api/tenancies/{tenancy}/end"))).json(&json!({})).send().await?;
    let status = end.status();
    let ended: Value = end.json().await?;
    assert_eq!(status, 200, "{ended}");
    hub.clock.advance_to(ended["end"].as_i64().unwrap_or_default() + 50);
    let shred = tenant.post(hub.url(&format!("/api/tenancies/{tenancy}/shred"))).send().await?;
    let status = shred.status();
    assert_eq!(status, 204, "{}", shred.text().await?);
    assert_eq!(queued_by_subject(dir.path()).await?, vec![("owner".to_owned(), 1)]);
    hub.stop().await?;
    Ok(())
}

/// Regenerating a device's credentials ends what the old ones opened: a DTLS session's
/// observation gets no further notification, while one opened with the new credentials
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_credentials_end_the_old_ones_observations() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (id, old_key) = hub.add_device(&owner, "Display").await?;
    let dtls = hub.coap_dtls.ok_or_else(|| anyhow::anyhow!("no CoAP"))?;
    let uri = format!("coaps://{dtls}/d/{id}/power");
    let post =
        |key: &str, v: &str| run_tool("coap-client-openssl", &["-m", "post", "-u", &id, "-k", key, "-e", v, &uri]);
    let observe = |key: &str| -> anyhow::Result<(std::process::Child, Output)> {
        let mut child = Command::new("stdbuf")
            .args(["-o0", "coap-client-openssl", "-s", "20", "-m", "get", "-u", &id, "-k", key, &uri])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = Output::watch(child.stdout.take())?;
        Ok((child, out))
    };
    post(&old_key, "-100.5")?;
    let (mut old_child, old_seen) = observe(&old_key)?;
    wait_until(Duration::from_secs(10), "the first value", || async {
        old_seen.text().contains("-100.5").then_some(())
    })
    .await?;

    let resp = owner.post(hub.url(&format!("/api/devices/{id}/credentials"))).send().await?;
    assert_eq!(resp.status(), 200);
    let new_key = resp.json::<Value>().await?["secret"].as_str().unwrap_or_default().to_owned();
    let (mut new_child, new_seen) = observe(&new_key)?;
    wait_until(Duration::from_secs(10), "the new observer's first value", || async {
        new_seen.text().contains("-100.5").then_some(())
    })
    .await?;
    post(&new_key, "-200.5")?;
    wait_until(Duration::from_secs(10), "the new observer to see -200.5", || async {
        new_seen.text().contains("-200.5").then_some(())
    })
    .await?;
    for child in [&mut old_child, &mut new_child] {
        let _ = child.kill();
        let _ = child.wait();
    }
    // libcoap prints payloads with nothing between them, and its warnings (timestamps,
    // ports) to the same output: the values are ones no warning holds.
    let old = old_seen.finish();
    assert!(!old.contains("-200.5"), "the old credentials' observation went on: {old}");
    let (_, refused) = post(&old_key, "-300.5")?;
    let stored = hub.readings(&owner, &id, "power").await?;
    assert!(stored.iter().all(|r| r["value"] != -300.5), "the old key posted: {refused}");
    hub.stop().await?;
    Ok(())
}

/// While a tenancy runs, the owner cannot take a household device's readings by making it
/// a building device: the change waits for the tenant, who is told and may decline; once
/// they agree it applies from then on, and never to readings already made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclassifying_during_a_tenancy_waits_for_the_tenant() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let (tenant, _) = hub.tenant(&owner, "tessa", json!({})).await?;
    hub.clock.advance(Duration::from_secs(2));
    let class_url = hub.url(&format!("/api/devices/{meter}/class"));
    let topic = format!("hearth/{meter}/power");
    let values = |r: Vec<Value>| r.iter().filter_map(|x| x["value"].as_f64()).collect::<Vec<f64>>();
    let class_of =
        || async { anyhow::Ok(get(&owner, hub.url(&format!("/api/devices/{meter}"))).await?["class"].clone()) };

    let asked = owner.put(&class_url).json(&json!({ "class": "building" })).send().await?;
    assert_eq!(asked.status(), 202, "it waits for the tenant");
    assert_eq!(class_of().await?, "household");
    let again = owner.put(&class_url).json(&json!({ "class": "building" })).send().await?;
    assert_eq!(again.status(), 409, "one question at a time");
    let notes = get(&tenant, hub.url("/api/notifications")).await?.to_string();
    assert!(notes.contains("asks to make") && notes.contains("Meter"), "the tenant is told: {notes}");
    let inbox = get(&tenant, hub.url("/api/class-proposals")).await?;
    assert_eq!((inbox[0]["status"].as_str(), inbox[0]["class"].as_str()), (Some("pending"), Some("building")));
    let first = inbox[0]["id"].as_i64().unwrap_or_default();

    // Declined: nothing changes, and the owner hears of it.
    let declined = tenant.post(hub.url(&format!("/api/class-proposals/{first}/decline"))).send().await?;
    assert_eq!(declined.status(), 200);
    hub.clock.advance(Duration::from_secs(2));
    hub.publish((&meter, &secret), &topic, "1".into()).await?;
    assert_eq!(values(hub.readings(&tenant, &meter, "power").await?), vec![1.0], "still the tenant's");
    assert_eq!(values(hub.readings(&owner, &meter, "power").await?), Vec::<f64>::new());
    let told = get(&owner, hub.url("/api/notifications")).await?.to_string();
    assert!(told.contains("declined"), "{told}");

    // Asked again and agreed: from then on the readings are the owner's, and only then.
    assert_eq!(owner.put(&class_url).json(&json!({ "class": "building" })).send().await?.status(), 202);
    let second = get(&tenant, hub.url("/api/class-proposals")).await?[0]["id"].as_i64().unwrap_or_default();
    let agreed = tenant.post(hub.url(&format!("/api/class-proposals/{second}/accept"))).send().await?;
    assert_eq!(agreed.status(), 200);
    assert_eq!(class_of().await?, "building");
    hub.clock.advance(Duration::from_secs(2));
    hub.publish((&meter, &secret), &topic, "2".into()).await?;
    assert_eq!(values(hub.readings(&owner, &meter, "power").await?), vec![2.0]);
    assert_eq!(values(hub.readings(&tenant, &meter, "power").await?), vec![1.0], "the earlier one stays theirs");
    let replay = tenant.post(hub.url(&format!("/api/class-proposals/{second}/accept"))).send().await?;
    assert_eq!(replay.status(), 409);
    hub.stop().await?;
    Ok(())
}

/// A tenant's rule once sent CoAP to any address it named: the owner's building devices,
/// the router, the hub itself. Now a CoAP action names a registered device and a path; the
/// owner alone says where a device is, and a tenant's rule may command only what the tenant
/// may command (the home's household devices, during the tenancy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_coap_commands_reach_only_registered_devices() -> anyhow::Result<()> {
    let port = free_udp_port()?;
    let _server = Peer::spawn("coap-server-notls", &["-A", "127.0.0.1", "-p", &port.to_string()])?;
    let uri = format!("coap://127.0.0.1:{port}/example_data");
    let get = || run_tool("coap-client-notls", &["-m", "get", "-B", "2", &uri]);
    wait_until(Duration::from_secs(10), "libcoap's server", || async { get().ok().filter(|(ok, _)| *ok) }).await?;

    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (button, secret) = hub.add_device(&owner, "Button").await?;
    let (lamp, _) = hub.add_device(&owner, "Lamp").await?;
    let (boiler, _) = hub.add_device(&owner, "Boiler").await?;
    let class = owner.put(hub.url(&format!("/api/devices/{boiler}/class"))).json(&json!({ "class": "building" }));
    assert_eq!(class.send().await?.status(), 200);
    let (tenant, _) = hub.tenant(&owner, "tessa", json!({})).await?;
    hub.clock.advance(Duration::from_secs(2));
    let rule = |action: Value| {
        json!({ "insist": true, "name": "Lamp", "triggers": [{ "type": "change", "device": button, "metric": "pressed" }],
            "actions": [action] })
    };
    let save = |rule: Value| tenant.post(hub.url("/api/rules")).json(&rule).send();
    let refused = |status: u16, said: &'static str| {
        move |resp: reqwest::Response| async move {
            assert_eq!(resp.status(), status);
            let text = resp.text().await?;
            assert!(text.contains(said), "{said:?} not in {text}");
            anyhow::Ok(())
        }
    };

    let probe = json!({ "type": "coap", "uri": "coap://127.0.0.1:5683/anything", "method": "post", "payload": "x" });
    refused(422, "unknown field `uri`")(save(rule(probe)).await?).await?;
    let to = |device: &str| json!({ "type": "coap", "device": device, "path": "example_data", "payload": "tenant-on" });
    refused(422, "no CoAP address")(save(rule(to(&lamp))).await?).await?;
    let address = json!({ "address": format!("127.0.0.1:{port}") });
    let set_address = |by: &reqwest::Client, device: &str| {
        by.put(hub.url(&format!("/api/devices/{device}/coap-address"))).json(&address).send()
    };
    assert_eq!(set_address(&tenant, &lamp).await?.status(), 403, "only the owner says where devices are");
    for device in [&lamp, &boiler] {
        assert_eq!(set_address(&owner, device).await?.status(), 200);
    }
    refused(422, "building device")(save(rule(to(&boiler))).await?).await?;
    assert_eq!(save(rule(to(&lamp))).await?.status(), 201);
    // This lamp (libcoap's plain server) cannot do DTLS: the owner marks it so.
    let mark = owner.put(hub.url(&format!("/api/devices/{lamp}/plaintext"))).json(&json!({ "plaintext": true }));
    assert_eq!(mark.send().await?.status(), 200);

    hub.publish((&button, &secret), &format!("hearth/{button}/pressed"), "true".into()).await?;
    wait_until(Duration::from_secs(10), "the lamp to hold what the tenant's rule PUT", || async {
        get().ok().filter(|(_, out)| out.trim() == "tenant-on")
    })
    .await?;
    hub.stop().await?;
    Ok(())
}
