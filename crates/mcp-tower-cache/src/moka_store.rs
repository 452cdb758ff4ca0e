//! [`MokaStore`]: the default, in-process [`CacheStore`], on moka's concurrent cache.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mcp_tower_core::{CallKey, CallKeyBuildHasher};
use moka::{Expiry, notification::RemovalCause, sync::Cache as MokaCache};

use crate::{CacheEntry, CacheStore, StoreLookup, StoreStats};

/// The default [`CacheStore`]: a [`moka::sync::Cache`] bounded by the estimated bytes of
/// its entries (a weigher, not an entry count), with a per-entry expiry (moka's
/// [`Expiry`]) from each entry's [`time_to_keep`](CacheEntry::time_to_keep), and
/// TinyLFU admission and eviction: when full, the least valuable entries go first.
///
/// Keys are [`CallKey`]s, already keyed hashes, so the map uses [`CallKeyBuildHasher`]
/// instead of hashing them again.
///
/// moka runs its maintenance (evictions, expirations) in small batches on the threads that
/// use it; [`CacheStore::run_pending_tasks`] runs it now.
#[derive(Clone)]
pub struct MokaStore {
    cache: MokaCache<CallKey, Arc<CacheEntry>, CallKeyBuildHasher>,
    removals: Arc<Removals>,
    max_bytes: u64,
}

#[derive(Debug, Default)]
struct Removals {
    evictions: AtomicU64,
    expirations: AtomicU64,
}

impl fmt::Debug for MokaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaStore")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .field("weighted_bytes", &self.cache.weighted_size())
            .finish()
    }
}

/// Each entry lives in moka for its own [`CacheEntry::time_to_keep`], counted from its
/// insertion; a replaced entry starts over.
struct EntryExpiry;

impl Expiry<CallKey, Arc<CacheEntry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &CallKey,
        entry: &Arc<CacheEntry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.time_to_keep())
    }

    fn expire_after_update(
        &self,
        _key: &CallKey,
        entry: &Arc<CacheEntry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.time_to_keep())
    }
}

impl MokaStore {
    /// A store holding at most `max_bytes` of entries (by their estimated weight).
    pub fn new(max_bytes: u64) -> Self {
        let removals = Arc::new(Removals::default());
        let counted = Arc::clone(&removals);
        let cache = MokaCache::builder()
            .name("mcp-tower-cache")
            .max_capacity(max_bytes)
            .weigher(|_key: &CallKey, entry: &Arc<CacheEntry>| entry.weight())
            .expire_after(EntryExpiry)
            .eviction_listener(move |_key, _entry, cause| match cause {
                RemovalCause::Size => {
                    counted.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    counted.expirations.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build_with_hasher(CallKeyBuildHasher::default());
        Self {
            cache,
            removals,
            max_bytes,
        }
    }

    /// The moka cache itself (to inspect it, or to run a benchmark against it).
    pub fn moka(&self) -> &MokaCache<CallKey, Arc<CacheEntry>, CallKeyBuildHasher> {
        &self.cache
    }
}

impl CacheStore for MokaStore {
    fn get(&self, key: &CallKey) -> StoreLookup {
        StoreLookup::ready(self.cache.get(key))
    }

    fn insert(&self, key: CallKey, entry: Arc<CacheEntry>) {
        self.cache.insert(key, entry);
    }

    fn remove(&self, key: &CallKey) {
        self.cache.invalidate(key);
    }

    fn invalidate_tool(&self, tool: &str) {
        // One pass over the entries; an admin operation, and the layer has already made
        // them unservable, so nothing waits on it.
        for (key, entry) in self.cache.iter() {
            if entry.tool() == tool {
                self.cache.invalidate(&*key);
            }
        }
    }

    fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.cache.entry_count(),
            weighted_bytes: self.cache.weighted_size(),
            max_bytes: Some(self.max_bytes),
            evictions: self.removals.evictions.load(Ordering::Relaxed),
            expirations: self.removals.expirations.load(Ordering::Relaxed),
        }
    }

    fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}
