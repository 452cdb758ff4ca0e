//! [`ResponseFuture`]: a call running under its permits, or waiting in a queue for them.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use mcp_tower_core::{
    CallToolResponse, ToolCall,
    error::{Busy, BusyReason, Cancelled, Layer, QueueTimeout},
};
use pin_project_lite::pin_project;
use rmcp::ErrorData;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower_service::Service;

use crate::{
    limiter::{Admission, Limiter, Permit, Pressure, QueueSlot},
    limits::{Limits, Permits},
};

pin_project! {
    /// The future of [`ConcurrencyLimit`](crate::ConcurrencyLimit).
    ///
    /// A call admitted at once runs the inner future directly (no allocation). A call that
    /// must wait holds its place in the queue here (one allocation, on that slow path
    /// only), watching its queue deadline and its request's cancellation token.
    ///
    /// The permits are returned when the future is dropped, as with tower's
    /// `ConcurrencyLimit`: an executor drops a future as soon as it completes, and a
    /// future dropped early (a cancelled request) returns them, or leaves the queue, all
    /// the same.
    pub struct ResponseFuture<S>
    where
        S: Service<ToolCall>,
    {
        #[pin]
        state: State<S, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        Running {
            #[pin]
            future: F,
            permits: Permits,
        },
        Waiting {
            waiting: Pin<Box<Waiting<S>>>,
        },
        Failed {
            error: Option<ErrorData>,
        },
    }
}

impl<S: Service<ToolCall>> fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Waiting { .. } => "waiting",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Which limit a queued call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Tool,
    Global,
}

pin_project! {
    /// A call waiting for its permits: first its tool's, then the global one.
    pub(crate) struct Waiting<S> {
        call: Option<ToolCall>,
        // The inner service, ready (it answered `poll_ready` before the call).
        inner: Option<S>,
        limits: Arc<Limits>,
        // The tool's limiter while its permit is still to get.
        tool: Option<Arc<Limiter>>,
        tool_permit: Option<Permit>,
        slot: Option<(QueueSlot, Stage)>,
        // Permits taken without waiting after all (a release raced the fast path).
        admitted: Option<Permits>,
        #[pin]
        deadline: Sleep,
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
    }
}

/// The outcome of trying the remaining stages without waiting.
enum Admit {
    Ready(Permits),
    Queued(QueueSlot, Stage),
    Rejected(ErrorData),
}

/// Takes the permits still missing (the tool's, if `tool` is set, then the global one), or
/// queues for the first one that is not free, or is turned away.
fn admit(
    limits: &Arc<Limits>,
    tool: &mut Option<Arc<Limiter>>,
    tool_permit: &mut Option<Permit>,
) -> Admit {
    let max_queued = limits.config.max_queued;
    if let Some(limiter) = tool.take() {
        match limiter.acquire_or_enqueue(max_queued) {
            Admission::Acquired(permit) => *tool_permit = Some(permit),
            Admission::Queued(slot) => return Admit::Queued(slot, Stage::Tool),
            Admission::Full(pressure) => return Admit::Rejected(busy(limits, &limiter, pressure)),
        }
    }
    match limits.global.acquire_or_enqueue(max_queued) {
        Admission::Acquired(global) => {
            Admit::Ready(Permits::from_permits(limits, global, tool_permit.take()))
        }
        Admission::Queued(slot) => Admit::Queued(slot, Stage::Global),
        Admission::Full(pressure) => {
            // Give the tool's permit back before answering: it is no use to us now.
            tool_permit.take();
            Admit::Rejected(busy(limits, &limits.global, pressure))
        }
    }
}

fn tool_name(limiter: &Limiter) -> Option<String> {
    limiter.name().map(|name| name.to_string())
}

