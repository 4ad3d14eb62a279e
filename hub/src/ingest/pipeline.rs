//! The one path every reading takes after a protocol accepted it: a bounded channel into a
//! single writer task that batches submissions into one transaction (group commit), then
//! tells each submitter that its readings are durable. Live views and automations hear a
//! reading when it is accepted, not when it is committed. Protocol loops only ever wait on
//! the channel's capacity, never on the disk.
//!
//! Each submission says by when it must be committed (decision 0029): at once when its
//! sender is waiting on the acknowledgement to send more (a bridge's burst, a client with
//! messages in flight, one sending one at a time), within `acked_within` when it waits
//! for an acknowledgement but sends rarely, within `unacked_within` when nobody waits (MQTT
//! QoS 0, CoAP NON). The writer commits when the earliest of those is due, taking
//! everything that queued meanwhile; while a commit runs, what arrives queues for the next.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::reading::Reading;
use crate::store::{SeriesState, Store};

use super::recording::Unrecorded;
use super::wear::{WriteMeter, WriteRate};

/// Readings waiting in the channel before submitters are made to wait.
const CHANNEL_CAPACITY: usize = 4096;
/// How often an idle writer looks for finished hours to compact.
const COMPACT_EVERY: Duration = Duration::from_secs(60);
/// (series, hour) pairs compacted per round, so commits are never held up for long.
const COMPACT_BATCH: usize = 32;
/// After a failed commit (a full card), how long readings are refused at once before the
/// writer tries the disk again.
const RETRY_AFTER: Duration = Duration::from_secs(15);
/// Free bytes for the hub's user on the file system holding `dir`; `None` when it does not
/// say (a FUSE file system that reports no size at all), so that no reserve applies.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    (stat.f_blocks > 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// What the disk said, without the database's own words (paths, table names).
fn disk_error(error: &crate::store::StoreError) -> &'static str {
    match error {
        crate::store::StoreError::Db(sqlx::Error::Database(e)) if e.code().as_deref() == Some("13") => "full",
        _ => "input/output error",
    }
}

/// Least time between the starts of two commits: however eagerly senders wait, at most
/// 1,000 commits (and their fsyncs) a second reach the card.
const MIN_COMMIT_GAP: Duration = Duration::from_millis(1);

/// The commit failed: the readings are not stored and must not be acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("readings could not be stored")]
pub struct CommitFailed;

/// The hub is shutting down and takes no more readings.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the hub is shutting down")]
pub struct Closed;

/// Resolves once the submitted readings are committed (or failed to be).
pub type Receipt = oneshot::Receiver<Result<(), CommitFailed>>;

struct Submission {
    readings: Vec<Reading>,
    done: Option<oneshot::Sender<Result<(), CommitFailed>>>,
    /// When it must be committed by.
    due: Instant,
}

/// How soon a sender that waits for its acknowledgement needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// It sends no more until acknowledged (or has more in flight): committed as soon as
    /// the disk allows, with whatever else is waiting.
    Waiting,
    /// It sends now and then: gathered with others for up to [`BatchPolicy::acked_within`].
    Quiet,
}

/// How long the writer may gather readings before committing them: the longer, the fewer
/// commits (each one writes pages and an fsync to the SD card), the more a power cut may
/// take of what nobody acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most time a quiet acknowledged submission waits for its commit.
    pub acked_within: Duration,
    /// Most time an unacknowledged submission waits for its commit.
    pub unacked_within: Duration,
    /// Most readings in one transaction.
    pub max_batch: usize,
    /// Free bytes the data directory's file system keeps: below this, readings are refused
    /// (logins, settings and what the owner does to make room still have it).
    pub reserve_bytes: u64,
}

/// Why readings are refused, while they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusing {
    /// Since when (hub time, ms).
    pub since_ms: i64,
    pub reason: String,
    /// Readings refused since then.
    pub refused: u64,
}

/// Whether the store takes readings, as the writer last found out. Shared with the API.
#[derive(Debug, Default)]
pub struct Storage(Mutex<Option<Refusing>>);

