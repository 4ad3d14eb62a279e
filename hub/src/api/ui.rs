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

/// The Content-Security-Policy of every answer: everything from the hub itself, nothing
/// inline but the one loader script Trunk writes into `index.html` (allowed by its hash),
/// WebAssembly allowed to compile, no plugins, no framing, no base or form targets
/// elsewhere.
pub fn content_security_policy() -> HeaderValue {
    let index = Dist::get("index.html").map(|f| String::from_utf8_lossy(&f.data).into_owned()).unwrap_or_default();
    let hashes: String = inline_scripts(&index)
        .map(|script| {
            use base64::Engine;
            use sha2::{Digest, Sha256};
            format!(" 'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes())))
        })
        .collect();
    let policy = format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'self'"))
}

/// The text of each `<script>` element without a `src`, exactly as the browser hashes it.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let (tag, body) = rest.split_once('>')?;
        if tag.contains("src=") {
            return None;
        }
        body.split_once("</script>").map(|(script, _)| script)
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_found_as_written() {
        let html = "<head><script type=\"module\">\nimport x;\n</script><script src=\"/a.js\"></script></head>";
        assert_eq!(inline_scripts(html).collect::<Vec<_>>(), vec!["\nimport x;\n"]);
    }
}
