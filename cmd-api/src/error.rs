//! The api's errors and the one place where they become HTTP answers.
//!
//! Policy: every error is JSON `{"error": {"code", "message", ...}, "request_id"}`
//! with a message a person can act on. Dependency failures are logged with
//! their cause here, once, and answered as `503 dependency_unavailable`
//! without internals: nothing was acknowledged, so retrying is safe.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use etl_core::domain::RequestId;

use crate::extract::ExtractError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body cannot be split into company documents (400 / 422).
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error(
        "{place} is one company document of more than {limit} bytes, the limit for one company; split it, or raise MAX_COMPANY_BYTES"
    )]
    CompanyTooLarge { place: String, limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{dependency} is unavailable; nothing was acknowledged, retry later")]
    DependencyUnavailable {
        dependency: &'static str,
        cause: String,
    },
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    #[error(
        "this Idempotency-Key was first used for a different request; send a new key for a different import"
    )]
    IdempotencyKeyReused,
    #[error("{}", if *key_sent {
        "the API key is not valid; send one of the configured keys as `Authorization: Bearer <key>`"
    } else {
        "this api requires an API key: send `Authorization: Bearer <key>`"
    })]
    Unauthorized { key_sent: bool },
    #[error(
        "the upload did not arrive within {} s; send it faster or in smaller parts",
        .timeout.as_secs_f64()
    )]
    RequestTimeout { timeout: std::time::Duration },
    #[error("the api is handling {limit} imports already; retry after the time in Retry-After")]
    Overloaded { limit: usize },
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
}

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Extract(ExtractError::InvalidJson { .. }) => "invalid_json",
            ApiError::Extract(ExtractError::MissingCompany { .. }) => "missing_company",
            ApiError::Extract(ExtractError::InvalidEncoding { .. }) => "invalid_encoding",
            ApiError::Extract(ExtractError::TooDeep { .. }) => "too_deep",
            ApiError::Extract(ExtractError::DuplicateKey { .. }) => "duplicate_key",
            ApiError::PayloadTooLarge { .. } | ApiError::CompanyTooLarge { .. } => {
                "payload_too_large"
            }
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::DependencyUnavailable { .. } => "dependency_unavailable",
            ApiError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Extract(ExtractError::MissingCompany { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Extract(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } | ApiError::CompanyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::DependencyUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidIdempotencyKey(_) => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The message without the location suffix, for events that carry
    /// line and column as separate fields.
    pub fn short_message(&self) -> String {
        match self {
            ApiError::Extract(
                ExtractError::InvalidJson { message, .. }
                | ExtractError::InvalidEncoding { message, .. },
            ) => message.clone(),
            other => other.to_string(),
        }
    }

    pub fn with_request_id(self, request_id: RequestId) -> ErrorResponse {
        ErrorResponse {
            error: self,
            request_id,
        }
    }
}

/// An [`ApiError`] answered on behalf of one request.
#[derive(Debug)]
pub struct ErrorResponse {
    pub error: ApiError,
    pub request_id: RequestId,
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let e = &self.error;
        let mut body = json!({"code": e.code(), "message": e.to_string()});
        if let ApiError::Extract(extract) = e
            && let Some((line, column)) = extract.position()
        {
            body["line"] = json!(line);
            body["column"] = json!(column);
        }
        match e {
            ApiError::Extract(ExtractError::TooDeep { limit, .. }) => {
                body["limit"] = json!(limit);
            }
            ApiError::Extract(ExtractError::DuplicateKey { key, path, .. }) => {
                body["key"] = json!(key);
                body["path"] = json!(path);
            }
            ApiError::Extract(ExtractError::MissingCompany { problems, .. })
                if !problems.is_empty() =>
            {
                body["problems"] = json!(problems);
            }
            ApiError::PayloadTooLarge { limit } | ApiError::CompanyTooLarge { limit, .. } => {
                body["limit_bytes"] = json!(limit)
            }
            ApiError::DependencyUnavailable { dependency, cause } => {
                tracing::error!(
                    request_id = %self.request_id,
                    dependency,
                    error.cause_chain = %cause,
                    "dependency unavailable, answering 503"
                );
                body["dependency"] = json!(dependency);
            }
            _ => {}
        }
        let mut response = (
            e.status(),
            Json(json!({"error": body, "request_id": self.request_id})),
        )
            .into_response();
        if matches!(e, ApiError::Unauthorized { .. }) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(
            e,
            ApiError::DependencyUnavailable { .. } | ApiError::Overloaded { .. }
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
