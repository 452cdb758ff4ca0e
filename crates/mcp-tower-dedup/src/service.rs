//! [`Dedup`]: the service.

use std::{
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    task::{Context, Poll},
};

use mcp_tower_core::{CallToolResponse, ToolCall};
use rmcp::ErrorData;
use tower_service::Service;

use crate::{
    DedupHandle, ResponseFuture,
    flight::{FlightTable, Joined, Stats},
};

/// Runs concurrent identical tool calls once: every caller with the same [`CallKey`]
/// that arrives while a call runs gets its outcome. Built by [`DedupLayer`], or alone with
/// [`Dedup::new`]. See the [crate documentation](crate) for the rules.
///
/// Cloning is cheap (the inner service's clone and one reference count) and clones share
/// their flights. Two services built by separate [`Layer::layer`] calls never share flights,
/// even from one [`DedupLayer`]: they wrap different inner services.
///
/// [`CallKey`]: mcp_tower_core::CallKey
/// [`DedupLayer`]: crate::DedupLayer
/// [`Layer::layer`]: tower_layer::Layer::layer
pub struct Dedup<S> {
    inner: S,
    table: Arc<FlightTable>,
    enabled: bool,
}

impl<S> Dedup<S> {
    /// Deduplicates calls to `inner`, with counters of its own.
    pub fn new(inner: S) -> Self {
        Self::from_parts(inner, Arc::new(Stats::default()), true)
    }

    pub(crate) fn from_parts(inner: S, stats: Arc<Stats>, enabled: bool) -> Self {
        Self {
            inner,
            table: Arc::new(FlightTable::new(stats)),
            enabled,
        }
    }

    /// The handle to this service's counters (shared with its layer's, when it has one).
    pub fn handle(&self) -> DedupHandle {
        DedupHandle::new(Arc::clone(self.table.stats()), self.enabled)
    }

    /// Keys with a call in flight in this service (and its clones).
    pub fn in_flight_keys(&self) -> usize {
        self.table.len()
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

impl<S: Clone> Clone for Dedup<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            table: Arc::clone(&self.table),
            enabled: self.enabled,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Dedup<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("inner", &self.inner)
            .field("enabled", &self.enabled)
            .field("flights", &self.table)
            .finish()
    }
}

impl<S> Service<ToolCall> for Dedup<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = ResponseFuture<S>;

    /// The inner service's readiness. A call that joins a flight does not use it (it never
    /// reaches the inner service); in mcp-tower's stack the layers below take their permits
    /// in `call`, so a follower holds none.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        if !self.enabled || !call.policy().dedup {
            if self.enabled && call.bypasses_anonymous() {
                self.table
                    .stats()
                    .bypassed_anonymous
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return ResponseFuture::inner(self.inner.call(call));
        }
        match self.table.join_or_lead(&call) {
            Joined::Follower(waiter) => {
                // Should the flight's response be the leader's alone (`InputRequired`,
                // `Task`), this follower runs its own call, on a clone of the inner service
                // (kept once, at the first follower) that it drives to readiness itself.
                self.table.keep_prototype(&self.inner);
                let cancellation = call.cancellation().cloned();
                ResponseFuture::waiting(waiter, cancellation, Some(call))
            }
            Joined::Leader { mut lead, token } => {
                let cancellation = call.cancellation().cloned();
                // The flight runs the leader's call with a token of its own, cancelled only
                // when the last waiter leaves: the leader cancelling must not stop the work
                // the others wait for.
                let flight_call = match token {
                    Some(token) => call.into_with_cancellation(token),
                    None => call,
                };
                match catch_unwind(AssertUnwindSafe(|| self.inner.call(flight_call))) {
                    Ok(future) => {
                        lead.start(Box::pin(future));
                        ResponseFuture::leading(lead, cancellation)
                    }
                    Err(payload) => ResponseFuture::answered(lead.fail_to_start(payload)),
                }
            }
        }
    }
}
