//! The API's one table of routes: method, path, who may call it, and the handler. The
//! router is built from it, a gate in front of every handler lets through only the callers
//! its row names, and the authorization matrix test checks each row against every kind of
//! caller. Handlers still decide what a caller may do with a particular device, tenancy or
//! rule.

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};

use crate::auth::{CurrentRecipient, CurrentUser};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Anyone, logged in or not (health, setup, login, public keys).
    Anyone,
    /// A logged-in person with one of these roles.
    People(&'static [Role]),
    /// A registered recipient, with its client credentials.
    Recipient,
}

/// Everyone who lives in or looks at the home.
pub const EVERYONE: &[Role] = &[Role::Owner, Role::Tenant, Role::Guest];
/// The people whose data this is.
pub const SUBJECTS: &[Role] = crate::auth::SUBJECTS;
pub const OWNER: &[Role] = &[Role::Owner];
pub const TENANT: &[Role] = &[Role::Tenant];

/// One route.
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    pub path: &'static str,
    pub who: Who,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl Route {
    /// A row of the table: `handler` is given the method to answer on.
    pub const fn new(
        method: &'static str,
        path: &'static str,
        who: Who,
        handler: fn(MethodFilter) -> MethodRouter<AppState>,
    ) -> Self {
        Self { method, path, who, handler }
    }

    /// The handler behind its gate.
    pub(super) fn method_router(&self, state: &AppState) -> MethodRouter<AppState> {
        let filter = match self.method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            _ => MethodFilter::DELETE,
        };
        (self.handler)(filter).route_layer(from_fn_with_state((state.clone(), self.who), gate))
    }
}

/// Lets through only the callers `who` names: 401 for no or bad credentials, 403 for the
/// wrong kind of caller. The caller found is handed on to the handler.
async fn gate(State((state, who)): State<(AppState, Who)>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let checked: Result<(), AppError> = match who {
        Who::Anyone => Ok(()),
        Who::People(roles) => match CurrentUser::from_request_parts(&mut parts, &state).await {
            Ok(user) if roles.contains(&user.0.role) => {
                parts.extensions.insert(user);
                Ok(())
            }
            Ok(_) => Err(AppError::Forbidden("your role may not do this")),
            Err(error) => Err(error),
        },
        Who::Recipient => match CurrentRecipient::from_request_parts(&mut parts, &state).await {
            Ok(recipient) => {
                parts.extensions.insert(recipient);
                Ok(())
            }
            Err(error) => Err(error),
        },
    };
    match checked {
        Ok(()) => {
            // An owner's or a tenant's address proved itself: it keeps places strangers
            // cannot take (a guest's or a recipient's does not).
            if let Some(user) = parts.extensions.get::<CurrentUser>()
                && let Some(household) = super::scope::subject_of(&user.0)
                && let Some(peer) = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            {
                state.known.remember(peer.0.ip(), household);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(error) => error.into_response(),
    }
}

/// Whether a caller of this kind gets past the gate: `None` for an anonymous caller,
/// `Some(None)` for a recipient, `Some(Some(role))` for a person.
pub fn lets_through(who: Who, caller: Option<Option<Role>>) -> bool {
    match (who, caller) {
        (Who::Anyone, _) => true,
        (Who::People(roles), Some(Some(role))) => roles.contains(&role),
        (Who::Recipient, Some(None)) => true,
        _ => false,
    }
}
