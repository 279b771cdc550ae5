//! The object store (AWS S3, MinIO, or the local SeaweedFS).

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use crate::config::{ConfigError, Env, Secret};
use crate::domain::{CompanySlug, FileId};
use crate::metrics::DependencyTimer;

#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `S3_ENDPOINT`: URL of an S3-compatible server; empty means AWS itself.
    pub endpoint: Option<String>,
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
        let endpoint = env.string("S3_ENDPOINT", "http://127.0.0.1:19000");
        Ok(Self {
            endpoint: (!endpoint.trim().is_empty()).then_some(endpoint),
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

/// The S3 key of a company file: `{company}/files/{file_id}.json`. Built only
/// from a validated slug and a generated id, so it cannot escape the prefix.
pub fn company_file_key(company: &CompanySlug, file_id: FileId) -> String {
    format!("{company}/files/{file_id}.json")
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

fn unavailable<E, R>(operation: &'static str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable {
        operation,
        message: DisplayErrorContext(&e).to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct StoredObject {
    pub etag: String,
}

#[derive(Clone)]
pub struct ObjectStore {
    client: Client,
    bucket: String,
    timer: DependencyTimer,
}

impl ObjectStore {
    pub fn new(settings: &S3Settings, timer: DependencyTimer) -> Self {
        let credentials = Credentials::new(
            settings.access_key_id.expose(),
            settings.secret_access_key.expose(),
            None,
            None,
            "etl-settings",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            // Checksums only where S3 requires them: S3-compatible servers
            // differ in their support for the newer default trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2).min(settings.timeout))
                    .operation_timeout(settings.timeout)
                    .build(),
            );
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket: settings.bucket.clone(),
            timer,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The SDK client, for tools and tests that inspect the bucket.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the bucket if it does not exist yet.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self.check().await.is_ok() {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("CreateBucket", e)),
        }
    }

    /// Readiness: the bucket exists and answers.
    pub async fn check(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.client.head_bucket().bucket(&self.bucket).send().await;
        self.timer
            .observe("s3", "head_bucket", started, result.is_ok());
        result.map(|_| ()).map_err(|e| unavailable("HeadBucket", e))
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<StoredObject, StoreError> {
        let started = Instant::now();
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await;
        self.timer
            .observe("s3", "put_object", started, result.is_ok());
        let out = result.map_err(|e| unavailable("PutObject", e))?;
        Ok(StoredObject {
            etag: out.e_tag().unwrap_or_default().to_owned(),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let started = Instant::now();
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                self.timer.observe("s3", "get_object", started, false);
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Err(StoreError::NotFound {
                        key: key.to_owned(),
                    });
                }
                return Err(unavailable("GetObject", e));
            }
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable {
                operation: "GetObject",
                message: e.to_string(),
            });
        self.timer
            .observe("s3", "get_object", started, body.is_ok());
        Ok(body?.into_bytes().to_vec())
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
}
