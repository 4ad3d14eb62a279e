//! The web UI's first paint and what it costs to download: the page draws Hearth's frame
//! and "Connecting to your hub…" from its own HTML and inline stylesheet (allowed by its
//! hash, no `unsafe-inline`), before any wasm arrives; the wasm and the script are served
//! as compressed at build time (brotli, else gzip), as the request accepts.

use anyhow::Context;
use base64::Engine;
use hearth_tests::TestHub;
use hearth_tests::browser::Browser;
use reqwest::header;
use serde_json::json;
use sha2::Digest;

fn dist() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// Fetches `path` accepting `encodings`, without decoding what comes back.
async fn fetch(hub: &TestHub, path: &str, encodings: &str) -> anyhow::Result<reqwest::Response> {
    let client = hub.client_builder()?.build()?;
    let response = client.get(hub.url(path)).header(header::ACCEPT_ENCODING, encodings).send().await?;
    anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
    Ok(response)
}

fn encoding(response: &reqwest::Response) -> Option<String> {
    response.headers().get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_carries_its_frame_and_the_wasm_comes_precompressed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;

    let page = fetch(&hub, "/", "identity").await?;
    assert_eq!(encoding(&page), None, "identity asked, identity given");
    let csp = page.headers().get("content-security-policy").context("a CSP")?.to_str()?.to_owned();
    let html = page.text().await?;
    assert!(html.contains(r#"<div id="boot">"#) && html.contains("Connecting to your hub"), "the frame is in the page");

    // The inline stylesheet is allowed by its hash, and nothing inline is allowed blindly.
    let style =
        html.split("<style>").nth(1).and_then(|s| s.split("</style>").next()).context("an inline stylesheet")?;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style.as_bytes()));
    let style_src = csp.split(';').map(str::trim).find(|d| d.starts_with("style-src")).context("style-src")?;
    assert!(style_src.contains(&format!("'sha256-{hash}'")), "{style_src} allows the stylesheet by its hash");
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    let wasm = html.split("module_or_path: '").nth(1).and_then(|s| s.split('\'').next()).context("the wasm's path")?;
    let name = wasm.trim_start_matches('/');
    let on_disk = |suffix: &str| std::fs::read(dist().join(format!("{name}{suffix}")));

    let brotli = fetch(&hub, wasm, "gzip, deflate, br, zstd").await?;
    assert_eq!(encoding(&brotli).as_deref(), Some("br"));
    assert_eq!(brotli.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("application/wasm"));
    assert_eq!(brotli.headers().get(header::VARY).and_then(|v| v.to_str().ok()), Some("accept-encoding"));
    assert!(brotli.bytes().await?[..] == on_disk(".br")?[..], "the brotli copy made at build time, as it is");

    let gzip = fetch(&hub, wasm, "gzip, br;q=0").await?;
    assert_eq!(encoding(&gzip).as_deref(), Some("gzip"), "br;q=0 refuses brotli");
    assert!(gzip.bytes().await?[..] == on_disk(".gz")?[..]);

    let raw = fetch(&hub, wasm, "identity").await?;
    assert_eq!(encoding(&raw), None);
    let raw = raw.bytes().await?;
    assert!(raw[..] == on_disk("")?[..]);
    // The app can go on a phone's home screen: a manifest, with icons that are there.
    let manifest = fetch(&hub, "/manifest.webmanifest", "identity").await?;
    let kind = manifest.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(kind.as_deref(), Some("application/manifest+json"));
    let manifest: serde_json::Value = manifest.json().await?;
    assert_eq!((manifest["display"].as_str(), manifest["start_url"].as_str()), (Some("standalone"), Some("/")));
    let icons = manifest["icons"].as_array().context("icons")?;
    assert!(icons.iter().any(|i| i["sizes"] == "512x512") && icons.iter().any(|i| i["sizes"] == "192x192"));
    for icon in icons {
        let src = icon["src"].as_str().context("an icon's src")?;
        let got = fetch(&hub, src, "identity").await?;
        let kind = got.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(kind.as_deref(), icon["type"].as_str(), "{src}");
    }
    assert!(html.contains(r#"<link rel="manifest" href="/manifest.webmanifest""#));

    println!("wasm: {} B raw, {} B gzip, {} B brotli", raw.len(), on_disk(".gz")?.len(), on_disk(".br")?.len());
    Ok(())
}

/// With the wasm never arriving, the page still shows Hearth's header, styled (so the inline
/// stylesheet passed the CSP), and says it is connecting; once the app starts, its own
/// screen replaces that frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frame_paints_without_the_wasm_and_gives_way_to_the_app() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    hub.owner().await?;
    let browser = Browser::start().await?;
    let b = &browser;

    b.cdp("Network.enable", json!({})).await?;
    b.cdp("Network.setBlockedURLs", json!({ "urls": ["*.wasm"] })).await?;
    b.client.goto(&hub.url("/")).await?;
    assert_eq!(b.text("#boot header h1").await?, "Hearth");
    assert_eq!(b.text("#boot [role=status]").await?, "Connecting to your hub…");
    let display =
        b.client.execute("return getComputedStyle(document.querySelector('#boot header')).display", vec![]).await?;
    assert_eq!(display, json!("flex"), "the inline stylesheet applies");

    b.cdp("Network.setBlockedURLs", json!({ "urls": [] })).await?;
    b.client.refresh().await?;
    b.find("#login-username").await?;
    let frames = b.client.execute("return document.querySelectorAll('#boot').length", vec![]).await?;
    assert_eq!(frames, json!(0), "the app's screen replaces the frame");
    browser.close().await
}
