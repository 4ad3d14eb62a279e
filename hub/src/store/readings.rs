//! Readings in and out of the store: group commit of sealed chunks, latest values, and
//! range queries with optional downsampling.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row;

use super::codec::{self, hour_of};
use super::{Store, StoreError};
use crate::reading::{Reading, Value};

/// Most readings returned raw by one range query; ask for `points` beyond that.
pub const MAX_RAW_READINGS: usize = 100_000;

/// What the writer remembers between commits, so a commit needs no reads.
#[derive(Debug, Default)]
pub struct SeriesState {
    /// (device, metric) -> (series id, unit).
    series: HashMap<(String, String), (i64, Option<String>)>,
    /// series id -> timestamp of its stored latest value.
    latest_ts: HashMap<i64, i64>,
    next_seq: i64,
    /// (hour, series) that got a chunk since they were last compacted.
    dirty: BTreeSet<(i64, i64)>,
}

impl SeriesState {
    /// Up to `max` (series, hour) pairs whose hour ended before `current_hour` and that may
    /// hold several chunks: ready to be merged.
    pub fn due_for_compaction(&mut self, current_hour: i64, max: usize) -> Vec<(i64, i64)> {
        let due: Vec<(i64, i64)> = self.dirty.range(..(current_hour, i64::MIN)).take(max).copied().collect();
        for key in &due {
            self.dirty.remove(key);
        }
        due.into_iter().map(|(hour, series)| (series, hour)).collect()
    }

    /// Marks an hour of a series as due again (its compaction did not happen).
    pub fn mark_due(&mut self, series: i64, hour: i64) {
        self.dirty.insert((hour, series));
    }
}

/// What one commit did, for the writer, logs and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct CommitBatch {
    pub readings: usize,
    pub chunks: usize,
    /// Per reading given, the key it was sealed under; `None`: nobody may own it (a
    /// tenant's device outside its tenancy, a shredded tenancy), so it was not stored.
    pub keys: Vec<Option<i64>>,
}

/// Which readings a query may return: those sealed under some keys (one data subject's),
/// or all of them (the hub's own work, such as answering a device).
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    All,
    Only(&'a BTreeSet<i64>),
}

impl Keys<'_> {
    pub fn allows(&self, key_id: i64) -> bool {
        match self {
            Self::All => true,
            Self::Only(keys) => keys.contains(&key_id),
        }
    }
}

/// A series (device, metric) with its unit.
#[derive(Debug, Clone)]
pub struct SeriesInfo {
    pub device: String,
    pub metric: String,
    pub unit: Option<String>,
}

/// The latest value of one series.
#[derive(Debug, Clone)]
pub struct LatestValue {
    pub device: String,
    pub metric: String,
    pub unit: Option<String>,
    pub ts: i64,
    pub value: Value,
    /// How often the series usually reports (ms), once it has reported twice.
    pub every: Option<i64>,
}

/// A gap between two readings longer than this (a device off for a week, a clock that
/// started in 2000) says nothing of how often the value usually comes: it is left out of
/// `latest.every_ms`. Readings under another key (a tenancy began or ended) start the
/// average again, so one household's rhythm is never shown to the next.
const LONGEST_GAP_MS: i64 = 7 * 24 * 3_600_000;

/// Where a chunk lives, and the key it is sealed under (all bound into its associated data).
#[derive(Clone, Copy)]
struct ChunkKey {
    series: i64,
    hour: i64,
    seq: i64,
    key_id: i64,
}

/// (series, hour, key id).
type ChunkGroupKey = (i64, i64, i64);

/// The sequence numbers of some chunks and the readings they hold.
type ChunkGroup = (Vec<i64>, Vec<(i64, Value)>);

fn chunk_aad(series: i64, hour: i64, seq: i64, key_id: i64) -> Vec<u8> {
    format!("chunk:{series}:{hour}:{seq}:{key_id}").into_bytes()
}

fn latest_aad(series: i64, ts: i64, key_id: i64) -> Vec<u8> {
    format!("latest:{series}:{ts}:{key_id}").into_bytes()
}

