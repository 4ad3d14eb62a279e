//! A read of years holds pages, not years: five years of one sensor reporting every 10 s
//! (15.8 million readings) summarised by day, as a daily share of them is, grows the
//! process's peak memory by less than 16 MB. Alone in its test binary, so that the peak
//! measured is this read's.

use std::time::Instant;

use hub::buckets::Bucketer;
use hub::crypto::Key;
use hub::reading::{Reading, Value};
use hub::store::Store;
use hub::store::readings::Keys;

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
async fn five_years_of_a_sensor_are_summarised_in_bounded_memory() {
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
    let mut days = Bucketer::new(DAY_MS);
    let range = (start, start + DAYS * DAY_MS);
    let found = store.each_reading("meter", "power", range, Keys::All, |ts, value| {
        days.push(ts, &value);
        true
    });
    assert!(found.await.unwrap());
    let peak = status("VmHWM:");
    let days = days.finish();
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
