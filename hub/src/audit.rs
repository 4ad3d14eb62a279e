//! The security log the owner reads: setup, logins and their failures (with the source
//! address), credential and token changes, device and class changes, tenancy events, guests
//! and grants. Bounded in size and age; it never holds a reading value (entries are made
//! only from the fixed words below, names and addresses).
//!
//! Failures come in floods, so they are counted in memory per (kind, whose, source address)
//! and written as one entry with its count (and the first name tried) once a minute, and
//! whenever the log is read: a flood costs one row per source a minute, not one per
//! attempt or per name tried.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_model::account::SecurityEvent;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::consent::Subject;
use crate::store::{Store, StoreError};

/// Entries kept at most, and for how long.
const MAX_ROWS: i64 = 10_000;
const MAX_AGE_MS: i64 = 180 * 24 * 3600 * 1000;
/// Distinct (kind, whose, source) failures counted between writes; past this, further new
/// ones are counted under "others".
const MAX_PENDING: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    detail: String,
    count: u64,
}

/// Counted failures, by (kind, whose, source): the first name tried, the count, the words.
type Pending = HashMap<(&'static str, Option<Subject>, String), (String, u64, &'static str)>;

/// Writes the security log.
#[derive(Clone)]
pub struct Audit {
    store: Store,
    clock: Clock,
    pending: Arc<Mutex<Pending>>,
}

impl Audit {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self { store, clock, pending: Arc::default() }
    }

    /// Records one event of `subject`'s (`None`: the hub's own, read by the owner) now. A
    /// failure to write is logged, never passed on: the action it describes has happened.
    pub async fn record(
        &self,
        kind: &'static str,
        subject: Option<Subject>,
        (actor, source): (Option<&str>, Option<IpAddr>),
        detail: String,
    ) {
        let body = Body { actor: actor.map(str::to_owned), source: source.map(|s| s.to_string()), detail, count: 1 };
        self.write(kind, subject, &body).await;
    }

    /// Counts a failure, written with its count at the next flush.
    pub fn failure(
        &self,
        kind: &'static str,
        subject: Option<Subject>,
        (actor, source): (&str, IpAddr),
        detail: &'static str,
    ) {
        let Ok(mut pending) = self.pending.lock() else { return };
        let mut key = (kind, subject, source.to_string());
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            // Past this, the hub's own entry counts them, with no name or address.
            key = (kind, None, "others".to_owned());
        }
        let actor: String = actor.chars().take(64).collect();
        pending.entry(key).or_insert((actor, 0, detail)).1 += 1;
    }

    /// Writes the counted failures, in a task of its own: a reader that goes away midway
    /// does not lose them.
    pub async fn flush(&self) {
        let pending = self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        if pending.is_empty() {
            return;
        }
        let audit = self.clone();
        let _ = tokio::spawn(async move {
            for ((kind, subject, source), (actor, count, detail)) in pending {
                let actor = (!actor.is_empty()).then_some(actor);
                let body = Body { actor, source: Some(source), detail: detail.to_owned(), count };
                audit.write(kind, subject, &body).await;
            }
        })
        .await;
    }

    async fn write(&self, kind: &'static str, subject: Option<Subject>, body: &Body) {
        let at = (self.clock.now_ms(), subject);
        let result = match serde_json::to_vec(body) {
            Ok(bytes) => self.store.add_security_event(at, kind, &bytes, (MAX_ROWS, MAX_AGE_MS)).await,
            Err(e) => Err(StoreError::Corrupt(e.to_string())),
        };
        if let Err(error) = result {
            tracing::error!(%error, kind, "could not write the security log");
        }
    }

    /// `subject`'s newest entries, after writing what was counted.
    pub async fn read(&self, subject: Subject, limit: i64) -> Result<Vec<SecurityEvent>, StoreError> {
        self.flush().await;
        let rows = self.store.security_events(subject, limit).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, at, kind, body)| {
                let b: Body = serde_json::from_slice(&body).ok()?;
                Some(SecurityEvent { id, at, kind, actor: b.actor, source: b.source, detail: b.detail, count: b.count })
            })
            .collect())
    }
}

/// Writes counted failures once a minute until `shutdown`, and once more then.
pub async fn flush_periodically(audit: Audit, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(60)) => audit.flush().await,
        }
    }
    audit.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    #[tokio::test]
    async fn a_flood_of_failures_is_one_entry_per_source_with_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
        let audit = Audit::new(store, Clock::default());
        let stranger: IpAddr = "192.168.1.66".parse().unwrap();
        let home: IpAddr = "192.168.1.20".parse().unwrap();
        let owner = Some(Subject::Owner);
        for _ in 0..10_000 {
            audit.failure("login failed", owner, ("owner", stranger), "wrong password");
        }
        audit.failure("login failed", owner, ("owner", home), "wrong password");
        audit.record("login", owner, (Some("owner"), Some(home)), "logged in".into()).await;
        // A tenant's entries are theirs: the owner does not see when they log in.
        audit.record("login", Some(Subject::Tenancy(1)), (Some("tessa"), Some(home)), "logged in".into()).await;
        let log = audit.read(Subject::Owner, 100).await.unwrap();
        assert_eq!(log.len(), 3, "{log:?}");
        let flood = log.iter().find(|e| e.source.as_deref() == Some("192.168.1.66")).unwrap();
        assert_eq!((flood.kind.as_str(), flood.count), ("login failed", 10_000));
        assert_eq!(audit.read(Subject::Tenancy(1), 100).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
        for n in 0..50 {
            store.add_security_event((n, None), "x", b"{}", (10, 1_000_000)).await.unwrap();
        }
        assert_eq!(store.security_events(Subject::Owner, 100).await.unwrap().len(), 10);
        store.add_security_event((5_000_000, None), "x", b"{}", (10, 1_000_000)).await.unwrap();
        assert_eq!(store.security_events(Subject::Owner, 100).await.unwrap().len(), 1, "old entries age out");
    }
}
