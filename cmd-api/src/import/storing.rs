//! Each company of an upload stored as one S3 object, in upload order, a
//! few at a time, identical documents once.

use std::collections::HashSet;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use etl_core::dataset::DatasetName;
use etl_core::domain::FileId;
use etl_core::storage::file_key;

use super::AcceptedFile;
use crate::error::ApiError;
use crate::extract::CompanyDoc;
use crate::state::AppState;

/// A document stored in S3, with what its announcement needs.
pub(super) struct StoredFile {
    pub(super) accepted: AcceptedFile,
    pub(super) sha256: String,
}

/// Documents of an upload held back before any is stored: a body refused
/// within its first few MiB (nearly every refused body) stores nothing.
/// Past this the upload streams, and a body refused later leaves the objects
/// stored before its problem unannounced in the bucket.
pub(super) const HOLD_BYTES: usize = 4 * 1024 * 1024;

pub(super) enum Stored {
    /// Every document, stored.
    All(Vec<StoredFile>),
    /// The whole upload fit in the hold: nothing stored yet.
    Held(Vec<CompanyDoc>),
}

pub(super) async fn hold_then_store(
    state: &AppState,
    dataset: &DatasetName,
    mut docs: mpsc::Receiver<CompanyDoc>,
) -> Result<Stored, ApiError> {
    let mut held = Vec::new();
    let mut held_bytes = 0;
    while held_bytes <= HOLD_BYTES {
        let Some(doc) = docs.recv().await else {
            return Ok(Stored::Held(held));
        };
        held_bytes += doc.bytes.len();
        held.push(doc);
    }
    let rest = stream::unfold(
        docs,
        |mut rx| async move { rx.recv().await.map(|d| (d, rx)) },
    );
    store_all(state, dataset, stream::iter(held).chain(rest))
        .await
        .map(Stored::All)
}

/// Stores each document as it comes, identical documents of one upload
/// once.
pub(super) async fn store_all(
    state: &AppState,
    dataset: &DatasetName,
    docs: impl Stream<Item = CompanyDoc>,
) -> Result<Vec<StoredFile>, ApiError> {
    let mut seen = HashSet::new();
    docs.filter_map(|doc| {
        let sha: [u8; 32] = Sha256::digest(&doc.bytes).into();
        let id = FileId::for_content(&doc.company, &sha);
        std::future::ready(seen.insert(id).then_some((doc, sha, id)))
    })
    .map(|(doc, sha, file_id)| async move {
        let key = file_key(dataset.as_str(), &doc.company, file_id);
        let size = doc.bytes.len() as u64;
        let stored = state.store.put(&key, doc.bytes).await?;
        state.metrics.stored(dataset.as_str(), size);
        tracing::info!(
            %file_id,
            company = doc.company.as_str(),
            s3_key = %key,
            size_bytes = size,
            "file stored"
        );
        Ok(StoredFile {
            accepted: AcceptedFile {
                file_id,
                company: doc.company,
                s3_key: key,
                etag: stored.etag,
                size_bytes: size,
            },
            sha256: hex::encode(sha),
        })
    })
    // `buffered` keeps upload order, so events of one company are
    // published in the order the client sent them.
    .buffered(state.settings.put_concurrency)
    .try_collect()
    .await
}
