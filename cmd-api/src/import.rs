//! `POST /import/companies`: store each company of the upload as one S3
//! object and announce it with one `FileExtractSuccess`. The 202 is sent only
//! after every object is stored and every event acknowledged by the broker.

use std::collections::HashSet;
use std::io::Read;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::{COMPANIES_DATASET, Envelope, Event, FileExtractError, FileExtractSuccess};
use etl_core::storage::company_file_key;

use crate::app::AppState;
use crate::error::{ApiError, ErrorResponse};
use crate::extract::{BodyFormat, CompanyDoc, ExtractError, split};
use crate::idempotency::{self, Answer, IdempotencyKey};
use crate::settings::ApiSettings;

#[derive(Debug, Deserialize)]
pub struct ImportParams {
    /// Name of the uploaded file, recorded in the events.
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportAccepted {
    pub request_id: RequestId,
    pub files: Vec<AcceptedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AcceptedFile {
    pub file_id: FileId,
    pub company: CompanySlug,
    pub s3_key: String,
    pub etag: String,
    pub size_bytes: u64,
}

pub async fn import_companies(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ErrorResponse> {
    let result = accept(&state, &request_id, params, &headers, body).await;
    state.metrics.requests(match &result {
        Ok(answer) if answer.replayed => "replayed",
        Ok(_) => "accepted",
        Err(e) => e.code(),
    });
    match result {
        Ok(answer) => {
            let mut response = (StatusCode::ACCEPTED, Json(answer.accepted)).into_response();
            if answer.replayed {
                response.headers_mut().insert(
                    idempotency::REPLAYED_HEADER,
                    HeaderValue::from_static("true"),
                );
            }
            Ok(response)
        }
        Err(e) => Err(e.with_request_id(request_id)),
    }
}

async fn accept(
    state: &AppState,
    request_id: &RequestId,
    params: ImportParams,
    headers: &HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
    let key = IdempotencyKey::from_headers(headers)?;
    let gzip = gzipped(headers)?;
    let format = body_format(headers)?;
    let raw = receive(body, headers, &state.settings).await?;
    let bytes = match decode(raw, gzip, state.settings.max_body_bytes) {
        Ok(bytes) => bytes,
        Err((e, received)) => {
            if matches!(e, ApiError::Extract(_)) {
                report_extract_error(state, request_id, &e, received).await;
            }
            return Err(e);
        }
    };
    let filename = params.filename.as_deref();
    let Some(key) = key else {
        let accepted = import(state, request_id, filename, format, bytes).await?;
        return Ok(Answer {
            accepted,
            replayed: false,
        });
    };
    let format_tag: &[u8] = match format {
        BodyFormat::Json => b"json",
        BodyFormat::NdJson => b"ndjson",
    };
    let fingerprint =
        idempotency::fingerprint(&[format_tag, filename.unwrap_or_default().as_bytes(), &bytes]);
    state
        .idempotency
        .run(&state.store, &key, fingerprint, || {
            import(state, request_id, filename, format, bytes)
        })
        .await
}

async fn import(
    state: &AppState,
    request_id: &RequestId,
    filename: Option<&str>,
    format: BodyFormat,
    bytes: Vec<u8>,
) -> Result<ImportAccepted, ApiError> {
    let docs = match split(&bytes, format, state.settings.max_json_depth) {
        Ok(docs) => docs,
        Err(e) => {
            let error = ApiError::from(e);
            report_extract_error(state, request_id, &error, bytes.len()).await;
            return Err(error);
        }
    };
    state.metrics.received(docs.len());
    tracing::info!(
        companies = docs.len(),
        size_bytes = bytes.len(),
        "upload parsed"
    );
    let files = store_all(state, dedup(docs)).await?;
    publish_all(state, request_id, filename, &files).await?;
    tracing::info!(files = files.len(), "import accepted");
    Ok(ImportAccepted {
        request_id: request_id.clone(),
        files: files.into_iter().map(|f| f.accepted).collect(),
    })
}

/// Whether the body is gzipped; any encoding but gzip or none is refused.
fn gzipped(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(encoding) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let enc = encoding.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match enc.as_str() {
        "gzip" => Ok(true),
        "identity" | "" => Ok(false),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {enc:?} is not supported; send gzip or no encoding"
        ))),
    }
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
            Ok(BodyFormat::NdJson)
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {other:?} is not supported; send application/json or application/x-ndjson"
        ))),
    }
}

