//! [`Cache`]: the service that answers cacheable tool calls from the store.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use mcp_tower_core::ToolCall;
use rmcp::{ErrorData, model::CallToolResponse};
use tower::Service;

use crate::{
    CacheConfig, CacheHandle, InvalidCacheConfig, MokaStore, ResponseFuture, state::CacheState,
};

/// Answers cacheable tool calls from a [`CacheStore`](crate::CacheStore) and stores the
/// results of the others; see the [crate documentation](crate). Built by
/// [`CacheLayer`](crate::CacheLayer); clones share the store.
///
/// # Back-pressure
///
/// The cache itself never pushes back, and a hit must not wait for the inner service: so
/// `poll_ready` is always ready, and a call that goes to the inner service (a miss, or a
/// call that is not cached) waits for the inner service's readiness inside its
/// [`ResponseFuture`] (as `ServiceExt::oneshot` does, on a clone of the inner service). A
/// concurrency limit below the cache therefore never delays a hit.
pub struct Cache<S> {
    inner: S,
    state: Arc<CacheState>,
}

impl<S> Cache<S> {
    /// Caches `inner`'s results in a [`MokaStore`] set up by `config`.
    pub fn new(inner: S, config: CacheConfig) -> Result<Self, InvalidCacheConfig> {
        config.validate()?;
        let store = Arc::new(MokaStore::new(config.max_bytes));
        Ok(Self::from_state(
            inner,
            Arc::new(CacheState::new(config, store)),
        ))
    }

    pub(crate) fn from_state(inner: S, state: Arc<CacheState>) -> Self {
        Self { inner, state }
    }

    /// The handle to read and steer this cache (shared by every clone).
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.state))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Drops the cache, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("state", &self.state)
            .finish()
    }
}

impl<S> Service<ToolCall> for Cache<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = ResponseFuture<S>;

    /// Always ready: see [Back-pressure](Cache#back-pressure).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let Some(plan) = self.state.plan(&call) else {
            self.state.counters.bypassed.add();
            if call.bypasses_anonymous() {
                self.state.counters.bypassed_anonymous.add();
            }
            return ResponseFuture::bypass(self.inner.clone(), call);
        };
        match self.state.store.get(&plan.key).into_ready() {
            Ok(found) => {
                ResponseFuture::decided(&self.state, found, call, plan, || self.inner.clone())
            }
            Err(lookup) => ResponseFuture::lookup(
                lookup,
                Arc::clone(&self.state),
                call,
                self.inner.clone(),
                plan,
            ),
        }
    }
}
