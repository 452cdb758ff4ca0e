//! [`ConcurrencyLimit`]: the service that takes a call's permits before calling the inner
//! service.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use mcp_tower_core::{CallToolResponse, ToolCall};
use rmcp::ErrorData;
use tower_service::Service;

use crate::{
    ConcurrencyHandle, ResponseFuture,
    future::{Slow, start_slow},
    limiter::{Limiter, Permit},
    limits::{Limits, Permits, ToolLimiter},
};

/// Runs a call only when it holds a permit of the global limit and one of its tool's,
/// queueing (bounded, first come first served) or turning it away otherwise.
///
/// Built by [`ConcurrencyLayer`](crate::ConcurrencyLayer). Cloning is one reference count
/// plus the inner service's clone; clones share the limits.
///
/// # Back-pressure
///
/// `poll_ready` only forwards the inner service's readiness. Permits are taken in `call`
/// because which limits apply depends on the request: a call of `search` needs a `search`
/// permit, and `poll_ready` does not know the tool yet. Taking the global permit in
/// `poll_ready` (as `tower::limit::ConcurrencyLimit` does) would also mean holding it while
/// the call then waits for its tool's permit, which would let one saturated tool starve
/// every other tool of global permits.
///
/// So the service always looks ready, and the back-pressure it applies is explicit instead:
/// a call that cannot run at once waits in a bounded queue for at most `queue_timeout`, and
/// is turned away at once with the busy error (`-31050`, with a `retryAfterMs` hint) when
/// the queue is full. A caller never hangs, and the memory a flood of calls takes is
/// bounded by `max_queued`. (rmcp spawns a task per request and has no readiness to
/// propagate to the transport, so an honest `Pending` here would only park that task
/// without bound.)
pub struct ConcurrencyLimit<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn new(inner: S, limits: Arc<Limits>) -> Self {
        Self { inner, limits }
    }

    /// The handle to read the gauges and change the limits at run time.
    pub fn handle(&self) -> ConcurrencyHandle {
        ConcurrencyHandle::new(Arc::clone(&self.limits))
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

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: Arc::clone(&self.limits),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("limits", &self.limits)
            .finish()
    }
}

impl<S> Service<ToolCall> for ConcurrencyLimit<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = ResponseFuture<S>;

    /// The inner service's readiness; permits are taken in `call` (see the type's docs).
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, call: ToolCall) -> Self::Future {
        // The tool's permit first, then the global one: a call never holds a global permit
        // while it waits for its tool's.
        let tool = self.limits.tool(call.policy());
        if let Some(t) = &tool
            && !t.limiter().try_take()
        {
            let tool = tool.map(ToolLimiter::into_arc);
            return ResponseFuture::slow(self.queue(call, tool, None));
        }
        if self.limits.global.try_take() {
            let permits = Permits::assume(&self.limits, tool);
            return ResponseFuture::running(permits, || self.inner.call(call));
        }
        let tool_permit = tool.map(|t| Permit::assume(t.into_arc()));
        ResponseFuture::slow(self.queue(call, None, tool_permit))
    }
}

impl<S> ConcurrencyLimit<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
{
    /// The slow path: a permit is not free. The ready inner service goes with the waiting
    /// call (a clone stays here, to be driven to readiness for the next call).
    #[cold]
    #[inline(never)]
    fn queue(
        &mut self,
        call: ToolCall,
        tool: Option<Arc<Limiter>>,
        tool_permit: Option<Permit>,
    ) -> Slow<S> {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        start_slow(call, ready, &self.limits, tool, tool_permit)
    }
}
