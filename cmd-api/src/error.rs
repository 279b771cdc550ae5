//! The api's errors and the one place where they become HTTP answers.
//!
//! Policy: every error is JSON `{"error": {"code", "message", ...}, "request_id"}`
//! with a message a person can act on. Dependency failures are logged with
//! their causes here, once, and answered as `503 dependency_unavailable`
//! without internals: nothing was acknowledged, so retrying is safe. A
//! failure of the api itself is `500 internal_error`, logged the same way:
//! "retry later" would be a false promise for a bug.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use etl_core::bus::BusError;
use etl_core::cause_chain;
use etl_core::domain::RequestId;
use etl_core::storage::StoreError;

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
        source: BoxError,
    },
    /// The api's own failure (a bug): `what` and the causes are logged,
    /// the answer names neither.
    #[error(
        "the api failed on its side and acknowledged nothing; this is logged, report it with the request id"
    )]
    Internal {
        what: &'static str,
        source: Option<BoxError>,
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
    #[error("there is no dataset {name:?}; the api imports: {}", known.join(", "))]
    UnknownDataset { name: String, known: Vec<String> },
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::DependencyUnavailable {
            dependency: "s3",
            source: e.into(),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        ApiError::DependencyUnavailable {
            dependency: "kafka",
            source: e.into(),
        }
    }
}

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Extract(ExtractError::InvalidJson { .. }) => "invalid_json",
            ApiError::Extract(ExtractError::NoUsableDocument { code, .. }) => code,
            ApiError::Extract(ExtractError::InvalidEncoding { .. }) => "invalid_encoding",
            ApiError::Extract(ExtractError::TooDeep { .. }) => "too_deep",
            ApiError::Extract(ExtractError::DuplicateKey { .. }) => "duplicate_key",
            ApiError::PayloadTooLarge { .. } | ApiError::CompanyTooLarge { .. } => {
                "payload_too_large"
            }
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::DependencyUnavailable { .. } => "dependency_unavailable",
            ApiError::Internal { .. } => "internal_error",
            ApiError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::NotFound(_) => "not_found",
            ApiError::UnknownDataset { .. } => "unknown_dataset",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Extract(ExtractError::NoUsableDocument { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Extract(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } | ApiError::CompanyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::DependencyUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InvalidIdempotencyKey(_) => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) | ApiError::UnknownDataset { .. } => StatusCode::NOT_FOUND,
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

    /// The answer to a dataset name the api does not know (any text a
    /// client put in the path, shortened for the message).
    pub fn unknown_dataset(name: &str, datasets: &etl_core::dataset::Datasets) -> Self {
        ApiError::UnknownDataset {
            name: name.chars().take(80).collect(),
            known: datasets.names().into_iter().map(str::to_owned).collect(),
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
            ApiError::Extract(ExtractError::NoUsableDocument { problems, .. })
                if !problems.is_empty() =>
            {
                body["problems"] = json!(problems);
            }
            ApiError::PayloadTooLarge { limit } | ApiError::CompanyTooLarge { limit, .. } => {
                body["limit_bytes"] = json!(limit)
            }
            ApiError::UnknownDataset { known, .. } => body["datasets"] = json!(known),
            ApiError::DependencyUnavailable { dependency, source } => {
                tracing::error!(
                    request_id = %self.request_id,
                    dependency,
                    error.cause_chain = %cause_chain(&**source),
                    "dependency unavailable, answering 503"
                );
                body["dependency"] = json!(dependency);
            }
            ApiError::Internal { what, source } => {
                let chain = source
                    .as_deref()
                    .map_or_else(String::new, |e| cause_chain(e));
                tracing::error!(
                    request_id = %self.request_id,
                    what,
                    error.cause_chain = %chain,
                    "the api failed, answering 500"
                );
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

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::Value;

    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, Option<HeaderValue>, Value) {
        let response = error
            .with_request_id(RequestId::parse("req-1").unwrap())
            .into_response();
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_bug_is_a_500_that_names_no_internals_and_promises_no_retry() {
        let (status, retry_after, body) = answer(ApiError::Internal {
            what: "the upload's splitter thread failed",
            source: Some("index out of bounds in split.rs".into()),
        })
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["code"], "internal_error");
        assert_eq!(body["request_id"], "req-1");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("split"), "{message}");
    }

    #[tokio::test]
    async fn a_store_failure_is_a_503_naming_s3_with_its_cause_kept_as_source() {
        let error = ApiError::from(StoreError::Unavailable {
            operation: "PutObject",
            message: "connection refused".into(),
        });
        let source = std::error::Error::source(&error).expect("the cause is kept");
        assert_eq!(
            source.to_string(),
            "S3 PutObject failed: connection refused"
        );
        let (status, retry_after, body) = answer(error).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.unwrap(), RETRY_AFTER_SECS);
        assert_eq!(body["error"]["code"], "dependency_unavailable");
        assert_eq!(body["error"]["dependency"], "s3");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("refused"), "{message}");
    }

    #[test]
    fn a_cause_chain_names_every_cause() {
        let error = ApiError::from(StoreError::Unavailable {
            operation: "GetObject",
            message: "timed out".into(),
        });
        assert_eq!(
            cause_chain(&error),
            "s3 is unavailable; nothing was acknowledged, retry later: S3 GetObject failed: timed out"
        );
    }
}
