//! Tenancies and their invites, guests, and recipients (third parties with client
//! credentials). The owner runs tenancies; owners and tenants invite guests and register
//! recipients of their own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use hearth_model::Me;
use hearth_model::people::{
    AcceptInvite, EndTenancy, Guest, Invite, NewGuest, NewRecipient, NewTenancy, Recipient, RecipientCredentials,
    Tenancy,
};

use super::ApiJson;
use super::account::{check_password, check_username, start_session};
use super::routes::{OWNER, Route, TENANT, Who};
use super::scope::Scope;
use crate::auth::{self, ClientAddr, CurrentUser, SUBJECTS};
use crate::consent::DAY_MS;
use crate::error::AppError;
use crate::reading::valid_device_id;
use crate::sharing::new_id;
use crate::state::AppState;
use crate::store::{AcceptError, GuestRecord, RecipientRecord, Role, TenancyRecord};

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/tenancies", Who::People(SUBJECTS), |m| on(m, tenancies)),
    Route::new("POST", "/api/tenancies", Who::People(OWNER), |m| on(m, create_tenancy)),
    Route::new("POST", "/api/tenancies/{id}/invite", Who::People(OWNER), |m| on(m, reinvite)),
    Route::new("POST", "/api/tenancies/{id}/end", Who::People(OWNER), |m| on(m, end_tenancy)),
    Route::new("POST", "/api/tenancies/{id}/shred", Who::People(TENANT), |m| on(m, shred)),
    Route::new("POST", "/api/invites/accept", Who::Anyone, |m| on(m, accept)),
    Route::new("GET", "/api/guests", Who::People(SUBJECTS), |m| on(m, guests)),
    Route::new("POST", "/api/guests", Who::People(SUBJECTS), |m| on(m, invite_guest)),
    Route::new("DELETE", "/api/guests/{id}", Who::People(SUBJECTS), |m| on(m, remove_guest)),
    Route::new("GET", "/api/recipients", Who::People(SUBJECTS), |m| on(m, recipients)),
    Route::new("POST", "/api/recipients", Who::People(SUBJECTS), |m| on(m, register_recipient)),
    Route::new("DELETE", "/api/recipients/{id}", Who::People(SUBJECTS), |m| on(m, remove_recipient)),
];

/// How long an invite code stays usable.
const INVITE_TTL_MS: i64 = 7 * DAY_MS;
/// A tenancy may start this little in the past (clock differences between browser and hub);
/// earlier would hand the tenant readings already sealed as the owner's.
const START_SLACK_MS: i64 = 60_000;
/// Invite codes: 4 groups of 4 (about 79 bits).
fn new_invite_code() -> Result<String, AppError> {
    auth::human_code(4).map_err(AppError::internal)
}

/// Codes are compared without dashes, spaces or case, as people type them.
fn code_digest(code: &str) -> Vec<u8> {
    auth::token_digest(&auth::normalize_code(code))
}

impl From<TenancyRecord> for Tenancy {
    fn from(t: TenancyRecord) -> Self {
        Tenancy {
            shred_due: t.shred_due(),
            id: t.id,
            start: t.start,
            end: t.end,
            retention_days: t.retention_days,
            created: t.created,
            shredded: t.shredded,
            tenant_id: t.tenant_id,
            tenant: t.tenant,
        }
    }
}

impl From<GuestRecord> for Guest {
    fn from(g: GuestRecord) -> Self {
        Guest { id: g.id, username: g.username, devices: g.devices }
    }
}

impl From<RecipientRecord> for Recipient {
    fn from(r: RecipientRecord) -> Self {
        Recipient { id: r.id, name: r.name, kind: r.kind, registered_by: r.registered_by, created: r.created }
    }
}

