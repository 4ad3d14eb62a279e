//! The recipient's side, under `/api/share`, authenticated with client credentials (HTTP
//! Basic): file data requests, see their fate, and read shared data. Every read goes
//! through [`Permit::check`] and is written to the access log before data is returned.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::on;
use hearth_model::consent::{
    Addressee, DataQuery, DataRequest, Grant, LogKind, NewRequest, Receipt, RecipientIdentity, SharedData, SharedSeries,
};
use serde_json::json;

use super::consent::{grant_view, receipts_of};
use super::routes::{Route, Who};
use super::scope::subject_of;
use super::{ApiJson, ApiQuery};
use crate::auth::CurrentRecipient;
use crate::buckets::Bucket;
use crate::consent::{GrantRecord, MIN_SHARED_READINGS, Permit, Refusal, check_terms};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::NewLogEntry;

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/share/me", Who::Recipient, |m| on(m, me)),
    Route::new("GET", "/api/share/requests", Who::Recipient, |m| on(m, requests)),
    Route::new("POST", "/api/share/requests", Who::Recipient, |m| on(m, file_request)),
    Route::new("GET", "/api/share/grants", Who::Recipient, |m| on(m, grants)),
    Route::new("GET", "/api/share/grants/{id}/data", Who::Recipient, |m| on(m, data)),
    Route::new("GET", "/api/share/grants/{id}/receipts", Who::Recipient, |m| on(m, receipts)),
];

async fn me(CurrentRecipient(r): CurrentRecipient) -> ApiJson<RecipientIdentity> {
    ApiJson(RecipientIdentity { id: r.id, name: r.name, kind: r.kind })
}

async fn file_request(
    State(state): State<AppState>,
    CurrentRecipient(r): CurrentRecipient,
    ApiJson(req): ApiJson<NewRequest>,
) -> Result<(StatusCode, ApiJson<DataRequest>), AppError> {
    check_terms(&req.terms).map_err(|(field, problem)| AppError::field(field, problem))?;
    let now = state.clock.now_ms();
    let subject = match req.to {
        None => r.registered_by,
        Some(Addressee::Owner) => {
            state.store.owner_id().await?.ok_or(AppError::Conflict("this hub has no owner yet"))?
        }
        Some(Addressee::Tenant) => {
            let current = state.store.tenancies().await?.into_iter().find(|t| {
                t.shredded.is_none() && t.start <= now && t.end.is_none_or(|end| end > now) && t.tenant_id.is_some()
            });
            current.and_then(|t| t.tenant_id).ok_or(AppError::Conflict("there is no current tenant"))?
        }
    };
    let id = state.store.create_request(&r.id, subject, &req.terms, now).await?;
    tracing::info!(request = id, recipient = %r.id, "data request filed");
    let stored = state.store.request(id).await?.ok_or_else(|| AppError::internal("request vanished"))?;
    Ok((StatusCode::CREATED, ApiJson(stored.into())))
}

async fn requests(
    State(state): State<AppState>,
    CurrentRecipient(r): CurrentRecipient,
) -> Result<ApiJson<Vec<DataRequest>>, AppError> {
    let requests = state.store.requests(None, Some(&r.id)).await?;
    Ok(ApiJson(requests.into_iter().map(DataRequest::from).collect()))
}

async fn grants(
    State(state): State<AppState>,
    CurrentRecipient(r): CurrentRecipient,
) -> Result<ApiJson<Vec<Grant>>, AppError> {
    let now = state.clock.now_ms();
    let mut out = Vec::new();
    for g in state.store.grants(None, Some(&r.id)).await? {
        out.push(grant_view(&state, g, now).await?);
    }
    Ok(ApiJson(out))
}

/// The grant `id` if it was given to this recipient (404 otherwise).
async fn my_grant(state: &AppState, recipient: &str, id: &str) -> Result<GrantRecord, AppError> {
    state.store.grant(id).await?.filter(|g| g.recipient_id == recipient).ok_or(AppError::NotFound)
}

