//! Recognising a ClientHello before anything else is done with a datagram.

/// Whether `datagram` begins with a DTLS 1.0/1.2 record holding the whole first fragment
/// of a ClientHello (RFC 6347 §4.1 and §4.2.2): the handshake inside the record's length,
/// the fragment the whole message, the session id at most 32 bytes and the cookie inside
/// the message. Only such a datagram goes to the cookie check; anything else from a source
/// without a session is dropped unread.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    let be16 = |b: &[u8]| usize::from(u16::from_be_bytes([b[0], b[1]]));
    let be24 = |b: &[u8]| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
    let dtls_version = |b: &[u8]| b[0] == 0xfe && (b[1] == 0xff || b[1] == 0xfd);
    // Record: type, version, epoch (0), sequence number (6), length.
    if datagram.len() < 13 || datagram[0] != HANDSHAKE || !dtls_version(&datagram[1..3]) || datagram[3..5] != [0, 0] {
        return false;
    }
    let Some(record) = datagram[13..].get(..be16(&datagram[11..13])) else { return false };
    if record.len() < 12 {
        return false;
    }
    // Handshake: type, length, message sequence, fragment offset, fragment length.
    let (length, offset, fragment) = (be24(&record[1..4]), be24(&record[6..9]), be24(&record[9..12]));
    if record[0] != CLIENT_HELLO || offset != 0 || fragment != length {
        return false;
    }
    // ClientHello: version, random (32), session id, cookie.
    let Some(body) = record[12..].get(..fragment) else { return false };
    if body.len() < 35 || !dtls_version(&body[0..2]) {
        return false;
    }
    let session = usize::from(body[34]);
    let Some(&cookie) = body.get(35 + session) else { return false };
    session <= 32 && body.len() > 36 + session + usize::from(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
