//! What a run of a rule leaves behind: its trace.

use serde::{Deserialize, Serialize};

use crate::Value;

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

impl RunStatus {
    /// In words, as the UI shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
            RunStatus::Paused => "paused",
            RunStatus::Skipped => "skipped",
            RunStatus::ConditionsNotMet => "conditions not met",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a run, for its trace and for the cloud message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// In words, e.g. "temperature of dev1 went below 18".
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    pub at: i64,
}

/// One condition as checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub condition: String,
    pub passed: bool,
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
    pub rule: i64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_keep_their_stored_names() -> Result<(), serde_json::Error> {
        use RunStatus::*;
        for s in [Running, Waiting, Done, Failed, Stopped, Paused, Skipped, ConditionsNotMet] {
            assert_eq!(serde_json::to_string(&s)?, format!("\"{s}\""));
        }
        assert_eq!(ConditionsNotMet.as_str(), "conditions not met");
        Ok(())
    }
}
