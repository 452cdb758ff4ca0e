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

use crate::flight::{Lead, Outcome, Share, Waiter};

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
        // Leading a flight: polling the inner future, watching the caller's own token.
        Leading {
            lead: Lead,
            #[pin]
            cancelled: Option<WaitForCancellationFutureOwned>,
        },
        // Following a flight; watching the caller's own cancellation token.
        Waiting {
            waiter: Waiter,
            #[pin]
            cancelled: Option<WaitForCancellationFutureOwned>,
            // A follower's call, to run on its own when the flight's response was the
            // leader's alone (`InputRequired`, `Task`).
            own_call: Option<ToolCall>,
        },
        // Running its own call: waiting for the inner service to be ready.
        Ready {
            service: S,
            call: Option<ToolCall>,
        },
        // Answered at once (the leader's call to the inner service panicked). Boxed: rare,
        // and it keeps the future no larger than the inner service's.
        Answered {
            outcome: Option<Box<Outcome>>,
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

    /// Runs `lead`'s flight, until it ends or `cancellation` (the caller's own request token)
    /// fires.
    pub(crate) fn leading(lead: Lead, cancellation: Option<CancellationToken>) -> Self {
        let cancelled = cancellation.map(CancellationToken::cancelled_owned);
        Self {
            state: State::Leading { lead, cancelled },
        }
    }

    /// Answers `outcome` at once.
    pub(crate) fn answered(outcome: Outcome) -> Self {
        Self {
            state: State::Answered {
                outcome: Some(Box::new(outcome)),
            },
        }
    }

    /// Waits for `waiter`'s flight, or until `cancellation` (the caller's own request
    /// token) fires.
    pub(crate) fn waiting(
        waiter: Waiter,
        cancellation: Option<CancellationToken>,
        own_call: Option<ToolCall>,
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
            State::Leading { .. } => "leading",
            State::Waiting { .. } => "waiting",
            State::Answered { .. } => "answered",
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
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone + 'static,
{
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Leading { lead, cancelled } => {
                    // rmcp does not drop a request's future on `notifications/cancelled`;
                    // it cancels the request's token. Leave the flight (the followers, if
                    // any, take it over) and answer at once.
                    if let Some(cancelled) = cancelled.as_pin_mut()
                        && cancelled.poll(cx).is_ready()
                    {
                        let error = lead.cancel();
                        state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    // Straight from the inner future to the caller (no `Done` in between:
                    // the outcome would wait in a local while the state is replaced, and
                    // be copied once more). A finished lead answers an error if polled again.
                    return lead.poll(cx);
                }
                StateProj::Answered { outcome } => {
                    let outcome = outcome.take();
                    state.set(State::Done);
                    return Poll::Ready(outcome.map_or_else(
                        || Err(ErrorData::internal_error("dedup: answered twice", None)),
                        |outcome| *outcome,
                    ));
                }
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
                        // The outcome is made here, in the answer (the last follower out moves
                        // it, the others clone it). The waiter has left the flight; polled
                        // again, it answers `Closed`.
                        Share::Shared(outcome) => {
                            return Poll::Ready(Arc::unwrap_or_clone(outcome));
                        }
                        Share::Closed => {
                            let error = waiter.flight().cancelled();
                            state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        // Told to run its own call: only followers are, and they have one.
                        Share::RunOwnCall => match (own_call.take(), waiter.own_service::<S>()) {
                            (Some(call), Some(service)) => {
                                state.set(State::Ready {
                                    service,
                                    call: Some(call),
                                });
                                continue;
                            }
                            _ => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A service whose own future is small (boxed), so that the flight's states decide the
    /// size of [`ResponseFuture`].
    #[derive(Clone)]
    struct Boxed;

    impl Service<ToolCall> for Boxed {
        type Response = CallToolResponse;
        type Error = ErrorData;
        type Future = Pin<Box<dyn Future<Output = Result<CallToolResponse, ErrorData>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ErrorData>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _call: ToolCall) -> Self::Future {
            Box::pin(std::future::pending())
        }
    }

    /// Every layer above moves a call's future at least once (into `Oneshot`, into
    /// `join_all`'s slots, ...). Up to 128 bytes the compiler does it inline; past that it
    /// calls `memcpy`, which cost three more calls per caller in `dedup/followers_16` when
    /// this future was 144 bytes.
    #[test]
    fn a_flight_future_is_at_most_128_bytes() {
        assert!(
            std::mem::size_of::<ResponseFuture<Boxed>>() <= 128,
            "{} bytes",
            std::mem::size_of::<ResponseFuture<Boxed>>()
        );
    }
}
