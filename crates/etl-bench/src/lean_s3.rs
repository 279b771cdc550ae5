//! A minimal S3 PUT: SigV4 signed by hand (HMAC-SHA256), sent by reqwest
//! over pooled keep-alive connections. Not what the services use: the
//! measure of what an S3 client needs to spend per PUT, beside the SDK's
//! cost per PUT in the same run (the raw S3 PUT phase's bench client
//! column). Path-style URLs only, as the local stack serves them.

use std::sync::Arc;

use chrono::Utc;
use etl_core::storage::S3Settings;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::limits::raw_key;
use crate::run::{Pace, drive};
use crate::stats::Phase;

type HmacSha256 = Hmac<Sha256>;

pub struct LeanS3 {
    http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    endpoint: String,
    host: String,
    bucket: String,
    region: String,
    access_key: String,
    secret_key: String,
}

impl LeanS3 {
    pub fn new(settings: &S3Settings) -> Option<Self> {
        let endpoint = settings.endpoint.clone()?.trim_end_matches('/').to_owned();
        let host = endpoint.split_once("://")?.1.to_owned();
        Some(Self {
            http: reqwest::Client::new(),
            endpoint,
            host,
            bucket: settings.bucket.clone(),
            region: settings.region.clone(),
            access_key: settings.access_key_id.expose().to_owned(),
            secret_key: settings.secret_access_key.expose().to_owned(),
        })
    }

    /// PUTs `body` at `key` (characters that need no URI encoding).
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), String> {
        let path = format!("/{}/{key}", self.bucket);
        let now = Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let payload_hash = hex::encode(Sha256::digest(&body));
        let signed_headers = "content-type;host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "PUT\n{path}\n\ncontent-type:application/json\nhost:{}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{payload_hash}",
            self.host
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let key_date = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        let key_region = hmac(&key_date, self.region.as_bytes());
        let key_service = hmac(&key_region, b"s3");
        let key_signing = hmac(&key_service, b"aws4_request");
        let signature = hex::encode(hmac(&key_signing, to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );
        let response = self
            .http
            .put(format!("{}{path}", self.endpoint))
            .header("content-type", "application/json")
            .header("x-amz-content-sha256", payload_hash)
            .header("x-amz-date", amz_date)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read to the end: the connection goes back to the pool.
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        Ok(())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The raw S3 PUT phase's objects again (keys `first..first + total`),
/// through the minimal client.
pub async fn s3_put(lean: &Arc<LeanS3>, first: u64, total: u64, concurrency: usize) -> Phase {
    drive(
        "raw S3 PUT, minimal SigV4 client (2 KiB)",
        "objects",
        total,
        Pace::Flat(concurrency),
        |i| {
            let lean = lean.clone();
            async move { lean.put(&raw_key(first + i), vec![b'x'; 2_048]).await }
        },
    )
    .await
}
