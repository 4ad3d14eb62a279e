//! The one error type at the HTTP edge. Every failure becomes one JSON body
//! `{"error": "...", "fields": {...}}`; internal detail is logged, never sent.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_model::ErrorBody;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{message}")]
    Validation { message: String, fields: BTreeMap<&'static str, String> },
    #[error("too many attempts; try again later")]
    TooManyRequests,
    /// Something went wrong inside the hub; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// Any error, kept with its chain of causes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error and its causes in one line, outermost first: `a: b: c`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        // Wrappers that print their source (`{0}`) would repeat it.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

impl AppError {
    /// A validation error about one field.
    pub fn field(name: &'static str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::Validation { message: format!("{name}: {problem}"), fields: BTreeMap::from([(name, problem)]) }
    }

    /// Checks the times a request gives (see [`crate::clock::LATEST_MS`]).
    pub fn times(times: &[(&'static str, Option<i64>)]) -> Result<(), Self> {
        match times.iter().find(|(_, t)| t.is_some_and(|t| !crate::clock::valid_ms(t))) {
            Some((name, _)) => Err(Self::field(name, "must be a time from 1970 to 9999, in ms since the epoch")),
            None => Ok(()),
        }
    }

    /// A validation error about the request as a whole.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Validation { message: message.into(), fields: BTreeMap::new() }
    }

    pub fn internal(e: impl Into<BoxError>) -> Self {
        Self::Internal(e.into())
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        Self::Internal(Box::new(e))
    }
}

/// Unreadable JSON is a bad request; readable JSON of the wrong shape is a validation error.
impl From<JsonRejection> for AppError {
    fn from(e: JsonRejection) -> Self {
        match e {
            JsonRejection::JsonDataError(_) => Self::invalid(e.body_text()),
            _ => Self::BadRequest(e.body_text()),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(e: QueryRejection) -> Self {
        Self::invalid(e.body_text())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(cause) => {
                tracing::error!(error = %chain(cause.as_ref()), "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = match self {
            Self::Internal(_) => ErrorBody { error: "internal error".into(), fields: BTreeMap::new() },
            Self::Validation { message, fields } => ErrorBody {
                error: message,
                fields: fields.into_iter().map(|(name, problem)| (name.to_owned(), problem)).collect(),
            },
            other => ErrorBody { error: other.to_string(), fields: BTreeMap::new() },
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the rules")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let io = std::io::Error::other("disk full");
        assert_eq!(chain(&Outer(io)), "reading the rules: disk full");
        let store = StoreError::Corrupt("bad row".into());
        assert_eq!(chain(&store), "stored data is malformed: bad row");
    }

    #[tokio::test]
    async fn an_internal_error_answers_without_its_cause() {
        let error = AppError::from(StoreError::Corrupt("SELECT secret FROM keys".into()));
        assert!(std::error::Error::source(&error).is_some(), "the cause is kept for the log");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap_or_default();
        assert_eq!(&body[..], br#"{"error":"internal error"}"#);
    }
}
