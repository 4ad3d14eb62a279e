//! First-run setup, login and logout, the current user, API tokens.

use axum::extract::{FromRequestParts, State};
use axum::http::header::SET_COOKIE;
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use hearth_model::Me;
use hearth_model::account::{Login, NewToken, Setup, SetupStatus, Token};

use super::ApiJson;
use super::routes::{EVERYONE, Route, Who};
use crate::auth::{self, CurrentUser, SetupCheck};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::Role;

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[
    Route::new("GET", "/api/setup", Who::Anyone, |m| on(m, setup_status)),
    Route::new("POST", "/api/setup", Who::Anyone, |m| on(m, setup)),
    Route::new("POST", "/api/login", Who::Anyone, |m| on(m, login)),
    Route::new("POST", "/api/logout", Who::Anyone, |m| on(m, logout)),
    Route::new("GET", "/api/me", Who::People(EVERYONE), |m| on(m, me)),
    Route::new("POST", "/api/tokens", Who::People(EVERYONE), |m| on(m, create_token)),
];

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

async fn setup(State(state): State<AppState>, ApiJson(req): ApiJson<Setup>) -> Result<Response, AppError> {
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
    tracing::info!(user = %req.username, "owner account created; setup code retired");
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
    Ok(auth::session_set_cookie(&token))
}

async fn login(State(state): State<AppState>, ApiJson(req): ApiJson<Login>) -> Result<Response, AppError> {
    let now = state.clock.now_ms();
    if !state.logins.allowed(&req.username, now) {
        return Err(AppError::TooManyRequests);
    }
    let user = state.store.user_by_name(&req.username).await?;
    let ok = state.passwords.verify(req.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let Some(user) = user.filter(|_| ok) else {
        state.logins.failed(&req.username, now);
        tracing::warn!(user = %req.username, "login failed");
        return Err(AppError::Unauthorized);
    };
    state.logins.succeeded(&req.username);
    let cookie = start_session(&state, user.id, now).await?;
    let session = state.store.user_session(user.id).await?.ok_or(AppError::Unauthorized)?;
    Ok((
        [(SET_COOKIE, cookie)],
        ApiJson(Me { username: user.username, role: session.role, tenancy: session.tenancy_id }),
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
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, auth::session_clear_cookie())]).into_response())
}

async fn me(CurrentUser(user): CurrentUser) -> ApiJson<Me> {
    ApiJson(Me { username: user.username, role: user.role, tenancy: user.tenancy_id })
}

async fn create_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, ApiJson<Token>), AppError> {
    if !crate::devices::valid_name(&req.name) {
        return Err(AppError::field("name", "use 1-64 printable characters"));
    }
    let token = auth::new_token()?;
    let id = state
        .store
        .create_api_token(user.user_id, &req.name, &auth::token_digest(&token), state.clock.now_ms())
        .await?;
    Ok((StatusCode::CREATED, ApiJson(Token { id, name: req.name, token })))
}
