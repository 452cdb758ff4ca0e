//! What the integration tests share: building layers, calls with a request context, and
//! waiting for a condition without sleeping.
#![allow(dead_code, unreachable_pub)]

use std::{sync::Arc, time::Duration};

use mcp_tower_concurrency::{
    ConcurrencyConfig, ConcurrencyHandle, ConcurrencyLayer, ConcurrencyLimit,
};
use mcp_tower_core::{
    CallResolver, PolicyDefaults, PolicyTable, ToolCall, ToolOverride, error::ErrorKind,
    testing::ScriptedService,
};
use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler,
    model::{CallToolRequestParams, CallToolResponse, NumberOrString},
    object,
    service::{RequestContext, RunningService},
};
use tokio_util::sync::CancellationToken;
use tower::Layer;

/// A resolver whose table gives each `(tool, limit)` its `max_concurrency`.
pub fn resolver(limits: &[(&str, usize)]) -> Arc<CallResolver> {
    let mut table = PolicyTable::new(PolicyDefaults::default());
    for (tool, limit) in limits {
        table = table.with_override(*tool, ToolOverride::default().with_max_concurrency(*limit));
    }
    // A tool known to the table without a limit of its own.
    table = table.with_override("free", ToolOverride::default());
    Arc::new(CallResolver::new(table))
}

pub fn config(max_in_flight: usize, max_queued: usize) -> ConcurrencyConfig {
    ConcurrencyConfig::default()
        .with_max_in_flight(max_in_flight)
        .with_max_queued(max_queued)
}

/// The layer around `inner`, and its handle.
pub fn limited(
    config: ConcurrencyConfig,
    inner: &ScriptedService,
) -> (ConcurrencyLimit<ScriptedService>, ConcurrencyHandle) {
    let layer = ConcurrencyLayer::new(config).expect("valid config");
    let handle = layer.handle();
    (layer.layer(inner.clone()), handle)
}

pub fn call(resolver: &Arc<CallResolver>, tool: &'static str, n: u64) -> ToolCall {
    ToolCall::with_resolver(tool, object!({ "n": n }), Arc::clone(resolver))
}

/// Keeps the rmcp service that owns the peer of [`call_with_token`]'s contexts alive.
pub struct Server {
    running: RunningService<RoleServer, NoTools>,
    _client: tokio::io::DuplexStream,
}

#[derive(Debug, Clone, Default)]
pub struct NoTools;
impl ServerHandler for NoTools {}

impl Server {
    /// An rmcp server on an in-memory pipe, only there to own a `Peer` (rmcp offers no
    /// other way to build a `RequestContext`).
    pub fn start() -> Self {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let running = rmcp::service::serve_directly(NoTools, server_io, None);
        Self {
            running,
            _client: client_io,
        }
    }

    pub fn peer(&self) -> Peer<RoleServer> {
        self.running.peer().clone()
    }

    /// A call carrying a request context, as rmcp hands it to `call_tool`, and its
    /// cancellation token (what `notifications/cancelled` fires).
    pub fn call_with_token(
        &self,
        resolver: &Arc<CallResolver>,
        tool: &'static str,
        n: u64,
    ) -> (ToolCall, CancellationToken) {
        let context = RequestContext::new(NumberOrString::Number(n as i64), self.peer());
        let token = context.ct.clone();
        let params = CallToolRequestParams::new(tool).with_arguments(object!({ "n": n }));
        (
            ToolCall::from_request(params, Some(context), Arc::clone(resolver)),
            token,
        )
    }
}

/// Yields until `cond` holds; panics after many rounds rather than hang.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

pub fn kind(result: &Result<CallToolResponse, ErrorData>) -> Option<ErrorKind> {
    result.as_ref().err().and_then(ErrorKind::of)
}

pub fn data(error: &ErrorData) -> &serde_json::Map<String, serde_json::Value> {
    error
        .data
        .as_ref()
        .and_then(|d| d.as_object())
        .expect("our errors carry a data object")
}

/// The `n` argument the scripted echo saw, and its execution number.
pub fn echoed(response: &CallToolResponse) -> (u64, u64) {
    let CallToolResponse::Complete(result) = response else {
        panic!("expected a complete result: {response:?}");
    };
    let content = result.structured_content.as_ref().expect("echo content");
    (
        content["arguments"]["n"].as_u64().expect("n"),
        content["execution"].as_u64().expect("execution"),
    )
}

/// Runs a test body, failing it rather than hanging if it never finishes: on tokio's paused
/// clock the hour passes as soon as every task is stuck.
pub async fn within<F: std::future::Future>(body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), body)
        .await
        .expect("the test got stuck")
}
