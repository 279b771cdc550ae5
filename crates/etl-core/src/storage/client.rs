//! One S3 call over HTTP: where it goes, its signature, its retries and its
//! deadline. Connections are pooled and kept alive by one `reqwest` client
//! per store.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HOST};
use reqwest::{Method, StatusCode, Url};
use tokio::time::Instant;

use super::S3Settings;
use super::sigv4::{self, Signer};
use super::xml;

/// Attempts of one call, the first included: what the AWS SDKs' standard
/// retry mode makes too.
const MAX_ATTEMPTS: u32 = 3;
/// The first retry waits half to all of this, each later one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where requests go. A custom endpoint (MinIO, SeaweedFS, …) is addressed
/// path-style (`host/bucket/key`), which every S3-compatible server
/// serves; AWS itself virtual-hosted (`bucket.s3.region.amazonaws.com/key`)
/// unless the bucket's name has a dot, which the wildcard certificate does
/// not cover.
struct Endpoint {
    scheme: String,
    /// `host[:port]`, the port only when it is not the scheme's own.
    authority: String,
    /// The endpoint's own path (e.g. behind a proxy), without a trailing `/`.
    base_path: String,
    virtual_hosted: bool,
}

impl Endpoint {
    fn new(settings: &S3Settings) -> Self {
        match &settings.endpoint {
            Some(url) => Self {
                scheme: url.scheme().to_owned(),
                authority: authority(url),
                base_path: url.path().trim_end_matches('/').to_owned(),
                virtual_hosted: false,
            },
            None => Self {
                scheme: "https".to_owned(),
                authority: format!("s3.{}.amazonaws.com", settings.region),
                base_path: String::new(),
                virtual_hosted: true,
            },
        }
    }

    /// The host and the encoded path of `key` in `bucket` (the bucket
    /// itself for an empty key, the service for no bucket).
    fn locate(&self, bucket: Option<&str>, key: &str) -> (String, String) {
        let key = sigv4::uri_encode(key, true);
        match bucket {
            Some(bucket) if self.virtual_hosted && !bucket.contains('.') => {
                (format!("{bucket}.{}", self.authority), format!("/{key}"))
            }
            Some(bucket) => (
                self.authority.clone(),
                format!(
                    "{}/{}/{key}",
                    self.base_path,
                    sigv4::uri_encode(bucket, false)
                ),
            ),
            None => (self.authority.clone(), format!("{}/", self.base_path)),
        }
    }
}

fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// What one call asks of S3.
pub struct Call<'a> {
    pub method: Method,
    /// `None` for the service itself (listing buckets).
    pub bucket: Option<&'a str>,
    /// Empty for the bucket itself.
    pub key: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub body: Bytes,
    pub content_type: Option<&'static str>,
}

/// A successful answer.
pub struct Answer {
    pub etag: Option<String>,
    pub body: Bytes,
}

/// Why a call did not succeed, after its retries.
#[derive(Debug)]
pub enum Failure {
    /// S3 answered with an error status (`code` from its XML body, when it
    /// sent one: a HEAD's answer has none).
    Refused {
        status: StatusCode,
        code: Option<String>,
        message: String,
        attempts: u32,
    },
    /// No answer: connection refused or reset, timed out, body cut short.
    NoAnswer { message: String, attempts: u32 },
}

impl Failure {
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => code.as_deref(),
            Self::NoAnswer { .. } => None,
        }
    }

    fn refused(status: StatusCode, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        Self::Refused {
            status,
            code: xml::text(&text, "Code"),
            message: xml::text(&text, "Message").unwrap_or_default(),
            attempts: 1,
        }
    }

    fn no_answer(message: String) -> Self {
        Self::NoAnswer {
            message,
            attempts: 1,
        }
    }

    /// Worth another attempt: nothing came back, or S3 said it is busy or
    /// failed inside.
    fn is_transient(&self) -> bool {
        match self {
            Self::NoAnswer { .. } => true,
            Self::Refused { status, code, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || matches!(
                        code.as_deref(),
                        Some("SlowDown" | "RequestTimeout" | "InternalError")
                    )
            }
        }
    }

    fn after(mut self, made: u32) -> Self {
        match &mut self {
            Self::Refused { attempts, .. } | Self::NoAnswer { attempts, .. } => *attempts = made,
        }
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempts = match self {
            Self::Refused {
                status,
                code,
                message,
                attempts,
            } => {
                write!(f, "{status}")?;
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                attempts
            }
            Self::NoAnswer { message, attempts } => {
                f.write_str(message)?;
                attempts
            }
        };
        if *attempts > 1 {
            write!(f, " ({attempts} attempts)")?;
        }
        Ok(())
    }
}

pub struct Client {
    http: reqwest::Client,
    signer: Signer,
    endpoint: Endpoint,
    /// Bound of one call, its retries included (`S3_TIMEOUT_MS`).
    timeout: Duration,
}