impl Store {
    /// Reads what the writer needs to start: series ids, latest timestamps, next chunk seq.
    pub async fn load_series_state(&self) -> Result<SeriesState, StoreError> {
        let mut state = SeriesState::default();
        for row in sqlx::query("SELECT id, device_id, metric, unit FROM series").fetch_all(&self.pool).await? {
            state.series.insert(
                (row.try_get("device_id")?, row.try_get("metric")?),
                (row.try_get("id")?, row.try_get("unit")?),
            );
        }
        for row in sqlx::query("SELECT series_id, ts FROM latest").fetch_all(&self.pool).await? {
            state.latest_ts.insert(row.try_get("series_id")?, row.try_get("ts")?);
        }
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM chunks").fetch_one(&self.pool).await?;
        state.next_seq = max.map_or(0, |m| m + 1);
        // Hours left uncompacted when the hub last stopped.
        for row in sqlx::query("SELECT series_id, hour FROM chunks GROUP BY series_id, hour HAVING COUNT(*) > 1")
            .fetch_all(&self.pool)
            .await?
        {
            state.dirty.insert((row.try_get("hour")?, row.try_get("series_id")?));
        }
        Ok(state)
    }

    /// Commits `readings` in one transaction: one sealed chunk per (series, hour, owner's
    /// key), and the latest value of each series. Each reading is sealed under the key of
    /// whoever owns it when it was made (see [`crate::consent::Ownership`]). `state` is
    /// updated only if the commit succeeds, so a failed commit (a full disk, say) can be
    /// retried or reported without drift.
    pub async fn commit(&self, state: &mut SeriesState, all: &[Reading]) -> Result<CommitBatch, StoreError> {
        let ownership = self.ownership();
        let keys: Vec<Option<i64>> = all.iter().map(|r| ownership.key_for(&r.device, r.ts)).collect();
        let readings: Vec<(&Reading, i64)> = all.iter().zip(&keys).filter_map(|(r, k)| Some((r, (*k)?))).collect();
        if readings.len() < all.len() {
            tracing::debug!(dropped = all.len() - readings.len(), "readings nobody may own were not stored");
        }
        let mut tx = self.write().await?;
        let mut new_series: HashMap<(String, String), (i64, Option<String>)> = HashMap::new();
        let mut ids = Vec::with_capacity(readings.len());
        for (r, _) in &readings {
            let lookup = (r.device.clone(), r.metric.clone());
            let known = new_series.get(&lookup).or_else(|| state.series.get(&lookup)).cloned();
            let id = match known {
                Some((id, unit)) => {
                    if r.unit.is_some() && r.unit != unit {
                        sqlx::query("UPDATE series SET unit = ? WHERE id = ?")
                            .bind(&r.unit)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        new_series.insert(lookup, (id, r.unit.clone()));
                    }
                    id
                }
                None => {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO series (device_id, metric, unit) VALUES (?, ?, ?) RETURNING id",
                    )
                    .bind(&r.device)
                    .bind(&r.metric)
                    .bind(&r.unit)
                    .fetch_one(&mut *tx)
                    .await?;
                    new_series.insert(lookup, (id, r.unit.clone()));
                    id
                }
            };
            ids.push(id);
        }

        // (series, hour, key) -> readings: one chunk each.
        let mut groups: BTreeMap<ChunkGroupKey, Vec<(i64, &Value)>> = BTreeMap::new();
        let mut newest: HashMap<i64, (i64, &Value, i64)> = HashMap::new();
        for (&(r, key_id), &id) in readings.iter().zip(&ids) {
            groups.entry((id, hour_of(r.ts), key_id)).or_default().push((r.ts, &r.value));
            let slot = newest.entry(id).or_insert((r.ts, &r.value, key_id));
            if r.ts >= slot.0 {
                *slot = (r.ts, &r.value, key_id);
            }
        }

        let mut seq = state.next_seq;
        let mut body = Vec::new();
        let mut touched = Vec::with_capacity(groups.len());
        for ((series, hour, key_id), mut entries) in groups {
            touched.push((hour, series));
            self.insert_chunk(&mut tx, ChunkKey { series, hour, seq, key_id }, &mut entries, &mut body).await?;
            seq += 1;
        }
        let chunks = (seq - state.next_seq) as usize;

        let mut latest_updates = Vec::new();
        for (series, (ts, value, key_id)) in newest {
            if state.latest_ts.get(&series).is_some_and(|&old| old > ts) {
                continue;
            }
            body.clear();
            codec::encode(hour_of(ts), &mut [(ts, value)], &mut body);
            let sealed = self.with_data_key(key_id, |k| Ok(k.seal(&body, &latest_aad(series, ts, key_id))?))?;
            sqlx::query(
                "INSERT INTO latest (series_id, ts, key_id, body) VALUES (?, ?, ?, ?)
                 ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, key_id = excluded.key_id, body = excluded.body,
                   every_ms = CASE WHEN excluded.key_id <> latest.key_id THEN NULL
                                   WHEN excluded.ts <= latest.ts OR excluded.ts - latest.ts > ?5 THEN latest.every_ms
                                   WHEN latest.every_ms IS NULL THEN excluded.ts - latest.ts
                                   ELSE (3 * latest.every_ms + excluded.ts - latest.ts) / 4 END",
            )
            .bind(series)
            .bind(ts)
            .bind(key_id)
            .bind(sealed)
            .bind(LONGEST_GAP_MS)
            .execute(&mut *tx)
            .await?;
            latest_updates.push((series, ts));
        }
        tx.commit().await?;

