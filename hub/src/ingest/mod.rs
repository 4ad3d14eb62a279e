//! Device data in: payload decoding, the commit pipeline, and the protocol servers. What a
//! device may send is decided here; how it is stored is the store's business.
// A protocol server's rules are kept in functions and types of their own (see
// `mqtt::session`), not in one loop: no function here is longer than clippy.toml says.
#![warn(clippy::too_many_lines)]

pub mod coap;
pub mod coap_observe;
pub mod decode;
pub mod mqtt;
pub mod mqtt_client;
pub mod pipeline;
pub mod recording;
pub mod retained;
pub mod wear;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Why a device's message was refused, kept so the owner can see it in the UI and API.
pub use hearth_model::devices::{Refused, Rejection};

/// Most different reasons kept per device: a bridge refused for several things at once
/// shows each, while one that sends a thousand different bad topics keeps only the newest.
pub const MAX_REASONS: usize = 8;
/// Longest reason kept, in characters.
const MAX_REASON: usize = 512;

/// Recent refusals per device (in memory: a diagnostic, not a record), and a signal to
/// open pages that a device's refusals changed.
#[derive(Debug, Clone)]
pub struct Rejections {
    map: Arc<Mutex<HashMap<String, Rejection>>>,
    changed: broadcast::Sender<String>,
}

impl Default for Rejections {
    fn default() -> Self {
        Self { map: Arc::default(), changed: broadcast::channel(64).0 }
    }
}

impl Rejections {
    /// Records and logs a refused message. The payload itself is never logged.
    pub fn record(&self, device: &str, protocol: &'static str, reason: &str, now: i64) {
        // A reason can quote what was sent (a topic of up to 64 KiB): kept short.
        let reason: String = reason.chars().take(MAX_REASON).collect();
        let reason = reason.as_str();
        static REFUSED: crate::repeated::Repeated = crate::repeated::Repeated::new("message refused");
        if REFUSED.log_this(device) {
            tracing::warn!(device.id = %device, protocol, reason, "message refused, not stored");
        }
        if let Ok(mut map) = self.map.lock() {
            let entry = map.entry(device.to_owned()).or_insert(Rejection {
                count: 0,
                last_reason: String::new(),
                last_at: now,
                recent: Vec::new(),
            });
            entry.count += 1;
            entry.last_reason = reason.to_owned();
            entry.last_at = now;
            let mut refused = match entry.recent.iter().position(|r| r.reason == reason) {
                Some(at) => entry.recent.remove(at),
                None => Refused { reason: reason.to_owned(), count: 0, last_at: now },
            };
            refused.count += 1;
            refused.last_at = now;
            entry.recent.insert(0, refused);
            entry.recent.truncate(MAX_REASONS);
        }
        // Nobody listening is fine.
        let _ = self.changed.send(device.to_owned());
    }

    /// Ids of devices as their messages are refused.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    pub fn get(&self, device: &str) -> Option<Rejection> {
        self.map.lock().ok().and_then(|map| map.get(device).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each different reason is kept with its own count, newest first, up to a bound.
    #[test]
    fn a_device_keeps_its_recent_reasons() {
        let rejections = Rejections::default();
        rejections.record("b", "mqtt", "first", 1);
        rejections.record("b", "mqtt", "second", 2);
        rejections.record("b", "mqtt", "first", 3);
        let kept = rejections.get("b").unwrap_or_else(|| panic!("nothing kept"));
        assert_eq!((kept.count, kept.last_reason.as_str()), (3, "first"));
        let recent: Vec<(&str, u64, i64)> =
            kept.recent.iter().map(|r| (r.reason.as_str(), r.count, r.last_at)).collect();
        assert_eq!(recent, [("first", 2, 3), ("second", 1, 2)]);
        for n in 0..100 {
            rejections.record("b", "mqtt", &format!("topic {n}"), 10 + n);
        }
        let kept = rejections.get("b").unwrap_or_else(|| panic!("nothing kept"));
        assert_eq!(kept.recent.len(), MAX_REASONS);
        assert_eq!(kept.recent[0].reason, "topic 99");
    }
}
