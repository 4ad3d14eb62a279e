//! The hub as a CoAP client of devices that serve their readings (the "report only" device
//! the CoAP world favours): for each resource its owner added by URI, the hub registers as
//! an observer (RFC 7641), stores every notification as a reading of the device, registers
//! again when notifications stop coming (Max-Age has passed), and polls with GET when the
//! device does not support Observe. Over DTLS with the device's own key (identity = device
//! id) for `coaps://`, in clear for `coap://` (only for devices marked as unable to do DTLS,
//! which the API checks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use tokio_util::sync::CancellationToken;

use super::Rejections;
use super::decode;
use super::pipeline::Ingest;
use crate::automation::coap::{CoapError, Link, Security, connect};
use crate::reading::valid_metric;
use crate::repeated::Repeated;
use crate::store::Store;

/// Most resources observed on one device.
pub const MAX_RESOURCES: usize = 8;
/// How long a confirmable request waits for its first answer (doubled at each try).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u32 = 4;
/// Max-Age when the device gives none (RFC 7252's default).
const DEFAULT_MAX_AGE: u64 = 60;
/// Notifications may come this long after Max-Age before the hub registers again.
const GRACE: Duration = Duration::from_secs(10);
/// Polling a device without Observe: at most this often, at least this rarely.
const POLL_MIN: Duration = Duration::from_secs(5);
const POLL_MAX: Duration = Duration::from_secs(300);
/// Waits between failed attempts, doubling up to the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

static FAILED: Repeated = Repeated::new("CoAP observation failed");

/// A resource to observe, as the owner gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub secure: bool,
    pub addr: SocketAddr,
    /// Path segments.
    pub path: Vec<String>,
    /// The metric its values are stored as: the path's last segment.
    pub metric: String,
}

/// Reads `coap://<ip>[:port]/<path>` or `coaps://...` (an IP address, as for CoAP commands;
/// default ports 5683 and 5684). The last path segment, a valid metric name, names the values.
pub fn parse_uri(uri: &str) -> Result<Resource, String> {
    let bad = |why: &str| format!("{uri:?} {why}");
    let (secure, rest) = match uri.split_once("://") {
        Some(("coaps", rest)) => (true, rest),
        Some(("coap", rest)) => (false, rest),
        _ => return Err(bad("is not a coap:// or coaps:// URI")),
    };
    if rest.contains(['?', '#']) {
        return Err(bad("has a query or fragment: give the resource's path alone"));
    }
    let (host, path) = rest.split_once('/').ok_or_else(|| bad("has no path"))?;
    let addr = crate::automation::model::parse_coap_address_or(host, if secure { 5684 } else { 5683 })
        .map_err(|e| bad(&format!("has no device address: {}", e.0)))?;
    let path: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let fine = |s: &String| {
        (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    if path.is_empty() || path.len() > 8 || !path.iter().all(fine) {
        return Err(bad("needs a path of 1 to 8 segments of letters, digits and -._~"));
    }
    let metric = path.last().cloned().unwrap_or_default();
    if !valid_metric(&metric) {
        return Err(bad("ends in a segment that is not a metric name (letters, digits, '_', '.', '-')"));
    }
    Ok(Resource { secure, addr, path, metric })
}

/// What the observers need from the rest of the hub.
#[derive(Clone)]
pub struct ObserveContext {
    pub store: Store,
    pub ingest: Ingest,
    pub rejections: Rejections,
}

/// The running observations, per device. Cheap to clone.
#[derive(Clone)]
pub struct Observers {
    ctx: ObserveContext,
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    shutdown: CancellationToken,
}

impl Observers {
    pub fn new(ctx: ObserveContext, shutdown: CancellationToken) -> Self {
        Self { ctx, running: Arc::default(), shutdown }
    }

    /// Starts observing what every device's owner added.
    pub async fn start_all(&self) -> Result<(), crate::store::StoreError> {
        for device in self.ctx.store.devices().await? {
            if !device.observe.is_empty() {
                self.reload(&device.id).await;
            }
        }
        Ok(())
    }

    /// (Re)starts the observations of `device` from what is stored now: after its
    /// resources, its key or its mark changed, or it was removed (then they just stop).
    pub async fn reload(&self, device: &str) {
        if let Some(old) = self.running.lock().ok().and_then(|mut r| r.remove(device)) {
            old.cancel();
        }
        let record = match self.ctx.store.device(device).await {
            // A tenant's own device is observed only during its tenancy.
            Ok(Some(record)) if self.ctx.store.ownership().rule.admits(device, self.ctx.ingest.now_ms()) => record,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, device.id = %device, "could not read a device's CoAP resources");
                return;
            }
        };
        let token = self.shutdown.child_token();
        for uri in record.observe.iter().take(MAX_RESOURCES) {
            match parse_uri(uri) {
                Ok(resource) => {
                    tokio::spawn(observe(self.ctx.clone(), device.to_owned(), resource, token.clone()));
                }
                Err(reason) => tracing::warn!(device.id = %device, %reason, "CoAP resource left out"),
            }
        }
        if let Ok(mut running) = self.running.lock()
            && let Some(replaced) = running.insert(device.to_owned(), token)
        {
            // Another reload ran meanwhile: only the last one's observations go on.
            replaced.cancel();
        }
    }
}