async fn tenancies(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<Tenancy>>, AppError> {
    let all = state.store.tenancies().await?;
    let visible = all.into_iter().filter(|t| user.role == Role::Owner || user.tenancy_id == Some(t.id));
    Ok(ApiJson(visible.map(Tenancy::from).collect()))
}

async fn create_tenancy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<NewTenancy>,
) -> Result<(StatusCode, ApiJson<Invite>), AppError> {
    AppError::times(&[("start", req.start), ("end", req.end)])?;
    let now = state.clock.now_ms();
    // At least a moment ahead, so that every reading made from the start is sealed for the
    // tenant: readings already stored stay the owner's.
    let start = req.start.unwrap_or(now).max(now + 1000);
    if req.start.is_some_and(|s| s < now - START_SLACK_MS) {
        return Err(AppError::field("start", "a tenancy cannot start in the past"));
    }
    if req.end.is_some_and(|end| end <= start) {
        return Err(AppError::field("end", "must be after the start"));
    }
    let retention = req.retention_days.unwrap_or(state.config.consent.retention_days);
    if retention > 3660 {
        return Err(AppError::field("retention_days", "at most 3660"));
    }
    let code = new_invite_code()?;
    let expires = now + INVITE_TTL_MS;
    let id = state
        .store
        .create_tenancy((start, req.end), i64::from(retention), (&code_digest(&code), user.user_id, expires), now)
        .await?
        .ok_or(AppError::Conflict("that period overlaps another tenancy"))?;
    tracing::info!(tenancy = id, "tenancy created");
    super::scope::audit(&state, &user, "tenancy", addr, format!("tenancy {id} created")).await;

    Ok((StatusCode::CREATED, ApiJson(Invite { tenancy: Some(id), code, expires })))
}

async fn reinvite(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<ApiJson<Invite>, AppError> {
    let code = new_invite_code()?;
    let expires = state.clock.now_ms() + INVITE_TTL_MS;
    if !state.store.reinvite_tenant(id, (&code_digest(&code), user.user_id, expires)).await? {
        return Err(AppError::Conflict("that tenancy is unknown, shredded or already has its tenant"));
    }
    Ok(ApiJson(Invite { tenancy: Some(id), code, expires }))
}

async fn end_tenancy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<EndTenancy>,
) -> Result<ApiJson<Tenancy>, AppError> {
    AppError::times(&[("at", req.at)])?;
    let now = state.clock.now_ms();
    let at = req.at.unwrap_or(now + 1000);
    if at < now {
        return Err(AppError::field("at", "a tenancy cannot be ended in the past"));
    }
    let t = state.store.tenancy(id).await?.ok_or(AppError::NotFound)?;
    if t.end.is_some_and(|end| end <= now) {
        return Err(AppError::Conflict("that tenancy has already ended"));
    }
    if !state.lifecycle.end_tenancy(id, at).await? {
        return Err(AppError::Conflict("the end must be after the start and before the next tenancy"));
    }
    let t = state.store.tenancy(id).await?.ok_or(AppError::NotFound)?;
    tracing::info!(tenancy = id, end = at, "tenancy end set");
    super::scope::audit(&state, &user, "tenancy", addr, format!("tenancy {id} ends at {at}")).await;

    Ok(ApiJson(t.into()))
}

/// The tenant destroys their tenancy's data now (after it ended). Irreversible.
async fn shred(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    if user.tenancy_id != Some(id) {
        return Err(AppError::NotFound);
    }
    let now = state.clock.now_ms();
    let t = state.store.tenancy(id).await?.ok_or(AppError::NotFound)?;
    if t.end.is_none_or(|end| end > now) {
        return Err(AppError::Conflict("the tenancy has not ended yet; export first, then shred once it ends"));
    }
    // Everything of it in memory goes before this answers: the commands its rules queued
    // or kept retained (cleared on an external broker too), its own devices' sessions, a
    // bridge of theirs, their observations.
    state.lifecycle.shred_tenancy(id, now).await?;
    tracing::warn!(tenancy = id, "tenancy shredded at the tenant's request");
    // In the hub's log (the tenancy's own went with it): that it happened, nothing of it.
    state.audit.record("tenancy", None, (None, None), format!("tenancy {id} shredded by its tenant")).await;

    Ok(StatusCode::NO_CONTENT)
}

