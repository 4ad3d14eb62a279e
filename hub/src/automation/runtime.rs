//! The automation runtime: feeds the engine every accepted reading (before its commit, so a
//! switch reacts in milliseconds, not at the next group commit), the clock, virtual value
//! changes and due holds; carries out what it decides under each rule's run mode; keeps
//! delays and holds in SQLite so they survive a restart; writes run traces in batches.
//!
//! Each rule acts for its author's data subject (the owner, or a tenancy) and sees only
//! readings that belong to that subject, exactly as its author would in the UI.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::engine::{self, Cause, Check, Compiled, Event, HoldOp, Outcome, RuleId, World};
use super::model::{Action, Mode, Rule, command_payload, parse_coap_uri};
use crate::clock::now_ms;
use crate::consent::Subject;
use crate::ingest::mqtt::MqttServer;
use crate::ingest::pipeline::Ingest;
use crate::outbox::Outbox;
use crate::reading::{Reading, Value};
use crate::store::readings::Keys;
use crate::store::{LatestValue, Role, Store, StoreError};

/// Traces kept per rule.
pub const TRACES_KEPT: i64 = 50;
/// Runs one rule may start per second; past that, triggers are refused (and traced once a
/// second), which bounds loops through devices that echo a command as a reading.
const MAX_RUNS_PER_SECOND: u32 = 100;
/// How often traces are written.
const TRACE_FLUSH: Duration = Duration::from_millis(500);
/// How often the time of the last tick is saved (it is also saved whenever a time
/// trigger fires), for catching up after a restart.
const SAVE_TICK_EVERY_MS: i64 = 60_000;
const LAST_TICK: &str = "automation.last_tick";

/// Where MQTT commands to devices go.
#[derive(Clone)]
pub enum Commands {
    /// The embedded server: to the device's subscriptions.
    Embedded(MqttServer),
    /// The external broker the hub is connected to.
    External(rumqttc::AsyncClient),
    /// No MQTT.
    Off,
}

impl Commands {
    /// Publishes a command; the topic is `hearth/<device>/set/<metric>`.
    async fn send(&self, topic: &str, payload: Vec<u8>) -> Result<&'static str, String> {
        match self {
            Commands::Embedded(server) => {
                server.publish(topic, payload);
                Ok("sent")
            }
            Commands::External(client) => client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .map(|()| "sent to the broker")
                .map_err(|e| e.to_string()),
            Commands::Off => Err("MQTT is off".into()),
        }
    }
}

/// What the runtime needs from the rest of the hub.
pub struct AutomationContext {
    pub store: Store,
    pub ingest: Ingest,
    pub commands: Commands,
    pub outbox: Outbox,
}

/// Handle for the API: tell the runtime that rules changed.
#[derive(Clone)]
pub struct Automations {
    control: mpsc::Sender<()>,
}

impl Automations {
    /// Reloads rules from the store (after a change). Never waits.
    pub fn reload(&self) {
        let _ = self.control.try_send(());
    }
}

/// One step of a run, as traced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub action: String,
    pub at: i64,
    pub ok: bool,
    pub result: String,
}

/// A run's trace: what started it, which conditions passed or failed, what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace {
    pub run: i64,
    pub rule: RuleId,
    pub started: i64,
    pub trigger: Cause,
    pub checks: Vec<Check>,
    /// `running`, `waiting` (in a delay), `done`, `failed`, `stopped`, `paused` (the hub
    /// stopped during a delay; it resumes at start), `skipped` or `conditions not met`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<i64>,
}

/// A run paused in a delay, as kept in a `resume` timer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resume {
    author: i64,
    subject: String,
    name: String,
    actions: Vec<Action>,
    next: usize,
    depth: u8,
    trace: Trace,
}

