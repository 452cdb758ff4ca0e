//! [`MetricsLayer`]: puts [`Metrics`] in front of a service.

use tower_layer::Layer;

use crate::{Metrics, MetricsHandle};

/// Records every tool call of the wrapped service into a [`MetricsHandle`].
///
/// Put it outermost (the `McpStack` builder does), so it sees every call, cache hits and
/// rejections included, with its whole latency.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    handle: MetricsHandle,
}

impl MetricsLayer {
    /// A layer recording into `handle`.
    pub fn new(handle: MetricsHandle) -> Self {
        Self { handle }
    }

    /// The handle it records into.
    pub fn handle(&self) -> &MetricsHandle {
        &self.handle
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner, self.handle.clone())
    }
}
