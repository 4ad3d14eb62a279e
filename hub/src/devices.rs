//! Devices' ids and credentials, and telling the protocol servers when a device's
//! credentials change so its open sessions end at once (removal is
//! [`crate::lifecycle::Lifecycle::remove_device`]'s). Used by the API and the CLI alike.

use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::crypto::{self, random_bytes};
use crate::store::{Store, StoreError};

/// Most characters in a device name.
pub const MAX_NAME_LEN: usize = 64;

/// Sent when a device's old credentials must stop working now.
#[derive(Debug, Clone)]
pub enum DeviceEvent {
    CredentialsChanged(String),
    Removed(String),
    /// It may no longer use plain MQTT: its sessions in clear end.
    PlaintextRevoked(String),
    /// Its namespaces as a bridge changed: its sessions end and start again under the new ones.
    NamespacesChanged(String),
    /// It is a tenant's own device and the tenancy ended: it may no longer log in.
    TenancyEnded(String),
}

impl DeviceEvent {
    pub fn device(&self) -> &str {
        match self {
            Self::CredentialsChanged(id)
            | Self::Removed(id)
            | Self::PlaintextRevoked(id)
            | Self::NamespacesChanged(id)
            | Self::TenancyEnded(id) => id,
        }
    }
}

/// A device's credentials, shown to the owner once.
#[derive(Debug)]
pub struct Credentials {
    pub id: String,
    pub secret: Zeroizing<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device name must be 1-{MAX_NAME_LEN} printable characters")]
    BadName,
    #[error("no such device")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] crypto::Error),
}

/// Lowercase letters and digits without look-alikes (no 0/o, 1/l).
const ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Secrets are typed into device firmware and command lines: letters and digits only.
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";

/// `len` characters drawn uniformly from `alphabet` (rejection sampling: no modulo bias).
pub fn random_string(alphabet: &[u8], len: usize) -> Result<String, crypto::Error> {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        random_bytes(&mut buf)?;
        for &b in buf.iter().filter(|&&b| usize::from(b) < limit) {
            if out.len() == len {
                break;
            }
            out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
        }
    }
    Ok(out)
}

fn new_secret() -> Result<Zeroizing<String>, crypto::Error> {
    // 32 characters of a 56-letter alphabet: about 186 bits.
    Ok(Zeroizing::new(random_string(SECRET_ALPHABET, 32)?))
}

/// Checks a device name the user typed.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME_LEN).contains(&n) && !name.chars().any(|c| c.is_control() || invisible(c)) && name.trim() == name
}

/// Characters that change how text around them reads without showing themselves: bidi
/// overrides and isolates, zero-width characters, line and paragraph separators. A name
/// with them could pass for another.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

/// Adds a device with fresh credentials.
pub async fn add(store: &Store, name: &str, now: i64) -> Result<Credentials, DeviceError> {
    if !valid_name(name) {
        return Err(DeviceError::BadName);
    }
    let secret = new_secret()?;
    loop {
        let id = random_string(ID_ALPHABET, 8)?;
        if store.create_device(&id, name, &secret, now).await? {
            return Ok(Credentials { id, secret });
        }
    }
}

/// Adds a device behind `bridge`: no credentials of its own (it never logs in), in the
/// bridge's tenancy if the bridge is a tenant's. Returns its id.
pub async fn add_bridged(
    store: &Store,
    name: &str,
    bridge: &str,
    tenancy: Option<i64>,
    discovered: &str,
    now: i64,
) -> Result<String, DeviceError> {
    if !valid_name(name) {
        return Err(DeviceError::BadName);
    }
    loop {
        let id = random_string(ID_ALPHABET, 8)?;
        if store.create_bridged_device(&id, name, bridge, tenancy, discovered, now).await? {
            return Ok(id);
        }
        if !store.device_exists(bridge).await? {
            return Err(DeviceError::NotFound);
        }
    }
}

/// Issues new credentials; the old ones stop working at once.
pub async fn regenerate(
    store: &Store,
    events: &broadcast::Sender<DeviceEvent>,
    id: &str,
    now: i64,
) -> Result<Credentials, DeviceError> {
    let secret = new_secret()?;
    if !store.set_device_secret(id, &secret, now).await? {
        return Err(DeviceError::NotFound);
    }
    let _ = events.send(DeviceEvent::CredentialsChanged(id.to_owned()));
    Ok(Credentials { id: id.to_owned(), secret })
}

/// Whether `secret` is the current secret of device `id`, which may log in at `now` (see
/// [`Store::login_secret`]). Compared in constant time.
pub async fn verify(store: &Store, id: &str, secret: &[u8], now: i64) -> Result<bool, StoreError> {
    if !crate::reading::valid_device_id(id) {
        return Ok(false);
    }
    Ok(match store.login_secret(id, now).await? {
        Some(stored) => bool::from(stored.as_bytes().ct_eq(secret)),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_use_the_alphabet() {
        let s = random_string(ID_ALPHABET, 200).unwrap();
        assert_eq!(s.len(), 200);
        assert!(s.bytes().all(|b| ID_ALPHABET.contains(&b)));
        assert!(crate::reading::valid_device_id(&s[..8]));
        assert_ne!(random_string(SECRET_ALPHABET, 32).unwrap(), random_string(SECRET_ALPHABET, 32).unwrap());
    }

    #[test]
    fn names() {
        assert!(valid_name("Kitchen sensor ✓"));
        assert!(!valid_name(""));
        assert!(!valid_name(" padded"));
        assert!(!valid_name("bell\u{7}"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
