//! Tenancies, invites, tenants and guests, device classes, and the ownership snapshot the
//! writer seals readings by. Shredding a tenancy destroys its key here.

use std::collections::{BTreeSet, HashMap};

use hearth_model::devices::ProposalStatus;
use sqlx::Row;

use super::{OwnershipSnapshot, Role, Store, StoreError};
use crate::consent::{DeviceClass, Ownership, Span, Subject};

/// A tenancy, with its tenant once the invite was accepted.
#[derive(Debug, Clone)]
pub struct TenancyRecord {
    pub id: i64,
    pub start: i64,
    pub end: Option<i64>,
    pub retention_days: i64,
    pub created: i64,
    pub shredded: Option<i64>,
    pub tenant_id: Option<i64>,
    pub tenant: Option<String>,
}

impl TenancyRecord {
    /// When the tenancy's data is destroyed unless the tenant asks sooner.
    pub fn shred_due(&self) -> Option<i64> {
        self.end.map(|end| end + self.retention_days * crate::consent::DAY_MS)
    }
}

/// What an invite makes of whoever accepts it.
#[derive(Debug, Clone)]
pub enum InviteKind {
    Tenant { tenancy: i64 },
    Guest { devices: Vec<String> },
}

/// Why an invite could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the invite code is wrong, used or expired")]
    BadCode,
    #[error("that user name is taken")]
    NameTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A guest, as their inviter sees them.
#[derive(Debug, Clone)]
pub struct GuestRecord {
    pub id: i64,
    pub username: String,
    pub devices: Vec<String>,
}

/// An owner's proposal to reclassify a device during a tenancy.
#[derive(Debug, Clone)]
pub struct ClassProposalRecord {
    pub id: i64,
    pub device: String,
    pub class: DeviceClass,
    pub tenancy: i64,
    pub created: i64,
    pub status: ProposalStatus,
    pub decided: Option<i64>,
}

fn class_proposal(row: sqlx::sqlite::SqliteRow) -> Result<ClassProposalRecord, StoreError> {
    let corrupt = |e: hearth_model::UnknownName| StoreError::Corrupt(e.to_string());
    Ok(ClassProposalRecord {
        id: row.try_get("id")?,
        device: row.try_get("device_id")?,
        class: row.try_get::<String, _>("class")?.parse().map_err(corrupt)?,
        tenancy: row.try_get("tenancy_id")?,
        created: row.try_get("created_ms")?,
        status: row.try_get::<String, _>("status")?.parse().map_err(corrupt)?,
        decided: row.try_get("decided_ms")?,
    })
}

fn tenancy(row: sqlx::sqlite::SqliteRow) -> Result<TenancyRecord, StoreError> {
    Ok(TenancyRecord {
        id: row.try_get("id")?,
        start: row.try_get("start_ms")?,
        end: row.try_get("end_ms")?,
        retention_days: row.try_get("retention_days")?,
        created: row.try_get("created_ms")?,
        shredded: row.try_get("shredded_ms")?,
        tenant_id: row.try_get("tenant_id")?,
        tenant: row.try_get("tenant")?,
    })
}

const TENANCY_SELECT: &str = "SELECT t.id, t.start_ms, t.end_ms, t.retention_days, t.created_ms, t.shredded_ms,
        u.id AS tenant_id, u.username AS tenant
     FROM tenancies t LEFT JOIN users u ON u.tenancy_id = t.id";