/// Starts the runtime; it runs until `shutdown`.
pub async fn spawn(
    ctx: AutomationContext,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<Automations, StoreError> {
    let (control, control_rx) = mpsc::channel(16);
    let (traces, traces_rx) = mpsc::channel(4096);
    let (internal, internal_rx) = mpsc::unbounded_channel();
    let (persist, persist_rx) = mpsc::unbounded_channel();
    let accepted = ctx.ingest.subscribe_accepted();
    let next_run = ctx.store.last_run_id().await?;
    let shared = Arc::new(Shared {
        store: ctx.store.clone(),
        commands: ctx.commands,
        outbox: ctx.outbox,
        internal,
        traces,
        shutdown: shutdown.clone(),
    });
    tasks.spawn(write_traces(ctx.store.clone(), traces_rx));
    tasks.spawn(persist_timers(ctx.store.clone(), persist_rx));
    let runtime = Runtime {
        shared,
        tz: chrono::Local,
        rules: HashMap::new(),
        meta: HashMap::new(),
        worlds: HashMap::new(),
        loaded: Default::default(),
        runs: HashMap::new(),
        next_run,
        rate: HashMap::new(),
        persist,
        last_tick: now_ms(),
        tick_saved: 0,
    };
    tasks.spawn(runtime.run(accepted, control_rx, internal_rx, shutdown));
    Ok(Automations { control })
}

/// What run tasks share.
struct Shared {
    store: Store,
    commands: Commands,
    outbox: Outbox,
    internal: mpsc::UnboundedSender<Internal>,
    traces: mpsc::Sender<Trace>,
    shutdown: CancellationToken,
}

/// Messages from run tasks back to the runtime.
enum Internal {
    Done { rule: RuleId, run: i64 },
    Set { subject: Subject, name: String, value: Value, depth: u8 },
}

/// Ordered writes of holds (and the last tick), off the hot path.
enum Persist {
    ArmHold { rule: RuleId, trigger: usize, due: i64 },
    CancelHold { rule: RuleId, trigger: usize },
    Tick(i64),
}

#[derive(Debug, Clone)]
struct RuleMeta {
    author: i64,
    subject: Subject,
    name: String,
    mode: Mode,
    max_runs: u16,
    actions: Arc<Vec<Action>>,
}

#[derive(Default)]
struct RuleRuns {
    active: Vec<(i64, AbortHandle)>,
    queue: VecDeque<Outcome>,
}

struct Runtime {
    shared: Arc<Shared>,
    tz: chrono::Local,
    rules: HashMap<Subject, Vec<Compiled>>,
    meta: HashMap<RuleId, RuleMeta>,
    worlds: HashMap<Subject, World>,
    /// Subjects whose latest values were loaded from the store.
    loaded: std::collections::HashSet<Subject>,
    runs: HashMap<RuleId, RuleRuns>,
    next_run: i64,
    rate: HashMap<RuleId, (i64, u32)>,
    persist: mpsc::UnboundedSender<Persist>,
    last_tick: i64,
    tick_saved: i64,
}

pub fn subject_key(s: Subject) -> String {
    match s {
        Subject::Owner => "owner".into(),
        Subject::Tenancy(t) => format!("tenancy:{t}"),
    }
}

fn parse_subject(s: &str) -> Option<Subject> {
    match s {
        "owner" => Some(Subject::Owner),
        _ => s.strip_prefix("tenancy:")?.parse().ok().map(Subject::Tenancy),
    }
}

impl Runtime {
    async fn run(
        mut self,
        mut accepted: tokio::sync::broadcast::Receiver<Arc<[Reading]>>,
        mut control: mpsc::Receiver<()>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        shutdown: CancellationToken,
    ) {
        if let Err(error) = self.start().await {
            tracing::error!(%error, "automations could not start; rules will not run");
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let next_hold = self.worlds.values().flat_map(|w| w.holds.values()).min().copied();
            let hold_sleep = async {
                match next_hold {
                    Some(due) => {
                        let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                batch = accepted.recv() => match batch {
                    Ok(batch) => {
                        for reading in batch.iter() {
                            self.on_reading(reading);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "automations fell behind; some readings were not evaluated");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                Some(msg) = internal.recv() => self.on_internal(msg),
                Some(()) = control.recv() => {
                    if let Err(error) = self.load_rules().await {
                        tracing::error!(%error, "reloading rules failed");
                    }
                }
                () = hold_sleep => self.on_holds_due(),
                _ = tick.tick() => self.on_tick(),
            }
        }
        // Runs stop where they are; a run in a delay keeps its timer and resumes at start.
        for runs in self.runs.values_mut() {
            runs.active.drain(..).for_each(|(_, h)| h.abort());
        }
        let _ = self.persist.send(Persist::Tick(self.last_tick));
        tracing::debug!("automations stopped");
    }

    /// Loads rules, what is known of each subject, timers; catches up missed time
    /// triggers; fires start triggers; resumes paused runs.
    async fn start(&mut self) -> Result<(), StoreError> {
        let store = self.shared.store.clone();
        self.load_rules().await?;
        for (subject, name, body, _) in store.virtual_values().await? {
            let (Some(subject), Ok(value)) = (parse_subject(&subject), serde_json::from_slice::<Value>(&body)) else {
                continue;
            };
            self.worlds.entry(subject).or_default().virtuals.insert(name, value);
        }
        let mut resumes = Vec::new();
        for timer in store.timers().await? {
            match timer.kind.as_str() {
                "hold" => {
                    let trigger = serde_json::from_slice::<serde_json::Value>(&timer.body)
                        .ok()
                        .and_then(|b| b["trigger"].as_u64())
                        .unwrap_or(0) as usize;
                    if let Some(meta) = self.meta.get(&timer.rule_id) {
                        self.worlds.entry(meta.subject).or_default().holds.insert((timer.rule_id, trigger), timer.due);
                    }
                }
                _ => match serde_json::from_slice::<Resume>(&timer.body) {
                    Ok(resume) => resumes.push((timer.id, timer.due, resume)),
                    Err(error) => tracing::warn!(%error, timer = timer.id, "unreadable paused run dropped"),
                },
            }
        }
        let now = now_ms();
        if let Some(last) = store.hub_state(LAST_TICK).await?
            && last < now
        {
            self.tick(last, now, true);
        }
        self.last_tick = now;
        for subject in self.rules.keys().copied().collect::<Vec<_>>() {
            self.evaluate(subject, &Event::Start, now);
        }
        for (timer, due, resume) in resumes {
            let Some(subject) = parse_subject(&resume.subject) else { continue };
            let rule = resume.trace.rule;
            if !self.meta.contains_key(&rule) {
                let _ = store.delete_timer(timer).await;
                continue;
            }
            let spec = RunSpec {
                id: resume.trace.run,
                author: resume.author,
                subject,
                name: resume.name,
                actions: Arc::new(resume.actions),
                next: resume.next,
                depth: resume.depth,
                trace: resume.trace,
                paused: Some((timer, due)),
            };
            self.spawn_run(rule, spec);
        }
        Ok(())
    }

    /// (Re)loads every rule, and what is known of any subject not seen before.
    async fn load_rules(&mut self) -> Result<(), StoreError> {
        let store = self.shared.store.clone();
        let mut rules: HashMap<Subject, Vec<Compiled>> = HashMap::new();
        let mut meta = HashMap::new();
        for row in store.rules().await? {
            if !row.enabled {
                continue;
            }
            let rule: Rule = match serde_json::from_slice(&row.body) {
                Ok(rule) => rule,
                Err(error) => {
                    tracing::warn!(rule = row.id, %error, "unreadable rule skipped");
                    continue;
                }
            };
            let Some(author) = store.user_session(row.author_id).await? else { continue };
            let subject = match (author.role, author.tenancy_id) {
                (Role::Owner, _) => Subject::Owner,
                (Role::Tenant, Some(t)) => Subject::Tenancy(t),
                _ => continue,
            };
            meta.insert(
                row.id,
                RuleMeta {
                    author: row.author_id,
                    subject,
                    name: rule.name.clone(),
                    mode: rule.mode,
                    max_runs: rule.max_runs,
                    actions: Arc::new(rule.actions.clone()),
                },
            );
            rules.entry(subject).or_default().push(Compiled::new(row.id, rule));
        }
        // Runs and holds of rules that are gone or disabled stop.
        for (id, runs) in &mut self.runs {
            if !meta.contains_key(id) {
                runs.active.drain(..).for_each(|(_, h)| h.abort());
                runs.queue.clear();
            }
        }
        for world in self.worlds.values_mut() {
            world.holds.retain(|(rule, _), _| meta.contains_key(rule));
        }
        // What the store knows of each subject with rules, once; readings heard since
        // start are newer and stay (`World::apply` keeps the newest).
        for subject in rules.keys() {
            if self.loaded.insert(*subject) {
                let keys = store.keys_of(*subject);
                let world = self.worlds.entry(*subject).or_default();
                for latest in store.latest_values(None, Keys::Only(&keys)).await? {
                    let LatestValue { device, metric, unit, ts, value } = latest;
                    world.apply(&Reading { device, metric, ts, value, unit });
                }
            }
        }
        self.rules = rules;
        self.meta = meta;
        tracing::info!(rules = self.meta.len(), "automation rules loaded");
        Ok(())
    }

    fn on_reading(&mut self, reading: &Reading) {
        let Some(subject) = self.shared.store.ownership().rule.subject_at(&reading.device, reading.ts) else { return };
        if self.rules.contains_key(&subject) {
            self.evaluate(subject, &Event::Reading(reading), now_ms());
        }
        self.worlds.entry(subject).or_default().apply(reading);
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Done { rule, run } => {
                let next = self.runs.get_mut(&rule).and_then(|runs| {
                    runs.active.retain(|(id, _)| *id != run);
                    if runs.active.is_empty() { runs.queue.pop_front() } else { None }
                });
                if let Some(outcome) = next {
                    self.start_run(outcome);
                }
            }
            Internal::Set { subject, name, value, depth } => {
                let world = self.worlds.entry(subject).or_default();
                if world.virtuals.get(&name) == Some(&value) {
                    return;
                }
                world.virtuals.insert(name.clone(), value.clone());
                let store = self.shared.store.clone();
                let (key, body, saved) =
                    (subject_key(subject), serde_json::to_vec(&value).unwrap_or_default(), name.clone());
                tokio::spawn(async move {
                    if let Err(error) = store.set_virtual(&key, &saved, &body, now_ms()).await {
                        tracing::warn!(%error, "could not save a virtual value");
                    }
                });
                self.evaluate(subject, &Event::Virtual { name: &name, value: &value, depth: depth + 1 }, now_ms());
            }
        }
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        let from = self.last_tick;
        if now <= from {
            return;
        }
        self.tick(from, now, false);
        self.last_tick = now;
        if now - self.tick_saved >= SAVE_TICK_EVERY_MS {
            self.tick_saved = now;
            let _ = self.persist.send(Persist::Tick(now));
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
            let _ = self.persist.send(Persist::Tick(to));
        }
    }

    fn on_holds_due(&mut self) {
        let now = now_ms();
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
                let _ = self.persist.send(Persist::CancelHold { rule, trigger });
            }
        }
    }

    /// Runs the engine for one subject's rules and carries out its decisions. Returns how
    /// many outcomes there were.
    fn evaluate(&mut self, subject: Subject, event: &Event<'_>, now: i64) -> usize {
        let Some(rules) = self.rules.get(&subject) else { return 0 };
        let world = self.worlds.entry(subject).or_default();
        let evaluation = engine::evaluate(rules, world, event, now, &self.tz);
        for op in &evaluation.holds {
            world.apply_hold(op);
            let _ = self.persist.send(match *op {
                HoldOp::Arm { rule, trigger, due } => Persist::ArmHold { rule, trigger, due },
                HoldOp::Cancel { rule, trigger } => Persist::CancelHold { rule, trigger },
            });
        }
        let count = evaluation.outcomes.len();
        for outcome in evaluation.outcomes {
            self.decide(outcome, now);
        }
        count
    }

    /// Applies the rate bound and the run mode to an outcome.
    fn decide(&mut self, outcome: Outcome, now: i64) {
        if !outcome.run {
            let status = if outcome.refused.is_some() { "skipped" } else { "conditions not met" };
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
                self.trace_only(&outcome, "skipped", Some(note), now);
            }
            return;
        }
        let Some(meta) = self.meta.get(&outcome.rule) else { return };
        let (mode, max) = (meta.mode, usize::from(meta.max_runs));
        let runs = self.runs.entry(outcome.rule).or_default();
        runs.active.retain(|(_, h)| !h.is_finished());
        match mode {
            Mode::Single if !runs.active.is_empty() => {
                self.trace_only(&outcome, "skipped", Some("already running (mode: single)".into()), now);
            }
            Mode::Restart if !runs.active.is_empty() => {
                runs.active.drain(..).for_each(|(_, h)| h.abort());
                self.start_run(outcome);
            }
            Mode::Queued if !runs.active.is_empty() => {
                if runs.queue.len() < max {
                    runs.queue.push_back(outcome);
                } else {
                    self.trace_only(
                        &outcome,
                        "skipped",
                        Some(format!("{max} runs already waiting (mode: queued)")),
                        now,
                    );
                }
            }
            Mode::Parallel if runs.active.len() >= max => {
                self.trace_only(&outcome, "skipped", Some(format!("{max} runs already going (mode: parallel)")), now);
            }
            _ => self.start_run(outcome),
        }
    }

    fn new_trace(&mut self, outcome: &Outcome, status: &str, note: Option<String>, now: i64) -> Trace {
        self.next_run += 1;
        Trace {
            run: self.next_run,
            rule: outcome.rule,
            started: now,
            trigger: outcome.cause.clone(),
            checks: outcome.checks.clone(),
            status: status.into(),
            note,
            steps: Vec::new(),
            finished: None,
        }
    }

    fn trace_only(&mut self, outcome: &Outcome, status: &str, note: Option<String>, now: i64) {
        let mut trace = self.new_trace(outcome, status, note, now);
        trace.finished = Some(now);
        let _ = self.shared.traces.try_send(trace);
    }

    fn start_run(&mut self, outcome: Outcome) {
        let Some(meta) = self.meta.get(&outcome.rule).cloned() else { return };
        let trace = self.new_trace(&outcome, "running", None, now_ms());
        let spec = RunSpec {
            id: trace.run,
            author: meta.author,
            subject: meta.subject,
            name: meta.name,
            actions: meta.actions,
            next: 0,
            depth: outcome.depth,
            trace,
            paused: None,
        };
        self.spawn_run(outcome.rule, spec);
    }

    fn spawn_run(&mut self, rule: RuleId, spec: RunSpec) {
        let id = spec.id;
        let handle = tokio::spawn(execute(self.shared.clone(), rule, spec));
        self.runs.entry(rule).or_default().active.push((id, handle.abort_handle()));
    }
}

/// A run to carry out, from action `next` on.
struct RunSpec {
    id: i64,
    author: i64,
    subject: Subject,
    name: String,
    actions: Arc<Vec<Action>>,
    next: usize,
    depth: u8,
    trace: Trace,
    /// Resuming after a restart: the timer and when the delay ends.
    paused: Option<(i64, i64)>,
}

/// Ends a run's trace however the run ends: finished, stopped by a restart-mode trigger or
/// a deleted rule (the task is dropped), or paused by shutdown.
struct RunGuard {
    shared: Arc<Shared>,
    rule: RuleId,
    trace: Trace,
    /// A delay's timer, deleted unless the hub is stopping.
    timer: Option<i64>,
    finished: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let stopping = self.shared.shutdown.is_cancelled();
        if !self.finished {
            self.trace.status = if stopping && self.timer.is_some() { "paused" } else { "stopped" }.into();
            if !stopping {
                self.trace.note = Some("stopped by a new trigger, or the rule changed".into());
                self.trace.finished = Some(now_ms());
            }
        }
        let _ = self.shared.traces.try_send(self.trace.clone());
        if let Some(timer) = self.timer.take()
            && !stopping
        {
            let store = self.shared.store.clone();
            tokio::spawn(async move { store.delete_timer(timer).await });
        }
        let _ = self.shared.internal.send(Internal::Done { rule: self.rule, run: self.trace.run });
    }
}

