//! The events of an upload: one `FileExtractSuccess` per stored file once
//! the whole body was usable, or one `FileExtractError` for a refused one.

use futures::{StreamExt, TryStreamExt, stream};

use etl_core::dataset::DatasetName;
use etl_core::domain::RequestId;
use etl_core::events::{Envelope, Event, FileExtractError, FileExtractSuccess};

use super::ImportAccepted;
use super::storing::StoredFile;
use crate::error::ApiError;
use crate::state::AppState;

/// Publishes one `FileExtractSuccess` per stored file, in upload order,
/// and builds the answer.
pub(super) async fn announce(
    state: &AppState,
    request_id: &RequestId,
    dataset: &DatasetName,
    filename: Option<&str>,
    files: Vec<StoredFile>,
) -> Result<ImportAccepted, ApiError> {
    publish_all(state, request_id, dataset, filename, &files).await?;
    tracing::info!(files = files.len(), "import accepted");
    Ok(ImportAccepted {
        request_id: request_id.clone(),
        files: files.into_iter().map(|f| f.accepted).collect(),
    })
}

/// Enough to keep the producer's batches full.
const PUBLISHES_IN_FLIGHT: usize = 1024;

async fn publish_all(
    state: &AppState,
    request_id: &RequestId,
    dataset: &DatasetName,
    filename: Option<&str>,
    files: &[StoredFile],
) -> Result<(), ApiError> {
    // Sends are queued in order as they are first polled, many awaited
    // together; bounded so a huge upload holds neither a future nor an
    // envelope per file.
    stream::iter(0..files.len())
        .map(|i| {
            let envelope = success_envelope(state, request_id, dataset, filename, &files[i]);
            async move { state.publisher.publish(&envelope).await }
        })
        .buffered(PUBLISHES_IN_FLIGHT)
        .try_for_each(|_| std::future::ready(Ok(())))
        .await
        .map_err(ApiError::from)
}

fn success_envelope(
    state: &AppState,
    request_id: &RequestId,
    dataset: &DatasetName,
    filename: Option<&str>,
    file: &StoredFile,
) -> Envelope {
    let a = &file.accepted;
    Envelope::new(
        request_id.clone(),
        Some(a.company.clone()),
        Some(dataset.clone()),
        Event::FileExtractSuccess(FileExtractSuccess {
            file_id: a.file_id,
            filename: filename
                .map(|n| n.chars().take(255).collect())
                .unwrap_or_else(|| format!("{}.json", a.file_id)),
            s3_bucket: state.store.bucket().to_owned(),
            s3_key: a.s3_key.clone(),
            size_bytes: a.size_bytes,
            sha256: file.sha256.clone(),
            etag: a.etag.clone(),
            replay: false,
        }),
    )
}

/// Announces an upload that could not be extracted. Best effort: the client
/// already gets the error, so a broker outage is logged, not escalated.
pub(super) async fn report_extract_error(
    state: &AppState,
    request_id: &RequestId,
    dataset: &DatasetName,
    error: &ApiError,
    size: u64,
) {
    let (line, column) = match error {
        ApiError::Extract(e) => e.position().unzip(),
        _ => (None, None),
    };
    let envelope = Envelope::new(
        request_id.clone(),
        None,
        Some(dataset.clone()),
        Event::FileExtractError(FileExtractError {
            reason: error.code().into(),
            message: error.short_message(),
            line,
            column,
            size_bytes: size,
        }),
    );
    if let Err(e) = state.publisher.publish(&envelope).await {
        tracing::warn!(error.cause_chain = %e, "could not publish FileExtractError");
    }
}
