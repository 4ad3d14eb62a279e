//! Serves the web UI built by Trunk into `dist/`. Release builds carry it inside the
//! binary, so a Pi needs only the `hub` file; debug builds read `dist/` from disk, so tests
//! and development see a fresh `app/build` without recompiling the hub. The UI is two builds
//! (docs/decisions/0028): the home in `dist/`, the pages that manage it in `dist/manage/`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../dist"]
#[allow_missing = true]
struct Dist;

/// The page of the home build, and of the build that manages the home
/// (`hearth_model::pages`, docs/decisions/0028).
const HOME_PAGE: &str = "index.html";
/// Under `hearth_model::pages::MANAGE_DIR` (a test holds them together, and `app/build`).
const MANAGE_PAGE: &str = "manage/index.html";

/// The Content-Security-Policy of every answer: everything from the hub itself, nothing
/// inline but what the two pages carry (Trunk's loader script and the stylesheet, each
/// allowed by its hash), WebAssembly allowed to compile, no plugins, no framing, no base or
/// form targets elsewhere.
pub fn content_security_policy() -> HeaderValue {
    let pages: Vec<String> = [HOME_PAGE, MANAGE_PAGE]
        .iter()
        .filter(|page| **page == HOME_PAGE || manage_built())
        .filter_map(|page| Dist::get(page))
        .map(|f| String::from_utf8_lossy(&f.data).into_owned())
        .collect();
    let inline = |tag: &str| {
        let mut texts: Vec<&str> = pages.iter().flat_map(|page| inline_elements(page, tag)).collect();
        // The same stylesheet is in both pages: one hash for it.
        texts.sort_unstable();
        texts.dedup();
        hashes(texts)
    };
    let (scripts, styles) = (inline("script"), inline("style"));
    let policy = format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{scripts}; style-src 'self'{styles}; img-src 'self' data:; \
         connect-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'self'"))
}

/// The CSP source of each text, as the browser hashes it: ` 'sha256-…'`.
fn hashes(texts: Vec<&str>) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    texts
        .into_iter()
        .map(|text| {
            format!(" 'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes())))
        })
        .collect()
}

/// The text of each `<tag>` element without a `src`, exactly as the browser hashes it.
fn inline_elements<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    html.split(open.as_str())
        .skip(1)
        .filter_map(|rest| {
            let (attributes, body) = rest.split_once('>')?;
            // `<styles…>` or `<scripty…>` is another element.
            if attributes.chars().next().is_some_and(|c| !c.is_whitespace()) || attributes.contains("src=") {
                return None;
            }
            body.split_once(close.as_str()).map(|(text, _)| text)
        })
        .collect()
}

/// The encodings a request accepts, as `Accept-Encoding` says (`br;q=0` refuses brotli).
fn accepts(headers: &HeaderMap, encoding: &str) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                let weight = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="));
                weight.is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            name.eq_ignore_ascii_case(encoding) && !refused
        },
    )
}