        state.series.extend(new_series);
        state.latest_ts.extend(latest_updates);
        state.next_seq = seq;
        state.dirty.extend(touched);
        Ok(CommitBatch { readings: readings.len(), chunks, keys })
    }

    /// Merges the chunks of one series and hour that are sealed under the same key into one
    /// chunk, in one transaction. Returns how many chunks were removed. Only the writer
    /// calls this (it owns `state`), so it never races a commit.
    pub async fn compact(&self, state: &mut SeriesState, series: i64, hour: i64) -> Result<usize, StoreError> {
        let mut tx = self.write().await?;
        let rows = sqlx::query("SELECT seq, key_id, body FROM chunks WHERE series_id = ? AND hour = ? ORDER BY seq")
            .bind(series)
            .bind(hour)
            .fetch_all(&mut *tx)
            .await?;
        // key id -> (seqs of its chunks, their readings)
        let mut by_key: BTreeMap<i64, ChunkGroup> = BTreeMap::new();
        for row in rows {
            let (seq, key_id): (i64, i64) = (row.try_get("seq")?, row.try_get("key_id")?);
            let sealed: Vec<u8> = row.try_get("body")?;
            let body = self.with_data_key(key_id, |k| Ok(k.open(&sealed, &chunk_aad(series, hour, seq, key_id))?))?;
            let group = by_key.entry(key_id).or_default();
            group.0.push(seq);
            group.1.extend(codec::decode(hour, &body).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        let mut seq = state.next_seq;
        let mut removed = 0;
        let mut body = Vec::new();
        for (key_id, (old, entries)) in by_key.into_iter().filter(|(_, (old, _))| old.len() > 1) {
            let mut refs: Vec<(i64, &Value)> = entries.iter().map(|(t, v)| (*t, v)).collect();
            self.insert_chunk(&mut tx, ChunkKey { series, hour, seq, key_id }, &mut refs, &mut body).await?;
            seq += 1;
            for old_seq in &old {
                sqlx::query("DELETE FROM chunks WHERE series_id = ? AND hour = ? AND seq = ?")
                    .bind(series)
                    .bind(hour)
                    .bind(old_seq)
                    .execute(&mut *tx)
                    .await?;
            }
            removed += old.len();
        }
        tx.commit().await?;
        state.next_seq = seq;
        Ok(removed)
    }

    /// Encodes and seals `entries` (one series, one hour) and inserts them as one chunk.
    async fn insert_chunk(
        &self,
        tx: &mut sqlx::SqliteConnection,
        key: ChunkKey,
        entries: &mut [(i64, &Value)],
        body: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let ChunkKey { series, hour, seq, key_id } = key;
        body.clear();
        codec::encode(hour, entries, body);
        let sealed = self.with_data_key(key_id, |k| Ok(k.seal(body, &chunk_aad(series, hour, seq, key_id))?))?;
        sqlx::query("INSERT INTO chunks (series_id, hour, seq, key_id, body) VALUES (?, ?, ?, ?, ?)")
            .bind(series)
            .bind(hour)
            .bind(seq)
            .bind(key_id)
            .bind(sealed)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Every series with its latest value (for the dashboard), ordered by device, metric.
    pub async fn latest_values(&self, device: Option<&str>, keys: Keys<'_>) -> Result<Vec<LatestValue>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.id, s.device_id, s.metric, s.unit, l.ts, l.key_id, l.body, l.every_ms
             FROM series s JOIN latest l ON l.series_id = s.id
             WHERE ?1 IS NULL OR s.device_id = ?1
             ORDER BY s.device_id, s.metric",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (series, ts, key_id): (i64, i64, i64) =
                (row.try_get("id")?, row.try_get("ts")?, row.try_get("key_id")?);
            if !keys.allows(key_id) {
                continue;
            }
            let sealed: Vec<u8> = row.try_get("body")?;
            let body = self.with_data_key(key_id, |k| Ok(k.open(&sealed, &latest_aad(series, ts, key_id))?))?;
            let value = codec::decode(hour_of(ts), &body)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("empty latest value".into()))?
                .1;
            out.push(LatestValue {
                device: row.try_get("device_id")?,
                metric: row.try_get("metric")?,
                unit: row.try_get("unit")?,
                ts,
                value,
                every: row.try_get("every_ms")?,
            });
        }
        Ok(out)
    }

    /// `[from, to)` covering every stored reading of a series (whole hours), if it has any.
    pub async fn series_span(&self, device: &str, metric: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let row: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MIN(c.hour), MAX(c.hour) FROM chunks c JOIN series s ON s.id = c.series_id
             WHERE s.device_id = ? AND s.metric = ?",
        )
        .bind(device)
        .bind(metric)
        .fetch_one(&self.pool)
        .await?;
        Ok(match row {
            (Some(first), Some(last)) => Some((first * codec::HOUR_MS, (last + 1) * codec::HOUR_MS)),
            _ => None,
        })
    }

    /// The series of one device.
    pub async fn series_of(&self, device: &str) -> Result<Vec<SeriesInfo>, StoreError> {
        let rows = sqlx::query("SELECT device_id, metric, unit FROM series WHERE device_id = ? ORDER BY metric")
            .bind(device)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(SeriesInfo {
                    device: row.try_get("device_id")?,
                    metric: row.try_get("metric")?,
                    unit: row.try_get("unit")?,
                })
            })
            .collect()
    }

    /// Readings of one series with `from <= ts < to` sealed under `keys`, sorted by time,
    /// at most `limit` of them, and whether more were left out. `Ok(None)` if the series
    /// does not exist.
    pub async fn readings(
        &self,
        device: &str,
        metric: &str,
        range: (i64, i64),
        limit: usize,
        keys: Keys<'_>,
    ) -> Result<Option<(Vec<(i64, Value)>, bool)>, StoreError> {
        let mut out = Vec::new();
        let found = self
            .each_reading(device, metric, range, keys, |ts, value| {
                out.push((ts, value));
                out.len() <= limit
            })
            .await?;
        let truncated = out.len() > limit;
        out.truncate(limit);
        Ok(found.then_some((out, truncated)))
    }

    /// Hands `each` the readings of one series with `from <= ts < to` sealed under `keys`,
    /// in time order, until it returns `false`. However long the range, at most a page of
    /// [`PAGE`] chunks and one hour's readings are held at once (a chart of years, a share
    /// of years summarised by day). `Ok(false)` if the series does not exist.
    pub async fn each_reading(
        &self,
        device: &str,
        metric: &str,
        (from, to): (i64, i64),
        keys: Keys<'_>,
        mut each: impl FnMut(i64, Value) -> bool,
    ) -> Result<bool, StoreError> {
        let series: Option<i64> = sqlx::query_scalar("SELECT id FROM series WHERE device_id = ? AND metric = ?")
            .bind(device)
            .bind(metric)
            .fetch_optional(&self.pool)
            .await?;
        let Some(series) = series else { return Ok(false) };
        if from >= to {
            return Ok(true);
        }
        // Chunks of one hour may overlap in time: an hour's readings are sorted once all
        // its chunks are read, then handed on.
        let mut hour_readings: Vec<(i64, Value)> = Vec::new();
        let mut current_hour = None;
        let mut hand_on = |readings: &mut Vec<(i64, Value)>| {
            readings.sort_by_key(|(ts, _)| *ts);
            readings.drain(..).all(|(ts, value)| each(ts, value))
        };
        // One read transaction: every page sees the same store, so an hour compacted
        // between two pages (its chunks merged into one with a new number) is not read twice.
        let mut snapshot = self.pool.begin().await?;
        // The page after (hour, seq), in key order.
        let (mut hour, mut seq) = (hour_of(from), -1);
        loop {
            let rows = sqlx::query(
                "SELECT hour, seq, key_id, body FROM chunks
                 WHERE series_id = ?1 AND hour >= ?2 AND hour <= ?4 AND (hour > ?2 OR seq > ?3)
                 ORDER BY hour, seq LIMIT ?5",
            )
            .bind(series)
            .bind(hour)
            .bind(seq)
            .bind(hour_of(to - 1))
            .bind(PAGE)
            .fetch_all(&mut *snapshot)
            .await?;
            let last_page = rows.len() < PAGE as usize;
            for row in rows {
                let key_id: i64;
                (hour, seq, key_id) = (row.try_get("hour")?, row.try_get("seq")?, row.try_get("key_id")?);
                if current_hour != Some(hour) {
                    if !hand_on(&mut hour_readings) {
                        return Ok(true);
                    }
                    current_hour = Some(hour);
                }
                if !keys.allows(key_id) {
                    continue;
                }
                let sealed: Vec<u8> = row.try_get("body")?;
                let body =
                    self.with_data_key(key_id, |k| Ok(k.open(&sealed, &chunk_aad(series, hour, seq, key_id))?))?;
                let entries = codec::decode(hour, &body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                hour_readings.extend(entries.into_iter().filter(|(ts, _)| (from..to).contains(ts)));
            }
            if last_page {
                break;
            }
        }
        hand_on(&mut hour_readings);
        Ok(true)
    }
}

