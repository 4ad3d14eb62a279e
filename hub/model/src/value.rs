//! A reading's value.

use serde::{Deserialize, Serialize};

/// A reading's value. Numbers are finite; text is short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl Value {
    /// As a command's payload carries it: numbers and text as they are, on/off as
    /// `true`/`false`.
    pub fn payload_text(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Text(t) => t.clone(),
        }
    }

    /// For people: numbers without needless decimals, on/off as words.
    pub fn show(&self) -> String {
        match self {
            Value::Bool(true) => "on".into(),
            Value::Bool(false) => "off".into(),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{n:.0}"),
            Value::Number(n) => format!("{}", (n * 1000.0).round() / 1000.0),
            Value::Text(t) => t.clone(),
        }
    }
}
