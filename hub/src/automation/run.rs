//! What a run of a rule leaves behind: its trace (what started it, the conditions checked,
//! each action's result) and, while it waits in a delay, the paused run kept in a timer so
//! that it survives a restart. Types only; the scheduler fills them in.

use serde::{Deserialize, Serialize};

use super::engine::{Cause, Check, RuleId};
use super::model::Action;
use crate::consent::Subject;

/// Traces kept per rule.
pub const TRACES_KEPT: i64 = 50;

/// Where a run is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Carrying out an action.
    Running,
    /// In a delay.
    Waiting,
    /// Every action done.
    Done,
    /// An action failed; the run stopped there.
    Failed,
    /// Stopped by a new trigger (mode: restart), a changed rule, or the hub stopping.
    Stopped,
    /// The hub stopped during a delay; the run resumes when it starts again.
    Paused,
    /// Not started: the run mode or the runs-per-second bound refused it.
    Skipped,
    /// Not started: a condition did not hold.
    #[serde(rename = "conditions not met")]
    ConditionsNotMet,
}

/// One step of a run, as traced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub action: String,
    pub at: i64,
    pub ok: bool,
    pub result: String,
}

/// A run's trace: what started it, which conditions passed or failed, what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub run: i64,
    pub rule: RuleId,
    pub started: i64,
    pub trigger: Cause,
    pub checks: Vec<Check>,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<i64>,
}

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
    fn statuses_keep_their_stored_names() {
        let names: Vec<String> = [
            RunStatus::Running,
            RunStatus::Waiting,
            RunStatus::Done,
            RunStatus::Failed,
            RunStatus::Stopped,
            RunStatus::Paused,
            RunStatus::Skipped,
            RunStatus::ConditionsNotMet,
        ]
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
        assert_eq!(
            names,
            [
                "\"running\"",
                "\"waiting\"",
                "\"done\"",
                "\"failed\"",
                "\"stopped\"",
                "\"paused\"",
                "\"skipped\"",
                "\"conditions not met\""
            ]
        );
    }

    #[test]
    fn a_paused_run_stored_before_keeps_reading() {
        let stored = r#"{"author":1,"subject":"tenancy:4","name":"r","actions":[{"type":"notify","message":"x"}],
            "next":1,"depth":0,"trace":{"run":7,"rule":3,"started":10,"trigger":{"text":"t","at":10},
            "checks":[],"status":"waiting","steps":[]}}"#;
        let resume: Resume = serde_json::from_str(stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((resume.subject, resume.trace.status), (Subject::Tenancy(4), RunStatus::Waiting));
    }
}
