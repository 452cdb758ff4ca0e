//! [`SessionCap`]: at most N live legacy sessions; an `initialize` beyond it gets 503.

use std::sync::Arc;

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::json;

use crate::error::codes;

/// How long a client turned away by the cap is told to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// The live-session cap over rmcp's local session manager. Session-opening requests go
/// through one at a time, so the count cannot overshoot.
#[derive(Debug, Clone)]
pub struct SessionCap {
    manager: Arc<LocalSessionManager>,
    max: usize,
    max_body: usize,
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl SessionCap {
    /// At most `max` live sessions of `manager`; bodies read to look for `initialize` are
    /// bounded by `max_body`.
    pub fn new(manager: Arc<LocalSessionManager>, max: usize, max_body: usize) -> Self {
        Self {
            manager,
            max,
            max_body,
            opening: Arc::default(),
        }
    }

    /// Live sessions now.
    pub async fn live(&self) -> usize {
        self.manager.sessions.read().await.len()
    }
}

/// Whether a request could open a session: a POST without `Mcp-Session-Id`, not on the
/// stateless 2026-07-28 protocol.
fn may_open_a_session(request: &Request) -> bool {
    request.method() == Method::POST
        && !request.headers().contains_key("mcp-session-id")
        && request
            .headers()
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v < "2026-07-28")
}

fn is_initialize(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Method<'a> {
        #[serde(borrow)]
        method: Option<&'a str>,
    }
    serde_json::from_slice::<Method<'_>>(body).is_ok_and(|m| m.method == Some("initialize"))
}

fn full(live: usize, max: usize) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": codes::BUSY.0,
            "message": format!(
                "the server has {live} live sessions, its limit (`http.sessions.max = {max}`); retry in {RETRY_AFTER_SECS} s, or use the stateless 2026-07-28 protocol"
            ),
            "data": {
                "layer": "http", "kind": "busy", "transient": false,
                "retryAfterMs": RETRY_AFTER_SECS * 1000, "sessions": live, "maxSessions": max
            }
        }
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// The middleware: an `initialize` that would open a session beyond the cap gets 503 with
/// `Retry-After` and the busy error; everything else passes untouched.
pub async fn cap_sessions(State(cap): State<SessionCap>, request: Request, next: Next) -> Response {
    if !may_open_a_session(&request) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, cap.max_body).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    };
    let initialize = is_initialize(&bytes);
    let request = Request::from_parts(parts, Body::from(bytes));
    if !initialize {
        return next.run(request).await;
    }
    let _one_at_a_time = cap.opening.lock().await;
    let live = cap.live().await;
    if live >= cap.max {
        return full(live, cap.max);
    }
    next.run(request).await
}
