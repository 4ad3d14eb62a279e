//! Automation rows: rules, run traces, timers, virtual values, notifications, the cloud
//! outbox and the hub's own small state. Every body is sealed with the hub key and bound to
//! its row, so a body cannot be moved to another row or read off a stolen card.

use hearth_model::Subject;
use hearth_model::automations::Note;
use sqlx::Row;

use super::{Store, StoreError};

/// A stored rule; `body` is the opened JSON definition.
#[derive(Debug, Clone)]
pub struct RuleRow {
    pub id: i64,
    pub author_id: i64,
    pub enabled: bool,
    pub body: Vec<u8>,
    pub created: i64,
    pub updated: i64,
}

/// A timer that survives a restart.
#[derive(Debug, Clone)]
pub struct TimerRow {
    pub id: i64,
    pub rule_id: i64,
    pub kind: String,
    pub due: i64,
    pub body: Vec<u8>,
}

/// A cloud-bound message, in order.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub msg_id: String,
    pub body: Vec<u8>,
}

/// How one destination is doing.
#[derive(Debug, Clone)]
pub struct OutboxStatus {
    pub destination: String,
    pub queued: i64,
    pub oldest: Option<i64>,
    pub delivered: i64,
    pub dropped: i64,
    pub last_error: Option<String>,
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
}

