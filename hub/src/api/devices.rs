//! Devices: list with latest values, add (credentials shown once), regenerate credentials,
//! remove, and the readings of one metric over a time range.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header::HOST};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiQuery};
use crate::auth::CurrentUser;
use crate::clock::now_ms;
use crate::devices::{self, Credentials, DeviceError};
use crate::error::AppError;
use crate::ingest::Rejection;
use crate::reading::{Value, valid_device_id, valid_metric};
use crate::state::AppState;
use crate::store::{Bucket, LatestValue, readings::MAX_RAW_READINGS, readings::downsample};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/devices", get(list).post(add))
        .route("/api/devices/{id}", get(one).delete(remove))
        .route("/api/devices/{id}/credentials", post(regenerate))
        .route("/api/devices/{id}/metrics/{metric}/readings", get(readings))
}

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
    metrics: Vec<MetricView>,
    /// The last refused message, if any, with the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<Rejection>,
}

async fn views(state: &AppState, only: Option<&str>) -> Result<Vec<DeviceView>, AppError> {
    let mut latest: Vec<LatestValue> = state.store.latest_values(only).await?;
    let mut out = Vec::new();
    for d in state.store.devices().await? {
        if only.is_some_and(|id| id != d.id) {
            continue;
        }
        let metrics = latest
            .extract_if(.., |l| l.device == d.id)
            .map(|l| MetricView { metric: l.metric, unit: l.unit, ts: l.ts, value: l.value })
            .collect();
        out.push(DeviceView {
            rejected: state.rejections.get(&d.id),
            id: d.id,
            name: d.name,
            created: d.created_ms,
            credentials_changed: d.credentials_ms,
            metrics,
        });
    }
    Ok(out)
}

async fn list(State(state): State<AppState>, _: CurrentUser) -> Result<ApiJson<Vec<DeviceView>>, AppError> {
    Ok(ApiJson(views(&state, None).await?))
}

async fn one(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(id): Path<String>,
) -> Result<ApiJson<DeviceView>, AppError> {
    if !valid_device_id(&id) {
        return Err(AppError::NotFound);
    }
    views(&state, Some(&id)).await?.pop().map(ApiJson).ok_or(AppError::NotFound)
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

async fn add(
    State(state): State<AppState>,
    _: CurrentUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AddDevice>,
) -> Result<(StatusCode, ApiJson<CredentialsView>), AppError> {
    let creds = devices::add(&state.store, &req.name, now_ms()).await?;
    tracing::info!(device.id = %creds.id, "device added");
    Ok((StatusCode::CREATED, ApiJson(credentials_view(&state, &headers, creds))))
}

async fn regenerate(
    State(state): State<AppState>,
    _: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<CredentialsView>, AppError> {
    let creds = devices::regenerate(&state.store, &state.device_events, &id, now_ms()).await?;
    tracing::info!(device.id = %id, "device credentials regenerated");
    Ok(ApiJson(credentials_view(&state, &headers, creds)))
}

async fn remove(State(state): State<AppState>, _: CurrentUser, Path(id): Path<String>) -> Result<StatusCode, AppError> {
    devices::remove(&state.store, &state.device_events, &id, now_ms()).await?;
    tracing::info!(device.id = %id, "device removed");
    Ok(StatusCode::NO_CONTENT)
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
    _: CurrentUser,
    Path((id, metric)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<ApiJson<ReadingsView>, AppError> {
    if !valid_device_id(&id) || !valid_metric(&metric) {
        return Err(AppError::NotFound);
    }
    let to = q.to.unwrap_or_else(|| now_ms() + 1);
    let from = q.from.unwrap_or(to.saturating_sub(24 * 3600 * 1000));
    if from >= to {
        return Err(AppError::field("from", "must be before `to`"));
    }
    if q.points.is_some_and(|p| p == 0 || p > MAX_POINTS) {
        return Err(AppError::field("points", format!("must be 1-{MAX_POINTS}")));
    }
    // Downsampling reads the whole range; raw answers stop at the limit.
    let limit = if q.points.is_some() { usize::MAX } else { MAX_RAW_READINGS };
    let (rows, truncated) = state.store.readings(&id, &metric, from, to, limit).await?.ok_or(AppError::NotFound)?;
    let (readings, buckets) = match q.points {
        Some(n) => (None, Some(downsample(&rows, from, to, n))),
        None => (Some(rows.into_iter().map(|(ts, value)| Point { ts, value }).collect()), None),
    };
    Ok(ApiJson(ReadingsView { device: id, metric, from, to, readings, buckets, truncated }))
}
