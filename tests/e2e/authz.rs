//! The authorization matrix: every `/api` route of the hub's route table (which the router
//! is built from) against every kind of caller, with the exact status each must get; and
//! each row agrees with who the table says may call the route; and no answer holds a row
//! of another subject's. Bodies are well-formed but semantically wrong where a call would
//! change something, so an allowed caller gets 404/409/422 from the handler while a refused
//! one gets 401/403 before it; calls that do succeed and change things run last in their row.

use std::collections::BTreeSet;

use hearth_tests::TestHub;
use hub::api::routes::lets_through;
use hub::store::Role;
use serde_json::{Value, json};

/// Callers, in the order of each row's expected statuses.
const WHO: [&str; 6] = ["anonymous", "owner", "tenant", "other tenant", "guest", "recipient"];

struct Row {
    method: &'static str,
    route: &'static str,
    params: Vec<(&'static str, String)>,
    body: Option<Value>,
    expect: [u16; 6],
}

fn row(method: &'static str, route: &'static str, expect: [u16; 6]) -> Row {
    Row { method, route, params: Vec::new(), body: None, expect }
}

impl Row {
    fn with(mut self, name: &'static str, value: &str) -> Self {
        self.params.push((name, value.to_owned()));
        self
    }
    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn path(&self) -> String {
        self.params.iter().fold(self.route.to_owned(), |p, (k, v)| p.replace(&format!("{{{k}}}"), v))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_enforces_every_role() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let (boiler, _) = hub.add_device(&owner, "Boiler").await?;
    // The current tenant, and a future one (another tenant of the same home).
    let day = 24 * 3_600_000;
    let (tenant, tenancy) = hub.tenant(&owner, "tessa", json!({ "end": hub.now_ms() + 300 * day })).await?;
    let next_year = hub.now_ms() + 400 * day;
    let (other, other_tenancy) = hub.tenant(&owner, "otto", json!({ "start": next_year })).await?;
    // The tenancy starts a moment after it is made.
    hub.clock.advance(std::time::Duration::from_millis(1100));
    hub.publish((&meter, &secret), &format!("hearth/{meter}/energy"), "1.5".into()).await?;
    let (plug, _) = hub.add_device(&tenant, "Plug").await?;
    // A guest of the tenant, for the meter.
    let invite: Value =
        tenant.post(hub.url("/api/guests")).json(&json!({ "devices": [meter] })).send().await?.json().await?;
    let guest = hub.accept_invite(invite["code"].as_str().unwrap_or_default(), "gus").await?;
    let guest_id = tenant.get(hub.url("/api/guests")).send().await?.json::<Value>().await?[0]["id"].to_string();
    // A recipient of the tenant's, with one grant and one pending request.
    let (rid, rsecret) = hub.recipient(&tenant, "Northwind", "power company").await?;
    let rc = reqwest::Client::new();
    let ask = json!({ "categories": ["energy"], "granularity": "hour", "window_from": 0, "duration_days": 30,
        "purpose": "tariffs", "offer": { "text": "advice" } });
    let mut requests = Vec::new();
    for _ in 0..2 {
        let r: Value = rc
            .post(hub.url("/api/share/requests"))
            .basic_auth(&rid, Some(&rsecret))
            .json(&ask)
            .send()
            .await?
            .json()
            .await?;
        requests.push(r["id"].to_string());
    }
    let granted: Value = tenant
        .post(hub.url(&format!("/api/consent/requests/{}/grant", requests[0])))
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    let grant = granted["id"].as_str().unwrap_or_default().to_owned();
    let pending = requests[1].clone();
    // A rule of the tenant's.
    let simple_rule =
        json!({ "name": "r", "triggers": [{ "type": "start" }], "actions": [{ "type": "notify", "message": "x" }] });
    let created: Value = tenant.post(hub.url("/api/rules")).json(&simple_rule).send().await?.json().await?;
    let rule = created["id"].to_string();
    let bad_rule_for_dry_run = json!({ "name": "r", "triggers": [{ "type": "reading", "device": "nosuchdevice", "metric": "t" }],
        "actions": [{ "type": "notify", "message": "x" }] });
    let bad_rule = json!({ "name": "r", "triggers": [{ "type": "reading", "device": "nosuchdevice", "metric": "t" }],
        "actions": [{ "type": "notify", "message": "x" }] });
    let (t, ot) = (tenancy.to_string(), other_tenancy.to_string());

    const A: u16 = 401;
    const F: u16 = 403;
    let request_body = json!({ "categories": [], "granularity": "hour", "window_from": 0, "duration_days": 1,
        "purpose": "x", "offer": { "text": "y" } });
    let rows = vec![
        //                                                 anon owner tenant other guest recipient
        row("GET", "/api/health", [200, 200, 200, 200, 200, 200]),
        row("GET", "/api/setup", [200, 200, 200, 200, 200, 200]),
        row("GET", "/api/tls", [200, 200, 200, 200, 200, 200]),
        row("GET", "/api/storage", [A, 200, 200, 200, F, F]),
        row("POST", "/api/setup", [422, 422, 422, 422, 422, 422]).body(json!({})),
        row("POST", "/api/login", [422, 422, 422, 422, 422, 422]).body(json!({})),
        row("GET", "/api/me", [A, 200, 200, 200, 200, F]),
        row("POST", "/api/tokens", [A, 422, 422, 422, 422, F]).body(json!({ "name": "" })),
        row("GET", "/api/tokens", [A, 200, 200, 200, 200, F]),
        row("GET", "/api/security-log", [A, 200, 200, 200, F, F]),
        row("DELETE", "/api/tokens/{id}", [A, 404, 404, 404, 404, F]).with("id", "999999"),
        row("GET", "/api/devices", [A, 200, 200, 200, 200, F]),
        row("POST", "/api/devices", [A, 422, 422, 422, F, F]).body(json!({ "name": "" })),
        row("GET", "/api/devices/{id}", [A, 200, 200, 200, 200, F]).with("id", &meter),
        row("GET", "/api/devices/{id}", [A, 404, 200, 404, 404, F]).with("id", &plug),
        row("GET", "/api/devices/{id}", [A, 200, 200, 200, 404, F]).with("id", &boiler),
        row("POST", "/api/devices/{id}/credentials", [A, 200, F, F, F, F]).with("id", &meter),
        row("POST", "/api/devices/{id}/credentials", [A, 404, 200, 404, F, F]).with("id", &plug),
        row("PUT", "/api/devices/{id}/class", [A, 200, F, F, F, F])
            .with("id", &meter)
            .body(json!({ "class": "household" })),
        row("PUT", "/api/devices/{id}/class", [A, 404, F, F, F, F])
            .with("id", &plug)
            .body(json!({ "class": "building" })),
        row("PUT", "/api/devices/{id}/coap-address", [A, 200, F, F, F, F])
            .with("id", &meter)
            .body(json!({ "address": "127.0.0.1:5683" })),
        row("PUT", "/api/devices/{id}/coap-address", [A, 404, F, F, F, F])
            .with("id", &plug)
            .body(json!({ "address": null })),
        row("PUT", "/api/devices/{id}/plaintext", [A, 200, F, F, F, F])
            .with("id", &meter)
            .body(json!({ "plaintext": false })),
        row("PUT", "/api/devices/{id}/plaintext", [A, 404, 200, 404, F, F])
            .with("id", &plug)
            .body(json!({ "plaintext": false })),
        row("PUT", "/api/devices/{id}/bridge", [A, 422, F, F, F, F])
            .with("id", &meter)
            .body(json!({ "namespaces": ["#"] })),
        row("PUT", "/api/devices/{id}/bridge", [A, 404, 422, 404, F, F])
            .with("id", &plug)
            .body(json!({ "namespaces": ["hearth/#"] })),
        row("PUT", "/api/devices/{id}/observe", [A, 422, F, F, F, F])
            .with("id", &meter)
            .body(json!({ "uris": ["http://example.com/x"] })),
        row("PUT", "/api/devices/{id}/observe", [A, 404, F, F, F, F]).with("id", &plug).body(json!({ "uris": [] })),
        row("POST", "/api/devices/{id}/command", [A, 422, 422, F, F, F])
            .with("id", &meter)
            .body(json!({ "metric": "not a metric", "value": 1 })),
        row("POST", "/api/devices/{id}/command", [A, 404, 422, 404, F, F])
            .with("id", &plug)
            .body(json!({ "metric": "not a metric", "value": true })),
        row("PATCH", "/api/devices/{id}", [A, 422, F, F, F, F]).with("id", &meter).body(json!({ "room": "a\nb" })),
        row("PATCH", "/api/devices/{id}", [A, 404, 422, 404, F, F]).with("id", &plug).body(json!({ "name": "\u{7}" })),
        row("GET", "/api/class-proposals", [A, 200, 200, 200, F, F]),
        row("POST", "/api/class-proposals/{id}/accept", [A, F, 404, 404, F, F]).with("id", "999999"),
        row("POST", "/api/class-proposals/{id}/decline", [A, F, 404, 404, F, F]).with("id", "999999"),
        row("GET", "/api/devices/{id}/metrics/{metric}/readings", [A, 200, 200, 200, 200, F])
            .with("id", &meter)
            .with("metric", "energy"),
        row("GET", "/api/live", [A, 200, 200, 200, 200, F]),
        row("GET", "/api/tenancies", [A, 200, 200, 200, F, F]),
        row("POST", "/api/tenancies", [A, 422, F, F, F, F]).body(json!({ "end": 0 })),
        row("POST", "/api/tenancies/{id}/invite", [A, 409, F, F, F, F]).with("id", &t),
        row("POST", "/api/tenancies/{id}/end", [A, 422, F, F, F, F]).with("id", &t).body(json!({ "at": 0 })),
        row("POST", "/api/tenancies/{id}/shred", [A, F, 409, 404, F, F]).with("id", &t),
        row("POST", "/api/tenancies/{id}/shred", [A, F, 404, 409, F, F]).with("id", &ot),
        row("POST", "/api/invites/accept", [422, 422, 422, 422, 422, 422])
            .body(json!({ "code": "NOPE", "username": "x", "password": "long enough password" })),
        row("GET", "/api/guests", [A, 200, 200, 200, F, F]),
        row("POST", "/api/guests", [A, 422, 422, 422, F, F]).body(json!({ "devices": [] })),
        row("POST", "/api/guests", [A, 422, 201, 422, F, F]).body(json!({ "devices": [plug] })),
        row("GET", "/api/recipients", [A, 200, 200, 200, F, F]),
        row("POST", "/api/recipients", [A, 422, 422, 422, F, F]).body(json!({ "name": "", "kind": "x" })),
        row("GET", "/api/consent/key", [200, 200, 200, 200, 200, 200]),
        row("GET", "/api/consent/categories", [200, 200, 200, 200, 200, 200]),
        row("GET", "/api/consent/requests", [A, 200, 200, 200, F, F]),
        row("POST", "/api/consent/requests/{id}/grant", [A, 404, 422, 404, F, F])
            .with("id", &pending)
            .body(json!({ "granularity": "raw" })),
        row("GET", "/api/consent/grants", [A, 200, 200, 200, F, F]),
        row("GET", "/api/consent/grants/{id}/receipts", [A, 404, 200, 404, F, F]).with("id", &grant),
        row("GET", "/api/consent/access-log", [A, 200, 200, 200, F, F]),
        row("GET", "/api/consent/access-log/verify", [A, 200, 200, 200, F, F]),
        row("GET", "/api/consent/access-log/checkpoint", [A, 200, 200, 200, F, F]),
        row("GET", "/api/consent/ledger", [A, 200, 200, 200, F, F]),
        row("GET", "/api/export", [A, 200, 200, 200, F, F]),
        row("GET", "/api/share/me", [A, A, A, A, A, 200]),
        row("GET", "/api/share/requests", [A, A, A, A, A, 200]),
        row("POST", "/api/share/requests", [A, A, A, A, A, 422]).body(request_body),
        row("GET", "/api/share/grants", [A, A, A, A, A, 200]),
        row("GET", "/api/share/grants/{id}/data", [A, A, A, A, A, 200]).with("id", &grant),
        row("GET", "/api/share/grants/{id}/receipts", [A, A, A, A, A, 200]).with("id", &grant),
        row("GET", "/api/rules", [A, 200, 200, 200, F, F]),
        row("POST", "/api/rules", [A, 422, 422, 422, F, F]).body(bad_rule.clone()),
        row("GET", "/api/rules/export", [A, 200, 200, 200, F, F]),
        row("POST", "/api/rules/import", [A, 422, 422, 422, F, F]).body(json!({ "rules": [bad_rule] })),
        row("POST", "/api/rules/dry-run", [A, 422, 422, 422, F, F])
            .body(json!({ "rule": bad_rule_for_dry_run, "from": 0, "to": 1000 })),
        row("GET", "/api/rules/{id}", [A, 404, 200, 404, F, F]).with("id", &rule),
        row("PUT", "/api/rules/{id}", [A, 404, 200, 404, F, F]).with("id", &rule).body(simple_rule),
        row("GET", "/api/rules/{id}/runs", [A, 404, 200, 404, F, F]).with("id", &rule),
        row("GET", "/api/notifications", [A, 200, 200, 200, F, F]),
        row("DELETE", "/api/notifications/{id}", [A, 404, 404, 404, F, F]).with("id", "999999"),
        row("GET", "/api/outbox", [A, 200, F, F, F, F]),
        // Calls that succeed and change things: each row's success runs after its refusals.
        row("DELETE", "/api/rules/{id}", [A, 404, 204, 404, F, F]).with("id", &rule),
        row("POST", "/api/consent/requests/{id}/deny", [A, 404, 204, 404, F, F]).with("id", &pending),
        row("POST", "/api/consent/grants/{id}/revoke", [A, 404, 200, 404, F, F]).with("id", &grant),
        row("DELETE", "/api/devices/{id}", [A, 404, 204, 404, F, F]).with("id", &plug),
        row("DELETE", "/api/devices/{id}", [A, 204, F, F, F, F]).with("id", &boiler),
        row("DELETE", "/api/recipients/{id}", [A, 404, 204, 404, F, F]).with("id", &rid),
        // The recipient was removed just above: its credentials no longer work at all.
        row("DELETE", "/api/guests/{id}", [A, 404, 204, 404, F, A]).with("id", &guest_id),
        row("POST", "/api/logout", [204, 204, 204, 204, 204, 204]),
    ];

    // Things only some callers may ever see (by index in WHO): the tenant's own device, the
    // recipient the tenant registered, the tenant's guest.
    let private: [(String, &str, &[usize]); 3] = [
        (plug.clone(), "the tenant's own device", &[2]),
        ("Northwind".to_owned(), "the tenant's recipient", &[2, 5]),
        ("\"gus\"".to_owned(), "the tenant's guest", &[2, 4]),
    ];
    let anon = reqwest::Client::new();
    let clients = [&anon, &owner, &tenant, &other, &guest, &rc];
    let mut failures = Vec::new();
    for r in &rows {
        let path = r.path();
        // Refusals first, then the allowed callers, so a success cannot mask a refusal.
        let mut order: Vec<usize> = (0..WHO.len()).collect();
        order.sort_by_key(|&i| r.expect[i] < 300);
        for i in order {
            let mut req = clients[i].request(r.method.parse()?, hub.url(&path));
            if i == 5 {
                req = req.basic_auth(&rid, Some(&rsecret));
            }
            if let Some(body) = &r.body {
                req = req.json(body);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            if status != r.expect[i] {
                failures.push(format!("{} {path} as {}: got {status}, want {}", r.method, WHO[i], r.expect[i]));
            }
            // What the answer holds: nothing of another subject's (the live stream never ends).
            if r.method == "GET" && status == 200 && r.route != "/api/live" {
                let body = resp.text().await?;
                for (marker, what, allowed) in &private {
                    if !allowed.contains(&i) && body.contains(marker.as_str()) {
                        failures.push(format!("GET {path} as {}: the answer holds {what}", WHO[i]));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "authorization matrix failures:\n{}", failures.join("\n"));

    // Every route is in the matrix, and callers the table does not let through are refused
    // (401 or 403) in every row of it.
    let callers = [
        None,
        Some(Some(Role::Owner)),
        Some(Some(Role::Tenant)),
        Some(Some(Role::Tenant)),
        Some(Some(Role::Guest)),
        Some(None),
    ];
    for r in &rows {
        let route = hub::api::routes().find(|t| (t.method, t.path) == (r.method, r.route));
        let Some(route) = route else { continue };
        for (i, caller) in callers.iter().enumerate() {
            if !lets_through(route.who, *caller) && ![A, F].contains(&r.expect[i]) {
                failures.push(format!(
                    "{} {} as {}: the table refuses, the matrix expects {}",
                    r.method, r.route, WHO[i], r.expect[i]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "the table and the matrix disagree:\n{}", failures.join("\n"));
    let covered: BTreeSet<(&str, &str)> = rows.iter().map(|r| (r.method, r.route)).collect();
    let all: BTreeSet<(&str, &str)> = hub::api::routes().map(|r| (r.method, r.path)).collect();
    let missing: Vec<_> = all.difference(&covered).collect();
    assert!(missing.is_empty(), "routes missing from the matrix: {missing:?}");
    let unknown: Vec<_> = covered.difference(&all).collect();
    assert!(unknown.is_empty(), "rows for routes that do not exist: {unknown:?}");
    hub.stop().await?;
    Ok(())
}
