//! Reads what a handler left unread of an HTTP/1.1 request's body before the answer goes out.
//!
//! A handler that answers without reading the body (a refused token, a GET or DELETE sent with a
//! body, an action that takes none) left it in the socket: hyper then closes the keep-alive
//! connection, and closing a socket with unread bytes resets it, which can cut the answer on its
//! way (issue 18). Reading and discarding the rest, up to `max_body_bytes` and for at most
//! [`DRAIN_TIMEOUT`], keeps the connection; a body beyond either bound closes it after the
//! answer, as before. HTTP/2 ends an unread stream on its own without touching the connection.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::state::AppState;

/// How long the rest of a body may take to arrive once the answer is ready.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The middleware: hands the handler the body through a shared reader, then drains that reader.
pub async fn unread_body(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !carries_body(&req) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let rest = Arc::new(Mutex::new(body.into_data_stream()));
    let handed = Body::from_stream(futures_util::stream::unfold(
        rest.clone(),
        |reader| async move {
            let chunk = reader.lock().await.next().await;
            chunk.map(|c| (c, reader))
        },
    ));
    let mut resp = next.run(Request::from_parts(parts, handed)).await;
    let limit = state.config.max_body_bytes;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut reader = rest.lock().await;
        let mut left = limit;
        while let Some(chunk) = reader.next().await {
            match chunk {
                Ok(c) if c.len() <= left => left -= c.len(),
                _ => return false,
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if !drained {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// An HTTP/1.x request that says it has a body and does not wait for `100 Continue` (a client
/// that waits sends no body when the answer comes first).
fn carries_body(req: &Request) -> bool {
    let h = req.headers();
    let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    let sized = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let chunked = h.contains_key(header::TRANSFER_ENCODING);
    http1 && (sized || chunked) && !h.contains_key(header::EXPECT)
}
