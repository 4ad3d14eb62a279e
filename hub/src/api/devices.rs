//! Devices: list with latest values, add (credentials shown once), regenerate credentials,
//! remove, and the readings of one metric over a time range.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header::HOST};
use axum::routing::on;
use hearth_model::DeviceClass;
use hearth_model::automations::{Note, NotificationSource};
use hearth_model::devices::{
    BelongsTo, ClassChanged, ClassProposal, CoapExample, CommandSent, Credentials as CredentialsView, Device,
    DeviceChanges, DeviceKind, Metric, MqttExample, NewDevice, Point, RangeQuery, Readings, SendCommand, SetClass,
    SetCoapAddress, SetNamespaces, SetObserve, SetPlaintext,
};

use super::routes::{EVERYONE, OWNER, Route, TENANT, Who};
use super::scope::Scope;
use super::{ApiJson, ApiQuery};
use crate::auth::{ClientAddr, CurrentUser, SUBJECTS};
use crate::buckets::{Bucketer, width_for};
use crate::devices::{self, Credentials, DeviceError};
use crate::error::AppError;
use crate::ingest::recording::Choice;
use crate::reading::{valid_device_id, valid_metric};
use crate::state::AppState;
use crate::store::readings::{Keys, MAX_RAW_READINGS};
use crate::store::{ClassProposalRecord, DeviceRecord, LatestValue, Role, Session};

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/devices", Who::People(EVERYONE), |m| on(m, list)),
    Route::new("POST", "/api/devices", Who::People(SUBJECTS), |m| on(m, add)),
    Route::new("GET", "/api/devices/{id}", Who::People(EVERYONE), |m| on(m, one)),
    Route::new("PATCH", "/api/devices/{id}", Who::People(SUBJECTS), |m| on(m, change)),
    Route::new("DELETE", "/api/devices/{id}", Who::People(SUBJECTS), |m| on(m, remove)),
    Route::new("POST", "/api/devices/{id}/credentials", Who::People(SUBJECTS), |m| on(m, regenerate)),
    Route::new("PUT", "/api/devices/{id}/class", Who::People(OWNER), |m| on(m, set_class)),
    Route::new("PUT", "/api/devices/{id}/coap-address", Who::People(OWNER), |m| on(m, set_coap_address)),
    Route::new("PUT", "/api/devices/{id}/plaintext", Who::People(SUBJECTS), |m| on(m, set_plaintext)),
    Route::new("PUT", "/api/devices/{id}/bridge", Who::People(SUBJECTS), |m| on(m, set_namespaces)),
    Route::new("POST", "/api/devices/{id}/command", Who::People(SUBJECTS), |m| on(m, command)),
    Route::new("PUT", "/api/devices/{id}/observe", Who::People(OWNER), |m| on(m, set_observe)),
    Route::new("GET", "/api/class-proposals", Who::People(SUBJECTS), |m| on(m, proposals)),
    Route::new("POST", "/api/class-proposals/{id}/accept", Who::People(TENANT), |m| on(m, accept_class)),
    Route::new("POST", "/api/class-proposals/{id}/decline", Who::People(TENANT), |m| on(m, decline_class)),
    Route::new("GET", "/api/devices/{id}/metrics/{metric}/readings", Who::People(EVERYONE), |m| on(m, readings)),
];

impl From<DeviceError> for AppError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::BadName => AppError::field("name", e.to_string()),
            DeviceError::NotFound => AppError::NotFound,
            other => AppError::internal(other),
        }
    }
}

/// Who may change a device's credentials or remove it: the owner for the home's devices,
/// a tenant for their own.
fn manages(user: &Session, device: &DeviceRecord) -> bool {
    match (user.role, device.tenancy_id) {
        (Role::Owner, None) => true,
        (Role::Tenant, Some(t)) => user.tenancy_id == Some(t),
        _ => false,
    }
}

/// The devices others are behind.
pub(super) fn fronts(all: &[DeviceRecord]) -> std::collections::HashSet<String> {
    all.iter().filter_map(|d| d.bridge_id.clone()).collect()
}

