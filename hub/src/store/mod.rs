//! The encrypted SQLite store. Owns the connection pool, the schema (migrations), the data
//! keys and every SQL statement. It must not parse protocols or know about HTTP.

mod accounts;
mod automations;
pub mod codec;
mod consent;
mod devices;
pub mod mqtt;
mod people;
pub mod readings;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use accounts::{Role, Session, User};
pub use automations::{OutboxRow, OutboxStatus, RuleRow, TimerRow};
pub use consent::{LogCheck, LogRow, NewLogEntry, ReceiptRecord, RecipientRecord, RequestRecord};
pub use devices::{Chosen, DeviceRecord};
pub use people::{AcceptError, ClassProposalRecord, GuestRecord, InviteKind, TenancyRecord};
pub use readings::{CommitBatch, LatestValue, SeriesInfo, SeriesState};

use crate::consent::{Ownership, Subject};
use crate::crypto::{self, Key};

/// Errors from the store. `Db` carries detail for the log; the API turns it into a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("crypto: {0}")]
    Crypto(#[from] crypto::Error),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("stored data is malformed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("data key {0} is missing or destroyed")]
    NoKey(i64),
    #[error("the subject has no data key (its data was shredded)")]
    NoSubjectKey,
}

impl StoreError {
    /// Whether the disk refused a write: full (SQLite's `SQLITE_FULL`), or an I/O error
    /// (`SQLITE_IOERR`, with its extended codes). Not a busy database or missing key.
    pub fn is_disk(&self) -> bool {
        let Self::Db(sqlx::Error::Database(e)) = self else {
            return matches!(self, Self::Db(sqlx::Error::Io(_)));
        };
        e.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|code| matches!(code & 0xff, 10 | 13))
    }
}

/// Who owns which reading, with the key each subject's readings are sealed under. The
/// writer takes one snapshot per commit; changes swap in a new one.
#[derive(Debug, Default)]
pub struct OwnershipSnapshot {
    pub rule: Ownership,
    /// The key new readings of each subject are sealed under. A shredded tenancy has none,
    /// so nothing more can be stored for it.
    pub sealing_key: HashMap<Subject, i64>,
    /// Every live key of each subject (what that subject may read).
    pub keys: HashMap<Subject, BTreeSet<i64>>,
}

