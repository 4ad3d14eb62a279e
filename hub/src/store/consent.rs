//! Recipients, data requests, grants, receipts, the receipt-signing key and the
//! hash-chained access log. Shared readings are read only through a [`Permit`].

use std::collections::BTreeSet;

use sqlx::Row;
use zeroize::Zeroizing;

use super::readings::Keys;
use super::{Store, StoreError};
use crate::consent::log::{self, Entry};
use crate::consent::receipt::ReceiptSigner;
use crate::consent::{GrantRecord, Permit, Terms};
use crate::crypto;
use crate::reading::Value;
use hearth_model::consent::{LogKind, ReceiptEvent, RequestStatus};

/// A third party registered to ask for data.
#[derive(Debug, Clone)]
pub struct RecipientRecord {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub registered_by: i64,
    pub created: i64,
    pub secret_hash: Vec<u8>,
}

/// A data request as stored.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub id: i64,
    pub recipient_id: String,
    pub recipient: String,
    pub recipient_kind: String,
    pub subject_id: i64,
    pub terms: Terms,
    pub created: i64,
    pub status: RequestStatus,
    pub decided: Option<i64>,
}

/// A signed receipt.
#[derive(Debug, Clone)]
pub struct ReceiptRecord {
    pub id: String,
    pub grant_id: String,
    pub event: ReceiptEvent,
    pub created: i64,
    pub jws: String,
}

/// What checking the access log found: the chain (entries verified, or where it breaks),
/// and, when one was given, whether the log still matches a checkpoint.
#[derive(Debug)]
pub struct LogCheck {
    pub chain: Result<usize, log::Broken>,
    pub checkpoint: Option<Result<(), log::CheckpointError>>,
}

/// One access log row with its chain hashes.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub entry: Entry,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// What is appended to the access log (the store numbers and chains it).
#[derive(Debug, Clone)]
pub struct NewLogEntry<'a> {
    pub ts: i64,
    pub kind: LogKind,
    pub subject_id: i64,
    pub recipient_id: &'a str,
    pub grant_id: Option<&'a str>,
    pub detail: serde_json::Value,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn recipient(row: sqlx::sqlite::SqliteRow) -> Result<RecipientRecord, StoreError> {
    Ok(RecipientRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        registered_by: row.try_get("registered_by")?,
        created: row.try_get("created_ms")?,
        secret_hash: row.try_get("secret_hash")?,
    })
}

fn request(row: sqlx::sqlite::SqliteRow) -> Result<RequestRecord, StoreError> {
    Ok(RequestRecord {
        id: row.try_get("id")?,
        recipient_id: row.try_get("recipient_id")?,
        recipient: row.try_get("name")?,
        recipient_kind: row.try_get("kind")?,
        subject_id: row.try_get("subject_id")?,
        terms: serde_json::from_str(&row.try_get::<String, _>("terms")?).map_err(corrupt)?,
        created: row.try_get("created_ms")?,
        status: row.try_get::<String, _>("status")?.parse().map_err(corrupt)?,
        decided: row.try_get("decided_ms")?,
    })
}

fn grant(row: sqlx::sqlite::SqliteRow) -> Result<GrantRecord, StoreError> {
    Ok(GrantRecord {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        recipient_id: row.try_get("recipient_id")?,
        subject_id: row.try_get("subject_id")?,
        terms: serde_json::from_str(&row.try_get::<String, _>("terms")?).map_err(corrupt)?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
    })
}

fn receipt(row: sqlx::sqlite::SqliteRow) -> Result<ReceiptRecord, StoreError> {
    Ok(ReceiptRecord {
        id: row.try_get("id")?,
        grant_id: row.try_get("grant_id")?,
        event: row.try_get::<String, _>("event")?.parse().map_err(corrupt)?,
        created: row.try_get("created_ms")?,
        jws: row.try_get("jws")?,
    })
}

const REQUEST_SELECT: &str = "SELECT q.id, q.recipient_id, r.name, r.kind, q.subject_id, q.terms, q.created_ms,
    q.status, q.decided_ms FROM data_requests q JOIN recipients r ON r.id = q.recipient_id";
const GRANT_SELECT: &str =
    "SELECT id, request_id, recipient_id, subject_id, terms, created_ms, expires_ms, revoked_ms FROM grants";

