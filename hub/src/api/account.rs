//! First-run setup, login and logout, the current user, API tokens.

use axum::extract::{FromRequestParts, State};
use axum::http::header::SET_COOKIE;
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use hearth_model::Me;
use hearth_model::account::{Login, NewToken, SecurityEvent, Setup, SetupStatus, Token, TokenInfo};

use super::ApiJson;
use super::routes::{EVERYONE, Route, Who};
use crate::auth::{self, ClientAddr, CurrentUser, SUBJECTS, SetupCheck};
use crate::consent::Subject;
use crate::error::AppError;
use crate::repeated::Repeated;
use crate::state::AppState;
use crate::store::Role;

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/setup", Who::Anyone, |m| on(m, setup_status)),
    Route::new("POST", "/api/setup", Who::Anyone, |m| on(m, setup)),
    Route::new("POST", "/api/login", Who::Anyone, |m| on(m, login)),
    Route::new("POST", "/api/logout", Who::Anyone, |m| on(m, logout)),
    Route::new("GET", "/api/me", Who::People(EVERYONE), |m| on(m, me)),
    Route::new("GET", "/api/tokens", Who::People(EVERYONE), |m| on(m, tokens)),
    Route::new("POST", "/api/tokens", Who::People(EVERYONE), |m| on(m, create_token)),
    Route::new("DELETE", "/api/tokens/{id}", Who::People(EVERYONE), |m| on(m, revoke_token)),
    Route::new("GET", "/api/security-log", Who::People(SUBJECTS), |m| on(m, security_log)),
];

/// How long an API token lasts unless asked otherwise, and at most.
const TOKEN_DAYS: u16 = 90;
const MAX_TOKEN_DAYS: u16 = 365;
const DAY_MS: i64 = 24 * 3600 * 1000;

const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;

async fn setup_status(State(state): State<AppState>) -> ApiJson<SetupStatus> {
    ApiJson(SetupStatus { setup_required: state.setup.needed() })
}

pub(super) fn check_username(name: &str) -> Result<(), AppError> {
    let n = name.chars().count();
    if !(1..=64).contains(&n) || name.trim() != name || name.chars().any(char::is_control) {
        return Err(AppError::field("username", "use 1-64 characters, no leading or trailing spaces"));
    }
    Ok(())
}

pub(super) fn check_password(password: &str) -> Result<(), AppError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(AppError::field("password", format!("use at least {MIN_PASSWORD} characters")));
    }
    if n > MAX_PASSWORD {
        return Err(AppError::field("password", format!("use at most {MAX_PASSWORD} characters")));
    }
    Ok(())
}

async fn setup(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<Setup>,
) -> Result<Response, AppError> {
    check_username(&req.username)?;
    check_password(&req.password)?;
    match state.setup.check(&req.code, &state.config.data_dir) {
        SetupCheck::Accepted => {}
        SetupCheck::Wrong => return Err(AppError::field("code", "wrong setup code")),
        SetupCheck::Replaced => {
            return Err(AppError::field(
                "code",
                "wrong setup code; too many attempts, so a new code was made (see the hub's log)",
            ));
        }
        SetupCheck::NotNeeded => return Err(AppError::Conflict("the hub is already set up")),
    }
    let hash = state.passwords.hash(req.password).await?;
    let now = state.clock.now_ms();
    let Some(user_id) = state.store.create_first_owner(&req.username, &hash, now).await? else {
        return Err(AppError::Conflict("the hub is already set up"));
    };
    state.setup.finish();
    state.known.remember(addr, Subject::Owner);
    tracing::info!(user = %req.username, "owner account created; setup code retired");
    let who = (Some(req.username.as_str()), Some(addr));
    state.audit.record("setup", Some(Subject::Owner), who, "the owner account was created".into()).await;
    let cookie = start_session(&state, user_id, now).await?;
    Ok((
        StatusCode::CREATED,
        [(SET_COOKIE, cookie)],
        ApiJson(Me { username: req.username, role: Role::Owner, tenancy: None }),
    )
        .into_response())
}

pub(super) async fn start_session(state: &AppState, user_id: i64, now: i64) -> Result<String, AppError> {
    let token = auth::new_token()?;
    state.store.create_session(&auth::token_digest(&token), user_id, now + auth::SESSION_TTL_MS).await?;
    Ok(auth::session_set_cookie(&token, state.config.http.tls))
}

/// Failed logins, counted rather than logged one by one.
static FAILED_LOGINS: Repeated = Repeated::new("login failed");

