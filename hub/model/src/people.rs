//! Who is who in a home, whose data is whose, and the terms data is shared on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name that is not one of the names a type knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    name: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a {}", self.name, self.what)
    }
}

impl std::error::Error for UnknownName {}

impl UnknownName {
    pub(crate) fn new(what: &'static str, name: &str) -> Self {
        Self { what, name: name.to_owned() }
    }
}

fn unknown(what: &'static str, name: &str) -> UnknownName {
    UnknownName::new(what, name)
}

/// Implements `as_str`, `Display` and `FromStr` from one table of names, the names serde
/// uses too.
macro_rules! names {
    ($type:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            pub const ALL: &'static [$type] = &[$($type::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($type::$variant),)+
                    _ => Err(unknown($what, s)),
                }
            }
        }
    };
}

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
    type Err = UnknownName;

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
