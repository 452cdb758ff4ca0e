//! [`CacheEntry`]: one cached result, and how a hit is served from it.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use rmcp::model::{CallToolResponse, CallToolResult, MetaObject};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::state::ToolSlot;

/// The key a hit's marker has in the result's `_meta` (see [`mcp_tower_core::meta`]).
pub const CACHE_META_KEY: &str = mcp_tower_core::meta::CACHE;

/// One cached result: the complete `CallToolResult` of a successful call, when it was
/// stored, until when it is fresh, and (with stale-if-error) until when it may still stand
/// in for a failed refresh.
///
/// Entries are made by the layer and shared by `Arc`: a hit clones the result out of the
/// entry, never changing the entry.
pub struct CacheEntry {
    result: CallToolResult,
    inserted_at: Instant,
    expires_at: Instant,
    stale_until: Instant,
    weight: u32,
    stamp: Stamp,
}

/// Which invalidations an entry predates: it is servable while its tool's and the cache's
/// invalidation counters still hold the values they had when its call started.
pub(crate) struct Stamp {
    pub(crate) tool: Arc<ToolSlot>,
    pub(crate) tool_epoch: u64,
    pub(crate) all_epoch: u64,
}

impl CacheEntry {
    pub(crate) fn new(
        result: CallToolResult,
        inserted_at: Instant,
        ttl: Duration,
        stale_window: Duration,
        weight: u32,
        stamp: Stamp,
    ) -> Self {
        let expires_at = instant_after(inserted_at, ttl);
        let stale_until = instant_after(expires_at, stale_window);
        Self {
            result,
            inserted_at,
            expires_at,
            stale_until,
            weight,
            stamp,
        }
    }

    /// The cached result, as the tool returned it.
    pub fn result(&self) -> &CallToolResult {
        &self.result
    }

    /// The tool that produced it.
    pub fn tool(&self) -> &str {
        &self.stamp.tool.name
    }

    /// When it was stored: the arrival time of the call that produced it (so its age is
    /// never underestimated).
    pub fn inserted_at(&self) -> Instant {
        self.inserted_at
    }

    /// Until when it is served as a hit (exclusive): `inserted_at` plus the tool's TTL.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Until when it may replace a failed refresh (stale-if-error); `expires_at` when
    /// stale-if-error is off.
    pub fn stale_until(&self) -> Instant {
        self.stale_until
    }

    /// How long a store should keep it: until `stale_until`, counted from insertion.
    pub fn time_to_keep(&self) -> Duration {
        self.stale_until.saturating_duration_since(self.inserted_at)
    }

    /// Its estimated size in bytes ([`estimate_result_bytes`](crate::estimate_result_bytes)).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whether no invalidation happened since its call started.
    pub(crate) fn is_current(&self, all_epoch: u64) -> bool {
        self.stamp.all_epoch == all_epoch
            && self.stamp.tool.epoch.load(Ordering::Acquire) == self.stamp.tool_epoch
    }

    /// The response for a caller at `now`: a copy of the result, its `_meta` marked when
    /// `mark` is set (always when `stale`).
    pub(crate) fn response(&self, now: Instant, mark: bool, stale: bool) -> CallToolResponse {
        let mut result = self.result.clone();
        if mark || stale {
            let age = now.saturating_duration_since(self.inserted_at);
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            let mut marker = Map::new();
            marker.insert("hit".to_owned(), Value::Bool(true));
            marker.insert("ageMs".to_owned(), Value::from(age_ms));
            if stale {
                marker.insert("stale".to_owned(), Value::Bool(true));
            }
            result
                .meta
                .get_or_insert_with(MetaObject::new)
                .0
                .insert(CACHE_META_KEY.to_owned(), Value::Object(marker));
        }
        CallToolResponse::Complete(result)
    }
}

impl fmt::Debug for CacheEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheEntry")
            .field("tool", &self.tool())
            .field("inserted_at", &self.inserted_at)
            .field("expires_at", &self.expires_at)
            .field("stale_until", &self.stale_until)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

/// `start + d`, saturating at a far future instead of panicking on overflow (a TTL of
/// `Duration::MAX` means "until evicted").
fn instant_after(start: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(d)
        .or_else(|| start.checked_add(CENTURY))
        .unwrap_or(start)
}
