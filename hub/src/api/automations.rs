//! Automations: rules (create, edit, enable, delete, import, export as JSON or YAML), their
//! run traces, notifications, and the cloud outbox's status. A rule belongs to its author
//! and may use only devices its author sees; owners and tenants have rules, guests and
//! recipients none.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use hearth_model::automations::{DestinationStatus, ExportQuery, Imported, Notification, Outbox, RuleSet};

use super::routes::{OWNER, Route, Who};
use super::scope::Scope;
use super::{ApiJson, ApiQuery};
use crate::auth::{CurrentUser, SUBJECTS};
use crate::automation::dryrun::replay;
use crate::automation::engine::{Compiled, World};
use crate::automation::model::{Action, Condition, Trigger, find_virtual_loop};
use crate::automation::run::TRACES_KEPT;
use crate::automation::{Rule, Trace};
use crate::consent::DeviceClass;
use crate::error::AppError;
use crate::reading::{Reading, Value};
use crate::state::AppState;
use crate::store::readings::Keys;
use crate::store::{DeviceRecord, Role, RuleRow, Session};
use hearth_model::rules::{DryRun, DryRunRequest, RuleView, Use};

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/rules", Who::People(SUBJECTS), |m| on(m, list)),
    Route::new("POST", "/api/rules", Who::People(SUBJECTS), |m| on(m, create)),
    Route::new("GET", "/api/rules/export", Who::People(SUBJECTS), |m| on(m, export)),
    Route::new("POST", "/api/rules/import", Who::People(SUBJECTS), |m| on(m, import)),
    Route::new("POST", "/api/rules/dry-run", Who::People(SUBJECTS), |m| on(m, dry_run)),
    Route::new("GET", "/api/rules/{id}", Who::People(SUBJECTS), |m| on(m, one)),
    Route::new("PUT", "/api/rules/{id}", Who::People(SUBJECTS), |m| on(m, update)),
    Route::new("DELETE", "/api/rules/{id}", Who::People(SUBJECTS), |m| on(m, remove)),
    Route::new("GET", "/api/rules/{id}/runs", Who::People(SUBJECTS), |m| on(m, runs)),
    Route::new("GET", "/api/notifications", Who::People(SUBJECTS), |m| on(m, notifications)),
    Route::new("DELETE", "/api/notifications/{id}", Who::People(SUBJECTS), |m| on(m, dismiss)),
    Route::new("GET", "/api/outbox", Who::People(OWNER), |m| on(m, outbox)),
];

/// Most rules one person may have.
const MAX_RULES: usize = 500;

fn parse_rule(row: &RuleRow) -> Result<Rule, AppError> {
    serde_json::from_slice(&row.body).map_err(AppError::internal)
}

async fn view(state: &AppState, row: &RuleRow) -> Result<RuleView, AppError> {
    let last_run = state
        .store
        .runs(row.id, 1)
        .await?
        .into_iter()
        .next()
        .and_then(|(_, _, body)| serde_json::from_slice(&body).ok());
    Ok(RuleView { id: row.id, created: row.created, updated: row.updated, rule: parse_rule(row)?, last_run })
}

/// The caller's own rule `id`; 404 for anyone else's.
async fn own_rule(state: &AppState, user: &Session, id: i64) -> Result<RuleRow, AppError> {
    state.store.rule(id).await?.filter(|r| r.author_id == user.user_id).ok_or(AppError::NotFound)
}

async fn own_rules(state: &AppState, user: &Session) -> Result<Vec<RuleRow>, AppError> {
    Ok(state.store.rules().await?.into_iter().filter(|r| r.author_id == user.user_id).collect())
}

