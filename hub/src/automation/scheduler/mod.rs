//! The automation scheduler: a synchronous state machine fed the time and what happened,
//! returning what to do. It owns the loaded rules, what each data subject's rules know,
//! the runs and their run modes, the runs-per-second bound, delays, holds and catch-up.
//! It does no I/O, reads no clock and starts no task: every wait is a deadline it reports
//! through [`Scheduler::next_deadline`], and every effect is a [`Command`] for the runtime.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::TimeZone;

mod runs;

use self::runs::{Meta, RuleRuns, Run, SetValue, Wait};
use super::engine::{self, Cause, Compiled, Event, HoldOp, RuleId, World};
use super::model::{Action, Rule};
use super::run::{Resume, RunStatus, Trace};
use crate::consent::Subject;
use crate::reading::{Reading, Value};

/// Runs one rule may start per second; past that, triggers are refused (and traced once a
/// second), which bounds loops through devices that echo a command as a reading.
pub const MAX_RUNS_PER_SECOND: u32 = 100;
/// How often time triggers are evaluated.
pub const TICK_MS: i64 = 1000;
/// How often the time of the last tick is saved (it is also saved whenever a time
/// trigger fires), for catching up after a restart.
const SAVE_TICK_EVERY_MS: i64 = 60_000;

/// A rule as stored, with the subject its author acts for.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    pub id: RuleId,
    pub author: i64,
    pub subject: Subject,
    pub rule: Rule,
}

/// What happened.
#[derive(Debug)]
pub enum Input<'a> {
    /// The enabled rules (at start, and after any change), with the latest values of each
    /// subject named by [`Scheduler::unknown_subjects`].
    Rules { rules: Vec<LoadedRule>, known: Vec<(Subject, Vec<Reading>)> },
    /// The hub started: what was saved before it stopped.
    Start { last_tick: Option<i64>, virtuals: Vec<(Subject, String, Value)>, holds: Vec<Hold>, paused: Vec<Paused> },
    /// A reading was accepted; it belongs to `subject`.
    Reading { subject: Subject, reading: &'a Reading },
    /// An action handed out with [`Command::Perform`] finished.
    Done { run: i64, result: Result<String, String> },
    /// Time moved on (to `now`).
    Time,
    /// `subject`'s data was destroyed (a tenancy shredded): forget everything of it.
    Forget(Subject),
    /// The hub is stopping.
    Shutdown,
}

/// A saved hold: `trigger` of `rule` is due at `due`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub rule: RuleId,
    pub trigger: usize,
    pub due: i64,
}

/// A saved run paused in a delay that ends at `due`.
#[derive(Debug, Clone)]
pub struct Paused {
    pub due: i64,
    pub resume: Resume,
}

/// What the runtime should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Carry out an action with effects outside the scheduler, then report
    /// [`Input::Done`].
    Perform(Box<Job>),
    /// Drop the action of a run that was stopped.
    Abort {
        run: i64,
    },
    /// Save the latest state of a run's trace.
    Trace(Box<Trace>),
    ArmHold(Hold),
    CancelHold {
        rule: RuleId,
        trigger: usize,
    },
    /// Save a run paused in a delay (replacing the run's earlier delay).
    SaveDelay {
        run: i64,
        rule: RuleId,
        due: i64,
        resume: Box<Resume>,
    },
    /// The run's saved delay is finished with.
    DropDelay {
        run: i64,
    },
    SaveVirtual {
        subject: Subject,
        name: String,
        value: Value,
    },
    /// Time triggers up to this moment have been handled.
    SaveTick(i64),
}

/// An action for the runtime, with what it needs to know of its run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub run: i64,
    pub rule: RuleId,
    pub author: i64,
    pub subject: Subject,
    pub rule_name: String,
    pub trigger: Cause,
    pub action: Action,
}

pub struct Scheduler<Tz: TimeZone> {
    tz: Tz,
    rules: HashMap<Subject, Vec<Compiled>>,
    meta: HashMap<RuleId, Meta>,
    worlds: HashMap<Subject, World>,
    /// Subjects whose latest values were loaded from the store.
    loaded: HashSet<Subject>,
    runs: BTreeMap<i64, Run>,
    per_rule: HashMap<RuleId, RuleRuns>,
    rate: HashMap<RuleId, (i64, u32)>,
    next_run: i64,
    /// `None` until the hub has started.
    last_tick: Option<i64>,
    tick_saved: i64,
    sets: VecDeque<SetValue>,
    out: Vec<Command>,
}

