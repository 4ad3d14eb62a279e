//! Runs under the scheduler: run modes and the runs-per-second bound, stepping through a
//! run's actions (delays and virtual values here, the rest handed to the runtime), and how
//! a run ends.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::TimeZone;

use super::{Command, Job, MAX_RUNS_PER_SECOND, Scheduler};
use crate::automation::engine::{Event, Outcome, RuleId};
use crate::automation::model::{Action, Mode};
use crate::automation::run::{Resume, RunStatus, Step, Trace};
use crate::consent::Subject;
use crate::reading::Value;

#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub(super) author: i64,
    pub(super) subject: Subject,
    pub(super) name: String,
    pub(super) mode: Mode,
    pub(super) max_runs: u16,
    pub(super) actions: Arc<Vec<Action>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Between actions.
    Ready,
    /// In a delay until this moment.
    Delay(i64),
    /// An action handed out at this moment.
    Action(i64),
}

pub(super) struct Run {
    pub(super) rule: RuleId,
    pub(super) author: i64,
    pub(super) subject: Subject,
    pub(super) name: String,
    pub(super) actions: Arc<Vec<Action>>,
    pub(super) next: usize,
    pub(super) depth: u8,
    pub(super) trace: Trace,
    pub(super) wait: Wait,
    /// A delay of this run is saved.
    pub(super) saved: bool,
}

#[derive(Default)]
pub(super) struct RuleRuns {
    pub(super) active: Vec<i64>,
    pub(super) queue: VecDeque<Outcome>,
}

/// A virtual value set by a run, to apply once the current input is handled.
pub(super) struct SetValue {
    pub(super) subject: Subject,
    pub(super) name: String,
    pub(super) value: Value,
    pub(super) depth: u8,
}

impl<Tz: TimeZone> Scheduler<Tz> {
    /// Applies the rate bound and the run mode to an outcome.
    pub(super) fn decide(&mut self, outcome: Outcome, now: i64) {
        if !outcome.run {
            let status = if outcome.refused.is_some() { RunStatus::Skipped } else { RunStatus::ConditionsNotMet };
            let note = outcome.refused.clone();
            self.trace_only(&outcome, status, note, now);
            return;
        }
        let second = now.div_euclid(1000);
        let rate = self.rate.entry(outcome.rule).or_insert((second, 0));
        if rate.0 != second {
            *rate = (second, 0);
        }
        rate.1 += 1;
        if rate.1 > MAX_RUNS_PER_SECOND {
            if rate.1 == MAX_RUNS_PER_SECOND + 1 {
                let note = format!("more than {MAX_RUNS_PER_SECOND} runs in a second: refused until the next second");
                self.trace_only(&outcome, RunStatus::Skipped, Some(note), now);
            }
            return;
        }
        let Some(meta) = self.meta.get(&outcome.rule) else { return };
        let (mode, max) = (meta.mode, usize::from(meta.max_runs));
        let runs = self.per_rule.entry(outcome.rule).or_default();
        let busy = !runs.active.is_empty();
        let note = match mode {
            Mode::Single if busy => Some("already running (mode: single)".to_owned()),
            Mode::Queued if busy && runs.queue.len() >= max => {
                Some(format!("{max} runs already waiting (mode: queued)"))
            }
            Mode::Queued if busy => {
                runs.queue.push_back(outcome);
                return;
            }
            Mode::Parallel if runs.active.len() >= max => Some(format!("{max} runs already going (mode: parallel)")),
            Mode::Restart if busy => {
                for run in std::mem::take(&mut runs.active) {
                    self.stop(run, now);
                }
                None
            }
            _ => None,
        };
        match note {
            Some(note) => self.trace_only(&outcome, RunStatus::Skipped, Some(note), now),
            None => self.start_run(outcome, now),
        }
    }

    pub(super) fn new_trace(&mut self, outcome: &Outcome, status: RunStatus, note: Option<String>, now: i64) -> Trace {
        self.next_run += 1;
        Trace {
            run: self.next_run,
            rule: outcome.rule,
            started: now,
            trigger: outcome.cause.clone(),
            checks: outcome.checks.clone(),
            status,
            note,
            steps: Vec::new(),
            finished: None,
        }
    }

    pub(super) fn trace_only(&mut self, outcome: &Outcome, status: RunStatus, note: Option<String>, now: i64) {
        let mut trace = self.new_trace(outcome, status, note, now);
        trace.finished = Some(now);
        self.out.push(Command::Trace(Box::new(trace)));
    }

    pub(super) fn start_run(&mut self, outcome: Outcome, now: i64) {
        let Some(meta) = self.meta.get(&outcome.rule).cloned() else { return };
        let trace = self.new_trace(&outcome, RunStatus::Running, None, now);
        let id = trace.run;
        let run = Run {
            rule: outcome.rule,
            author: meta.author,
            subject: meta.subject,
            name: meta.name,
            actions: meta.actions,
            next: 0,
            depth: outcome.depth,
            trace,
            wait: Wait::Ready,
            saved: false,
        };
        self.per_rule.entry(outcome.rule).or_default().active.push(id);
        self.runs.insert(id, run);
        self.advance(id, now);
    }