impl Store {
    /// The receipt-signing key, created on first use and kept sealed with the hub key.
    pub async fn receipt_signer(&self, now: i64) -> Result<ReceiptSigner, StoreError> {
        let row = sqlx::query("SELECT id, sealed FROM signing_keys ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            let id: i64 = row.try_get("id")?;
            let sealed: Vec<u8> = row.try_get("sealed")?;
            let seed = Zeroizing::new(self.hub_key.open(&sealed, format!("signing-key:{id}").as_bytes())?);
            let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| corrupt("signing key length"))?;
            return Ok(ReceiptSigner::from_seed(seed));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        crypto::random_bytes(seed.as_mut())?;
        let signer = ReceiptSigner::from_seed(&seed);
        let mut tx = self.write().await?;
        let id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM signing_keys").fetch_one(&mut *tx).await?;
        let sealed = self.hub_key.seal(seed.as_ref(), format!("signing-key:{id}").as_bytes())?;
        sqlx::query("INSERT INTO signing_keys (id, sealed, public_key, created_ms) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(sealed)
            .bind(signer.public_key().as_bytes().as_slice())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(signer)
    }

    pub async fn create_recipient(&self, r: &RecipientRecord, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO recipients (id, name, kind, secret_hash, registered_by, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.name)
        .bind(&r.kind)
        .bind(&r.secret_hash)
        .bind(r.registered_by)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An active (not removed) recipient.
    pub async fn recipient(&self, id: &str) -> Result<Option<RecipientRecord>, StoreError> {
        sqlx::query(
            "SELECT id, name, kind, secret_hash, registered_by, created_ms FROM recipients WHERE id = ? AND removed_ms IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(recipient)
        .transpose()
    }

    /// A recipient, even a removed one (for receipts about its past grants).
    pub async fn recipient_any(&self, id: &str) -> Result<Option<RecipientRecord>, StoreError> {
        sqlx::query("SELECT id, name, kind, secret_hash, registered_by, created_ms FROM recipients WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(recipient)
            .transpose()
    }

    /// A user's name, for receipts.
    pub async fn user_name(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT username FROM users WHERE id = ?").bind(id).fetch_optional(&self.pool).await?)
    }

    pub async fn recipients_of(&self, user: i64) -> Result<Vec<RecipientRecord>, StoreError> {
        sqlx::query(
            "SELECT id, name, kind, secret_hash, registered_by, created_ms FROM recipients
             WHERE registered_by = ? AND removed_ms IS NULL ORDER BY created_ms",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(recipient)
        .collect()
    }

    /// Removes a recipient `user` registered: its credentials stop working at once.
    pub async fn remove_recipient(&self, user: i64, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recipients SET removed_ms = ? WHERE id = ? AND registered_by = ? AND removed_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_request(
        &self,
        recipient: &str,
        subject: i64,
        terms: &Terms,
        now: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO data_requests (recipient_id, subject_id, terms, created_ms, status)
             VALUES (?, ?, ?, ?, 'pending') RETURNING id",
        )
        .bind(recipient)
        .bind(subject)
        .bind(serde_json::to_string(terms).map_err(corrupt)?)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn request(&self, id: i64) -> Result<Option<RequestRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{REQUEST_SELECT} WHERE q.id = ?"));
        sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?.map(request).transpose()
    }

    /// Requests addressed to `subject`, or filed by `recipient`, newest first.
    pub async fn requests(
        &self,
        subject: Option<i64>,
        recipient: Option<&str>,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{REQUEST_SELECT} WHERE (?1 IS NULL OR q.subject_id = ?1) AND (?2 IS NULL OR q.recipient_id = ?2)
             ORDER BY q.id DESC"
        ));
        sqlx::query(sql).bind(subject).bind(recipient).fetch_all(&self.pool).await?.into_iter().map(request).collect()
    }

    /// Denies a pending request and logs it. `false` if it was not pending.
    pub async fn deny_request(&self, req: &RequestRecord, now: i64) -> Result<bool, StoreError> {
        let _chain = self.log_lock.lock().await;
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE data_requests SET status = 'denied', decided_ms = ? WHERE id = ? AND status = 'pending'",
        )
        .bind(now)
        .bind(req.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let entry = NewLogEntry {
            ts: now,
            kind: LogKind::Denied,
            subject_id: req.subject_id,
            recipient_id: &req.recipient_id,
            grant_id: None,
            detail: serde_json::json!({ "request": req.id }),
        };
        append_log(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Grants a pending request: the grant, its receipt and the log entry in one
    /// transaction. `false` if the request was no longer pending.
    pub async fn create_grant(&self, g: &GrantRecord, receipt: &ReceiptRecord) -> Result<bool, StoreError> {
        let _chain = self.log_lock.lock().await;
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE data_requests SET status = 'granted', decided_ms = ? WHERE id = ? AND status = 'pending'",
        )
        .bind(g.created_ms)
        .bind(g.request_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO grants (id, request_id, recipient_id, subject_id, terms, created_ms, expires_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&g.id)
        .bind(g.request_id)
        .bind(&g.recipient_id)
        .bind(g.subject_id)
        .bind(serde_json::to_string(&g.terms).map_err(corrupt)?)
        .bind(g.created_ms)
        .bind(g.expires_ms)
        .execute(&mut *tx)
        .await?;
        insert_receipt(&mut tx, receipt).await?;
        let entry = NewLogEntry {
            ts: g.created_ms,
            kind: LogKind::Granted,
            subject_id: g.subject_id,
            recipient_id: &g.recipient_id,
            grant_id: Some(&g.id),
            detail: serde_json::json!({ "request": g.request_id, "receipt": receipt.id }),
        };
        append_log(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a grant by revocation (a `Revoked` receipt, at `at`) or records that it expired
    /// (an `Expired` one), with its receipt and log entry. `false` if already recorded.
    pub async fn end_grant(&self, g: &GrantRecord, receipt: &ReceiptRecord, at: i64) -> Result<bool, StoreError> {
        let _chain = self.log_lock.lock().await;
        let mut tx = self.write().await?;
        let done = if receipt.event == ReceiptEvent::Revoked {
            sqlx::query("UPDATE grants SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL AND expires_ms > ?")
                .bind(at)
                .bind(&g.id)
                .bind(at)
                .execute(&mut *tx)
                .await?
        } else {
            sqlx::query(
                "UPDATE grants SET expiry_recorded = 1 WHERE id = ? AND expiry_recorded = 0 AND revoked_ms IS NULL",
            )
            .bind(&g.id)
            .execute(&mut *tx)
            .await?
        };
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_receipt(&mut tx, receipt).await?;
        let entry = NewLogEntry {
            ts: at,
            kind: receipt.event.into(),
            subject_id: g.subject_id,
            recipient_id: &g.recipient_id,
            grant_id: Some(&g.id),
            detail: serde_json::json!({ "receipt": receipt.id }),
        };
        append_log(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{GRANT_SELECT} WHERE id = ?"));
        sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?.map(grant).transpose()
    }

    /// Grants given by `subject`, or to `recipient`, newest first.
    pub async fn grants(&self, subject: Option<i64>, recipient: Option<&str>) -> Result<Vec<GrantRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{GRANT_SELECT} WHERE (?1 IS NULL OR subject_id = ?1) AND (?2 IS NULL OR recipient_id = ?2)
             ORDER BY created_ms DESC"
        ));
        sqlx::query(sql).bind(subject).bind(recipient).fetch_all(&self.pool).await?.into_iter().map(grant).collect()
    }

    /// Grants that expired by `now` and whose expiry has no receipt yet.
    pub async fn grants_expired_unrecorded(&self, now: i64) -> Result<Vec<GrantRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{GRANT_SELECT} WHERE expires_ms <= ? AND revoked_ms IS NULL AND expiry_recorded = 0"
        ));
        sqlx::query(sql).bind(now).fetch_all(&self.pool).await?.into_iter().map(grant).collect()
    }

    pub async fn receipts_of(&self, grant: &str) -> Result<Vec<ReceiptRecord>, StoreError> {
        sqlx::query("SELECT id, grant_id, event, created_ms, jws FROM receipts WHERE grant_id = ? ORDER BY created_ms")
            .bind(grant)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(receipt)
            .collect()
    }

    pub async fn receipt(&self, id: &str) -> Result<Option<ReceiptRecord>, StoreError> {
        sqlx::query("SELECT id, grant_id, event, created_ms, jws FROM receipts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(receipt)
            .transpose()
    }

    /// Appends one entry to the access log.
    pub async fn log_access(&self, entry: &NewLogEntry<'_>) -> Result<(), StoreError> {
        let _chain = self.log_lock.lock().await;
        let mut tx = self.write().await?;
        append_log(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The access log (of one subject, or all), oldest first.
    pub async fn access_log(&self, subject: Option<i64>) -> Result<Vec<LogRow>, StoreError> {
        sqlx::query(
            "SELECT seq, ts, kind, subject_id, recipient_id, grant_id, detail, prev_hash, hash FROM access_log
             WHERE ?1 IS NULL OR subject_id = ?1 ORDER BY seq",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            Ok(LogRow {
                entry: Entry {
                    seq: row.try_get("seq")?,
                    ts: row.try_get("ts")?,
                    kind: row.try_get("kind")?,
                    subject_id: row.try_get("subject_id")?,
                    recipient_id: row.try_get("recipient_id")?,
                    grant_id: row.try_get("grant_id")?,
                    detail: row.try_get("detail")?,
                },
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        })
        .collect()
    }

    /// Checks the whole chain. `Ok(Ok(n))`: n entries verified.
    /// The chain's head: its last entry's number and hash (`None` while the log is empty).
    pub async fn access_log_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Checks the whole chain and, given a checkpoint, holds the log to it, reading the
    /// log once.
    pub async fn verify_access_log(&self, checkpoint: Option<&log::Checkpoint>) -> Result<LogCheck, StoreError> {
        let rows = self.access_log(None).await?;
        Ok(LogCheck {
            chain: log::verify(rows.iter().map(|r| (&r.entry, r.prev_hash.as_slice(), r.hash.as_slice()))),
            checkpoint: checkpoint.map(|c| c.holds(rows.iter().map(|r| (&r.entry, r.hash.as_slice())))),
        })
    }

    /// The readings of one series that `permit` lets its recipient see, within `range`: at
    /// most `limit` of them, and whether more were left out.
    pub async fn shared_readings(
        &self,
        permit: &Permit,
        (device, metric): (&str, &str),
        range: (i64, i64),
        limit: usize,
    ) -> Result<(Vec<(i64, Value)>, bool), StoreError> {
        let Some(range) = shared_range(permit, metric, range) else { return Ok((Vec::new(), false)) };
        let found = self.readings(device, metric, range, limit, Keys::Only(permit.keys())).await?;
        Ok(found.unwrap_or_default())
    }

    /// The same readings summarised in buckets `width` ms wide, read a page at a time: a
    /// share of years holds its buckets, never its readings.
    pub async fn shared_buckets(
        &self,
        permit: &Permit,
        (device, metric): (&str, &str),
        range: (i64, i64),
        width: i64,
    ) -> Result<Vec<crate::buckets::Bucket>, StoreError> {
        let mut buckets = crate::buckets::Bucketer::new(width);
        if let Some(range) = shared_range(permit, metric, range) {
            let keys = Keys::Only(permit.keys());
            self.each_reading(device, metric, range, keys, |ts, value| {
                buckets.push(ts, &value);
                true
            })
            .await?;
        }
        Ok(buckets.finish())
    }

    /// Series holding readings under any of `keys`: what a subject (or a permit) can reach.
    pub async fn series_with_keys(&self, keys: &BTreeSet<i64>) -> Result<Vec<super::SeriesInfo>, StoreError> {
        let keys = serde_json::to_string(keys).map_err(corrupt)?;
        sqlx::query(
            "SELECT s.device_id, s.metric, s.unit FROM series s
             WHERE EXISTS (SELECT 1 FROM series_keys k WHERE k.series_id = s.id
                           AND k.key_id IN (SELECT value FROM json_each(?)))
             ORDER BY s.device_id, s.metric",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            Ok(super::SeriesInfo {
                device: row.try_get("device_id")?,
                metric: row.try_get("metric")?,
                unit: row.try_get("unit")?,
            })
        })
        .collect()
    }
}

async fn insert_receipt(tx: &mut sqlx::SqliteConnection, r: &ReceiptRecord) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO receipts (id, grant_id, event, created_ms, jws) VALUES (?, ?, ?, ?, ?)")
        .bind(&r.id)
        .bind(&r.grant_id)
        .bind(r.event.as_str())
        .bind(r.created)
        .bind(&r.jws)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Appends to the chain inside `tx`. The caller holds `log_lock`.
async fn append_log(tx: &mut sqlx::SqliteConnection, e: &NewLogEntry<'_>) -> Result<(), StoreError> {
    let last =
        sqlx::query("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let (prev_seq, prev_hash): (i64, Vec<u8>) = match last {
        Some(row) => (row.try_get("seq")?, row.try_get("hash")?),
        None => (0, log::GENESIS.to_vec()),
    };
    let entry = Entry {
        seq: prev_seq + 1,
        ts: e.ts,
        kind: e.kind.as_str().to_owned(),
        subject_id: e.subject_id,
        recipient_id: e.recipient_id.to_owned(),
        grant_id: e.grant_id.map(str::to_owned),
        detail: e.detail.to_string(),
    };
    let hash = log::chain(&prev_hash, &entry);
    sqlx::query(
        "INSERT INTO access_log (seq, ts, kind, subject_id, recipient_id, grant_id, detail, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.seq)
    .bind(entry.ts)
    .bind(&entry.kind)
    .bind(entry.subject_id)
    .bind(&entry.recipient_id)
    .bind(&entry.grant_id)
    .bind(&entry.detail)
    .bind(prev_hash)
    .bind(hash.as_slice())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The part of `range` a permit shows of `metric`; `None` if it shows nothing of it.
fn shared_range(permit: &Permit, metric: &str, range: (i64, i64)) -> Option<(i64, i64)> {
    permit.covers(metric).then(|| permit.clamp(Some(range.0), Some(range.1)))?
}
