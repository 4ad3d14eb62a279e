//! Consent: what recipients ask for, what subjects grant, the receipts both keep, the
//! access log and the value ledger; and what a recipient reads under a grant.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Bucket, Granularity, Period, Value};

/// What is offered in return for the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// In the recipient's words, e.g. "5 EUR off your bill each month".
    pub text: String,
    /// An amount, if the offer is money or money's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// How often `amount` accrues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

/// The terms of a request, and (possibly narrowed) of a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// Whole categories (`GET /api/consent/categories`).
    #[serde(default)]
    pub categories: BTreeSet<String>,
    /// Single metrics by name.
    #[serde(default)]
    pub metrics: BTreeSet<String>,
    pub granularity: Granularity,
    /// Readings made from this time (ms since the epoch; may be in the past)...
    pub window_from: i64,
    /// ...until this time (exclusive); `None`: as long as the grant lasts.
    #[serde(default)]
    pub window_to: Option<i64>,
    /// How long access lasts once granted, in days.
    pub duration_days: u32,
    pub purpose: String,
    pub offer: Offer,
}

/// How a subject may narrow a request when granting it (`POST
/// /api/consent/requests/{id}/grant`). Anything left out stays as asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Narrowing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<Granularity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_to: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_days: Option<u32>,
}

/// A category of metrics a request may ask for as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub name: String,
    pub label: String,
    /// Metric names in it (a metric `name_suffix` is in it too).
    pub metrics: Vec<String>,
}

/// Where a data request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Granted,
    Denied,
}

names!(RequestStatus, "request status", { Pending => "pending", Granted => "granted", Denied => "denied" });

/// Where a grant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    Active,
    Revoked,
    Expired,
}

names!(GrantStatus, "grant status", { Active => "active", Revoked => "revoked", Expired => "expired" });

/// What a signed receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptEvent {
    Granted,
    Revoked,
    Expired,
}

names!(ReceiptEvent, "receipt event", { Granted => "granted", Revoked => "revoked", Expired => "expired" });

/// What an access log entry records: a read of shared data, or a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Read,
    Granted,
    Denied,
    Revoked,
    Expired,
}

names!(LogKind, "access log entry kind", {
    Read => "read", Granted => "granted", Denied => "denied", Revoked => "revoked", Expired => "expired",
});

impl From<ReceiptEvent> for LogKind {
    fn from(event: ReceiptEvent) -> Self {
        match event {
            ReceiptEvent::Granted => LogKind::Granted,
            ReceiptEvent::Revoked => LogKind::Revoked,
            ReceiptEvent::Expired => LogKind::Expired,
        }
    }
}

/// A data request, as its subject and its recipient see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRequest {
    pub id: i64,
    pub recipient_id: String,
    pub recipient: String,
    pub recipient_kind: String,
    pub subject_id: i64,
    pub terms: Terms,
    pub created: i64,
    pub status: RequestStatus,
    pub decided: Option<i64>,
}

/// A receipt, signed by the hub (a compact JWS anyone can check with the published key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    pub grant_id: String,
    pub event: ReceiptEvent,
    pub created: i64,
    pub jws: String,
}

/// A grant, with its receipts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub request_id: i64,
    pub recipient_id: String,
    pub recipient: String,
    pub terms: Terms,
    pub created: i64,
    pub expires: i64,
    pub revoked: Option<i64>,
    pub status: GrantStatus,
    pub receipts: Vec<Receipt>,
}

/// One entry of the subject's access log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: i64,
    pub ts: i64,
    pub kind: LogKind,
    pub subject_id: i64,
    pub recipient_id: String,
    pub recipient: String,
    pub grant_id: Option<String>,
    /// What was read (metrics, range, rows served) or decided, as hashed...
    pub detail: String,
    /// ...and as JSON.
    pub detail_json: serde_json::Value,
    /// The entry's chain hash, hex.
    pub hash: String,
}

/// The access log's check: whole, or where it breaks; and, given a checkpoint the subject
/// kept, whether the log still holds what it held then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    /// Whether the log matches the checkpoint given (none given: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
    /// Entries checked, when whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// What is wrong, and the first entry that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
}

/// The query of `GET /api/consent/access-log/verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// A checkpoint the subject kept (its `jws`).
    pub checkpoint: Option<String>,
}

/// `GET /api/consent/access-log/checkpoint`: the log's head, signed with the receipt key,
/// for the subject to keep. A later rewrite of the log up to it no longer matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// The head entry's chain hash, hex.
    pub hash: String,
    pub at: i64,
    /// All of the above, signed: what to keep, and to give back to be checked.
    pub jws: String,
}

/// What a grant has earned so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accrual {
    /// Whole periods completed while the grant was active (1 for a one-off offer).
    pub periods: u32,
    /// `periods` x amount, if the offer has an amount.
    pub amount: Option<f64>,
}

/// One line of the value ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub grant_id: String,
    pub recipient_id: String,
    pub recipient: String,
    pub purpose: String,
    pub offer: Offer,
    pub status: GrantStatus,
    pub granted: i64,
    pub ended: Option<i64>,
    pub accrued: Accrual,
}

/// Whom a recipient's request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressee {
    /// The owner of the property.
    Owner,
    /// Whoever is the tenant now.
    Tenant,
}

names!(Addressee, "addressee (owner or tenant)", { Owner => "owner", Tenant => "tenant" });

/// `POST /api/share/requests`: a recipient's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// Whose data. Default: whoever registered this recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Addressee>,
    #[serde(flatten)]
    pub terms: Terms,
}

/// `GET /api/share/me`: the recipient the credentials belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientIdentity {
    pub id: String,
    pub name: String,
    pub kind: String,
}

/// The query of `GET /api/share/grants/{id}/data`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataQuery {
    /// Start (ms since the epoch); default the start of the granted window.
    pub from: Option<i64>,
    /// End (exclusive); default now or the end of the granted window.
    pub to: Option<i64>,
    /// Only this metric.
    pub metric: Option<String>,
}

/// One series of shared data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedSeries {
    pub device: String,
    pub metric: String,
    pub unit: Option<String>,
    /// For a raw grant: `[ts, value]` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings: Option<Vec<(i64, Value)>>,
    /// For an aggregated grant: one per bucket of the granted width, without any single
    /// reading (no `last`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregates: Option<Vec<Bucket>>,
}

/// What a recipient reads under a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedData {
    pub grant: String,
    pub granularity: Granularity,
    pub from: i64,
    pub to: i64,
    pub series: Vec<SharedSeries>,
    pub rows: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_wire_names() -> Result<(), serde_json::Error> {
        for s in RequestStatus::ALL {
            assert_eq!(serde_json::to_string(s)?, format!("\"{s}\""));
        }
        for s in GrantStatus::ALL {
            assert_eq!(serde_json::to_string(s)?, format!("\"{s}\""));
        }
        for e in ReceiptEvent::ALL {
            assert_eq!(serde_json::to_string(e)?, format!("\"{e}\""));
            assert_eq!(LogKind::from(*e).as_str(), e.as_str(), "a receipt's event is logged by its name");
        }
        for k in LogKind::ALL {
            assert_eq!(serde_json::to_string(k)?, format!("\"{k}\""));
        }
        for a in Addressee::ALL {
            assert_eq!(serde_json::to_string(a)?, format!("\"{a}\""));
        }
        Ok(())
    }
}