/// The body as sent, refused early when it is declared or turns out larger
/// than the limit, or trickles in slower than the body timeout allows.
async fn receive(
    body: Body,
    headers: &HeaderMap,
    settings: &ApiSettings,
) -> Result<axum::body::Bytes, ApiError> {
    let limit = settings.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    // A client trickling its body would otherwise hold a slot forever.
    tokio::time::timeout(settings.body_timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout {
            timeout: settings.body_timeout,
        })?
        .map_err(|e| {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::Extract(ExtractError::InvalidEncoding {
                    message: format!("the body could not be read: {e}"),
                    line: 1,
                    column: 1,
                })
            }
        })
}

/// The body's text: gunzipped when sent with `Content-Encoding: gzip`. On
/// error, also the size received.
fn decode(raw: axum::body::Bytes, gzip: bool, limit: usize) -> Result<Vec<u8>, (ApiError, usize)> {
    if !gzip {
        return Ok(raw.into());
    }
    // Decompress at most limit+1 bytes: a gzip bomb stops there. Every
    // member counts (`cat a.gz b.gz` is one valid gzip body).
    let mut out = Vec::new();
    let decoded = flate2::read::MultiGzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out);
    if let Err(e) = decoded {
        let error = ExtractError::InvalidEncoding {
            message: format!("the gzip body cannot be decompressed: {e}"),
            line: 1,
            column: 1,
        };
        return Err((error.into(), raw.len()));
    }
    if out.len() > limit {
        return Err((ApiError::PayloadTooLarge { limit }, raw.len()));
    }
    Ok(out)
}

/// Identical documents of one upload are one file.
fn dedup(docs: Vec<CompanyDoc>) -> Vec<(CompanyDoc, [u8; 32], FileId)> {
    let mut seen = HashSet::new();
    docs.into_iter()
        .filter_map(|doc| {
            let sha: [u8; 32] = Sha256::digest(&doc.bytes).into();
            let id = FileId::for_content(&doc.company, &sha);
            seen.insert(id).then_some((doc, sha, id))
        })
        .collect()
}

struct StoredFile {
    accepted: AcceptedFile,
    sha256: String,
}

async fn store_all(
    state: &AppState,
    docs: Vec<(CompanyDoc, [u8; 32], FileId)>,
) -> Result<Vec<StoredFile>, ApiError> {
    stream::iter(docs)
        .map(|(doc, sha, file_id)| async move {
            let key = company_file_key(&doc.company, file_id);
            let size = doc.bytes.len() as u64;
            let stored = state.store.put(&key, doc.bytes).await.map_err(|e| {
                ApiError::DependencyUnavailable {
                    dependency: "s3",
                    cause: e.to_string(),
                }
            })?;
            state.metrics.stored(size);
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

async fn publish_all(
    state: &AppState,
    request_id: &RequestId,
    filename: Option<&str>,
    files: &[StoredFile],
) -> Result<(), ApiError> {
    let envelopes: Vec<Envelope> = files
        .iter()
        .map(|f| {
            let a = &f.accepted;
            Envelope::new(
                request_id.clone(),
                Some(a.company.clone()),
                Event::FileExtractSuccess(FileExtractSuccess {
                    file_id: a.file_id,
                    filename: filename
                        .map(|n| n.chars().take(255).collect())
                        .unwrap_or_else(|| format!("{}.json", a.file_id)),
                    s3_bucket: state.store.bucket().to_owned(),
                    s3_key: a.s3_key.clone(),
                    size_bytes: a.size_bytes,
                    sha256: f.sha256.clone(),
                    etag: a.etag.clone(),
                    dataset: COMPANIES_DATASET.into(),
                    replay: false,
                }),
            )
        })
        .collect();
    // All sends are queued in order on first poll, then awaited together.
    let results =
        futures::future::join_all(envelopes.iter().map(|e| state.publisher.publish(e))).await;
    for result in results {
        result.map_err(|e| ApiError::DependencyUnavailable {
            dependency: "kafka",
            cause: e.to_string(),
        })?;
    }
    Ok(())
}

/// Announces an upload that could not be extracted. Best effort: the client
/// already gets the error, so a broker outage is logged, not escalated.
async fn report_extract_error(
    state: &AppState,
    request_id: &RequestId,
    error: &ApiError,
    size: usize,
) {
    let (line, column) = match error {
        ApiError::Extract(e) => e.position().unzip(),
        _ => (None, None),
    };
    let envelope = Envelope::new(
        request_id.clone(),
        None,
        Event::FileExtractError(FileExtractError {
            reason: error.code().into(),
            message: error.short_message(),
            line,
            column,
            size_bytes: size as u64,
        }),
    );
    if let Err(e) = state.publisher.publish(&envelope).await {
        tracing::warn!(error.cause_chain = %e, "could not publish FileExtractError");
    }
}
