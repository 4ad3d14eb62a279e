//! Store benchmark: readings/s into Hearth's encrypted store against plain batched SQLite
//! inserts of the same rows (the baseline), their ratio, and on-disk bytes per reading.
//!
//! `cargo bench -p hub --bench store` (optionally `-- READINGS`, default 1,000,000).
//! `cargo bench -p hub --bench store -- wear HOURS [PER_COMMIT]`: what a quiet home costs the
//! card (18 readings a commit is QoS 1 gathered for 900 ms; 600 is QoS 0 for 30 s).
//! Both sides use the same library (sqlx), pragmas (WAL, synchronous=FULL) and batch size,
//! on a single-threaded runtime; each best of three runs, in the same process.

use std::path::Path;
use std::time::{Duration, Instant};

use hub::crypto::Key;
use hub::reading::{Reading, Value};
use hub::store::Store;
use hub::store::readings::Keys;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Readings per transaction: the writer's default `max_batch`.
const BATCH: usize = 10_000;
const DEVICES: usize = 50;
const METRICS: [&str; 4] = ["temperature", "humidity", "power", "co2"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut numbers = args.iter().filter_map(|a| a.parse().ok());
    let number = numbers.next();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if args.iter().any(|a| a == "wear") {
        let dir = tempfile::tempdir()?;
        return rt.block_on(wear(dir.path(), number.unwrap_or(12), numbers.next().unwrap_or(18)));
    }
    rt.block_on(run(number.unwrap_or(1_000_000)))
}

/// Bytes this process has had written to storage (`write_bytes`: what reaches the card).
fn written() -> anyhow::Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no write_bytes in /proc/self/io"))
}

/// What a quiet home costs the card, hour by hour (`-- wear HOURS PER_COMMIT`): the issue's
/// quiet home (200 series, one reading each per 10 s) committed as the writer commits it,
/// `per_commit` readings at a time (18 with `acked_within_ms` 900: 4,000 commits an hour;
/// 600 for QoS 0 with `unacked_within_ms` 30,000: 120 commits an hour), then folded
/// and compacted as the writer does once each hour has ended. Prints the bytes written by
/// the commits and by the fold of each hour, and what a day of them comes to; a simulated
/// hour takes seconds, so this shows the folds of a store many hours old, which a run in
/// real time cannot.
async fn wear(dir: &Path, hours: usize, per_commit: usize) -> anyhow::Result<()> {
    let store = Store::open(&dir.join("wear.db"), Key::generate()?, 0).await?;
    for d in 0..DEVICES {
        store.create_device(&format!("dev{d:03}"), "bench", "secret", 0).await?;
    }
    let mut state = store.load_series_state().await?;
    let per_hour = DEVICES * METRICS.len() * 360;
    // Hours as the clock has them, so that each fold takes one whole hour, as the writer's
    // does just after the hour ends.
    let mut readings = workload(per_hour * hours);
    let shift = readings.first().map_or(0, |r| (-r.ts).rem_euclid(hub::store::codec::HOUR_MS));
    readings.iter_mut().for_each(|r| r.ts += shift);
    println!("quiet home's wear: {hours} simulated hours of {per_hour} readings, {per_commit} a commit, folded hourly");
    let (mut commits_total, mut folds_total) = (0, 0);
    for (h, hour) in readings.chunks(per_hour).enumerate() {
        let before = written()?;
        for commit in hour.chunks(per_commit) {
            store.commit(&mut state, commit).await?;
        }
        let committed = written()? - before;
        let current = hub::store::codec::hour_of(hour.last().map_or(0, |r| r.ts)) + 1;
        let (before, started) = (written()?, Instant::now());
        let moved = store.fold(&mut state, current).await?;
        for (series, h) in state.due_for_compaction(current, usize::MAX) {
            store.compact(&mut state, series, h).await?;
        }
        let folded = written()? - before;
        println!(
            "hour {h:>3}: commits {:>6.0} KB ({:.1} KB each), fold {:>5.0} KB ({moved} readings in {:.0?})",
            committed as f64 / 1e3,
            committed as f64 / 1e3 / hour.len().div_ceil(per_commit) as f64,
            folded as f64 / 1e3,
            started.elapsed()
        );
        (commits_total, folds_total) = (commits_total + committed, folds_total + folded);
    }
    let day = |bytes: u64| bytes as f64 * 24.0 / hours as f64 / 1e6;
    println!(
        "per day: commits {:.0} MB, folds and compaction {:.0} MB, in all {:.0} MB",
        day(commits_total),
        day(folds_total),
        day(commits_total + folds_total)
    );
    // What the folded hours take on disk, and what reading them back costs: one series,
    // every hour, as a chart of the whole range reads it (best of three).
    let stored = (hours * per_hour) as f64;
    println!("on disk: {:.1} bytes per reading", disk_bytes(store.pool()).await? as f64 / stored);
    let (device, metric) = ("dev007", METRICS[1]);
    let mut best = Duration::MAX;
    let mut count = 0;
    for _ in 0..3 {
        let started = Instant::now();
        count = 0;
        store
            .each_reading(device, metric, (0, i64::MAX), Keys::All, |_, _| {
                count += 1;
                true
            })
            .await?;
        best = best.min(started.elapsed());
    }
    println!("one series, all {hours} hours: {count} readings in {best:.1?}");
    store.close().await;
    Ok(())
}

