//! The REST API under `/api`: one router per domain, JSON in and out, errors through
//! [`AppError`]. Handlers validate input and call the store or services; they hold no SQL.

mod account;
mod automations;
mod consent;
mod devices;
mod live;
mod people;
pub mod routes;
mod scope;
mod share;
pub mod trust;
mod ui;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::{HeaderValue, header};
use axum::routing::{get, on};
use serde::Serialize;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use self::routes::{Route, Who};
use crate::error::AppError;
use crate::state::AppState;

/// JSON body extractor whose rejections use the API's error body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Query-string extractor whose rejections use the API's error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

/// The route table (see [`routes`]): every `/api` route, who may call it, and its handler.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    [HEALTH, account::ROUTES, devices::ROUTES, live::ROUTES, people::ROUTES, consent::ROUTES, share::ROUTES]
        .into_iter()
        .chain([automations::ROUTES])
        .flatten()
}

const HEALTH: &[Route] = &[
    Route::new("GET", "/api/health", Who::Anyone, |m| on(m, health)),
    Route::new("GET", "/api/tls", Who::Anyone, |m| on(m, tls_info)),
    Route::new("GET", "/api/storage", Who::People(routes::SUBJECTS), |m| on(m, storage)),
];

/// Request bodies are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let api = routes().fold(Router::new(), |api, r| api.route(r.path, r.method_router(&state)));
    api.route("/api", get(not_found))
        .route("/api/{*rest}", get(not_found).post(not_found).put(not_found).delete(not_found))
        .route("/hearth-ca.pem", get(ca_pem))
        .fallback(ui::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // A body trickled in a byte at a time must still arrive in time.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_secs(30)))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, ui::content_security_policy()))
        .with_state(state)
}

pub(crate) async fn health() -> ApiJson<serde_json::Value> {
    ApiJson(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Whether the hub takes readings, and its room for them: for the people whose readings
/// they are. How many were refused, hub-wide, is the owner's to know.
async fn storage(
    axum::extract::State(state): axum::extract::State<AppState>,
    crate::auth::CurrentUser(user): crate::auth::CurrentUser,
) -> ApiJson<hearth_model::account::Storage> {
    let free_bytes = crate::ingest::pipeline::free_bytes(&state.config.data_dir);
    let owner = user.role == hearth_model::Role::Owner;
    let refusing = state.ingest.refusing().map(|r| hearth_model::account::Refusing {
        since: r.since_ms,
        reason: r.reason,
        refused: if owner { r.refused } else { 0 },
    });
    // How much the hub holds and writes follows every household's activity: the owner's
    // to see, as the count of refused readings is.
    let database = ["hearth.db", "hearth.db-wal"].map(|f| std::fs::metadata(state.config.data_dir.join(f)));
    let database_bytes = match &database[0] {
        Ok(db) if owner => Some(db.len() + database[1].as_ref().map_or(0, std::fs::Metadata::len)),
        _ => None,
    };
    let written = state.ingest.write_rate().filter(|_| owner);
    ApiJson(hearth_model::account::Storage {
        free_bytes,
        reserve_bytes: state.config.store.reserve_mb.saturating_mul(1_000_000),
        refusing,
        database_bytes,
        written_per_day: written.map(|w| w.bytes_per_day),
        written_over_ms: written.map(|w| u64::try_from(w.over.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// How to trust the hub: not a secret, and needed before anyone logs in.
async fn tls_info(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiJson<hearth_model::devices::TlsInfo> {
    ApiJson(hearth_model::devices::TlsInfo {
        fingerprint: state.tls.as_ref().map(|tls| tls.ca().fingerprint.clone()),
        own_certificate: state.tls.as_ref().is_some_and(|tls| tls.owners()),
        mqtts_port: state.mqtts_port,
    })
}

async fn ca_pem(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    match &state.tls {
        Some(tls) => trust::ca_pem_response(tls.ca()),
        None => axum::response::IntoResponse::into_response(AppError::NotFound),
    }
}

async fn not_found() -> AppError {
    AppError::NotFound
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn each_route_is_in_the_table_once() {
        let mut seen = BTreeSet::new();
        for r in super::routes() {
            assert!(r.path.starts_with("/api/"), "{}", r.path);
            assert!(["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&r.method), "{} {}", r.method, r.path);
            assert!(seen.insert((r.method, r.path)), "{} {} twice", r.method, r.path);
        }
        assert_eq!(seen.len(), 72);
    }
}
