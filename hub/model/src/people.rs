//! Who is who in a home, whose data is whose, and the terms data is shared on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::unknown;

/// What a person is to this home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Owns the property and administers the hub.
    Owner,
    /// Lives here during a tenancy.
    Tenant,
    /// Sees the devices an owner or tenant chose, read-only.
    Guest,
}

names!(Role, "role", { Owner => "owner", Tenant => "tenant", Guest => "guest" });

/// Whose data a reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// The owner of the property (outside tenancies, and building devices always).
    Owner,
    /// The tenant of this tenancy.
    Tenancy(i64),
}

/// The subject's name where one is stored or sent as text: `owner` or `tenancy:<id>`.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Owner => f.write_str("owner"),
            Subject::Tenancy(t) => write!(f, "tenancy:{t}"),
        }
    }
}

impl FromStr for Subject {
    type Err = crate::names::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Subject::Owner),
            _ => s
                .strip_prefix("tenancy:")
                .filter(|t| !t.starts_with('+'))
                .and_then(|t| t.parse().ok())
                .map(Subject::Tenancy)
                .ok_or_else(|| unknown("data subject (owner or tenancy:<id>)", s)),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a device measures, as the owner classed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// About the people living here (energy use, temperature, presence): the tenant's
    /// during a tenancy, the owner's otherwise.
    Household,
    /// About the building (boiler pressure, a leak sensor): always the owner's.
    Building,
}

names!(DeviceClass, "device class", { Household => "household", Building => "building" });

/// How finely shared data is given out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Granularity {
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "15min")]
    Min15,
    #[serde(rename = "hour")]
    Hour,
    #[serde(rename = "day")]
    Day,
}

names!(Granularity, "granularity", { Raw => "raw", Min15 => "15min", Hour => "hour", Day => "day" });

impl Granularity {
    /// Bucket width, `None` for raw readings.
    pub fn width_ms(self) -> Option<i64> {
        match self {
            Self::Raw => None,
            Self::Min15 => Some(15 * 60 * 1000),
            Self::Hour => Some(3600 * 1000),
            Self::Day => Some(24 * 3600 * 1000),
        }
    }
}

/// How often an offer's amount accrues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Once,
    Month,
    Year,
}

names!(Period, "period", { Once => "once", Month => "month", Year => "year" });

/// A tenancy, with its tenant once the invite was accepted: `GET /api/tenancies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    pub id: i64,
    pub start: i64,
    /// Exclusive; `None`: open-ended.
    pub end: Option<i64>,
    /// Days its data is kept after the end.
    pub retention_days: i64,
    pub created: i64,
    pub shredded: Option<i64>,
    pub tenant_id: Option<i64>,
    pub tenant: Option<String>,
    /// When its data will be destroyed unless the tenant asks sooner.
    pub shred_due: Option<i64>,
}

/// `POST /api/tenancies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenancy {
    /// Start, ms since the epoch; default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    /// End (exclusive); default open-ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    /// Days the data is kept after the end; default from the hub's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// `POST /api/tenancies/{id}/end`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndTenancy {
    /// When it ends; default now. Never in the past: past readings stay whose they were.
    pub at: Option<i64>,
}

/// An invite code, shown once: for a tenancy's tenant or for a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The tenancy, for a tenant's invite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<i64>,
    pub code: String,
    pub expires: i64,
}

/// `POST /api/invites/accept`: becomes a tenant or guest, logged in (the answer is [`Me`](crate::Me)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvite {
    pub code: String,
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
}

/// A guest, as their inviter sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    pub id: i64,
    pub username: String,
    /// The devices they may see.
    pub devices: Vec<String>,
}

/// `POST /api/guests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGuest {
    /// The devices the guest may see (the inviter must see them).
    pub devices: Vec<String>,
}

/// A third party registered to ask for data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub id: String,
    pub name: String,
    /// In the registering person's words ("power company", "insurer"): a label shown on
    /// requests and receipts, not a state the hub acts on.
    pub kind: String,
    pub registered_by: i64,
    pub created: i64,
}

/// `POST /api/recipients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecipient {
    /// e.g. "Northwind Energy".
    pub name: String,
    /// e.g. "power company", "insurer", "landlord".
    pub kind: String,
}

/// A recipient's client credentials, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientCredentials {
    pub id: String,
    pub name: String,
    pub client_id: String,
    /// Only its digest is stored.
    pub client_secret: String,
    /// How the recipient authenticates.
    pub usage: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_reads_back_from_its_name() {
        for s in [Subject::Owner, Subject::Tenancy(42)] {
            assert_eq!(s.to_string().parse::<Subject>().ok(), Some(s));
        }
        assert_eq!(Subject::Tenancy(7).to_string(), "tenancy:7");
        for bad in ["", "Owner", "tenancy:", "tenancy:x", "tenancy:+1", "tenant:1"] {
            assert!(bad.parse::<Subject>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_the_wire_names() -> Result<(), serde_json::Error> {
        for role in Role::ALL {
            assert_eq!(serde_json::to_string(role)?, format!("\"{role}\""));
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(*role));
        }
        for g in Granularity::ALL {
            assert_eq!(serde_json::to_string(g)?, format!("\"{g}\""));
        }
        for c in DeviceClass::ALL {
            assert_eq!(serde_json::to_string(c)?, format!("\"{c}\""));
        }
        for p in Period::ALL {
            assert_eq!(serde_json::to_string(p)?, format!("\"{p}\""));
        }
        assert!("landlord".parse::<Role>().is_err());
        Ok(())
    }
}
