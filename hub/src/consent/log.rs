//! The access log's hash chain. Each entry's hash is SHA-256 over the previous entry's hash
//! and this entry's fields, length-prefixed so no two different entries hash alike. Editing,
//! removing or reordering any entry breaks every hash after it.

use ed25519_dalek::VerifyingKey;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::receipt::{self, ReceiptSigner, VerifyError};

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// One access log entry, as hashed and as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: i64,
    pub ts: i64,
    /// A [`LogKind`](hearth_model::consent::LogKind)'s name, kept as stored: a row whose
    /// kind was tampered with must still reach [`verify`], which reports it.
    pub kind: String,
    pub subject_id: i64,
    pub recipient_id: String,
    pub grant_id: Option<String>,
    /// JSON with what was read (metrics, range, rows served) or decided.
    pub detail: String,
}

/// The hash of `entry` chained after `prev`.
pub fn chain(prev: &[u8], entry: &Entry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hearth-access-log-v1");
    h.update(prev);
    for field in [
        entry.seq.to_be_bytes().as_slice(),
        &entry.ts.to_be_bytes(),
        entry.kind.as_bytes(),
        &entry.subject_id.to_be_bytes(),
        entry.recipient_id.as_bytes(),
        entry.grant_id.as_deref().unwrap_or("\0none").as_bytes(),
        entry.detail.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().into()
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the access log is broken at entry {seq}: {problem}")]
pub struct Broken {
    pub seq: i64,
    pub problem: &'static str,
}

/// Checks stored `(entry, prev_hash, hash)` rows in order. Returns how many verified.
pub fn verify<'a>(rows: impl IntoIterator<Item = (&'a Entry, &'a [u8], &'a [u8])>) -> Result<usize, Broken> {
    let mut prev = GENESIS.to_vec();
    let mut last_seq = 0;
    let mut n = 0;
    for (entry, prev_hash, hash) in rows {
        if entry.seq != last_seq + 1 {
            return Err(Broken { seq: entry.seq, problem: "an entry before it is missing" });
        }
        if prev_hash != prev.as_slice() {
            return Err(Broken { seq: entry.seq, problem: "it does not follow the entry before it" });
        }
        if chain(prev_hash, entry).as_slice() != hash {
            return Err(Broken { seq: entry.seq, problem: "its contents were changed" });
        }
        prev = hash.to_vec();
        last_seq = entry.seq;
        n += 1;
    }
    Ok(n)
}

/// A signed statement of the chain's head (its last entry's number and hash, when), made
/// with the receipt key. A data subject keeps it: a later rewrite of any entry up to that
/// one changes that entry's hash, and a rewritten chain no longer matches the checkpoint,
/// even if it was re-hashed from end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub at: i64,
}

/// Why a checkpoint could not be held against the log.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is not signed by this hub's key: {0}")]
    Signature(#[from] VerifyError),
    #[error("the checkpoint is not one this hub made")]
    Shape,
    #[error("the access log was rewritten: entry {0} is not what the checkpoint says")]
    Rewritten(i64),
    #[error("the access log lost entries: the checkpoint names entry {0}, which is gone")]
    Truncated(i64),
}

impl Checkpoint {
    /// Signs it as a compact JWS.
    pub fn sign(&self, signer: &ReceiptSigner) -> String {
        let hash: String = self.hash.iter().map(|b| format!("{b:02x}")).collect();
        signer.sign(&json!({ "hearth": { "checkpoint": { "seq": self.seq, "hash": hash, "at": self.at } } }))
    }

