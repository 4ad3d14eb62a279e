//! Readings in and out of the store: group commit of sealed readings, latest values, and
//! range queries with optional downsampling.
//!
//! Where a commit goes depends on its shape. A dense commit (a bridge's burst: many
//! readings per series) adds one chunk per series and hour to `chunks` (rows in the order
//! written, found by series through an index: docs/decisions/0031). A sparse one (a quiet
//! home: one reading each of many series) appends one row per owner's key to `recent`, in
//! commit order, so it writes one page at the end of one table instead of a page per
//! series; `Store::fold` moves those readings into `chunks` once their hour has ended.
//! Latest values committed since the `latest` table was last written are held in memory
//! (`Fresh`) and written with the next dense commit or fold, so a sparse commit touches
//! nothing else; every value newer than the table is in `recent`, so a start after a
//! power cut finds them again (docs/decisions/0030).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use sqlx::Row;

use super::codec::{self, hour_of};
use super::{Store, StoreError};
use crate::consent::Subject;
use crate::reading::{Reading, Value};

/// Most readings returned raw by one range query; ask for `points` beyond that.
pub const MAX_RAW_READINGS: usize = 100_000;

/// A commit with at least this many readings per (series, hour) on average writes chunks
/// directly; a sparser one appends to `recent`.
const DIRECT_PER_CHUNK: usize = 16;

/// Readings `recent` may hold before it is folded even though their hours have not ended
/// (every range query opens the rows of `recent` its caller may read).
const FOLD_AT: usize = 100_000;

/// Rows of `recent` a fold puts back after emptying the table at once; with more staying,
/// it deletes row by row.
const RECENT_PUT_BACK: i64 = 64;

/// Readings folded in one transaction at most.
const FOLD_BATCH: usize = 100_000;

/// A series' newest stored value, as the writer remembers it.
#[derive(Debug, Clone, Copy)]
struct Newest {
    ts: i64,
    key_id: i64,
    every: Option<i64>,
}

/// A latest value not yet in the `latest` table: sealed as the table would hold it.
#[derive(Debug, Clone)]
pub struct Fresh {
    ts: i64,
    key_id: i64,
    every: Option<i64>,
    body: Vec<u8>,
}

/// A row of `recent` not yet folded.
#[derive(Debug, Clone, Copy)]
struct RecentRow {
    seq: i64,
    last_hour: i64,
    readings: usize,
}

/// What the writer remembers between commits, so a commit needs no reads.
#[derive(Debug, Default)]
pub struct SeriesState {
    /// (device, metric) -> (series id, unit).
    series: HashMap<(String, String), (i64, Option<String>)>,
    /// series id -> its newest stored value.
    latest: HashMap<i64, Newest>,
    /// (series, key) pairs in `series_keys`.
    series_keys: HashSet<(i64, i64)>,
    next_seq: i64,
    /// (hour, series) that got a chunk since they were last compacted.
    dirty: BTreeSet<(i64, i64)>,
    /// Rows of `recent`, oldest first, and the readings they hold.
    recent: VecDeque<RecentRow>,
    recent_readings: usize,
    /// Whether a row not sealed under the owner's key may have been in `recent` since its
    /// pages were last overwritten: SQLite can leave copies of a row in a page's unused
    /// space when it moves rows between pages, so the next fold overwrites every page it
    /// frees. Set at start (what went before is not known).
    tenancy_in_recent: bool,
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

    /// Whether `recent` holds rows to fold: some whose hours have all ended before
    /// `current_hour` (wherever they are: a row holding a reading from a device whose clock
    /// runs ahead waits for its hour without holding back the rest), or more readings than
    /// it may hold.
    pub fn fold_due(&self, current_hour: i64) -> bool {
        self.recent_readings > FOLD_AT || self.recent.iter().any(|row| row.last_hour < current_hour)
    }

    /// Readings in `recent` (for logs and tests).
    pub fn recent_readings(&self) -> usize {
        self.recent_readings
    }

    /// The rhythm of a series after a new newest value (`latest.every_ms`).
    fn every_after(&self, series: i64, ts: i64, key_id: i64) -> Option<i64> {
        let old = self.latest.get(&series)?;
        if old.key_id != key_id {
            None
        } else if ts <= old.ts || ts - old.ts > LONGEST_GAP_MS {
            old.every
        } else {
            Some(old.every.map_or(ts - old.ts, |every| (3 * every + ts - old.ts) / 4))
        }
    }
}

/// What one commit did, for the writer, logs and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct CommitBatch {
    pub readings: usize,
    /// Chunks added to `chunks` (0 when the readings went to `recent`).
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

fn recent_aad(seq: i64, key_id: i64, first_hour: i64, last_hour: i64) -> Vec<u8> {
    format!("recent:{seq}:{key_id}:{first_hour}:{last_hour}").into_bytes()
}

/// The readings of a row of `recent`, by (series, hour).
type RecentGroups = Vec<(i64, i64, Vec<(i64, Value)>)>;

fn latest_aad(series: i64, ts: i64, key_id: i64) -> Vec<u8> {
    format!("latest:{series}:{ts}:{key_id}").into_bytes()
}

fn corrupt(e: codec::CodecError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The data keys not destroyed, as the transaction sees them.
async fn live_keys(tx: &mut sqlx::SqliteConnection) -> Result<HashSet<i64>, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM data_keys WHERE wrapped IS NOT NULL").fetch_all(tx).await?;
    Ok(ids.into_iter().collect())
}

