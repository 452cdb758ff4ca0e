//! [`Retry`]: the service.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use mcp_tower_core::{CallToolResponse, ToolCall};
use rmcp::ErrorData;
use tower_service::Service;

use super::{
    config::{InvalidConfig, RetryConfig},
    future::{ResponseFuture, Retrying},
    handle::{RetryHandle, Shared},
};

/// Retries the transient failures of tools whose policy allows it, with jittered
/// exponential backoff, within a retry budget and an overall deadline.
///
/// - **Which calls**: those whose [`ToolPolicy::retry`](mcp_tower_core::ToolPolicy) is on
///   (read-only or idempotent by annotation, or configured). Any other call is passed to
///   the inner service once and its future returned as is.
/// - **Which failures**: errors [`is_transient`](mcp_tower_core::error::is_transient)
///   (timed out, upstream unavailable, transport closed), and `isError` results of tools
///   with `retry_on_tool_error`. Everything else (invalid params, unknown tool, busy…)
///   is returned at once, unchanged.
/// - **How long it waits**: a jittered exponential backoff, or the failure's retry hint
///   (`data.retryAfterMs`, read with [`retry_after`](mcp_tower_core::error::retry_after))
///   when that is longer: the pool's error during its `connect_backoff` says when the
///   next connect may be tried, and an attempt before then would fail at once.
/// - **When it stops**: after `max_attempts`, when the next retry could not start before
///   the deadline (or the hint is longer than `max_delay`: both stop at once, without
///   waiting, as `stoppedBy = "deadline"`), or when the budget is exhausted. A failed call then returns
///   [`RetriesExhausted`](mcp_tower_core::error::RetriesExhausted) wrapping the last error
///   (an `isError` result is returned as it is, so the model still reads the tool's
///   message). `RetriesExhausted` is not transient, so a retry layer further out does not
///   multiply the attempts.
/// - **Cancellation**: the call's request token stops the loop at once, also during a
///   backoff, with [`Cancelled`](mcp_tower_core::error::Cancelled); dropping the future
///   stops it too.
///
/// Every attempt runs on the caller's task (nothing is spawned). `poll_ready` is the
/// inner service's; before a retry the future waits for a clone of it to be ready.
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with its own budget and figures (a [`RetryLayer`](crate::RetryLayer)
    /// shares them between the services it builds).
    pub fn new(inner: S, config: RetryConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self::from_shared(inner, Arc::new(Shared::new(config))))
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The handle on the figures and budget.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle::new(Arc::clone(&self.shared))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S> Service<ToolCall> for Retry<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let shared = &self.shared;
        if !shared.retries_enabled() || !call.policy().retry {
            return ResponseFuture::passthrough(self.inner.call(call));
        }
        shared.budget.deposit(call.received_at());
        shared.counters.calls.increment();
        // The ready service takes the first attempt; a clone waits for the retries.
        let retrying = Retrying::new(self.inner.clone(), call.clone(), Arc::clone(shared));
        ResponseFuture::retrying(self.inner.call(call), retrying)
    }
}
