//! [`Metrics`]: the service that records each tool call.

use std::task::{Context, Poll};

use mcp_tower_core::ToolCall;
use rmcp::{ErrorData, model::CallToolResponse};
use tower_service::Service;

use crate::{MetricsHandle, ResponseFuture, future::CallRecord};

/// Records each call of the inner service: `mcp_tool_calls_total{tool,outcome}`,
/// `mcp_tool_call_duration_seconds{tool,outcome}`, `mcp_tool_calls_in_flight{tool}` and the
/// `/stats` windows of its tool.
///
/// The `tool` label is the call's `policy().label()`: the tool's name when the policy table
/// knows it, `unknown` otherwise, so clients cannot create series by making up names. The
/// tool's metric handles are resolved by `ToolId`, once per tool, not per call. The start
/// of a call is `call.received_at()` (no clock read here); its end is read once, when the
/// inner future completes.
///
/// It neither waits nor changes anything: readiness, responses and errors are the inner
/// service's. A call whose future is dropped before it completes is counted as
/// `cancelled`; one whose inner future panics, as `error` (and the panic goes on).
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    handle: MetricsHandle,
}

impl<S> Metrics<S> {
    /// Records the calls of `inner` into `handle`.
    pub fn new(inner: S, handle: MetricsHandle) -> Self {
        Self { inner, handle }
    }

    /// The handle it records into.
    pub fn handle(&self) -> &MetricsHandle {
        &self.handle
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<ToolCall> for Metrics<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = ResponseFuture<S::Future>;

    /// The inner service's readiness: this layer adds no back-pressure of its own.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let record = CallRecord::start(&self.handle.shared, &call);
        ResponseFuture::new(self.inner.call(call), record)
    }
}
