//! [`CacheLayer`]: wraps a service in a [`Cache`].

use std::{fmt, sync::Arc};

use tower::Layer;

use crate::{
    Cache, CacheConfig, CacheHandle, CacheStore, InvalidCacheConfig, MokaStore, state::CacheState,
};

/// A [`Layer`] that wraps services in a [`Cache`]. Every service it makes shares one store
/// and one [`CacheHandle`].
///
/// ```
/// use mcp_tower_cache::{CacheConfig, CacheLayer};
///
/// let layer = CacheLayer::new(CacheConfig::default().with_max_bytes(16 << 20))?;
/// let handle = layer.handle();
/// assert_eq!(handle.stats().hits, 0);
/// # Ok::<(), mcp_tower_cache::InvalidCacheConfig>(())
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    state: Arc<CacheState>,
}

impl CacheLayer {
    /// A cache with a [`MokaStore`] bounded by `config.max_bytes`. Fails if the
    /// configuration does not make sense.
    pub fn new(config: CacheConfig) -> Result<Self, InvalidCacheConfig> {
        config.validate()?;
        let store = MokaStore::new(config.max_bytes);
        Ok(Self::build(config, Arc::new(store)))
    }

    /// A cache keeping its entries in `store` (`config.max_bytes` is then the store's
    /// business; the other settings apply).
    pub fn with_store(
        config: CacheConfig,
        store: impl CacheStore,
    ) -> Result<Self, InvalidCacheConfig> {
        config.validate()?;
        Ok(Self::build(config, Arc::new(store)))
    }

    fn build(config: CacheConfig, store: Arc<dyn CacheStore>) -> Self {
        Self {
            state: Arc::new(CacheState::new(config, store)),
        }
    }

    /// The handle to read and steer the cache of every service this layer makes.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.state))
    }
}

impl Default for CacheLayer {
    /// A cache with the default configuration (64 MiB in a [`MokaStore`]).
    fn default() -> Self {
        let config = CacheConfig::default();
        let store = MokaStore::new(config.max_bytes);
        Self::build(config, Arc::new(store))
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.state.config)
            .field("store", &self.state.store)
            .finish()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::from_state(inner, Arc::clone(&self.state))
    }
}
