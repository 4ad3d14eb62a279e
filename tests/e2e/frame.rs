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

/// The most a build's wasm may weigh in brotli, what a phone downloads to draw its page.
const WASM_BROTLI_MAX: usize = 350_000;

/// The page at `path`: its frame, its inline script and stylesheet allowed by their hashes,
/// its wasm served as compressed at build time. Returns the wasm's path and its three sizes.
async fn page_and_its_wasm(hub: &TestHub, path: &str) -> anyhow::Result<(String, [usize; 3])> {
    let page = fetch(hub, path, "identity").await?;
    assert_eq!(encoding(&page), None, "identity asked, identity given");
    let csp = page.headers().get("content-security-policy").context("a CSP")?.to_str()?.to_owned();
    let html = page.text().await?;
    assert!(html.contains(r#"<div id="boot">"#) && html.contains("Connecting to your hub"), "{path}: the frame");
    assert!(html.contains(r#"<link rel="manifest" href="/manifest.webmanifest""#), "{path}: the manifest");

    // What is inline is allowed by its hash, and nothing inline is allowed blindly.
    let directive = |name: &str| csp.split(';').map(str::trim).find(|d| d.starts_with(name)).map(str::to_owned);
    for (tag, directive) in [("style", directive("style-src")), ("script", directive("script-src"))] {
        let directive = directive.context("a directive for inline elements")?;
        let text = html
            .split(&format!("<{tag}"))
            .nth(1)
            .and_then(|s| s.split_once('>'))
            .and_then(|(_, s)| s.split(&format!("</{tag}>")).next())
            .with_context(|| format!("{path}: an inline {tag}"))?;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()));
        assert!(directive.contains(&format!("'sha256-{hash}'")), "{path}: {directive} allows the {tag} by its hash");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    let wasm = html.split("module_or_path: '").nth(1).and_then(|s| s.split('\'').next()).context("the wasm's path")?;
    let name = wasm.trim_start_matches('/');
    let on_disk = |suffix: &str| std::fs::read(dist().join(format!("{name}{suffix}")));

    let brotli = fetch(hub, wasm, "gzip, deflate, br, zstd").await?;
    assert_eq!(encoding(&brotli).as_deref(), Some("br"));
    assert_eq!(brotli.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("application/wasm"));
    assert_eq!(brotli.headers().get(header::VARY).and_then(|v| v.to_str().ok()), Some("accept-encoding"));
    let brotli = brotli.bytes().await?;
    assert!(brotli[..] == on_disk(".br")?[..], "the brotli copy made at build time, as it is");

    let gzip = fetch(hub, wasm, "gzip, br;q=0").await?;
    assert_eq!(encoding(&gzip).as_deref(), Some("gzip"), "br;q=0 refuses brotli");
    let gzip = gzip.bytes().await?;
    assert!(gzip[..] == on_disk(".gz")?[..]);

    let raw = fetch(hub, wasm, "identity").await?;
    assert_eq!(encoding(&raw), None);
    let raw = raw.bytes().await?;
    assert!(raw[..] == on_disk("")?[..]);
    Ok((wasm.to_owned(), [raw.len(), gzip.len(), brotli.len()]))
}

/// Each page comes with its frame and the wasm of the build that draws it: the home's for
/// the home, the management build's (under `/manage/`) for automations, sharing and
/// tenancies. Each wasm is at most 350 KB in brotli, served as compressed at build time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_carries_its_frame_and_the_wasm_comes_precompressed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;

    let mut builds = std::collections::BTreeMap::new();
    for path in ["/", "/devices/abc", "/bridges", "/invite", "/automations", "/sharing", "/people"] {
        let (wasm, sizes) = page_and_its_wasm(&hub, path).await?;
        let managed = hearth_model::pages::managed(path);
        assert_eq!(wasm.starts_with("/manage/"), managed, "{path} is drawn by {wasm}");
        let [raw, gzip, brotli] = sizes;
        assert!(brotli <= WASM_BROTLI_MAX, "{wasm}: {brotli} B in brotli, more than {WASM_BROTLI_MAX}");
        if builds.insert(managed, wasm.clone()).is_none() {
            println!("{wasm}: {raw} B raw, {gzip} B gzip, {brotli} B brotli");
        }
        assert_eq!(builds.get(&managed), Some(&wasm), "one wasm per build");
    }
    assert_eq!(builds.len(), 2, "two builds");

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

/// The wasm files this page has fetched so far.
async fn wasm_fetched(b: &Browser) -> anyhow::Result<Vec<String>> {
    let script = "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)\
                  .filter(p => p.endsWith('.wasm'))";
    let got = b.client.execute(script, vec![]).await?;
    Ok(serde_json::from_value(got)?)
}

/// The home downloads only the home's wasm. A link to a page of the other build loads that
/// build from the hub (and its Home link comes back); a page of the other build reached by
/// routing within this one (history) is loaded from the hub too, not drawn as "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_loads_only_the_wasm_of_its_build() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    hub.add_device(&owner, "Hall sensor").await?;
    let browser = Browser::start().await?;
    let b = &browser;
    b.owner_logs_in(&hub).await?;
    b.find(".card.device").await?;
    let home = wasm_fetched(b).await?;
    assert!(home.len() == 1 && !home[0].starts_with("/manage/"), "the home fetched {home:?}");

    b.click("header nav a[href='/automations']").await?;
    b.find("#rule-name").await?;
    let manage = wasm_fetched(b).await?;
    assert!(manage.len() == 1 && manage[0].starts_with("/manage/"), "automations fetched {manage:?}");
    b.click("header nav a[href='/sharing']").await?;
    b.find("#grants").await?;
    assert_eq!(wasm_fetched(b).await?, manage, "sharing is routed within the same build");

    b.click("header nav a[href='/']").await?;
    b.find(".card.device").await?;
    assert_eq!(wasm_fetched(b).await?, home, "Home loads the home's build");

    // Routing to the other build's page from within this one (as history would).
    let route = "history.pushState({}, '', '/people'); dispatchEvent(new PopStateEvent('popstate', { state: {} }))";
    b.client.execute(route, vec![]).await?;
    b.find("#tenancies").await?;
    assert_eq!(wasm_fetched(b).await?, manage, "the page came with its own build");
    browser.close().await
}