impl<Tz: TimeZone> Scheduler<Tz> {
    /// A scheduler in time zone `tz` whose run ids continue after `last_run`.
    pub fn new(tz: Tz, last_run: i64) -> Self {
        Self {
            tz,
            rules: HashMap::new(),
            meta: HashMap::new(),
            worlds: HashMap::new(),
            loaded: HashSet::new(),
            runs: BTreeMap::new(),
            per_rule: HashMap::new(),
            rate: HashMap::new(),
            next_run: last_run,
            last_tick: None,
            tick_saved: 0,
            sets: VecDeque::new(),
            out: Vec::new(),
        }
    }

    /// Subjects of `rules` whose latest values the scheduler has not been given yet.
    pub fn unknown_subjects(&self, rules: &[LoadedRule]) -> Vec<Subject> {
        let subjects: HashSet<Subject> = rules.iter().map(|r| r.subject).collect();
        subjects.into_iter().filter(|s| !self.loaded.contains(s)).collect()
    }

    /// The next moment at which [`Input::Time`] has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        let holds = self.worlds.values().flat_map(|w| w.holds.values().copied());
        let delays = self.runs.values().filter_map(|r| match r.wait {
            Wait::Delay(due) => Some(due),
            _ => None,
        });
        let tick = self.last_tick.map(|t| t + TICK_MS);
        holds.chain(delays).chain(tick).min()
    }

    /// Handles `input` at time `now` (ms) and returns what to do, in order.
    pub fn step(&mut self, now: i64, input: Input<'_>) -> Vec<Command> {
        match input {
            Input::Rules { rules, known } => self.load(rules, known, now),
            Input::Start { last_tick, virtuals, holds, paused } => self.start(now, last_tick, virtuals, holds, paused),
            Input::Reading { subject, reading } => {
                if self.rules.contains_key(&subject) {
                    self.evaluate(subject, &Event::Reading(reading), now);
                }
                self.worlds.entry(subject).or_default().apply(reading);
            }
            Input::Done { run, result } => self.done(run, result, now),
            Input::Time => self.time(now),
            Input::Forget(subject) => self.forget(subject, now),
            Input::Shutdown => self.shutdown(),
        }
        self.apply_sets(now);
        std::mem::take(&mut self.out)
    }

    /// Drops `subject`'s rules, runs, latest values, virtual values and holds: derived
    /// from readings that no longer exist, none may outlive them.
    fn forget(&mut self, subject: Subject, now: i64) {
        let theirs: Vec<RuleId> = self.meta.iter().filter(|(_, m)| m.subject == subject).map(|(id, _)| *id).collect();
        let runs: Vec<i64> = self.runs.iter().filter(|(_, r)| theirs.contains(&r.rule)).map(|(id, _)| *id).collect();
        for run in runs {
            self.stop(run, now);
        }
        for rule in &theirs {
            self.meta.remove(rule);
            self.per_rule.remove(rule);
        }
        self.rules.remove(&subject);
        self.worlds.remove(&subject);
        self.loaded.remove(&subject);
    }

    fn load(&mut self, loaded: Vec<LoadedRule>, known: Vec<(Subject, Vec<Reading>)>, now: i64) {
        let mut rules: HashMap<Subject, Vec<Compiled>> = HashMap::new();
        let mut meta = HashMap::new();
        for LoadedRule { id, author, subject, rule } in loaded {
            meta.insert(
                id,
                Meta {
                    author,
                    subject,
                    name: rule.name.clone(),
                    mode: rule.mode,
                    max_runs: rule.max_runs,
                    actions: Arc::new(rule.actions.clone()),
                },
            );
            rules.entry(subject).or_default().push(Compiled::new(id, rule));
        }
        // Runs and holds of rules that are gone or disabled stop.
        let gone: Vec<i64> = self.runs.iter().filter(|(_, r)| !meta.contains_key(&r.rule)).map(|(id, _)| *id).collect();
        for run in gone {
            self.stop(run, now);
        }
        self.per_rule.retain(|rule, _| meta.contains_key(rule));
        for world in self.worlds.values_mut() {
            for (rule, trigger) in world.holds.keys().copied().collect::<Vec<_>>() {
                if !meta.contains_key(&rule) {
                    world.holds.remove(&(rule, trigger));
                    self.out.push(Command::CancelHold { rule, trigger });
                }
            }
        }
        // What the store knew of a subject, once; readings heard since are newer and stay
        // (`World::apply` keeps the newest).
        for (subject, readings) in known {
            if self.loaded.insert(subject) {
                let world = self.worlds.entry(subject).or_default();
                readings.iter().for_each(|r| world.apply(r));
            }
        }
        self.rules = rules;
        self.meta = meta;
    }

    fn start(
        &mut self,
        now: i64,
        last_tick: Option<i64>,
        virtuals: Vec<(Subject, String, Value)>,
        holds: Vec<Hold>,
        paused: Vec<Paused>,
    ) {
        for (subject, name, value) in virtuals {
            self.worlds.entry(subject).or_default().virtuals.insert(name, value);
        }
        for Hold { rule, trigger, due } in holds {
            if let Some(meta) = self.meta.get(&rule) {
                self.worlds.entry(meta.subject).or_default().holds.insert((rule, trigger), due);
            }
        }
        if let Some(last) = last_tick
            && last < now
        {
            self.tick(last, now, true);
        }
        self.last_tick = Some(now);
        self.tick_saved = now;
        for subject in self.rules.keys().copied().collect::<Vec<_>>() {
            self.evaluate(subject, &Event::Start, now);
        }
        for Paused { due, resume } in paused {
            let id = resume.trace.run;
            if !self.meta.contains_key(&resume.trace.rule) {
                self.out.push(Command::DropDelay { run: id });
                continue;
            }
            self.next_run = self.next_run.max(id);
            let mut trace = resume.trace;
            trace.status = RunStatus::Waiting;
            let run = Run {
                rule: trace.rule,
                author: resume.author,
                subject: resume.subject,
                name: resume.name,
                actions: Arc::new(resume.actions),
                next: resume.next,
                depth: resume.depth,
                trace,
                wait: Wait::Delay(due),
                saved: true,
            };
            self.per_rule.entry(run.rule).or_default().active.push(id);
            self.runs.insert(id, run);
        }
    }

    fn time(&mut self, now: i64) {
        let due: Vec<(Subject, RuleId, usize)> = self
            .worlds
            .iter()
            .flat_map(|(s, w)| w.holds.iter().filter(|(_, d)| **d <= now).map(|((r, t), _)| (*s, *r, *t)))
            .collect();
        for (subject, rule, trigger) in due {
            self.evaluate(subject, &Event::HoldDue { rule, trigger }, now);
            // Whatever the engine said, this hold is finished.
            if let Some(w) = self.worlds.get_mut(&subject)
                && w.holds.remove(&(rule, trigger)).is_some()
            {
                self.out.push(Command::CancelHold { rule, trigger });
            }
        }
        let woken: Vec<i64> =
            self.runs.iter().filter(|(_, r)| matches!(r.wait, Wait::Delay(d) if d <= now)).map(|(id, _)| *id).collect();
        for id in woken {
            if let Some(run) = self.runs.get_mut(&id) {
                run.wait = Wait::Ready;
                run.trace.status = RunStatus::Running;
                if let Some(step) = run.trace.steps.last_mut() {
                    step.result = "waited".into();
                }
            }
            self.advance(id, now);
        }
        if let Some(from) = self.last_tick
            && now >= from + TICK_MS
        {
            self.tick(from, now, false);
            self.last_tick = Some(now);
            if now - self.tick_saved >= SAVE_TICK_EVERY_MS {
                self.tick_saved = now;
                self.out.push(Command::SaveTick(now));
            }
        }
    }

    fn tick(&mut self, from: i64, to: i64, catch_up: bool) {
        let mut fired = false;
        for subject in self.rules.keys().copied().collect::<Vec<_>>() {
            fired |= self.evaluate(subject, &Event::Tick { from, to, catch_up }, to) > 0;
        }
        if fired {
            // A time trigger that fired must not fire again after a crash.
            self.tick_saved = to;
            self.out.push(Command::SaveTick(to));
        }
    }

    fn shutdown(&mut self) {
        // Runs stop where they are; a run in a delay keeps its saved delay and resumes at
        // start.
        for (id, mut run) in std::mem::take(&mut self.runs) {
            if let Wait::Action(_) = run.wait {
                self.out.push(Command::Abort { run: id });
            }
            run.trace.status = if run.saved { RunStatus::Paused } else { RunStatus::Stopped };
            self.out.push(Command::Trace(Box::new(run.trace)));
        }
        self.per_rule.clear();
        if let Some(last) = self.last_tick {
            self.out.push(Command::SaveTick(last));
        }
    }

    /// Runs the engine for one subject's rules and acts on its decisions. Returns how many
    /// outcomes there were.
    fn evaluate(&mut self, subject: Subject, event: &Event<'_>, now: i64) -> usize {
        let Some(rules) = self.rules.get(&subject) else { return 0 };
        let world = self.worlds.entry(subject).or_default();
        let evaluation = engine::evaluate(rules, world, event, now, &self.tz);
        for op in &evaluation.holds {
            world.apply_hold(op);
            self.out.push(match *op {
                HoldOp::Arm { rule, trigger, due } => Command::ArmHold(Hold { rule, trigger, due }),
                HoldOp::Cancel { rule, trigger } => Command::CancelHold { rule, trigger },
            });
        }
        let count = evaluation.outcomes.len();
        for outcome in evaluation.outcomes {
            self.decide(outcome, now);
        }
        count
    }
}

#[cfg(test)]
mod tests;
