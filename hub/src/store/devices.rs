//! Device rows: the sealed name the user typed and the sealed secret (recoverable by the
//! hub, because a DTLS pre-shared key must be).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::Row;
use zeroize::Zeroizing;

use super::{Store, StoreError};

/// What people chose for a device, apart from what discovery announces (which never
/// overwrites it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    /// The name people gave it, in place of the one it was added or announced with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its room, in place of the one discovery suggests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default)]
    pub favourite: bool,
    #[serde(default)]
    pub hidden: bool,
    /// Names for its values, by metric.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its values folded away from its card.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hidden_values: BTreeSet<String>,
    /// None of its values is stored (they are still heard live).
    #[serde(default)]
    pub unrecorded: bool,
    /// Its values that are not stored, by metric.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unrecorded_values: BTreeSet<String>,
}

/// A device as stored, with its name opened.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub id: String,
    /// The name people chose for it, or else the one it was added or announced with.
    pub name: String,
    /// What people chose for it.
    pub chosen: Chosen,
    pub created_ms: i64,
    pub credentials_ms: i64,
    /// Set for a tenant's own device.
    pub tenancy_id: Option<i64>,
    /// Where rules send it CoAP commands, as the owner set it.
    pub coap_address: Option<String>,
    /// Whether it may use plain MQTT (marked by its manager: it cannot do TLS).
    pub plaintext: bool,
    /// When it last connected over plain MQTT from another machine.
    pub clear_seen_ms: Option<i64>,
    /// For a bridge: the topic namespaces it may publish in (empty for other devices).
    pub namespaces: Vec<String>,
    /// For a device behind a bridge: the bridge.
    pub bridge_id: Option<String>,
    /// For a device behind a bridge: what discovery said of it (JSON, see `crate::bridges`).
    pub discovered: Option<String>,
    /// CoAP resources the hub observes on it (`coap://` or `coaps://` URIs).
    pub observe: Vec<String>,
}

fn name_aad(id: &str) -> Vec<u8> {
    format!("device-name:{id}").into_bytes()
}

fn coap_aad(id: &str) -> Vec<u8> {
    format!("device-coap:{id}").into_bytes()
}

fn namespaces_aad(id: &str) -> Vec<u8> {
    format!("device-namespaces:{id}").into_bytes()
}

fn observe_aad(id: &str) -> Vec<u8> {
    format!("device-observe:{id}").into_bytes()
}

fn discovered_aad(id: &str) -> Vec<u8> {
    format!("device-discovered:{id}").into_bytes()
}

fn chosen_aad(id: &str) -> Vec<u8> {
    format!("device-chosen:{id}").into_bytes()
}

fn secret_aad(id: &str, credentials_ms: i64) -> Vec<u8> {
    format!("device-secret:{id}:{credentials_ms}").into_bytes()
}

/// A query of device records: the columns they are read from, then `$rest`.
macro_rules! select_devices {
    ($rest:literal) => {
        concat!(
            "SELECT id, name_sealed, coap_sealed, created_ms, credentials_ms, tenancy_id, plaintext, clear_seen_ms,
                    namespaces_sealed, bridge_id, discovered_sealed, observe_sealed, chosen_sealed
             FROM devices ",
            $rest
        )
    };
}