impl Storage {
    /// `None` while readings are taken.
    pub fn refusing(&self) -> Option<Refusing> {
        self.0.lock().map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    fn set(&self, value: Option<Refusing>) {
        match self.0.lock() {
            Ok(mut g) => *g = value,
            Err(p) => *p.into_inner() = value,
        }
    }

    fn count(&self, readings: usize) {
        if let Ok(mut g) = self.0.lock()
            && let Some(r) = g.as_mut()
        {
            r.refused += readings as u64;
        }
    }
}

/// An accepted reading and the data key it is sealed under (which says whose it is).
#[derive(Debug, Clone)]
pub struct Committed {
    pub reading: Reading,
    pub key: i64,
}

/// Handle for submitting readings. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    clock: Clock,
    store: Store,
    policy: BatchPolicy,
    storage: Arc<Storage>,
    tx: mpsc::Sender<Submission>,
    live: broadcast::Sender<Arc<[Committed]>>,
    accepted: broadcast::Sender<Arc<[Reading]>>,
    unrecorded: Arc<Unrecorded>,
    wear: Arc<WriteMeter>,
}

impl Ingest {
    /// The hub's time, which readings without a timestamp are stamped with.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The hub's clock.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Why readings are refused (a full card), or `None` while they are taken.
    pub fn refusing(&self) -> Option<Refusing> {
        self.storage.refusing()
    }

    /// What the hub has been writing to its storage, per day.
    pub fn write_rate(&self) -> Option<WriteRate> {
        self.wear.rate()
    }

    /// What the owner chose not to record (cloned by the parts of the hub that keep it).
    pub fn unrecorded(&self) -> &Arc<Unrecorded> {
        &self.unrecorded
    }

    /// Queues readings that need no acknowledgement (MQTT QoS 0, CoAP NON).
    pub async fn submit(&self, readings: Vec<Reading>) -> Result<(), Closed> {
        self.announce(&readings);
        let readings = self.recorded(readings);
        if readings.is_empty() {
            return Ok(());
        }
        let due = Instant::now() + self.policy.unacked_within;
        self.tx.send(Submission { readings, done: None, due }).await.map_err(|_| Closed)
    }

    /// Tells automations and live views about readings as soon as they are accepted, before
    /// their commit: a switch must not wait for the next group commit, nor a screen. Live
    /// views hear only readings someone owns, with the key that says whose. Never waits.
    fn announce(&self, readings: &[Reading]) {
        if self.accepted.receiver_count() > 0 {
            let _ = self.accepted.send(readings.into());
        }
        if self.live.receiver_count() > 0 {
            let ownership = self.store.ownership();
            let owned: Vec<Committed> = readings
                .iter()
                .filter_map(|r| Some(Committed { key: ownership.key_for(&r.device, r.ts)?, reading: r.clone() }))
                .collect();
            if !owned.is_empty() {
                let _ = self.live.send(owned.into());
            }
        }
    }

    /// Those of `readings` to be stored; the others are held in memory as their series'
    /// latest value.
    fn recorded(&self, readings: Vec<Reading>) -> Vec<Reading> {
        // Taken only for a reading not recorded: most homes choose none.
        let ownership = std::cell::OnceCell::new();
        self.unrecorded.split(readings, |r| ownership.get_or_init(|| self.store.ownership()).key_for(&r.device, r.ts))
    }

    /// Queues readings and returns a receipt that resolves after their commit. All readings
    /// of one submission commit in the same transaction, by when `urgency` says; one with
    /// nothing to record resolves at once.
    pub async fn submit_acked(&self, readings: Vec<Reading>, urgency: Urgency) -> Result<Receipt, Closed> {
        let (done, receipt) = oneshot::channel();
        self.announce(&readings);
        let readings = self.recorded(readings);
        if readings.is_empty() {
            let _ = done.send(Ok(()));
            return Ok(receipt);
        }
        let due = match urgency {
            Urgency::Waiting => Instant::now(),
            Urgency::Quiet => Instant::now() + self.policy.acked_within,
        };
        self.tx.send(Submission { readings, done: Some(done), due }).await.map_err(|_| Closed)?;
        Ok(receipt)
    }

    /// Every accepted submission that someone owns, in the order accepted. A slow receiver
    /// misses batches (it sees `Lagged`), it never slows ingest.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Committed]>> {
        self.live.subscribe()
    }

    /// Every accepted submission, before its commit (for automations). A slow receiver
    /// misses some (it sees `Lagged`); it never slows ingest.
    pub fn subscribe_accepted(&self) -> broadcast::Receiver<Arc<[Reading]>> {
        self.accepted.subscribe()
    }
}

