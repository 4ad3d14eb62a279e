//! The access log's hash chain. Each entry's hash is SHA-256 over the previous entry's hash
//! and this entry's fields, length-prefixed so no two different entries hash alike. Editing,
//! removing or reordering any entry breaks every hash after it.

use sha2::{Digest, Sha256};

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