async fn execute(shared: Arc<Shared>, rule: RuleId, spec: RunSpec) {
    let mut guard = RunGuard { shared: shared.clone(), rule, trace: spec.trace.clone(), timer: None, finished: false };
    if let Some((timer, due)) = spec.paused {
        guard.timer = Some(timer);
        guard.trace.status = "waiting".into();
        if !wait_until(&shared, due).await {
            return;
        }
        guard.trace.status = "running".into();
        if let Some(step) = guard.trace.steps.last_mut() {
            step.result = "waited".into();
        }
    }
    let mut failed = false;
    for (i, action) in spec.actions.iter().enumerate().skip(spec.next) {
        let now = now_ms();
        let (label, result) = match action {
            Action::Delay { seconds } => {
                let due = now + i64::from(*seconds) * 1000;
                guard.trace.status = "waiting".into();
                guard.trace.steps.push(Step { action: action.describe(), at: now, ok: true, result: "waiting".into() });
                let resume = Resume {
                    author: spec.author,
                    subject: subject_key(spec.subject),
                    name: spec.name.clone(),
                    actions: spec.actions.to_vec(),
                    next: i + 1,
                    depth: spec.depth,
                    trace: guard.trace.clone(),
                };
                let body = serde_json::to_vec(&resume).unwrap_or_default();
                // The previous delay's timer (if any) is finished.
                if let Some(old) = guard.timer.take() {
                    let _ = shared.store.delete_timer(old).await;
                }
                match shared.store.add_timer(rule, "resume", due, &body).await {
                    Ok(timer) => guard.timer = Some(timer),
                    Err(error) => tracing::warn!(%error, "a delay could not be saved; it will not survive a restart"),
                }
                let _ = shared.traces.try_send(guard.trace.clone());
                if !wait_until(&shared, due).await {
                    return;
                }
                guard.trace.status = "running".into();
                if let Some(step) = guard.trace.steps.last_mut() {
                    step.result = "waited".into();
                }
                continue;
            }
            Action::Mqtt { device, metric, value } => {
                let topic = format!("hearth/{device}/set/{metric}");
                (action.describe(), shared.commands.send(&topic, command_payload(value)).await.map(str::to_owned))
            }
            Action::Coap { uri, method, payload } => {
                let result = match parse_coap_uri(uri) {
                    Ok(target) => super::coap::request(&target, *method, payload.as_bytes()).await,
                    Err(e) => Err(e.to_string()),
                };
                (action.describe(), result)
            }
            Action::Set { name, value } => {
                let _ = shared.internal.send(Internal::Set {
                    subject: spec.subject,
                    name: name.clone(),
                    value: value.clone(),
                    depth: spec.depth,
                });
                (action.describe(), Ok("set".into()))
            }
            Action::Notify { message } => {
                let body = json!({ "source": "rule", "rule": spec.name, "message": message,
                    "trigger": guard.trace.trigger.text });
                let r = shared.store.add_notification(spec.author, body.to_string().as_bytes(), now).await;
                (action.describe(), r.map(|_| "shown in the app".into()).map_err(|e| e.to_string()))
            }
            Action::Cloud { destination, topic, payload } => {
                let message = json!({ "rule": spec.name, "trigger": guard.trace.trigger, "payload": payload });
                let r = shared.outbox.send(destination, topic.as_deref(), message).await;
                (action.describe(), r.map(|id| format!("queued as {id}")).map_err(|e| e.to_string()))
            }
        };
        let ok = result.is_ok();
        guard.trace.steps.push(Step { action: label, at: now, ok, result: result.unwrap_or_else(|e| e) });
        if !ok {
            failed = true;
            break;
        }
    }
    guard.trace.status = if failed { "failed" } else { "done" }.into();
    guard.trace.finished = Some(now_ms());
    guard.finished = true;
}