/// Observes one resource until `stop`, starting again after failures.
async fn observe(ctx: ObserveContext, device: String, resource: Resource, stop: CancellationToken) {
    let mut wait = RETRY_FIRST;
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = session(&ctx, &device, &resource, &stop) => outcome,
        };
        match outcome {
            Ok(()) => wait = RETRY_FIRST,
            Err(error) => {
                if FAILED.log_this(&device) {
                    tracing::warn!(device.id = %device, addr = %resource.addr, %error, "CoAP observation failed; trying again");
                }
                let now = ctx.ingest.now_ms();
                ctx.rejections.record(&device, "coap-observe", &format!("observing {}: {error}", resource.metric), now);
                let clock = ctx.ingest.clock();
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = clock.sleep_until(clock.now_ms() + ms(wait)) => {}
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One link to the device: registers (or polls), and stores what comes, until notifications
/// stop coming or the link fails.
async fn session(
    ctx: &ObserveContext,
    device: &str,
    resource: &Resource,
    stop: &CancellationToken,
) -> Result<(), CoapError> {
    let security = match resource.secure {
        true => {
            let key = ctx.store.device_secret(device).await.map_err(|e| CoapError::Refused(e.to_string()))?;
            let key = key.ok_or_else(|| CoapError::Refused("the device has no key".into()))?;
            Security::Psk { identity: device.to_owned(), key }
        }
        false => Security::Plain,
    };
    let link = connect(resource.addr, security).await?;
    let result = registered(ctx, device, resource, &link, stop).await;
    link.close().await;
    result
}

async fn registered(
    ctx: &ObserveContext,
    device: &str,
    resource: &Resource,
    link: &Link,
    stop: &CancellationToken,
) -> Result<(), CoapError> {
    let mut token = [0u8; 4];
    crate::crypto::random_bytes(&mut token)?;
    let mut buf = vec![0u8; 1500];
    // The hub's clock decides when a value is stale (tests move it on).
    let clock = ctx.ingest.clock();
    loop {
        let reply = get(link, resource, &token, &mut buf).await?;
        store(ctx, device, resource, &reply).await;
        let fresh = Duration::from_secs(max_age(&reply));
        if reply.get_option(CoapOption::Observe).is_none() {
            // No Observe here: ask again when the value may have changed.
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = clock.sleep_until(clock.now_ms() + ms(fresh.clamp(POLL_MIN, POLL_MAX))) => continue,
            }
        }
        let mut deadline = clock.now_ms() + ms(fresh + GRACE);
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                // Nothing for longer than the last value was fresh: register again.
                () = clock.sleep_until(deadline) => break,
                received = link.recv(&mut buf) => received,
            };
            let Ok(packet) = Packet::from_bytes(&buf[..received?]) else { continue };
            let ours = packet.get_token() == token.as_slice();
            if packet.header.get_type() == MessageType::Confirmable {
                // Acknowledged if ours; a Reset tells the device to stop sending the rest.
                let kind = if ours { MessageType::Acknowledgement } else { MessageType::Reset };
                empty(link, kind, packet.header.message_id).await;
            }
            if ours && matches!(packet.header.code, MessageClass::Response(_)) {
                store(ctx, device, resource, &packet).await;
                deadline = clock.now_ms() + ms(Duration::from_secs(max_age(&packet)) + GRACE);
                if packet.get_option(CoapOption::Observe).is_none() {
                    // The device ended the observation (an error, or a last value).
                    break;
                }
            }
        }
    }
}

