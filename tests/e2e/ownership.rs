//! The ownership promise as a property over every path out of the hub: generated readings
//! with known owners, made before, during and after a tenancy and after its shred, read by
//! every kind of caller through every path they have (REST, the device list, SSE, export,
//! dry runs, run traces, notifications, recipient shares, a household device's
//! credentials over MQTT, CoAP GET and CoAP Observe, and a bridge's credentials, which the
//! owner holds, over MQTT). One household device is behind a Zigbee2MQTT bridge: its
//! readings come through the bridge's namespace and are owned like any other's. Every value that arrives anywhere is
//! traced back to the reading it came from, and must be one that caller may have at that
//! moment; every channel must also have delivered something, so a broken subscription
//! cannot pass for "nothing leaked".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_tests::{Config, Listener, Output, TestHub, run_tool, wait_until};
use hub::store::readings::Keys;
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Every generated value is `BASE + n + 0.375`: no timestamp, id or count looks like one,
/// so any text can be scanned for readings.
const BASE: f64 = 700_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Period {
    Before,
    During,
    After,
    Shredded,
}

/// Whose a reading is, by the promise (not by asking the hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whose {
    Owner,
    /// The tenancy that is created, ends and is shredded.
    First,
    /// The tenancy after it.
    Second,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Caller {
    Owner,
    Tenant,
    OtherTenant,
    Guest,
    RemovedGuest,
    OwnersRecipient,
    RawRecipient,
    HourlyRecipient,
    DailyRecipient,
    RevokedRecipient,
    DeviceCredentials,
    BridgeCredentials,
}

/// What has happened so far that changes who may see what.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    guest_removed: bool,
    revoked: bool,
    shredded: bool,
}

#[derive(Debug, Clone)]
struct Made {
    device: &'static str,
    ts: i64,
    value: f64,
    period: Period,
    whose: Whose,
    /// The state when it was made: what live channels may deliver.
    then: State,
}

fn may_see(caller: Caller, r: &Made, now: State) -> bool {
    let home = matches!(r.device, "meter" | "boiler");
    match caller {
        Caller::Owner | Caller::OwnersRecipient => r.whose == Whose::Owner,
        Caller::Tenant | Caller::RawRecipient | Caller::HourlyRecipient | Caller::DailyRecipient => {
            r.whose == Whose::First && !now.shredded
        }
        Caller::RevokedRecipient => r.whose == Whose::First && !now.shredded && !now.revoked,
        Caller::OtherTenant => r.whose == Whose::Second,
        Caller::Guest => r.whose == Whose::Owner && home,
        Caller::RemovedGuest => r.whose == Whose::Owner && home && !now.guest_removed,
        Caller::DeviceCredentials => r.whose == Whose::Owner && r.device == "meter",
        // A bridge publishes for its devices and hears their commands; it never gets readings.
        Caller::BridgeCredentials => false,
    }
}

/// Every generated value in `text`.
fn values_in(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(".375").map(|i| i + from) {
        from = at + 4;
        if bytes.get(at + 4).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let mut start = at;
        while start > 0 && bytes[start - 1].is_ascii_digit() {
            start -= 1;
        }
        if let Ok(whole) = text[start..at].parse::<f64>()
            && (BASE..BASE + 100_000.0).contains(&whole)
        {
            out.push(whole + 0.375);
        }
    }
    out
}