fn busy(limits: &Limits, limiter: &Limiter, pressure: Pressure) -> ErrorData {
    let config = &limits.config;
    Busy {
        layer: Layer::Concurrency,
        tool: tool_name(limiter),
        reason: if config.max_queued == 0 {
            BusyReason::LimitReached
        } else {
            BusyReason::QueueFull
        },
        in_flight: pressure.in_flight,
        queued: pressure.queued,
        retry_after: config.retry_after_for(pressure.queued, pressure.limit),
    }
    .into()
}

impl<S> ResponseFuture<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    /// A call admitted at once: `call` calls the inner service. (Called here, inside the
    /// future's construction, so that the inner future can be built in place rather than
    /// copied in.)
    #[inline]
    pub(crate) fn running(permits: Permits, call: impl FnOnce() -> S::Future) -> Self {
        Self {
            state: State::Running {
                permits,
                future: call(),
            },
        }
    }

    /// A call that could not take its permits at once (see [`start_slow`]).
    pub(crate) fn slow(slow: Slow<S>) -> Self {
        Self {
            state: match slow {
                Slow::Waiting(waiting) => State::Waiting { waiting },
                Slow::Failed(error) => State::Failed { error: Some(error) },
            },
        }
    }
}

/// How a call that could not take its permits at once goes on. Small on purpose: the
/// fast path's future is built in one place only, which keeps its large inner future from
/// being copied around.
pub(crate) enum Slow<S> {
    Waiting(Pin<Box<Waiting<S>>>),
    Failed(ErrorData),
}

/// The slow path: the call could not take a permit at once. `tool` is the tool's limiter if
/// its permit is still missing; `tool_permit` the tool permit already held. `inner` is the
/// ready inner service, to call once admitted.
pub(crate) fn start_slow<S>(
    call: ToolCall,
    inner: S,
    limits: &Arc<Limits>,
    mut tool: Option<Arc<Limiter>>,
    mut tool_permit: Option<Permit>,
) -> Slow<S> {
    if call.is_cancelled() {
        let limiter = tool.as_ref().unwrap_or(&limits.global);
        limiter.count_cancelled();
        return Slow::Failed(cancelled(Some(&call)));
    }
    let (slot, admitted) = match admit(limits, &mut tool, &mut tool_permit) {
        // Raced with a release: no need to wait after all.
        Admit::Ready(permits) => (None, Some(permits)),
        Admit::Rejected(error) => return Slow::Failed(error),
        Admit::Queued(slot, stage) => (Some((slot, stage)), None),
    };
    // The deadline counts from the call's arrival in the stack: no clock read here.
    let deadline = call.received_at() + limits.config.queue_timeout;
    let cancelled = call
        .cancellation()
        .cloned()
        .map(|token| token.cancelled_owned());
    Slow::Waiting(Box::pin(Waiting {
        call: Some(call),
        inner: Some(inner),
        limits: Arc::clone(limits),
        tool,
        tool_permit,
        slot,
        admitted,
        deadline: tokio::time::sleep_until(deadline),
        cancelled,
    }))
}

fn cancelled(call: Option<&ToolCall>) -> ErrorData {
    Cancelled {
        layer: Layer::Concurrency,
        tool: call.map(|c| c.name().to_owned()).unwrap_or_default(),
    }
    .into()
}