/// Whether Trunk named the file by its content (`app-0123456789abcdef_bg.wasm`): a new
/// build gives it a new name, so it may be cached for good.
fn content_named(path: &str) -> bool {
    path.split('-').skip(1).any(|part| {
        let hash = part.split(['.', '_']).next().unwrap_or_default();
        // A 64-bit hash in hex, its leading zeros left out: 12 digits or more but once in
        // 65,536 builds (such a build is then only not cached, never cached wrongly).
        (12..=16).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// A built file, or the copy Trunk's build compressed beforehand (`.br`, `.gz`) when the
/// request accepts it: the wasm is compressed once at build time, at brotli's best, never
/// per request.
fn file(path: &str, headers: &HeaderMap) -> Option<(Option<&'static str>, rust_embed::EmbeddedFile)> {
    let raw = Dist::get(path)?;
    for (encoding, suffix) in [("br", "br"), ("gzip", "gz")] {
        if accepts(headers, encoding)
            && let Some(copy) = Dist::get(&format!("{path}.{suffix}"))
        {
            return Some((Some(encoding), rust_embed::EmbeddedFile { data: copy.data, metadata: raw.metadata }));
        }
    }
    Some((None, raw))
}

/// Whether the management build is there, as the hub found it when it first looked: the
/// CSP is computed once too, so the two never disagree (a debug hub reads `dist/` from
/// disk, which a build may change under it).
fn manage_built() -> bool {
    static BUILT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BUILT.get_or_init(|| Dist::get(MANAGE_PAGE).is_some())
}

/// Which page draws `path` (as in the URL): the management build's for its pages, when the
/// hub has it, else the home build's, which then routes by itself.
fn page_for(path: &str) -> &'static str {
    if hearth_model::pages::managed(path) && manage_built() { MANAGE_PAGE } else { HOME_PAGE }
}

/// `path` as the name of a built file, if it can be one: segments of letters, digits, `.`,
/// `_` and `-`, none empty, `.` or `..`. Nothing else reaches the lookup: a debug hub reads
/// `dist/` from disk, and rust-embed follows a symbolic link there out of it
/// (`/../../proc/self/exe`). Trunk names nothing otherwise.
fn file_name(path: &str) -> Option<&str> {
    let plain = |segment: &str| {
        !matches!(segment, "" | "." | "..")
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    path.split('/').all(plain).then_some(path)
}

/// Any path outside `/api`: a file of the UI, or the page of the build that draws it, so
/// that deep links (`/devices/abc`, `/automations`) load the app, which then routes by
/// itself.
pub async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    // One lookup per answer: a debug hub reads each from disk.
    let found = file_name(uri.path().trim_start_matches('/')).and_then(|name| Some((name, file(name, &headers)?)));
    let (path, found) = match found {
        Some((name, found)) => (name, Some(found)),
        None => {
            let page = page_for(uri.path());
            (page, file(page, &headers))
        }
    };
    let Some((encoding, file)) = found else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "The web UI was not built into this hub. Build it with `app/build` (hub/run does), \
             then rebuild the hub. The API is available under /api.",
        )
            .into_response();
    };
    let mime = if path.ends_with(".html") {
        HeaderValue::from_static("text/html; charset=utf-8")
    } else {
        HeaderValue::from_str(file.metadata.mimetype()).unwrap_or(HeaderValue::from_static("application/octet-stream"))
    };
    // Trunk names the app's files by content hash: they never change, cache them for good.
    // Everything else (the page, its icons and manifest) is asked for again each time, so a
    // new hub's UI is seen at once.
    let cache = if content_named(path) {
        HeaderValue::from_static("public, max-age=31536000, immutable")
    } else {
        HeaderValue::from_static("no-cache")
    };
    let mut response =
        ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, cache)], Body::from(file.data)).into_response();
    if let Some(encoding) = encoding {
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manage_build_is_where_the_model_and_the_build_script_say() {
        assert_eq!(MANAGE_PAGE, format!("{}/index.html", hearth_model::pages::MANAGE_DIR));
        let script = include_str!("../../../app/build");
        let dir = hearth_model::pages::MANAGE_DIR;
        assert!(script.contains(&format!("--dist dist/{dir} --public-url /{dir}/")), "app/build builds into {dir}");
    }

    #[test]
    fn only_plain_names_are_looked_up_as_files() {
        for name in ["index.html", "manage/app-591f405df209d80e_bg.wasm", "icon-192.png", "manifest.webmanifest"] {
            assert_eq!(file_name(name), Some(name));
        }
        for name in ["", "../hub.key", "manage/../../x", "a//b", "./index.html", "a\\b", "%2e%2e/x", "x/", "a b"] {
            assert_eq!(file_name(name), None, "{name}");
        }
    }

    /// A debug hub reads `dist/` from disk: a path out of it through a symbolic link (as
    /// `/proc/self/exe` is) gets the page, never the file.
    #[tokio::test]
    async fn a_path_out_of_the_ui_through_a_link_gets_the_page() {
        for path in ["/../../../../../../proc/self/exe", "/manage/../../../../../../proc/self/exe"] {
            let response = serve(Uri::from_static(path), HeaderMap::new()).await;
            // The page (or, with no UI built, the text saying so); a file would come as
            // `application/…`. The body is not read: the binary can be hundreds of MB.
            let kind = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            assert!(kind.starts_with("text/"), "{path} served a file of type {kind}");
        }
    }

    #[test]
    fn inline_elements_are_found_as_written() {
        let html = "<head><script type=\"module\">\nimport x;\n</script><script src=\"/a.js\"></script>\
                    <style>body{}</style><styles>no</styles></head>";
        assert_eq!(inline_elements(html, "script"), vec!["\nimport x;\n"]);
        assert_eq!(inline_elements(html, "style"), vec!["body{}"]);
    }

    #[test]
    fn only_files_named_by_their_content_are_cached_for_good() {
        assert!(content_named("app-591f405df209d80e_bg.wasm"));
        assert!(content_named("app-591f405df209d80e.js"));
        assert!(content_named("app-f9ffebd5e9d3652_bg.wasm"));
        assert!(content_named("hearth-3a1f75235538bb37.css"));
        assert!(content_named("manage/app-591f405df209d80e_bg.wasm"));
        assert!(!content_named("index.html"));
        assert!(!content_named("manage/index.html"));
        assert!(!content_named("favicon.svg"));
        assert!(!content_named("icon-192.png"));
        assert!(!content_named("manifest.webmanifest"));
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            headers
        };
        assert!(accepts(&with("gzip, deflate, br, zstd"), "br"));
        assert!(accepts(&with("gzip;q=1.0, BR;q=0.5"), "br"));
        assert!(!accepts(&with("gzip, br;q=0"), "br"));
        assert!(!accepts(&with("gzip, br; Q=0.0"), "br"));
        assert!(accepts(&with("gzip, br;q=0"), "gzip"));
        assert!(!accepts(&with("identity"), "gzip"));
        assert!(!accepts(&HeaderMap::new(), "br"));
        // A name is matched whole: "gzip" is not "x-gzip2".
        assert!(!accepts(&with("x-gzip2"), "gzip"));
    }
}
