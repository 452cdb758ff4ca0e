//! [`ResponseFuture`]: the future of a [`Dedup`](crate::Dedup) call.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use mcp_tower_core::{CallToolResponse, ToolCall};
use pin_project_lite::pin_project;
use rmcp::ErrorData;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use crate::flight::{Delivery, Waiter};

pin_project! {
    /// The future of a [`Dedup`](crate::Dedup) call: the inner service's own future for a
    /// call that is not deduplicated, else this caller's place in a flight.
    pub struct ResponseFuture<S: Service<ToolCall>> {
        #[pin]
        state: State<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<ToolCall>> {
        // Not deduplicated (or running its own call after a flight it could not share).
        Inner {
            #[pin]
            future: S::Future,
        },
        // Waiting for a flight; watching the caller's own cancellation token.
        Waiting {
            waiter: Waiter,
            #[pin]
            cancelled: Option<WaitForCancellationFutureOwned>,
            // A follower's way to run its own call when the flight's response was the
            // leader's alone (`InputRequired`, `Task`).
            own_call: Option<(S, ToolCall)>,
        },
        // Running its own call: waiting for the inner service to be ready.
        Ready {
            service: S,
            call: Option<ToolCall>,
        },
        Done,
    }
}

impl<S: Service<ToolCall>> ResponseFuture<S> {
    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    /// Waits for `waiter`'s flight, or until `cancellation` (the caller's own request
    /// token) fires.
    pub(crate) fn waiting(
        waiter: Waiter,
        cancellation: Option<CancellationToken>,
        own_call: Option<(S, ToolCall)>,
    ) -> Self {
        let cancelled = cancellation.map(CancellationToken::cancelled_owned);
        Self {
            state: State::Waiting {
                waiter,
                cancelled,
                own_call,
            },
        }
    }
}

impl<S: Service<ToolCall>> fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "inner",
            State::Waiting { .. } => "waiting",
            State::Ready { .. } => "running its own call",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Waiting {
                    waiter,
                    cancelled,
                    own_call,
                } => {
                    // rmcp does not drop a request's future on `notifications/cancelled`;
                    // it cancels the request's token. Leave the flight (it goes on for the
                    // others) and answer at once.
                    if let Some(cancelled) = cancelled.as_pin_mut()
                        && cancelled.poll(cx).is_ready()
                    {
                        waiter.leave();
                        let error = waiter.flight().cancelled();
                        state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    match ready!(waiter.poll(cx)) {
                        Delivery::Shared(outcome) => {
                            state.set(State::Done);
                            return Poll::Ready(Arc::unwrap_or_clone(outcome));
                        }
                        Delivery::Own(outcome) => {
                            state.set(State::Done);
                            return Poll::Ready(outcome);
                        }
                        Delivery::RunOwnCall => match own_call.take() {
                            Some((service, call)) => state.set(State::Ready {
                                service,
                                call: Some(call),
                            }),
                            None => {
                                // Only followers are told to run their own call.
                                state.set(State::Done);
                                return Poll::Ready(Err(ErrorData::internal_error(
                                    "dedup: a waiter without a call of its own was told to run it",
                                    None,
                                )));
                            }
                        },
                    }
                }
                StateProj::Ready { service, call } => {
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    let Some(call) = call.take() else {
                        state.set(State::Done);
                        return Poll::Ready(Err(ErrorData::internal_error(
                            "dedup: the call was already sent",
                            None,
                        )));
                    };
                    let future = service.call(call);
                    state.set(State::Inner { future });
                }
                StateProj::Done => panic!("dedup ResponseFuture polled after completion"),
            }
        }
    }
}
