//! Summaries of a series over time.

use serde::{Deserialize, Serialize};

use crate::Value;

/// One bucket `[start, start + width)` of a series, aligned to the Unix epoch (so hourly
/// and daily buckets are UTC hours and days). Numbers give min, mean and max; on/off values
/// the share of samples that were on and the last one; text the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket (ms), a multiple of its width.
    pub start: i64,
    /// Readings in the bucket, of any kind.
    pub count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Of the on/off readings, the share that were on (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<f64>,
    /// The last on/off or text reading (not in shared aggregates: no single reading is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Value>,
}
