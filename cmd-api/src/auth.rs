//! Optional API keys for the import route (`API_KEYS`), sent as
//! `Authorization: Bearer <key>`. Probes, metrics and unknown routes stay
//! open: the orchestrator and Prometheus have no key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use etl_core::config::Secret;

use crate::error::ApiError;

/// The accepted keys, kept as SHA-256 digests so that every comparison is
/// of 32 bytes, whatever the length of what a client sent.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Arc<Vec<[u8; 32]>>,
}

impl ApiKeys {
    pub fn new(keys: &[Secret]) -> Self {
        Self {
            digests: Arc::new(keys.iter().map(|k| digest(k.expose())).collect()),
        }
    }

    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared, each
    /// in constant time, so the time taken tells nothing about them.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let mut matched = false;
        for key in self.digests.iter() {
            matched |= constant_time_eq(key, &presented);
        }
        matched
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keeps the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

/// Middleware of the import route: 401 `unauthorized` unless the request
/// carries one of the keys (when any are configured).
pub async fn require_key(State(keys): State<ApiKeys>, req: Request, next: Next) -> Response {
    if !keys.required() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(key) if keys.accepts(key) => next.run(req).await,
        presented => ApiError::Unauthorized {
            key_sent: presented.is_some(),
        }
        .with_request_id(crate::request_id::of(&req))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_keys_are_accepted() {
        let keys = ApiKeys::new(&[Secret::new("first-key"), Secret::new("second-key")]);
        assert!(keys.required());
        assert!(keys.accepts("first-key"));
        assert!(keys.accepts("second-key"));
        for wrong in [
            "",
            "first-ke",
            "first-key ",
            "FIRST-KEY",
            "second-key-and-more",
        ] {
            assert!(!keys.accepts(wrong), "{wrong:?}");
        }
        assert!(!ApiKeys::default().required());
    }
}
