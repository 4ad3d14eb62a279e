//! The body of every error answer of the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `{"error": "...", "fields": {"name": "problem", ...}}`: what went wrong in words, and for
/// a refused form, the problem with each field by the field's name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}
