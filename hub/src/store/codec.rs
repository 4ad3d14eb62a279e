//! The plaintext layout of a chunk: the readings of one series within one hour, sorted by
//! time. Compact on purpose (a reading is usually 4-6 bytes) so that sealing a chunk, not a
//! reading, keeps the AEAD overhead small per reading. Pure functions, no I/O.

use crate::reading::Value;

pub const HOUR_MS: i64 = 3_600_000;

const TAG_F64: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_TEXT: u8 = 3;
/// Tags 4..=7: a decimal number with 0..=3 digits after the point, as a zigzag varint.
const TAG_DECIMAL: u8 = 4;

/// The hour a timestamp falls in.
pub fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(HOUR_MS)
}

/// Malformed chunk bodies (only possible if the format changed or memory is corrupt: the
/// AEAD has already authenticated the bytes).
#[derive(Debug, thiserror::Error)]
#[error("chunk body is malformed")]
pub struct CodecError;

/// Encodes `(ts, value)` pairs of one hour. Sorts them by time (stable, so equal
/// timestamps keep arrival order).
pub fn encode(hour: i64, entries: &mut [(i64, &Value)], out: &mut Vec<u8>) {
    entries.sort_by_key(|(ts, _)| *ts);
    let mut prev = hour * HOUR_MS;
    for (ts, value) in entries.iter() {
        put_varint(out, (ts - prev) as u64);
        prev = *ts;
        match value {
            Value::Bool(false) => out.push(TAG_FALSE),
            Value::Bool(true) => out.push(TAG_TRUE),
            Value::Text(s) => {
                out.push(TAG_TEXT);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Number(n) => match as_decimal(*n) {
                Some((digits, mantissa)) => {
                    out.push(TAG_DECIMAL + digits);
                    put_varint(out, zigzag(mantissa));
                }
                None => {
                    out.push(TAG_F64);
                    out.extend_from_slice(&n.to_le_bytes());
                }
            },
        }
    }
}

/// Decodes a body made by [`encode`].
pub fn decode(hour: i64, mut body: &[u8]) -> Result<Vec<(i64, Value)>, CodecError> {
    let mut out = Vec::new();
    let mut ts = hour * HOUR_MS;
    while !body.is_empty() {
        let delta = get_varint(&mut body)?;
        ts = ts.checked_add(i64::try_from(delta).map_err(|_| CodecError)?).ok_or(CodecError)?;
        let (&tag, rest) = body.split_first().ok_or(CodecError)?;
        body = rest;
        let value = match tag {
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_F64 => {
                let (bytes, rest) = body.split_at_checked(8).ok_or(CodecError)?;
                body = rest;
                Value::Number(f64::from_le_bytes(bytes.try_into().map_err(|_| CodecError)?))
            }
            TAG_TEXT => {
                let len = usize::try_from(get_varint(&mut body)?).map_err(|_| CodecError)?;
                let (bytes, rest) = body.split_at_checked(len).ok_or(CodecError)?;
                body = rest;
                Value::Text(String::from_utf8(bytes.to_vec()).map_err(|_| CodecError)?)
            }
            TAG_DECIMAL..=7 => {
                let m = unzigzag(get_varint(&mut body)?);
                Value::Number(m as f64 / POW10[usize::from(tag - TAG_DECIMAL)])
            }
            _ => return Err(CodecError),
        };
        out.push((ts, value));
    }
    Ok(out)
}

/// Appends one (series, hour) chunk made by [`encode`] to a body holding several: what one
/// small commit appends under one key (see `Store::commit`).
pub fn put_group(out: &mut Vec<u8>, series: i64, hour: i64, chunk: &[u8]) {
    put_varint(out, zigzag(series));
    put_varint(out, zigzag(hour));
    put_varint(out, chunk.len() as u64);
    out.extend_from_slice(chunk);
}

/// One series' chunk of one hour inside a body of several: (series, hour, chunk).
pub type Group<'a> = (i64, i64, &'a [u8]);

/// The groups of a body made by [`put_group`].
pub fn groups(mut body: &[u8]) -> Result<Vec<Group<'_>>, CodecError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let series = unzigzag(get_varint(&mut body)?);
        let hour = unzigzag(get_varint(&mut body)?);
        let len = usize::try_from(get_varint(&mut body)?).map_err(|_| CodecError)?;
        let (chunk, rest) = body.split_at_checked(len).ok_or(CodecError)?;
        body = rest;
        out.push((series, hour, chunk));
    }
    Ok(out)
}

const POW10: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

/// Sensor values are mostly short decimals (21.5, 1013.25): store them as small integers
/// when that round-trips exactly.
fn as_decimal(n: f64) -> Option<(u8, i64)> {
    if n == 0.0 && n.is_sign_negative() {
        return None;
    }
    for (digits, scale) in POW10.iter().enumerate() {
        let m = (n * scale).round();
        if m.abs() < 9.0e15 && m / scale == n {
            return Some((digits as u8, m as i64));
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(CodecError)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_kind() {
        let hour = hour_of(1_780_000_123_456);
        let values = [
            Value::Number(21.5),
            Value::Number(-0.001),
            Value::Number(1013.25),
            Value::Number(1e300),
            Value::Number(0.1 + 0.2),
            Value::Number(-0.0),
            Value::Number(42.0),
            Value::Bool(true),
            Value::Bool(false),
            Value::Text("open ✓".into()),
        ];
        let base = hour * HOUR_MS;
        let mut entries: Vec<(i64, &Value)> =
            values.iter().enumerate().map(|(i, v)| (base + 1000 * (10 - i as i64), v)).collect();
        let mut body = Vec::new();
        encode(hour, &mut entries, &mut body);
        let back = decode(hour, &body).unwrap();
        let mut expected: Vec<(i64, Value)> = entries.iter().map(|(t, v)| (*t, (*v).clone())).collect();
        expected.sort_by_key(|(t, _)| *t);
        assert_eq!(back.len(), expected.len());
        for ((t1, v1), (t2, v2)) in back.iter().zip(&expected) {
            assert_eq!(t1, t2);
            match (v1, v2) {
                (Value::Number(a), Value::Number(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                _ => assert_eq!(v1, v2),
            }
        }
    }

    #[test]
    fn typical_readings_are_small() {
        let hour = 500_000;
        let v = Value::Number(21.5);
        let mut entries: Vec<(i64, &Value)> = (0..100).map(|i| (hour * HOUR_MS + i * 10_000, &v)).collect();
        let mut body = Vec::new();
        encode(hour, &mut entries, &mut body);
        // 10 s apart: 2 bytes of delta, 1 tag, 2 bytes of mantissa.
        assert!(body.len() <= 100 * 5, "{} bytes", body.len());
    }

    #[test]
    fn groups_round_trip_and_reject_truncation() {
        let (a, b) = (Value::Number(21.5), Value::Bool(true));
        let (mut one, mut two) = (Vec::new(), Vec::new());
        encode(7, &mut [(7 * HOUR_MS + 5, &a)], &mut one);
        encode(-2, &mut [(-2 * HOUR_MS + 9, &b)], &mut two);
        let mut body = Vec::new();
        put_group(&mut body, 3, 7, &one);
        put_group(&mut body, 12, -2, &two);
        let got = groups(&body).unwrap();
        assert_eq!(got, vec![(3, 7, one.as_slice()), (12, -2, two.as_slice())]);
        assert!(groups(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [&[0x80u8][..], &[0, 9], &[0, 0, 1, 2], &[0, 3, 10, b'a'], &[0xff; 12]] {
            assert!(decode(0, body).is_err(), "{body:?}");
        }
    }
}
