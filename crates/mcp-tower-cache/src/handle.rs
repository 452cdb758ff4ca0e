//! [`CacheHandle`]: reads and steers a running cache; [`CacheStats`]: its figures.

use std::{fmt, sync::Arc};

use mcp_tower_core::{Figure, LayerReport};
use serde_json::{Value, json};

use crate::{CacheConfig, state::CacheState};

/// A cache's figures at one moment. Counters count since the start.
///
/// `entries` and `weighted_bytes` come from the store and may lag its last few operations
/// until its maintenance runs ([`CacheHandle::run_pending_tasks`] runs it now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Cacheable calls that went to the inner service (nothing fresh was stored).
    pub misses: u64,
    /// Calls that were not cacheable (their tool's policy has no TTL, the tool is unknown,
    /// or the cache is off) and went straight through.
    pub bypassed: u64,
    /// Of `bypassed`: calls to a private tool by an anonymous caller (no verified identity),
    /// which would otherwise have been cached (see `mcp_tower_core::Anonymous`).
    pub bypassed_anonymous: u64,
    /// Results handed to the store.
    pub inserts: u64,
    /// Results not stored because they exceed `max_entry_bytes`.
    pub skipped_too_large: u64,
    /// Failed refreshes answered with an expired result (stale-if-error).
    pub stale_served: u64,
    /// Entries the store removed to stay within `max_bytes`.
    pub evictions: u64,
    /// Entries the store removed because they outlived their time to keep.
    pub expirations: u64,
    /// Entries held now.
    pub entries: u64,
    /// Their estimated total size, in bytes.
    pub weighted_bytes: u64,
    /// The bound on `weighted_bytes`, if the store has one.
    pub max_bytes: Option<u64>,
}

impl CacheStats {
    /// Hits among cacheable calls (`hits / (hits + misses)`), or `None` before the first.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

/// Reads and steers a cache while it serves: its [`stats`](CacheHandle::stats), and
/// invalidation by tool or of everything. Cloning shares the cache.
///
/// Invalidation is immediate: once `invalidate` returns, no call is served an entry stored
/// before it, including one whose call was still running when it was called. (The
/// store frees the memory on its own time.)
#[derive(Clone)]
pub struct CacheHandle {
    state: Arc<CacheState>,
}

impl CacheHandle {
    pub(crate) fn new(state: Arc<CacheState>) -> Self {
        Self { state }
    }

    /// The cache's figures now.
    pub fn stats(&self) -> CacheStats {
        let c = &self.state.counters;
        let store = self.state.store.stats();
        CacheStats {
            hits: c.hits.get(),
            misses: c.misses.get(),
            bypassed: c.bypassed.get(),
            bypassed_anonymous: c.bypassed_anonymous.get(),
            inserts: c.inserts.get(),
            skipped_too_large: c.skipped_too_large.get(),
            stale_served: c.stale_served.get(),
            evictions: store.evictions,
            expirations: store.expirations,
            entries: store.entries,
            weighted_bytes: store.weighted_bytes,
            max_bytes: store.max_bytes,
        }
    }

    /// Drops every cached result of `tool` (a tool name as the policy table knows it).
    pub fn invalidate(&self, tool: &str) {
        self.state.invalidate_tool(tool);
    }

    /// Drops every cached result.
    pub fn invalidate_all(&self) {
        self.state.invalidate_all();
    }

    /// Runs the store's deferred maintenance now, so that [`stats`](Self::stats) is exact.
    pub fn run_pending_tasks(&self) {
        self.state.store.run_pending_tasks();
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.state.config
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl LayerReport for CacheHandle {
    fn layer(&self) -> &'static str {
        "cache"
    }

    fn figures(&self, out: &mut Vec<Figure>) {
        let s = self.stats();
        out.extend([
            Figure::counter(
                "mcp_cache_hits_total",
                "Tool calls answered from the cache.",
                s.hits,
            ),
            Figure::counter(
                "mcp_cache_misses_total",
                "Cacheable tool calls that went to the tool.",
                s.misses,
            ),
            Figure::counter(
                "mcp_cache_bypassed_total",
                "Tool calls the cache did not consider (tool not cacheable).",
                s.bypassed,
            ),
            Figure::counter(
                "mcp_cache_bypassed_anonymous_total",
                "Tool calls to private tools not cached because the caller is anonymous.",
                s.bypassed_anonymous,
            ),
            Figure::counter(
                "mcp_cache_inserts_total",
                "Tool results stored in the cache.",
                s.inserts,
            ),
            Figure::counter(
                "mcp_cache_skipped_too_large_total",
                "Tool results not cached because they exceed max_entry_bytes.",
                s.skipped_too_large,
            ),
            Figure::counter(
                "mcp_cache_stale_served_total",
                "Failed refreshes answered with an expired result (stale-if-error).",
                s.stale_served,
            ),
            Figure::counter(
                "mcp_cache_evictions_total",
                "Cache entries evicted to stay within max_bytes.",
                s.evictions,
            ),
            Figure::counter(
                "mcp_cache_expirations_total",
                "Cache entries removed after their time to keep.",
                s.expirations,
            ),
            Figure::gauge(
                "mcp_cache_entries",
                "Entries in the cache.",
                s.entries as f64,
            ),
            Figure::gauge(
                "mcp_cache_weighted_bytes",
                "Estimated size of the cached results, in bytes.",
                s.weighted_bytes as f64,
            ),
        ]);
        if let Some(max) = s.max_bytes {
            out.push(Figure::gauge(
                "mcp_cache_max_bytes",
                "The bound on the cache's estimated size, in bytes.",
                max as f64,
            ));
        }
    }

    fn snapshot(&self) -> Value {
        let s = self.stats();
        json!({
            "enabled": self.state.config.enabled,
            "hits": s.hits,
            "misses": s.misses,
            "bypassed": s.bypassed,
            "bypassed_anonymous": s.bypassed_anonymous,
            "hit_ratio": s.hit_ratio(),
            "inserts": s.inserts,
            "skipped_too_large": s.skipped_too_large,
            "stale_served": s.stale_served,
            "evictions": s.evictions,
            "expirations": s.expirations,
            "entries": s.entries,
            "weighted_bytes": s.weighted_bytes,
            "max_bytes": s.max_bytes,
            "max_entry_bytes": self.state.config.max_entry_bytes,
        })
    }
}