/// Anyone with an invite code becomes a tenant or guest and is logged in.
async fn accept(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<AcceptInvite>,
) -> Result<Response, AppError> {
    check_username(&req.username)?;
    check_password(&req.password)?;
    // No attempt limit: a code has about 79 random bits and lives a week, so guessing is
    // hopeless, while a limit would let anyone lock real invitees out. The code is checked
    // before the password is hashed, so a flood of made-up codes costs a lookup each.
    let now = state.clock.now_ms();
    if !state.store.invite_is_open(&code_digest(&req.code), now).await? {
        return Err(AppError::field("code", "this invite code is wrong, used or expired"));
    }
    let hash = state.passwords.hash(req.password).await?;
    let id = match state.store.accept_invite(&code_digest(&req.code), &req.username, &hash, now).await {
        Ok(id) => id,
        Err(AcceptError::BadCode) => return Err(AppError::field("code", "this invite code is wrong, used or expired")),
        Err(AcceptError::NameTaken) => return Err(AppError::field("username", "that user name is taken")),
        Err(AcceptError::Store(e)) => return Err(e.into()),
    };
    let session = state.store.user_session(id).await?.ok_or_else(|| AppError::internal("new user vanished"))?;
    tracing::info!(user = %req.username, role = ?session.role, "invite accepted");
    let detail = format!("joined as a {} with an invite", session.role.as_str());
    super::scope::audit(&state, &session, "account", addr, detail).await;

    let cookie = start_session(&state, id, now).await?;
    Ok((
        StatusCode::CREATED,
        [(SET_COOKIE, cookie)],
        ApiJson(Me { username: req.username, role: session.role, tenancy: session.tenancy_id }),
    )
        .into_response())
}

async fn guests(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<Guest>>, AppError> {
    Ok(ApiJson(state.store.guests_of(user.user_id).await?.into_iter().map(Guest::from).collect()))
}

async fn invite_guest(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<NewGuest>,
) -> Result<(StatusCode, ApiJson<Invite>), AppError> {
    if req.devices.is_empty() || req.devices.len() > 256 {
        return Err(AppError::field("devices", "choose 1-256 devices"));
    }
    let scope = Scope::of(&state, &user).await?;
    let visible = state.store.devices().await?;
    for id in &req.devices {
        if !valid_device_id(id) || !visible.iter().any(|d| &d.id == id && scope.sees(d)) {
            return Err(AppError::field("devices", format!("no device {id:?} of yours")));
        }
    }
    let code = new_invite_code()?;
    let expires = state.clock.now_ms() + INVITE_TTL_MS;
    state.store.create_guest_invite(&code_digest(&code), user.user_id, &req.devices, expires).await?;
    super::scope::audit(&state, &user, "guest", addr, format!("a guest invited, for {} device(s)", req.devices.len()))
        .await;

    Ok((StatusCode::CREATED, ApiJson(Invite { tenancy: None, code, expires })))
}

async fn remove_guest(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    if !state.store.remove_guest(user.user_id, id).await? {
        return Err(AppError::NotFound);
    }
    state.access.changed();
    super::scope::audit(&state, &user, "guest", addr, format!("guest {id} removed")).await;

    Ok(StatusCode::NO_CONTENT)
}

async fn recipients(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<Recipient>>, AppError> {
    Ok(ApiJson(state.store.recipients_of(user.user_id).await?.into_iter().map(Recipient::from).collect()))
}

async fn register_recipient(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(req): ApiJson<NewRecipient>,
) -> Result<(StatusCode, ApiJson<RecipientCredentials>), AppError> {
    if !crate::devices::valid_name(&req.name) {
        return Err(AppError::field("name", "use 1-64 printable characters"));
    }
    if !crate::devices::valid_name(&req.kind) {
        return Err(AppError::field("kind", "use 1-64 printable characters"));
    }
    let id = new_id("rc")?;
    let secret = auth::new_token()?;
    let record = RecipientRecord {
        id: id.clone(),
        name: req.name.clone(),
        kind: req.kind,
        registered_by: user.user_id,
        created: state.clock.now_ms(),
        secret_hash: auth::token_digest(&secret),
    };
    state.store.create_recipient(&record, record.created).await?;
    tracing::info!(recipient = %id, "recipient registered");
    Ok((
        StatusCode::CREATED,
        ApiJson(RecipientCredentials {
            usage: "HTTP Basic authentication (client_id:client_secret) on /api/share/...".into(),
            client_id: id.clone(),
            id,
            name: req.name,
            client_secret: secret,
        }),
    ))
}

async fn remove_recipient(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if !state.store.remove_recipient(user.user_id, &id, state.clock.now_ms()).await? {
        return Err(AppError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
