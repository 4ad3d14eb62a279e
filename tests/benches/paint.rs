//! How soon a phone on a slow network sees Hearth: first contentful paint (the frame
//! `index.html` draws by itself) and the first device card (the wasm running, the hub
//! answered), in a real headless Chromium against this build's hub over HTTPS, under the
//! DevTools "Fast 3G" conditions (562.5 ms latency, 180 kB/s down, 84.375 kB/s up) with the
//! cache disabled, against a baseline of the same loads unthrottled. Prints the wasm's sizes
//! (raw, gzip, brotli) and what the browser actually transferred.
//!
//! `app/build && cargo bench -p hearth-tests --bench paint`

use std::time::Duration;

use anyhow::Context;
use hearth_tests::browser::{Browser, ca_pin};
use hearth_tests::{OWNER_PASSWORD, TestHub};
use serde_json::{Value, json};

const RUNS: usize = 3;

/// Marks, in the page, when the first device card appears.
const WATCH_CARDS: &str = "new MutationObserver((_, o) => { if (document.querySelector('.card.device')) { \
     window.hearthCard = performance.now(); o.disconnect(); } }).observe(document, { childList: true, subtree: true });";

struct Load {
    paint: f64,
    card: f64,
    transferred: f64,
    wasm: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    // The UI's two builds (docs/decisions/0028): the home, which this loads, and the pages
    // that manage it.
    for (build, dir) in [("home", dist.clone()), ("manage", dist.join(hearth_model::pages::MANAGE_DIR))] {
        let wasm = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "wasm"))
            .with_context(|| format!("no wasm in {}: run `app/build` first", dir.display()))?;
        let size = |suffix: &str| -> anyhow::Result<u64> {
            Ok(std::fs::metadata(format!("{}{suffix}", wasm.display()))?.len())
        };
        println!("wasm ({build}): {} B raw, {} B gzip, {} B brotli", size("")?, size(".gz")?, size(".br")?);
    }

    let dir = tempfile::tempdir()?;
    let mut config = hearth_tests::Config::for_test(&dir.path().join("data"));
    config.http.tls = true;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    for room in ["Kitchen", "Hall", "Bedroom"] {
        let device = hub.add_device(&owner, &format!("{room} sensor")).await?;
        hub.publish((&device.0, &device.1), &format!("hearth/{}/temperature", device.0), "21.5".into()).await?;
    }

    let browser = Browser::start_pinning(Some(&ca_pin(&hub)?)).await?;
    let b = &browser;
    b.client.goto(&hub.url("/")).await?;
    b.fill("#login-username", "owner").await?;
    b.fill("#login-password", OWNER_PASSWORD).await?;
    b.click("#login-submit").await?;
    b.find(".card.device").await?;
    b.cdp("Network.enable", json!({})).await?;
    b.cdp("Network.setCacheDisabled", json!({ "cacheDisabled": true })).await?;
    b.cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": WATCH_CARDS })).await?;

    let unthrottled = loads(b, &hub, None).await?;
    let fast_3g = json!({
        "offline": false,
        "latency": 562.5,
        "downloadThroughput": 180_000.0,
        "uploadThroughput": 84_375.0,
    });
    let throttled = loads(b, &hub, Some(fast_3g)).await?;
    report("unthrottled (baseline)", &unthrottled, None);
    report("Fast 3G", &throttled, Some(&unthrottled));
    browser.close().await
}

async fn loads(b: &Browser, hub: &TestHub, conditions: Option<Value>) -> anyhow::Result<Vec<Load>> {
    let off = json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 });
    b.cdp("Network.emulateNetworkConditions", conditions.unwrap_or(off)).await?;
    let mut all = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        b.client.goto(&hub.url("/")).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let load = loop {
            let found = b
                .client
                .execute(
                    "const paint = performance.getEntriesByName('first-contentful-paint')[0]; \
                     if (!paint || !window.hearthCard) return null; \
                     const all = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]; \
                     const wasm = all.find(e => e.name.endsWith('.wasm')); \
                     return [paint.startTime, window.hearthCard, all.reduce((s, e) => s + e.transferSize, 0), \
                             wasm ? wasm.transferSize : 0];",
                    vec![],
                )
                .await?;
            if let Some([paint, card, transferred, wasm]) = found.as_array().map(|a| a.as_slice()) {
                let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
                break Load { paint: n(paint), card: n(card), transferred: n(transferred), wasm: n(wasm) };
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "the page never showed a card");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        all.push(load);
    }
    Ok(all)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(name: &str, loads: &[Load], baseline: Option<&[Load]>) {
    let paint = median(loads.iter().map(|l| l.paint).collect());
    let card = median(loads.iter().map(|l| l.card).collect());
    let transferred = median(loads.iter().map(|l| l.transferred).collect());
    let wasm = median(loads.iter().map(|l| l.wasm).collect());
    print!(
        "{name}: first contentful paint {paint:.0} ms, first card {card:.0} ms, \
         {transferred:.0} B transferred (wasm {wasm:.0} B), median of {RUNS}"
    );
    if let Some(base) = baseline {
        let base_paint = median(base.iter().map(|l| l.paint).collect());
        let base_card = median(base.iter().map(|l| l.card).collect());
        print!("; x{:.1} paint and x{:.1} card against the baseline", paint / base_paint, card / base_card);
    }
    println!();
}