async fn receipts(
    State(state): State<AppState>,
    CurrentRecipient(r): CurrentRecipient,
    Path(id): Path<String>,
) -> Result<ApiJson<Vec<Receipt>>, AppError> {
    let g = my_grant(&state, &r.id, &id).await?;
    Ok(ApiJson(receipts_of(&state, &g.id).await?))
}

/// Most rows one read may return; ask for a shorter range beyond it.
const MAX_ROWS: usize = 200_000;

/// Shared data: only the granting subject's readings, only the granted metrics, only inside
/// the granted window, aggregated on the hub at the granted granularity, and only while the
/// grant is active. A revoked or expired grant answers 403.
async fn data(
    State(state): State<AppState>,
    CurrentRecipient(r): CurrentRecipient,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DataQuery>,
) -> Result<ApiJson<SharedData>, AppError> {
    AppError::times(&[("from", q.from), ("to", q.to)])?;
    let g = my_grant(&state, &r.id, &id).await?;
    let now = state.clock.now_ms();
    let subject = state.store.user_session(g.subject_id).await?;
    let keys = subject.as_ref().and_then(subject_of).map(|s| state.store.keys_of(s)).unwrap_or_default();
    let permit = Permit::check(&g, &r.id, keys, now).map_err(|refusal| match refusal {
        Refusal::NotYours => AppError::NotFound,
        Refusal::Revoked => AppError::Forbidden("this grant was revoked"),
        Refusal::Expired => AppError::Forbidden("this grant has expired"),
    })?;
    let (from, to) = permit.clamp(q.from, q.to).unwrap_or((0, 0));
    let mut series = Vec::new();
    let mut rows = 0usize;
    if from < to {
        for s in state.store.series_with_keys(permit.keys()).await? {
            if !permit.covers(&s.metric) || q.metric.as_ref().is_some_and(|m| *m != s.metric) {
                continue;
            }
            // Raw readings stop at the rows left; aggregates are summed a page at a time.
            let too_many = || AppError::field("to", format!("more than {MAX_ROWS} rows; ask for a shorter range"));
            let one = (s.device.as_str(), s.metric.as_str());
            let (raw, aggregates) = match permit.granularity().width_ms() {
                None => {
                    let (readings, more) =
                        state.store.shared_readings(&permit, one, (from, to), MAX_ROWS - rows).await?;
                    if more {
                        return Err(too_many());
                    }
                    if readings.is_empty() {
                        continue;
                    }
                    (Some(readings), None)
                }
                Some(width) => {
                    let aggregates = state.store.shared_buckets(&permit, one, (from, to), width).await?;
                    let aggregates = aggregates
                        .into_iter()
                        .filter(|b| b.count >= MIN_SHARED_READINGS)
                        .map(|b| Bucket { last: None, ..b });
                    (None, Some(aggregates.collect::<Vec<_>>()))
                }
            };
            if aggregates.as_ref().is_some_and(Vec::is_empty) {
                continue; // no buckets, or only sparse ones: as if there were none
            }
            rows += raw.as_ref().map_or(0, Vec::len) + aggregates.as_ref().map_or(0, Vec::len);
            if rows > MAX_ROWS {
                return Err(too_many());
            }
            series.push(SharedSeries { device: s.device, metric: s.metric, unit: s.unit, readings: raw, aggregates });
        }
    }
    let metrics: Vec<&str> = series.iter().map(|s| s.metric.as_str()).collect();
    let entry = NewLogEntry {
        ts: now,
        kind: LogKind::Read,
        subject_id: permit.subject_id(),
        recipient_id: permit.recipient_id(),
        grant_id: Some(permit.grant_id()),
        detail: json!({ "metrics": metrics, "from": from, "to": to, "rows": rows, "granularity": permit.granularity() }),
    };
    state.store.log_access(&entry).await?;
    Ok(ApiJson(SharedData { grant: g.id, granularity: permit.granularity(), from, to, series, rows }))
}
