//! [`BodyBudget`]: a bound on the request bytes being handled at once.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};
use http_body::{Frame, SizeHint};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes (a semaphore has at most
/// `u32::MAX` permits per acquisition).
const UNIT: usize = 1024;

/// How long a client turned away is told to wait.
const RETRY_AFTER_SECS: u64 = 1;

/// At most `max_bytes` of request bodies handled at once. Each request takes its declared
/// `Content-Length` (or `max_body` when it declares none) on arrival, and gives it back
/// when its answer has been sent (or dropped). A request that does not fit is turned away
/// at once with 503, before its body is read.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: usize,
    max_body: usize,
}

impl BodyBudget {
    /// A budget of `max_bytes`, for bodies of at most `max_body` bytes.
    pub fn new(max_bytes: usize, max_body: usize) -> Self {
        let total = max_bytes.div_ceil(UNIT).max(1);
        Self {
            units: Arc::new(Semaphore::new(total)),
            total,
            max_body,
        }
    }

    /// The bytes not taken now (a multiple of 1 KiB).
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    /// The budget, in bytes (a multiple of 1 KiB).
    pub fn total(&self) -> usize {
        self.total * UNIT
    }

    fn reserve(&self, request: &Request) -> Option<OwnedSemaphorePermit> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // A body larger than `max_body` is refused with 413 further in; it reads at most
        // `max_body` bytes of it.
        let bytes = declared.unwrap_or(self.max_body).min(self.max_body);
        let units = u32::try_from(bytes.div_ceil(UNIT).clamp(1, self.total)).ok()?;
        Arc::clone(&self.units).try_acquire_many_owned(units).ok()
    }
}

/// The middleware: takes the request's share of the budget for as long as the request and
/// its answer's body live, or answers 503 with the busy error.
pub async fn limit_bodies(
    State(budget): State<BodyBudget>,
    request: Request,
    next: Next,
) -> Response {
    let Some(permit) = budget.reserve(&request) else {
        return full(&budget);
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Held {
            body,
            _permit: permit,
        }),
    )
}

fn full(budget: &BodyBudget) -> Response {
    super::busy_response(
        format!(
            "the server is handling {} bytes of requests, its limit (`http.max_body_bytes_in_flight`); retry in {RETRY_AFTER_SECS} s",
            budget.total() - budget.available()
        ),
        RETRY_AFTER_SECS,
        json!({"maxBodyBytesInFlight": budget.total()}),
    )
}

/// A response body that holds its request's share of the budget until it ends or is
/// dropped (an SSE answer may outlive the handler's return by a long way).
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(length: Option<usize>) -> Request {
        let mut builder = axum::http::Request::builder().method("POST").uri("/mcp");
        if let Some(length) = length {
            builder = builder.header(header::CONTENT_LENGTH, length);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_request_takes_its_declared_size_or_the_maximum() {
        let budget = BodyBudget::new(10 * UNIT, 4 * UNIT);
        let small = budget.reserve(&request(Some(100))).unwrap();
        assert_eq!(budget.available(), 9 * UNIT);
        let undeclared = budget.reserve(&request(None)).unwrap();
        assert_eq!(budget.available(), 5 * UNIT);
        let big = budget.reserve(&request(Some(4 * UNIT))).unwrap();
        assert_eq!(budget.available(), UNIT);
        assert!(budget.reserve(&request(Some(2 * UNIT))).is_none());
        // Declared beyond max_body: it takes max_body (and gets 413 further in).
        drop(big);
        assert!(budget.reserve(&request(Some(1 << 40))).is_some());
        drop((small, undeclared));
        assert_eq!(budget.available(), 10 * UNIT);
    }
}