impl OwnershipSnapshot {
    /// The key a reading of `device` made at `ts` is sealed under; `None`: not stored.
    pub fn key_for(&self, device: &str, ts: i64) -> Option<i64> {
        self.sealing_key.get(&self.rule.subject_at(device, ts)?).copied()
    }
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    hub_key: Arc<Key>,
    data_keys: Arc<RwLock<HashMap<i64, Key>>>,
    ownership: Arc<RwLock<Arc<OwnershipSnapshot>>>,
    /// Serialises appends to the hash-chained access log.
    log_lock: Arc<tokio::sync::Mutex<()>>,
    /// Told each tenancy that was shredded, so that nothing in memory outlives its data.
    shredded: tokio::sync::broadcast::Sender<i64>,
    /// Latest values newer than the `latest` table, by series (see `Store::commit`).
    fresh: Arc<Mutex<HashMap<i64, readings::Fresh>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// A write transaction, begun IMMEDIATE: it takes the write lock at once (waiting up to
    /// the busy timeout), so one that reads before it writes cannot fail with
    /// SQLITE_BUSY_SNAPSHOT because another connection committed in between (as the hub's
    /// first start once did when a device was already publishing).
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Opens (creating if needed) the database at `path`, applies migrations, and loads or
    /// creates the data keys (a new one as made at `now`).
    ///
    /// WAL with `synchronous = FULL`: a transaction that returned is on disk, so a reading
    /// acknowledged after its commit survives a power cut.
    pub async fn open(path: &Path, hub_key: Key, now: i64) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted rows (a destroyed key, above all) are overwritten, not left in free pages.
            .pragma("secure_delete", "on")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        let migrator = sqlx::migrate!("../migrations");
        // An upgrade that rewrites a big table (migration 18 copies every chunk) can take
        // minutes on a card with years of readings: say so, rather than seem to hang.
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&pool).await.ok().flatten();
        let newest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let upgrading = applied.filter(|&applied| applied < newest);
        if let Some(from) = upgrading {
            tracing::info!(from, to = newest, "upgrading the database (once; minutes for a large one)");
        }
        let started = std::time::Instant::now();
        migrator.run(&pool).await?;
        if upgrading.is_some() {
            tracing::info!(elapsed = ?started.elapsed(), "database upgraded");
        }
        let store = Self {
            pool,
            hub_key: Arc::new(hub_key),
            data_keys: Arc::new(RwLock::new(HashMap::new())),
            ownership: Arc::default(),
            log_lock: Arc::default(),
            shredded: tokio::sync::broadcast::channel(16).0,
            fresh: Arc::default(),
        };
        store.load_data_keys(now).await?;
        store.reload_ownership().await?;
        Ok(store)
    }

    /// The pool, for tests and benchmarks that compare against plain SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_data_keys(&self, now: i64) -> Result<(), StoreError> {
        let rows = sqlx::query("SELECT id, subject, wrapped FROM data_keys WHERE destroyed_ms IS NULL")
            .fetch_all(&self.pool)
            .await?;
        let mut has_owner_key = false;
        {
            let mut keys = self.data_keys.write().map_err(|_| StoreError::Corrupt("key cache poisoned".into()))?;
            for row in rows {
                let id: i64 = row.try_get("id")?;
                let subject: String = row.try_get("subject")?;
                let wrapped: Vec<u8> = row.try_get("wrapped")?;
                keys.insert(id, self.hub_key.unwrap_key(&wrapped, &data_key_context(id))?);
                has_owner_key |= subject.parse() == Ok(Subject::Owner);
            }
        }
        if !has_owner_key {
            let mut tx = self.write().await?;
            let (id, key) = self.create_data_key(&mut tx, Subject::Owner, now).await?;
            tx.commit().await?;
            self.cache_key(id, key)?;
        }
        Ok(())
    }

    /// Creates and wraps a data key inside `tx`. Cache it with `cache_key` once committed.
    async fn create_data_key(
        &self,
        tx: &mut sqlx::SqliteConnection,
        subject: Subject,
        now: i64,
    ) -> Result<(i64, Key), StoreError> {
        let id: i64 = sqlx::query_scalar("INSERT INTO data_keys (subject, created_ms) VALUES (?, ?) RETURNING id")
            .bind(subject.to_string())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let key = Key::generate()?;
        let wrapped = self.hub_key.wrap(&key, &data_key_context(id))?;
        sqlx::query("UPDATE data_keys SET wrapped = ? WHERE id = ?").bind(wrapped).bind(id).execute(&mut *tx).await?;
        Ok((id, key))
    }

    fn cache_key(&self, id: i64, key: Key) -> Result<(), StoreError> {
        self.data_keys.write().map_err(|_| StoreError::Corrupt("key cache poisoned".into()))?.insert(id, key);
        Ok(())
    }

    /// The current ownership snapshot.
    pub fn ownership(&self) -> Arc<OwnershipSnapshot> {
        self.ownership.read().map_or_else(|p| p.into_inner().clone(), |o| o.clone())
    }

    /// Tenancies shredded from now on (by the tenant, or when their retention ran out).
    pub fn subscribe_shredded(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.shredded.subscribe()
    }

    /// The keys whose readings belong to `subject`.
    pub fn keys_of(&self, subject: Subject) -> BTreeSet<i64> {
        self.ownership().keys.get(&subject).cloned().unwrap_or_default()
    }

    /// The keys of the readings `device`'s own credentials may read back (see
    /// [`Ownership::holder`]).
    pub fn device_keys(&self, device: &str) -> BTreeSet<i64> {
        let ownership = self.ownership();
        ownership.keys.get(&ownership.rule.holder(device)).cloned().unwrap_or_default()
    }

    /// Runs `f` with data key `id`.
    fn with_data_key<T>(&self, id: i64, f: impl FnOnce(&Key) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let keys = self.data_keys.read().map_err(|_| StoreError::Corrupt("key cache poisoned".into()))?;
        let key = keys.get(&id).ok_or(StoreError::NoKey(id))?;
        f(key)
    }
}

/// A wrapped data key is bound to its row: it cannot be moved to another id.
fn data_key_context(id: i64) -> Vec<u8> {
    format!("data-key:{id}").into_bytes()
}
