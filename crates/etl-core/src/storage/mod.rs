//! The object store (AWS S3, MinIO, or the local SeaweedFS), spoken to over
//! plain HTTP with SigV4 signatures: the few S3 calls the pipeline makes do
//! not need an SDK, and the SDK cost twice the CPU of the whole request
//! path per PUT (docs/performance.md).

mod client;
mod sigv4;
mod xml;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Url};
use tracing::Instrument;

use crate::config::{ConfigError, Env, Secret};
use crate::domain::{CompanySlug, FileId};
use crate::metrics::DependencyTimer;
use client::{Call, Client, Failure};

#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `S3_ENDPOINT`: URL of an S3-compatible server; empty means AWS itself.
    pub endpoint: Option<Url>,
    /// `S3_REGION`.
    pub region: String,
    /// `S3_BUCKET`: where company files are stored.
    pub bucket: String,
    /// `S3_ACCESS_KEY_ID`.
    pub access_key_id: Secret,
    /// `S3_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
    /// `S3_TIMEOUT_MS`: upper bound of one S3 operation, retries included.
    pub timeout: Duration,
}

impl S3Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint: endpoint(env)?,
            region: env.non_empty("S3_REGION", "us-east-1")?,
            bucket: env.non_empty("S3_BUCKET", "imports")?,
            access_key_id: Secret::new(env.non_empty("S3_ACCESS_KEY_ID", "etl-dev")?),
            secret_access_key: Secret::new(
                env.non_empty("S3_SECRET_ACCESS_KEY", "etl-dev-secret")?,
            ),
            timeout: env.millis("S3_TIMEOUT_MS", 10_000)?,
        })
    }
}

