//! Keys and sealing. Owns the hub key file, the data keys it wraps, and the sealed format
//! (XChaCha20-Poly1305, random nonce, associated data naming what a ciphertext belongs to).
//! It must not know about SQL or protocols: callers pass bytes and context, get bytes back.

use std::fmt;

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Version byte at the start of every sealed blob, so the format can change later.
pub const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext: version, nonce and tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Errors from sealing and key handling. They never include key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ciphertext failed authentication (wrong key, or the data or its context changed)")]
    Open,
    #[error("sealed data has unknown format version {0}")]
    Version(u8),
    #[error("sealed data is truncated")]
    Truncated,
    #[error("key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    #[error("key file {0} is not a Hearth key (expected 32 bytes)")]
    KeyFormat(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Fills `buf` with bytes from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::getrandom(buf).map_err(|e| Error::Random(e.to_string()))
}

/// A 256-bit symmetric key. Not `Copy`, not `Serialize`; prints redacted; zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(****)")
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Result<Self, Error> {
        let mut k = [0u8; 32];
        random_bytes(&mut k)?;
        Ok(Self(k))
    }

    /// Loads the hub key from `path`, creating it (mode 0600) on first run.
    ///
    /// The hub key is kept outside the database on purpose: a copied database file alone
    /// must reveal nothing.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), Error> {
        let io = |source| Error::KeyFile { path: path.display().to_string(), source };
        match std::fs::read(path) {
            Ok(mut bytes) => {
                let key =
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| Error::KeyFormat(path.display().to_string()));
                bytes.zeroize();
                Ok((Self(key?), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                // Whole or not at all: a power cut never leaves a key file without its key.
                crate::durable::create(path, &key.0, 0o600).map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals `plaintext` with a fresh random nonce. `aad` names what the data belongs to
    /// (its row, series, time...): opening it under any other context fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        self.seal_with_nonce(plaintext, aad, &nonce)
    }

    fn seal_with_nonce(&self, plaintext: &[u8], aad: &[u8], nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>, Error> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let aad = versioned_aad(FORMAT_V1, aad);
        let ct = cipher
            .encrypt(XNonce::from_slice(nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| Error::Open)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a blob made by [`Key::seal`] with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let (&version, rest) = sealed.split_first().ok_or(Error::Truncated)?;
        if version != FORMAT_V1 {
            return Err(Error::Version(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Truncated);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let aad = versioned_aad(version, aad);
        cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad }).map_err(|_| Error::Open)
    }

    /// Wraps another key under this one (key hierarchy: hub key -> data keys).
    pub fn wrap(&self, key: &Key, context: &[u8]) -> Result<Vec<u8>, Error> {
        self.seal(&key.0, &[b"wrap:", context].concat())
    }

    /// Unwraps a key made by [`Key::wrap`] with the same context.
    pub fn unwrap_key(&self, wrapped: &[u8], context: &[u8]) -> Result<Key, Error> {
        let mut raw = self.open(wrapped, &[b"wrap:", context].concat())?;
        let key = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| Error::Truncated);
        raw.zeroize();
        Ok(Key(key?))
    }
}

/// The format version is bound into the associated data too, so a blob cannot be
/// reinterpreted under another version's rules.
fn versioned_aad(version: u8, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(aad.len() + 8);
    out.extend_from_slice(b"hearth");
    out.push(version);
    out.extend_from_slice(aad);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let key = Key::generate().unwrap();
        let sealed = key.seal(b"21.5", b"series:1").unwrap();
        assert_eq!(sealed.len(), 4 + OVERHEAD);
        assert_eq!(key.open(&sealed, b"series:1").unwrap(), b"21.5");
        assert!(matches!(key.open(&sealed, b"series:2"), Err(Error::Open)));
        let other = Key::generate().unwrap();
        assert!(matches!(other.open(&sealed, b"series:1"), Err(Error::Open)));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(key.open(&tampered, b"series:1"), Err(Error::Open)));
        assert!(matches!(key.open(&sealed[..10], b"series:1"), Err(Error::Truncated)));
    }

    /// Pins the on-disk format: if this changes, old databases no longer open. The expected
    /// bytes were computed with libsodium's `crypto_aead_xchacha20poly1305_ietf_encrypt`
    /// (PyNaCl), an implementation independent of this one.
    #[test]
    fn known_answer() {
        let key = Key([7u8; 32]);
        let nonce = [9u8; NONCE_LEN];
        let sealed = key.seal_with_nonce(b"hello", b"ctx", &nonce).unwrap();
        let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "01090909090909090909090909090909090909090909090909\
             d6178ee61330fb10068cfc8e0101e8b8c887d19340"
        );
        assert_eq!(key.open(&sealed, b"ctx").unwrap(), b"hello");
    }

    #[test]
    fn wrap_unwrap() {
        let hub = Key::generate().unwrap();
        let data = Key::generate().unwrap();
        let wrapped = hub.wrap(&data, b"data-key:1").unwrap();
        let back = hub.unwrap_key(&wrapped, b"data-key:1").unwrap();
        assert_eq!(back.0, data.0);
        assert!(hub.unwrap_key(&wrapped, b"data-key:2").is_err());
    }

    #[test]
    fn key_file_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.key");
        let (k1, created) = Key::load_or_create(&path).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (k2, created) = Key::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.0, k2.0);
        assert_eq!(format!("{k1:?}"), "Key(****)");
    }
}
