//! [`ResponseFuture`]: the future of a [`Cache`](crate::Cache) call.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use mcp_tower_core::ToolCall;
use pin_project_lite::pin_project;
use rmcp::{ErrorData, model::CallToolResponse};
use tower::{Service, util::Oneshot};

use crate::{
    CacheEntry,
    state::{CacheState, Decision, Fill, Plan},
};

type PendingLookup = Pin<Box<dyn Future<Output = Option<Arc<CacheEntry>>> + Send>>;

pin_project! {
    /// The future of a [`Cache`](crate::Cache) call: a hit (ready at once), a call of the
    /// inner service (on a miss, storing its result when it comes back; or for a call that
    /// is not cached), or a lookup in a store that answers later.
    ///
    /// The inner call runs inside this future, on the caller's task; dropping the future
    /// drops it, and stores nothing.
    pub struct ResponseFuture<S>
    where
        S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
    {
        #[pin]
        kind: Kind<S>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S>
    where
        S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
    {
        Hit {
            response: Option<CallToolResponse>,
        },
        Bypass {
            #[pin]
            inner: Oneshot<S, ToolCall>,
        },
        Miss {
            #[pin]
            inner: Oneshot<S, ToolCall>,
            // Boxed, like `waiting` below: only a miss (which calls the tool) pays for
            // it, and the future every hit moves around stays small.
            fill: Option<Box<Fill>>,
        },
        Lookup {
            lookup: PendingLookup,
            waiting: Option<Box<Waiting<S>>>,
        },
    }
}

/// A call waiting for a store's answer.
struct Waiting<S> {
    state: Arc<CacheState>,
    call: ToolCall,
    inner: S,
    plan: Plan,
}

impl<S> ResponseFuture<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    pub(crate) fn hit(response: CallToolResponse) -> Self {
        Self {
            kind: Kind::Hit {
                response: Some(response),
            },
        }
    }

    pub(crate) fn bypass(inner: S, call: ToolCall) -> Self {
        Self {
            kind: Kind::Bypass {
                inner: Oneshot::new(inner, call),
            },
        }
    }

    pub(crate) fn miss(inner: S, call: ToolCall, fill: Fill) -> Self {
        Self {
            kind: Kind::Miss {
                inner: Oneshot::new(inner, call),
                fill: Some(Box::new(fill)),
            },
        }
    }

    pub(crate) fn lookup(
        lookup: PendingLookup,
        state: Arc<CacheState>,
        call: ToolCall,
        inner: S,
        plan: Plan,
    ) -> Self {
        Self {
            kind: Kind::Lookup {
                lookup,
                waiting: Some(Box::new(Waiting {
                    state,
                    call,
                    inner,
                    plan,
                })),
            },
        }
    }

    /// What to do once the store answered.
    pub(crate) fn decided(
        state: &Arc<CacheState>,
        found: Option<Arc<CacheEntry>>,
        call: ToolCall,
        plan: Plan,
        inner: impl FnOnce() -> S,
    ) -> Self {
        match state.decide(found, &call, plan) {
            Decision::Hit(response) => Self::hit(response),
            Decision::Miss(fill) => Self::miss(inner(), call, fill),
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().kind.project() {
                KindProj::Hit { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        None => Poll::Ready(Err(polled_after_completion())),
                    };
                }
                KindProj::Bypass { inner } => return inner.poll(cx),
                KindProj::Miss { inner, fill } => {
                    let outcome = ready!(inner.poll(cx));
                    return Poll::Ready(match fill.take() {
                        Some(fill) => fill.complete(outcome),
                        None => outcome,
                    });
                }
                KindProj::Lookup { lookup, waiting } => {
                    let found = ready!(lookup.as_mut().poll(cx));
                    let Some(waiting) = waiting.take() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let Waiting {
                        state,
                        call,
                        inner,
                        plan,
                    } = *waiting;
                    Self::decided(&state, found, call, plan, || inner).kind
                }
            };
            self.as_mut().project().kind.set(next);
        }
    }
}

fn polled_after_completion() -> ErrorData {
    ErrorData::internal_error(
        "mcp-tower-cache: ResponseFuture polled after completion",
        None,
    )
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Hit { .. } => "hit",
            Kind::Bypass { .. } => "bypass",
            Kind::Miss { .. } => "miss",
            Kind::Lookup { .. } => "lookup",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
