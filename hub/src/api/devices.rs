//! Devices: list with latest values, add (credentials shown once), regenerate credentials,
//! remove, and the readings of one metric over a time range.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header::HOST};
use axum::routing::on;
use serde::{Deserialize, Serialize};

use super::routes::{EVERYONE, OWNER, Route, Who};
use super::scope::Scope;
use super::{ApiJson, ApiQuery};
use crate::auth::{CurrentUser, SUBJECTS};
use crate::buckets::{Bucket, buckets, width_for};
use crate::consent::DeviceClass;
use crate::devices::{self, Credentials, DeviceError};
use crate::error::AppError;
use crate::ingest::Rejection;
use crate::reading::{Value, valid_device_id, valid_metric};
use crate::state::AppState;
use crate::store::readings::{Keys, MAX_RAW_READINGS};
use crate::store::{DeviceRecord, LatestValue, Role, Session};

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/devices", Who::People(EVERYONE), |m| on(m, list)),
    Route::new("POST", "/api/devices", Who::People(SUBJECTS), |m| on(m, add)),
    Route::new("GET", "/api/devices/{id}", Who::People(EVERYONE), |m| on(m, one)),
    Route::new("DELETE", "/api/devices/{id}", Who::People(SUBJECTS), |m| on(m, remove)),
    Route::new("POST", "/api/devices/{id}/credentials", Who::People(SUBJECTS), |m| on(m, regenerate)),
    Route::new("PUT", "/api/devices/{id}/class", Who::People(OWNER), |m| on(m, set_class)),
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

#[derive(Serialize)]
struct MetricView {
    metric: String,
    unit: Option<String>,
    ts: i64,
    value: Value,
}

