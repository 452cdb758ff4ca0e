//! [`CacheStore`]: where cached results live. The layer decides what to cache, for how
//! long and for whom; a store only keeps entries by [`CallKey`].

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use mcp_tower_core::CallKey;

use crate::CacheEntry;

/// Where the cache keeps its entries, by [`CallKey`].
///
/// [`MokaStore`](crate::MokaStore) (in-process, bounded in bytes) is the default. The layer
/// never assumes more than this trait, so a shared tier (Redis in front of several
/// replicas, a two-level store with moka in front) can be plugged in without touching it:
///
/// - [`get`](CacheStore::get) may answer at once ([`StoreLookup::ready`]: the hot path, no
///   allocation) or later ([`StoreLookup::pending`]: a network round trip, awaited inside
///   the call's future, never on another task);
/// - [`insert`](CacheStore::insert) and the invalidations must not block: a remote store
///   queues the write and returns.
///
/// The layer checks freshness (TTL on tokio's clock) and invalidation itself: a store may
/// return an expired or invalidated entry and the layer will not serve it as a hit. A store
/// only needs to expire entries eventually ([`CacheEntry::time_to_keep`]) to free memory.
pub trait CacheStore: Send + Sync + fmt::Debug + 'static {
    /// The entry stored under `key`, if any.
    fn get(&self, key: &CallKey) -> StoreLookup;

    /// Stores `entry` under `key`, replacing any entry there. The store may decline (a full
    /// store's admission policy may prefer the entries it has).
    fn insert(&self, key: CallKey, entry: Arc<CacheEntry>);

    /// Removes the entry under `key`, if any.
    fn remove(&self, key: &CallKey);

    /// Removes every entry of `tool`. The layer has already made them unservable; this only
    /// frees their memory, and may do so lazily.
    fn invalidate_tool(&self, tool: &str);

    /// Removes every entry. As with [`invalidate_tool`](CacheStore::invalidate_tool), the
    /// layer has already made them unservable.
    fn invalidate_all(&self);

    /// The store's own figures.
    fn stats(&self) -> StoreStats;

    /// Runs deferred maintenance (evictions, expirations) now, so that
    /// [`stats`](CacheStore::stats) is exact. A store without deferred work does nothing.
    fn run_pending_tasks(&self) {}
}

/// What a [`CacheStore`] reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Entries held now.
    pub entries: u64,
    /// Their total weight: the bytes estimated by
    /// [`estimate_result_bytes`](crate::estimate_result_bytes).
    pub weighted_bytes: u64,
    /// The bound on `weighted_bytes`, if the store has one.
    pub max_bytes: Option<u64>,
    /// Entries removed to stay within `max_bytes`, since the start.
    pub evictions: u64,
    /// Entries removed because they outlived [`CacheEntry::time_to_keep`], since the start.
    pub expirations: u64,
}

type PendingLookup = Pin<Box<dyn Future<Output = Option<Arc<CacheEntry>>> + Send>>;

/// The answer of [`CacheStore::get`]: an entry now, or a future one.
pub struct StoreLookup {
    inner: LookupKind,
}

enum LookupKind {
    Ready(Option<Arc<CacheEntry>>),
    Pending(PendingLookup),
}

impl StoreLookup {
    /// The answer is known now (an in-process store). No allocation.
    pub fn ready(entry: Option<Arc<CacheEntry>>) -> Self {
        Self {
            inner: LookupKind::Ready(entry),
        }
    }

    /// The answer comes later (a remote store). The layer polls `lookup` inside the call's
    /// future, on the caller's task.
    pub fn pending(lookup: impl Future<Output = Option<Arc<CacheEntry>>> + Send + 'static) -> Self {
        Self {
            inner: LookupKind::Pending(Box::pin(lookup)),
        }
    }

    /// The entry if the answer is known now, else the future answer.
    pub(crate) fn into_ready(self) -> Result<Option<Arc<CacheEntry>>, PendingLookup> {
        match self.inner {
            LookupKind::Ready(entry) => Ok(entry),
            LookupKind::Pending(lookup) => Err(lookup),
        }
    }
}

impl fmt::Debug for StoreLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            LookupKind::Ready(entry) => f.debug_tuple("StoreLookup::Ready").field(entry).finish(),
            LookupKind::Pending(_) => f.write_str("StoreLookup::Pending"),
        }
    }
}