async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<Login>,
) -> Result<Response, AppError> {
    // Only names that could exist are looked at, counted or logged: bounded, and no
    // password typed into the name field lands anywhere.
    check_username(&req.username).map_err(|_| AppError::Unauthorized)?;
    let now = state.clock.now_ms();
    let user = state.store.user_by_name(&req.username).await?;
    // Whose log the attempt goes to: the user's household (a guest's host's); a name nobody
    // has, the hub's own, without the name; `None` if that cannot be told.
    let whose = match &user {
        Some(u) => super::scope::audit_subject_of(&state, u.id).await.map(|s| (Some(s), u.username.as_str())),
        None => Some((None, "")),
    };
    let fail = |kind: &'static str, detail: &'static str| {
        if let Some((subject, name)) = whose {
            state.audit.failure(kind, subject, (name, addr), detail);
        }
    };
    // Counted before the hash is computed: a burst sent at once is mostly refused unjudged.
    let attempt = state.logins.begin(&req.username, addr, now).map_err(|_| {
        fail("login refused", "too many attempts: told to wait");
        AppError::TooManyRequests
    })?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok = state.passwords.verify(req.password, hash, attempt.lane).await?;
    if !ok {
        fail("login failed", "wrong user name or password");
        if FAILED_LOGINS.log_this(addr) {
            tracing::warn!(user = %req.username, %addr, "login failed");
        }
        return Err(AppError::Unauthorized);
    }
    let (Some(user), Some((subject, _))) = (user.as_ref(), whose) else { return Err(AppError::Unauthorized) };
    state.logins.succeeded(&attempt, now);
    state.audit.record("login", subject, (Some(&user.username), Some(addr)), "logged in".into()).await;
    let cookie = start_session(&state, user.id, now).await?;
    let session = state.store.user_session(user.id).await?.ok_or(AppError::Unauthorized)?;
    if let Some(household) = super::scope::subject_of(&session) {
        state.known.remember(addr, household);
    }
    Ok((
        [(SET_COOKIE, cookie)],
        ApiJson(Me { username: user.username.clone(), role: session.role, tenancy: session.tenancy_id }),
    )
        .into_response())
}

/// The raw request parts, to read the cookie without requiring a valid session.
struct Cookie(Option<String>);

impl FromRequestParts<AppState> for Cookie {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, AppError> {
        Ok(Cookie(auth::session_cookie(parts)))
    }
}

async fn logout(State(state): State<AppState>, Cookie(token): Cookie) -> Result<Response, AppError> {
    if let Some(token) = token {
        state.store.delete_session(&auth::token_digest(&token)).await?;
        state.access.changed();
    }
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, auth::session_clear_cookie(state.config.http.tls))]).into_response())
}

async fn me(CurrentUser(user): CurrentUser) -> ApiJson<Me> {
    ApiJson(Me { username: user.username, role: user.role, tenancy: user.tenancy_id })
}

async fn create_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, ApiJson<Token>), AppError> {
    if !crate::devices::valid_name(&req.name) {
        return Err(AppError::field("name", "use 1-64 printable characters"));
    }
    let days = req.days.unwrap_or(TOKEN_DAYS);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(AppError::field("days", format!("a token lasts 1 to {MAX_TOKEN_DAYS} days")));
    }
    let token = auth::new_token()?;
    let now = state.clock.now_ms();
    let expires = now + i64::from(days) * DAY_MS;
    let id = state.store.create_api_token(user.user_id, &req.name, &auth::token_digest(&token), (now, expires)).await?;
    tracing::info!(user = %user.username, token = id, "API token created");
    let detail = format!("API token {id} ({:?}) created, for {days} days", req.name);
    super::scope::audit(&state, &user, "token", addr, detail).await;
    Ok((StatusCode::CREATED, ApiJson(Token { id, name: req.name, token, expires })))
}

/// The caller's tokens that still work (never the tokens themselves).
async fn tokens(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<TokenInfo>>, AppError> {
    let rows = state.store.api_tokens(user.user_id, state.clock.now_ms()).await?;
    Ok(ApiJson(rows.into_iter().map(|(id, name, created, expires)| TokenInfo { id, name, created, expires }).collect()))
}

/// Revokes one of the caller's tokens; what it opened (a live stream) ends with it.
async fn revoke_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Result<StatusCode, AppError> {
    if !state.store.delete_api_token(user.user_id, id).await? {
        return Err(AppError::NotFound);
    }
    state.access.changed();
    tracing::info!(user = %user.username, token = id, "API token revoked");
    super::scope::audit(&state, &user, "token", addr, format!("API token {id} revoked")).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's security log, newest first: the owner's (with the hub's own), or a
/// tenant's for their tenancy.
async fn security_log(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<ApiJson<Vec<SecurityEvent>>, AppError> {
    let subject = super::scope::subject_of(&user).ok_or(AppError::Forbidden("only owners and tenants have one"))?;
    Ok(ApiJson(state.audit.read(subject, 500).await?))
}
