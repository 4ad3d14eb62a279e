//! Around the rules: importing and exporting them, the notifications they leave, and the
//! cloud outbox they send through.

use serde::{Deserialize, Serialize};

use crate::Rule;

/// A file of rules, as exported and imported (`{"rules": [...]}`, in JSON or YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// The query of `GET /api/rules/export`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `json` (default) or `yaml`.
    pub format: Option<String>,
}

/// What an import added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    pub imported: usize,
    pub ids: Vec<i64>,
}

/// Who left a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationSource {
    /// A rule's `notify` action.
    Rule,
    /// The hub itself (e.g. an outbox that is full).
    Hub,
}

names!(NotificationSource, "notification source", { Rule => "rule", Hub => "hub" });

/// A notification as it is stored (sealed) and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub source: NotificationSource,
    pub message: String,
    /// The rule that left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What set that rule off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

/// `GET /api/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub created: i64,
    #[serde(flatten)]
    pub note: Note,
}

/// How one cloud destination is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub destination: String,
    pub queued: i64,
    pub oldest: Option<i64>,
    pub delivered: i64,
    pub dropped: i64,
    pub last_error: Option<String>,
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    /// Whether it holds as many messages as it may (new ones push out the oldest).
    pub full: bool,
}

/// `GET /api/outbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    pub max_queued: u32,
    pub destinations: Vec<DestinationStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_stored_before_this_type_still_read() -> Result<(), serde_json::Error> {
        let rule: Note = serde_json::from_str(r#"{"source":"rule","rule":"Porch","message":"hi","trigger":"dusk"}"#)?;
        assert_eq!(rule.source, NotificationSource::Rule);
        assert_eq!(rule.trigger.as_deref(), Some("dusk"));
        let hub: Note = serde_json::from_str(r#"{"source":"hub","message":"the outbox is full"}"#)?;
        assert_eq!((hub.source, hub.rule), (NotificationSource::Hub, None));
        for s in NotificationSource::ALL {
            assert_eq!(serde_json::to_string(s)?, format!("\"{s}\""));
        }
        Ok(())
    }
}
