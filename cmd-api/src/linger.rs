//! An answer given before the request body was read whole reaches the
//! client.
//!
//! The api refuses a bad upload as soon as it knows: no key, no slot, the
//! 101st number of an array of numbers, a mistyped route. Some HTTP/1
//! clients (Node's `fetch`, reqwest) go on writing the body and read the
//! answer only after. Were the connection closed with body bytes still
//! arriving, the kernel would answer them with a reset, and such a client
//! would report "broken pipe" (`EPIPE`) instead of the JSON error. So the rest
//! of a refused body is read and thrown away in the background while the
//! answer goes out, within bounds, as nginx's lingering close does.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::upload::declared_length;

/// How long a refused body is read at most...
const LINGER_FOR: Duration = Duration::from_secs(30);
/// ...and how long without a byte before its client is taken to have
/// stopped sending (curl, for one, stops when it sees the answer).
const LINGER_IDLE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Linger {
    /// Bytes read at most after the answer: as many as an upload may have
    /// (`MAX_BODY_BYTES`), so that a refusal costs no more than an import.
    pub max_bytes: u64,
    /// Shutdown does not wait for a refused body.
    pub stopping: CancellationToken,
}

/// Middleware: drains what the handler left of the body, unless there is
/// no point. A client still waiting for `100 Continue` has sent nothing;
/// one declaring more than `max_bytes` would be reset anyway; and one too
/// slow to send its body in time (408) is not waited for any longer.
pub async fn linger(State(linger): State<Linger>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let hopeless = declared_length(&parts.headers).is_some_and(|n| n > linger.max_bytes);
    let (left_tx, mut left_rx) = oneshot::channel();
    let body = Body::new(Unread {
        body: Some(body),
        awaits_continue: awaits_continue(&parts.headers),
        polled: false,
        ended: false,
        left: Some(left_tx),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Ok(left) = left_rx.try_recv()
        && !hopeless
        && response.status() != StatusCode::REQUEST_TIMEOUT
    {
        let draining = drain(left, linger.max_bytes);
        tokio::spawn(linger.stopping.run_until_cancelled_owned(draining));
    }
    response
}

/// Reads and drops `body` until it ends, stalls, or is over its bounds;
/// dropping it then lets the connection close.
async fn drain(mut body: Body, max_bytes: u64) {
    let deadline = Instant::now() + LINGER_FOR;
    let mut read = 0u64;
    while read <= max_bytes {
        let stall = Instant::now() + LINGER_IDLE;
        match timeout_at(deadline.min(stall), body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

fn awaits_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The request body as the handler sees it; whatever the handler drops
/// unread goes back to [`linger`] through `left`.
struct Unread {
    body: Option<Body>,
    awaits_continue: bool,
    polled: bool,
    ended: bool,
    left: Option<oneshot::Sender<Body>>,
}

impl HttpBody for Unread {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let next = Pin::new(body).poll_frame(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            this.ended = true;
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        // Polling would send the client its `100 Continue`: the go-ahead
        // for an upload that is refused already.
        let nothing_sent = self.awaits_continue && !self.polled;
        if self.is_end_stream() || nothing_sent {
            return;
        }
        if let (Some(body), Some(left)) = (self.body.take(), self.left.take()) {
            let _ = left.send(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::Router;
    use futures::{StreamExt, stream};
    use tower::ServiceExt;

    use super::*;

    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 40;

    /// A request body of `CHUNKS` chunks that counts the ones read and
    /// knows when it is dropped.
    #[derive(Clone, Default)]
    struct Upload {
        read: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Upload {
        fn body(&self) -> Body {
            let read = self.read.clone();
            let flag = DropFlag(self.dropped.clone());
            Body::from_stream(stream::iter(0..CHUNKS).map(move |_| {
                // Owned by the stream, so it drops with it.
                let _ = &flag;
                read.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Bytes::from(vec![b' '; CHUNK]))
            }))
        }

        fn read(&self) -> usize {
            self.read.load(Ordering::SeqCst)
        }

        fn dropped(&self) -> bool {
            self.dropped.load(Ordering::SeqCst)
        }
    }

    /// Reads one chunk (none when asked to), then answers `status`.
    async fn refuse(
        axum::extract::Path(status): axum::extract::Path<u16>,
        headers: HeaderMap,
        body: Body,
    ) -> StatusCode {
        if !awaits_continue(&headers) {
            let _ = body.into_data_stream().next().await;
        }
        StatusCode::from_u16(status).unwrap()
    }

    async fn send(upload: &Upload, status: u16, headers: &[(&str, &str)]) -> StatusCode {
        send_limited(upload, status, headers, CHUNKS * CHUNK).await
    }

    async fn send_limited(
        upload: &Upload,
        status: u16,
        headers: &[(&str, &str)],
        max_bytes: usize,
    ) -> StatusCode {
        let linger = Linger {
            max_bytes: max_bytes as u64,
            stopping: CancellationToken::new(),
        };
        let app = Router::new()
            .route("/refuse/{status}", axum::routing::post(refuse))
            .layer(axum::middleware::from_fn_with_state(linger, self::linger));
        let mut request = Request::post(format!("/refuse/{status}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app.oneshot(request.body(upload.body()).unwrap()).await;
        response.unwrap().status()
    }

    #[tokio::test]
    async fn a_refused_body_is_read_to_its_end_after_the_answer() {
        let upload = Upload::default();
        assert_eq!(
            send(&upload, 422, &[]).await,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        etl_testkit::eventually(etl_testkit::DEADLINE, "the body drained", || async {
            (upload.read() == CHUNKS && upload.dropped()).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn a_drain_reads_no_more_than_max_bytes() {
        let upload = Upload::default();
        let status = send_limited(&upload, 422, &[], 10 * CHUNK).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        etl_testkit::eventually(etl_testkit::DEADLINE, "the drain to give up", || async {
            upload.dropped().then_some(())
        })
        .await;
        // The handler's chunk, then chunks until more than 10 were drained.
        assert_eq!(upload.read(), 1 + 11);
    }

    /// A case, its answer, its request headers, and the chunks its handler
    /// reads.
    type Pointless<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], usize);

    #[tokio::test]
    async fn a_body_is_not_drained_when_there_is_no_point() {
        let too_long = ((CHUNKS * CHUNK) + 1).to_string();
        let cases: [Pointless<'_>; 3] = [
            ("a client too slow already", 408, &[], 1),
            (
                "a body declared over the limit",
                413,
                &[("content-length", &too_long)],
                1,
            ),
            (
                "a client waiting for 100 Continue",
                401,
                &[("expect", "100-continue")],
                0,
            ),
        ];
        for (case, status, headers, read_by_the_handler) in cases {
            let upload = Upload::default();
            assert_eq!(send(&upload, status, headers).await.as_u16(), status);
            assert!(
                upload.dropped(),
                "{case}: the body is dropped with the answer"
            );
            assert_eq!(upload.read(), read_by_the_handler, "{case}");
        }
    }
}