    /// Carries a ready run on: actions the scheduler does itself at once, until a delay, an
    /// action for the runtime, or the end.
    pub(super) fn advance(&mut self, id: i64, now: i64) {
        loop {
            let Some(run) = self.runs.get_mut(&id) else { return };
            let Some(action) = run.actions.get(run.next).cloned() else {
                self.finish(id, RunStatus::Done, now);
                return;
            };
            run.next += 1;
            match action {
                Action::Delay { seconds } => {
                    let due = now + i64::from(seconds) * 1000;
                    run.trace.status = RunStatus::Waiting;
                    run.trace.steps.push(Step {
                        action: action.describe(),
                        at: now,
                        ok: true,
                        result: "waiting".into(),
                    });
                    run.wait = Wait::Delay(due);
                    run.saved = true;
                    let resume = Resume {
                        author: run.author,
                        subject: run.subject,
                        name: run.name.clone(),
                        actions: run.actions.to_vec(),
                        next: run.next,
                        depth: run.depth,
                        trace: run.trace.clone(),
                    };
                    let trace = Box::new(run.trace.clone());
                    self.out.push(Command::SaveDelay { run: id, rule: run.rule, due, resume: Box::new(resume) });
                    self.out.push(Command::Trace(trace));
                    return;
                }
                Action::Set { ref name, ref value } => {
                    run.trace.steps.push(Step { action: action.describe(), at: now, ok: true, result: "set".into() });
                    let set =
                        SetValue { subject: run.subject, name: name.clone(), value: value.clone(), depth: run.depth };
                    self.sets.push_back(set);
                }
                action => {
                    run.wait = Wait::Action(now);
                    let job = Job {
                        run: id,
                        rule: run.rule,
                        author: run.author,
                        subject: run.subject,
                        rule_name: run.name.clone(),
                        trigger: run.trace.trigger.clone(),
                        action,
                    };
                    self.out.push(Command::Perform(Box::new(job)));
                    return;
                }
            }
        }
    }

    pub(super) fn done(&mut self, id: i64, result: Result<String, String>, now: i64) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let Wait::Action(at) = run.wait else { return };
        let action = run.actions.get(run.next - 1).map(Action::describe).unwrap_or_default();
        let ok = result.is_ok();
        run.trace.steps.push(Step { action, at, ok, result: result.unwrap_or_else(|e| e) });
        run.wait = Wait::Ready;
        if ok { self.advance(id, now) } else { self.finish(id, RunStatus::Failed, now) }
    }

    pub(super) fn finish(&mut self, id: i64, status: RunStatus, now: i64) {
        let Some(mut run) = self.remove(id) else { return };
        run.trace.status = status;
        run.trace.finished = Some(now);
        self.out.push(Command::Trace(Box::new(run.trace)));
        let next =
            self.per_rule.get_mut(&run.rule).and_then(|r| if r.active.is_empty() { r.queue.pop_front() } else { None });
        if let Some(outcome) = next {
            self.start_run(outcome, now);
        }
    }

    /// Stops a run before its end (a restart-mode trigger, or its rule changed).
    pub(super) fn stop(&mut self, id: i64, now: i64) {
        let Some(mut run) = self.remove(id) else { return };
        if let Wait::Action(_) = run.wait {
            self.out.push(Command::Abort { run: id });
        }
        run.trace.status = RunStatus::Stopped;
        run.trace.note = Some("stopped by a new trigger, or the rule changed".into());
        run.trace.finished = Some(now);
        self.out.push(Command::Trace(Box::new(run.trace)));
    }

    /// Takes a run out of the books, dropping its saved delay.
    pub(super) fn remove(&mut self, id: i64) -> Option<Run> {
        let run = self.runs.remove(&id)?;
        if let Some(r) = self.per_rule.get_mut(&run.rule) {
            r.active.retain(|a| *a != id);
        }
        if run.saved {
            self.out.push(Command::DropDelay { run: id });
        }
        Some(run)
    }

    /// Applies the virtual values runs set, each of which may start further rules.
    pub(super) fn apply_sets(&mut self, now: i64) {
        while let Some(SetValue { subject, name, value, depth }) = self.sets.pop_front() {
            let world = self.worlds.entry(subject).or_default();
            if world.virtuals.get(&name) == Some(&value) {
                continue;
            }
            world.virtuals.insert(name.clone(), value.clone());
            self.out.push(Command::SaveVirtual { subject, name: name.clone(), value: value.clone() });
            self.evaluate(subject, &Event::Virtual { name: &name, value: &value, depth: depth + 1 }, now);
        }
    }
}
