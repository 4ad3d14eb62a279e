//! Commands to CoAP devices: one confirmable request, retransmitted as RFC 7252 §4.2 says
//! (ACK_TIMEOUT 2 s, doubling, MAX_RETRANSMIT 4), answered piggybacked or separately; over
//! DTLS with the device's pre-shared key (identity = device id, key = its secret), or in
//! clear for a device marked as unable to do DTLS.

use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config as DtlsConfig, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;
use webrtc_util::conn::Conn;
use zeroize::Zeroizing;

use super::model::{CoapMethod, CoapTarget};

const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u32 = 4;
/// The DTLS suites CoAP devices implement (RFC 7252 makes CCM_8 mandatory), for the hub's
/// commands to devices (its DTLS server lists them in `hearth-dtls`).
const PSK_SUITES: [CipherSuiteId; 3] = [
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
    CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
];

/// How long to wait for a separate response after an empty ACK.
const SEPARATE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a command reaches its device.
pub enum Security {
    /// Plain CoAP.
    Plain,
    /// DTLS with this pre-shared key.
    Psk { identity: String, key: Zeroizing<String> },
}

/// The longest a DTLS handshake with a device may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected datagram link to the device, plain or DTLS.
pub(crate) enum Link {
    Plain(UdpSocket),
    Dtls(Box<DTLSConn>),
}

impl Link {
    pub(crate) async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(socket) => socket.send(bytes).await.map(drop),
            Self::Dtls(conn) => conn.send(bytes).await.map(drop).map_err(|e| std::io::Error::other(e.to_string())),
        }
    }

    pub(crate) async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(socket) => socket.recv(buf).await,
            Self::Dtls(conn) => conn.recv(buf).await.map_err(|e| std::io::Error::other(e.to_string())),
        }
    }

    pub(crate) async fn close(self) {
        if let Self::Dtls(conn) = self {
            let _ = conn.close().await;
        }
    }
}

/// Why a CoAP command got no success answer.
#[derive(Debug, thiserror::Error)]
pub enum CoapError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Random(#[from] crate::crypto::Error),
    #[error("the request could not be encoded: {0}")]
    Encode(String),
    #[error("no answer from {addr} after {tries} tries")]
    NoAnswer { addr: std::net::SocketAddr, tries: u32 },
    #[error("the device acknowledged but never answered")]
    NoResponse,
    /// A 4.xx or 5.xx answer, with its payload.
    #[error("{0}")]
    Refused(String),
    #[error("DTLS with {addr}: {reason}")]
    Dtls { addr: std::net::SocketAddr, reason: String },
}

/// Sends the request and returns the response code in words (e.g. "2.04 Changed"), or why
/// there was none. A 4.xx/5.xx answer is an error.
pub async fn request(
    target: &CoapTarget,
    method: CoapMethod,
    payload: &[u8],
    security: Security,
) -> Result<String, CoapError> {
    let link = connect(target.addr, security).await?;
    let result = exchange(&link, target, method, payload).await;
    link.close().await;
    result
}

/// A link to one CoAP peer: a connected UDP socket, through a DTLS handshake with `security`.
pub(crate) async fn connect(addr: std::net::SocketAddr, security: Security) -> Result<Link, CoapError> {
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    Ok(match security {
        Security::Plain => Link::Plain(socket),
        Security::Psk { identity, key } => {
            let dtls_failed = |reason: String| CoapError::Dtls { addr, reason };
            let config = client_config(identity, key);
            let handshake = DTLSConn::new(Arc::new(socket), config, true, None);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(conn)) => Link::Dtls(Box::new(conn)),
                Ok(Err(error)) => return Err(dtls_failed(error.to_string())),
                Err(_) => return Err(dtls_failed("no handshake within 10 s".into())),
            }
        }
    })
}

/// The client side of DTLS with a pre-shared key, on the suites CoAP devices implement.
fn client_config(identity: String, key: Zeroizing<String>) -> DtlsConfig {
    DtlsConfig {
        psk: Some(Arc::new(move |_hint: &[u8]| Ok(key.as_bytes().to_vec()))),
        // For a client, the identity it sends.
        psk_identity_hint: Some(identity.into_bytes()),
        cipher_suites: PSK_SUITES.to_vec(),
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..Default::default()
    }
}

async fn exchange(link: &Link, target: &CoapTarget, method: CoapMethod, payload: &[u8]) -> Result<String, CoapError> {
    let mut ids = [0u8; 6];
    crate::crypto::random_bytes(&mut ids)?;
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(match method {
        CoapMethod::Put => RequestType::Put,
        CoapMethod::Post => RequestType::Post,
    });
    packet.header.message_id = u16::from_be_bytes([ids[0], ids[1]]);
    packet.set_token(ids[2..].to_vec());
    for segment in target.path.split('/').filter(|s| !s.is_empty()) {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.payload = payload.to_vec();
    let bytes = packet.to_bytes().map_err(|e| CoapError::Encode(format!("{e:?}")))?;

    let mut timeout = ACK_TIMEOUT;
    let mut buf = vec![0u8; 1500];
    for _ in 0..=MAX_RETRANSMIT {
        link.send(&bytes).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(received) = tokio::time::timeout_at(deadline, link.recv(&mut buf)).await {
            let Ok(n) = received else { break };
            let Ok(reply) = Packet::from_bytes(&buf[..n]) else { continue };
            if reply.header.message_id == packet.header.message_id
                && reply.header.get_type() == MessageType::Acknowledgement
            {
                if reply.header.code == MessageClass::Empty {
                    return separate_response(link, &packet, &mut buf).await;
                }
                return answer(&reply);
            }
            if reply.get_token() == packet.get_token() && matches!(reply.header.code, MessageClass::Response(_)) {
                return answer(&reply);
            }
        }
        timeout *= 2;
    }
    Err(CoapError::NoAnswer { addr: target.addr, tries: MAX_RETRANSMIT + 1 })
}

/// Waits for the response that follows an empty ACK, acknowledging it if confirmable.
async fn separate_response(link: &Link, request: &Packet, buf: &mut [u8]) -> Result<String, CoapError> {
    let deadline = tokio::time::Instant::now() + SEPARATE_TIMEOUT;
    while let Ok(received) = tokio::time::timeout_at(deadline, link.recv(buf)).await {
        let n = received?;
        let Ok(reply) = Packet::from_bytes(&buf[..n]) else { continue };
        if reply.get_token() != request.get_token() || !matches!(reply.header.code, MessageClass::Response(_)) {
            continue;
        }
        if reply.header.get_type() == MessageType::Confirmable {
            let mut ack = Packet::new();
            ack.header.set_type(MessageType::Acknowledgement);
            ack.header.code = MessageClass::Empty;
            ack.header.message_id = reply.header.message_id;
            if let Ok(b) = ack.to_bytes() {
                let _ = link.send(&b).await;
            }
        }
        return answer(&reply);
    }
    Err(CoapError::NoResponse)
}

fn answer(reply: &Packet) -> Result<String, CoapError> {
    let code = reply.header.code;
    let text = format!("{code}");
    let raw: u8 = code.into();
    if raw >> 5 == 2 {
        Ok(text)
    } else {
        Err(CoapError::Refused(format!("{text} {}", String::from_utf8_lossy(&reply.payload)).trim().to_owned()))
    }
}
