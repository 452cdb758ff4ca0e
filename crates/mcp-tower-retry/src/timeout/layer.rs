//! [`TimeoutLayer`].

use tower_layer::Layer;

use super::{config::TimeoutConfig, service::Timeout};

/// Wraps a service in [`Timeout`].
#[derive(Debug, Clone, Default)]
pub struct TimeoutLayer {
    config: TimeoutConfig,
}

impl TimeoutLayer {
    /// A layer with this configuration.
    pub fn new(config: TimeoutConfig) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.config.clone())
    }
}
