//! [`SessionCap`]: at most N live legacy sessions; an `initialize` beyond it gets 503.
//! [`VerifiedSessions`]: marks what rmcp routes to a live session, for the partitioner.

use std::sync::Arc;

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::Stream;
use mcp_tower_core::VerifiedSession;
use rmcp::{
    model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage},
    transport::streamable_http_server::session::{
        EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
        local::LocalSessionManager,
    },
};
use serde_json::json;

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
    super::busy_response(
        format!(
            "the server has {live} live sessions, its limit (`http.sessions.max = {max}`); retry in {RETRY_AFTER_SECS} s, or use the stateless 2026-07-28 protocol"
        ),
        RETRY_AFTER_SECS,
        json!({"sessions": live, "maxSessions": max}),
    )
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

/// rmcp's session manager `M` (the local one by default), marking every message it routes
/// to a live session with that session's [`VerifiedSession`].
///
/// rmcp calls the manager for a message only after it found the message's session
/// (`Mcp-Session-Id` of a session it knows, else 404). The mark goes in the extensions of
/// the request's [`Parts`](axum::http::request::Parts), where the default partitioner looks for it: a
/// legacy session is a caller identity, a bare `Mcp-Session-Id` header (on a stateless
/// 2026-07-28 request, which rmcp does not check) never is.
///
/// [`HttpEdge`](super::HttpEdge) uses it; wrap your manager in it when you mount rmcp's
/// `StreamableHttpService` yourself:
///
/// ```
/// use std::sync::Arc;
/// use mcp_tower::http::VerifiedSessions;
/// use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
///
/// let manager = Arc::new(VerifiedSessions::new(Arc::new(LocalSessionManager::default())));
/// # let _ = manager;
/// ```
#[derive(Debug)]
pub struct VerifiedSessions<M> {
    inner: Arc<M>,
}

impl<M> VerifiedSessions<M> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<M>) -> Self {
        Self { inner }
    }

    /// The wrapped manager.
    pub fn inner(&self) -> &Arc<M> {
        &self.inner
    }
}

/// Marks `message` as routed to the live session `id`.
fn mark(id: &SessionId, mut message: ClientJsonRpcMessage) -> ClientJsonRpcMessage {
    let extensions = match &mut message {
        ClientJsonRpcMessage::Request(request) => Some(request.request.extensions_mut()),
        ClientJsonRpcMessage::Notification(notification) => {
            Some(notification.notification.extensions_mut())
        }
        _ => None,
    };
    if let Some(parts) = extensions.and_then(|e| e.get_mut::<axum::http::request::Parts>()) {
        parts.extensions.insert(VerifiedSession(Arc::clone(id)));
    }
    message
}

impl<M: SessionManager> SessionManager for VerifiedSessions<M> {
    type Error = M::Error;
    type Transport = M::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, mark(id, message)).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, mark(id, message)).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, mark(id, message)).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.inner.restore_session(id).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}
