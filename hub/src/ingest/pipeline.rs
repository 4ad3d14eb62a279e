//! The one path every reading takes after a protocol accepted it: a bounded channel into a
//! single writer task that batches submissions into one transaction (group commit), then
//! tells each submitter that its readings are durable and tells live views what is new.
//! Protocol loops only ever wait on the channel's capacity, never on the disk.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::reading::Reading;
use crate::store::{SeriesState, Store};

/// Readings waiting in the channel before submitters are made to wait.
const CHANNEL_CAPACITY: usize = 4096;
/// How often an idle writer looks for finished hours to compact.
const COMPACT_EVERY: Duration = Duration::from_secs(60);
/// (series, hour) pairs compacted per round, so commits are never held up for long.
const COMPACT_BATCH: usize = 32;

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
}

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Least time between two commits: bounds fsyncs per second on an SD card. A reading
    /// that arrives while the writer is idle and this long after the last commit is
    /// committed at once.
    pub commit_interval: Duration,
    /// Most readings in one transaction.
    pub max_batch: usize,
}

/// A stored reading and the data key it was sealed under (which says whose it is).
#[derive(Debug, Clone)]
pub struct Committed {
    pub reading: Reading,
    pub key: i64,
}

/// Handle for submitting readings. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    clock: Clock,
    tx: mpsc::Sender<Submission>,
    live: broadcast::Sender<Arc<[Committed]>>,
    accepted: broadcast::Sender<Arc<[Reading]>>,
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

    /// Queues readings that need no acknowledgement (MQTT QoS 0, CoAP NON).
    pub async fn submit(&self, readings: Vec<Reading>) -> Result<(), Closed> {
        self.announce(&readings);
        self.tx.send(Submission { readings, done: None }).await.map_err(|_| Closed)
    }

    /// Tells automations about readings as soon as they are accepted, before their commit:
    /// a switch must not wait for the next group commit. Never waits.
    fn announce(&self, readings: &[Reading]) {
        if self.accepted.receiver_count() > 0 {
            let _ = self.accepted.send(readings.into());
        }
    }

    /// Queues readings and returns a receipt that resolves after their commit. All readings
    /// of one submission commit in the same transaction.
    pub async fn submit_acked(&self, readings: Vec<Reading>) -> Result<Receipt, Closed> {
        let (done, receipt) = oneshot::channel();
        self.announce(&readings);
        self.tx.send(Submission { readings, done: Some(done) }).await.map_err(|_| Closed)?;
        Ok(receipt)
    }

    /// Every committed batch, in commit order. A slow receiver misses batches (it sees
    /// `Lagged`), it never slows ingest.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Committed]>> {
        self.live.subscribe()
    }

    /// Every accepted submission, before its commit (for automations). A slow receiver
    /// misses some (it sees `Lagged`); it never slows ingest.
    pub fn subscribe_accepted(&self) -> broadcast::Receiver<Arc<[Reading]>> {
        self.accepted.subscribe()
    }
}

/// Starts the writer. It runs until `shutdown`, then commits what is queued and returns.
pub fn spawn_writer(
    store: Store,
    state: SeriesState,
    policy: BatchPolicy,
    clock: Clock,
    shutdown: CancellationToken,
) -> (Ingest, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (live, _) = broadcast::channel(256);
    let (accepted, _) = broadcast::channel(4096);
    let writer = Writer { store, state, policy, live: live.clone(), clock: clock.clone() };
    let handle = tokio::spawn(writer.run(rx, shutdown));
    (Ingest { clock, tx, live, accepted }, handle)
}

struct Writer {
    store: Store,
    state: SeriesState,
    policy: BatchPolicy,
    live: broadcast::Sender<Arc<[Committed]>>,
    clock: Clock,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Submission>, shutdown: CancellationToken) {
        let mut last_commit = Instant::now() - self.policy.commit_interval;
        loop {
            let first = tokio::select! {
                biased;
                first = rx.recv() => first,
                () = shutdown.cancelled() => {
                    // Take nothing new; what is already queued is still committed below.
                    rx.close();
                    rx.recv().await
                }
                () = tokio::time::sleep(COMPACT_EVERY) => {
                    self.compact_some().await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let mut count = batch[0].readings.len();
            let deadline = last_commit + self.policy.commit_interval;
            while count < self.policy.max_batch {
                let next = if Instant::now() >= deadline {
                    rx.try_recv().ok()
                } else {
                    tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
                };
                let Some(next) = next else { break };
                count += next.readings.len();
                batch.push(next);
            }
            self.commit(batch).await;
            last_commit = Instant::now();
            self.compact_some().await;
        }
        tracing::debug!("writer stopped");
    }

    /// Merges the small chunks of hours that have ended (see `Store::compact`).
    async fn compact_some(&mut self) {
        let hour = crate::store::codec::hour_of(self.clock.now_ms());
        for (series, hour) in self.state.due_for_compaction(hour, COMPACT_BATCH) {
            match self.store.compact(&mut self.state, series, hour).await {
                Ok(removed) => tracing::trace!(series, hour, removed, "compacted"),
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
        let started = Instant::now();
        let outcome = self.store.commit(&mut self.state, &readings).await;
        match outcome {
            Ok(done) => {
                tracing::trace!(readings = done.readings, chunks = done.chunks, elapsed = ?started.elapsed(), "committed");
                for receipt in receipts {
                    let _ = receipt.send(Ok(()));
                }
                let stored: Vec<Committed> = readings
                    .into_iter()
                    .zip(done.keys)
                    .filter_map(|(reading, key)| Some(Committed { reading, key: key? }))
                    .collect();
                if !stored.is_empty() {
                    let _ = self.live.send(stored.into());
                }
            }
            Err(error) => {
                // Nothing is acknowledged: devices keep their readings and send them again.
                tracing::error!(%error, readings = readings.len(), "commit failed; readings not acknowledged");
                for receipt in receipts {
                    let _ = receipt.send(Err(CommitFailed));
                }
            }
        }
    }
}