/// Whether device `id` is a bridge: devices are behind it (it is among `fronts`), and it
/// said nothing of itself (`described`).
pub(super) fn is_bridge(fronts: &std::collections::HashSet<String>, id: &str, described: bool) -> bool {
    fronts.contains(id) && !described
}

/// The device `id` if the user sees it (404 otherwise, as if it did not exist).
async fn visible_device(state: &AppState, user: &Session, id: &str) -> Result<(DeviceRecord, Scope), AppError> {
    let scope = Scope::of(state, user).await?;
    let device = state.store.device(id).await?.ok_or(AppError::NotFound)?;
    if !scope.sees(&device) {
        return Err(AppError::NotFound);
    }
    Ok((device, scope))
}

async fn views(state: &AppState, user: &Session, only: Option<&str>) -> Result<Vec<Device>, AppError> {
    let scope = Scope::of(state, user).await?;
    let mut latest: Vec<LatestValue> = state.store.latest_values(only, Keys::Only(&scope.keys)).await?;
    state.ingest.unrecorded().merge_into(&mut latest, only, Keys::Only(&scope.keys));
    let ownership = state.store.ownership();
    let all = state.store.devices().await?;
    let fronts = fronts(&all);
    let mut out = Vec::new();
    for d in all {
        if only.is_some_and(|id| id != d.id) || !scope.sees(&d) {
            continue;
        }
        let metrics = latest
            .extract_if(.., |l| l.device == d.id)
            .map(|l| Metric { metric: l.metric, unit: l.unit, ts: l.ts, value: l.value, every: l.every })
            .collect();
        let manageable = manages(user, &d);
        let discovered = state.bridges.view(&d.id);
        let kind = match is_bridge(&fronts, &d.id, discovered.is_some()) {
            true => DeviceKind::Bridge,
            false => DeviceKind::Device,
        };
        let room = d.chosen.room.clone().or_else(|| discovered.as_ref().and_then(|x| x.area.clone()));
        out.push(Device {
            kind,
            room,
            favourite: d.chosen.favourite,
            hidden: d.chosen.hidden,
            labels: d.chosen.labels,
            hidden_values: d.chosen.hidden_values.into_iter().collect(),
            unrecorded: d.chosen.unrecorded,
            unrecorded_values: d.chosen.unrecorded_values.into_iter().collect(),
            rejected: if manageable { state.rejections.get(&d.id) } else { None },
            class: ownership.rule.current_class(&d.id),
            belongs_to: if d.tenancy_id.is_some() { BelongsTo::Tenant } else { BelongsTo::Owner },
            manageable,
            // Guests see readings, not where devices are on the network.
            coap_address: d.coap_address.filter(|_| user.role != Role::Guest),
            plaintext: d.plaintext,
            clear_seen: d.clear_seen_ms.filter(|_| manageable),
            // Where a bridge publishes is its manager's business.
            namespaces: if manageable { d.namespaces } else { Vec::new() },
            discovered,
            observe: if user.role == Role::Guest { Vec::new() } else { d.observe },
            bridge: d.bridge_id,
            id: d.id,
            name: d.name,
            created: d.created_ms,
            credentials_changed: d.credentials_ms,
            metrics,
        });
    }
    Ok(out)
}

