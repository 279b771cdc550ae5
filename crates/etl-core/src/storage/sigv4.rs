//! AWS Signature Version 4 for S3 requests, signed in the `Authorization`
//! header. Only what the store sends is covered: a path already encoded,
//! query parameters, a handful of headers and the payload's SHA-256.

use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of nothing, the payload hash of a request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn payload_sha256(body: &[u8]) -> String {
    if body.is_empty() {
        return EMPTY_SHA256.to_owned();
    }
    hex::encode(Sha256::digest(body))
}

/// What is signed of one request.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, already URI-encoded (see [`uri_encode`]).
    pub path: &'a str,
    /// The canonical query string, as [`canonical_query`] builds it.
    pub query: &'a str,
    /// Every signed header, names in lower case, sorted by name; `host`,
    /// `x-amz-content-sha256` and `x-amz-date` among them.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
}

pub struct Signer {
    access_key: String,
    secret_key: Secret,
    region: String,
    /// The signing key depends only on the day: one derivation per day
    /// instead of four HMACs per request.
    day_key: Mutex<Option<(String, [u8; 32])>>,
}

impl Signer {
    pub fn new(access_key: &str, secret_key: Secret, region: &str) -> Self {
        Self {
            access_key: access_key.to_owned(),
            secret_key,
            region: region.to_owned(),
            day_key: Mutex::new(None),
        }
    }

    /// `x-amz-date` for a request sent at `now`.
    pub fn amz_date(now: DateTime<Utc>) -> String {
        now.format("%Y%m%dT%H%M%SZ").to_string()
    }

    /// The `Authorization` header of `request`, whose `x-amz-date` header is
    /// `amz_date`.
    pub fn authorization(&self, request: &Request<'_>, amz_date: &str) -> String {
        let day = &amz_date[..8];
        let mut canonical = String::with_capacity(256);
        let _ = write!(
            canonical,
            "{}\n{}\n{}\n",
            request.method, request.path, request.query
        );
        for (name, value) in request.headers {
            let _ = writeln!(canonical, "{name}:{}", value.trim());
        }
        let signed_headers = request
            .headers
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(";");
        let _ = write!(canonical, "\n{signed_headers}\n{}", request.payload_sha256);
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex::encode(hmac(&self.signing_key(day), to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        )
    }

    fn signing_key(&self, day: &str) -> [u8; 32] {
        let mut cached = self.day_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_day, key)) = cached.as_ref()
            && cached_day == day
        {
            return *key;
        }
        let key = signing_key(self.secret_key.expose(), day, &self.region, "s3");
        *cached = Some((day.to_owned(), key));
        key
    }
}

fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Percent-encodes all but the unreserved characters (`A-Z a-z 0-9 - . _ ~`),
/// and `/` too unless `keep_slash`: S3's rule for paths (each segment
/// encoded once) and query components alike.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Query parameters encoded and sorted by name: both the string that is
/// signed and the one that is sent.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    //! The examples of AWS's "Signature Calculations for the Authorization
    //! Header" page for S3 (examplebucket, 2013-05-24).
    use super::*;

    fn example_signer() -> Signer {
        Signer::new(
            "AKIAIOSFODNN7EXAMPLE",
            Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "us-east-1",
        )
    }

    fn sign(path: &str, query: &str, extra: &[(&'static str, &'static str)]) -> String {
        let mut headers = vec![
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        headers.extend_from_slice(extra);
        headers.sort();
        example_signer().authorization(
            &Request {
                method: "GET",
                path,
                query,
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
            },
            "20130524T000000Z",
        )
    }

    #[test]
    fn get_object_matches_the_aws_example() {
        assert_eq!(
            sign("/test.txt", "", &[("range", "bytes=0-9")]),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn a_listing_signs_its_query_sorted() {
        let query = canonical_query(&[("prefix", "J"), ("max-keys", "2")]);
        assert_eq!(query, "max-keys=2&prefix=J");
        assert!(sign("/", &query, &[]).ends_with(
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        ));
    }

    #[test]
    fn a_valueless_parameter_is_signed_with_an_equals_sign() {
        let query = canonical_query(&[("lifecycle", "")]);
        assert_eq!(query, "lifecycle=");
        assert!(sign("/", &query, &[]).ends_with(
            "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        ));
    }

    #[test]
    fn the_signing_key_matches_the_documented_derivation() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn a_new_day_gets_a_new_signing_key() {
        let signer = example_signer();
        let first = signer.signing_key("20130524");
        assert_eq!(signer.signing_key("20130524"), first);
        assert_ne!(signer.signing_key("20130525"), first);
    }

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(uri_encode("a b/c~d$", true), "a%20b/c~d%24");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("é!'()*", false), "%C3%A9%21%27%28%29%2A");
        assert_eq!(uri_encode("A-z_0.9~", false), "A-z_0.9~");
    }
}
