//! `Idempotency-Key`: a request repeated with the same key gets the original
//! answer (same `request_id`, same files) instead of a second import.
//!
//! The answer is kept in S3 next to the files, under
//! `_idempotency/{sha256(key)}.json` (no company slug starts with `_`), so
//! every api instance finds it. Requests with one key are serialised within
//! an instance, which makes concurrent repeats wait for the first and get
//! its answer. Across instances, two concurrent first requests may both
//! import; the files are content-addressed, so they are still loaded once.
//!
//! The upload is streamed, so its fingerprint is known only once it has
//! been read and its files stored: a repeat stores the same objects again
//! (same keys, same bytes) and then gets the recorded answer, without a
//! second announcement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use etl_core::storage::{ObjectStore, StoreError};

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const MAX_LEN: usize = 255;

/// A client's idempotency key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The request's key, if it sent one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let key = value.to_str().unwrap_or_default();
        let ok =
            !key.is_empty() && key.len() <= MAX_LEN && key.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(ApiError::InvalidIdempotencyKey(format!(
                "Idempotency-Key must be 1 to {MAX_LEN} visible ASCII characters (a UUID is a good choice)"
            )));
        }
        Ok(Some(Self(key.to_owned())))
    }

    fn object_key(&self) -> String {
        format!("_idempotency/{}.json", hex::encode(Sha256::digest(&self.0)))
    }
}

/// What identifies "the same request" besides the key: the request's
/// parameters, then the upload's text, hashed as it streams in.
pub struct Fingerprint(Sha256);

impl Fingerprint {
    /// `parameters` are framed by their lengths; the text follows them.
    pub fn new(parameters: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for part in parameters {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Self(hasher)
    }

    pub fn update(&mut self, text: &[u8]) {
        self.0.update(text);
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// What is kept under a key: the request's fingerprint and its answer.
#[derive(Serialize, Deserialize)]
struct Record<A> {
    fingerprint: String,
    response: A,
}

/// An answer, and whether it is a replay of an earlier one.
pub struct Answer<A> {
    pub accepted: A,
    pub replayed: bool,
}

/// Per-key locks of the requests in flight on this instance.
#[derive(Clone, Default)]
pub struct Idempotency {
    in_flight: Arc<Mutex<HashMap<IdempotencyKey, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Idempotency {
    /// Replays the answer recorded for `key`, or runs `import` and records
    /// its answer. Errors are not recorded: the client may retry them.
    pub async fn run<A, F, Fut>(
        &self,
        store: &ObjectStore,
        key: &IdempotencyKey,
        fingerprint: String,
        import: F,
    ) -> Result<Answer<A>, ApiError>
    where
        A: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<A, ApiError>>,
    {
        let lock = self
            .in_flight
            .lock()
            .expect("lock not poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _turn = lock.lock().await;
            replay_or_import(store, key, fingerprint, import).await
        };
        let mut in_flight = self.in_flight.lock().expect("lock not poisoned");
        // Only the map and this request still hold it: nobody is waiting.
        if Arc::strong_count(&lock) == 2 {
            in_flight.remove(key);
        }
        result
    }
}

async fn replay_or_import<A, F, Fut>(
    store: &ObjectStore,
    key: &IdempotencyKey,
    fingerprint: String,
    import: F,
) -> Result<Answer<A>, ApiError>
where
    A: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<A, ApiError>>,
{
    let object = key.object_key();
    match store.get(&object).await {
        Ok(bytes) => match serde_json::from_slice::<Record<A>>(&bytes) {
            Ok(record) if record.fingerprint == fingerprint => {
                return Ok(Answer {
                    accepted: record.response,
                    replayed: true,
                });
            }
            Ok(_) => return Err(ApiError::IdempotencyKeyReused),
            // Unreadable (written by an incompatible version): importing
            // again is safe, files are content-addressed.
            Err(e) => tracing::warn!(error = %e, "unreadable idempotency record; importing"),
        },
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let accepted = import().await?;
    let record = Record {
        fingerprint,
        response: &accepted,
    };
    let body = serde_json::to_vec(&record).expect("a record serialises");
    store.put(&object, body).await?;
    Ok(Answer {
        accepted,
        replayed: false,
    })
}
