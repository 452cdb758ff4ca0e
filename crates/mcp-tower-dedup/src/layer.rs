//! [`DedupLayer`]: wraps a service in a [`Dedup`].

use std::sync::Arc;

use tower_layer::Layer;

use crate::{Dedup, DedupConfig, DedupHandle, flight::Stats};

/// A [`Layer`] that wraps services in a [`Dedup`]. Every service it makes reports to one
/// [`DedupHandle`]; each keeps its own flights (they wrap different inner services).
///
/// ```
/// use mcp_tower_dedup::{DedupConfig, DedupLayer};
///
/// let layer = DedupLayer::new(DedupConfig::default());
/// let handle = layer.handle();
/// assert!(handle.is_enabled());
/// ```
#[derive(Debug, Clone)]
pub struct DedupLayer {
    config: DedupConfig,
    stats: Arc<Stats>,
}

impl DedupLayer {
    /// A deduplicator with these settings.
    pub fn new(config: DedupConfig) -> Self {
        Self {
            config,
            stats: Arc::new(Stats::default()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// The handle to the figures of every service this layer makes.
    pub fn handle(&self) -> DedupHandle {
        DedupHandle::new(Arc::clone(&self.stats), self.config.enabled)
    }
}

impl Default for DedupLayer {
    fn default() -> Self {
        Self::new(DedupConfig::default())
    }
}

impl<S> Layer<S> for DedupLayer {
    type Service = Dedup<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dedup::from_parts(inner, Arc::clone(&self.stats), self.config.enabled)
    }
}
