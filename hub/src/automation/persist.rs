//! What the automation runtime keeps in SQLite: run traces (written in batches, the newest
//! state of each run, at most [`TRACES_KEPT`] per rule), and the state that must survive a
//! restart (holds, paused runs, virtual values, the last tick), written in the order the
//! scheduler decided it. Also reads that state back at start.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::engine::RuleId;
use super::run::{HoldBody, Resume, TRACES_KEPT, TimerKind, Trace};
use super::scheduler::{Hold, Input, Paused};
use crate::consent::Subject;
use crate::reading::Value;
use crate::store::{Store, StoreError};

/// How often traces are written.
const TRACE_FLUSH: Duration = Duration::from_millis(500);
const LAST_TICK: &str = "automation.last_tick";

/// A write of state that must survive a restart.
#[derive(Debug)]
pub enum Save {
    ArmHold(Hold),
    CancelHold { rule: RuleId, trigger: usize },
    Delay { run: i64, rule: RuleId, due: i64, resume: Box<Resume> },
    DropDelay { run: i64 },
    Virtual { subject: Subject, name: String, value: Value, at: i64 },
    Tick(i64),
}

/// What was saved before the hub stopped.
#[derive(Default)]
pub struct Saved {
    pub last_tick: Option<i64>,
    pub virtuals: Vec<(Subject, String, Value)>,
    pub holds: Vec<Hold>,
    pub paused: Vec<Paused>,
    /// The stored timer of each (rule, trigger) hold and of each paused run.
    timers: Timers,
}

#[derive(Default)]
struct Timers {
    holds: HashMap<(RuleId, usize), i64>,
    delays: HashMap<i64, i64>,
}

/// Reads the saved state. Rows that no longer read are dropped with a warning.
pub async fn load(store: &Store) -> Result<Saved, StoreError> {
    let mut virtuals = Vec::new();
    for (subject, name, body, _) in store.virtual_values().await? {
        match (subject.parse::<Subject>(), serde_json::from_slice::<Value>(&body)) {
            (Ok(subject), Ok(value)) => virtuals.push((subject, name, value)),
            _ => tracing::warn!(%subject, %name, "unreadable virtual value skipped"),
        }
    }
    let (mut holds, mut paused, mut timers) = (Vec::new(), Vec::new(), Timers::default());
    for timer in store.timers().await? {
        match TimerKind::parse(&timer.kind) {
            Some(TimerKind::Hold) => match serde_json::from_slice::<HoldBody>(&timer.body) {
                Ok(HoldBody { trigger }) => {
                    holds.push(Hold { rule: timer.rule_id, trigger, due: timer.due });
                    timers.holds.insert((timer.rule_id, trigger), timer.id);
                }
                Err(error) => tracing::warn!(%error, timer = timer.id, "unreadable hold dropped"),
            },
            Some(TimerKind::Resume) => match serde_json::from_slice::<Resume>(&timer.body) {
                Ok(resume) => {
                    timers.delays.insert(resume.trace.run, timer.id);
                    paused.push(Paused { due: timer.due, resume });
                }
                Err(error) => tracing::warn!(%error, timer = timer.id, "unreadable paused run dropped"),
            },
            None => tracing::warn!(kind = %timer.kind, timer = timer.id, "timer of unknown kind ignored"),
        }
    }
    Ok(Saved { last_tick: store.hub_state(LAST_TICK).await?, virtuals, holds, paused, timers })
}

impl Saved {
    /// What the scheduler is told at start (the stored timers stay with the writer).
    pub fn input(&mut self) -> Input<'static> {
        Input::Start {
            last_tick: self.last_tick,
            virtuals: std::mem::take(&mut self.virtuals),
            holds: std::mem::take(&mut self.holds),
            paused: std::mem::take(&mut self.paused),
        }
    }

    /// Writes each [`Save`] in order until the channel closes.
    pub async fn write(self, store: Store, mut rx: mpsc::Receiver<Save>) {
        let mut timers = self.timers;
        while let Some(save) = rx.recv().await {
            if let Err(error) = timers.write(&store, save).await {
                tracing::warn!(error = %crate::error::chain(&error), "could not save automation state");
            }
        }
    }
}

impl Timers {
    async fn write(&mut self, store: &Store, save: Save) -> Result<(), StoreError> {
        match save {
            Save::ArmHold(Hold { rule, trigger, due }) => {
                let body = serde_json::to_vec(&HoldBody { trigger })?;
                let id = store.add_timer(rule, TimerKind::Hold.as_str(), due, &body).await?;
                if let Some(old) = self.holds.insert((rule, trigger), id) {
                    store.delete_timer(old).await?;
                }
            }
            Save::CancelHold { rule, trigger } => {
                if let Some(id) = self.holds.remove(&(rule, trigger)) {
                    store.delete_timer(id).await?;
                }
            }
            Save::Delay { run, rule, due, resume } => {
                let body = serde_json::to_vec(&resume)?;
                let id = store.add_timer(rule, TimerKind::Resume.as_str(), due, &body).await?;
                if let Some(old) = self.delays.insert(run, id) {
                    store.delete_timer(old).await?;
                }
            }
            Save::DropDelay { run } => {
                if let Some(id) = self.delays.remove(&run) {
                    store.delete_timer(id).await?;
                }
            }
            Save::Virtual { subject, name, value, at } => {
                let body = serde_json::to_vec(&value)?;
                store.set_virtual(&subject.to_string(), &name, &body, at).await?;
            }
            Save::Tick(at) => store.set_hub_state(LAST_TICK, at).await?,
        }
        Ok(())
    }
}

/// Writes traces in batches until the channel closes, then writes what is left.
pub async fn write_traces(store: Store, mut rx: mpsc::Receiver<Trace>) {
    let mut pending: Vec<Trace> = Vec::new();
    while let Some(first) = rx.recv().await {
        pending.push(first);
        let deadline = tokio::time::Instant::now() + TRACE_FLUSH;
        while let Ok(Some(t)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            pending.push(t);
        }
        flush_traces(&store, &mut pending).await;
    }
    flush_traces(&store, &mut pending).await;
}

async fn flush_traces(store: &Store, pending: &mut Vec<Trace>) {
    if pending.is_empty() {
        return;
    }
    // The newest state of each run; per rule only the newest runs.
    let mut latest: HashMap<i64, Trace> = HashMap::new();
    for t in pending.drain(..) {
        latest.insert(t.run, t);
    }
    let mut per_rule: HashMap<RuleId, Vec<Trace>> = HashMap::new();
    for t in latest.into_values() {
        per_rule.entry(t.rule).or_default().push(t);
    }
    let mut rows = Vec::new();
    for (_, mut traces) in per_rule {
        traces.sort_by_key(|t| std::cmp::Reverse(t.run));
        traces.truncate(TRACES_KEPT as usize);
        for t in traces {
            match serde_json::to_vec(&t) {
                Ok(body) => rows.push((t.run, t.rule, t.started, body)),
                Err(error) => tracing::warn!(%error, run = t.run, "a trace could not be encoded"),
            }
        }
    }
    if let Err(error) = store.save_runs(&rows, TRACES_KEPT).await {
        tracing::warn!(error = %crate::error::chain(&error), "could not save rule traces");
    }
}
