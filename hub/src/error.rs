//! The one error type at the HTTP edge. Every failure becomes one JSON body
//! `{"error": "...", "fields": {...}}`; internal detail is logged, never sent.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A validation error about one field.
    pub fn field(name: &'static str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::Validation { message: format!("{name}: {problem}"), fields: BTreeMap::from([(name, problem)]) }
    }

    /// A validation error about the request as a whole.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Validation { message: message.into(), fields: BTreeMap::new() }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
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
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = match self {
            Self::Internal(_) => json!({ "error": "internal error" }),
            Self::Validation { message, fields } => json!({ "error": message, "fields": fields }),
            other => json!({ "error": other.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}
