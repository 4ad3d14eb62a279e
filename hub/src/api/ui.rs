//! Serves the web UI built by Trunk into `dist/`. Release builds carry it inside the
//! binary, so a Pi needs only the `hub` file; debug builds read `dist/` from disk, so tests
//! and development see a fresh `trunk build` without recompiling the hub.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../dist"]
#[allow_missing = true]
struct Dist;

/// Any path outside `/api`: a file of the UI, or `index.html` so that deep links
/// (`/devices/abc`) load the app, which then routes by itself.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if let Some(file) = (!path.is_empty()).then(|| Dist::get(path)).flatten() {
        // Trunk names files by content hash: they never change, cache them for good.
        let mime = HeaderValue::from_str(file.metadata.mimetype())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        return (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            ],
            Body::from(file.data),
        )
            .into_response();
    }
    match Dist::get("index.html") {
        Some(index) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            Body::from(index.data),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The web UI was not built into this hub. Build it with `trunk build --release` (hub/run does), \
             then rebuild the hub. The API is available under /api.",
        )
            .into_response(),
    }
}