impl Store {
    fn seal_row(&self, context: &str, body: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self.hub_key.seal(body, context.as_bytes())?)
    }

    fn open_row(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self.hub_key.open(sealed, context.as_bytes())?)
    }

    /// Seals `body` bound to row `id` of `table` (context `prefix:id`) and stores it there:
    /// the second half of inserting a sealed row, once its id is known.
    async fn seal_into(
        &self,
        tx: &mut sqlx::SqliteConnection,
        (table, prefix): (&'static str, &str),
        id: i64,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = self.seal_row(&format!("{prefix}:{id}"), body)?;
        let sql = sqlx::AssertSqlSafe(format!("UPDATE {table} SET body = ? WHERE id = ?"));
        sqlx::query(sql).bind(sealed).bind(id).execute(&mut *tx).await?;
        Ok(())
    }

    pub async fn create_rule(&self, author: i64, body: &[u8], enabled: bool, now: i64) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO rules (author_id, enabled, body, created_ms, updated_ms) VALUES (?, ?, x'', ?, ?) RETURNING id",
        )
        .bind(author)
        .bind(enabled)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        self.seal_into(&mut tx, ("rules", "rule"), id, body).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Replaces a rule's definition and enabled flag. `false` if there is no such rule.
    pub async fn update_rule(&self, id: i64, body: &[u8], enabled: bool, now: i64) -> Result<bool, StoreError> {
        let sealed = self.seal_row(&format!("rule:{id}"), body)?;
        let done = sqlx::query("UPDATE rules SET body = ?, enabled = ?, updated_ms = ? WHERE id = ?")
            .bind(sealed)
            .bind(enabled)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a rule with its runs and timers.
    pub async fn delete_rule(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM rules WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    fn rule_row(&self, row: sqlx::sqlite::SqliteRow) -> Result<RuleRow, StoreError> {
        let id: i64 = row.try_get("id")?;
        let sealed: Vec<u8> = row.try_get("body")?;
        Ok(RuleRow {
            id,
            author_id: row.try_get("author_id")?,
            enabled: row.try_get("enabled")?,
            body: self.open_row(&format!("rule:{id}"), &sealed)?,
            created: row.try_get("created_ms")?,
            updated: row.try_get("updated_ms")?,
        })
    }

    /// Every rule, oldest first.
    pub async fn rules(&self) -> Result<Vec<RuleRow>, StoreError> {
        let rows = sqlx::query("SELECT id, author_id, enabled, body, created_ms, updated_ms FROM rules ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| self.rule_row(r)).collect()
    }

    pub async fn rule(&self, id: i64) -> Result<Option<RuleRow>, StoreError> {
        let row = sqlx::query("SELECT id, author_id, enabled, body, created_ms, updated_ms FROM rules WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.rule_row(r)).transpose()
    }

    /// The highest run id used so far (run ids are handed out by the runtime).
    pub async fn last_run_id(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM rule_runs").fetch_one(&self.pool).await?)
    }

    /// Writes (or rewrites) run traces in one transaction, keeping the newest `keep` runs of
    /// each rule touched.
    pub async fn save_runs(&self, runs: &[(i64, i64, i64, Vec<u8>)], keep: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let mut rules = std::collections::BTreeSet::new();
        for (id, rule, started, body) in runs {
            let sealed = self.seal_row(&format!("run:{id}"), body)?;
            // The rule may have been deleted meanwhile: then its trace is dropped.
            sqlx::query(
                "INSERT INTO rule_runs (id, rule_id, started_ms, body)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM rules WHERE id = ?2)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            )
            .bind(id)
            .bind(rule)
            .bind(started)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
            rules.insert(*rule);
        }
        for rule in rules {
            sqlx::query(
                "DELETE FROM rule_runs WHERE rule_id = ?1 AND id NOT IN
                 (SELECT id FROM rule_runs WHERE rule_id = ?1 ORDER BY id DESC LIMIT ?2)",
            )
            .bind(rule)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A rule's recent runs, newest first: (id, started, opened body).
    pub async fn runs(&self, rule: i64, limit: i64) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT id, started_ms, body FROM rule_runs WHERE rule_id = ? ORDER BY id DESC LIMIT ?")
            .bind(rule)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                let sealed: Vec<u8> = row.try_get("body")?;
                Ok((id, row.try_get("started_ms")?, self.open_row(&format!("run:{id}"), &sealed)?))
            })
            .collect()
    }

    pub async fn add_timer(&self, rule: i64, kind: &str, due: i64, body: &[u8]) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO automation_timers (rule_id, kind, due_ms, body) VALUES (?, ?, ?, x'') RETURNING id",
        )
        .bind(rule)
        .bind(kind)
        .bind(due)
        .fetch_one(&mut *tx)
        .await?;
        self.seal_into(&mut tx, ("automation_timers", "timer"), id, body).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn delete_timer(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM automation_timers WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes a rule's timers of one kind (a hold that was cancelled, say).
    pub async fn delete_timers(&self, rule: i64, kind: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM automation_timers WHERE rule_id = ? AND kind = ?")
            .bind(rule)
            .bind(kind)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn timers(&self) -> Result<Vec<TimerRow>, StoreError> {
        let rows = sqlx::query("SELECT id, rule_id, kind, due_ms, body FROM automation_timers ORDER BY due_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                let sealed: Vec<u8> = row.try_get("body")?;
                Ok(TimerRow {
                    id,
                    rule_id: row.try_get("rule_id")?,
                    kind: row.try_get("kind")?,
                    due: row.try_get("due_ms")?,
                    body: self.open_row(&format!("timer:{id}"), &sealed)?,
                })
            })
            .collect()
    }

    pub async fn set_virtual(&self, subject: &str, name: &str, body: &[u8], now: i64) -> Result<(), StoreError> {
        let sealed = self.seal_row(&format!("virtual:{subject}:{name}"), body)?;
        sqlx::query(
            "INSERT INTO virtual_values (subject, name, body, updated_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (subject, name) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
        )
        .bind(subject)
        .bind(name)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every virtual value: (subject, name, opened body, updated).
    pub async fn virtual_values(&self) -> Result<Vec<(String, String, Vec<u8>, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT subject, name, body, updated_ms FROM virtual_values").fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                let (subject, name): (String, String) = (row.try_get("subject")?, row.try_get("name")?);
                let sealed: Vec<u8> = row.try_get("body")?;
                let body = self.open_row(&format!("virtual:{subject}:{name}"), &sealed)?;
                Ok((subject, name, body, row.try_get("updated_ms")?))
            })
            .collect()
    }

    pub async fn add_notification(&self, user: i64, note: &Note, now: i64) -> Result<i64, StoreError> {
        let body = serde_json::to_vec(note).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write().await?;
        let id: i64 =
            sqlx::query_scalar("INSERT INTO notifications (user_id, created_ms, body) VALUES (?, ?, x'') RETURNING id")
                .bind(user)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        self.seal_into(&mut tx, ("notifications", "notification"), id, &body).await?;
        // A person's notifications are bounded: the newest 500 are kept.
        sqlx::query(
            "DELETE FROM notifications WHERE user_id = ?1 AND id NOT IN
             (SELECT id FROM notifications WHERE user_id = ?1 ORDER BY id DESC LIMIT 500)",
        )
        .bind(user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A person's notifications, newest first: (id, created, opened body).
    /// A person's newest notifications: `(id, created, note)`.
    pub async fn notifications(&self, user: i64, limit: i64) -> Result<Vec<(i64, i64, Note)>, StoreError> {
        let rows =
            sqlx::query("SELECT id, created_ms, body FROM notifications WHERE user_id = ? ORDER BY id DESC LIMIT ?")
                .bind(user)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                let sealed: Vec<u8> = row.try_get("body")?;
                let body = self.open_row(&format!("notification:{id}"), &sealed)?;
                let note = serde_json::from_slice(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((id, row.try_get("created_ms")?, note))
            })
            .collect()
    }

    pub async fn delete_notification(&self, user: i64, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM notifications WHERE id = ? AND user_id = ?")
            .bind(id)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queues a message for `destination`. If that leaves more than `max` queued, the
    /// oldest are dropped (and counted); returns how many were dropped.
    pub async fn enqueue(
        &self,
        (destination, subject): (&str, Subject),
        msg_id: &str,
        body: &[u8],
        now: i64,
        max: i64,
    ) -> Result<i64, StoreError> {
        let sealed = self.seal_row(&format!("outbox:{destination}:{msg_id}"), body)?;
        let mut tx = self.write().await?;
        let subject = subject.to_string();
        sqlx::query("INSERT INTO outbox (destination, subject, msg_id, created_ms, body) VALUES (?, ?, ?, ?, ?)")
            .bind(destination)
            .bind(&subject)
            .bind(msg_id)
            .bind(now)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE destination = ? AND subject = ?")
            .bind(destination)
            .bind(&subject)
            .fetch_one(&mut *tx)
            .await?;
        let excess = (queued - max).max(0);
        if excess > 0 {
            sqlx::query(
                "DELETE FROM outbox WHERE seq IN
                 (SELECT seq FROM outbox WHERE destination = ? AND subject = ? ORDER BY seq LIMIT ?)",
            )
            .bind(destination)
            .bind(&subject)
            .bind(excess)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO outbox_stats (destination, dropped) VALUES (?1, ?2)
                 ON CONFLICT (destination) DO UPDATE SET dropped = dropped + ?2",
            )
            .bind(destination)
            .bind(excess)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(excess)
    }

    /// The oldest `limit` messages queued for `destination`, in order.
    pub async fn outbox_head(&self, destination: &str, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT seq, msg_id, body FROM outbox WHERE destination = ? ORDER BY seq LIMIT ?")
            .bind(destination)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let msg_id: String = row.try_get("msg_id")?;
                let sealed: Vec<u8> = row.try_get("body")?;
                Ok(OutboxRow {
                    seq: row.try_get("seq")?,
                    body: self.open_row(&format!("outbox:{destination}:{msg_id}"), &sealed)?,
                    msg_id,
                })
            })
            .collect()
    }

    /// The destination acknowledged message `seq`: it leaves the outbox.
    pub async fn outbox_delivered(&self, destination: &str, seq: i64, now: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM outbox WHERE seq = ?").bind(seq).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO outbox_stats (destination, delivered, last_attempt_ms, last_success_ms, last_error)
             VALUES (?1, 1, ?2, ?2, NULL)
             ON CONFLICT (destination) DO UPDATE SET delivered = delivered + 1, last_attempt_ms = ?2,
                 last_success_ms = ?2, last_error = NULL",
        )
        .bind(destination)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A delivery attempt failed; the message stays queued.
    pub async fn outbox_failed(&self, destination: &str, seq: i64, error: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?").bind(seq).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO outbox_stats (destination, last_attempt_ms, last_error) VALUES (?1, ?2, ?3)
             ON CONFLICT (destination) DO UPDATE SET last_attempt_ms = ?2, last_error = ?3",
        )
        .bind(destination)
        .bind(now)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The status of each destination in `destinations`.
    pub async fn outbox_status(&self, destinations: &[String]) -> Result<Vec<OutboxStatus>, StoreError> {
        let mut out = Vec::with_capacity(destinations.len());
        for d in destinations {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM outbox WHERE destination = ?1) AS queued,
                        (SELECT MIN(created_ms) FROM outbox WHERE destination = ?1) AS oldest,
                        s.delivered, s.dropped, s.last_error, s.last_attempt_ms, s.last_success_ms
                 FROM (SELECT 1) LEFT JOIN outbox_stats s ON s.destination = ?1",
            )
            .bind(d)
            .fetch_one(&self.pool)
            .await?;
            out.push(OutboxStatus {
                destination: d.clone(),
                queued: row.try_get("queued")?,
                oldest: row.try_get("oldest")?,
                delivered: row.try_get::<Option<i64>, _>("delivered")?.unwrap_or(0),
                dropped: row.try_get::<Option<i64>, _>("dropped")?.unwrap_or(0),
                last_error: row.try_get("last_error")?,
                last_attempt: row.try_get("last_attempt_ms")?,
                last_success: row.try_get("last_success_ms")?,
            });
        }
        Ok(out)
    }

    pub async fn hub_state(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM hub_state WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_hub_state(&self, name: &str, value: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hub_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Adds an entry to the security log (its body sealed, bound to the row), and keeps the
    /// log within `max_rows` rows and `max_age_ms`.
    pub async fn add_security_event(
        &self,
        (now, subject): (i64, Option<Subject>),
        kind: &str,
        body: &[u8],
        (max_rows, max_age_ms): (i64, i64),
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO security_log (ts_ms, subject, kind, body) VALUES (?, ?, ?, x'') RETURNING id",
        )
        .bind(now)
        .bind(subject.map(|s| s.to_string()))
        .bind(kind)
        .fetch_one(&mut *tx)
        .await?;
        self.seal_into(&mut tx, ("security_log", "security-log"), id, body).await?;
        sqlx::query("DELETE FROM security_log WHERE id <= ? OR ts_ms < ?")
            .bind(id - max_rows)
            .bind(now - max_age_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` entries of `subject`'s security log (the owner's includes the
    /// hub's own): (id, ts, kind, opened body).
    pub async fn security_events(
        &self,
        subject: Subject,
        limit: i64,
    ) -> Result<Vec<(i64, i64, String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts_ms, kind, body FROM security_log WHERE subject = ?1 OR (?1 = 'owner' AND subject IS NULL)
             ORDER BY id DESC LIMIT ?2",
        )
        .bind(subject.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                let sealed: Vec<u8> = row.try_get("body")?;
                Ok((
                    id,
                    row.try_get("ts_ms")?,
                    row.try_get("kind")?,
                    self.open_row(&format!("security-log:{id}"), &sealed)?,
                ))
            })
            .collect()
    }
}
