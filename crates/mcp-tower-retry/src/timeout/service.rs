//! [`Timeout`]: the service.

use std::task::{Context, Poll};

use mcp_tower_core::{CallToolResponse, ToolCall};
use rmcp::ErrorData;
use tower_service::Service;

use super::{config::TimeoutConfig, future::ResponseFuture};

/// Bounds each attempt of a tool call by the tool's timeout
/// ([`ToolPolicy::timeout`](mcp_tower_core::ToolPolicy), default 30 s).
///
/// An attempt that takes longer is dropped (so the inner call is cancelled) and the call
/// fails with [`TimedOut`](mcp_tower_core::error::TimedOut): "tool `x` timed out after
/// 30s". That error is transient, so a [`Retry`](crate::Retry) layer outside this one may
/// try again, each attempt with its own full timeout.
///
/// The timer starts when the attempt first has to wait (its future returns `Pending`), so
/// an attempt that completes at once never touches the clock or the timer wheel.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    enabled: bool,
}

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: TimeoutConfig) -> Self {
        Self {
            inner,
            enabled: config.enabled,
        }
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

impl<S> Service<ToolCall> for Timeout<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let after = if self.enabled {
            call.policy().timeout
        } else {
            None
        };
        match after {
            Some(after) => ResponseFuture::timed(self.inner.call(call.clone()), call, after),
            None => ResponseFuture::untimed(self.inner.call(call)),
        }
    }
}