impl<S> Waiting<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    /// Waits for the missing permits.
    fn poll_admitted(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Permits, ErrorData>> {
        let mut this = self.project();
        if let Some(permits) = this.admitted.take() {
            return Poll::Ready(Ok(permits));
        }
        loop {
            if let Some((slot, stage)) = this.slot.as_mut() {
                // Cancellation first: a cancelled call never starts, even if its turn came.
                if let Some(cancel) = this.cancelled.as_mut().as_pin_mut()
                    && cancel.poll(cx).is_ready()
                {
                    if let Some(limiter) = slot.limiter() {
                        limiter.count_cancelled();
                    }
                    // Dropping the slot leaves the queue (passing on a permit granted
                    // meanwhile); the tool permit, if held, is returned too.
                    *this.slot = None;
                    *this.tool_permit = None;
                    return Poll::Ready(Err(cancelled(this.call.as_ref())));
                }
                match slot.poll_permit(cx) {
                    Poll::Ready(permit) => match *stage {
                        Stage::Tool => {
                            *this.tool_permit = Some(permit);
                            *this.slot = None;
                        }
                        Stage::Global => {
                            *this.slot = None;
                            let permits =
                                Permits::from_permits(this.limits, permit, this.tool_permit.take());
                            return Poll::Ready(Ok(permits));
                        }
                    },
                    Poll::Pending => {
                        ready!(this.deadline.as_mut().poll(cx));
                        let limiter = slot.limiter().cloned();
                        // Leave the queue first, so the hint counts only who stays.
                        *this.slot = None;
                        *this.tool_permit = None;
                        let error = match limiter {
                            Some(limiter) => {
                                limiter.count_timeout();
                                let pressure = limiter.pressure();
                                QueueTimeout {
                                    layer: Layer::Concurrency,
                                    tool: tool_name(&limiter),
                                    waited: this
                                        .call
                                        .as_ref()
                                        .map(|c| c.received_at().elapsed())
                                        .unwrap_or_default(),
                                    retry_after: this
                                        .limits
                                        .config
                                        .retry_after_for(pressure.queued, pressure.limit),
                                }
                                .into()
                            }
                            None => not_waiting(),
                        };
                        return Poll::Ready(Err(error));
                    }
                }
            }
            // Not queued: take the permits still missing, or queue for the next one.
            match admit(this.limits, this.tool, this.tool_permit) {
                Admit::Ready(permits) => return Poll::Ready(Ok(permits)),
                Admit::Queued(slot, stage) => *this.slot = Some((slot, stage)),
                Admit::Rejected(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl<S> Waiting<S> {
    /// The call and the ready service, to call it once admitted (taken once).
    fn take_call(self: Pin<&mut Self>) -> Option<(S, ToolCall)> {
        let this = self.project();
        Some((this.inner.take()?, this.call.take()?))
    }
}

/// Unreachable in practice: a waiting call is admitted at most once.
fn not_waiting() -> ErrorData {
    ErrorData::internal_error("concurrency layer: the call is not waiting any more", None)
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    type Output = Result<CallToolResponse, ErrorData>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            // The permits stay with the future until it is dropped, as with tower's
            // `ConcurrencyLimit` (every executor drops a future once it completes).
            // Returning them in `poll` instead would hold the answer across that and cost
            // a copy of it, and an answer is large.
            if let StateProj::Running { future, .. } = state.as_mut().project() {
                return future.poll(cx);
            }
            if let Some(error) = ready!(advance(state.as_mut(), cx)) {
                return Poll::Ready(Err(error));
            }
        }
    }
}

/// Moves a call that is not running forward: `Ready(None)` once it runs, `Ready(Some(_))`
/// when it ends without running. Out of line, so that the fast path of `poll` stays small.
#[cold]
#[inline(never)]
fn advance<S>(
    mut state: Pin<&mut State<S, S::Future>>,
    cx: &mut Context<'_>,
) -> Poll<Option<ErrorData>>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    match state.as_mut().project() {
        StateProj::Running { .. } => Poll::Ready(None),
        StateProj::Waiting { waiting } => match ready!(waiting.as_mut().poll_admitted(cx)) {
            Ok(permits) => {
                let Some((mut inner, call)) = waiting.as_mut().take_call() else {
                    state.set(State::Failed { error: None });
                    return Poll::Ready(Some(not_waiting()));
                };
                state.set(State::Running {
                    permits,
                    future: inner.call(call),
                });
                Poll::Ready(None)
            }
            Err(error) => {
                state.set(State::Failed { error: None });
                Poll::Ready(Some(error))
            }
        },
        StateProj::Failed { error } => match error.take() {
            Some(error) => Poll::Ready(Some(error)),
            None => panic!("concurrency ResponseFuture polled after completion"),
        },
    }
}