/// Chunks read from the store at once when going through a series (an hour's readings
/// compact into one chunk: a page is ten days of a sensor).
const PAGE: i64 = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;
    use crate::reading::Reading;

    async fn store_with_device(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
        assert!(store.create_device("dev1", "Device", "secret", 0).await.unwrap());
        store
    }

    fn reading(metric: &str, ts: i64, v: f64) -> Reading {
        Reading { device: "dev1".into(), metric: metric.into(), ts, value: Value::Number(v), unit: None }
    }

    #[tokio::test]
    async fn commits_compact_into_one_chunk_without_changing_readings() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        let base = 500_000 * codec::HOUR_MS;
        // Three commits into the same hour, out of order in time; one into the next hour.
        for batch in [[(30, 3.0), (10, 1.0)], [(20, 2.0), (40, 4.0)], [(15, 1.5), (codec::HOUR_MS + 5, 9.0)]] {
            let rs: Vec<Reading> = batch.iter().map(|&(t, v)| reading("t", base + t, v)).collect();
            store.commit(&mut state, &rs).await.unwrap();
        }
        let before = store.readings("dev1", "t", (0, i64::MAX), 1000, Keys::All).await.unwrap().unwrap().0;
        let times: Vec<i64> = before.iter().map(|(t, _)| t - base).collect();
        assert_eq!(times, vec![10, 15, 20, 30, 40, codec::HOUR_MS + 5]);
        let chunks = |store: Store| async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM chunks").fetch_one(store.pool()).await.unwrap()
        };
        assert_eq!(chunks(store.clone()).await, 4);

        // Only the finished hour is due; the current one (hour + 1) is left alone.
        let due = state.due_for_compaction(500_001, 10);
        assert_eq!(due, vec![(1, 500_000)]);
        assert_eq!(store.compact(&mut state, 1, 500_000).await.unwrap(), 3);
        assert_eq!(chunks(store.clone()).await, 2);
        let after = store.readings("dev1", "t", (0, i64::MAX), 1000, Keys::All).await.unwrap().unwrap().0;
        assert_eq!(after, before);

        // The state survives a reopen: new commits do not reuse a sequence number.
        let mut state = store.load_series_state().await.unwrap();
        store.commit(&mut state, &[reading("t", base + 50, 5.0)]).await.unwrap();
        assert_eq!(store.readings("dev1", "t", (base, base + 100), 1000, Keys::All).await.unwrap().unwrap().0.len(), 6);
        let latest = store.latest_values(Some("dev1"), Keys::All).await.unwrap();
        assert_eq!((latest[0].ts, &latest[0].value), (base + codec::HOUR_MS + 5, &Value::Number(9.0)));
    }

    #[tokio::test]
    async fn a_chunk_moved_to_another_series_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        store.commit(&mut state, &[reading("a", 1_000, 1.0), reading("b", 1_000, 2.0)]).await.unwrap();
        sqlx::query("UPDATE chunks SET series_id = 3 - series_id").execute(store.pool()).await.unwrap();
        let err = store.readings("dev1", "a", (0, 10_000), 10, Keys::All).await.unwrap_err();
        assert!(matches!(err, StoreError::Crypto(_)), "{err}");
    }

    #[tokio::test]
    async fn limit_truncates_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        let rs: Vec<Reading> = (0..100).map(|i| reading("t", 1_000 + i * 60_000, i as f64)).collect();
        store.commit(&mut state, &rs).await.unwrap();
        let (got, truncated) = store.readings("dev1", "t", (0, i64::MAX), 30, Keys::All).await.unwrap().unwrap();
        assert_eq!((got.len(), truncated), (30, true));
        assert_eq!(got[29].1, Value::Number(29.0));
        let (got, truncated) = store.readings("dev1", "t", (0, i64::MAX), 100, Keys::All).await.unwrap().unwrap();
        assert_eq!((got.len(), truncated), (100, false));
        assert!(store.readings("dev1", "nope", (0, 10), 10, Keys::All).await.unwrap().is_none());
    }
}