async fn list(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Result<ApiJson<Vec<Device>>, AppError> {
    Ok(ApiJson(views(&state, &user, None).await?))
}

async fn one(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<ApiJson<Device>, AppError> {
    if !valid_device_id(&id) {
        return Err(AppError::NotFound);
    }
    views(&state, &user, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
}

fn credentials_view(state: &AppState, headers: &HeaderMap, creds: Credentials) -> CredentialsView {
    // The host the owner reached the UI by is the one devices on the same network can use.
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(h, |(host, _)| host))
        .filter(|h| !h.is_empty())
        .unwrap_or("HUB_ADDRESS")
        .to_owned();
    // Devices connect over TLS, given the hub's CA certificate; plain MQTT is for devices
    // marked as unable to.
    let tls_port = state.mqtts_port;
    let mqtt = tls_port.or(state.mqtt_port).map(|port| {
        let topic = format!("hearth/{}/temperature", creds.id);
        let tls = tls_port.is_some();
        let cafile = if tls { " --cafile hearth-ca.pem" } else { "" };
        let base =
            format!("mosquitto_pub -h {host} -p {port}{cafile} -u {} -P '{}' -q 1", creds.id, creds.secret.as_str());
        MqttExample {
            mosquitto_pub: format!("{base} -t {topic} -m 21.5"),
            mosquitto_pub_json: format!("{base} -t hearth/{} -m '{{\"temperature\":21.5,\"humidity\":40}}'", creds.id),
            host: host.clone(),
            port,
            tls,
            ca_url: tls.then(|| "/hearth-ca.pem".to_owned()),
            plain_port: state.mqtt_port.filter(|_| tls),
            username: creds.id.clone(),
            topic,
        }
    });
    let coap = state.coaps_port.map(|port| {
        let uri = format!("coaps://{host}:{port}/d/{}/temperature", creds.id);
        CoapExample {
            coap_client: format!(
                "coap-client-openssl -m post -u {} -k '{}' -e 21.5 {uri}",
                creds.id,
                creds.secret.as_str()
            ),
            uri,
        }
    });
    CredentialsView { id: creds.id, secret: creds.secret.to_string(), mqtt, coap }
}

/// The owner adds the home's devices; a tenant adds their own, which are theirs alone.
async fn add(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewDevice>,
) -> Result<(StatusCode, ApiJson<CredentialsView>), AppError> {
    let now = state.clock.now_ms();
    super::scope::may_act(&state, &user, now)?;
    let tenancy = user.tenancy_id;
    let household = tenancy.map_or(crate::consent::Subject::Owner, crate::consent::Subject::Tenancy);
    let held = state.store.count_devices(tenancy).await?;
    state.budgets.room_for_device(household, held, "a device added by hand").map_err(|e| AppError::field("name", e))?;
    let creds = devices::add(&state.store, &req.name, now).await?;
    if let Some(tenancy) = tenancy {
        state.store.set_device_tenancy(&creds.id, tenancy).await?;
    }
    tracing::info!(device.id = %creds.id, tenant = tenancy.is_some(), "device added");
    super::scope::audit(&state, &user, "device", addr, format!("device {} added", creds.id)).await;

    Ok((StatusCode::CREATED, ApiJson(credentials_view(&state, &headers, creds))))
}

/// The device `id` if `user` may manage it: 404 if they do not see it, 403 if they only see it.
async fn managed_device(state: &AppState, user: Session, id: &str) -> Result<DeviceRecord, AppError> {
    let (device, _) = visible_device(state, &user, id).await?;
    if !manages(&user, &device) {
        return Err(AppError::Forbidden("only the device's owner may manage it"));
    }
    Ok(device)
}

async fn regenerate(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<CredentialsView>, AppError> {
    if managed_device(&state, user.clone(), &id).await?.bridge_id.is_some() {
        return Err(AppError::Conflict(
            "a device behind a bridge has no credentials of its own: its bridge speaks for it",
        ));
    }
    let creds = devices::regenerate(&state.store, &state.device_events, &id, state.clock.now_ms()).await?;
    // Its observations go on under its new key.
    state.observers.reload(&id).await;
    tracing::info!(device.id = %id, "device credentials regenerated");
    super::scope::audit(
        &state,
        &user,
        "device",
        addr,
        format!("device {id}: new credentials; the old ones stopped working"),
    )
    .await;

    Ok(ApiJson(credentials_view(&state, &headers, creds)))
}

async fn remove(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    managed_device(&state, user.clone(), &id).await?;
    if !state.lifecycle.remove_device(&id, state.clock.now_ms()).await? {
        return Err(AppError::NotFound);
    }
    tracing::info!(device.id = %id, "device removed");
    super::scope::audit(&state, &user, "device", addr, format!("device {id} removed")).await;

    Ok(StatusCode::NO_CONTENT)
}

/// A change of class takes effect this long after it is made, so that every reading made
/// from then on is sealed by the new rule (the writer picks the change up well within it).
const CHANGE_DELAY_MS: i64 = 1000;

/// The owner classes the home's devices. The new class applies to readings made from now
/// on, never to past ones. While a tenancy runs, making a household device a building one
/// would take the tenant's readings from then on: that waits for the tenant's agreement
/// (202, a proposal in their inbox). The other way round gives the tenant readings, and
/// they are told.
async fn set_class(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetClass>,
) -> Result<(StatusCode, ApiJson<ClassChanged>), AppError> {
    let (device, _) = visible_device(&state, &user, &id).await?;
    if device.tenancy_id.is_some() {
        return Err(AppError::Forbidden("a tenant's own device is always household"));
    }
    let now = state.clock.now_ms();
    let ownership = state.store.ownership();
    let current = ownership.rule.current_class(&id);
    let running = ownership.rule.tenancies.iter().find(|s| s.contains(now)).map(|s| s.tenancy);
    let tenant = match running {
        Some(t) => state.store.tenancy(t).await?.and_then(|t| t.tenant_id),
        None => None,
    };
    if let (Some(tenancy), DeviceClass::Household, DeviceClass::Building) = (running, current, req.class) {
        let proposal = state
            .store
            .propose_class(&id, req.class, tenancy, now)
            .await?
            .ok_or(AppError::Conflict("a change of this device's class already waits for the tenant"))?;
        if let Some(tenant) = tenant {
            let message = format!(
                "The owner asks to make \"{}\" a building device: its readings would be the owner's from \
                 when you agree. Answer on the Sharing page.",
                device.name
            );
            tell(&state, tenant, message, now).await?;
        }
        tracing::info!(device.id = %id, proposal, "device class change waits for the tenant");
        let detail = format!("device {id}: asked the tenant to agree to class {}", req.class);
        state
            .audit
            .record("class", Some(crate::consent::Subject::Owner), (Some(&user.username), Some(addr)), detail)
            .await;
        return Ok((
            StatusCode::ACCEPTED,
            ApiJson(ClassChanged { class: req.class, from: None, proposal: Some(proposal) }),
        ));
    }
    let from = now + CHANGE_DELAY_MS;
    state.store.set_device_class(&id, req.class, from).await?;
    if let Some(tenant) = tenant.filter(|_| current != req.class) {
        let message = format!("\"{}\" is now a {} device.", device.name, req.class);
        tell(&state, tenant, message, now).await?;
    }
    tracing::info!(device.id = %id, class = req.class.as_str(), "device class changed");
    let detail = format!("device {id}: class {} from {from}", req.class);
    state.audit.record("class", Some(crate::consent::Subject::Owner), (Some(&user.username), Some(addr)), detail).await;
    Ok((StatusCode::OK, ApiJson(ClassChanged { class: req.class, from: Some(from), proposal: None })))
}

/// The owner says where one of the home's devices serves CoAP, for rules' CoAP actions (a
/// tenant's own devices, which the owner does not see, take MQTT commands only: letting
/// tenants write addresses would let their rules reach anything on the network). Rules name
/// the device; the address is looked up when each action runs.
async fn set_coap_address(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetCoapAddress>,
) -> Result<ApiJson<Device>, AppError> {
    visible_device(&state, &user, &id).await?;
    let address = match req.address.as_deref().map(str::trim) {
        Some(text) => {
            let addr =
                crate::automation::model::parse_coap_address(text).map_err(|e| AppError::field("address", e.0))?;
            // Without a port, the port follows the transport (5684 with DTLS, 5683 without).
            match text.parse::<std::net::SocketAddr>() {
                Ok(_) => Some(addr.to_string()),
                Err(_) => Some(addr.ip().to_string()),
            }
        }
        None => None,
    };
    if !state.store.set_device_coap(&id, address.as_deref()).await? {
        return Err(AppError::NotFound);
    }
    tracing::info!(device.id = %id, address = address.as_deref().unwrap_or("none"), "device CoAP address set");
    let detail = format!("device {id}: CoAP address {}", address.as_deref().unwrap_or("removed"));
    state
        .audit
        .record("device", Some(crate::consent::Subject::Owner), (Some(&user.username), Some(addr)), detail)
        .await;
    views(&state, &user, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
}

/// Marks whether a device may use plain MQTT. Taking the mark away ends its sessions in
/// clear at once.
async fn set_plaintext(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetPlaintext>,
) -> Result<ApiJson<Device>, AppError> {
    managed_device(&state, user.clone(), &id).await?;
    if !state.store.set_device_plaintext(&id, req.plaintext).await? {
        return Err(AppError::NotFound);
    }
    if !req.plaintext {
        let _ = state.device_events.send(devices::DeviceEvent::PlaintextRevoked(id.clone()));
    }
    tracing::info!(device.id = %id, plaintext = req.plaintext, "device plain MQTT mark set");
    let detail = match req.plaintext {
        true => format!("device {id}: marked as unable to do TLS; plain MQTT allowed"),
        false => format!("device {id}: plain MQTT no longer allowed"),
    };
    super::scope::audit(&state, &user, "device", addr, detail).await;
    views(&state, &user, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
}

/// Grants a device topic namespaces to publish in for the devices behind it (or takes them
/// away with an empty list). Its sessions end, so that it logs in again under the new grant.
async fn set_namespaces(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetNamespaces>,
) -> Result<ApiJson<Device>, AppError> {
    let device = managed_device(&state, user.clone(), &id).await?;
    if device.bridge_id.is_some() {
        return Err(AppError::field("namespaces", "a device behind a bridge cannot be a bridge"));
    }
    let mut namespaces = req.namespaces;
    namespaces.sort();
    namespaces.dedup();
    crate::bridges::check_namespaces(&namespaces).map_err(|reason| AppError::field("namespaces", reason))?;
    if !namespaces.is_empty() {
        state.bridges.may_bridge(&device).map_err(|reason| AppError::field("namespaces", reason))?;
    }
    // On an external broker the hub cannot tell who published a message: it reads each for
    // the bridge whose namespace it falls in. There only the owner grants namespaces, and no
    // two bridges' namespaces overlap (no topic falls in both), so no one can claim another's
    // devices.
    if state.config.mqtt.mode == crate::config::MqttMode::External && !namespaces.is_empty() {
        if user.role != Role::Owner {
            return Err(AppError::Forbidden("on an external broker only the owner grants bridges their namespaces"));
        }
        for other in state.store.devices().await?.iter().filter(|d| d.id != id) {
            let shared = other.namespaces.iter().find(|o| namespaces.iter().any(|n| crate::bridges::overlap(n, o)));
            if let Some(shared) = shared {
                return Err(AppError::field(
                    "namespaces",
                    format!(
                        "{shared:?} is another bridge's: on an external broker two bridges' namespaces cannot overlap"
                    ),
                ));
            }
        }
    }
    if !state.store.set_device_namespaces(&id, &namespaces).await? {
        return Err(AppError::NotFound);
    }
    state.bridges.set_namespaces(&device, &namespaces);
    let _ = state.device_events.send(devices::DeviceEvent::NamespacesChanged(id.clone()));
    tracing::info!(device.id = %id, ?namespaces, "bridge namespaces set");
    let detail = match namespaces.is_empty() {
        true => format!("device {id}: no longer a bridge"),
        false => format!("device {id}: bridge for {}", namespaces.join(", ")),
    };
    super::scope::audit(&state, &user, "device", addr, detail).await;
    views(&state, &user, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
}

/// The owner adds the CoAP resources the hub observes on a device that serves its readings
/// (as with CoAP addresses, only the owner names where on the network the hub goes).
async fn set_observe(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetObserve>,
) -> Result<ApiJson<Device>, AppError> {
    let (device, _) = visible_device(&state, &user, &id).await?;
    if device.bridge_id.is_some() {
        return Err(AppError::field("uris", "a device behind a bridge is read through its bridge"));
    }
    let mut uris: Vec<String> = req.uris.iter().map(|u| u.trim().to_owned()).collect();
    uris.sort();
    uris.dedup();
    if uris.len() > crate::ingest::coap_observe::MAX_RESOURCES {
        return Err(AppError::field(
            "uris",
            format!("at most {} resources", crate::ingest::coap_observe::MAX_RESOURCES),
        ));
    }
    for uri in &uris {
        let resource = crate::ingest::coap_observe::parse_uri(uri).map_err(|e| AppError::field("uris", e))?;
        if !resource.secure && !device.plaintext {
            return Err(AppError::field(
                "uris",
                format!("{uri}: plain CoAP only for a device marked as unable to do DTLS; use coaps://"),
            ));
        }
    }
    if !state.store.set_device_observe(&id, &uris).await? {
        return Err(AppError::NotFound);
    }
    state.observers.reload(&id).await;
    tracing::info!(device.id = %id, resources = uris.len(), "device CoAP resources set");
    let detail = format!("device {id}: observing {}", if uris.is_empty() { "nothing".into() } else { uris.join(", ") });
    super::scope::audit(&state, &user, "device", addr, detail).await;
    views(&state, &user, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
}

/// Sets one of a device's values now, as a rule's action would, for whoever may command it
/// now: the owner the home's devices, a tenant during their tenancy the household's and
/// their own. The command goes into the security log.
async fn command(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SendCommand>,
) -> Result<ApiJson<CommandSent>, AppError> {
    visible_device(&state, &user, &id).await?;
    let now = state.clock.now_ms();
    let subject =
        super::scope::subject_of(&user).ok_or(AppError::Forbidden("only the owner and tenants command devices"))?;
    let rule = &state.store.ownership().rule;
    if !rule.acts_at(subject, now) || !rule.may_command(subject, &id, now) {
        return Err(AppError::Forbidden("you may not command this device now"));
    }
    if !valid_metric(&req.metric) {
        return Err(AppError::field("metric", "use 1-64 letters, digits, '_', '.' or '-'"));
    }
    let sent = state.commands.command(&state.bridges, &id, &req.metric, &req.value, subject).await;
    let (topic, delivery) = sent.map_err(|e| match e {
        crate::automation::ActionError::Bridged(e) => AppError::field("metric", e.to_string()),
        crate::automation::ActionError::MqttOff => AppError::Conflict("MQTT is off: there is nowhere to send commands"),
        crate::automation::ActionError::OthersNamespace(_) => {
            AppError::Conflict("its command topic is inside another bridge's namespaces on the broker")
        }
        other => AppError::internal(other),
    })?;
    tracing::info!(device.id = %id, metric = %req.metric, "command sent from the API");
    super::scope::audit(&state, &user, "device", addr, format!("device {id}: {} set by hand", req.metric)).await;
    Ok(ApiJson(CommandSent { topic, delivery }))
}

/// Most values of one device people may name.
const MAX_LABELS: usize = 256;

/// The values of device `id` the viewer knows of: reported under keys they hold, or
/// announced by the device (`settable`: those it takes as commands; a device that says
/// nothing of itself, what it reported).
pub(super) async fn known_metrics(
    state: &AppState,
    scope: &Scope,
    id: &str,
    settable: bool,
) -> Result<Vec<String>, AppError> {
    let described = state.bridges.view(id).map(|d| d.values).unwrap_or_default();
    let reported: Vec<String> = match settable && !described.is_empty() {
        true => Vec::new(),
        false => {
            let mut latest = state.store.latest_values(Some(id), Keys::Only(&scope.keys)).await?;
            state.ingest.unrecorded().merge_into(&mut latest, Some(id), Keys::Only(&scope.keys));
            latest.into_iter().map(|l| l.metric).collect()
        }
    };
    let announced = described.into_iter().filter(|v| v.settable || !settable).map(|v| v.metric);
    let mut known: Vec<String> = reported.into_iter().chain(announced).collect();
    known.sort();
    known.dedup();
    Ok(known)
}

/// What people choose for a device: its name, room, favourite or hidden, names for its
/// values. Its manager chooses (the owner the home's devices, a tenant their own: a
/// tenant's choices must not outlive the tenancy on the home's devices); discovery never
/// overwrites it. It goes into the security log.
async fn change(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DeviceChanges>,
) -> Result<ApiJson<Device>, AppError> {
    if !valid_device_id(&id) {
        return Err(AppError::NotFound);
    }
    let (device, scope) = visible_device(&state, &user, &id).await?;
    if !manages(&user, &device) {
        return Err(AppError::Forbidden("only the device's manager names and places it"));
    }
    // Empty gives back what it had before people chose.
    let chosen_text = |field: &'static str, text: &str| -> Result<Option<String>, AppError> {
        let text = text.trim();
        match text.is_empty() {
            true => Ok(None),
            false if devices::valid_name(text) => Ok(Some(text.to_owned())),
            false => Err(AppError::field(field, format!("use 1-{} printable characters", devices::MAX_NAME_LEN))),
        }
    };
    let name = req.name.as_deref().map(|n| chosen_text("name", n)).transpose()?;
    let room = req.room.as_deref().map(|r| chosen_text("room", r)).transpose()?;
    let names_none = [&req.hidden_values, &req.unrecorded_values].into_iter().flatten().all(Vec::is_empty);
    let mut known = match req.labels.is_empty() && names_none {
        true => Vec::new(),
        false => known_metrics(&state, &scope, &id, false).await?,
    };
    // Values chosen before stay choosable: one never stored has no latest value after a
    // restart, and a form sending its list back must not be refused for it.
    known.extend(device.chosen.unrecorded_values.iter().chain(&device.chosen.hidden_values).cloned());
    for (field, metrics) in [("hidden_values", &req.hidden_values), ("unrecorded_values", &req.unrecorded_values)] {
        if let Some(unknown) = metrics.iter().flatten().find(|m| !known.contains(m)) {
            return Err(AppError::field(field, format!("the device has no value {unknown:?}")));
        }
    }
    let mut labels = Vec::new();
    for (metric, label) in &req.labels {
        if !known.contains(metric) {
            return Err(AppError::field("labels", format!("the device has no value {metric:?}")));
        }
        labels.push((metric.clone(), chosen_text("labels", label)?));
    }
    let mut what: Vec<&str> = Vec::new();
    for (field, given) in [
        ("name", name.is_some()),
        ("room", room.is_some()),
        ("favourite", req.favourite.is_some()),
        ("hidden", req.hidden.is_some()),
        ("names of values", !labels.is_empty()),
        ("values hidden", req.hidden_values.is_some()),
        ("recording", req.unrecorded.is_some() || req.unrecorded_values.is_some()),
    ] {
        if given {
            what.push(field);
        }
    }
    // Held from the save until the writer is told, so saves reach it in the store's order.
    let saving = state.ingest.unrecorded().saving().await;
    let mut recording = None;
    let changed = state
        .store
        .change_device_chosen(&id, |mut chosen| {
            if let Some(name) = name {
                chosen.name = name;
            }
            if let Some(room) = room {
                chosen.room = room;
            }
            chosen.favourite = req.favourite.unwrap_or(chosen.favourite);
            chosen.hidden = req.hidden.unwrap_or(chosen.hidden);
            if let Some(hidden) = req.hidden_values {
                chosen.hidden_values = hidden.into_iter().collect();
            }
            chosen.unrecorded = req.unrecorded.unwrap_or(chosen.unrecorded);
            if let Some(unrecorded) = req.unrecorded_values {
                chosen.unrecorded_values = unrecorded.into_iter().collect();
            }
            for (metric, label) in labels {
                match label {
                    Some(label) => chosen.labels.insert(metric, label),
                    None => chosen.labels.remove(&metric),
                };
            }
            if chosen.labels.len() > MAX_LABELS {
                return Err(AppError::field("labels", format!("at most {MAX_LABELS} values of a device are named")));
            }
            recording = Some(Choice { all: chosen.unrecorded, values: chosen.unrecorded_values.clone() });
            Ok(chosen)
        })
        .await?;
    if !changed {
        return Err(AppError::NotFound);
    }
    if let Some(choice) = recording {
        state.ingest.unrecorded().choose(&id, choice);
    }
    drop(saving);
    tracing::info!(device.id = %id, "device renamed or placed");
    let detail = format!("device {id}: {} chosen", what.join(", "));
    super::scope::audit(&state, &user, "device", addr, detail).await;
    views(&state, &user, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
}

/// Leaves `user` a notification from the hub.
async fn tell(state: &AppState, user: i64, message: String, now: i64) -> Result<(), AppError> {
    let note = Note { source: NotificationSource::Hub, message, rule: None, trigger: None };
    state.store.add_notification(user, &note, now).await?;
    Ok(())
}

/// A proposal as sent, with its device's name (names are sealed in the store).
async fn proposal_view(state: &AppState, p: ClassProposalRecord) -> Result<ClassProposal, AppError> {
    let device_name = state.store.device(&p.device).await?.map(|d| d.name).unwrap_or_default();
    Ok(ClassProposal {
        id: p.id,
        device: p.device,
        device_name,
        class: p.class,
        tenancy: p.tenancy,
        created: p.created,
        status: p.status,
        decided: p.decided,
    })
}

/// The owner sees every proposal; a tenant those of their tenancy.
async fn proposals(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<ClassProposal>>, AppError> {
    let only = if user.role == Role::Owner { None } else { Some(user.tenancy_id.ok_or(AppError::NotFound)?) };
    let mut out = Vec::new();
    for p in state.store.class_proposals(only).await? {
        out.push(proposal_view(&state, p).await?);
    }
    Ok(ApiJson(out))
}

async fn accept_class(
    state: State<AppState>,
    user: CurrentUser,
    id: Path<i64>,
) -> Result<ApiJson<ClassProposal>, AppError> {
    decide_class(state, user, id, true).await
}

async fn decline_class(
    state: State<AppState>,
    user: CurrentUser,
    id: Path<i64>,
) -> Result<ApiJson<ClassProposal>, AppError> {
    decide_class(state, user, id, false).await
}

/// The tenant agrees (the class changes from a moment from now) or declines; the owner is told.
async fn decide_class(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
    accept: bool,
) -> Result<ApiJson<ClassProposal>, AppError> {
    let proposal = state.store.class_proposal(id).await?.filter(|p| Some(p.tenancy) == user.tenancy_id);
    let proposal = proposal.ok_or(AppError::NotFound)?;
    let now = state.clock.now_ms();
    if !state.store.decide_class(id, accept, now, now + CHANGE_DELAY_MS).await? {
        return Err(AppError::Conflict("this proposal was already answered"));
    }
    if let Some(owner) = state.store.owner_id().await? {
        let answer = if accept { "agreed" } else { "declined" };
        let name = state.store.device(&proposal.device).await?.map(|d| d.name).unwrap_or_default();
        let message = format!("The tenant {answer} to make \"{name}\" a {} device.", proposal.class);
        tell(&state, owner, message, now).await?;
    }
    tracing::info!(proposal = id, accept, "device class proposal answered");
    let decided = state.store.class_proposal(id).await?.ok_or(AppError::NotFound)?;
    Ok(ApiJson(proposal_view(&state, decided).await?))
}

const MAX_POINTS: usize = 10_000;

async fn readings(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((id, metric)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<ApiJson<Readings>, AppError> {
    if !valid_device_id(&id) || !valid_metric(&metric) {
        return Err(AppError::NotFound);
    }
    AppError::times(&[("from", q.from), ("to", q.to)])?;
    let (_, scope) = visible_device(&state, &user, &id).await?;
    let to = q.to.unwrap_or_else(|| state.clock.now_ms() + 1);
    let from = q.from.unwrap_or(to.saturating_sub(24 * 3600 * 1000));
    if from >= to {
        return Err(AppError::field("from", "must be before `to`"));
    }
    if q.points.is_some_and(|p| p == 0 || p > MAX_POINTS) {
        return Err(AppError::field("points", format!("must be 1-{MAX_POINTS}")));
    }
    let keys = Keys::Only(&scope.keys);
    // Downsampling goes through the whole range a page at a time, holding only buckets;
    // raw answers stop at the limit.
    if let Some(n) = q.points {
        let mut buckets = Bucketer::new(width_for(from, to, n));
        let found = state.store.each_reading(&id, &metric, (from, to), keys, |ts, value| {
            buckets.push(ts, &value);
            true
        });
        if !found.await? {
            return Err(AppError::NotFound);
        }
        let buckets = Some(buckets.finish());
        return Ok(ApiJson(Readings { device: id, metric, from, to, readings: None, buckets, truncated: false }));
    }
    let found = state.store.readings(&id, &metric, (from, to), MAX_RAW_READINGS, keys).await?;
    let (rows, truncated) = found.ok_or(AppError::NotFound)?;
    let readings = Some(rows.into_iter().map(|(ts, value)| Point { ts, value }).collect());
    Ok(ApiJson(Readings { device: id, metric, from, to, readings, buckets: None, truncated }))
}