/// What arrived where, cell by cell (path, caller, period of the reading).
#[derive(Default)]
struct Tally {
    cells: BTreeMap<(&'static str, Caller, Period), usize>,
    delivered: BTreeSet<(&'static str, Caller)>,
    checked: usize,
    leaks: Vec<String>,
}

struct World {
    made: Vec<Made>,
    /// How many of `made` earlier checkpoints waited for.
    waited: usize,
    ids: HashMap<&'static str, String>,
    state: State,
    tally: Tally,
}

impl World {
    fn find(&self, value: f64) -> Option<&Made> {
        self.made.iter().find(|m| m.value == value)
    }

    /// Records what `caller` received on `path`; `live` judges each reading by the state
    /// when it was made, otherwise by the state now.
    fn record(&mut self, path: &'static str, caller: Caller, text: &str, live: bool) {
        for value in values_in(text) {
            self.tally.checked += 1;
            let Some(r) = self.find(value).cloned() else {
                self.tally.leaks.push(format!("{path} gave {caller:?} {value}, which no device sent"));
                continue;
            };
            if !may_see(caller, &r, if live { r.then } else { self.state }) {
                self.tally.leaks.push(format!(
                    "{path} gave {caller:?} the {:?} {} reading {} made {:?} at {}",
                    r.whose, r.device, r.value, r.period, r.ts
                ));
            }
            *self.tally.cells.entry((path, caller, r.period)).or_default() += 1;
            self.tally.delivered.insert((path, caller));
        }
    }

    /// A recipient's aggregates: each bucket must be exactly the caller's readings of that
    /// device in it, and hold enough of them.
    fn record_buckets(&mut self, caller: Caller, width: i64, body: &Value) {
        let path = "share (aggregates)";
        for series in body["series"].as_array().into_iter().flatten() {
            let device = self.ids.iter().find(|(_, id)| series["device"] == **id).map(|(name, _)| *name);
            for bucket in series["aggregates"].as_array().into_iter().flatten() {
                self.tally.checked += 1;
                let start = bucket["start"].as_i64().unwrap_or(-1);
                let mine: Vec<Made> = self
                    .made
                    .iter()
                    .filter(|m| Some(m.device) == device && (start..start + width).contains(&m.ts))
                    .filter(|m| may_see(caller, m, self.state))
                    .cloned()
                    .collect();
                let min = mine.iter().map(|m| m.value).fold(f64::INFINITY, f64::min);
                let max = mine.iter().map(|m| m.value).fold(f64::NEG_INFINITY, f64::max);
                let fits = bucket["count"].as_u64() == Some(mine.len() as u64)
                    && mine.len() >= 4
                    && bucket["min"].as_f64() == Some(min)
                    && bucket["max"].as_f64() == Some(max);
                if !fits {
                    self.tally.leaks.push(format!("{path} gave {caller:?} {bucket}; its readings there: {mine:?}"));
                }
                for m in &mine {
                    *self.tally.cells.entry((path, caller, m.period)).or_default() += 1;
                }
                self.tally.delivered.insert((path, caller));
            }
        }
    }
}

/// A response body as text, or nothing if the caller is refused (401, 403, 404, 410).
async fn body(request: reqwest::RequestBuilder) -> anyhow::Result<String> {
    let resp = request.send().await?;
    match resp.status().as_u16() {
        200 | 201 => Ok(resp.text().await?),
        401 | 403 | 404 | 410 => Ok(String::new()),
        s => anyhow::bail!("HTTP {s}: {}", resp.text().await?),
    }
}

/// A live stream, collected by a task as it arrives.
struct Live {
    text: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Live {
    async fn open(hub: &TestHub, client: &reqwest::Client) -> anyhow::Result<Self> {
        let mut resp = client.get(hub.url("/api/live")).send().await?;
        anyhow::ensure!(resp.status() == 200, "live: HTTP {}", resp.status());
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(chunk)) = resp.chunk().await {
                if let Ok(mut t) = sink.lock() {
                    t.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
        });
        Ok(Self { text, task })
    }

    fn take(&self) -> String {
        self.text.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default()
    }

    fn holds(&self, value: f64) -> bool {
        self.text.lock().is_ok_and(|t| t.contains(&format!("{value}")))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Person {
    caller: Caller,
    client: reqwest::Client,
    live: Option<Live>,
    rule: Option<i64>,
}

struct Recipient {
    caller: Caller,
    id: String,
    secret: String,
    grant: String,
    width: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_gives_each_caller_only_their_readings() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_test(&dir.path().join("data"));
    config.coap.plain = true;
    let hub = TestHub::start_with(config).await?;
    let (Some(mqtt), Some(plain)) = (hub.mqtt, hub.coap_plain) else { anyhow::bail!("MQTT or CoAP is off") };
    // The tenancy starts at a UTC midnight, so that its first day is a whole daily bucket.
    let day = hub.next_boundary(DAY) + DAY;
    hub.clock.advance_to(day - 5 * HOUR);
    let owner = hub.owner().await?;
    let (meter, meter_key) = hub.add_device(&owner, "Meter").await?;
    let (boiler, boiler_key) = hub.add_device(&owner, "Boiler").await?;
    let class = owner.put(hub.url(&format!("/api/devices/{boiler}/class"))).json(&json!({ "class": "building" }));
    assert_eq!(class.send().await?.status(), 200);
    let (tenant, first) = hub.tenant(&owner, "ana", json!({ "start": day, "end": day + 30 * HOUR })).await?;
    let (other, _) = hub.tenant(&owner, "ben", json!({ "start": day + 36 * HOUR })).await?;
    let guest_of = |name: &'static str| {
        let (hub, owner, devices) = (&hub, &owner, json!([meter, boiler]));
        async move {
            let invite: Value =
                owner.post(hub.url("/api/guests")).json(&json!({ "devices": devices })).send().await?.json().await?;
            hub.accept_invite(invite["code"].as_str().unwrap_or_default(), name).await
        }
    };
    let guest = guest_of("gia").await?;
    let removed_guest = guest_of("rex").await?;
    // The owner's Zigbee2MQTT bridge; its power plug is a household device of its own.
    let (bridge, bridge_key) = hub.add_device(&owner, "Zigbee2MQTT").await?;
    let grant = owner.put(hub.url(&format!("/api/devices/{bridge}/bridge")));
    assert_eq!(grant.json(&json!({ "namespaces": ["zigbee2mqtt/#"] })).send().await?.status(), 200);
    let list = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub/tests/data/ecosystems/z2m-bridge-devices.json"),
    )?;
    hub.publish((&bridge, &bridge_key), "zigbee2mqtt/bridge/devices", list).await?;
    let plug = wait_until(Duration::from_secs(5), "the bridge's plug", || async {
        let list: Value = owner.get(hub.url("/api/devices")).send().await.ok()?.json().await.ok()?;
        let plug = list.as_array()?.iter().find(|d| d["name"] == "power_plug" && d["bridge"] == bridge.as_str())?;
        plug["id"].as_str().map(str::to_owned)
    })
    .await?;

    let mut world = World {
        made: Vec::new(),
        waited: 0,
        ids: HashMap::from([("meter", meter.clone()), ("boiler", boiler.clone()), ("plug", plug.clone())]),
        state: State::default(),
        tally: Tally::default(),
    };
    let mut people = Vec::new();
    for (caller, client) in [
        (Caller::Owner, owner.clone()),
        (Caller::Tenant, tenant.clone()),
        (Caller::OtherTenant, other.clone()),
        (Caller::Guest, guest),
        (Caller::RemovedGuest, removed_guest),
    ] {
        let live = Some(Live::open(&hub, &client).await?);
        people.push(Person { caller, client, live, rule: None });
    }

    // Rules that fire on every reading they can see: their traces and notifications carry
    // the reading. The owner's also commands the meter whenever the boiler reports, which
    // is what the meter's own subscription may receive.
    let watch = |devices: &[&String], command: Option<&String>| {
        let triggers: Vec<Value> =
            devices.iter().map(|d| json!({ "type": "reading", "device": d, "metric": "power" })).collect();
        let mut actions = vec![json!({ "type": "notify", "message": "seen" })];
        if let Some(device) = command {
            actions.push(json!({ "type": "mqtt", "device": device, "metric": "relay", "value": "on" }));
        }
        json!({ "insist": true, "name": "Watch", "mode": "queued", "triggers": triggers, "actions": actions })
    };
    let create = |client: &reqwest::Client, rule: Value| {
        let request = client.post(hub.url("/api/rules")).json(&rule);
        async move {
            let resp = request.send().await?;
            let status = resp.status();
            let body: Value = resp.json().await?;
            anyhow::ensure!(status == 201, "a rule: {status} {body}");
            anyhow::Ok(body["id"].as_i64())
        }
    };
    people[0].rule = create(&owner, watch(&[&meter, &boiler, &plug], None)).await?;
    create(
        &owner,
        json!({ "insist": true, "name": "Relay", "triggers": [{ "type": "reading", "device": boiler, "metric": "power" }],
        "actions": [{ "type": "mqtt", "device": meter, "metric": "relay", "value": "on" },
            { "type": "mqtt", "device": plug, "metric": "state", "value": "on" }] }),
    )
    .await?;
    let mut subscribed = Listener::start(mqtt, &meter, &meter_key, &format!("hearth/{meter}/#")).await?;
    let mut bridged = Listener::start(mqtt, &bridge, &bridge_key, "#").await?;

    // The owner's recipient, granted raw energy readings from before the tenancy on.
    let recipient = reqwest::Client::new();
    let ask = |granularity: &str| {
        json!({ "categories": ["energy"], "granularity": granularity, "window_from": day - DAY, "duration_days": 30,
            "purpose": "energy advice", "offer": { "text": "a report" } })
    };
    let register = |by: reqwest::Client, name: &'static str, caller: Caller, granularity: &'static str| {
        let (hub, recipient, request) = (&hub, &recipient, ask(granularity));
        async move {
            let (id, secret) = hub.recipient(&by, name, "energy adviser").await?;
            let asked = recipient.post(hub.url("/api/share/requests")).basic_auth(&id, Some(&secret)).json(&request);
            let asked: Value = asked.send().await?.json().await?;
            let grant = by.post(hub.url(&format!("/api/consent/requests/{}/grant", asked["id"]))).json(&json!({}));
            let grant: Value = grant.send().await?.json().await?;
            let grant = grant["id"].as_str().ok_or_else(|| anyhow::anyhow!("no grant: {grant}"))?.to_owned();
            let width = match granularity {
                "hour" => Some(HOUR),
                "day" => Some(DAY),
                _ => None,
            };
            anyhow::Ok(Recipient { caller, id, secret, grant, width })
        }
    };
    let mut recipients = vec![register(owner.clone(), "Owner's adviser", Caller::OwnersRecipient, "raw").await?];

    // Publishes one reading per (device, value) at the hub's time, a minute apart.
    let keys: HashMap<&str, String> = HashMap::from([("meter", meter_key.clone()), ("boiler", boiler_key.clone())]);
    let mut next = 1.0;
    macro_rules! publish {
        ($period:expr, $whose_meter:expr, $devices:expr, $count:expr) => {
            for _ in 0..$count {
                for device in $devices {
                    let ts = hub.now_ms() + 60_000;
                    hub.clock.advance_to(ts + 10);
                    let value = BASE + next + 0.375;
                    next += 1.0;
                    let id = &world.ids[device];
                    if device == "plug" {
                        // Through its bridge, as Zigbee2MQTT publishes a device's state.
                        let payload = json!({ "power": value, "ts": ts }).to_string();
                        hub.publish((&bridge, &bridge_key), "zigbee2mqtt/power_plug", payload).await?;
                    } else {
                        let key = keys.get(device).map(String::as_str).unwrap_or_default();
                        let payload = json!({ "value": value, "ts": ts }).to_string();
                        hub.publish((id, key), &format!("hearth/{id}/power"), payload).await?;
                    }
                    let whose = if device == "boiler" { Whose::Owner } else { $whose_meter };
                    world.made.push(Made { device, ts, value, period: $period, whose, then: world.state });
                }
            }
        };
    }

    // Before the tenancy: the owner's.
    publish!(Period::Before, Whose::Owner, ["meter", "boiler", "plug"], 2);
    let coap_uri = format!("coap://{plain}/d/{meter}/power?k={meter_key}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aiocoap_observe.py");
    let mut observer = Command::new("python3")
        .arg(&script)
        .arg(&coap_uri)
        .arg("600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let observed = Output::watch(observer.stdout.take())?;
    wait_until(Duration::from_secs(10), "the observer's first value", || async {
        (!values_in(&observed.text()).is_empty()).then_some(())
    })
    .await?;
    publish!(Period::Before, Whose::Owner, ["meter", "boiler", "plug"], 2);
    checkpoint(&hub, &mut world, &mut people, &recipients, [&mut subscribed, &mut bridged], &coap_uri).await?;

    // The tenancy: the meter's readings are the tenant's, the boiler's the owner's.
    hub.clock.advance_to(day + HOUR);
    let guests: Value = owner.get(hub.url("/api/guests")).send().await?.json().await?;
    let rex = guests.as_array().into_iter().flatten().find(|g| g["username"] == "rex");
    let rex = rex.and_then(|g| g["id"].as_i64()).ok_or_else(|| anyhow::anyhow!("no guest rex in {guests}"))?;
    assert_eq!(owner.delete(hub.url(&format!("/api/guests/{rex}"))).send().await?.status(), 204);
    world.state.guest_removed = true;
    people[1].rule = create(&tenant, watch(&[&meter, &plug], None)).await?;
    for (name, caller, granularity) in [
        ("Raw adviser", Caller::RawRecipient, "raw"),
        ("Hourly adviser", Caller::HourlyRecipient, "hour"),
        ("Daily adviser", Caller::DailyRecipient, "day"),
        ("Revoked adviser", Caller::RevokedRecipient, "raw"),
    ] {
        recipients.push(register(tenant.clone(), name, caller, granularity).await?);
    }
    for _ in 0..3 {
        publish!(Period::During, Whose::First, ["meter", "meter", "meter", "plug", "meter", "meter", "boiler"], 1);
        hub.clock.advance_to(hub.next_boundary(HOUR));
    }
    hub.clock.advance_to(day + 24 * HOUR + 60_000);
    publish!(Period::During, Whose::First, ["meter", "plug", "meter", "meter", "meter", "meter", "boiler"], 1);
    hub.clock.advance_to(day + 25 * HOUR + 60_000);
    checkpoint(&hub, &mut world, &mut people, &recipients, [&mut subscribed, &mut bridged], &coap_uri).await?;
    let revoked = &recipients[4];
    let revoke = tenant.post(hub.url(&format!("/api/consent/grants/{}/revoke", revoked.grant)));
    assert_eq!(revoke.send().await?.status(), 200);
    world.state.revoked = true;

    // After it: the owner's again; the tenant is a former tenant.
    hub.clock.advance_to(day + 31 * HOUR);
    publish!(Period::After, Whose::Owner, ["meter", "boiler", "plug"], 3);
    checkpoint(&hub, &mut world, &mut people, &recipients, [&mut subscribed, &mut bridged], &coap_uri).await?;

    // The former tenant shreds; the next tenancy starts and has its own readings. What the
    // files held of the tenancy first: its wrapped key and its sealed readings.
    let sealed = sealed_copies(&hub, first).await?;
    anyhow::ensure!(sealed.len() > 1, "the tenancy's key and chunks are in the database before the shred");
    let shred = tenant.post(hub.url(&format!("/api/tenancies/{first}/shred"))).send().await?;
    assert_eq!(shred.status(), 204, "{}", shred.text().await?);
    world.state.shredded = true;
    hub.clock.advance_to(day + 37 * HOUR);
    people[2].rule = create(&other, watch(&[&meter, &plug], None)).await?;
    publish!(Period::Shredded, Whose::Second, ["meter", "boiler", "plug"], 3);
    checkpoint(&hub, &mut world, &mut people, &recipients, [&mut subscribed, &mut bridged], &coap_uri).await?;

    let _ = observer.kill();
    let _ = observer.wait();
    world.record("CoAP Observe", Caller::DeviceCredentials, &observed.finish(), true);

    // The report: what was checked, and every channel delivered.
    let tally = &world.tally;
    let paths: BTreeSet<&str> = tally.delivered.iter().map(|(p, _)| *p).collect();
    let callers: BTreeSet<Caller> = tally.delivered.iter().map(|(_, c)| *c).collect();
    println!(
        "ownership: {} channels (paths x the callers who have them: {} paths, {} callers) x 4 periods = {} cells; \
         {} cells received readings, the rest rightly none; {} readings made, {} values checked, {} leaks",
        tally.delivered.len(),
        paths.len(),
        callers.len(),
        tally.delivered.len() * 4,
        tally.cells.len(),
        world.made.len(),
        tally.checked,
        tally.leaks.len()
    );
    for ((path, caller, period), n) in &tally.cells {
        println!("  {path:<20} {caller:<18?} {period:<9?} {n}");
    }
    assert!(tally.leaks.is_empty(), "readings where they do not belong:\n{}", tally.leaks.join("\n"));
    let expected: &[(&str, &[Caller])] = &[
        ("REST readings", &[Caller::Owner, Caller::Tenant, Caller::OtherTenant, Caller::Guest, Caller::RemovedGuest]),
        ("device list", &[Caller::Owner, Caller::Tenant, Caller::OtherTenant, Caller::Guest, Caller::RemovedGuest]),
        ("live", &[Caller::Owner, Caller::Tenant, Caller::OtherTenant, Caller::Guest, Caller::RemovedGuest]),
        ("export", &[Caller::Owner, Caller::Tenant, Caller::OtherTenant]),
        ("dry run", &[Caller::Owner, Caller::Tenant, Caller::OtherTenant]),
        ("run traces", &[Caller::Owner, Caller::Tenant, Caller::OtherTenant]),
        ("notifications", &[Caller::Owner, Caller::Tenant, Caller::OtherTenant]),
        ("share (raw)", &[Caller::OwnersRecipient, Caller::RawRecipient, Caller::RevokedRecipient]),
        ("share (aggregates)", &[Caller::HourlyRecipient, Caller::DailyRecipient]),
        ("CoAP GET", &[Caller::DeviceCredentials]),
        ("CoAP Observe", &[Caller::DeviceCredentials]),
        ("MQTT commands", &[Caller::DeviceCredentials, Caller::BridgeCredentials]),
    ];
    let mut silent = Vec::new();
    for (path, callers) in expected {
        for caller in *callers {
            if !tally.delivered.contains(&(*path, *caller)) {
                silent.push(format!("{path} / {caller:?}"));
            }
        }
    }
    assert!(silent.is_empty(), "channels that never delivered, so proved nothing: {silent:?}");

    // And at rest: no byte string of the tenancy's key or sealed readings is left in any
    // file of the data directory (database, WAL), and reading everything the hub key can
    // open yields none of its values, while the owner's and the next tenancy's are there.
    let config = hub.stop().await?;
    // Every file, in subdirectories too (the TLS certificates are in one).
    let mut files = Vec::new();
    let mut count = 0;
    let mut dirs = vec![config.data_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.extend(std::fs::read(path)?);
                count += 1;
            }
        }
    }
    for bytes in &sealed {
        let probe = &bytes[..bytes.len().min(48)];
        assert!(!files.windows(probe.len()).any(|w| w == probe), "a sealed copy of the tenancy is still in the files");
    }
    let store = hub::open_store(&config, hub::clock::Clock::system().now_ms()).await?;
    let mut opened = String::new();
    for id in world.ids.values() {
        if let Some((readings, _)) = store.readings(id, "power", (0, i64::MAX), 100_000, Keys::All).await? {
            opened.push_str(&format!("{readings:?}"));
        }
    }
    opened.push_str(&format!("{:?}", store.latest_values(None, Keys::All).await?));
    for rule in store.rules().await? {
        for (_, _, body) in store.runs(rule.id, 1000).await? {
            opened.push_str(&String::from_utf8_lossy(&body));
        }
    }
    for user in 1..=20 {
        opened.push_str(&format!("{:?}", store.notifications(user, 1000).await?));
    }
    let at_rest: Vec<&Made> = values_in(&opened).into_iter().filter_map(|v| world.find(v)).collect();
    let shredded: Vec<&&Made> = at_rest.iter().filter(|m| m.whose == Whose::First).collect();
    assert!(shredded.is_empty(), "the shredded tenancy's readings are still readable at rest: {shredded:?}");
    for whose in [Whose::Owner, Whose::Second] {
        assert!(at_rest.iter().any(|m| m.whose == whose), "no {whose:?} reading at rest: the check read nothing");
    }
    println!(
        "at rest: {count} files' bytes scanned for {} sealed copies; {} values opened, none the shredded tenancy's",
        sealed.len(),
        at_rest.len()
    );
    Ok(())
}

/// The tenancy's wrapped data key and every sealed chunk, recent row and latest value under it, as the
/// database file holds them now.
async fn sealed_copies(hub: &TestHub, tenancy: i64) -> anyhow::Result<Vec<Vec<u8>>> {
    let db = hub.data_dir.join("hearth.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
    let key: i64 =
        sqlx::query_scalar("SELECT key_id FROM tenancies WHERE id = ?").bind(tenancy).fetch_one(&pool).await?;
    let mut out: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE id = ?").bind(key).fetch_all(&pool).await?;
    for sql in [
        "SELECT body FROM chunks WHERE key_id = ?",
        "SELECT body FROM recent WHERE key_id = ?",
        "SELECT body FROM latest WHERE key_id = ?",
    ] {
        out.extend(sqlx::query_scalar::<_, Vec<u8>>(sql).bind(key).fetch_all(&pool).await?);
    }
    pool.close().await;
    Ok(out)
}

/// Every caller reads every path they have; what arrives is recorded.
async fn checkpoint(
    hub: &TestHub,
    world: &mut World,
    people: &mut [Person],
    recipients: &[Recipient],
    [subscribed, bridged]: [&mut Listener; 2],
    coap_uri: &str,
) -> anyhow::Result<()> {
    // The live streams have what was committed: wait for the newest reading someone may see
    // live to reach them (bounded), then take what each stream holds.
    for person in people.iter() {
        let Some(live) = &person.live else { continue };
        let fresh = &world.made[world.waited..];
        let last = fresh.iter().rev().find(|m| may_see(person.caller, m, m.then)).map(|m| m.value);
        if let Some(value) = last {
            let _ = wait_until(Duration::from_secs(5), "the live stream", || async { live.holds(value).then_some(()) })
                .await;
        }
    }
    world.waited = world.made.len();
    let now = hub.now_ms();
    for person in people.iter() {
        let caller = person.caller;
        if let Some(live) = &person.live {
            let text = live.take();
            world.record("live", caller, &text, true);
        }
        for device in ["meter", "boiler", "plug"] {
            let id = &world.ids[device];
            let url = hub.url(&format!("/api/devices/{id}/metrics/power/readings?from=0&to=99999999999999"));
            let text = body(person.client.get(url)).await?;
            world.record("REST readings", caller, &text, false);
        }
        let text = body(person.client.get(hub.url("/api/devices"))).await?;
        world.record("device list", caller, &text, false);
        if matches!(caller, Caller::Owner | Caller::Tenant | Caller::OtherTenant) {
            let text = body(person.client.get(hub.url("/api/export"))).await?;
            world.record("export", caller, &text, false);
            for device in ["meter", "boiler", "plug"] {
                let rule = json!({ "insist": true, "name": "Replay",
                    "triggers": [{ "type": "reading", "device": world.ids[device], "metric": "power" }],
                    "actions": [{ "type": "notify", "message": "x" }] });
                let resp = person
                    .client
                    .post(hub.url("/api/rules/dry-run"))
                    .json(&json!({ "rule": rule, "from": now - 30 * DAY, "to": now }));
                let resp = resp.send().await?;
                // A device the caller may not use is refused (422, naming it), as is a caller
                // who may not act (403) or whose account is gone (401): that gives nothing.
                let status = resp.status().as_u16();
                let text = resp.text().await?;
                let refused = status == 422 && text.contains(&world.ids[device]) || matches!(status, 401 | 403);
                anyhow::ensure!(status == 200 || refused, "dry run: HTTP {status} {text}");
                world.record("dry run", caller, if status == 200 { &text } else { "" }, false);
            }
            if let Some(rule) = person.rule {
                let last = world.made.iter().rev().find(|m| may_see(caller, m, world.state)).map(|m| m.value);
                let runs = runs_once_caught_up(hub, person, rule, last).await?;
                world.record("run traces", caller, &runs, false);
            }
            let text = body(person.client.get(hub.url("/api/notifications"))).await?;
            world.record("notifications", caller, &text, false);
        }
    }
    let anyone = reqwest::Client::new();
    for r in recipients {
        let url = hub.url(&format!("/api/share/grants/{}/data", r.grant));
        let text = body(anyone.get(url).basic_auth(&r.id, Some(&r.secret))).await?;
        match r.width {
            None => world.record("share (raw)", r.caller, &text, false),
            Some(width) if !text.is_empty() => world.record_buckets(r.caller, width, &serde_json::from_str(&text)?),
            Some(_) => {}
        }
    }
    let (_, got) = run_tool("coap-client-notls", &["-m", "get", "-B", "2", coap_uri])?;
    world.record("CoAP GET", Caller::DeviceCredentials, &got, false);
    for _ in 0..200 {
        let Ok(Ok((topic, payload))) = tokio::time::timeout(Duration::from_millis(200), subscribed.next()).await else {
            break;
        };
        if !topic.contains("/set/") || !values_in(&payload).is_empty() {
            world.tally.leaks.push(format!("the meter's subscription got {topic} = {payload}"));
        }
        world.tally.delivered.insert(("MQTT commands", Caller::DeviceCredentials));
    }
    // The bridge, subscribed to everything, hears its plug's commands and nothing else.
    for _ in 0..200 {
        let Ok(Ok((topic, payload))) = tokio::time::timeout(Duration::from_millis(200), bridged.next()).await else {
            break;
        };
        if topic != "zigbee2mqtt/power_plug/set" || !values_in(&payload).is_empty() {
            world.tally.leaks.push(format!("the bridge's subscription got {topic} = {payload}"));
        }
        world.tally.delivered.insert(("MQTT commands", Caller::BridgeCredentials));
    }
    Ok(())
}

/// The rule's runs once its trace of the newest reading it may see is written (bounded: its
/// traces are written behind the runs).
async fn runs_once_caught_up(hub: &TestHub, person: &Person, rule: i64, last: Option<f64>) -> anyhow::Result<String> {
    let url = hub.url(&format!("/api/rules/{rule}/runs"));
    let mut text = String::new();
    for _ in 0..25 {
        text = body(person.client.get(&url)).await?;
        if last.is_none_or(|v| text.contains(&format!("{v}"))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(text)
}
