//! The automation runtime: the thin I/O edge around the [`Scheduler`]. It feeds it every
//! accepted reading (before its commit, so a switch reacts in milliseconds, not at the
//! next group commit), rule changes, finished actions and the time from the hub's
//! [`Clock`]; and it carries out the commands it returns: actions as owned tasks, traces
//! and saved state through two writers. Every task it starts is joined before it returns.
//!
//! Each rule acts for its author's data subject (the owner, or a tenancy) and sees only
//! readings that belong to that subject, exactly as its author would in the UI.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::actions::{Commands, Effects};
use super::model::Rule;
use super::persist::{self, Save, Saved};
use super::run::Trace;
use super::scheduler::{Command, Input, LoadedRule, Scheduler};
use crate::clock::Clock;
use crate::consent::Subject;
use crate::error::chain;
use crate::ingest::pipeline::Ingest;
use crate::ingest::recording::Unrecorded;
use crate::outbox::Outbox;
use crate::reading::Reading;
use crate::store::readings::Keys;
use crate::store::{LatestValue, Role, Store, StoreError};

/// Saved-state writes that may wait for the writer before the runtime goes on.
const SAVES_QUEUED: usize = 1024;
/// Trace updates that may wait; past that, updates are dropped (and a warning logged).
const TRACES_QUEUED: usize = 4096;

/// What the runtime needs from the rest of the hub.
pub struct AutomationContext {
    pub store: Store,
    pub ingest: Ingest,
    pub commands: Commands,
    /// Where commands to devices behind a bridge go.
    pub bridges: crate::bridges::Bridges,
    pub outbox: Outbox,
    pub clock: Clock,
}

/// How long the API waits for the runtime to take a rule change in.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// Handle for the API: tell the runtime that rules changed.
#[derive(Clone)]
pub struct Automations {
    control: mpsc::Sender<oneshot::Sender<()>>,
}

impl Automations {
    /// Reloads rules from the store (after a change) and waits until the runtime runs
    /// them, so that a change is in effect when the API answers. A runtime that is stopped
    /// or stuck is logged, not waited for: the change is saved and applies at its reload.
    pub async fn reload(&self) {
        let (done, applied) = oneshot::channel();
        let sent = tokio::time::timeout(RELOAD_WAIT, self.control.send(done)).await;
        let applied = match sent {
            Ok(Ok(())) => tokio::time::timeout(RELOAD_WAIT, applied).await.is_ok_and(|r| r.is_ok()),
            _ => false,
        };
        if !applied {
            tracing::warn!("the automation runtime did not confirm a rule change in time");
        }
    }
}

