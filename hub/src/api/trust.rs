//! The plain HTTP port, when the UI and API are on HTTPS: it redirects everything to
//! HTTPS except what a newcomer needs before they can trust the hub: the hub's CA
//! certificate (`/hearth-ca.pem`, `/hearth-ca.crt`), a page on trusting it (`/trust`), and
//! `/api/health`. It sets no cookie and takes no input.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::tls::Ca;

#[derive(Clone)]
struct Plain {
    ca: Ca,
    https_port: u16,
}

/// The router of the plain port.
pub fn plain_router(ca: Ca, https_port: u16) -> Router {
    Router::new()
        .route("/api/health", get(super::health))
        .route("/hearth-ca.pem", get(ca_pem))
        .route("/hearth-ca.crt", get(ca_der))
        .route("/trust", get(page))
        .fallback(redirect)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .with_state(Plain { ca, https_port })
}

/// The CA certificate as PEM (also served on HTTPS, for devices set up from the UI).
pub fn ca_pem_response(ca: &Ca) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file")),
            (header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"hearth-ca.pem\"")),
        ],
        ca.pem.clone(),
    )
        .into_response()
}

async fn ca_pem(State(plain): State<Plain>) -> Response {
    ca_pem_response(&plain.ca)
}

/// DER, the form phones offer to install when it is opened.
async fn ca_der(State(plain): State<Plain>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-x509-ca-cert")),
            (header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"hearth-ca.crt\"")),
        ],
        plain.ca.der.clone(),
    )
        .into_response()
}

/// The host the client asked for, without its port, if it looks like a host name or an
/// address (anything else is not echoed into a URL).
fn asked_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split_once(']')?.0),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned(),
    };
    let fine = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    fine.then_some(host)
}

fn https_url(plain: &Plain, headers: &HeaderMap, path_and_query: &str) -> Option<String> {
    let host = asked_host(headers)?;
    Some(format!("https://{host}:{}{path_and_query}", plain.https_port))
}

/// Everything else moves to HTTPS, method and body kept (308).
async fn redirect(State(plain): State<Plain>, headers: HeaderMap, uri: Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match https_url(&plain, &headers, path).and_then(|url| HeaderValue::from_str(&url).ok()) {
        Some(location) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response(),
        None => (StatusCode::BAD_REQUEST, "Host header missing or malformed").into_response(),
    }
}

async fn page(State(plain): State<Plain>, headers: HeaderMap) -> Html<String> {
    let https = https_url(&plain, &headers, "/").unwrap_or_else(|| format!("https://<hub>:{}/", plain.https_port));
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Trust this Hearth hub</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
code{{word-break:break-all;background:#f3f1ee;padding:.1rem .3rem}}</style></head>
<body>
<h1>Trust this Hearth hub</h1>
<p>Hearth serves its app over HTTPS with a certificate from its own certificate authority, made on
this hub. Your browser and your devices trust it once you install that authority.</p>
<p>First make sure it is your hub's: the hub printed this SHA-256 fingerprint when it started (and
shows it in the app, under People). Compare every pair of characters:</p>
<p><code id="fingerprint">{fingerprint}</code></p>
<ol>
<li>Download the certificate: <a href="/hearth-ca.crt">hearth-ca.crt</a> (phones, Windows, macOS)
or <a href="/hearth-ca.pem">hearth-ca.pem</a> (Linux, devices, <code>mosquitto_pub --cafile</code>).</li>
<li>Install it as a trusted authority:
<ul>
<li>Android: Settings, Security, Encryption &amp; credentials, Install a certificate, CA certificate.</li>
<li>iPhone and iPad: open the file, Settings, Profile Downloaded, Install; then General, About,
Certificate Trust Settings, turn it on.</li>
<li>Windows: open the file, Install Certificate, Trusted Root Certification Authorities.</li>
<li>macOS: open the file in Keychain Access, set it to Always Trust.</li>
<li>Firefox (any system): Settings, Privacy &amp; Security, Certificates, Import.</li>
</ul></li>
<li>Open the hub: <a href="{https}">{https}</a></li>
</ol>
<p>If the fingerprint differs from the one your hub printed, do not install it: something on your
network is pretending to be the hub.</p>
</body></html>
"#,
        fingerprint = plain.ca.fingerprint,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(value).ok()?);
        asked_host(&headers)
    }

    #[test]
    fn only_host_names_and_addresses_are_echoed() {
        assert_eq!(host("hearth.local:8080").as_deref(), Some("hearth.local"));
        assert_eq!(host("192.0.2.4").as_deref(), Some("192.0.2.4"));
        assert_eq!(host("[fe80::1]:8080").as_deref(), Some("[fe80::1]"));
        assert_eq!(host("evil.example/path"), None);
        assert_eq!(host("a b"), None);
        assert_eq!(host(""), None);
    }
}
