//! The encrypted SQLite store. Owns the connection pool, the schema (migrations), the data
//! keys and every SQL statement. It must not parse protocols or know about HTTP.

mod accounts;
pub mod codec;
mod devices;
pub mod readings;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use accounts::{Session, User};
pub use devices::DeviceRecord;
pub use readings::{Bucket, CommitBatch, LatestValue, SeriesInfo, SeriesState};

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
    #[error("data key {0} is missing or destroyed")]
    NoKey(i64),
}

/// The subject of the data key used for readings until per-subject keys arrive: the
/// household as a whole.
const HOUSEHOLD_SUBJECT: &str = "household";

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    hub_key: Arc<Key>,
    data_keys: Arc<RwLock<HashMap<i64, Key>>>,
    active_key: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("active_key", &self.active_key).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies migrations, and loads or
    /// creates the data keys.
    ///
    /// WAL with `synchronous = FULL`: a transaction that returned is on disk, so a reading
    /// acknowledged after its commit survives a power cut.
    pub async fn open(path: &Path, hub_key: Key) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        let mut store =
            Self { pool, hub_key: Arc::new(hub_key), data_keys: Arc::new(RwLock::new(HashMap::new())), active_key: 0 };
        store.active_key = store.load_data_keys().await?;
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

    async fn load_data_keys(&self) -> Result<i64, StoreError> {
        let rows = sqlx::query("SELECT id, subject, wrapped FROM data_keys WHERE destroyed_ms IS NULL")
            .fetch_all(&self.pool)
            .await?;
        let mut active = None;
        {
            let mut keys = self.data_keys.write().map_err(|_| StoreError::Corrupt("key cache poisoned".into()))?;
            for row in rows {
                let id: i64 = row.try_get("id")?;
                let subject: String = row.try_get("subject")?;
                let wrapped: Vec<u8> = row.try_get("wrapped")?;
                keys.insert(id, self.hub_key.unwrap_key(&wrapped, &data_key_context(id))?);
                if subject == HOUSEHOLD_SUBJECT {
                    active = Some(id);
                }
            }
        }
        match active {
            Some(id) => Ok(id),
            None => self.create_data_key(HOUSEHOLD_SUBJECT).await,
        }
    }

    async fn create_data_key(&self, subject: &str) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO data_keys (subject, created_ms) VALUES (?, ?) RETURNING id")
            .bind(subject)
            .bind(crate::clock::now_ms())
            .fetch_one(&mut *tx)
            .await?;
        let key = Key::generate()?;
        let wrapped = self.hub_key.wrap(&key, &data_key_context(id))?;
        sqlx::query("UPDATE data_keys SET wrapped = ? WHERE id = ?").bind(wrapped).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.data_keys.write().map_err(|_| StoreError::Corrupt("key cache poisoned".into()))?.insert(id, key);
        Ok(id)
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