/// Starts the writer of the store kept in `data_dir`. It runs until `shutdown`, then
/// commits what is queued and returns.
pub fn spawn_writer(
    store: Store,
    state: SeriesState,
    (policy, data_dir): (BatchPolicy, &Path),
    clock: Clock,
    shutdown: CancellationToken,
) -> (Ingest, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (live, _) = broadcast::channel(256);
    let (accepted, _) = broadcast::channel(4096);
    let storage = Arc::new(Storage::default());
    let writer = Writer {
        store: store.clone(),
        state,
        policy,
        clock: clock.clone(),
        data_dir: data_dir.to_owned(),
        storage: storage.clone(),
        retry_at: None,
        for_space: false,
        next_compact: Instant::now() + COMPACT_EVERY,
    };
    let handle = tokio::spawn(writer.run(rx, shutdown));
    let (unrecorded, wear) = (Arc::default(), Arc::default());
    (Ingest { clock, store, policy, storage, tx, live, accepted, unrecorded, wear }, handle)
}

struct Writer {
    store: Store,
    state: SeriesState,
    policy: BatchPolicy,
    clock: Clock,
    data_dir: PathBuf,
    storage: Arc<Storage>,
    /// While readings are refused: when to try the disk again.
    retry_at: Option<Instant>,
    /// Whether they are refused for want of space (rather than a failed write).
    for_space: bool,
    /// When compaction runs even if readings are waiting, so that a steady stream cannot
    /// put it off for ever.
    next_compact: Instant,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Submission>, shutdown: CancellationToken) {
        let mut stopping = false;
        let mut last_commit = Instant::now() - MIN_COMMIT_GAP;
        loop {
            let first = tokio::select! {
                biased;
                first = rx.recv() => first,
                () = shutdown.cancelled(), if !stopping => {
                    // Take nothing new; what is already queued is still committed below.
                    stopping = true;
                    rx.close();
                    continue;
                }
                () = tokio::time::sleep_until(self.next_compact) => {
                    self.idle();
                    self.compact_some(&rx).await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut due = first.due;
            let mut count = first.readings.len();
            let mut batch = vec![first];
            while count < self.policy.max_batch {
                // What queued during the last commit joins at once; then wait for more
                // until the earliest submission is due (and the card had its pause).
                let until = due.max(last_commit + MIN_COMMIT_GAP);
                let next = match rx.try_recv() {
                    Ok(next) => Some(next),
                    Err(_) if stopping || Instant::now() >= until => None,
                    Err(_) => tokio::select! {
                        biased;
                        () = shutdown.cancelled(), if !stopping => {
                            stopping = true;
                            rx.close();
                            None
                        }
                        next = tokio::time::timeout_at(until, rx.recv()) => next.ok().flatten(),
                    },
                };
                let Some(next) = next else { break };
                due = due.min(next.due);
                count += next.readings.len();
                batch.push(next);
            }
            last_commit = Instant::now();
            self.commit(batch).await;
            // Compaction while nothing waits for a commit, or once its time has come.
            if rx.is_empty() || Instant::now() >= self.next_compact {
                self.compact_some(&rx).await;
            }
        }
        tracing::debug!("writer stopped");
    }

    /// Nothing arrived for a while: a refusal for want of space ends once there is room
    /// (one for a failed write waits for a commit to succeed).
    fn idle(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() >= at) && self.for_space && self.short_of_space().is_none() {
            self.taking_again();
        }
    }

    /// Merges the small chunks of hours that have ended (see `Store::compact`), one hour of
    /// one series at a time: until readings are waiting, or a whole round when its time has
    /// come (at least every [`COMPACT_EVERY`]). Not while the disk refuses writes.
    async fn compact_some(&mut self, rx: &mpsc::Receiver<Submission>) {
        let forced = Instant::now() >= self.next_compact;
        self.next_compact = Instant::now() + COMPACT_EVERY;
        if self.retry_at.is_some() {
            return;
        }
        let hour = crate::store::codec::hour_of(self.clock.now_ms());
        if self.state.fold_due(hour) && (rx.is_empty() || forced) {
            let started = Instant::now();
            match self.store.fold(&mut self.state, hour).await {
                Ok(moved) => {
                    let (left, elapsed) = (self.state.recent_readings(), started.elapsed());
                    tracing::debug!(moved, left, ?elapsed, "folded recent readings");
                }
                Err(error) if error.is_disk() => {
                    tracing::warn!(%error, "folding recent readings failed; they stay where they are");
                    self.refusing(format!("the disk refused a write ({})", disk_error(&error)), false);
                    return;
                }
                Err(error) => tracing::warn!(%error, "folding recent readings failed; they stay where they are"),
            }
        }
        for (series, hour) in self.state.due_for_compaction(hour, COMPACT_BATCH) {
            if (!rx.is_empty() && !forced) || self.retry_at.is_some() {
                self.state.mark_due(series, hour);
                continue;
            }
            match self.store.compact(&mut self.state, series, hour).await {
                Ok(removed) => tracing::trace!(series, hour, removed, "compacted"),
                Err(error) if error.is_disk() => {
                    // Left as they were, tried again once the disk takes writes.
                    tracing::warn!(%error, series, hour, "compaction failed; chunks left as they are");
                    self.state.mark_due(series, hour);
                    self.refusing(format!("the disk refused a write ({})", disk_error(&error)), false);
                }
                // Anything else (a chunk that no longer opens) would fail again: left as it
                // is, as it reads, and said once.
                Err(error) => tracing::warn!(%error, series, hour, "compaction failed; chunks left as they are"),
            }
        }
    }

    async fn commit(&mut self, batch: Vec<Submission>) {
        let mut readings = Vec::with_capacity(batch.iter().map(|s| s.readings.len()).sum());
        let mut receipts = Vec::with_capacity(batch.len());
        for submission in batch {
            readings.extend(submission.readings);
            receipts.extend(submission.done);
        }
        let refuse = |storage: &Storage, receipts: Vec<oneshot::Sender<Result<(), CommitFailed>>>, n| {
            // Nothing is acknowledged: devices keep their readings and send them again.
            storage.count(n);
            for receipt in receipts {
                let _ = receipt.send(Err(CommitFailed));
            }
        };
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            refuse(&self.storage, receipts, readings.len());
            return;
        }
        if let Some(reason) = self.short_of_space() {
            self.refusing(reason, true);
            refuse(&self.storage, receipts, readings.len());
            return;
        }
        let outcome = self.store.commit(&mut self.state, &readings).await;
        match outcome {
            Ok(done) => {
                tracing::trace!(readings = done.readings, chunks = done.chunks, elapsed = ?now.elapsed(), "committed");
                for receipt in receipts {
                    let _ = receipt.send(Ok(()));
                }
                if self.retry_at.is_some() {
                    self.taking_again();
                }
            }
            Err(error) if error.is_disk() => {
                tracing::error!(%error, readings = readings.len(), "commit failed; readings not acknowledged");
                self.refusing(format!("the disk refused a write ({})", disk_error(&error)), false);
                refuse(&self.storage, receipts, readings.len());
            }
            Err(error) => {
                // Not the disk (a busy database, a key shredded meanwhile): this batch only.
                tracing::error!(%error, readings = readings.len(), "commit failed; readings not acknowledged");
                refuse(&self.storage, receipts, readings.len());
            }
        }
    }

    /// Readings are taken again; said once.
    fn taking_again(&mut self) {
        self.retry_at = None;
        if let Some(was) = self.storage.refusing() {
            let seconds = (self.clock.now_ms() - was.since_ms) / 1000;
            tracing::warn!(seconds, refused = was.refused, "the store takes readings again");
            self.storage.set(None);
        }
    }

    /// Why readings must be refused before trying: the file system is down to its reserve.
    fn short_of_space(&self) -> Option<String> {
        if self.policy.reserve_bytes == 0 {
            return None;
        }
        let free = free_bytes(&self.data_dir)?;
        (free < self.policy.reserve_bytes).then(|| {
            format!(
                "only {} MB free; readings are refused below {} MB",
                free / 1_000_000,
                self.policy.reserve_bytes / 1_000_000
            )
        })
    }

    /// Starts (or goes on) refusing readings for `reason` (`for_space`: the reserve, which
    /// the writer checks again when idle), said once in the log; the disk is tried again
    /// after [`RETRY_AFTER`].
    fn refusing(&mut self, reason: String, for_space: bool) {
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        self.for_space = for_space;
        if self.storage.refusing().is_none() {
            tracing::error!(%reason, retry_every = ?RETRY_AFTER, "refusing readings (not acknowledged) until the store takes them again");
            self.storage.set(Some(Refusing { since_ms: self.clock.now_ms(), reason, refused: 0 }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::crypto::Key;
    use crate::ingest::recording::Choice;
    use crate::reading::Value;
    use crate::store::readings::Keys;

    /// A writer that gathers quiet acknowledged readings for 10 s and the others for 60 s:
    /// anything answered in well under that was committed because someone waited.
    async fn writer(dir: &std::path::Path) -> (Ingest, Store, CancellationToken, tokio::task::JoinHandle<()>) {
        let store = Store::open(&dir.join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
        assert!(store.create_device("dev1", "Device", "secret", 0).await.unwrap());
        let state = store.load_series_state().await.unwrap();
        let policy = BatchPolicy {
            acked_within: Duration::from_secs(10),
            unacked_within: Duration::from_secs(60),
            max_batch: 10_000,
            reserve_bytes: 0,
        };
        let stop = CancellationToken::new();
        let (ingest, handle) = spawn_writer(store.clone(), state, (policy, dir), Clock::system(), stop.clone());
        (ingest, store, stop, handle)
    }

    fn reading(ts: i64) -> Vec<Reading> {
        vec![Reading { device: "dev1".into(), metric: "t".into(), ts, value: Value::Number(ts as f64), unit: None }]
    }

    #[tokio::test]
    async fn a_sender_waiting_on_each_answer_is_committed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, store, _stop, _writer) = writer(dir.path()).await;
        // Fifty one at a time: gathered for their 10 s each, this would take minutes.
        let started = Instant::now();
        for ts in 0..50 {
            let receipt = ingest.submit_acked(reading(1_000 + ts), Urgency::Waiting).await.unwrap();
            receipt.await.unwrap().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        let latest = store.latest_values(Some("dev1"), crate::store::readings::Keys::All).await.unwrap();
        assert_eq!(latest.len(), 1);
    }

    #[tokio::test]
    async fn a_value_not_recorded_is_answered_at_once_held_as_latest_and_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, store, stop, writer) = writer(dir.path()).await;
        let mut live = ingest.subscribe();
        ingest.unrecorded().choose("dev1", Choice { all: false, values: ["t".to_owned()].into() });
        // Gathered for 10 s if it were stored; with nothing to store, answered before any
        // commit could have run.
        let mut receipt = ingest.submit_acked(reading(1_000), Urgency::Quiet).await.unwrap();
        assert!(matches!(receipt.try_recv(), Ok(Ok(()))));
        ingest.submit(reading(2_000)).await.unwrap();
        // Heard live, with whose it is; held as the latest value under that key only.
        assert_eq!(live.recv().await.unwrap()[0].reading.ts, 1_000);
        let key = store.ownership().key_for("dev1", 2_000).unwrap();
        let mut latest = store.latest_values(Some("dev1"), Keys::All).await.unwrap();
        ingest.unrecorded().merge_into(&mut latest, Some("dev1"), Keys::Only(&BTreeSet::new()));
        assert!(latest.is_empty());
        ingest.unrecorded().merge_into(&mut latest, Some("dev1"), Keys::Only(&[key].into()));
        assert_eq!((latest.len(), latest[0].ts), (1, 2_000));
        // Recorded values beside it are stored as ever.
        let other = Reading { metric: "rssi".into(), ..reading(3_000).remove(0) };
        ingest.submit(vec![other]).await.unwrap();
        stop.cancel();
        writer.await.unwrap();
        let stored = store.latest_values(Some("dev1"), Keys::All).await.unwrap();
        assert_eq!(stored.iter().map(|l| l.metric.as_str()).collect::<Vec<_>>(), ["rssi"]);
    }

    #[tokio::test]
    async fn quiet_readings_are_gathered_and_ride_along_with_a_waiting_one() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, _store, stop, writer) = writer(dir.path()).await;
        let mut quiet = ingest.submit_acked(reading(1_000), Urgency::Quiet).await.unwrap();
        ingest.submit(reading(2_000)).await.unwrap();
        // Gathered: not committed yet.
        assert!(tokio::time::timeout(Duration::from_millis(150), &mut quiet).await.is_err());
        let waiting = ingest.submit_acked(reading(3_000), Urgency::Waiting).await.unwrap();
        let both = tokio::time::timeout(Duration::from_secs(5), async { (quiet.await, waiting.await) }).await;
        let (quiet, waiting) = both.expect("the waiting reading's commit takes the gathered ones with it");
        assert!(matches!((quiet, waiting), (Ok(Ok(())), Ok(Ok(())))));
        // Stopping commits what is gathered at once.
        let last = ingest.submit_acked(reading(4_000), Urgency::Quiet).await.unwrap();
        stop.cancel();
        let last = tokio::time::timeout(Duration::from_secs(5), last).await;
        assert!(matches!(last, Ok(Ok(Ok(())))), "committed at shutdown, not after its 10 s");
        tokio::time::timeout(Duration::from_secs(5), writer).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn live_views_hear_a_reading_when_it_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, _store, _stop, _writer) = writer(dir.path()).await;
        let mut live = ingest.subscribe();
        ingest.submit(reading(5_000)).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(5), live.recv()).await;
        let heard = heard.expect("heard before its commit, 60 s away").unwrap();
        assert_eq!(heard.len(), 1);
        assert_eq!(heard[0].reading.ts, 5_000);
    }
}
