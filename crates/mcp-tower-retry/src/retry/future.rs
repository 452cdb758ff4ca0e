//! [`ResponseFuture`]: the retry loop.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use mcp_tower_core::{
    CallToolResponse, ToolCall,
    error::{Cancelled, Layer, RetriesExhausted, is_transient, retry_after},
};
use pin_project_lite::pin_project;
use rmcp::ErrorData;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use super::handle::{BackingOff, Counters, Shared};

pin_project! {
    /// The future of [`Retry`](crate::Retry): the current attempt, or the wait before the
    /// next one.
    ///
    /// For a call that may not be retried it is the inner future and nothing else. For one
    /// that may, it also holds a clone of the call (one reference count) and of the inner
    /// service; the wait before a retry (a timer and a watch on the request's
    /// cancellation token) is allocated only when a retry is decided.
    pub struct ResponseFuture<S>
    where
        S: Service<ToolCall>,
    {
        #[pin]
        state: State<S::Future>,
        retrying: Option<Retrying<S>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Attempt {
            #[pin]
            future: F,
        },
        Waiting {
            wait: Pin<Box<Wait>>,
        },
        Done,
    }
}

pin_project! {
    /// Between two attempts: the backoff timer, the cancellation watch, and the
    /// `backing_off` gauge for as long as it lives.
    struct Wait {
        #[pin]
        sleep: Sleep,
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
        slept: bool,
        _backing_off: BackingOff,
    }
}

impl Wait {
    fn new(until: Instant, token: Option<&CancellationToken>, shared: &Arc<Shared>) -> Self {
        Self {
            sleep: sleep_until(until),
            cancelled: token.map(|token| token.clone().cancelled_owned()),
            slept: false,
            _backing_off: BackingOff::new(shared),
        }
    }
}

/// What a retryable call keeps besides its current attempt.
pub(crate) struct Retrying<S> {
    /// A clone of the inner service, driven to readiness before each retry.
    service: S,
    call: ToolCall,
    shared: Arc<Shared>,
    /// Attempts started so far.
    attempts: u32,
}

/// What to do after an attempt.
enum Decision {
    /// Return the attempt's result.
    Return,
    /// Wait, then try again.
    Retry(Pin<Box<Wait>>),
    /// Stop retrying (the reason) and return the result, wrapped if it is an error.
    GiveUp(&'static str),
    /// The client cancelled the call.
    Cancelled,
}

impl<S> Retrying<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    pub(crate) fn new(service: S, call: ToolCall, shared: Arc<Shared>) -> Self {
        Self {
            service,
            call,
            shared,
            attempts: 1,
        }
    }

    fn cancelled(&self) -> ErrorData {
        Counters::bump(&self.shared.counters.cancelled);
        Cancelled {
            layer: Layer::Retry,
            tool: self.call.name().to_owned(),
        }
        .into()
    }

