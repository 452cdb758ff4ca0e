//! [`PoolFuture`]: the future of [`PoolService`](super::PoolService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use mcp_tower_core::CallToolResponse;
use rmcp::ErrorData;

type Forwarding = Pin<Box<dyn Future<Output = Result<CallToolResponse, ErrorData>> + Send>>;

enum State {
    /// Routing failed: the error, once.
    Failed(Option<ErrorData>),
    /// The upstream call: a pooled session's request, whose type rmcp's `async fn`s do
    /// not let us name, hence the box.
    Forwarding(Forwarding),
}

/// The future of a [`PoolService`](super::PoolService) call: an immediate routing error,
/// or the upstream call.
pub struct PoolFuture {
    state: State,
}

impl PoolFuture {
    pub(super) fn failed(error: ErrorData) -> Self {
        Self {
            state: State::Failed(Some(error)),
        }
    }

    pub(super) fn forwarding(future: Forwarding) -> Self {
        Self {
            state: State::Forwarding(future),
        }
    }
}

impl fmt::Debug for PoolFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Failed(_) => "failed",
            State::Forwarding(_) => "forwarding",
        };
        f.debug_struct("PoolFuture").field("state", &state).finish()
    }
}

impl Future for PoolFuture {
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Failed(error) => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => panic!("PoolFuture polled after completion"),
            },
            State::Forwarding(future) => future.as_mut().poll(cx),
        }
    }
}