impl Client {
    pub fn new(settings: &S3Settings) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(settings.timeout))
            .tcp_nodelay(true)
            .build()
            // Fails only if the TLS backend cannot start, as reqwest::Client::new would panic.
            .expect("the HTTP client's TLS backend starts");
        Self {
            http,
            signer: Signer::new(
                settings.access_key_id.expose(),
                settings.secret_access_key.clone(),
                &settings.region,
            ),
            endpoint: Endpoint::new(settings),
            timeout: settings.timeout,
        }
    }

    pub async fn send(&self, call: &Call<'_>) -> Result<Answer, Failure> {
        let deadline = Instant::now() + self.timeout;
        let payload_sha256 = sigv4::payload_sha256(&call.body);
        let mut attempt = 1;
        loop {
            let result = tokio::time::timeout_at(deadline, self.attempt(call, &payload_sha256))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::no_answer(format!(
                        "no answer within S3_TIMEOUT_MS ({} ms)",
                        self.timeout.as_millis()
                    )))
                });
            let failure = match result {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let pause = crate::backoff_delay(attempt - 1, FIRST_BACKOFF, MAX_BACKOFF);
            if !failure.is_transient()
                || attempt == MAX_ATTEMPTS
                || Instant::now() + pause >= deadline
            {
                return Err(failure.after(attempt));
            }
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, call: &Call<'_>, payload_sha256: &str) -> Result<Answer, Failure> {
        let (host, path) = self.endpoint.locate(call.bucket, call.key);
        let query = sigv4::canonical_query(call.query);
        let amz_date = Signer::amz_date(Utc::now());
        let signed = [
            ("host", host.as_str()),
            ("x-amz-content-sha256", payload_sha256),
            ("x-amz-date", amz_date.as_str()),
        ];
        let authorization = self.signer.authorization(
            &sigv4::Request {
                method: call.method.as_str(),
                path: &path,
                query: &query,
                headers: &signed,
                payload_sha256,
            },
            &amz_date,
        );
        let mut url = format!("{}://{host}{path}", self.endpoint.scheme);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .header(HOST, &host)
            .header("x-amz-content-sha256", payload_sha256)
            .header("x-amz-date", &amz_date)
            .header(AUTHORIZATION, authorization);
        if let Some(content_type) = call.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if !call.body.is_empty() {
            request = request.body(call.body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::no_answer(crate::cause_chain(&e)))?;
        let status = response.status();
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read to the end even on an error, so the connection is reused.
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::no_answer(crate::cause_chain(&e)))?;
        if status.is_success() {
            Ok(Answer { etag, body })
        } else {
            Err(Failure::refused(status, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn settings(vars: &[(&str, &str)]) -> S3Settings {
        S3Settings::from_env(&Env::with_overrides(vars.iter().copied())).unwrap()
    }

    #[test]
    fn a_custom_endpoint_is_addressed_path_style() {
        let endpoint = Endpoint::new(&settings(&[("S3_ENDPOINT", "http://127.0.0.1:29000/")]));
        assert_eq!(
            endpoint.locate(Some("imports"), "acme/files/1 2.json"),
            (
                "127.0.0.1:29000".into(),
                "/imports/acme/files/1%202.json".into()
            )
        );
        assert_eq!(
            endpoint.locate(Some("imports"), ""),
            ("127.0.0.1:29000".into(), "/imports/".into())
        );
        assert_eq!(
            endpoint.locate(None, ""),
            ("127.0.0.1:29000".into(), "/".into())
        );
        let behind_proxy = Endpoint::new(&settings(&[("S3_ENDPOINT", "https://gw.example/s3/")]));
        assert_eq!(
            behind_proxy.locate(Some("b"), "k"),
            ("gw.example".into(), "/s3/b/k".into())
        );
    }

    #[test]
    fn aws_is_addressed_virtual_hosted_unless_the_bucket_has_a_dot() {
        let endpoint = Endpoint::new(&settings(&[
            ("S3_ENDPOINT", ""),
            ("S3_REGION", "eu-west-1"),
        ]));
        assert_eq!(endpoint.scheme, "https");
        assert_eq!(
            endpoint.locate(Some("imports"), "a/b.json"),
            (
                "imports.s3.eu-west-1.amazonaws.com".into(),
                "/a/b.json".into()
            )
        );
        assert_eq!(
            endpoint.locate(Some("my.imports"), "a"),
            ("s3.eu-west-1.amazonaws.com".into(), "/my.imports/a".into())
        );
    }

    #[test]
    fn busy_or_failing_servers_are_retried_refusals_are_not() {
        let refused = |status: u16, body: &str| {
            Failure::refused(StatusCode::from_u16(status).unwrap(), body.as_bytes())
        };
        assert!(refused(503, "<Error><Code>SlowDown</Code></Error>").is_transient());
        assert!(refused(500, "").is_transient());
        assert!(refused(429, "").is_transient());
        assert!(refused(400, "<Error><Code>RequestTimeout</Code></Error>").is_transient());
        assert!(Failure::no_answer("connection reset".into()).is_transient());
        let missing = refused(
            404,
            "<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>",
        );
        assert!(!missing.is_transient());
        assert_eq!(missing.code(), Some("NoSuchKey"));
        assert_eq!(missing.to_string(), "404 Not Found NoSuchKey: gone");
        assert!(!refused(403, "<Error><Code>AccessDenied</Code></Error>").is_transient());
        assert_eq!(
            Failure::no_answer("refused".into()).after(3).to_string(),
            "refused (3 attempts)"
        );
    }
}
