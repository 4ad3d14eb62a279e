//! The data subject's side of consent: the inbox of requests (grant, narrow, deny), grants
//! and their receipts, revocation, the access log and its verification, the value ledger,
//! and export of everything that is theirs. Plus the published receipt key.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use hearth_model::consent::{
    Category, Checkpoint, DataRequest, Grant, LedgerLine, LogEntry, LogKind, Receipt, ReceiptEvent, RequestStatus,
    Verification, VerifyQuery,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::routes::{Route, Who};
use super::scope::{Scope, subject_of};
use super::{ApiJson, ApiQuery};
use crate::auth::{ClientAddr, CurrentUser, SUBJECTS};
use crate::consent::{self, CATEGORIES, GrantRecord, GrantStatus, Narrowing, log};
use crate::error::AppError;
use crate::reading::Value;
use crate::sharing::{self, ReceiptContext};
use crate::state::AppState;
use crate::store::readings::Keys;
use crate::store::{LogRow, ReceiptRecord, RequestRecord, Session};

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/consent/key", Who::Anyone, |m| on(m, public_key)),
    Route::new("GET", "/api/consent/categories", Who::Anyone, |m| on(m, categories)),
    Route::new("GET", "/api/consent/requests", Who::People(SUBJECTS), |m| on(m, requests)),
    Route::new("POST", "/api/consent/requests/{id}/grant", Who::People(SUBJECTS), |m| on(m, grant)),
    Route::new("POST", "/api/consent/requests/{id}/deny", Who::People(SUBJECTS), |m| on(m, deny)),
    Route::new("GET", "/api/consent/grants", Who::People(SUBJECTS), |m| on(m, grants)),
    Route::new("POST", "/api/consent/grants/{id}/revoke", Who::People(SUBJECTS), |m| on(m, revoke)),
    Route::new("GET", "/api/consent/grants/{id}/receipts", Who::People(SUBJECTS), |m| on(m, receipts)),
    Route::new("GET", "/api/consent/access-log", Who::People(SUBJECTS), |m| on(m, access_log)),
    Route::new("GET", "/api/consent/access-log/verify", Who::People(SUBJECTS), |m| on(m, verify_log)),
    Route::new("GET", "/api/consent/access-log/checkpoint", Who::People(SUBJECTS), |m| on(m, checkpoint)),
    Route::new("GET", "/api/consent/ledger", Who::People(SUBJECTS), |m| on(m, ledger)),
    Route::new("GET", "/api/export", Who::People(SUBJECTS), |m| on(m, export)),
];

/// The hub's receipt-signing public key (no login needed: recipients and anyone holding a
/// receipt must be able to check it offline).
async fn public_key(State(state): State<AppState>) -> ApiJson<serde_json::Value> {
    ApiJson(state.signer.published())
}

async fn categories() -> ApiJson<Vec<Category>> {
    let list = CATEGORIES.iter().map(|(name, label, metrics)| Category {
        name: (*name).to_owned(),
        label: (*label).to_owned(),
        metrics: metrics.iter().map(|m| (*m).to_owned()).collect(),
    });
    ApiJson(list.collect())
}

impl From<RequestRecord> for DataRequest {
    fn from(r: RequestRecord) -> Self {
        DataRequest {
            id: r.id,
            recipient_id: r.recipient_id,
            recipient: r.recipient,
            recipient_kind: r.recipient_kind,
            subject_id: r.subject_id,
            terms: r.terms,
            created: r.created,
            status: r.status,
            decided: r.decided,
        }
    }
}

impl From<ReceiptRecord> for Receipt {
    fn from(r: ReceiptRecord) -> Self {
        Receipt { id: r.id, grant_id: r.grant_id, event: r.event, created: r.created, jws: r.jws }
    }
}

/// A grant's receipts, as sent.
pub(super) async fn receipts_of(state: &AppState, grant: &str) -> Result<Vec<Receipt>, AppError> {
    Ok(state.store.receipts_of(grant).await?.into_iter().map(Receipt::from).collect())
}

