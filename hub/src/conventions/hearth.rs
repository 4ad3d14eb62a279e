//! Hearth's own topics, for devices that speak to Hearth directly: a device publishes its
//! readings under its own id (`hearth/<id>/<metric>` one at a time, `hearth/<id>` as a JSON
//! object) and takes commands on `hearth/<id>/set/<metric>`. Its messages are read for the
//! device that sent them, never for a connection's namespace (no namespace may start with
//! `hearth`).

use super::{Ecosystem, Heard, Message};
use crate::ingest::decode::{self, DecodeError};
use crate::reading::{Reading, Value};

/// Hearth's own topics, as a convention.
pub struct Hearth;

impl Ecosystem for Hearth {
    /// A connection's namespace never holds Hearth's topics: they are read by [`readings`].
    fn read(&self, _: &Message<'_>) -> Heard {
        Heard::NotMine
    }
}

/// Why a device's publish is refused (logged and counted; the message is acknowledged so a
/// misconfigured device does not resend it forever, but nothing is stored).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("topic {0:?} is not this device's (use hearth/<device id>/<metric> or hearth/<device id>)")]
    NotOwnTopic(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A device's publish on its own topics, as readings, if it is allowed and well formed.
pub fn readings(device: &str, topic: &str, payload: &[u8], now: i64) -> Result<Vec<Reading>, Refusal> {
    let mut levels = topic.split('/');
    let (Some("hearth"), Some(owner)) = (levels.next(), levels.next()) else {
        return Err(Refusal::NotOwnTopic(topic.to_owned()));
    };
    if owner != device {
        return Err(Refusal::NotOwnTopic(topic.to_owned()));
    }
    match (levels.next(), levels.next()) {
        (None, _) => Ok(decode::decode_object(device, payload, now)?),
        (Some(metric), None) => Ok(vec![decode::decode_metric(device, metric, payload, now)?]),
        _ => Err(Refusal::NotOwnTopic(topic.to_owned())),
    }
}

/// Whether `topic` is under `device`'s own id.
pub fn is_own(device: &str, topic: &str) -> bool {
    topic.strip_prefix("hearth/").and_then(|t| t.split('/').next()) == Some(device)
}

/// A command to a device on its own topics: the topic, and the payload (numbers and text
/// as they are, on/off as `true`/`false`).
pub fn command(device: &str, metric: &str, value: &Value) -> (String, Vec<u8>) {
    (format!("hearth/{device}/set/{metric}"), value.payload_text().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_publishes_only_under_its_own_id() {
        assert_eq!(readings("dev1", "hearth/dev1/t", b"1", 0).map(|r| r.len()).ok(), Some(1));
        assert_eq!(readings("dev1", "hearth/dev1", br#"{"a":1,"b":2}"#, 0).map(|r| r.len()).ok(), Some(2));
        for topic in
            ["hearth/dev2/t", "hearth/dev1x/t", "hearth/dev1/t/extra", "other/dev1/t", "hearth", "hearth/+/t", ""]
        {
            assert!(matches!(readings("dev1", topic, b"1", 0), Err(Refusal::NotOwnTopic(_))), "{topic}");
        }
        assert!(matches!(readings("dev1", "hearth/dev1/t", b"NaN", 0), Err(Refusal::Decode(_))));
        assert!(is_own("dev1", "hearth/dev1/t") && !is_own("dev1", "hearth/dev10/t"));
    }

    #[test]
    fn commands_go_to_the_device_s_own_set_topic() {
        assert_eq!(
            command("dev1", "relay", &Value::Bool(true)),
            ("hearth/dev1/set/relay".to_owned(), b"true".to_vec())
        );
    }
}