impl Store {
    /// Reads what the writer needs to start: series ids, latest values, next chunk seq, the
    /// rows of `recent` (whose newest values are newer than the `latest` table's, if the hub
    /// stopped before writing them there).
    pub async fn load_series_state(&self) -> Result<SeriesState, StoreError> {
        let mut state = SeriesState { tenancy_in_recent: true, ..SeriesState::default() };
        for row in sqlx::query("SELECT id, device_id, metric, unit FROM series").fetch_all(&self.pool).await? {
            state.series.insert(
                (row.try_get("device_id")?, row.try_get("metric")?),
                (row.try_get("id")?, row.try_get("unit")?),
            );
        }
        for row in sqlx::query("SELECT series_id, ts, key_id, every_ms FROM latest").fetch_all(&self.pool).await? {
            let newest =
                Newest { ts: row.try_get("ts")?, key_id: row.try_get("key_id")?, every: row.try_get("every_ms")? };
            state.latest.insert(row.try_get("series_id")?, newest);
        }
        for row in sqlx::query("SELECT series_id, key_id FROM series_keys").fetch_all(&self.pool).await? {
            state.series_keys.insert((row.try_get("series_id")?, row.try_get("key_id")?));
        }
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM chunks UNION ALL SELECT MAX(seq) FROM recent)",
        )
        .fetch_one(&self.pool)
        .await?;
        state.next_seq = max.map_or(0, |m| m + 1);
        // Hours left uncompacted when the hub last stopped.
        for row in sqlx::query("SELECT series_id, hour FROM chunks GROUP BY series_id, hour HAVING COUNT(*) > 1")
            .fetch_all(&self.pool)
            .await?
        {
            state.dirty.insert((row.try_get("hour")?, row.try_get("series_id")?));
        }
        let mut fresh = HashMap::new();
        for row in sqlx::query("SELECT seq, key_id, first_hour, last_hour, body FROM recent ORDER BY seq")
            .fetch_all(&self.pool)
            .await?
        {
            let (seq, key_id, last_hour): (i64, i64, i64) =
                (row.try_get("seq")?, row.try_get("key_id")?, row.try_get("last_hour")?);
            let groups = match self.open_recent(&row, None) {
                Ok(groups) => groups,
                Err(error) => {
                    // Left where it is (reads leave it out; a fold that meets it says so).
                    tracing::warn!(%error, seq, "a row of recent readings does not open");
                    continue;
                }
            };
            let mut readings = 0;
            for (series, _, entries) in groups {
                readings += entries.len();
                let Some((ts, value)) = entries.into_iter().max_by_key(|(ts, _)| *ts) else { continue };
                if state.latest.get(&series).is_some_and(|old| old.ts > ts) {
                    continue;
                }
                let every = state.every_after(series, ts, key_id);
                let body = self.seal_latest(series, ts, key_id, &value)?;
                state.latest.insert(series, Newest { ts, key_id, every });
                fresh.insert(series, Fresh { ts, key_id, every, body });
            }
            state.recent.push_back(RecentRow { seq, last_hour, readings });
            state.recent_readings += readings;
        }
        *self.held() = fresh;
        Ok(state)
    }

    /// Seals one value as the `latest` table holds it.
    fn seal_latest(&self, series: i64, ts: i64, key_id: i64, value: &Value) -> Result<Vec<u8>, StoreError> {
        let mut body = Vec::new();
        codec::encode(hour_of(ts), &mut [(ts, value)], &mut body);
        self.with_data_key(key_id, |k| Ok(k.seal(&body, &latest_aad(series, ts, key_id))?))
    }

    /// Opens a row of `recent` (`seq`, `key_id`, `first_hour`, `last_hour`, `body`) and
    /// decodes its readings: all of them, or `only` one series'.
    fn open_recent(&self, row: &sqlx::sqlite::SqliteRow, only: Option<i64>) -> Result<RecentGroups, StoreError> {
        let (seq, key_id): (i64, i64) = (row.try_get("seq")?, row.try_get("key_id")?);
        let (first, last): (i64, i64) = (row.try_get("first_hour")?, row.try_get("last_hour")?);
        let sealed: Vec<u8> = row.try_get("body")?;
        let plain = self.with_data_key(key_id, |k| Ok(k.open(&sealed, &recent_aad(seq, key_id, first, last))?))?;
        let mut out = Vec::new();
        for (series, hour, chunk) in codec::groups(&plain).map_err(corrupt)? {
            if only.is_none_or(|s| s == series) {
                out.push((series, hour, codec::decode(hour, chunk).map_err(corrupt)?));
            }
        }
        Ok(out)
    }

    /// Commits `readings` in one transaction, each sealed under the key of whoever owns it
    /// when it was made (see [`crate::consent::Ownership`]): as one chunk per (series, hour,
    /// owner's key) when the commit is dense, else as one row of `recent` per owner's key.
    /// The newest value of each series is kept in memory until it is written to `latest`
    /// (with the next dense commit or fold). `state` is updated only if the commit
    /// succeeds, so a failed commit (a full disk, say) can be retried or reported without
    /// drift.
    pub async fn commit(&self, state: &mut SeriesState, all: &[Reading]) -> Result<CommitBatch, StoreError> {
        let mut tx = self.write().await?;
        // Keys not destroyed, as of this transaction: a tenancy shredded just before it
        // (whose key the ownership snapshot may still give) gets nothing sealed under it.
        let live = live_keys(&mut tx).await?;
        let ownership = self.ownership();
        let keys: Vec<Option<i64>> =
            all.iter().map(|r| ownership.key_for(&r.device, r.ts).filter(|k| live.contains(k))).collect();
        let readings: Vec<(&Reading, i64)> = all.iter().zip(&keys).filter_map(|(r, k)| Some((r, (*k)?))).collect();
        if readings.len() < all.len() {
            tracing::debug!(dropped = all.len() - readings.len(), "readings nobody may own were not stored");
        }
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
        let mut new_pairs = BTreeSet::new();
        for (&(r, key_id), &id) in readings.iter().zip(&ids) {
            groups.entry((id, hour_of(r.ts), key_id)).or_default().push((r.ts, &r.value));
            let slot = newest.entry(id).or_insert((r.ts, &r.value, key_id));
            if r.ts >= slot.0 {
                *slot = (r.ts, &r.value, key_id);
            }
            if !state.series_keys.contains(&(id, key_id)) {
                new_pairs.insert((id, key_id));
            }
        }
        for &(series, key_id) in &new_pairs {
            sqlx::query("INSERT OR IGNORE INTO series_keys (series_id, key_id) VALUES (?, ?)")
                .bind(series)
                .bind(key_id)
                .execute(&mut *tx)
                .await?;
        }

        let direct = readings.len() >= DIRECT_PER_CHUNK * groups.len();
        let mut seq = state.next_seq;
        let mut touched = Vec::new();
        let mut appended = Vec::new();
        let mut appended_keys = Vec::new();
        let mut body = Vec::new();
        if direct {
            for ((series, hour, key_id), mut entries) in groups {
                touched.push((hour, series));
                self.insert_chunk(&mut tx, ChunkKey { series, hour, seq, key_id }, &mut entries, &mut body).await?;
                seq += 1;
            }
        } else {
            // key -> (body, first hour, last hour, readings)
            let mut by_key: BTreeMap<i64, (Vec<u8>, i64, i64, usize)> = BTreeMap::new();
            for ((series, hour, key_id), mut entries) in groups {
                body.clear();
                codec::encode(hour, &mut entries, &mut body);
                let row = by_key.entry(key_id).or_insert_with(|| (Vec::new(), hour, hour, 0));
                codec::put_group(&mut row.0, series, hour, &body);
                (row.1, row.2, row.3) = (row.1.min(hour), row.2.max(hour), row.3 + entries.len());
            }
            for (key_id, (plain, first_hour, last_hour, count)) in by_key {
                let aad = recent_aad(seq, key_id, first_hour, last_hour);
                let sealed = self.with_data_key(key_id, |k| Ok(k.seal(&plain, &aad)?))?;
                sqlx::query("INSERT INTO recent (seq, key_id, first_hour, last_hour, body) VALUES (?, ?, ?, ?, ?)")
                    .bind(seq)
                    .bind(key_id)
                    .bind(first_hour)
                    .bind(last_hour)
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await?;
                appended.push(RecentRow { seq, last_hour, readings: count });
                appended_keys.push(key_id);
                seq += 1;
            }
        }
        let chunks = touched.len();

        let mut updates = Vec::new();
        for (series, (ts, value, key_id)) in newest {
            if state.latest.get(&series).is_some_and(|old| old.ts > ts) {
                continue;
            }
            let every = state.every_after(series, ts, key_id);
            let body = self.seal_latest(series, ts, key_id, value)?;
            updates.push((series, Fresh { ts, key_id, every, body }));
        }
        if direct {
            self.write_latest(&mut tx, &live, &updates).await?;
        }
        tx.commit().await?;

        state.series.extend(new_series);
        state.series_keys.extend(new_pairs);
        for (series, fresh) in &updates {
            state.latest.insert(*series, Newest { ts: fresh.ts, key_id: fresh.key_id, every: fresh.every });
        }
        state.next_seq = seq;
        state.dirty.extend(touched);
        state.recent_readings += appended.iter().map(|row| row.readings).sum::<usize>();
        state.recent.extend(appended);
        let owners = ownership.keys.get(&Subject::Owner);
        state.tenancy_in_recent |= appended_keys.iter().any(|k| !owners.is_some_and(|keys| keys.contains(k)));
        let mut held = self.held();
        if direct {
            held.clear();
        } else {
            // Checked under the lock `forget_fresh` takes after a shred removes its key: a
            // value sealed under a key destroyed meanwhile is not kept.
            let keys = self.data_keys.read().map_err(|_| StoreError::Corrupt("key cache poisoned".into()))?;
            held.extend(updates.into_iter().filter(|(_, fresh)| keys.contains_key(&fresh.key_id)));
        }
        Ok(CommitBatch { readings: readings.len(), chunks, keys })
    }

    /// Writes to `latest` the values held in memory and `more`, in the writer's
    /// transaction. The caller clears what is held once the transaction commits (only the
    /// writer adds to it, so nothing arrives in between). A value whose key is not `live`
    /// (a tenancy shredded meanwhile) is dropped.
    async fn write_latest(
        &self,
        tx: &mut sqlx::SqliteConnection,
        live: &HashSet<i64>,
        more: &[(i64, Fresh)],
    ) -> Result<(), StoreError> {
        let held: Vec<(i64, Fresh)> = {
            let held = self.held();
            held.iter().map(|(series, fresh)| (*series, fresh.clone())).collect()
        };
        for (series, fresh) in held.iter().filter(|(s, _)| !more.iter().any(|(m, _)| m == s)).chain(more) {
            if !live.contains(&fresh.key_id) {
                continue;
            }
            sqlx::query(
                "INSERT INTO latest (series_id, ts, key_id, body, every_ms) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, key_id = excluded.key_id,
                   body = excluded.body, every_ms = excluded.every_ms",
            )
            .bind(series)
            .bind(fresh.ts)
            .bind(fresh.key_id)
            .bind(&fresh.body)
            .bind(fresh.every)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Moves rows of `recent` into `chunks` (one chunk per series, hour and key) and writes
    /// the latest values held in memory, in one transaction: the rows whose hours have all
    /// ended, and while `recent` holds more than [`FOLD_AT`] readings, the oldest rows down
    /// to half that; at most [`FOLD_BATCH`] readings. Returns how many readings moved. A
    /// row that does not open or decode stays where it is (reads leave it out). Only the
    /// writer calls this.
    pub async fn fold(&self, state: &mut SeriesState, current_hour: i64) -> Result<usize, StoreError> {
        let (mut chosen, mut moving, mut left) = (Vec::new(), 0, state.recent_readings);
        let over = state.recent_readings > FOLD_AT;
        for row in &state.recent {
            if moving >= FOLD_BATCH {
                break;
            }
            if row.last_hour < current_hour || (over && left > FOLD_AT / 2) {
                chosen.push(row.seq);
                moving += row.readings;
                left -= row.readings;
            }
        }
        if chosen.is_empty() {
            return Ok(0);
        }
        let json = |seqs: &[i64]| serde_json::to_string(seqs).map_err(|e| StoreError::Corrupt(e.to_string()));
        let mut tx = self.write().await?;
        let live = live_keys(&mut tx).await?;
        let rows = sqlx::query(
            "SELECT seq, key_id, first_hour, last_hour, body FROM recent
             WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq",
        )
        .bind(json(&chosen)?)
        .fetch_all(&mut *tx)
        .await?;
        let mut groups: BTreeMap<ChunkGroupKey, Vec<(i64, Value)>> = BTreeMap::new();
        let mut kept = Vec::new();
        for row in rows {
            let (seq, key_id): (i64, i64) = (row.try_get("seq")?, row.try_get("key_id")?);
            match self.open_recent(&row, None) {
                Ok(opened) => {
                    for (series, hour, entries) in opened {
                        groups.entry((series, hour, key_id)).or_default().extend(entries);
                    }
                }
                // Sealed under a key destroyed since (a tenancy shredded as it was
                // committed): nobody can read it; it goes.
                Err(StoreError::NoKey(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, seq, "a row of recent readings does not open; it stays unfolded");
                    kept.push(seq);
                }
            }
        }
        let mut seq = state.next_seq;
        let mut touched = Vec::with_capacity(groups.len());
        let mut body = Vec::new();
        let mut moved = 0;
        for ((series, hour, key_id), entries) in &groups {
            let mut refs: Vec<(i64, &Value)> = entries.iter().map(|(t, v)| (*t, v)).collect();
            let key = ChunkKey { series: *series, hour: *hour, seq, key_id: *key_id };
            self.insert_chunk(&mut tx, key, &mut refs, &mut body).await?;
            touched.push((*hour, *series));
            moved += entries.len();
            seq += 1;
        }
        self.write_latest(&mut tx, &live, &[]).await?;
        let tenancy_in_recent =
            self.empty_recent(&mut tx, (&json(&chosen)?, &json(&kept)?), state.tenancy_in_recent).await?;
        tx.commit().await?;
        state.tenancy_in_recent = tenancy_in_recent;

        state.next_seq = seq;
        state.dirty.extend(touched);
        let chosen: HashSet<i64> = chosen.into_iter().collect();
        state.recent.retain(|row| !chosen.contains(&row.seq));
        state.recent_readings = state.recent.iter().map(|row| row.readings).sum();
        self.held().clear();
        Ok(moved)
    }

    /// Deletes the rows of `recent` in `chosen` (a JSON array of sequence numbers) but not
    /// in `kept`. When few rows stay (those of the hour in progress), the whole table is
    /// emptied at once and they are put back as they were: SQLite then frees each page
    /// whole, where deleting row by row rewrites the leaves it rebalances, and the
    /// checkpoint writes them again. `tenancy_in_recent`: see [`SeriesState`]; returns what
    /// it is afterwards.
    async fn empty_recent(
        &self,
        tx: &mut sqlx::SqliteConnection,
        (chosen, kept): (&str, &str),
        tenancy_in_recent: bool,
    ) -> Result<bool, StoreError> {
        let staying: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recent WHERE seq NOT IN (SELECT value FROM json_each(?1))
                OR seq IN (SELECT value FROM json_each(?2))",
        )
        .bind(chosen)
        .bind(kept)
        .fetch_one(&mut *tx)
        .await?;
        if staying > RECENT_PUT_BACK {
            sqlx::query(
                "DELETE FROM recent WHERE seq IN (SELECT value FROM json_each(?1))
                   AND seq NOT IN (SELECT value FROM json_each(?2))",
            )
            .bind(chosen)
            .bind(kept)
            .execute(&mut *tx)
            .await?;
            return Ok(tenancy_in_recent);
        }
        let rows = sqlx::query(
            "SELECT seq, key_id, first_hour, last_hour, body FROM recent
             WHERE seq NOT IN (SELECT value FROM json_each(?1)) OR seq IN (SELECT value FROM json_each(?2))",
        )
        .bind(chosen)
        .bind(kept)
        .fetch_all(&mut *tx)
        .await?;
        // Pages that held only the owner's rows are freed without being overwritten: those
        // readings are in `chunks` now, sealed under the same key, which is never destroyed.
        // A tenancy's are overwritten with zeros, as everywhere (its key may be shredded).
        let owners: Vec<i64> = sqlx::query_scalar("SELECT id FROM data_keys WHERE subject = ?")
            .bind(Subject::Owner.to_string())
            .fetch_all(&mut *tx)
            .await?;
        let owners_only = !tenancy_in_recent && {
            let others: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM recent WHERE key_id NOT IN (SELECT value FROM json_each(?)))",
            )
            .bind(serde_json::to_string(&owners).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            .fetch_one(&mut *tx)
            .await?;
            !others
        };
        if owners_only {
            sqlx::query("PRAGMA secure_delete = FAST").execute(&mut *tx).await?;
        }
        // No WHERE: SQLite's truncate optimisation (the table has no triggers or foreign keys).
        let emptied = sqlx::query("DELETE FROM recent").execute(&mut *tx).await;
        if owners_only {
            sqlx::query("PRAGMA secure_delete = ON").execute(&mut *tx).await?;
        }
        emptied?;
        let mut tenancy_put_back = false;
        for row in rows {
            tenancy_put_back |= !owners.contains(&row.try_get::<i64, _>("key_id")?);
            sqlx::query("INSERT INTO recent (seq, key_id, first_hour, last_hour, body) VALUES (?, ?, ?, ?, ?)")
                .bind(row.try_get::<i64, _>("seq")?)
                .bind(row.try_get::<i64, _>("key_id")?)
                .bind(row.try_get::<i64, _>("first_hour")?)
                .bind(row.try_get::<i64, _>("last_hour")?)
                .bind(row.try_get::<Vec<u8>, _>("body")?)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tenancy_put_back)
    }

    /// Forgets the latest values held in memory under a destroyed key.
    pub(super) fn forget_fresh(&self, key_id: i64) {
        self.held().retain(|_, fresh| fresh.key_id != key_id);
    }

    /// The latest values held in memory. A panic while they were held cannot leave an
    /// entry half-made (each is one insert or removal), so a poisoned lock is taken as is:
    /// a shred must still be able to forget its values.
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Fresh>> {
        self.fresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        // Taken before the table is read.
        let held = self.held().clone();
        let rows = sqlx::query(
            "SELECT s.id, s.device_id, s.metric, s.unit, l.ts, l.key_id, l.body, l.every_ms
             FROM series s LEFT JOIN latest l ON l.series_id = s.id
             WHERE ?1 IS NULL OR s.device_id = ?1
             ORDER BY s.device_id, s.metric",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let series: i64 = row.try_get("id")?;
            // Whichever is newer: a fold or dense commit may have written the table (and
            // emptied the memory) since `held` was taken, or not yet emptied it.
            let table: Option<i64> = row.try_get("ts")?;
            let (ts, key_id, sealed, every) = match held.get(&series) {
                Some(fresh) if table.is_none_or(|ts| fresh.ts >= ts) => {
                    (fresh.ts, fresh.key_id, fresh.body.clone(), fresh.every)
                }
                _ => match table {
                    Some(ts) => (ts, row.try_get("key_id")?, row.try_get("body")?, row.try_get("every_ms")?),
                    None => continue,
                },
            };
            if !keys.allows(key_id) {
                continue;
            }
            let body = match self.with_data_key(key_id, |k| Ok(k.open(&sealed, &latest_aad(series, ts, key_id))?)) {
                Ok(body) => body,
                // Shredded since the row was read: nobody's to show.
                Err(StoreError::NoKey(_)) => continue,
                Err(error) => return Err(error),
            };
            let value = codec::decode(hour_of(ts), &body)
                .map_err(corrupt)?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("empty latest value".into()))?
                .1;
            out.push(LatestValue {
                device: row.try_get("device_id")?,
                metric: row.try_get("metric")?,
                unit: row.try_get("unit")?,
                ts,
                value,
                every,
            });
        }
        Ok(out)
    }

    /// `[from, to)` covering every stored reading of a series (whole hours) sealed under
    /// `keys`, if it has any.
    pub async fn series_span(
        &self,
        device: &str,
        metric: &str,
        keys: Keys<'_>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let series: Option<i64> = sqlx::query_scalar("SELECT id FROM series WHERE device_id = ? AND metric = ?")
            .bind(device)
            .bind(metric)
            .fetch_optional(&self.pool)
            .await?;
        let Some(series) = series else { return Ok(None) };
        let mut snapshot = self.pool.begin().await?;
        let by_key: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT key_id, MIN(hour), MAX(hour) FROM chunks WHERE series_id = ? GROUP BY key_id")
                .bind(series)
                .fetch_all(&mut *snapshot)
                .await?;
        let mine: Vec<(i64, i64, i64)> = by_key.into_iter().filter(|(key_id, _, _)| keys.allows(*key_id)).collect();
        // The hours of its readings in `recent` (rows hold many series: they are opened).
        let recent = self.recent_readings(&mut snapshot, series, (i64::MIN, i64::MAX), keys).await?;
        let first = mine.iter().map(|(_, first, _)| *first).chain(recent.keys().next().copied()).min();
        let last = mine.iter().map(|(_, _, last)| *last).chain(recent.keys().next_back().copied()).max();
        Ok(first.zip(last).map(|(first, last)| (first * codec::HOUR_MS, (last + 1) * codec::HOUR_MS)))
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
    /// [`PAGE`] chunks, one hour's readings, and the series' readings still in `recent`
    /// (at most about an hour's) are held at once (a chart of years, a share of years
    /// summarised by day). `Ok(false)` if the series does not exist.
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
        // between two pages (its chunks merged into one with a new number), or readings
        // folded from `recent` into `chunks`, are not read twice or missed.
        let mut snapshot = self.pool.begin().await?;
        // Readings not yet folded, by hour (at most what `recent` may hold).
        let mut recent = self.recent_readings(&mut snapshot, series, (from, to), keys).await?;
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
                    if let Some(done) = current_hour {
                        hour_readings.extend(recent.remove(&done).unwrap_or_default());
                    }
                    if !hand_on(&mut hour_readings) {
                        return Ok(true);
                    }
                    // Hours that only `recent` holds, before this one.
                    while let Some(entry) = recent.first_entry().filter(|e| *e.key() < hour) {
                        if !hand_on(&mut entry.remove()) {
                            return Ok(true);
                        }
                    }
                    current_hour = Some(hour);
                }
                if !keys.allows(key_id) {
                    continue;
                }
                let sealed: Vec<u8> = row.try_get("body")?;
                let body =
                    match self.with_data_key(key_id, |k| Ok(k.open(&sealed, &chunk_aad(series, hour, seq, key_id))?)) {
                        Ok(body) => body,
                        // Shredded after this snapshot began: nobody's to read.
                        Err(StoreError::NoKey(_)) => continue,
                        Err(error) => return Err(error),
                    };
                let entries = codec::decode(hour, &body).map_err(corrupt)?;
                hour_readings.extend(entries.into_iter().filter(|(ts, _)| (from..to).contains(ts)));
            }
            if last_page {
                break;
            }
        }
        if let Some(done) = current_hour {
            hour_readings.extend(recent.remove(&done).unwrap_or_default());
        }
        if hand_on(&mut hour_readings) {
            for (_, mut readings) in recent {
                if !hand_on(&mut readings) {
                    break;
                }
            }
        }
        Ok(true)
    }

    /// The readings of one series in `[from, to)` that `recent` holds under `keys`, by hour.
    async fn recent_readings(
        &self,
        snapshot: &mut sqlx::SqliteConnection,
        series: i64,
        (from, to): (i64, i64),
        keys: Keys<'_>,
    ) -> Result<BTreeMap<i64, Vec<(i64, Value)>>, StoreError> {
        let (first, last) = (hour_of(from), hour_of(to - 1));
        let rows = sqlx::query(
            "SELECT seq, key_id, first_hour, last_hour, body FROM recent WHERE last_hour >= ? AND first_hour <= ?",
        )
        .bind(first)
        .bind(last)
        .fetch_all(&mut *snapshot)
        .await?;
        let mut out: BTreeMap<i64, Vec<(i64, Value)>> = BTreeMap::new();
        for row in rows {
            if !keys.allows(row.try_get("key_id")?) {
                continue;
            }
            let groups = match self.open_recent(&row, Some(series)) {
                Ok(groups) => groups,
                // Shredded as it was committed: nobody's to read (the next fold removes it).
                Err(StoreError::NoKey(_)) => continue,
                // A damaged row (a flipped bit on the card) holds many series' readings:
                // it is left out, and said, rather than failing every series it holds.
                Err(error) => {
                    let seq: i64 = row.try_get("seq")?;
                    tracing::warn!(%error, seq, "a row of recent readings does not open; left out");
                    continue;
                }
            };
            for (_, hour, entries) in groups.into_iter().filter(|(_, hour, _)| (first..=last).contains(hour)) {
                out.entry(hour).or_default().extend(entries.into_iter().filter(|(ts, _)| (from..to).contains(ts)));
            }
        }
        Ok(out)
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

    /// Rows in `recent`, `chunks` and `latest`.
    async fn rows(store: &Store) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM recent), (SELECT COUNT(*) FROM chunks), (SELECT COUNT(*) FROM latest)",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    }

    async fn all(store: &Store, metric: &str) -> Vec<(i64, Value)> {
        store.readings("dev1", metric, (0, i64::MAX), 1000, Keys::All).await.unwrap().unwrap().0
    }

    #[tokio::test]
    async fn sparse_commits_append_to_recent_and_fold_into_chunks_once_their_hour_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        let base = 500_000 * codec::HOUR_MS;
        // Three commits into the same hour, out of order in time; one reaches the next hour.
        for batch in [[(30, 3.0), (10, 1.0)], [(20, 2.0), (40, 4.0)], [(15, 1.5), (codec::HOUR_MS + 5, 9.0)]] {
            let rs: Vec<Reading> = batch.iter().map(|&(t, v)| reading("t", base + t, v)).collect();
            let done = store.commit(&mut state, &rs).await.unwrap();
            assert_eq!((done.readings, done.chunks), (2, 0));
        }
        assert_eq!(rows(&store).await, (3, 0, 0));
        let before = all(&store, "t").await;
        let times: Vec<i64> = before.iter().map(|(t, _)| t - base).collect();
        assert_eq!(times, vec![10, 15, 20, 30, 40, codec::HOUR_MS + 5]);
        let latest = store.latest_values(Some("dev1"), Keys::All).await.unwrap();
        assert_eq!((latest[0].ts, &latest[0].value), (base + codec::HOUR_MS + 5, &Value::Number(9.0)));

        // Nothing is due while the hour goes on; once it ends, the rows wholly in it move.
        assert!(!state.fold_due(500_000));
        assert!(state.fold_due(500_001));
        assert_eq!(store.fold(&mut state, 500_001).await.unwrap(), 4);
        assert_eq!(rows(&store).await, (1, 1, 1));
        assert_eq!(all(&store, "t").await, before);
        assert_eq!(state.recent_readings(), 2);

        // A restart finds the newest value in `recent`, and reuses no sequence number.
        let mut state = store.load_series_state().await.unwrap();
        assert_eq!(state.recent_readings(), 2);
        store.commit(&mut state, &[reading("t", base + 50, 5.0)]).await.unwrap();
        let latest = store.latest_values(Some("dev1"), Keys::All).await.unwrap();
        assert_eq!((latest[0].ts, &latest[0].value), (base + codec::HOUR_MS + 5, &Value::Number(9.0)));
        assert_eq!(store.fold(&mut state, 500_002).await.unwrap(), 3);
        assert_eq!(rows(&store).await.0, 0);
        // Hour 500,000 now has two chunks: compaction merges them.
        let due = state.due_for_compaction(500_002, 10);
        assert_eq!(due, vec![(1, 500_000), (1, 500_001)]);
        assert_eq!(store.compact(&mut state, 1, 500_000).await.unwrap(), 2);
        let after = all(&store, "t").await;
        assert_eq!(after.len(), 7);
        assert!(after.windows(2).all(|w| w[0].0 <= w[1].0), "{after:?}");
        let latest = store.latest_values(Some("dev1"), Keys::All).await.unwrap();
        assert_eq!((latest[0].ts, &latest[0].value), (base + codec::HOUR_MS + 5, &Value::Number(9.0)));
    }

    /// A fold empties `recent` at once. Pages that held a tenancy's rows are overwritten
    /// (its key may be shredded, and then nothing of it may be left at rest), and so is every
    /// page freed after a tenancy's row was in the table, even one shredded since (SQLite
    /// may have left copies of it in pages that now hold the owner's rows); pages that held
    /// only the owner's are freed as they are, their readings being in `chunks` under the
    /// same key. Rows of the hour in progress are put back, and every connection is left
    /// overwriting what it deletes.
    #[tokio::test]
    async fn a_fold_overwrites_what_a_tenancy_had_in_recent_and_frees_the_owners_pages() {
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Case {
            Owner,
            Tenant,
            Both,
            TenantShredded,
        }
        for case in [Case::Owner, Case::Tenant, Case::Both, Case::TenantShredded] {
            let dir = tempfile::tempdir().unwrap();
            let store = store_with_device(dir.path()).await;
            assert!(store.create_device("dev2", "Device", "secret", 0).await.unwrap());
            let owner = store.create_first_owner("olga", "x", 0).await.unwrap().unwrap();
            let tenancy = store.create_tenancy((0, None), 2, (&[7; 32], owner, 1), 0).await.unwrap().unwrap();
            // dev1 is the building's (the owner's, tenancy or not); dev2 the tenant's own.
            store.set_device_class("dev1", crate::consent::DeviceClass::Building, 0).await.unwrap();
            store.set_device_tenancy("dev2", tenancy).await.unwrap();
            let mut state = store.load_series_state().await.unwrap();
            // Ten sparse commits of 200 values each (`recent` spans several pages), from the
            // owner's device, the tenant's, or both; and one of the hour in progress.
            let commits = |hour: i64, devices: &[&str]| {
                let base = hour * codec::HOUR_MS;
                let mut all = Vec::new();
                for c in 0..10 {
                    let mut rs = Vec::new();
                    for device in devices {
                        rs.extend((0..200).map(|m| Reading {
                            device: (*device).into(),
                            ..reading(&format!("m{m}"), base + c * 1000 + m, (c * m) as f64)
                        }));
                    }
                    all.push(rs);
                }
                all.push(vec![reading("now", base + codec::HOUR_MS + 1, 1.0)]);
                all
            };
            // A first hour from the owner alone, folded: what a start leaves unknown is
            // overwritten once.
            for rs in commits(500_000, &["dev1"]) {
                store.commit(&mut state, &rs).await.unwrap();
            }
            store.fold(&mut state, 500_001).await.unwrap();
            let devices: &[&str] = match case {
                Case::Owner => &["dev1"],
                Case::Tenant => &["dev2"],
                Case::Both | Case::TenantShredded => &["dev1", "dev2"],
            };
            for rs in commits(500_001, devices) {
                store.commit(&mut state, &rs).await.unwrap();
            }
            let tenants_key: i64 = sqlx::query_scalar("SELECT key_id FROM tenancies WHERE id = ?")
                .bind(tenancy)
                .fetch_one(store.pool())
                .await
                .unwrap();
            let sealed = |tenants: bool| {
                let sql = match tenants {
                    true => "SELECT body FROM recent WHERE key_id = ? AND last_hour = 500001",
                    false => "SELECT body FROM recent WHERE key_id != ? AND last_hour = 500001",
                };
                sqlx::query_scalar::<_, Vec<u8>>(sql).bind(tenants_key).fetch_all(store.pool())
            };
            let (tenants, owners) = (sealed(true).await.unwrap(), sealed(false).await.unwrap());
            if case == Case::TenantShredded {
                assert!(store.shred_tenancy(tenancy, 1).await.unwrap());
            }
            let moved = store.fold(&mut state, 500_002).await.unwrap();
            let kept = if case == Case::TenantShredded { 1 } else { devices.len() };
            assert_eq!(moved, 2000 * kept + 1, "{case:?}");
            // The row of the hour in progress is back, and reads the same.
            assert_eq!(rows(&store).await.0, 1, "{case:?}");
            assert_eq!(all(&store, "now").await.len(), 2, "{case:?}");

            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(store.pool()).await.unwrap();
            let mut files = Vec::new();
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                files.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            let left = |bodies: &[Vec<u8>]| bodies.iter().filter(|b| files.windows(48).any(|w| w == &b[..48])).count();
            assert_eq!(left(&tenants), 0, "{case:?}: a tenancy's folded rows are still in the files");
            match case {
                // The root page is emptied in place; the others keep their bytes.
                Case::Owner => assert!(
                    left(&owners) >= 5,
                    "only {} of the owner's rows left: the check sees nothing",
                    left(&owners)
                ),
                Case::TenantShredded => {
                    assert_eq!(left(&owners), 0, "pages a tenancy's rows were in were freed as they were")
                }
                Case::Tenant | Case::Both => {}
            }
            // Every connection of the pool overwrites what it deletes.
            let mut held = Vec::new();
            for _ in 0..4 {
                let mut conn = store.pool().acquire().await.unwrap();
                let on: i64 = sqlx::query_scalar("PRAGMA secure_delete").fetch_one(&mut *conn).await.unwrap();
                assert_eq!(on, 1, "{case:?}");
                held.push(conn);
            }
        }
    }

    #[tokio::test]
    async fn a_key_destroyed_while_reading_leaves_its_values_out_without_failing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        // Readings in `chunks` and `latest` (a dense commit), and in `recent` and memory.
        let rs: Vec<Reading> = (0..DIRECT_PER_CHUNK as i64).map(|i| reading("a", 1_000 + i, i as f64)).collect();
        store.commit(&mut state, &rs).await.unwrap();
        store.commit(&mut state, &[reading("b", 5_000, 1.0)]).await.unwrap();
        assert_eq!(rows(&store).await, (1, 1, 1));
        // A shred forgets the key before its rows are gone: a read in between finds rows
        // it cannot open. They are nobody's any more, not an error.
        let key_id: i64 = sqlx::query_scalar("SELECT key_id FROM chunks").fetch_one(store.pool()).await.unwrap();
        store.data_keys.write().unwrap().remove(&key_id);
        assert_eq!(all(&store, "a").await, vec![]);
        assert_eq!(all(&store, "b").await, vec![]);
        assert!(store.latest_values(None, Keys::All).await.unwrap().is_empty());
    }

    /// Migration 18 moved `chunks` from a tree clustered by series to rows in the order
    /// they were written: a store from before it reads the same after it.
    #[tokio::test]
    async fn chunks_written_before_the_move_to_commit_order_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let key = Key::generate().unwrap();
        let store = Store::open(&path, key.clone(), 0).await.unwrap();
        assert!(store.create_device("dev1", "Device", "secret", 0).await.unwrap());
        let mut state = store.load_series_state().await.unwrap();
        for metric in ["a", "b"] {
            let rs: Vec<Reading> = (0..40).map(|i| reading(metric, 7_200_000 + i * 10_000, i as f64)).collect();
            store.commit(&mut state, &rs).await.unwrap();
        }
        assert_eq!(rows(&store).await, (0, 2, 2));
        let before = (all(&store, "a").await, all(&store, "b").await);
        assert_eq!(before.0.len(), 40);
        // Back to the layout before migration 18, as an older hub left it.
        let mut conn = store.pool().acquire().await.unwrap();
        for sql in [
            "CREATE TABLE old_chunks (series_id INTEGER NOT NULL, hour INTEGER NOT NULL, seq INTEGER NOT NULL,
                 key_id INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (series_id, hour, seq)) WITHOUT ROWID",
            "INSERT INTO old_chunks SELECT series_id, hour, seq, key_id, body FROM chunks",
            "DROP TABLE chunks",
            "ALTER TABLE old_chunks RENAME TO chunks",
            "DELETE FROM _sqlx_migrations WHERE version = 18",
        ] {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
        drop(conn);
        store.close().await;

        let store = Store::open(&path, key, 0).await.unwrap();
        let rowid: Option<i64> =
            sqlx::query_scalar("SELECT MAX(rowid) FROM chunks").fetch_one(store.pool()).await.unwrap();
        assert_eq!(rowid, Some(2), "chunks is a rowid table again");
        assert_eq!((all(&store, "a").await, all(&store, "b").await), before);
        // New chunks go on from the highest sequence number, so none is used twice.
        let mut state = store.load_series_state().await.unwrap();
        let rs: Vec<Reading> = (0..20).map(|i| reading("a", 9_000_000 + i * 10_000, 1.0)).collect();
        store.commit(&mut state, &rs).await.unwrap();
        assert_eq!(all(&store, "a").await.len(), 60);
    }

    #[tokio::test]
    async fn dense_commits_write_chunks_and_latest_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        // A sparse commit first: its latest value is held in memory only...
        store.commit(&mut state, &[reading("a", 1_000, 1.0)]).await.unwrap();
        assert_eq!(rows(&store).await.2, 0);
        // ... until a dense one writes every latest value.
        let rs: Vec<Reading> = (0..DIRECT_PER_CHUNK as i64).map(|i| reading("b", 2_000 + i, i as f64)).collect();
        let done = store.commit(&mut state, &rs).await.unwrap();
        assert_eq!(done.chunks, 1);
        assert_eq!(rows(&store).await, (1, 1, 2));
        assert_eq!(all(&store, "b").await.len(), DIRECT_PER_CHUNK);
        assert_eq!(all(&store, "a").await, vec![(1_000, Value::Number(1.0))]);
    }

    #[tokio::test]
    async fn the_rhythm_of_a_series_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        for ts in [10_000, 20_000, 30_000] {
            store.commit(&mut state, &[reading("t", ts, 1.0)]).await.unwrap();
        }
        let every = || async { store.latest_values(Some("dev1"), Keys::All).await.unwrap()[0].every };
        assert_eq!(every().await, Some(10_000));
        let mut state = store.load_series_state().await.unwrap();
        assert_eq!(every().await, Some(10_000));
        store.commit(&mut state, &[reading("t", 50_000, 1.0)]).await.unwrap();
        assert_eq!(every().await, Some(12_500));
        store.fold(&mut state, i64::MAX).await.unwrap();
        assert_eq!(every().await, Some(12_500));
    }

    #[tokio::test]
    async fn a_damaged_recent_row_is_left_out_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        store.commit(&mut state, &[reading("a", 1_000, 1.0), reading("b", 1_000, 2.0)]).await.unwrap();
        store.commit(&mut state, &[reading("a", 2_000, 3.0)]).await.unwrap();
        // Moved to another place, or its visible hours changed: it no longer opens.
        sqlx::query("UPDATE recent SET seq = seq + 100 WHERE seq = 0").execute(store.pool()).await.unwrap();
        sqlx::query("UPDATE recent SET last_hour = last_hour + 1 WHERE seq = 1").execute(store.pool()).await.unwrap();
        assert_eq!(all(&store, "a").await, vec![]);
        assert_eq!(all(&store, "b").await, vec![]);
        // Folding leaves both where they are, and does not try again and again.
        let mut state = store.load_series_state().await.unwrap();
        assert_eq!(state.recent_readings(), 0);
        assert_eq!(store.fold(&mut state, i64::MAX).await.unwrap(), 0);
        assert_eq!(rows(&store).await.0, 2);
        assert!(!state.fold_due(i64::MAX));
        // Readings committed since read as ever.
        store.commit(&mut state, &[reading("a", 3_000, 4.0)]).await.unwrap();
        assert_eq!(all(&store, "a").await, vec![(3_000, Value::Number(4.0))]);
    }

    #[tokio::test]
    async fn a_clock_running_ahead_does_not_hold_back_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        let hour = 400_000;
        let at = |h: i64, ms: i64| h * codec::HOUR_MS + ms;
        // The first commit holds a reading two hours ahead; the others are ordinary.
        store
            .commit(&mut state, &[reading("fast", at(hour + 2, 0), 1.0), reading("t", at(hour, 1), 1.0)])
            .await
            .unwrap();
        store.commit(&mut state, &[reading("t", at(hour, 2), 2.0)]).await.unwrap();
        store.commit(&mut state, &[reading("t", at(hour, 3), 3.0)]).await.unwrap();
        // Once the hour is over, the rows wholly in it move; the one ahead waits.
        assert!(state.fold_due(hour + 1));
        assert_eq!(store.fold(&mut state, hour + 1).await.unwrap(), 2);
        assert_eq!(rows(&store).await.0, 1);
        assert!(!state.fold_due(hour + 1));
        let times: Vec<i64> = all(&store, "t").await.into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, vec![at(hour, 1), at(hour, 2), at(hour, 3)]);
        assert_eq!(
            store.series_span("dev1", "fast", Keys::All).await.unwrap(),
            Some((at(hour + 2, 0), at(hour + 3, 0)))
        );
        assert_eq!(store.series_span("dev1", "t", Keys::All).await.unwrap(), Some((at(hour, 0), at(hour + 1, 0))));
        // A span counts only what the caller may read, in `recent` and in `chunks` alike.
        let none = BTreeSet::new();
        assert_eq!(store.series_span("dev1", "fast", Keys::Only(&none)).await.unwrap(), None);
        assert_eq!(store.series_span("dev1", "t", Keys::Only(&none)).await.unwrap(), None);
        assert_eq!(store.fold(&mut state, hour + 3).await.unwrap(), 2);
        assert_eq!(rows(&store).await.0, 0);
        assert_eq!(store.series_span("dev1", "fast", Keys::Only(&none)).await.unwrap(), None);
        assert!(store.series_span("dev1", "fast", Keys::All).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_chunk_moved_to_another_series_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut state = store.load_series_state().await.unwrap();
        store.commit(&mut state, &[reading("a", 1_000, 1.0), reading("b", 1_000, 2.0)]).await.unwrap();
        store.fold(&mut state, i64::MAX).await.unwrap();
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