/// Starts the runtime as one task in `tasks`; it runs until `shutdown`.
pub async fn spawn(
    ctx: AutomationContext,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Automations, StoreError> {
    let (control, control_rx) = mpsc::channel(16);
    let accepted = ctx.ingest.subscribe_accepted();
    let last_run = ctx.store.last_run_id().await?;
    tasks.spawn(run(ctx, last_run, accepted, control_rx, shutdown));
    Ok(Automations { control })
}

async fn run(
    ctx: AutomationContext,
    last_run: i64,
    mut accepted: broadcast::Receiver<Arc<[Reading]>>,
    mut control: mpsc::Receiver<oneshot::Sender<()>>,
    shutdown: CancellationToken,
) {
    let AutomationContext { store, ingest, commands, bridges, outbox, clock } = ctx;
    let unrecorded = ingest.unrecorded().clone();
    let mut shredded = store.subscribe_shredded();
    let mut scheduler = Scheduler::new(chrono::Local, last_run);
    let (saves, saves_rx) = mpsc::channel(SAVES_QUEUED);
    let (traces, traces_rx) = mpsc::channel(TRACES_QUEUED);
    let trace_writer = tokio::spawn(persist::write_traces(store.clone(), traces_rx));
    let mut edge = Edge {
        effects: Effects { store: store.clone(), commands, bridges, outbox },
        clock: clock.clone(),
        saves,
        traces,
        actions: JoinSet::new(),
        aborts: HashMap::new(),
    };

    let mut saved = match start((&store, &unrecorded), &mut scheduler, &mut edge).await {
        Ok(saved) => saved,
        Err(error) => {
            tracing::error!(error = %chain(&error), "automations could not start; rules will not run");
            Saved::default()
        }
    };
    let start_input = saved.input();
    let save_writer = tokio::spawn(saved.write(store.clone(), saves_rx));
    let started = scheduler.step(clock.now_ms(), start_input);
    edge.dispatch(started).await;

    loop {
        let deadline = scheduler.next_deadline();
        let wake = async {
            match deadline {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let commands = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            batch = accepted.recv() => match batch {
                Ok(batch) => {
                    let (now, ownership) = (clock.now_ms(), store.ownership());
                    let mut out = Vec::new();
                    for reading in batch.iter() {
                        if let Some(subject) = ownership.rule.subject_at(&reading.device, reading.ts) {
                            out.extend(scheduler.step(now, Input::Reading { subject, reading }));
                        }
                    }
                    out
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "automations fell behind; some readings were not evaluated");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            Some(joined) = edge.actions.join_next(), if !edge.actions.is_empty() => match joined {
                Ok((run, result)) => {
                    edge.aborts.remove(&run);
                    scheduler.step(clock.now_ms(), Input::Done { run, result })
                }
                // Aborted: the scheduler stopped that run already.
                Err(_) => continue,
            },
            Some(applied) = control.recv() => {
                match load_rules((&store, &unrecorded), &scheduler, clock.now_ms()).await {
                    Ok(input) => {
                        let commands = scheduler.step(clock.now_ms(), input);
                        edge.dispatch(commands).await;
                    }
                    Err(error) => tracing::error!(error = %chain(&error), "reloading rules failed"),
                }
                let _ = applied.send(());
                continue;
            }
            Ok(tenancy) = shredded.recv() => scheduler.step(clock.now_ms(), Input::Forget(Subject::Tenancy(tenancy))),
            () = wake => scheduler.step(clock.now_ms(), Input::Time),
        };
        edge.dispatch(commands).await;
    }

    let stopped = scheduler.step(clock.now_ms(), Input::Shutdown);
    edge.dispatch(stopped).await;
    edge.actions.abort_all();
    while edge.actions.join_next().await.is_some() {}
    // Closing the channels lets both writers write what is left and end.
    drop(edge);
    for writer in [trace_writer, save_writer] {
        if let Err(error) = writer.await {
            tracing::error!(%error, "an automation writer failed");
        }
    }
    tracing::debug!("automations stopped");
}

/// Loads rules and what was saved before the hub stopped.
async fn start(
    (store, unrecorded): (&Store, &Unrecorded),
    scheduler: &mut Scheduler<chrono::Local>,
    edge: &mut Edge,
) -> Result<Saved, StoreError> {
    let rules = load_rules((store, unrecorded), scheduler, edge.clock.now_ms()).await?;
    let loaded = scheduler.step(edge.clock.now_ms(), rules);
    edge.dispatch(loaded).await;
    persist::load(store).await
}

/// The enabled rules, each with its author's subject, and what the store knows of subjects
/// the scheduler has not heard of yet.
async fn load_rules<Tz: chrono::TimeZone>(
    (store, unrecorded): (&Store, &Unrecorded),
    scheduler: &Scheduler<Tz>,
    now: i64,
) -> Result<Input<'static>, StoreError> {
    let ownership = store.ownership();
    let mut rules = Vec::new();
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
        // A tenancy that has ended runs no rules (one not started yet may: its rules wait,
        // and every action is checked again when it runs).
        if let Subject::Tenancy(t) = subject
            && ownership.rule.tenancies.iter().any(|s| s.tenancy == t && s.end.is_some_and(|end| end <= now))
        {
            continue;
        }
        rules.push(LoadedRule { id: row.id, author: row.author_id, subject, rule });
    }
    let mut known = Vec::new();
    for subject in scheduler.unknown_subjects(&rules) {
        let keys = store.keys_of(subject);
        // Values not recorded are known only in memory, and may be newer than the store's.
        let mut latest = store.latest_values(None, Keys::Only(&keys)).await?;
        unrecorded.merge_into(&mut latest, None, Keys::Only(&keys));
        let readings = latest
            .into_iter()
            .map(|LatestValue { device, metric, unit, ts, value, .. }| Reading { device, metric, ts, value, unit })
            .collect();
        known.push((subject, readings));
    }
    tracing::info!(rules = rules.len(), "automation rules loaded");
    Ok(Input::Rules { rules, known })
}

/// Carries out the scheduler's commands.
struct Edge {
    effects: Effects,
    clock: Clock,
    saves: mpsc::Sender<Save>,
    traces: mpsc::Sender<Trace>,
    /// Actions under way, each answering with its run and result.
    actions: JoinSet<(i64, Result<String, String>)>,
    aborts: HashMap<i64, AbortHandle>,
}

impl Edge {
    async fn dispatch(&mut self, commands: Vec<Command>) {
        for command in commands {
            let save = match command {
                Command::Perform(job) => {
                    let (effects, clock, run) = (self.effects.clone(), self.clock.clone(), job.run);
                    let handle = self.actions.spawn(async move {
                        let result = effects.perform(&job, clock.now_ms()).await;
                        (run, result.map_err(|error| chain(&error)))
                    });
                    self.aborts.insert(run, handle);
                    continue;
                }
                Command::Abort { run } => {
                    if let Some(handle) = self.aborts.remove(&run) {
                        handle.abort();
                    }
                    continue;
                }
                Command::Trace(trace) => {
                    if self.traces.try_send(*trace).is_err() {
                        tracing::warn!("rule traces are arriving faster than they can be saved; one was dropped");
                    }
                    continue;
                }
                Command::ArmHold(hold) => Save::ArmHold(hold),
                Command::CancelHold { rule, trigger } => Save::CancelHold { rule, trigger },
                Command::SaveDelay { run, rule, due, resume } => Save::Delay { run, rule, due, resume },
                Command::DropDelay { run } => Save::DropDelay { run },
                Command::SaveVirtual { subject, name, value } => {
                    Save::Virtual { subject, name, value, at: self.clock.now_ms() }
                }
                Command::SaveTick(at) => Save::Tick(at),
            };
            if self.saves.send(save).await.is_err() {
                tracing::error!("the automation state writer has stopped; state is no longer saved");
            }
        }
    }
}