/// A confirmable GET with Observe: 0, retransmitted as RFC 7252 says; returns its response
/// (piggybacked, or separate after an empty ACK).
async fn get(link: &Link, resource: &Resource, token: &[u8], buf: &mut [u8]) -> Result<Packet, CoapError> {
    let mut id = [0u8; 2];
    crate::crypto::random_bytes(&mut id)?;
    let mut request = Packet::new();
    request.header.set_type(MessageType::Confirmable);
    request.header.code = MessageClass::Request(RequestType::Get);
    request.header.message_id = u16::from_be_bytes(id);
    request.set_token(token.to_vec());
    request.add_option(CoapOption::Observe, Vec::new());
    for segment in &resource.path {
        request.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    let bytes = request.to_bytes().map_err(|e| CoapError::Encode(format!("{e:?}")))?;
    let mut timeout = ACK_TIMEOUT;
    let mut acknowledged = false;
    for _ in 0..=MAX_RETRANSMIT {
        if !acknowledged {
            link.send(&bytes).await?;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(received) = tokio::time::timeout_at(deadline, link.recv(buf)).await {
            let Ok(reply) = Packet::from_bytes(&buf[..received?]) else { continue };
            let answers = reply.header.message_id == request.header.message_id
                && reply.header.get_type() == MessageType::Acknowledgement;
            if answers && reply.header.code == MessageClass::Empty {
                acknowledged = true;
                continue;
            }
            if (answers || reply.get_token() == token) && matches!(reply.header.code, MessageClass::Response(_)) {
                if reply.header.get_type() == MessageType::Confirmable {
                    empty(link, MessageType::Acknowledgement, reply.header.message_id).await;
                }
                return match reply.header.code {
                    MessageClass::Response(ResponseType::Content | ResponseType::Valid) => Ok(reply),
                    code => Err(CoapError::Refused(
                        format!("{code} {}", String::from_utf8_lossy(&reply.payload)).trim().to_owned(),
                    )),
                };
            }
        }
        timeout *= 2;
    }
    Err(CoapError::NoAnswer { addr: resource.addr, tries: MAX_RETRANSMIT + 1 })
}

async fn empty(link: &Link, kind: MessageType, message_id: u16) {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = message_id;
    if let Ok(bytes) = packet.to_bytes() {
        let _ = link.send(&bytes).await;
    }
}

/// A duration in the hub clock's milliseconds.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The Max-Age option (seconds), or CoAP's default.
fn max_age(packet: &Packet) -> u64 {
    packet
        .get_option(CoapOption::MaxAge)
        .and_then(|values| values.front())
        .map(|bytes| bytes.iter().take(4).fold(0_u64, |n, b| (n << 8) | u64::from(*b)))
        .unwrap_or(DEFAULT_MAX_AGE)
        // A device that says its value stays fresh for years would never be asked again.
        .min(POLL_MAX.as_secs())
}

/// A value from the device, stored like any reading (a bad one is shown on the device).
/// Waits for room in the ingest queue, so a flood of notifications piles up nowhere.
async fn store(ctx: &ObserveContext, device: &str, resource: &Resource, packet: &Packet) {
    if !matches!(packet.header.code, MessageClass::Response(ResponseType::Content)) || packet.payload.is_empty() {
        return;
    }
    let now = ctx.ingest.now_ms();
    match decode::decode_metric(device, &resource.metric, &packet.payload, now) {
        Ok(reading) => {
            let _ = ctx.ingest.submit(vec![reading]).await;
        }
        Err(error) => ctx.rejections.record(device, "coap-observe", &format!("{}: {error}", resource.metric), now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_device_address_and_a_metric() {
        let r = parse_uri("coaps://192.0.2.7/sensors/temperature").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.secure);
        assert_eq!(r.addr, "192.0.2.7:5684".parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!((r.path.len(), r.metric.as_str()), (2, "temperature"));
        let r = parse_uri("coap://[2001:db8::1]:5690/t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.secure, r.addr.port()), (false, 5690));
        for bad in [
            "http://192.0.2.7/t",
            "coap://192.0.2.7",
            "coap://192.0.2.7/",
            "coap://lamp.local/t",
            "coap://0.0.0.0/t",
            "coap://224.0.1.187/t",
            "coap://192.0.2.7/t?x=1",
            "coap://192.0.2.7/a b",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad} was accepted");
        }
    }
}
