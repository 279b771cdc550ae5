//! `POST /import/{dataset}`: store each document of the upload as one S3
//! object and announce it with one `FileExtractSuccess`. Companies are
//! stored while the body is still arriving; the events are published only
//! once the whole body was read and found usable, and the 202 only after
//! every event is acknowledged by the broker. A refused body is announced
//! nowhere (see [`storing::HOLD_BYTES`] for what is stored of it).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use etl_core::dataset::{Dataset, DatasetName};
use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::COMPANIES_DATASET;

use crate::error::{ApiError, ErrorResponse};
use crate::extract::{
    BodyFormat, CompanyDoc, ExtractError, Naming, SplitError, SplitLimits, split_stream,
};
use crate::idempotency::{self, Answer, Fingerprint, IdempotencyKey};
use crate::state::AppState;
use crate::upload::{self, BodyReader, Decoded, ReadFailure};

mod announce;
mod storing;

use announce::{announce, report_extract_error};
use storing::{Stored, StoredFile, hold_then_store, store_all};

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

/// `POST /import/{dataset}`: `companies`, or any dataset the api was given.
pub async fn import_dataset(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    dataset: Result<Path<String>, PathRejection>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ErrorResponse> {
    let dataset = dataset.map_or_else(|_| String::new(), |Path(name)| name);
    let known = state.settings.datasets.get(&dataset);
    let result = match known {
        Some(dataset) => accept(&state, &request_id, dataset, params, &headers, body).await,
        None => Err(ApiError::unknown_dataset(
            &dataset,
            &state.settings.datasets,
        )),
    };
    let label = known.map_or("", |d| d.name.as_str());
    state.metrics.requests(
        label,
        match &result {
            Ok(answer) if answer.replayed => "replayed",
            Ok(_) => "accepted",
            Err(e) => e.code(),
        },
    );
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
    dataset: &Dataset,
    params: ImportParams,
    headers: &HeaderMap,
    body: Body,
) -> Result<Answer<ImportAccepted>, ApiError> {
    let key = IdempotencyKey::from_headers(headers)?;
    let gzip = gzipped(headers)?;
    let format = body_format(headers)?;
    let limit = state.settings.max_body_bytes;
    if upload::declared_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let filename = params.filename.as_deref();
    let name = &dataset.name;
    let reading = Reading {
        gzip,
        format,
        fingerprint: key
            .as_ref()
            .map(|_| fingerprint(name.as_str(), format, filename)),
        naming: Naming::new(&dataset.mapping.name_field(), name.as_str()),
    };
    // A client trickling its body would otherwise hold a slot forever.
    let upload = tokio::time::timeout(
        state.settings.body_timeout,
        receive_and_store(state, name, body, reading),
    )
    .await
    .map_err(|_| ApiError::RequestTimeout {
        timeout: state.settings.body_timeout,
    })?;
    let upload = match upload {
        Ok(upload) => upload,
        Err(Refused { error, received }) => {
            if matches!(error, ApiError::Extract(_)) {
                report_extract_error(state, request_id, name, &error, received).await;
            }
            return Err(error);
        }
    };
    state.metrics.received(name.as_str(), upload.documents);
    tracing::info!(
        companies = upload.documents,
        files = upload.files.len(),
        size_bytes = upload.text_bytes,
        "upload stored"
    );
    let Some(key) = key else {
        let accepted = announce(state, request_id, name, filename, upload.files).await?;
        return Ok(Answer {
            accepted,
            replayed: false,
        });
    };
    let fingerprint = upload
        .fingerprint
        .expect("a fingerprint is taken whenever a key was sent");
    state
        .idempotency
        .run(&state.store, &key, fingerprint, || {
            announce(state, request_id, name, filename, upload.files)
        })
        .await
}

/// What identifies "the same request" besides its Idempotency-Key: its
/// dataset, format and file name (then its text, as it streams in). A
/// companies request leaves its dataset out, as before datasets, so keys
/// sent then still replay.
fn fingerprint(dataset: &str, format: BodyFormat, filename: Option<&str>) -> Fingerprint {
    let format_tag: &[u8] = match format {
        BodyFormat::Json => b"json",
        BodyFormat::NdJson => b"ndjson",
    };
    let filename = filename.unwrap_or_default().as_bytes();
    if dataset == COMPANIES_DATASET {
        Fingerprint::new(&[format_tag, filename])
    } else {
        Fingerprint::new(&[dataset.as_bytes(), format_tag, filename])
    }
}

/// How to read one upload.
struct Reading {
    gzip: bool,
    format: BodyFormat,
    fingerprint: Option<Fingerprint>,
    /// The top-level field naming each document.
    naming: Naming,
}

/// An upload read whole and every file of it stored, none announced yet.
struct Upload {
    files: Vec<StoredFile>,
    documents: usize,
    text_bytes: u64,
    fingerprint: Option<String>,
}

struct Refused {
    error: ApiError,
    /// Body bytes received (before decompression).
    received: u64,
}

/// Reads the body as it arrives, splits it on a blocking thread and stores
/// each company as soon as it is split, at most `S3_PUT_CONCURRENCY` at a
/// time, so memory holds a few documents whatever the upload's size.
async fn receive_and_store(
    state: &AppState,
    dataset: &DatasetName,
    body: Body,
    reading: Reading,
) -> Result<Upload, Refused> {
    let settings = &state.settings;
    let (chunk_tx, chunk_rx) = upload::channel();
    let (doc_tx, doc_rx) = mpsc::channel::<CompanyDoc>(settings.put_concurrency);
    let limit = settings.max_body_bytes;
    let limits = SplitLimits {
        max_depth: settings.max_json_depth,
        max_company_bytes: settings.max_company_bytes,
        naming: reading.naming.clone(),
    };
    let splitting = tokio::task::spawn_blocking(move || {
        let body = BodyReader::new(chunk_rx);
        let source: Box<dyn std::io::Read> = if reading.gzip {
            // Every member counts (`cat a.gz b.gz` is one valid gzip body).
            Box::new(flate2::read::MultiGzDecoder::new(body))
        } else {
            Box::new(body)
        };
        let mut text = Decoded::new(source, limit, reading.fingerprint);
        let split = split_stream(&mut text, reading.format, limits, |doc| {
            doc_tx.blocking_send(doc).is_ok()
        });
        (split, text.finish())
    });
    let (received, split, stored) = tokio::join!(
        upload::pump(body, chunk_tx),
        splitting,
        hold_then_store(state, dataset, doc_rx)
    );
    let refused = |error| Refused { error, received };
    let (split, (text_bytes, fingerprint)) = split.map_err(|e| {
        refused(ApiError::Internal {
            what: "the upload's splitter thread failed",
            source: Some(e.into()),
        })
    })?;
    let documents = match split {
        Ok(documents) => documents,
        // Storing failed and stopped the split: its error is the answer.
        Err(SplitError::Stopped) => {
            return Err(refused(stored.err().unwrap_or_else(|| {
                ApiError::Internal {
                    what: "the upload's split stopped without a reason",
                    source: None,
                }
            })));
        }
        Err(e) => return Err(refused(split_refusal(e, reading.gzip, limit, stored.err()))),
    };
    let files = match stored.map_err(refused)? {
        Stored::All(files) => files,
        Stored::Held(docs) => store_all(state, dataset, stream::iter(docs))
            .await
            .map_err(refused)?,
    };
    Ok(Upload {
        files,
        documents,
        text_bytes,
        fingerprint,
    })
}

/// The answer to a body the splitter refused. The client's mistakes come
/// first; a store failure is the answer only when the body was fine as far
/// as it was read.
fn split_refusal(
    e: SplitError,
    gzip: bool,
    body_limit: usize,
    stored: Option<ApiError>,
) -> ApiError {
    // Not a position in the text: the bytes under it were the problem.
    let unreadable = |message| {
        ApiError::Extract(ExtractError::InvalidEncoding {
            message,
            line: 1,
            column: 1,
        })
    };
    match e {
        SplitError::Extract(e) => ApiError::Extract(e),
        SplitError::CompanyTooLarge { place, limit } => ApiError::CompanyTooLarge { place, limit },
        SplitError::Read(io) => match upload::read_failure(&io) {
            Some(ReadFailure::TooLarge) => ApiError::PayloadTooLarge { limit: body_limit },
            Some(ReadFailure::Body(message)) => {
                unreadable(format!("the body could not be read: {message}"))
            }
            Some(ReadFailure::Abandoned) | None if stored.is_some() => {
                stored.expect("checked: storing failed")
            }
            _ if gzip => unreadable(format!("the gzip body cannot be decompressed: {io}")),
            _ => unreadable(format!("the body could not be read: {io}")),
        },
        SplitError::Stopped => unreachable!("handled by the caller"),
    }
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