    /// Reads a signed checkpoint, checking the signature with `public`.
    pub fn read(jws: &str, public: &VerifyingKey) -> Result<Self, CheckpointError> {
        let claims = receipt::verify(jws.trim(), public)?;
        let c = &claims["hearth"]["checkpoint"];
        let (Some(seq), Some(hash), Some(at)) = (c["seq"].as_i64(), c["hash"].as_str(), c["at"].as_i64()) else {
            return Err(CheckpointError::Shape);
        };
        let hash = (0..hash.len())
            .step_by(2)
            .map(|i| hash.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or(CheckpointError::Shape)?;
        Ok(Self { seq, hash, at })
    }

    /// Holds the stored `(entry, hash)` rows to this checkpoint.
    pub fn holds<'a>(&self, mut rows: impl Iterator<Item = (&'a Entry, &'a [u8])>) -> Result<(), CheckpointError> {
        if self.seq == 0 {
            return Ok(()); // made when the log was empty
        }
        match rows.find(|(e, _)| e.seq == self.seq) {
            Some((_, hash)) if hash == self.hash.as_slice() => Ok(()),
            Some(_) => Err(CheckpointError::Rewritten(self.seq)),
            None => Err(CheckpointError::Truncated(self.seq)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: i64) -> Vec<(Entry, Vec<u8>, Vec<u8>)> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let e = Entry {
                    seq,
                    ts: 1000 + seq,
                    kind: "read".into(),
                    subject_id: 2,
                    recipient_id: "r".into(),
                    grant_id: Some("g".into()),
                    detail: format!("{{\"rows\":{seq}}}"),
                };
                let hash = chain(&prev, &e).to_vec();
                let row = (e, prev.clone(), hash.clone());
                prev = hash;
                row
            })
            .collect()
    }

    fn check(rows: &[(Entry, Vec<u8>, Vec<u8>)]) -> Result<usize, Broken> {
        verify(rows.iter().map(|(e, p, h)| (e, p.as_slice(), h.as_slice())))
    }

    fn pairs(rows: &[(Entry, Vec<u8>, Vec<u8>)]) -> Vec<(&Entry, &[u8])> {
        rows.iter().map(|(e, _, h)| (e, h.as_slice())).collect()
    }

    #[test]
    fn a_checkpoint_finds_a_chain_rehashed_from_end_to_end() {
        let signer = ReceiptSigner::from_seed(&[9; 32]);
        let rows = entries(4);
        let (head, _, hash) = &rows[2];
        let jws = Checkpoint { seq: head.seq, hash: hash.clone(), at: 5 }.sign(&signer);
        let cp = Checkpoint::read(&jws, &signer.public_key()).unwrap();
        assert_eq!((cp.seq, cp.at), (3, 5));
        assert_eq!(cp.holds(pairs(&rows).into_iter()), Ok(()));

        // Whoever has the file edits entry 2 and recomputes every hash after it: the chain
        // verifies again, but not against the checkpoint.
        let mut forged = rows.clone();
        forged[1].0.detail = "{\"rows\":0}".into();
        let mut prev = GENESIS.to_vec();
        for (e, p, h) in &mut forged {
            *p = prev.clone();
            *h = chain(&prev, e).to_vec();
            prev = h.clone();
        }
        assert_eq!(check(&forged), Ok(4), "a re-hashed chain passes the chain check alone");
        assert_eq!(cp.holds(pairs(&forged).into_iter()), Err(CheckpointError::Rewritten(3)));
        assert_eq!(cp.holds(pairs(&forged[..2]).into_iter()), Err(CheckpointError::Truncated(3)));

        let other = ReceiptSigner::from_seed(&[1; 32]);
        assert!(matches!(Checkpoint::read(&jws, &other.public_key()), Err(CheckpointError::Signature(_))));
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(check(&entries(5)), Ok(5));
        assert_eq!(check(&[]), Ok(0));
    }

    #[test]
    fn edits_removals_and_reorders_are_found() {
        let mut edited = entries(5);
        edited[2].0.detail = "{\"rows\":0}".into();
        assert_eq!(check(&edited), Err(Broken { seq: 3, problem: "its contents were changed" }));

        let mut removed = entries(5);
        removed.remove(1);
        assert_eq!(check(&removed).unwrap_err().seq, 3);

        // Removing one and renumbering the rest, without the key-less hash being redone, fails too.
        let mut renumbered = entries(5);
        renumbered.remove(1);
        for (i, row) in renumbered.iter_mut().enumerate() {
            row.0.seq = i as i64 + 1;
        }
        assert_eq!(check(&renumbered).unwrap_err().seq, 2);

        let mut swapped = entries(5);
        swapped.swap(3, 4);
        assert!(check(&swapped).is_err());
    }
}
