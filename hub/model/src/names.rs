//! Enums that cross the wire as names: one table per type gives `as_str`, `Display`,
//! `FromStr` and `ALL`, and serde uses the same names.

use std::fmt;

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

pub(crate) fn unknown(what: &'static str, name: &str) -> UnknownName {
    UnknownName::new(what, name)
}

/// Implements `as_str`, `Display` and `FromStr` from one table of names, the names serde
/// uses too (each type's `names_are_the_wire_names` test checks that they agree).
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

        impl ::std::fmt::Display for $type {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $type {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($type::$variant),)+
                    _ => Err($crate::names::unknown($what, s)),
                }
            }
        }
    };
}
