//! [`ConcurrencyLayer`]: wraps a service in a [`ConcurrencyLimit`].

use std::sync::Arc;

use tower_layer::Layer;

use crate::{
    ConcurrencyConfig, ConcurrencyHandle, ConcurrencyLimit, InvalidConfig, limits::Limits,
};

/// Applies global and per-tool concurrency limits to the services it wraps.
///
/// The limits belong to the layer: every service it wraps (and every clone of them) shares
/// them, as tower's `GlobalConcurrencyLimitLayer` does. One layer serves one stack (one
/// policy table).
#[derive(Debug, Clone)]
pub struct ConcurrencyLayer {
    limits: Arc<Limits>,
}

impl ConcurrencyLayer {
    /// A layer with this configuration, validated here.
    pub fn new(config: ConcurrencyConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self {
            limits: Arc::new(Limits::new(config)),
        })
    }

    /// The handle to read the layer's gauges and change its limits at run time.
    pub fn handle(&self) -> ConcurrencyHandle {
        ConcurrencyHandle::new(Arc::clone(&self.limits))
    }
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::new(inner, Arc::clone(&self.limits))
    }
}