impl Store {
    /// Adds a device. `Ok(false)` if the id is taken.
    pub async fn create_device(&self, id: &str, name: &str, secret: &str, now: i64) -> Result<bool, StoreError> {
        let name_sealed = self.hub_key.seal(name.as_bytes(), &name_aad(id))?;
        let secret_sealed = self.hub_key.seal(secret.as_bytes(), &secret_aad(id, now))?;
        let done = sqlx::query(
            "INSERT INTO devices (id, name_sealed, secret_sealed, created_ms, credentials_ms) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name_sealed)
        .bind(secret_sealed)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a device's secret. `Ok(false)` if there is no such (active) device.
    pub async fn set_device_secret(&self, id: &str, secret: &str, now: i64) -> Result<bool, StoreError> {
        let sealed = self.hub_key.seal(secret.as_bytes(), &secret_aad(id, now))?;
        let done =
            sqlx::query("UPDATE devices SET secret_sealed = ?, credentials_ms = ? WHERE id = ? AND removed_ms IS NULL")
                .bind(sealed)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a device: its credentials are destroyed at once; its readings stay, so the
    /// household's history is not lost with a broken sensor. A bridge's devices go with it.
    /// `Ok(false)` if unknown.
    pub async fn remove_device(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE devices SET secret_sealed = NULL, coap_sealed = NULL, namespaces_sealed = NULL, observe_sealed = NULL,
                 chosen_sealed = NULL, removed_ms = ?
             WHERE id = ? AND removed_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE devices SET chosen_sealed = NULL, removed_ms = ? WHERE bridge_id = ? AND removed_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        for sql in [
            "DELETE FROM mqtt_queue WHERE device_id = ?",
            "DELETE FROM mqtt_sessions WHERE device_id = ?",
            "DELETE FROM mqtt_retained WHERE device_id = ?1 OR target_id = ?1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Grants an active device topic namespaces to publish in for others (none: it is no
    /// bridge). `Ok(false)` if there is no such device.
    pub async fn set_device_namespaces(&self, id: &str, namespaces: &[String]) -> Result<bool, StoreError> {
        let sealed = match namespaces.is_empty() {
            true => None,
            false => Some(self.hub_key.seal(namespaces.join("\n").as_bytes(), &namespaces_aad(id))?),
        };
        let done = sqlx::query("UPDATE devices SET namespaces_sealed = ? WHERE id = ? AND removed_ms IS NULL")
            .bind(sealed)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets the CoAP resources the hub observes on an active device (none: it observes
    /// nothing there). `Ok(false)` if there is no such device.
    pub async fn set_device_observe(&self, id: &str, uris: &[String]) -> Result<bool, StoreError> {
        let sealed = match uris.is_empty() {
            true => None,
            false => Some(self.hub_key.seal(uris.join("\n").as_bytes(), &observe_aad(id))?),
        };
        let done = sqlx::query("UPDATE devices SET observe_sealed = ? WHERE id = ? AND removed_ms IS NULL")
            .bind(sealed)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds a device behind `bridge`, without credentials, in the bridge's tenancy if any.
    /// `Ok(false)` if the id is taken or the bridge is no longer there.
    pub async fn create_bridged_device(
        &self,
        id: &str,
        name: &str,
        bridge: &str,
        tenancy: Option<i64>,
        discovered: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let name_sealed = self.hub_key.seal(name.as_bytes(), &name_aad(id))?;
        let discovered_sealed = self.hub_key.seal(discovered.as_bytes(), &discovered_aad(id))?;
        // Only behind a bridge that is still there (not removed, nor gone with its tenancy).
        let done = sqlx::query(
            "INSERT INTO devices (id, name_sealed, created_ms, credentials_ms, tenancy_id, bridge_id, discovered_sealed)
             SELECT ?1, ?2, ?3, ?3, ?4, ?5, ?6
             WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?5 AND removed_ms IS NULL)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name_sealed)
        .bind(now)
        .bind(tenancy)
        .bind(bridge)
        .bind(discovered_sealed)
        .execute(&self.pool)
        .await?;
        if tenancy.is_some() {
            self.reload_ownership().await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Replaces (or, with `None`, takes away) what an active device of `connection` (the
    /// connection itself, or a device behind it) said of itself, and, with `name`, its
    /// name. `Ok(false)` if there is no such device (removed meanwhile).
    pub async fn set_device_described(
        &self,
        id: &str,
        connection: &str,
        discovered: Option<&str>,
        name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let discovered_sealed = discovered.map(|d| self.hub_key.seal(d.as_bytes(), &discovered_aad(id))).transpose()?;
        let name_sealed = name.map(|n| self.hub_key.seal(n.as_bytes(), &name_aad(id))).transpose()?;
        let done = sqlx::query(
            "UPDATE devices SET discovered_sealed = ?1, name_sealed = COALESCE(?2, name_sealed)
             WHERE id = ?3 AND (id = ?4 OR bridge_id = ?4) AND removed_ms IS NULL",
        )
        .bind(discovered_sealed)
        .bind(name_sealed)
        .bind(id)
        .bind(connection)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Changes what people chose for an active device, as `change` says, in one write
    /// transaction (two changes at once never undo each other). `Ok(false)` if there is no
    /// such device.
    pub async fn change_device_chosen<E: From<StoreError>>(
        &self,
        id: &str,
        change: impl FnOnce(Chosen) -> Result<Chosen, E>,
    ) -> Result<bool, E> {
        let mut tx = self.write().await.map_err(StoreError::from)?;
        let row: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT chosen_sealed FROM devices WHERE id = ? AND removed_ms IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        let Some((sealed,)) = row else { return Ok(false) };
        let before = match sealed {
            None => Chosen::default(),
            Some(sealed) => {
                serde_json::from_slice(&self.hub_key.open(&sealed, &chosen_aad(id)).map_err(StoreError::from)?)
                    .map_err(|_| StoreError::Corrupt(format!("device {id} chosen")))?
            }
        };
        let chosen = change(before)?;
        let sealed = match chosen == Chosen::default() {
            true => None,
            false => {
                let json = serde_json::to_vec(&chosen).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Some(self.hub_key.seal(&json, &chosen_aad(id)).map_err(StoreError::from)?)
            }
        };
        sqlx::query("UPDATE devices SET chosen_sealed = ? WHERE id = ?")
            .bind(sealed)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Sets (or, with `None`, takes away) where rules send an active device CoAP commands.
    /// `Ok(false)` if there is no such device.
    pub async fn set_device_coap(&self, id: &str, address: Option<&str>) -> Result<bool, StoreError> {
        let sealed = address.map(|a| self.hub_key.seal(a.as_bytes(), &coap_aad(id))).transpose()?;
        let done = sqlx::query("UPDATE devices SET coap_sealed = ? WHERE id = ? AND removed_ms IS NULL")
            .bind(sealed)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks whether an active device may use plain MQTT. `Ok(false)` if there is no such device.
    pub async fn set_device_plaintext(&self, id: &str, plaintext: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE devices SET plaintext = ? WHERE id = ? AND removed_ms IS NULL")
            .bind(plaintext)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that a device connected over plain MQTT from another machine.
    pub async fn note_device_in_clear(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET clear_seen_ms = ? WHERE id = ?").bind(now).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// How many devices the household of `tenancy` holds (none: the owner's).
    pub async fn count_devices(&self, tenancy: Option<i64>) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE tenancy_id IS ?")
            .bind(tenancy)
            .fetch_one(&self.pool)
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Active devices, names opened.
    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices_where(false).await
    }

    /// One active device, name opened.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(select_devices!("WHERE id = ? AND removed_ms IS NULL"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| self.device_record(row)).transpose()
    }

    /// Every device ever added, removed ones too (exports name the devices of old readings).
    pub async fn devices_all(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices_where(true).await
    }

    async fn devices_where(&self, removed_too: bool) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(select_devices!("WHERE ? OR removed_ms IS NULL ORDER BY created_ms, id"))
            .bind(removed_too)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|row| self.device_record(row)).collect()
    }

    /// A device row with its name opened.
    fn device_record(&self, row: sqlx::sqlite::SqliteRow) -> Result<DeviceRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let sealed: Vec<u8> = row.try_get("name_sealed")?;
        let name = String::from_utf8(self.hub_key.open(&sealed, &name_aad(&id))?)
            .map_err(|_| StoreError::Corrupt(format!("device {id} name")))?;
        let coap: Option<Vec<u8>> = row.try_get("coap_sealed")?;
        let coap_address = coap
            .map(|sealed| {
                String::from_utf8(self.hub_key.open(&sealed, &coap_aad(&id))?)
                    .map_err(|_| StoreError::Corrupt(format!("device {id} CoAP address")))
            })
            .transpose()?;
        let open_text = |column: &str, aad: Vec<u8>| -> Result<Option<String>, StoreError> {
            let sealed: Option<Vec<u8>> = row.try_get(column)?;
            sealed
                .map(|sealed| {
                    String::from_utf8(self.hub_key.open(&sealed, &aad)?)
                        .map_err(|_| StoreError::Corrupt(format!("device {id} {column}")))
                })
                .transpose()
        };
        let namespaces = open_text("namespaces_sealed", namespaces_aad(&id))?
            .map(|text| text.split('\n').map(str::to_owned).collect())
            .unwrap_or_default();
        let discovered = open_text("discovered_sealed", discovered_aad(&id))?;
        let observe = open_text("observe_sealed", observe_aad(&id))?
            .map(|text| text.split('\n').map(str::to_owned).collect())
            .unwrap_or_default();
        let chosen: Chosen = open_text("chosen_sealed", chosen_aad(&id))?
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|_| StoreError::Corrupt(format!("device {id} chosen")))?
            .unwrap_or_default();
        let name = chosen.name.clone().unwrap_or(name);
        Ok(DeviceRecord {
            chosen,
            observe,
            namespaces,
            discovered,
            bridge_id: row.try_get("bridge_id")?,
            id,
            name,
            coap_address,
            created_ms: row.try_get("created_ms")?,
            credentials_ms: row.try_get("credentials_ms")?,
            tenancy_id: row.try_get("tenancy_id")?,
            plaintext: row.try_get("plaintext")?,
            clear_seen_ms: row.try_get("clear_seen_ms")?,
        })
    }
}

impl Store {
    /// One active device's secret, if it has one.
    pub async fn device_secret(&self, id: &str) -> Result<Option<Zeroizing<String>>, StoreError> {
        let row = sqlx::query("SELECT secret_sealed, credentials_ms FROM devices WHERE id = ? AND removed_ms IS NULL AND secret_sealed IS NOT NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get("secret_sealed")?;
        let raw = Zeroizing::new(self.hub_key.open(&sealed, &secret_aad(id, row.try_get("credentials_ms")?))?);
        let secret = String::from_utf8(raw.to_vec()).map_err(|_| StoreError::Corrupt(format!("device {id} secret")))?;
        Ok(Some(Zeroizing::new(secret)))
    }

    /// The secret `id` logs in with at `now`: none for a removed device, nor for a
    /// tenant's own device outside its tenancy (a former tenant's bridge adds nothing).
    pub async fn login_secret(&self, id: &str, now: i64) -> Result<Option<Zeroizing<String>>, StoreError> {
        if !self.ownership().rule.admits(id, now) {
            return Ok(None);
        }
        self.device_secret(id).await
    }

    /// Whether `id` is an active device.
    pub async fn device_exists(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id = ? AND removed_ms IS NULL")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    /// Before MQTT had TLS, every device used plain MQTT (or CoAP; which is not recorded):
    /// the upgrade marks every device present as unable to do TLS, so that none drops off.
    #[tokio::test]
    async fn devices_present_at_the_upgrade_to_tls_keep_plain_mqtt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let mut before = sqlx::migrate!("../migrations");
            before.migrations =
                std::borrow::Cow::Owned(before.migrations.iter().filter(|m| m.version < 9).cloned().collect());
            before.run(&pool).await.unwrap();
            for (id, removed) in [("oldmeter", None), ("gone", Some(5_i64))] {
                sqlx::query("INSERT INTO devices (id, name_sealed, created_ms, credentials_ms, removed_ms) VALUES (?, x'00', 1, 1, ?)")
                    .bind(id)
                    .bind(removed)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = Store::open(&path, Key::generate().unwrap(), 0).await.unwrap();
        assert!(store.create_device("newplug", "Plug", "secret", 10).await.unwrap());
        let marks: Vec<(String, bool)> =
            sqlx::query_as("SELECT id, plaintext FROM devices ORDER BY id").fetch_all(store.pool()).await.unwrap();
        let expected = [("gone", false), ("newplug", false), ("oldmeter", true)].map(|(id, p)| (id.to_owned(), p));
        assert_eq!(marks, expected);
    }
}