/// `n` readings: 200 series, one reading per series every 10 s, sensor-like values.
fn workload(n: usize) -> Vec<Reading> {
    let series = DEVICES * METRICS.len();
    let start = 1_780_000_000_000i64;
    (0..n)
        .map(|i| {
            let s = i % series;
            let step = (i / series) as i64;
            let (device, metric) = (s / METRICS.len(), METRICS[s % METRICS.len()]);
            let wobble = ((i * 7919) % 100) as f64;
            let value = match metric {
                "temperature" => 18.0 + wobble / 10.0,
                "humidity" => 35.0 + (wobble / 4.0).round(),
                "power" => 100.0 + wobble * 12.5,
                _ => 400.0 + wobble * 3.0,
            };
            Reading {
                device: format!("dev{device:03}"),
                metric: metric.to_owned(),
                ts: start + step * 10_000 + (s as i64) * 13,
                value: Value::Number(value),
                unit: None,
            }
        })
        .collect()
}

async fn disk_bytes(pool: &sqlx::SqlitePool) -> anyhow::Result<i64> {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await?;
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(pool).await?;
    let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(pool).await?;
    Ok(pages * size)
}

struct Figures {
    per_second: f64,
    bytes_per_reading: f64,
}

async fn hearth(dir: &Path, readings: &[Reading]) -> anyhow::Result<Figures> {
    let store = Store::open(&dir.join("hearth.db"), Key::generate()?, 0).await?;
    for d in 0..DEVICES {
        store.create_device(&format!("dev{d:03}"), "bench", "secret", 0).await?;
    }
    let mut state = store.load_series_state().await?;
    let empty = disk_bytes(store.pool()).await?;
    let started = Instant::now();
    for batch in readings.chunks(BATCH) {
        store.commit(&mut state, batch).await?;
    }
    let elapsed = started.elapsed();
    let used = disk_bytes(store.pool()).await? - empty;
    store.close().await;
    Ok(Figures {
        per_second: readings.len() as f64 / elapsed.as_secs_f64(),
        bytes_per_reading: used as f64 / readings.len() as f64,
    })
}