#[derive(Serialize)]
struct DeviceView {
    id: String,
    name: String,
    created: i64,
    credentials_changed: i64,
    /// `household` or `building`, as the owner classed it (a tenant's own devices are
    /// always household).
    class: DeviceClass,
    /// Whose device it is: `owner` or `tenant`.
    belongs_to: &'static str,
    /// Whether the viewer may change its credentials or remove it.
    manageable: bool,
    metrics: Vec<MetricView>,
    /// The last refused message, if any, with the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<Rejection>,
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

/// The device `id` if the user sees it (404 otherwise, as if it did not exist).
async fn visible_device(state: &AppState, user: &Session, id: &str) -> Result<(DeviceRecord, Scope), AppError> {
    let scope = Scope::of(state, user).await?;
    let device = state.store.device(id).await?.ok_or(AppError::NotFound)?;
    if !scope.sees(&device) {
        return Err(AppError::NotFound);
    }
    Ok((device, scope))
}

async fn views(state: &AppState, user: &Session, only: Option<&str>) -> Result<Vec<DeviceView>, AppError> {
    let scope = Scope::of(state, user).await?;
    let mut latest: Vec<LatestValue> = state.store.latest_values(only, Keys::Only(&scope.keys)).await?;
    let ownership = state.store.ownership();
    let mut out = Vec::new();
    for d in state.store.devices().await? {
        if only.is_some_and(|id| id != d.id) || !scope.sees(&d) {
            continue;
        }
        let metrics = latest
            .extract_if(.., |l| l.device == d.id)
            .map(|l| MetricView { metric: l.metric, unit: l.unit, ts: l.ts, value: l.value })
            .collect();
        let manageable = manages(user, &d);
        out.push(DeviceView {
            rejected: if manageable { state.rejections.get(&d.id) } else { None },
            class: ownership.rule.current_class(&d.id),
            belongs_to: if d.tenancy_id.is_some() { "tenant" } else { "owner" },
            manageable,
            id: d.id,
            name: d.name,
            created: d.created_ms,
            credentials_changed: d.credentials_ms,
            metrics,
        });
    }
    Ok(out)
}

async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<DeviceView>>, AppError> {
    Ok(ApiJson(views(&state, &user, None).await?))
}

async fn one(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<ApiJson<DeviceView>, AppError> {
    if !valid_device_id(&id) {
        return Err(AppError::NotFound);
    }
    views(&state, &user, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDevice {
    name: String,
}

/// Credentials, shown once, with commands to paste.
#[derive(Serialize)]
struct CredentialsView {
    id: String,
    secret: String,
    mqtt: Option<MqttExample>,
    coap: Option<CoapExample>,
}

#[derive(Serialize)]
struct CoapExample {
    uri: String,
    coap_client: String,
}

#[derive(Serialize)]
struct MqttExample {
    host: String,
    port: u16,
    username: String,
    topic: String,
    mosquitto_pub: String,
    mosquitto_pub_json: String,
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
    let mqtt = state.mqtt_port.map(|port| {
        let topic = format!("hearth/{}/temperature", creds.id);
        let base = format!("mosquitto_pub -h {host} -p {port} -u {} -P '{}' -q 1", creds.id, creds.secret.as_str());
        MqttExample {
            mosquitto_pub: format!("{base} -t {topic} -m 21.5"),
            mosquitto_pub_json: format!("{base} -t hearth/{} -m '{{\"temperature\":21.5,\"humidity\":40}}'", creds.id),
            host: host.clone(),
            port,
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
    headers: HeaderMap,
    ApiJson(req): ApiJson<AddDevice>,
) -> Result<(StatusCode, ApiJson<CredentialsView>), AppError> {
    let now = state.clock.now_ms();
    let tenancy = match user.tenancy_id {
        Some(id) => {
            let t = state.store.tenancy(id).await?.ok_or(AppError::Forbidden("your tenancy is gone"))?;
            if t.end.is_some_and(|end| end <= now) {
                return Err(AppError::Forbidden("your tenancy has ended"));
            }
            Some(id)
        }
        None => None,
    };
    let creds = devices::add(&state.store, &req.name, now).await?;
    if let Some(tenancy) = tenancy {
        state.store.set_device_tenancy(&creds.id, tenancy).await?;
    }
    tracing::info!(device.id = %creds.id, tenant = tenancy.is_some(), "device added");
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
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<CredentialsView>, AppError> {
    managed_device(&state, user, &id).await?;
    let creds = devices::regenerate(&state.store, &state.device_events, &id, state.clock.now_ms()).await?;
    tracing::info!(device.id = %id, "device credentials regenerated");
    Ok(ApiJson(credentials_view(&state, &headers, creds)))
}

async fn remove(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    managed_device(&state, user, &id).await?;
    devices::remove(&state.store, &state.device_events, &id, state.clock.now_ms()).await?;
    tracing::info!(device.id = %id, "device removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetClass {
    class: DeviceClass,
}

/// A change of class takes effect this long after it is made, so that every reading made
/// from then on is sealed by the new rule (the writer picks the change up well within it).
const CHANGE_DELAY_MS: i64 = 1000;

/// The owner classes the home's devices. The new class applies to readings made from now
/// on, never to past ones.
async fn set_class(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetClass>,
) -> Result<ApiJson<serde_json::Value>, AppError> {
    let (device, _) = visible_device(&state, &user, &id).await?;
    if device.tenancy_id.is_some() {
        return Err(AppError::Forbidden("a tenant's own device is always household"));
    }
    let from = state.clock.now_ms() + CHANGE_DELAY_MS;
    state.store.set_device_class(&id, req.class, from).await?;
    tracing::info!(device.id = %id, class = req.class.as_str(), "device class changed");
    Ok(ApiJson(serde_json::json!({ "class": req.class, "from": from })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    /// Start, ms since the epoch (inclusive). Default: 24 h before `to`.
    from: Option<i64>,
    /// End, ms since the epoch (exclusive). Default: now.
    to: Option<i64>,
    /// Downsample to at most this many buckets with min/avg/max.
    points: Option<usize>,
}

#[derive(Serialize)]
struct Point {
    ts: i64,
    value: Value,
}

#[derive(Serialize)]
struct ReadingsView {
    device: String,
    metric: String,
    from: i64,
    to: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    readings: Option<Vec<Point>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buckets: Option<Vec<Bucket>>,
    /// True if the range held more than the hub returns raw; ask for `points`.
    truncated: bool,
}

const MAX_POINTS: usize = 10_000;

async fn readings(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((id, metric)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<ApiJson<ReadingsView>, AppError> {
    if !valid_device_id(&id) || !valid_metric(&metric) {
        return Err(AppError::NotFound);
    }
    let (_, scope) = visible_device(&state, &user, &id).await?;
    let to = q.to.unwrap_or_else(|| state.clock.now_ms() + 1);
    let from = q.from.unwrap_or(to.saturating_sub(24 * 3600 * 1000));
    if from >= to {
        return Err(AppError::field("from", "must be before `to`"));
    }
    if q.points.is_some_and(|p| p == 0 || p > MAX_POINTS) {
        return Err(AppError::field("points", format!("must be 1-{MAX_POINTS}")));
    }
    // Downsampling reads the whole range; raw answers stop at the limit.
    let limit = if q.points.is_some() { usize::MAX } else { MAX_RAW_READINGS };
    let (rows, truncated) = state
        .store
        .readings(&id, &metric, (from, to), limit, Keys::Only(&scope.keys))
        .await?
        .ok_or(AppError::NotFound)?;
    let (readings, buckets) = match q.points {
        Some(n) => (None, Some(buckets(&rows, width_for(from, to, n)))),
        None => (Some(rows.into_iter().map(|(ts, value)| Point { ts, value }).collect()), None),
    };
    Ok(ApiJson(ReadingsView { device: id, metric, from, to, readings, buckets, truncated }))
}