    /// Decides, after an attempt, between returning its result, waiting for a retry, and
    /// giving up. Takes the result by reference: on the path without failure it is
    /// returned without being moved again (it is large).
    fn decide(&mut self, result: &Result<CallToolResponse, ErrorData>) -> Decision {
        let counters = &self.shared.counters;
        match result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
                if !self.call.policy().retry_on_tool_error {
                    return Decision::Return;
                }
            }
            Ok(_) => {
                if self.attempts > 1 {
                    Counters::bump(&counters.recovered);
                }
                return Decision::Return;
            }
            Err(error) if is_transient(error) => {}
            // A caller mistake or a rejection: repeating it cannot help.
            Err(_) => return Decision::Return,
        }
        if self.call.is_cancelled() {
            return Decision::Cancelled;
        }

        let config = &self.shared.config;
        if self.attempts >= config.max_attempts {
            return Decision::GiveUp("max_attempts");
        }
        let mut delay = self.shared.backoff.delay(self.attempts);
        // The failing layer's own word on when a repeat can succeed (the pool's
        // `connect_backoff`): retrying sooner would only spend an attempt.
        if let Err(error) = result
            && let Some(hint) = retry_after(error)
        {
            if hint > config.max_delay {
                return Decision::GiveUp("deadline");
            }
            delay = delay.max(hint);
        }
        let now = Instant::now();
        let resume = now.checked_add(delay);
        let deadline = self.call.received_at().checked_add(config.deadline);
        match resume {
            Some(resume) if deadline.is_none_or(|deadline| resume <= deadline) => {
                if self.shared.budget.withdraw(now) {
                    let wait = Wait::new(resume, self.call.cancellation(), &self.shared);
                    return Decision::Retry(Box::pin(wait));
                }
                Counters::bump(&counters.budget_exhausted);
                Decision::GiveUp("budget")
            }
            _ => Decision::GiveUp("deadline"),
        }
    }

    /// The answer of a call whose retries stopped (`stopped_by`) after a retryable failure.
    fn give_up(
        &self,
        stopped_by: &'static str,
        result: Result<CallToolResponse, ErrorData>,
    ) -> Result<CallToolResponse, ErrorData> {
        Counters::bump(&self.shared.counters.gave_up);
        match result {
            Err(last) => Err(RetriesExhausted {
                tool: self.call.name().to_owned(),
                attempts: self.attempts,
                stopped_by,
                last,
            }
            .into()),
            // The tool's own `isError` result: the model reads its message.
            tool_error => tool_error,
        }
    }

    /// Waits out the backoff (unless the call is cancelled), then for the service to be
    /// ready, and starts the next attempt.
    fn poll_wait(
        &mut self,
        wait: Pin<&mut Wait>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Future, ErrorData>> {
        let wait = wait.project();
        if let Some(cancelled) = wait.cancelled.as_pin_mut()
            && cancelled.poll(cx).is_ready()
        {
            return Poll::Ready(Err(self.cancelled()));
        }
        if !*wait.slept {
            ready!(wait.sleep.poll(cx));
            *wait.slept = true;
        }
        ready!(self.service.poll_ready(cx))?;
        self.attempts += 1;
        Counters::bump(&self.shared.counters.retries);
        Poll::Ready(Ok(self.service.call(self.call.clone())))
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<ToolCall>,
{
    /// A call that is not retried: the inner future alone.
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Attempt { future },
            retrying: None,
        }
    }

    /// A retryable call's first attempt.
    pub(crate) fn retrying(future: S::Future, retrying: Retrying<S>) -> Self {
        Self {
            state: State::Attempt { future },
            retrying: Some(retrying),
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match (this.state.as_mut().project(), this.retrying.as_mut()) {
                (StateProj::Attempt { future }, retrying) => {
                    let output = future.poll(cx);
                    let (Poll::Ready(result), Some(retrying)) = (&output, retrying) else {
                        // Pending, or a call that is not retried: the inner future's own.
                        return output;
                    };
                    match retrying.decide(result) {
                        Decision::Return => return output,
                        Decision::Retry(wait) => this.state.set(State::Waiting { wait }),
                        Decision::GiveUp(stopped_by) => {
                            this.state.set(State::Done);
                            return output.map(|result| retrying.give_up(stopped_by, result));
                        }
                        Decision::Cancelled => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(retrying.cancelled()));
                        }
                    }
                }
                (StateProj::Waiting { wait }, Some(retrying)) => {
                    match ready!(retrying.poll_wait(wait.as_mut(), cx)) {
                        Ok(future) => this.state.set(State::Attempt { future }),
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                // `Waiting` is only ever entered with `retrying` set.
                (StateProj::Waiting { .. }, None) | (StateProj::Done, _) => {
                    panic!("retry ResponseFuture polled after completion")
                }
            }
        }
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<ToolCall>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Attempt { .. } => "attempt",
            State::Waiting { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("retryable", &self.retrying.is_some())
            .field(
                "attempts",
                &self.retrying.as_ref().map_or(1, |r| r.attempts),
            )
            .finish()
    }
}