/// Everything a rule must pass beyond its own shape: the devices exist and the author sees
/// them, and with the author's other rules it makes no loop through virtual values.
async fn check(state: &AppState, user: &Session, rule: &Rule, others: &[(String, Rule)]) -> Result<(), AppError> {
    super::scope::may_act(state, user, state.clock.now_ms())?;
    let subject = super::scope::subject_of(user).ok_or(AppError::Forbidden("only owners and tenants have rules"))?;
    crate::automation::model::validate(rule, &state.outbox.destinations(subject))
        .map_err(|e| AppError::field("rule", e.0))?;
    let scope = Scope::of(state, user).await?;
    let ownership = state.store.ownership();
    let devices = state.store.devices().await?;
    let device = |id: &str| devices.iter().find(|d| d.id == id);
    for id in rule.devices() {
        match device(id) {
            // A building device's readings are always the owner's, and so is the device:
            // a tenant's rule could never hear it and must not command it.
            Some(d)
                if user.role == Role::Tenant
                    && d.tenancy_id.is_none()
                    && ownership.rule.current_class(&d.id) == DeviceClass::Building =>
            {
                return Err(AppError::field(
                    "rule",
                    format!("{id:?} is a building device: its readings and commands are the owner's"),
                ));
            }
            Some(d) if scope.sees(d) => {}
            _ => return Err(AppError::field("rule", format!("no device {id:?} that you can use"))),
        }
    }
    let fronts = super::devices::fronts(&devices);
    for action in &rule.actions {
        if let Action::Mqtt { device: id, .. } | Action::Coap { device: id, .. } = action
            && super::devices::is_bridge(&fronts, id, state.bridges.view(id).is_some())
        {
            return Err(AppError::field(
                "rule",
                format!("{:?} is a bridge: command the devices behind it", name_of(&devices, id)),
            ));
        }
    }
    if !rule.insist {
        check_metrics(state, &scope, rule, &devices).await?;
    }
    for action in &rule.actions {
        if let Action::Coap { device: id, .. } = action
            && device(id).and_then(|d| d.coap_address.as_ref()).is_none()
        {
            return Err(AppError::field(
                "rule",
                format!("{id:?} has no CoAP address yet: the owner sets it on the device's page"),
            ));
        }
    }
    let mut all: Vec<(&str, &Rule)> = others.iter().map(|(n, r)| (n.as_str(), r)).collect();
    all.push((&rule.name, rule));
    if let Some(cycle) = find_virtual_loop(&all) {
        return Err(AppError::field(
            "rule",
            format!("these rules would start each other forever through virtual values: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

/// The name people know device `id` by.
fn name_of<'a>(all: &'a [DeviceRecord], id: &'a str) -> &'a str {
    all.iter().find(|d| d.id == id).map_or(id, |d| d.name.as_str())
}

/// A rule that listens to a value its device never reported nor announced, or sets one it
/// never announced taking, could never fire or would go nowhere: refused with the reason
/// (and the nearest value it has), unless its author insists.
async fn check_metrics(state: &AppState, scope: &Scope, rule: &Rule, all: &[DeviceRecord]) -> Result<(), AppError> {
    for (device, metric, how) in rule.metrics() {
        // Only what the author may know: readings under keys they hold, and descriptions.
        let known = super::devices::known_metrics(state, scope, device, how == Use::Sets).await?;
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        if known.contains(&metric) {
            continue;
        }
        let what = match how {
            Use::Hears => "never reported or announced",
            Use::Sets => "never announced taking",
        };
        let nearest = known
            .iter()
            .min_by_key(|k| strsim::levenshtein(k, metric))
            .filter(|k| strsim::levenshtein(k, metric) <= metric.chars().count().div_ceil(3));
        let hint = match nearest {
            Some(k) => format!(" (did you mean {k:?}?)"),
            None if known.is_empty() => String::new(),
            None => {
                format!(" (it has {})", known.iter().take(8).map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "))
            }
        };
        return Err(AppError::field(
            "metric",
            format!(
                "{:?} {what} {metric:?}{hint}: the rule could never {}. Save it anyway if you know it will.",
                name_of(all, device),
                match how {
                    Use::Hears => "fire on it",
                    Use::Sets => "set it",
                },
            ),
        ));
    }
    Ok(())
}

/// The author's other rules (all but `except`), parsed.
async fn others(state: &AppState, user: &Session, except: Option<i64>) -> Result<Vec<(String, Rule)>, AppError> {
    own_rules(state, user)
        .await?
        .iter()
        .filter(|r| Some(r.id) != except)
        .map(|r| parse_rule(r).map(|rule| (rule.name.clone(), rule)))
        .collect()
}

async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<RuleView>>, AppError> {
    let mut out = Vec::new();
    for row in own_rules(&state, &user).await? {
        out.push(view(&state, &row).await?);
    }
    Ok(ApiJson(out))
}

async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(rule): ApiJson<Rule>,
) -> Result<(StatusCode, ApiJson<RuleView>), AppError> {
    let others = others(&state, &user, None).await?;
    if others.len() >= MAX_RULES {
        return Err(AppError::invalid(format!("at most {MAX_RULES} rules")));
    }
    check(&state, &user, &rule, &others).await?;
    let body = serde_json::to_vec(&rule).map_err(AppError::internal)?;
    let id = state.store.create_rule(user.user_id, &body, rule.enabled, state.clock.now_ms()).await?;
    state.automations.reload().await;
    let row = own_rule(&state, &user, id).await?;
    Ok((StatusCode::CREATED, ApiJson(view(&state, &row).await?)))
}

async fn one(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<ApiJson<RuleView>, AppError> {
    let row = own_rule(&state, &user, id).await?;
    Ok(ApiJson(view(&state, &row).await?))
}

async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
    ApiJson(rule): ApiJson<Rule>,
) -> Result<ApiJson<RuleView>, AppError> {
    own_rule(&state, &user, id).await?;
    let others = others(&state, &user, Some(id)).await?;
    check(&state, &user, &rule, &others).await?;
    let body = serde_json::to_vec(&rule).map_err(AppError::internal)?;
    if !state.store.update_rule(id, &body, rule.enabled, state.clock.now_ms()).await? {
        return Err(AppError::NotFound);
    }
    state.automations.reload().await;
    let row = own_rule(&state, &user, id).await?;
    Ok(ApiJson(view(&state, &row).await?))
}

async fn remove(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    own_rule(&state, &user, id).await?;
    state.store.delete_rule(id).await?;
    state.automations.reload().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn runs(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<ApiJson<Vec<Trace>>, AppError> {
    own_rule(&state, &user, id).await?;
    let runs = state.store.runs(id, TRACES_KEPT).await?;
    Ok(ApiJson(runs.into_iter().filter_map(|(_, _, body)| serde_json::from_slice(&body).ok()).collect()))
}

async fn export(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, AppError> {
    let rules = own_rules(&state, &user).await?.iter().map(parse_rule).collect::<Result<Vec<_>, _>>()?;
    let set = RuleSet { rules };
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(ApiJson(set).into_response()),
        "yaml" => {
            let text = serde_norway::to_string(&set).map_err(AppError::internal)?;
            Ok(([(header::CONTENT_TYPE, "application/yaml; charset=utf-8")], text).into_response())
        }
        _ => Err(AppError::field("format", "json or yaml")),
    }
}

/// Imports `{"rules": [...]}` as JSON, or the same as YAML (`Content-Type: application/yaml`).
/// All or nothing: one bad rule refuses the whole file, naming it.
async fn import(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, ApiJson<Imported>), AppError> {
    let yaml = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("yaml"));
    let set: RuleSet = if yaml {
        crate::automation::model::parse_rule_set_yaml(&body).map_err(|e| AppError::field("body", e))?
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::field("body", e.to_string()))?
    };
    let mut existing = others(&state, &user, None).await?;
    if existing.len() + set.rules.len() > MAX_RULES {
        return Err(AppError::invalid(format!("at most {MAX_RULES} rules")));
    }
    for (i, rule) in set.rules.iter().enumerate() {
        check(&state, &user, rule, &existing).await.map_err(|e| match e {
            AppError::Validation { message, .. } => {
                AppError::field("rules", format!("rule {} ({:?}): {message}", i + 1, rule.name))
            }
            other => other,
        })?;
        existing.push((rule.name.clone(), rule.clone()));
    }
    let mut ids = Vec::new();
    for rule in &set.rules {
        let body = serde_json::to_vec(rule).map_err(AppError::internal)?;
        ids.push(state.store.create_rule(user.user_id, &body, rule.enabled, state.clock.now_ms()).await?);
    }
    state.automations.reload().await;
    Ok((StatusCode::CREATED, ApiJson(Imported { imported: ids.len(), ids })))
}

/// Longest range a dry run replays, and most readings and firings it handles.
const DRY_RUN_MAX_MS: i64 = 31 * 24 * 3_600_000;
const DRY_RUN_MAX_READINGS: usize = 200_000;
const DRY_RUN_MAX_FIRES: usize = 1_000;
/// What the replay knows before `from`: the readings of the day before.
const DRY_RUN_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// Replays a rule (saved or not) over your recorded readings in `[from, to)` and lists when
/// it would have fired and what it would have done. Nothing is acted on.
async fn dry_run(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(req): ApiJson<DryRunRequest>,
) -> Result<ApiJson<DryRun>, AppError> {
    AppError::times(&[("from", Some(req.from)), ("to", Some(req.to))])?;
    if req.from >= req.to || req.to - req.from > DRY_RUN_MAX_MS {
        return Err(AppError::field("to", "the range must be after `from` and at most 31 days long"));
    }
    // Trying a rule out saves nothing: a value its device never had only never fires.
    let mut rule = req.rule.clone();
    rule.insist = true;
    check(&state, &user, &rule, &[]).await?;
    let scope = Scope::of(&state, &user).await?;
    // The series the rule looks at: those its triggers and conditions name, and every
    // series of a device it waits to fall silent.
    let mut series = std::collections::BTreeSet::new();
    for t in &req.rule.triggers {
        match t {
            Trigger::Reading { device, metric }
            | Trigger::Change { device, metric, .. }
            | Trigger::Threshold { device, metric, .. } => {
                series.insert((device.clone(), metric.clone()));
            }
            Trigger::Silent { device, .. } => {
                for s in state.store.series_of(device).await? {
                    series.insert((s.device, s.metric));
                }
            }
            _ => {}
        }
    }
    fn walk(c: &Condition, out: &mut std::collections::BTreeSet<(String, String)>) {
        match c {
            Condition::Compare { device, metric, .. } => {
                out.insert((device.clone(), metric.clone()));
            }
            Condition::All { conditions } | Condition::Any { conditions } => {
                conditions.iter().for_each(|c| walk(c, out))
            }
            Condition::Not { condition } => walk(condition, out),
            _ => {}
        }
    }
    req.rule.conditions.iter().for_each(|c| walk(c, &mut series));

    let mut world = World::default();
    let mut readings = Vec::new();
    for (device, metric) in &series {
        let range = (req.from - DRY_RUN_LOOKBACK_MS, req.to);
        let Some((rows, _)) =
            state.store.readings(device, metric, range, DRY_RUN_MAX_READINGS, Keys::Only(&scope.keys)).await?
        else {
            continue;
        };
        for (ts, value) in rows {
            let r = Reading { device: device.clone(), metric: metric.clone(), ts, value, unit: None };
            if ts < req.from { world.apply(&r) } else { readings.push(r) }
        }
        if readings.len() > DRY_RUN_MAX_READINGS {
            return Err(AppError::field(
                "to",
                format!("more than {DRY_RUN_MAX_READINGS} readings: choose a shorter range"),
            ));
        }
    }
    readings.sort_by_key(|r| r.ts);
    if let Some(subject) = super::scope::subject_of(&user) {
        let key = subject.to_string();
        for (s, name, body, _) in state.store.virtual_values().await? {
            if s == key
                && let Ok(v) = serde_json::from_slice::<Value>(&body)
            {
                world.virtuals.insert(name, v);
            }
        }
    }
    let compiled = Compiled::new(0, req.rule);
    let result = replay(&compiled, world, &readings, (req.from, req.to), &chrono::Local, DRY_RUN_MAX_FIRES);
    Ok(ApiJson(DryRun {
        from: req.from,
        to: req.to,
        readings: readings.len(),
        fires: result.fires,
        truncated: result.truncated,
    }))
}

async fn notifications(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<Notification>>, AppError> {
    let rows = state.store.notifications(user.user_id, 100).await?;
    Ok(ApiJson(rows.into_iter().map(|(id, created, note)| Notification { id, created, note }).collect()))
}

async fn dismiss(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    if state.store.delete_notification(user.user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound)
    }
}

async fn outbox(State(state): State<AppState>) -> Result<ApiJson<Outbox>, AppError> {
    let names: Vec<String> = state.config.cloud.destinations.iter().map(|d| d.name.clone()).collect();
    let status = state.store.outbox_status(&names).await?;
    let max = state.config.cloud.max_queued;
    let destinations = status.into_iter().map(|s| DestinationStatus {
        full: s.queued >= i64::from(max),
        destination: s.destination,
        queued: s.queued,
        oldest: s.oldest,
        delivered: s.delivered,
        dropped: s.dropped,
        last_error: s.last_error,
        last_attempt: s.last_attempt,
        last_success: s.last_success,
    });
    Ok(ApiJson(Outbox { max_queued: max, destinations: destinations.collect() }))
}
