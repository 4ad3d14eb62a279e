//! Looking at datagrams before OpenSSL does: ClientHellos, and records too short to decrypt.

/// What the listener needs of a ClientHello: its random (which tells a retransmission or a
/// replay from a new handshake) and whether it carries a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    pub random: [u8; 32],
    pub has_cookie: bool,
}

/// The ClientHello `datagram` begins with, if it is a DTLS 1.0/1.2 record holding the whole first fragment
/// of a ClientHello (RFC 6347 §4.1 and §4.2.2): the handshake inside the record's length,
/// the fragment the whole message, the session id at most 32 bytes and the cookie inside
/// the message. Only such a datagram goes to the cookie check; anything else from a source
/// without a session is dropped unread.
pub fn client_hello(datagram: &[u8]) -> Option<ClientHello> {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    let be16 = |b: &[u8]| usize::from(u16::from_be_bytes([b[0], b[1]]));
    let be24 = |b: &[u8]| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
    let dtls_version = |b: &[u8]| b[0] == 0xfe && (b[1] == 0xff || b[1] == 0xfd);
    // Record: type, version, epoch (0), sequence number (6), length.
    if datagram.len() < 13 || datagram[0] != HANDSHAKE || !dtls_version(&datagram[1..3]) || datagram[3..5] != [0, 0] {
        return None;
    }
    let record = datagram[13..].get(..be16(&datagram[11..13]))?;
    if record.len() < 12 {
        return None;
    }
    // Handshake: type, length, message sequence, fragment offset, fragment length.
    let (length, offset, fragment) = (be24(&record[1..4]), be24(&record[6..9]), be24(&record[9..12]));
    if record[0] != CLIENT_HELLO || offset != 0 || fragment != length {
        return None;
    }
    // ClientHello: version, random (32), session id, cookie.
    let body = record[12..].get(..fragment)?;
    if body.len() < 35 || !dtls_version(&body[0..2]) {
        return None;
    }
    let session = usize::from(body[34]);
    let cookie = usize::from(*body.get(35 + session)?);
    if session > 32 || body.len() <= 36 + session + cookie {
        return None;
    }
    let mut random = [0u8; 32];
    random.copy_from_slice(&body[2..34]);
    Some(ClientHello { random, has_cookie: cookie > 0 })
}

/// Whether `datagram` holds a record of a later epoch than 0 (so encrypted) shorter than
/// `least`: the explicit nonce and tag of the session's suite. OpenSSL 3.0 ends the whole
/// connection on such a record instead of dropping it (openssl/openssl#25290), so anyone
/// who forges a device's address could end its session with one datagram: these never
/// reach OpenSSL.
pub fn has_short_record(datagram: &[u8], least: usize) -> bool {
    let mut rest = datagram;
    while rest.len() >= 13 {
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        let length = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        if epoch != 0 && length < least {
            return true;
        }
        rest = rest.get(13 + length..).unwrap_or_default();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_client_hello(datagram: &[u8]) -> bool {
        client_hello(datagram).is_some()
    }

    /// First datagrams of libcoap's `coap-client-openssl` and `coap-client-gnutls`, as sent.
    const OPENSSL: &[u8] = include_bytes!("../../tests/data/client-hello-libcoap-openssl.bin");
    const GNUTLS: &[u8] = include_bytes!("../../tests/data/client-hello-libcoap-gnutls.bin");

    #[test]
    fn only_a_well_formed_client_hello_is_one() {
        assert!(is_client_hello(OPENSSL));
        assert!(is_client_hello(GNUTLS));
        // Cut short anywhere, it is not one.
        for cut in 0..OPENSSL.len() - 1 {
            assert!(!is_client_hello(&OPENSSL[..cut]), "cut at {cut}");
        }
        // Another record type, a later epoch, another handshake message, a later fragment.
        for (at, value) in [(0, 23u8), (4, 1), (13, 2), (21, 1)] {
            let mut changed = OPENSSL.to_vec();
            changed[at] = value;
            assert!(!is_client_hello(&changed), "byte {at} = {value}");
        }
        // Plain CoAP, nothing, noise.
        assert!(!is_client_hello(&[0x40, 0x01, 0x12, 0x34]));
        assert!(!is_client_hello(&[]));
        assert!(!is_client_hello(&[0x16; 300]));
        // libcoap's first ClientHello has no cookie yet.
        assert_eq!(client_hello(OPENSSL).map(|h| h.has_cookie), Some(false));
        assert_eq!(client_hello(OPENSSL).map(|h| h.random[..4].to_vec()), Some(OPENSSL[27..31].to_vec()));
    }

    #[test]
    fn short_encrypted_records_are_found_in_any_place() {
        let record = |epoch: u8, length: usize| {
            let mut r = vec![23, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, 1, 0, u8::try_from(length).unwrap_or(0)];
            r.extend(std::iter::repeat_n(0u8, length));
            r
        };
        assert!(!has_short_record(&record(1, 24), 24));
        assert!(has_short_record(&record(1, 23), 24));
        assert!(!has_short_record(&record(1, 16), 16));
        // Epoch 0 is in the clear: no length is too short.
        assert!(!has_short_record(&record(0, 2), 24));
        // The second record of a datagram counts too.
        assert!(has_short_record(&[record(1, 40), record(1, 14)].concat(), 16));
        assert!(!has_short_record(&[], 24));
    }
}