fn endpoint(env: &Env) -> Result<Option<Url>, ConfigError> {
    let raw = env.string("S3_ENDPOINT", "http://127.0.0.1:19000");
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let problem = |why: &str| ConfigError {
        var: "S3_ENDPOINT".to_owned(),
        problem: format!("= {raw:?} {why}"),
    };
    let url = Url::parse(raw.trim()).map_err(|e| problem(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(problem("must be http(s)://host[:port]"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem("must not have a query or a fragment"));
    }
    Ok(Some(url))
}

/// The S3 key of a company file: `{company}/files/{file_id}.json`. Built only
/// from a validated slug and a generated id, so it cannot escape the prefix.
pub fn company_file_key(company: &CompanySlug, file_id: FileId) -> String {
    format!("{company}/files/{file_id}.json")
}

/// The S3 key of a file of `dataset`: a company file's as it always was,
/// any other's under its dataset, `{dataset}/{document}/files/{file_id}.json`
/// (a dataset name is a safe segment, like the slug).
pub fn file_key(dataset: &str, document: &CompanySlug, file_id: FileId) -> String {
    if dataset == crate::events::COMPANIES_DATASET {
        company_file_key(document, file_id)
    } else {
        format!("{dataset}/{document}/files/{file_id}.json")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    /// The store did not answer or answered with an error worth retrying.
    #[error("S3 {operation} failed: {message}")]
    Unavailable {
        operation: &'static str,
        message: String,
    },
}

fn unavailable(operation: &'static str) -> impl FnOnce(Failure) -> StoreError {
    move |failure| StoreError::Unavailable {
        operation,
        message: failure.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct StoredObject {
    pub etag: String,
}

/// One bucket of the store. Cheap to clone: clones share their connections.
#[derive(Clone)]
pub struct ObjectStore {
    client: Arc<Client>,
    bucket: Arc<str>,
    region: Arc<str>,
    timer: DependencyTimer,
}

impl ObjectStore {
    pub fn new(settings: &S3Settings, timer: DependencyTimer) -> Self {
        Self {
            client: Arc::new(Client::new(settings)),
            bucket: settings.bucket.as_str().into(),
            region: settings.region.as_str().into(),
            timer,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The same store's bucket `bucket`, over the same connections.
    pub fn with_bucket(&self, bucket: &str) -> Self {
        Self {
            bucket: bucket.into(),
            ..self.clone()
        }
    }

    /// Creates the bucket if it does not exist yet.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self.check().await.is_ok() {
            return Ok(());
        }
        // us-east-1 is S3's default location and must not be named.
        let body = if &*self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        };
        let created = self
            .client
            .send(&Call {
                body,
                ..self.call(Method::PUT, "")
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("CreateBucket")(e)),
        }
    }

    /// Readiness: the bucket exists and answers.
    pub async fn check(&self) -> Result<(), StoreError> {
        let head = self.call(Method::HEAD, "");
        self.timer
            .time("s3", "head_bucket", self.client.send(&head))
            .await
            .map(drop)
            .map_err(unavailable("HeadBucket"))
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<StoredObject, StoreError> {
        let call = Call {
            body: body.into(),
            content_type: Some("application/json"),
            ..self.call(Method::PUT, key)
        };
        let answer = self
            .timer
            .time("s3", "put_object", self.client.send(&call))
            .instrument(self.span("PutObject", key))
            .await
            .map_err(unavailable("PutObject"))?;
        Ok(StoredObject {
            etag: answer.etag.unwrap_or_default(),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let get = self.call(Method::GET, key);
        match self
            .timer
            .time("s3", "get_object", self.client.send(&get))
            .instrument(self.span("GetObject", key))
            .await
        {
            Ok(answer) => Ok(answer.body.into()),
            Err(e) if e.code() == Some("NoSuchKey") => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
            Err(e) => Err(unavailable("GetObject")(e)),
        }
    }

    /// Deletes `key`; deleting a key that does not exist succeeds, as in S3.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .send(&self.call(Method::DELETE, key))
            .await
            .map(drop)
            .map_err(unavailable("DeleteObject"))
    }

    /// Every key under `prefix`, in S3's order (page after page).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(token) = &token {
                query.push(("continuation-token", token));
            }
            let page = self
                .client
                .send(&Call {
                    query: &query,
                    ..self.call(Method::GET, "")
                })
                .await
                .map_err(unavailable("ListObjectsV2"))?;
            let page = String::from_utf8_lossy(&page.body);
            keys.extend(xml::texts(&page, "Key"));
            token = xml::text(&page, "NextContinuationToken")
                .filter(|_| xml::text(&page, "IsTruncated").as_deref() == Some("true"));
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Deletes the bucket (S3 itself refuses one that still has objects;
    /// SeaweedFS deletes them with it).
    pub async fn delete_bucket(&self) -> Result<(), StoreError> {
        self.client
            .send(&self.call(Method::DELETE, ""))
            .await
            .map(drop)
            .map_err(unavailable("DeleteBucket"))
    }

    /// The names of every bucket the credentials own.
    pub async fn list_buckets(&self) -> Result<Vec<String>, StoreError> {
        let call = Call {
            bucket: None,
            ..self.call(Method::GET, "")
        };
        let answer = self
            .client
            .send(&call)
            .await
            .map_err(unavailable("ListBuckets"))?;
        let listing = String::from_utf8_lossy(&answer.body);
        Ok(xml::texts(xml::section(&listing, "Buckets"), "Name"))
    }

    /// The client span of one S3 call, with the semantic conventions' names.
    fn span(&self, method: &'static str, key: &str) -> tracing::Span {
        tracing::info_span!(
            "s3",
            otel.name = format!("S3.{method}"),
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "S3",
            rpc.method = method,
            aws.s3.bucket = %self.bucket,
            aws.s3.key = key,
        )
    }

    /// A call on this bucket (`key` empty) or one of its objects, without
    /// query or body.
    fn call<'a>(&'a self, method: Method, key: &'a str) -> Call<'a> {
        Call {
            method,
            bucket: Some(&self.bucket),
            key,
            query: &[],
            body: Bytes::new(),
            content_type: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_contract_layout() {
        let slug = CompanySlug::parse("acme").unwrap();
        let id: FileId = "0190b2c4-0000-8000-8000-000000000001".parse().unwrap();
        assert_eq!(
            company_file_key(&slug, id),
            "acme/files/0190b2c4-0000-8000-8000-000000000001.json"
        );
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused_by_name() {
        let parse =
            |value: &str| S3Settings::from_env(&Env::with_overrides([("S3_ENDPOINT", value)]));
        assert!(parse("").unwrap().endpoint.is_none());
        assert_eq!(
            parse("http://127.0.0.1:29000")
                .unwrap()
                .endpoint
                .unwrap()
                .as_str(),
            "http://127.0.0.1:29000/"
        );
        for bad in [
            "127.0.0.1:29000",
            "ftp://host",
            "http://host/?x=1",
            "not a url",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("S3_ENDPOINT = "), "{bad}: {e}");
        }
    }
}
