//! [`ResponseFuture`]: one attempt against its deadline.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use mcp_tower_core::{
    CallToolResponse, ToolCall,
    error::{Layer, TimedOut},
};
use pin_project_lite::pin_project;
use rmcp::ErrorData;
use tokio::time::Sleep;

pin_project! {
    /// The future of [`Timeout`](crate::Timeout).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Untimed {
            #[pin]
            future: F,
        },
        Timed {
            #[pin]
            future: F,
            // Armed when the attempt first returns `Pending`.
            #[pin]
            sleep: Option<Sleep>,
            call: ToolCall,
            after: Duration,
        },
        Done,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn untimed(future: F) -> Self {
        Self {
            state: State::Untimed { future },
        }
    }

    pub(crate) fn timed(future: F, call: ToolCall, after: Duration) -> Self {
        Self {
            state: State::Timed {
                future,
                sleep: None,
                call,
                after,
            },
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CallToolResponse, ErrorData>>,
{
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.state.as_mut().project() {
            StateProj::Untimed { future } => future.poll(cx),
            StateProj::Timed {
                future,
                mut sleep,
                call,
                after,
            } => {
                let output = future.poll(cx);
                if output.is_ready() {
                    return output;
                }
                if sleep.is_none() {
                    sleep.set(Some(tokio::time::sleep(*after)));
                }
                if let Some(timer) = sleep.as_pin_mut() {
                    ready!(timer.poll(cx));
                }
                let error = TimedOut {
                    layer: Layer::Timeout,
                    tool: call.name().to_owned(),
                    after: *after,
                };
                // Drop the attempt now (cancelling the inner call), not when our caller
                // drops this future.
                this.state.set(State::Done);
                Poll::Ready(Err(error.into()))
            }
            StateProj::Done => panic!("timeout ResponseFuture polled after completion"),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, after) = match &self.state {
            State::Untimed { .. } => ("untimed", None),
            State::Timed { sleep, after, .. } => {
                (if sleep.is_some() { "armed" } else { "timed" }, Some(after))
            }
            State::Done => ("done", None),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("after", &after)
            .finish()
    }
}