/// Sleeps until `due` (ms); `false` if the hub is stopping first.
async fn wait_until(shared: &Shared, due: i64) -> bool {
    let wait = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
    tokio::select! {
        () = shared.shutdown.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// Writes traces in batches: the latest state of each run, at most `TRACES_KEPT` per rule.
async fn write_traces(store: Store, mut rx: mpsc::Receiver<Trace>) {
    let mut pending: Vec<Trace> = Vec::new();
    loop {
        let first = rx.recv().await;
        let Some(first) = first else { break };
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
            rows.push((t.run, t.rule, t.started, serde_json::to_vec(&t).unwrap_or_default()));
        }
    }
    if let Err(error) = store.save_runs(&rows, TRACES_KEPT).await {
        tracing::warn!(%error, "could not save rule traces");
    }
}

/// Keeps hold timers and the last tick in the store, in the order they happened.
async fn persist_timers(store: Store, mut rx: mpsc::UnboundedReceiver<Persist>) {
    let mut holds: HashMap<(RuleId, usize), i64> = HashMap::new();
    if let Ok(timers) = store.timers().await {
        for t in timers.into_iter().filter(|t| t.kind == "hold") {
            let trigger = serde_json::from_slice::<serde_json::Value>(&t.body)
                .ok()
                .and_then(|b| b["trigger"].as_u64())
                .unwrap_or(0) as usize;
            holds.insert((t.rule_id, trigger), t.id);
        }
    }
    while let Some(op) = rx.recv().await {
        let result = match op {
            Persist::ArmHold { rule, trigger, due } => {
                let body = json!({ "trigger": trigger }).to_string();
                store.add_timer(rule, "hold", due, body.as_bytes()).await.map(|id| {
                    holds.insert((rule, trigger), id);
                })
            }
            Persist::CancelHold { rule, trigger } => match holds.remove(&(rule, trigger)) {
                Some(id) => store.delete_timer(id).await,
                None => Ok(()),
            },
            Persist::Tick(at) => store.set_hub_state(LAST_TICK, at).await,
        };
        if let Err(error) = result {
            tracing::warn!(%error, "could not save automation state");
        }
    }
}
