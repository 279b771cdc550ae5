//! Bodies built to make the api work hard before it can refuse them.

use std::io::Write;

/// One company repeated until the JSON array is over `inflated_bytes`,
/// gzipped: a few hundred KiB that inflate past the api's body limit.
pub fn inflating_gzip(inflated_bytes: usize) -> Vec<u8> {
    let element = br#"{"name":"Bomb","inn":"7707083893"}"#;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(b"[").unwrap();
    let mut chunk = Vec::with_capacity(1 << 20);
    while chunk.len() + element.len() < 1 << 20 {
        chunk.extend_from_slice(element);
        chunk.push(b',');
    }
    for _ in 0..inflated_bytes.div_ceil(chunk.len()) {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.write_all(element).unwrap();
    encoder.write_all(b"]").unwrap();
    encoder.finish().unwrap()
}

/// A JSON array of zeros, `bytes` long: millions of documents, none a
/// company.
pub fn array_of_numbers(bytes: usize) -> Vec<u8> {
    let mut body = b"[0".to_vec();
    body.extend(b",0".repeat(bytes.saturating_sub(3) / 2));
    body.push(b']');
    body
}

/// Posts `body` as a JSON import (gzip-encoded when `gzip`): status,
/// answer and how long the answer took from the request's start.
pub async fn post_timed(
    api: &impl crate::Endpoint,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, serde_json::Value, std::time::Duration) {
    let mut request = crate::http()
        .post(api.url("/import/companies"))
        .header("content-type", "application/json");
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let started = std::time::Instant::now();
    let response = request.body(body).send().await.expect("the api answers");
    let status = response.status().as_u16();
    let answer = response.json().await.unwrap_or_default();
    (status, answer, started.elapsed())
}
