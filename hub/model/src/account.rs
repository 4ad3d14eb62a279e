//! Setting the hub up, logging in and out, who is logged in, and API tokens.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Role;

/// `GET /api/setup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupStatus {
    pub setup_required: bool,
}

/// `POST /api/setup`: the one-time setup code (printed on the hub's console) and the
/// owner's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    pub code: String,
    pub username: String,
    pub password: Zeroizing<String>,
}

/// `POST /api/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: Zeroizing<String>,
}

/// Who is logged in: the answer to setup, login, accepting an invite and `GET /api/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub username: String,
    pub role: Role,
    /// A tenant's tenancy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<i64>,
}

impl Me {
    /// Owners and tenants have data of their own to share.
    pub fn is_subject(&self) -> bool {
        matches!(self.role, Role::Owner | Role::Tenant)
    }
}

/// `POST /api/tokens`: a bearer token for scripts, named so it can be told apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    /// Days until it expires, 1 to 365; default 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u16>,
}

/// A new API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: i64,
    pub name: String,
    /// Shown once; only its digest is stored.
    pub token: String,
    /// When it stops working (ms since the epoch).
    pub expires: i64,
}

/// One of the caller's API tokens, as `GET /api/tokens` lists them (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub created: i64,
    pub expires: i64,
}

/// One entry of the security log the owner reads (`GET /api/security-log`): what happened,
/// who did it (a user name or a device id) and from where. Never a reading value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The source address, where there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub detail: String,
    /// How many times it happened, for repeated failures counted over a minute.
    pub count: u64,
}

/// `GET /api/storage`: whether the hub takes readings, and the room it has for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Free bytes on the data directory's file system (for the hub's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Below this many free bytes, readings are refused.
    pub reserve_bytes: u64,
    /// While readings are refused (a full card): since when, why, how many so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusing: Option<Refusing>,
    /// The database's size, its write-ahead log included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_bytes: Option<u64>,
    /// What the hub writes to its storage, per day (the kernel's count of its writes, over
    /// the last hour or since it started: `written_over_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_over_ms: Option<u64>,
}

/// Readings are being refused, not acknowledged: their senders keep them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusing {
    /// Since when (ms since the epoch).
    pub since: i64,
    pub reason: String,
    pub refused: u64,
}
