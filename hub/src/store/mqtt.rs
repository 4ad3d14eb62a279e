//! Persistent MQTT sessions: a client's subscriptions, sealed with the hub key, and the QoS 1
//! messages queued for it, sealed under the data key of the subject whose rule sent them
//! (as that subject's readings are), bound to their session and message id.

use sqlx::Row;

use super::{Store, StoreError};
use crate::consent::Subject;

/// A session as stored, opened.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub device: String,
    pub client: String,
    /// (filter, granted QoS).
    pub subscriptions: Vec<(String, u8)>,
    pub seen_ms: i64,
    pub queue: Vec<Queued>,
}

/// A message waiting for a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub seq: i64,
    /// Whose rule sent it.
    pub subject: Subject,
    pub topic: String,
    pub payload: Vec<u8>,
}

fn subscriptions_aad(device: &str, client: &str) -> String {
    format!("mqtt-session:{device}:{client}")
}

fn message_aad(device: &str, client: &str, msg_id: &str) -> String {
    format!("mqtt-message:{device}:{client}:{msg_id}")
}

fn retained_aad(device: &str, target: &str, msg_id: &str) -> String {
    format!("mqtt-retained:{device}:{target}:{msg_id}")
}

fn new_msg_id() -> Result<String, StoreError> {
    let mut id = [0u8; 12];
    crate::crypto::random_bytes(&mut id)?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// A message's body is its topic, a zero byte, and its payload.
fn split_message(opened: &[u8], aad: &str) -> Result<(String, Vec<u8>), StoreError> {
    let at = opened.iter().position(|&b| b == 0).unwrap_or(opened.len());
    let topic = String::from_utf8(opened[..at].to_vec()).map_err(|_| StoreError::Corrupt(format!("MQTT {aad}")))?;
    Ok((topic, opened.get(at + 1..).unwrap_or_default().to_vec()))
}

/// A command kept retained, as stored, opened.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRetained {
    pub seq: i64,
    /// Whose sessions get it (the device, or its bridge).
    pub device: String,
    /// The device it commands.
    pub target: String,
    pub subject: Subject,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Store {
    /// Every persistent session seen since `since`, with its queue; older ones are deleted.
    pub async fn mqtt_sessions(&self, since: i64) -> Result<Vec<StoredSession>, StoreError> {
        sqlx::query("DELETE FROM mqtt_queue WHERE (device_id, client_id) IN (SELECT device_id, client_id FROM mqtt_sessions WHERE seen_ms < ?)")
            .bind(since)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM mqtt_sessions WHERE seen_ms < ?").bind(since).execute(&self.pool).await?;
        let mut sessions = Vec::new();
        for row in
            sqlx::query("SELECT device_id, client_id, subscriptions, seen_ms FROM mqtt_sessions ORDER BY seen_ms")
                .fetch_all(&self.pool)
                .await?
        {
            let device: String = row.try_get("device_id")?;
            let client: String = row.try_get("client_id")?;
            let sealed: Vec<u8> = row.try_get("subscriptions")?;
            let opened = self.hub_key.open(&sealed, subscriptions_aad(&device, &client).as_bytes())?;
            let subscriptions = serde_json::from_slice(&opened)
                .map_err(|e| StoreError::Corrupt(format!("MQTT session {device}/{client}: {e}")))?;
            sessions.push(StoredSession {
                subscriptions,
                seen_ms: row.try_get("seen_ms")?,
                queue: Vec::new(),
                device,
                client,
            });
        }
        for row in sqlx::query(
            "SELECT seq, device_id, client_id, msg_id, subject, key_id, message FROM mqtt_queue ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let (device, client): (String, String) = (row.try_get("device_id")?, row.try_get("client_id")?);
            let msg_id: String = row.try_get("msg_id")?;
            let sealed: Vec<u8> = row.try_get("message")?;
            let aad = message_aad(&device, &client, &msg_id);
            let key_id: Option<i64> = row.try_get("key_id")?;
            let opened = match key_id {
                Some(key_id) => self.open_message(key_id, &sealed, &aad)?,
                None => Some(split_message(&self.hub_key.open(&sealed, aad.as_bytes())?, &aad)?),
            };
            // Its subject's key is gone (shredded): the message went with it.
            let Some((topic, payload)) = opened else { continue };
            let subject: String = row.try_get("subject")?;
            let subject = subject.parse().map_err(|e| StoreError::Corrupt(format!("MQTT message subject: {e}")))?;
            if let Some(session) = sessions.iter_mut().find(|s| s.device == device && s.client == client) {
                session.queue.push(Queued { seq: row.try_get("seq")?, subject, topic, payload });
            }
        }
        Ok(sessions)
    }

    /// Saves a session's subscriptions (creating it if new).
    pub async fn save_mqtt_session(
        &self,
        device: &str,
        client: &str,
        subscriptions: &[(String, u8)],
        now: i64,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(subscriptions).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed = self.hub_key.seal(&body, subscriptions_aad(device, client).as_bytes())?;
        sqlx::query(
            "INSERT INTO mqtt_sessions (device_id, client_id, subscriptions, seen_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (device_id, client_id) DO UPDATE SET subscriptions = excluded.subscriptions, seen_ms = excluded.seen_ms",
        )
        .bind(device)
        .bind(client)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Notes when a session was last connected.
    pub async fn touch_mqtt_session(&self, device: &str, client: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE mqtt_sessions SET seen_ms = ? WHERE device_id = ? AND client_id = ?")
            .bind(now)
            .bind(device)
            .bind(client)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a session and its queue.
    pub async fn drop_mqtt_session(&self, device: &str, client: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM mqtt_queue WHERE device_id = ? AND client_id = ?",
            "DELETE FROM mqtt_sessions WHERE device_id = ? AND client_id = ?",
        ] {
            sqlx::query(sql).bind(device).bind(client).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Queues a message for a session; past `max` queued of its subject, that subject's
    /// oldest are dropped. Returns the message's sequence number.
    #[allow(clippy::too_many_arguments)]
    pub async fn queue_mqtt(
        &self,
        (device, client): (&str, &str),
        subject: Subject,
        topic: &str,
        payload: &[u8],
        now: i64,
        max: usize,
    ) -> Result<i64, StoreError> {
        let msg_id = new_msg_id()?;
        let (key_id, sealed) = self.seal_message(subject, &message_aad(device, client, &msg_id), topic, payload)?;
        let mut tx = self.pool.begin().await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO mqtt_queue (device_id, client_id, msg_id, subject, key_id, queued_ms, message)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(device)
        .bind(client)
        .bind(&msg_id)
        .bind(subject.to_string())
        .bind(key_id)
        .bind(now)
        .bind(sealed)
        .fetch_one(&mut *tx)
        .await?;
        // Past `max`, the subject's own oldest gives way: another's share is not touched.
        sqlx::query(
            "DELETE FROM mqtt_queue WHERE seq IN (SELECT seq FROM mqtt_queue
             WHERE device_id = ? AND client_id = ? AND subject = ? ORDER BY seq DESC LIMIT -1 OFFSET ?)",
        )
        .bind(device)
        .bind(client)
        .bind(subject.to_string())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// A queued message was acknowledged by its receiver.
    pub async fn unqueue_mqtt(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mqtt_queue WHERE seq = ?").bind(seq).execute(&self.pool).await?;
        Ok(())
    }

    /// Seals a message's topic and payload under `subject`'s data key.
    fn seal_message(
        &self,
        subject: Subject,
        aad: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<(i64, Vec<u8>), StoreError> {
        let mut body = topic.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(payload);
        let key_id = self.ownership().sealing_key.get(&subject).copied().ok_or(StoreError::NoSubjectKey)?;
        let sealed = self.with_data_key(key_id, |k| Ok(k.seal(&body, aad.as_bytes())?))?;
        Ok((key_id, sealed))
    }

    /// Opens a message sealed under data key `key_id`; `None` if that key is gone (its
    /// subject was shredded, and the message with it).
    fn open_message(&self, key_id: i64, sealed: &[u8], aad: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        match self.with_data_key(key_id, |k| Ok(k.open(sealed, aad.as_bytes())?)) {
            Ok(opened) => Ok(Some(split_message(&opened, aad)?)),
            Err(StoreError::NoKey(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Every command kept retained, oldest first.
    pub async fn mqtt_retained(&self) -> Result<Vec<StoredRetained>, StoreError> {
        let mut kept = Vec::new();
        for row in sqlx::query(
            "SELECT seq, device_id, target_id, msg_id, subject, key_id, message FROM mqtt_retained ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let (device, target): (String, String) = (row.try_get("device_id")?, row.try_get("target_id")?);
            let msg_id: String = row.try_get("msg_id")?;
            let sealed: Vec<u8> = row.try_get("message")?;
            let aad = retained_aad(&device, &target, &msg_id);
            let Some((topic, payload)) = self.open_message(row.try_get("key_id")?, &sealed, &aad)? else { continue };
            let subject: String = row.try_get("subject")?;
            let subject = subject.parse().map_err(|e| StoreError::Corrupt(format!("MQTT retained subject: {e}")))?;
            kept.push(StoredRetained { seq: row.try_get("seq")?, subject, topic, payload, device, target });
        }
        Ok(kept)
    }

    /// Keeps a command retained for `device`'s sessions, in place of the rows `replaces`
    /// (the command before on its topic, and those that gave way to it). Returns its row, or
    /// `None` if it was not kept: `device` or `target` was removed, or `subject`'s key
    /// destroyed (its tenancy shredded), by the time it was written.
    #[allow(clippy::too_many_arguments)]
    pub async fn retain_mqtt(
        &self,
        (device, target): (&str, &str),
        subject: Subject,
        topic: &str,
        payload: &[u8],
        now: i64,
        replaces: &[i64],
    ) -> Result<Option<i64>, StoreError> {
        let msg_id = new_msg_id()?;
        let (key_id, sealed) = self.seal_message(subject, &retained_aad(device, target, &msg_id), topic, payload)?;
        let mut tx = self.pool.begin().await?;
        for seq in replaces {
            sqlx::query("DELETE FROM mqtt_retained WHERE seq = ?").bind(seq).execute(&mut *tx).await?;
        }
        // Checked in the writing transaction: a removal or a shred committed before it wins.
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO mqtt_retained (device_id, target_id, msg_id, subject, key_id, sent_ms, message)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
             WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1 AND removed_ms IS NULL)
               AND EXISTS (SELECT 1 FROM devices WHERE id = ?2 AND removed_ms IS NULL)
               AND EXISTS (SELECT 1 FROM data_keys WHERE id = ?5 AND destroyed_ms IS NULL)
             RETURNING seq",
        )
        .bind(device)
        .bind(target)
        .bind(&msg_id)
        .bind(subject.to_string())
        .bind(key_id)
        .bind(now)
        .bind(sealed)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// The rows of every retained command, readable or not.
    pub async fn mqtt_retained_rows(&self) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT seq FROM mqtt_retained").fetch_all(&self.pool).await?)
    }

    /// Deletes retained commands (a topic's commands are no longer to be retained).
    pub async fn unretain_mqtt(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for seq in seqs {
            sqlx::query("DELETE FROM mqtt_retained WHERE seq = ?").bind(seq).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