impl Store {
    /// Reads tenancies, classes, tenant devices and keys, and swaps in a new snapshot.
    pub async fn reload_ownership(&self) -> Result<(), StoreError> {
        let mut rule = Ownership::default();
        let mut sealing_key = HashMap::new();
        let mut keys: HashMap<Subject, BTreeSet<i64>> = HashMap::new();
        for row in sqlx::query("SELECT id, start_ms, end_ms, key_id, shredded_ms FROM tenancies ORDER BY start_ms")
            .fetch_all(&self.pool)
            .await?
        {
            let id: i64 = row.try_get("id")?;
            rule.tenancies.push(Span { tenancy: id, start: row.try_get("start_ms")?, end: row.try_get("end_ms")? });
            if row.try_get::<Option<i64>, _>("shredded_ms")?.is_none() {
                let key: i64 = row.try_get("key_id")?;
                sealing_key.insert(Subject::Tenancy(id), key);
                keys.entry(Subject::Tenancy(id)).or_default().insert(key);
            }
        }
        for row in sqlx::query("SELECT device_id, from_ms, class FROM device_classes ORDER BY device_id, from_ms")
            .fetch_all(&self.pool)
            .await?
        {
            let class: String = row.try_get("class")?;
            let class: DeviceClass = class.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?;
            rule.classes.entry(row.try_get("device_id")?).or_default().push((row.try_get("from_ms")?, class));
        }
        for row in
            sqlx::query("SELECT id, tenancy_id FROM devices WHERE tenancy_id IS NOT NULL").fetch_all(&self.pool).await?
        {
            rule.tenant_devices.insert(row.try_get("id")?, row.try_get("tenancy_id")?);
        }
        for row in sqlx::query("SELECT id FROM data_keys WHERE subject = 'owner' AND destroyed_ms IS NULL ORDER BY id")
            .fetch_all(&self.pool)
            .await?
        {
            let id: i64 = row.try_get("id")?;
            sealing_key.insert(Subject::Owner, id);
            keys.entry(Subject::Owner).or_default().insert(id);
        }
        let snapshot = std::sync::Arc::new(OwnershipSnapshot { rule, sealing_key, keys });
        *self.ownership.write().map_err(|_| StoreError::Corrupt("ownership lock poisoned".into()))? = snapshot;
        Ok(())
    }

