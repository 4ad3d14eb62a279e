//! The REST API under `/api`: one router per domain, JSON in and out, errors through
//! [`AppError`]. Handlers validate input and call the store or services; they hold no SQL.

mod account;
mod automations;
mod consent;
mod devices;
mod live;
mod people;
mod scope;
mod share;
mod ui;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::{HeaderValue, header};
use axum::routing::get;
use serde::Serialize;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

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

/// Every API route as (method, path), for the authorization matrix test, which must cover
/// each one. A unit test below keeps this list equal to the routers' own.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/setup"),
    ("POST", "/api/setup"),
    ("POST", "/api/login"),
    ("POST", "/api/logout"),
    ("GET", "/api/me"),
    ("POST", "/api/tokens"),
    ("GET", "/api/devices"),
    ("POST", "/api/devices"),
    ("GET", "/api/devices/{id}"),
    ("DELETE", "/api/devices/{id}"),
    ("POST", "/api/devices/{id}/credentials"),
    ("PUT", "/api/devices/{id}/class"),
    ("GET", "/api/devices/{id}/metrics/{metric}/readings"),
    ("GET", "/api/live"),
    ("GET", "/api/tenancies"),
    ("POST", "/api/tenancies"),
    ("POST", "/api/tenancies/{id}/invite"),
    ("POST", "/api/tenancies/{id}/end"),
    ("POST", "/api/tenancies/{id}/shred"),
    ("POST", "/api/invites/accept"),
    ("GET", "/api/guests"),
    ("POST", "/api/guests"),
    ("DELETE", "/api/guests/{id}"),
    ("GET", "/api/recipients"),
    ("POST", "/api/recipients"),
    ("DELETE", "/api/recipients/{id}"),
    ("GET", "/api/consent/key"),
    ("GET", "/api/consent/categories"),
    ("GET", "/api/consent/requests"),
    ("POST", "/api/consent/requests/{id}/grant"),
    ("POST", "/api/consent/requests/{id}/deny"),
    ("GET", "/api/consent/grants"),
    ("POST", "/api/consent/grants/{id}/revoke"),
    ("GET", "/api/consent/grants/{id}/receipts"),
    ("GET", "/api/consent/access-log"),
    ("GET", "/api/consent/access-log/verify"),
    ("GET", "/api/consent/ledger"),
    ("GET", "/api/export"),
    ("GET", "/api/share/me"),
    ("GET", "/api/share/requests"),
    ("POST", "/api/share/requests"),
    ("GET", "/api/share/grants"),
    ("GET", "/api/share/grants/{id}/data"),
    ("GET", "/api/share/grants/{id}/receipts"),
    ("GET", "/api/rules"),
    ("POST", "/api/rules"),
    ("GET", "/api/rules/export"),
    ("POST", "/api/rules/import"),
    ("POST", "/api/rules/dry-run"),
    ("GET", "/api/rules/{id}"),
    ("PUT", "/api/rules/{id}"),
    ("DELETE", "/api/rules/{id}"),
    ("GET", "/api/rules/{id}/runs"),
    ("GET", "/api/notifications"),
    ("DELETE", "/api/notifications/{id}"),
    ("GET", "/api/outbox"),
];

/// Request bodies are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .merge(account::routes())
        .merge(devices::routes())
        .merge(live::routes())
        .merge(people::routes())
        .merge(consent::routes())
        .merge(share::routes())
        .merge(automations::routes())
        .route("/api", get(not_found))
        .route("/api/{*rest}", get(not_found).post(not_found).put(not_found).delete(not_found))
        .fallback(ui::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .with_state(state)
}

async fn health() -> ApiJson<serde_json::Value> {
    ApiJson(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn not_found() -> AppError {
    AppError::NotFound
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Reads every `.route("path", get(..).post(..))` in the API's sources, so a route added
    /// without a line in `ROUTES` (and so without a row in the matrix test) fails here.
    #[test]
    fn routes_lists_every_route_the_routers_define() {
        let sources = [
            include_str!("mod.rs"),
            include_str!("account.rs"),
            include_str!("devices.rs"),
            include_str!("live.rs"),
            include_str!("people.rs"),
            include_str!("consent.rs"),
            include_str!("share.rs"),
            include_str!("automations.rs"),
        ];
        let mut found = BTreeSet::new();
        for source in sources {
            for (_, rest) in source.match_indices(".route(\"").map(|(i, _)| ((), &source[i + 8..])) {
                let Some((path, tail)) = rest.split_once('"') else { continue };
                if path == "/api" || path.contains('*') || !path.starts_with("/api") {
                    continue;
                }
                let call = tail.split_once("))\n").map_or(tail, |(c, _)| c);
                for (method, name) in [("GET", "get("), ("POST", "post("), ("PUT", "put("), ("DELETE", "delete(")] {
                    let at_start = call.trim_start_matches([',', ' ']).starts_with(name);
                    if at_start || call.contains(&format!(".{name}")) {
                        found.insert((method.to_owned(), path.to_owned()));
                    }
                }
            }
        }
        let listed: BTreeSet<(String, String)> =
            super::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        assert_eq!(found, listed);
    }
}
