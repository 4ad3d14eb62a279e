//! A read of years holds pages, not years: five years of one sensor reporting every 10 s
//! (15.8 million readings), read under a daily share of them (the summaries a recipient
//! gets), grows the process's peak memory by less than 16 MB. Alone in its test binary, so
//! that the peak measured is this read's.

use std::collections::BTreeSet;
use std::time::Instant;

use hearth_model::consent::{Offer, Terms};
use hearth_model::people::{Granularity, Subject};
use hub::consent::{GrantRecord, Permit};
use hub::crypto::Key;
use hub::reading::{Reading, Value};
use hub::store::Store;

const DAY_MS: i64 = 24 * 3600 * 1000;
const EVERY_MS: i64 = 10_000;
const DAYS: i64 = 5 * 365 + 1;

/// A line of /proc/self/status, in bytes.
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap_or_default();
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_share_of_five_years_of_a_sensor_holds_pages_not_years() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
    assert!(store.create_device("meter", "Meter", "a device secret", 0).await.unwrap());
    let mut state = store.load_series_state().await.unwrap();
    let started = Instant::now();
    let start = 20_000 * DAY_MS;
    let mut batch = Vec::with_capacity((DAY_MS / EVERY_MS) as usize);
    for day in 0..DAYS {
        batch.clear();
        let from = start + day * DAY_MS;
        batch.extend((0..DAY_MS / EVERY_MS).map(|n| Reading {
            device: "meter".into(),
            metric: "power".into(),
            ts: from + n * EVERY_MS,
            value: Value::Number((n % 3000) as f64 / 10.0),
            unit: Some("W".into()),
        }));
        store.commit(&mut state, &batch).await.unwrap();
    }
    let written = DAYS * (DAY_MS / EVERY_MS);
    println!("wrote {written} readings in {:.1} s", started.elapsed().as_secs_f64());
    drop(batch);

    // The peak so far is forgotten (Linux: 5 > clear_refs), so that the read's is measured.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status("VmRSS:");
    let started = Instant::now();
    let end = start + DAYS * DAY_MS;
    let permit = daily_share(&store, start, end).unwrap();
    let days = store.shared_buckets(&permit, ("meter", "power"), (start, end), DAY_MS).await.unwrap();
    let peak = status("VmHWM:");
    let growth = peak.saturating_sub(before);
    let read: usize = days.iter().map(|b| b.count).sum();
    println!(
        "read {read} readings into {} daily buckets in {:.1} s; peak RSS grew {:.1} MB ({before} B before, {peak} B at peak)",
        days.len(),
        started.elapsed().as_secs_f64(),
        growth as f64 / 1e6
    );
    assert_eq!(read as i64, written);
    assert_eq!(days.len() as i64, DAYS);
    assert!(growth < 16_000_000, "the read grew the peak RSS by {growth} bytes");
}

/// A recipient's permit to the owner's power readings from `from`, by day, checked at `now`.
fn daily_share(store: &Store, from: i64, now: i64) -> Result<Permit, hub::consent::Refusal> {
    let terms = Terms {
        categories: BTreeSet::new(),
        metrics: BTreeSet::from(["power".to_owned()]),
        granularity: Granularity::Day,
        window_from: from,
        window_to: None,
        duration_days: 3650,
        purpose: "energy advice".into(),
        offer: Offer { text: "advice".into(), amount: None, currency: None, period: None },
    };
    let grant = GrantRecord {
        id: "g1".into(),
        request_id: 1,
        recipient_id: "r1".into(),
        subject_id: 1,
        terms,
        created_ms: from,
        expires_ms: now + DAY_MS,
        revoked_ms: None,
    };
    let keys: BTreeSet<i64> = store.keys_of(Subject::Owner);
    assert!(!keys.is_empty(), "the owner has no data key");
    Permit::check(&grant, "r1", keys, now)
}