    /// Creates a tenancy `[start, end)` with its own data key and an invite for its tenant.
    /// `Ok(None)` if it would overlap another tenancy.
    pub async fn create_tenancy(
        &self,
        (start, end): (i64, Option<i64>),
        retention_days: i64,
        invite: (&[u8], i64, i64),
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (code_hash, invited_by, invite_expires) = invite;
        let mut tx = self.write().await?;
        let overlapping: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tenancies WHERE (end_ms IS NULL OR end_ms > ?1) AND (?2 IS NULL OR start_ms < ?2)",
        )
        .bind(start)
        .bind(end)
        .fetch_one(&mut *tx)
        .await?;
        if overlapping > 0 {
            return Ok(None);
        }
        let next: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM tenancies").fetch_one(&mut *tx).await?;
        let (key_id, key) = self.create_data_key(&mut tx, Subject::Tenancy(next), now).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tenancies (id, start_ms, end_ms, retention_days, key_id, created_ms)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(next)
        .bind(start)
        .bind(end)
        .bind(retention_days)
        .bind(key_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO invites (code_hash, role, tenancy_id, invited_by, expires_ms) VALUES (?, 'tenant', ?, ?, ?)",
        )
        .bind(code_hash)
        .bind(id)
        .bind(invited_by)
        .bind(invite_expires)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.cache_key(key_id, key)?;
        self.reload_ownership().await?;
        Ok(Some(id))
    }

    pub async fn tenancies(&self) -> Result<Vec<TenancyRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{TENANCY_SELECT} ORDER BY t.start_ms"));
        sqlx::query(sql).fetch_all(&self.pool).await?.into_iter().map(tenancy).collect()
    }

    pub async fn tenancy(&self, id: i64) -> Result<Option<TenancyRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{TENANCY_SELECT} WHERE t.id = ?"));
        sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?.map(tenancy).transpose()
    }

    /// Replaces a tenancy's pending invite (the old code stops working). `false` if the
    /// tenancy already has its tenant or is unknown.
    pub async fn reinvite_tenant(&self, tenancy: i64, invite: (&[u8], i64, i64)) -> Result<bool, StoreError> {
        let (code_hash, invited_by, expires) = invite;
        let mut tx = self.write().await?;
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tenancies t WHERE t.id = ? AND t.shredded_ms IS NULL
             AND NOT EXISTS (SELECT 1 FROM users u WHERE u.tenancy_id = t.id)",
        )
        .bind(tenancy)
        .fetch_one(&mut *tx)
        .await?;
        if open == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM invites WHERE tenancy_id = ?").bind(tenancy).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO invites (code_hash, role, tenancy_id, invited_by, expires_ms) VALUES (?, 'tenant', ?, ?, ?)",
        )
        .bind(code_hash)
        .bind(tenancy)
        .bind(invited_by)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sets when a tenancy ends. The caller has checked `end` is not in the past.
    pub async fn end_tenancy(&self, id: i64, end: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            // `tenancies.start_ms` is the row being ended: unqualified, `start_ms` inside the
            // subquery would be the other tenancy's own, and every earlier tenancy would block.
            "UPDATE tenancies SET end_ms = ?1 WHERE id = ?2 AND shredded_ms IS NULL AND start_ms < ?1
             AND NOT EXISTS (SELECT 1 FROM tenancies o
                             WHERE o.id != ?2 AND o.start_ms >= tenancies.start_ms AND o.start_ms < ?1)",
        )
        .bind(end)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.reload_ownership().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Crypto-shredding: destroys the tenancy's key, so every reading sealed under it is
    /// unreadable by anyone, with or without the database and the hub key. Its sealed
    /// chunks, recent rows and latest values (in the database and in memory), and which
    /// series it reached, are deleted too (overwritten: `secure_delete` is on), and
    /// the write-ahead log is truncated so no old copy of the wrapped key lingers there.
    pub async fn shred_tenancy(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        // Overwrite what is deleted, whatever this connection was last set to (a fold frees
        // the owner's pages of `recent` without overwriting them, then sets it back).
        sqlx::query("PRAGMA secure_delete = ON").execute(&mut *tx).await?;
        let key: Option<i64> = sqlx::query_scalar("SELECT key_id FROM tenancies WHERE id = ? AND shredded_ms IS NULL")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(key) = key else { return Ok(false) };
        sqlx::query("UPDATE data_keys SET wrapped = NULL, destroyed_ms = ? WHERE id = ?")
            .bind(now)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE tenancies SET shredded_ms = ? WHERE id = ?").bind(now).bind(id).execute(&mut *tx).await?;
        // Through the index by series: only the series the key reaches (`series_keys`).
        sqlx::query(
            "DELETE FROM chunks WHERE key_id = ?1
             AND series_id IN (SELECT series_id FROM series_keys WHERE key_id = ?1)",
        )
        .bind(key)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM latest WHERE key_id = ?").bind(key).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM recent WHERE key_id = ?").bind(key).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM series_keys WHERE key_id = ?").bind(key).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE tenancy_id = ?)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM invites WHERE tenancy_id = ?").bind(id).execute(&mut *tx).await?;
        // The tenant's rules (with their traces and timers), notifications and helpers
        // describe the household as much as its readings do: they go too.
        for sql in [
            "DELETE FROM rules WHERE author_id IN (SELECT id FROM users WHERE tenancy_id = ?)",
            "DELETE FROM notifications WHERE user_id IN (SELECT id FROM users WHERE tenancy_id = ?)",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        // And so do the cloud-bound messages its rules made and that were not sent yet.
        for sql in [
            "DELETE FROM virtual_values WHERE subject = ?",
            "DELETE FROM outbox WHERE subject = ?",
            "DELETE FROM security_log WHERE subject = ?",
        ] {
            sqlx::query(sql).bind(Subject::Tenancy(id).to_string()).execute(&mut *tx).await?;
        }
        // Commands its rules queued for devices away or kept retained, and its own devices'
        // sessions and retained commands.
        for sql in ["DELETE FROM mqtt_queue WHERE subject = ?", "DELETE FROM mqtt_retained WHERE subject = ?"] {
            sqlx::query(sql).bind(Subject::Tenancy(id).to_string()).execute(&mut *tx).await?;
        }
        for sql in [
            "DELETE FROM mqtt_queue WHERE device_id IN (SELECT id FROM devices WHERE tenancy_id = ?)",
            "DELETE FROM mqtt_sessions WHERE device_id IN (SELECT id FROM devices WHERE tenancy_id = ?)",
            "DELETE FROM mqtt_retained WHERE device_id IN (SELECT id FROM devices WHERE tenancy_id = ?1)
                OR target_id IN (SELECT id FROM devices WHERE tenancy_id = ?1)",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        // The tenant's own devices go with the tenancy.
        sqlx::query(
            "UPDATE devices SET secret_sealed = NULL, coap_sealed = NULL, namespaces_sealed = NULL, observe_sealed = NULL,
                 discovered_sealed = NULL, chosen_sealed = NULL, removed_ms = ?
             WHERE tenancy_id = ? AND removed_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.data_keys.write().map_err(|_| StoreError::Corrupt("key cache poisoned".into()))?.remove(&key);
        self.forget_fresh(key);
        self.reload_ownership().await?;
        self.checkpoint_wal().await?;
        // Nobody listening (no automation runtime) is fine.
        let _ = self.shredded.send(id);
        Ok(true)
    }

    /// Copies the write-ahead log into the database and truncates it to nothing.
    async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        for _ in 0..50 {
            let (busy, _, _): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await?;
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tracing::warn!("the write-ahead log could not be truncated now; SQLite will do so at a later checkpoint");
        Ok(())
    }

    /// Ended tenancies whose retention has run out at `now` and are not yet shredded.
    pub async fn tenancies_due_for_shredding(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM tenancies WHERE shredded_ms IS NULL AND end_ms IS NOT NULL
             AND end_ms + retention_days * 86400000 <= ?",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a guest invite.
    pub async fn create_guest_invite(
        &self,
        code_hash: &[u8],
        invited_by: i64,
        devices: &[String],
        expires: i64,
    ) -> Result<(), StoreError> {
        let devices = serde_json::to_string(devices).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO invites (code_hash, role, invited_by, devices, expires_ms) VALUES (?, 'guest', ?, ?, ?)",
        )
        .bind(code_hash)
        .bind(invited_by)
        .bind(devices)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether an unused, unexpired invite has this code (it is used up only on acceptance).
    pub async fn invite_is_open(&self, code_hash: &[u8], now: i64) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invites WHERE code_hash = ? AND expires_ms > ?")
            .bind(code_hash)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Uses up an invite and creates its user, in one transaction. Returns the new user id.
    pub async fn accept_invite(
        &self,
        code_hash: &[u8],
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<i64, AcceptError> {
        let mut tx = self.write().await.map_err(StoreError::from)?;
        let row = sqlx::query(
            "DELETE FROM invites WHERE code_hash = ? AND expires_ms > ? RETURNING role, tenancy_id, invited_by, devices",
        )
        .bind(code_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?
        .ok_or(AcceptError::BadCode)?;
        let role: Role = row
            .try_get::<String, _>("role")
            .map_err(StoreError::from)?
            .parse()
            .map_err(|e: hearth_model::UnknownName| StoreError::Corrupt(e.to_string()))?;
        let tenancy: Option<i64> = row.try_get("tenancy_id").map_err(StoreError::from)?;
        let invited_by: i64 = row.try_get("invited_by").map_err(StoreError::from)?;
        let devices: Option<String> = row.try_get("devices").map_err(StoreError::from)?;
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = ?")
            .bind(username)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        if taken > 0 {
            return Err(AcceptError::NameTaken);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_ms, tenancy_id, invited_by)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now)
        .bind(tenancy)
        .bind((role == Role::Guest).then_some(invited_by))
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let devices: Vec<String> = devices.map(|d| serde_json::from_str(&d).unwrap_or_default()).unwrap_or_default();
        for device in devices {
            sqlx::query("INSERT OR IGNORE INTO guest_devices (guest_id, device_id) VALUES (?, ?)")
                .bind(id)
                .bind(device)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(id)
    }

    /// The guests `inviter` invited.
    pub async fn guests_of(&self, inviter: i64) -> Result<Vec<GuestRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.id, u.username, g.device_id FROM users u LEFT JOIN guest_devices g ON g.guest_id = u.id
             WHERE u.invited_by = ? ORDER BY u.id, g.device_id",
        )
        .bind(inviter)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<GuestRecord> = Vec::new();
        for row in rows {
            let id: i64 = row.try_get("id")?;
            if out.last().is_none_or(|g| g.id != id) {
                out.push(GuestRecord { id, username: row.try_get("username")?, devices: Vec::new() });
            }
            if let (Some(guest), Some(device)) = (out.last_mut(), row.try_get::<Option<String>, _>("device_id")?) {
                guest.devices.push(device);
            }
        }
        Ok(out)
    }

    /// Removes a guest `inviter` invited (with their sessions). `false` if not theirs.
    pub async fn remove_guest(&self, inviter: i64, guest: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE id = ? AND invited_by = ? AND role = 'guest'")
            .bind(guest)
            .bind(inviter)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The devices a guest may see.
    pub async fn guest_devices(&self, guest: i64) -> Result<BTreeSet<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT device_id FROM guest_devices WHERE guest_id = ?")
            .bind(guest)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect())
    }

    /// Classes `device` from `from` on. Earlier readings keep the class they were made under.
    pub async fn set_device_class(&self, device: &str, class: DeviceClass, from: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_classes (device_id, from_ms, class) VALUES (?, ?, ?)
             ON CONFLICT (device_id, from_ms) DO UPDATE SET class = excluded.class",
        )
        .bind(device)
        .bind(from)
        .bind(class.as_str())
        .execute(&self.pool)
        .await?;
        self.reload_ownership().await
    }

    /// Records the owner's proposal to reclassify `device` during `tenancy`; `None` if one
    /// for that device is already waiting.
    pub async fn propose_class(
        &self,
        device: &str,
        class: DeviceClass,
        tenancy: i64,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write().await?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM class_proposals WHERE device_id = ? AND tenancy_id = ? AND status = 'pending'",
        )
        .bind(device)
        .bind(tenancy)
        .fetch_one(&mut *tx)
        .await?;
        if waiting > 0 {
            return Ok(None);
        }
        let id = sqlx::query_scalar(
            "INSERT INTO class_proposals (device_id, class, tenancy_id, created_ms) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(device)
        .bind(class.as_str())
        .bind(tenancy)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Proposals, of one tenancy or all, newest first.
    pub async fn class_proposals(&self, tenancy: Option<i64>) -> Result<Vec<ClassProposalRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, device_id, class, tenancy_id, created_ms, status, decided_ms FROM class_proposals
             WHERE ?1 IS NULL OR tenancy_id = ?1 ORDER BY id DESC",
        )
        .bind(tenancy)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(class_proposal).collect()
    }

    pub async fn class_proposal(&self, id: i64) -> Result<Option<ClassProposalRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, device_id, class, tenancy_id, created_ms, status, decided_ms FROM class_proposals WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(class_proposal).transpose()
    }

    /// The tenant decides a waiting proposal; accepted, the class changes from `from`.
    /// `false` if it was no longer waiting.
    pub async fn decide_class(&self, id: i64, accept: bool, now: i64, from: i64) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let status = if accept { ProposalStatus::Accepted } else { ProposalStatus::Declined };
        let decided: Option<(String, String)> = sqlx::query_as(
            "UPDATE class_proposals SET status = ?, decided_ms = ? WHERE id = ? AND status = 'pending'
             RETURNING device_id, class",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((device, class)) = decided else { return Ok(false) };
        if accept {
            sqlx::query(
                "INSERT INTO device_classes (device_id, from_ms, class) VALUES (?, ?, ?)
                 ON CONFLICT (device_id, from_ms) DO UPDATE SET class = excluded.class",
            )
            .bind(&device)
            .bind(from)
            .bind(&class)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.reload_ownership().await?;
        Ok(true)
    }

    /// Marks a new device as a tenant's own.
    pub async fn set_device_tenancy(&self, device: &str, tenancy: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET tenancy_id = ? WHERE id = ?")
            .bind(tenancy)
            .bind(device)
            .execute(&self.pool)
            .await?;
        self.reload_ownership().await
    }
}
