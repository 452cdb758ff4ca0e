//! [`RetryLayer`].

use std::sync::Arc;

use tower_layer::Layer;

use super::{
    config::{InvalidConfig, RetryConfig},
    handle::{RetryHandle, Shared},
    service::Retry,
};

/// Wraps a service in [`Retry`]. Every service built from one layer shares its retry budget
/// and its figures ([`RetryLayer::handle`]).
#[derive(Debug, Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// A layer with this configuration, validated here.
    pub fn new(config: RetryConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(config)),
        })
    }

    /// The handle on the layer's figures and budget.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle::new(Arc::clone(&self.shared))
    }
}

impl Default for RetryLayer {
    /// A layer with [`RetryConfig::default`].
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared::new(RetryConfig::default())),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::clone(&self.shared))
    }
}
