//! An upload as a blocking `Read` for the splitter, fed from the request
//! body as it arrives: chunks pass through a small bounded channel, so a
//! slow S3 slows the client instead of filling memory. Below the splitter:
//! gunzip when asked, the size limit (after decompression, so a gzip bomb
//! stops there), and the idempotency fingerprint of the text.

use std::io::{self, Read};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::idempotency::Fingerprint;

/// Body chunks waiting for the splitter: a few, not the upload.
const CHUNKS_IN_FLIGHT: usize = 4;

pub enum Chunk {
    Data(Bytes),
    End,
    Failed(String),
}

/// Why the upload could not be read, beyond what the splitter says.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error("the body could not be read: {0}")]
    Body(String),
    #[error("the upload is larger than the limit")]
    TooLarge,
    /// The request side gave up (a timeout, or storing failed).
    #[error("the upload was abandoned")]
    Abandoned,
}

/// The length the request's `Content-Length` declares, if it is a number.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub fn channel() -> (mpsc::Sender<Chunk>, mpsc::Receiver<Chunk>) {
    mpsc::channel(CHUNKS_IN_FLIGHT)
}

/// Forwards the request body; returns the bytes received. Stops early when
/// the reader is gone.
pub async fn pump(body: Body, to: mpsc::Sender<Chunk>) -> u64 {
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(next) = stream.next().await {
        let chunk = match next {
            Ok(bytes) => {
                received += bytes.len() as u64;
                Chunk::Data(bytes)
            }
            Err(e) => Chunk::Failed(e.to_string()),
        };
        let failed = matches!(chunk, Chunk::Failed(_));
        if to.send(chunk).await.is_err() || failed {
            return received;
        }
    }
    let _ = to.send(Chunk::End).await;
    received
}

/// The receiving end of [`pump`], read on a blocking thread.
pub struct BodyReader {
    chunks: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl BodyReader {
    pub fn new(chunks: mpsc::Receiver<Chunk>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() && !self.ended {
            match self.chunks.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(message)) => {
                    return Err(io::Error::other(ReadFailure::Body(message)));
                }
                None => return Err(io::Error::other(ReadFailure::Abandoned)),
            }
        }
        let n = self.current.len().min(out.len());
        out[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// The upload's text (decompressed if it was gzipped): counted against the
/// limit and fingerprinted as it passes.
pub struct Decoded<R> {
    inner: R,
    limit: u64,
    bytes: u64,
    fingerprint: Option<Fingerprint>,
}

impl<R: Read> Decoded<R> {
    pub fn new(inner: R, limit: usize, fingerprint: Option<Fingerprint>) -> Self {
        Self {
            inner,
            limit: limit as u64,
            bytes: 0,
            fingerprint,
        }
    }

    /// Bytes of text read, and the fingerprint of all of them.
    pub fn finish(self) -> (u64, Option<String>) {
        (self.bytes, self.fingerprint.map(Fingerprint::finish))
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(io::Error::other(ReadFailure::TooLarge));
        }
        if let Some(fingerprint) = &mut self.fingerprint {
            fingerprint.update(&out[..n]);
        }
        Ok(n)
    }
}

/// The reader's own failure inside an `io::Error`, if it is one.
pub fn read_failure(e: &io::Error) -> Option<&ReadFailure> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ReadFailure>())
}