async fn baseline(dir: &Path, readings: &[Reading]) -> anyhow::Result<Figures> {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("plain.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
    sqlx::query(
        "CREATE TABLE readings (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
         PRIMARY KEY (series_id, ts)) WITHOUT ROWID",
    )
    .execute(&pool)
    .await?;
    let series: std::collections::HashMap<(&str, &str), i64> = readings
        .iter()
        .map(|r| (r.device.as_str(), r.metric.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, i as i64))
        .collect();
    let empty = disk_bytes(&pool).await?;
    let started = Instant::now();
    for batch in readings.chunks(BATCH) {
        let mut tx = pool.begin().await?;
        for r in batch {
            let Value::Number(v) = r.value else { continue };
            sqlx::query("INSERT INTO readings (series_id, ts, value) VALUES (?, ?, ?)")
                .bind(series[&(r.device.as_str(), r.metric.as_str())])
                .bind(r.ts)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    let used = disk_bytes(&pool).await? - empty;
    pool.close().await;
    Ok(Figures {
        per_second: readings.len() as f64 / elapsed.as_secs_f64(),
        bytes_per_reading: used as f64 / readings.len() as f64,
    })
}

/// A quiet home: each commit carries one reading per series (what a 250 ms commit interval
/// sees when 200 sensors report every 10-60 s): such commits go to `recent`. Bytes per
/// reading before and after the finished hours are folded into chunks and compacted.
async fn sparse(dir: &Path) -> anyhow::Result<(usize, f64, f64)> {
    let store = Store::open(&dir.join("sparse.db"), Key::generate()?, 0).await?;
    for d in 0..DEVICES {
        store.create_device(&format!("dev{d:03}"), "bench", "secret", 0).await?;
    }
    let mut state = store.load_series_state().await?;
    let series = DEVICES * METRICS.len();
    let readings = workload(series * 360); // one hour at one reading per series per 10 s
    let empty = disk_bytes(store.pool()).await?;
    for commit in readings.chunks(series) {
        store.commit(&mut state, commit).await?;
    }
    let before = (disk_bytes(store.pool()).await? - empty) as f64 / readings.len() as f64;
    while store.fold(&mut state, i64::MAX).await? > 0 {}
    let hours: Vec<(i64, i64)> = state.due_for_compaction(i64::MAX, usize::MAX);
    for (s, h) in hours {
        store.compact(&mut state, s, h).await?;
    }
    sqlx::query("VACUUM").execute(store.pool()).await?;
    let after = (disk_bytes(store.pool()).await? - empty) as f64 / readings.len() as f64;
    store.close().await;
    Ok((readings.len(), before, after))
}

async fn run(n: usize) -> anyhow::Result<()> {
    let readings = workload(n);
    println!("store benchmark: {n} readings, {} series, {BATCH} per transaction, best of 3", DEVICES * METRICS.len());
    let (mut best_h, mut best_b) = (None::<Figures>, None::<Figures>);
    for _ in 0..3 {
        let dir = tempfile::tempdir()?;
        let b = baseline(dir.path(), &readings).await?;
        let h = hearth(dir.path(), &readings).await?;
        if best_h.as_ref().is_none_or(|x| h.per_second > x.per_second) {
            best_h = Some(h);
        }
        if best_b.as_ref().is_none_or(|x| b.per_second > x.per_second) {
            best_b = Some(b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (h, b) = (best_h.ok_or_else(|| anyhow::anyhow!("no run"))?, best_b.ok_or_else(|| anyhow::anyhow!("no run"))?);
    println!(
        "hearth (sealed chunks):      {:>10.0} readings/s  {:>6.1} bytes/reading",
        h.per_second, h.bytes_per_reading
    );
    println!(
        "baseline (plain row inserts): {:>9.0} readings/s  {:>6.1} bytes/reading",
        b.per_second, b.bytes_per_reading
    );
    println!("ratio hearth/baseline:        {:>9.2}", h.per_second / b.per_second);
    let dir = tempfile::tempdir()?;
    let (count, before, after) = sparse(dir.path()).await?;
    println!(
        "quiet home ({count} readings, one per series per commit): {before:.1} bytes/reading, {after:.1} after folding and compaction"
    );
    Ok(())
}
