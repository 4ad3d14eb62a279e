//! What a run of a rule leaves behind: its trace (what started it, the conditions checked,
//! each action's result) and, while it waits in a delay, the paused run kept in a timer so
//! that it survives a restart. Types only; the scheduler fills them in.

use serde::{Deserialize, Serialize};

use super::model::Action;
use crate::consent::Subject;

/// Traces kept per rule.
pub const TRACES_KEPT: i64 = 50;

pub use hearth_model::{RunStatus, Step, Trace};

/// A run paused in a delay, as kept in a `resume` timer: enough to go on after a restart
/// even if the rule was edited meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub author: i64,
    pub subject: Subject,
    pub name: String,
    pub actions: Vec<Action>,
    /// The action to go on with when the delay ends.
    pub next: usize,
    pub depth: u8,
    pub trace: Trace,
}

/// What a stored timer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// A "for N seconds" hold of a trigger; the body names the trigger.
    Hold,
    /// A run paused in a delay; the body is a [`Resume`].
    Resume,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Hold => "hold",
            TimerKind::Resume => "resume",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hold" => Some(TimerKind::Hold),
            "resume" => Some(TimerKind::Resume),
            _ => None,
        }
    }
}

/// The body of a hold timer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct HoldBody {
    pub trigger: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_run_stored_before_keeps_reading() {
        let stored = r#"{"author":1,"subject":"tenancy:4","name":"r","actions":[{"type":"notify","message":"x"}],
            "next":1,"depth":0,"trace":{"run":7,"rule":3,"started":10,"trigger":{"text":"t","at":10},
            "checks":[],"status":"waiting","steps":[]}}"#;
        let resume: Resume = serde_json::from_str(stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((resume.subject, resume.trace.status), (Subject::Tenancy(4), RunStatus::Waiting));
    }
}