async fn requests(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<DataRequest>>, AppError> {
    let requests = state.store.requests(Some(user.user_id), None).await?;
    Ok(ApiJson(requests.into_iter().map(DataRequest::from).collect()))
}

/// The request `id` if it is addressed to `user` (404 otherwise).
async fn my_request(state: &AppState, user: &Session, id: i64) -> Result<RequestRecord, AppError> {
    state.store.request(id).await?.filter(|r| r.subject_id == user.user_id).ok_or(AppError::NotFound)
}

/// The grant `id` if `user` gave it (404 otherwise).
async fn my_grant(state: &AppState, user: &Session, id: &str) -> Result<GrantRecord, AppError> {
    state.store.grant(id).await?.filter(|g| g.subject_id == user.user_id).ok_or(AppError::NotFound)
}

pub(super) async fn grant_view(state: &AppState, g: GrantRecord, now: i64) -> Result<Grant, AppError> {
    let recipient = state.store.recipient_any(&g.recipient_id).await?.map(|r| r.name).unwrap_or_default();
    Ok(Grant {
        status: g.status(now),
        receipts: receipts_of(state, &g.id).await?,
        id: g.id,
        request_id: g.request_id,
        recipient_id: g.recipient_id,
        recipient,
        terms: g.terms,
        created: g.created_ms,
        expires: g.expires_ms,
        revoked: g.revoked_ms,
    })
}

/// Grants the request, as asked or narrowed, and signs a receipt.
async fn grant(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<i64>,
    ApiJson(narrowing): ApiJson<Narrowing>,
) -> Result<(StatusCode, ApiJson<Grant>), AppError> {
    let request = my_request(&state, &user, id).await?;
    if request.status != RequestStatus::Pending {
        return Err(AppError::Conflict("this request was already decided"));
    }
    let terms =
        consent::narrow(&request.terms, &narrowing).map_err(|(field, problem)| AppError::field(field, problem))?;
    let recipient =
        state.store.recipient(&request.recipient_id).await?.ok_or(AppError::Conflict("that recipient was removed"))?;
    let now = state.clock.now_ms();
    let g = GrantRecord {
        id: sharing::new_id("g")?,
        request_id: request.id,
        recipient_id: request.recipient_id.clone(),
        subject_id: user.user_id,
        expires_ms: sharing::expiry(&terms, now),
        terms,
        created_ms: now,
        revoked_ms: None,
    };
    let ctx = ReceiptContext {
        jurisdiction: &state.config.consent.jurisdiction,
        subject_name: &user.username,
        recipient: &recipient,
    };
    let receipt = sharing::make_receipt(&state.signer, &ctx, &g, ReceiptEvent::Granted, now)?;
    if !state.store.create_grant(&g, &receipt).await? {
        return Err(AppError::Conflict("this request was already decided"));
    }
    tracing::info!(grant = %g.id, recipient = %g.recipient_id, "data request granted");
    super::scope::audit(&state, &user, "grant", addr, format!("grant {} to recipient {}", g.id, g.recipient_id)).await;

    Ok((StatusCode::CREATED, ApiJson(grant_view(&state, g, now).await?)))
}

async fn deny(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    let request = my_request(&state, &user, id).await?;
    if !state.store.deny_request(&request, state.clock.now_ms()).await? {
        return Err(AppError::Conflict("this request was already decided"));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn grants(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<Grant>>, AppError> {
    let now = state.clock.now_ms();
    let mut out = Vec::new();
    for g in state.store.grants(Some(user.user_id), None).await? {
        out.push(grant_view(&state, g, now).await?);
    }
    Ok(ApiJson(out))
}

/// Revokes a grant: the recipient's next read is refused. Recorded with a signed receipt.
async fn revoke(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
) -> Result<ApiJson<Receipt>, AppError> {
    let g = my_grant(&state, &user, &id).await?;
    let now = state.clock.now_ms();
    if g.status(now) != GrantStatus::Active {
        return Err(AppError::Conflict("this grant has already ended"));
    }
    let recipient = state.store.recipient_any(&g.recipient_id).await?.ok_or(AppError::NotFound)?;
    let ctx = ReceiptContext {
        jurisdiction: &state.config.consent.jurisdiction,
        subject_name: &user.username,
        recipient: &recipient,
    };
    let ended = GrantRecord { revoked_ms: Some(now), ..g.clone() };
    let receipt = sharing::make_receipt(&state.signer, &ctx, &ended, ReceiptEvent::Revoked, now)?;
    if !state.store.end_grant(&g, &receipt, now).await? {
        return Err(AppError::Conflict("this grant has already ended"));
    }
    tracing::info!(grant = %g.id, "grant revoked");
    super::scope::audit(&state, &user, "grant", addr, format!("grant {} revoked", g.id)).await;

    Ok(ApiJson(receipt.into()))
}

async fn receipts(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<ApiJson<Vec<Receipt>>, AppError> {
    let g = my_grant(&state, &user, &id).await?;
    Ok(ApiJson(receipts_of(&state, &g.id).await?))
}

/// An access log row as its subject sees it. A kind the hub does not know means the row
/// was changed behind its back: that is an error here, and `verify` says where.
fn log_entry(row: LogRow, recipient: String) -> Result<LogEntry, AppError> {
    let e = row.entry;
    let kind: LogKind = e.kind.parse().map_err(AppError::internal)?;
    Ok(LogEntry {
        detail_json: serde_json::from_str(&e.detail).unwrap_or_default(),
        hash: row.hash.iter().map(|b| format!("{b:02x}")).collect(),
        seq: e.seq,
        ts: e.ts,
        kind,
        subject_id: e.subject_id,
        recipient_id: e.recipient_id,
        recipient,
        grant_id: e.grant_id,
        detail: e.detail,
    })
}

/// The subject's part of the access log: every read of their data and every decision.
async fn access_log(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<LogEntry>>, AppError> {
    let mut names = std::collections::HashMap::new();
    let mut out = Vec::new();
    for row in state.store.access_log(Some(user.user_id)).await? {
        let id = row.entry.recipient_id.clone();
        if !names.contains_key(&id) {
            let name = state.store.recipient_any(&id).await?.map(|r| r.name).unwrap_or_default();
            names.insert(id.clone(), name);
        }
        out.push(log_entry(row, names.get(&id).cloned().unwrap_or_default())?);
    }
    Ok(ApiJson(out))
}

/// Checks the whole chain (all subjects): tampering with any entry is found; and, given a
/// checkpoint the subject kept, that the log still holds what it held then (a chain
/// rewritten and re-hashed from end to end passes the first check, not this one).
async fn verify_log(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<VerifyQuery>,
) -> Result<ApiJson<Verification>, AppError> {
    let checkpoint = match q.checkpoint {
        Some(jws) => Some(
            log::Checkpoint::read(&jws, &state.signer.public_key())
                .map_err(|e| AppError::field("checkpoint", e.to_string()))?,
        ),
        None => None,
    };
    let check = state.store.verify_access_log(checkpoint.as_ref()).await?;
    let held = check.checkpoint.as_ref().map(Result::is_ok);
    let answer = match (check.chain, check.checkpoint) {
        (Err(broken), _) => Verification {
            ok: false,
            checkpoint: held,
            entries: None,
            error: Some(broken.to_string()),
            seq: Some(broken.seq),
        },
        (Ok(_), Some(Err(problem))) => {
            Verification { ok: false, checkpoint: held, entries: None, error: Some(problem.to_string()), seq: None }
        }
        (Ok(n), _) => Verification { ok: true, checkpoint: held, entries: Some(n as u64), error: None, seq: None },
    };
    Ok(ApiJson(answer))
}

/// The log's head, signed, for the subject to keep and hold the hub to later.
async fn checkpoint(State(state): State<AppState>) -> Result<ApiJson<Checkpoint>, AppError> {
    let (seq, hash) = state.store.access_log_head().await?.unwrap_or((0, log::GENESIS.to_vec()));
    let signed = log::Checkpoint { seq, hash, at: state.clock.now_ms() };
    let jws = signed.sign(&state.signer);
    let hash = signed.hash.iter().map(|b| format!("{b:02x}")).collect();
    Ok(ApiJson(Checkpoint { seq, hash, at: signed.at, jws }))
}

/// What each recipient offered, and what has accrued under each grant so far.
async fn ledger(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<LedgerLine>>, AppError> {
    let now = state.clock.now_ms();
    let mut out = Vec::new();
    for g in state.store.grants(Some(user.user_id), None).await? {
        let recipient = state.store.recipient_any(&g.recipient_id).await?.map(|r| r.name).unwrap_or_default();
        let ended = g.ended_at(now);
        out.push(LedgerLine {
            accrued: consent::accrued(&g.terms.offer, g.created_ms, ended, now),
            status: g.status(now),
            grant_id: g.id,
            recipient_id: g.recipient_id,
            recipient,
            purpose: g.terms.purpose,
            offer: g.terms.offer,
            granted: g.created_ms,
            ended,
        });
    }
    Ok(ApiJson(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// Readings are read this many hours at a time while exporting, to bound memory on a Pi.
const EXPORT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// Everything that is the user's (every reading sealed under their keys), streamed as JSON
/// or CSV. Guests have nothing of their own to export.
async fn export(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, AppError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(AppError::field("format", "json or csv")),
    };
    let scope = Scope::of(&state, &user).await?;
    let subject = subject_of(&user);
    let series = state.store.series_with_keys(&scope.keys).await?;
    let names: std::collections::BTreeMap<String, String> =
        state.store.devices_all().await?.into_iter().map(|d| (d.id, d.name)).collect();
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let store = state.store.clone();
    let username = user.username.clone();
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Bytes::from(s)).await.is_ok() }
        };
        let head = if csv {
            "device,device_name,metric,unit,ts_ms,value\r\n".to_owned()
        } else {
            format!(
                "{{\"subject\":{},\"role\":{},\"exported\":{},\"series\":[",
                json!(username),
                json!(subject.map(|s| format!("{s:?}"))),
                state.clock.now_ms()
            )
        };
        if !send(head).await {
            return;
        }
        for (i, s) in series.iter().enumerate() {
            let name = names.get(&s.device).cloned().unwrap_or_default();
            // Before anything of the series is sent: a failure ends the download short
            // (the client sees it cut off) rather than leaving out a series unsaid.
            let span = match store.series_span(&s.device, &s.metric, Keys::Only(&scope.keys)).await {
                Ok(span) => span,
                Err(error) => {
                    tracing::error!(%error, "export failed while reading");
                    return;
                }
            };
            if !csv {
                let open = format!(
                    "{}{{\"device\":{},\"device_name\":{},\"metric\":{},\"unit\":{},\"readings\":[",
                    if i > 0 { "," } else { "" },
                    json!(s.device),
                    json!(name),
                    json!(s.metric),
                    json!(s.unit)
                );
                if !send(open).await {
                    return;
                }
            }
            let (mut from, last) = span.unwrap_or((0, 0));
            let mut wrote = false;
            while from < last {
                let to = from.saturating_add(EXPORT_WINDOW_MS);
                let rows =
                    match store.readings(&s.device, &s.metric, (from, to), usize::MAX, Keys::Only(&scope.keys)).await {
                        Ok(found) => found.map(|(r, _)| r).unwrap_or_default(),
                        Err(error) => {
                            tracing::error!(%error, "export failed while reading");
                            return;
                        }
                    };
                let mut chunk = String::new();
                for (ts, value) in rows {
                    if csv {
                        let v = match &value {
                            Value::Number(x) => x.to_string(),
                            Value::Bool(b) => b.to_string(),
                            Value::Text(t) => csv_field(t),
                        };
                        let unit = s.unit.as_deref().unwrap_or("");
                        chunk.push_str(&format!(
                            "{},{},{},{},{ts},{v}\r\n",
                            csv_field(&s.device),
                            csv_field(&name),
                            csv_field(&s.metric),
                            csv_field(unit)
                        ));
                    } else {
                        chunk.push_str(if wrote { "," } else { "" });
                        chunk.push_str(&json!([ts, value]).to_string());
                        wrote = true;
                    }
                }
                if !chunk.is_empty() && !send(chunk).await {
                    return;
                }
                from = to;
            }
            if !csv && !send("]}".to_owned()).await {
                return;
            }
        }
        if !csv {
            let _ = send("]}".to_owned()).await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    let (kind, file) =
        if csv { ("text/csv; charset=utf-8", "hearth-export.csv") } else { ("application/json", "hearth-export.json") };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file}\"")),
        ],
        body,
    )
        .into_response())
}

/// A text cell: quoted where CSV needs it, and neutralised where a spreadsheet would run
/// it as a formula (a leading `=`, `+`, `-`, `@`, tab or carriage return gets a `'`).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}
