//! Commands to CoAP devices: one confirmable request, retransmitted as RFC 7252 §4.2 says
//! (ACK_TIMEOUT 2 s, doubling, MAX_RETRANSMIT 4), answered piggybacked or separately.

use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;

use super::model::{CoapMethod, CoapTarget};

const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u32 = 4;
/// How long to wait for a separate response after an empty ACK.
const SEPARATE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// Sends the request and returns the response code in words (e.g. "2.04 Changed"), or why
/// there was none. A 4.xx/5.xx answer is an error.
pub async fn request(target: &CoapTarget, method: CoapMethod, payload: &[u8]) -> Result<String, CoapError> {
    let bind = if target.addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(target.addr).await?;
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
        socket.send(&bytes).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            let Ok(n) = received else { break };
            let Ok(reply) = Packet::from_bytes(&buf[..n]) else { continue };
            if reply.header.message_id == packet.header.message_id
                && reply.header.get_type() == MessageType::Acknowledgement
            {
                if reply.header.code == MessageClass::Empty {
                    return separate_response(&socket, &packet, &mut buf).await;
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
async fn separate_response(socket: &UdpSocket, request: &Packet, buf: &mut [u8]) -> Result<String, CoapError> {
    let deadline = tokio::time::Instant::now() + SEPARATE_TIMEOUT;
    while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(buf)).await {
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
                let _ = socket.send(&b).await;
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
