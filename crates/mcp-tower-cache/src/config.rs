//! [`CacheConfig`]: the cache's settings, as the `[cache]` section of the stack's
//! configuration.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// The cache's settings. Which tools are cached, for how long and for whom come from
/// each tool's `ToolPolicy` (`cache_ttl`, `scope`), not from here.
///
/// ```toml
/// [cache]
/// max_bytes = 67108864        # 64 MiB in total
/// max_entry_bytes = 1048576   # results above 1 MiB are not cached
/// mark_hits = true            # add "io.github.mcp-tower/cache" to the `_meta` of a hit
/// stale_if_error = "5m"       # serve an expired result for 5 minutes if its refresh fails
/// ```
///
/// Validated once, when the layer is built ([`CacheLayer::new`](crate::CacheLayer::new)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether the layer caches at all. `false` makes it pass every call through (the
    /// stack builder leaves the layer out instead). Default `true`.
    pub enabled: bool,
    /// The total size of the cached results, in bytes (as estimated by
    /// [`estimate_result_bytes`](crate::estimate_result_bytes)); least valuable entries are
    /// evicted beyond it. Default 64 MiB.
    pub max_bytes: u64,
    /// The largest result that is cached, in bytes; larger ones are returned but not
    /// stored (counted as `skipped_too_large`). Default 1 MiB.
    pub max_entry_bytes: u64,
    /// Whether a hit carries `"io.github.mcp-tower/cache": {"hit": true, "ageMs": N}` in its result's
    /// `_meta`. Default `true`.
    pub mark_hits: bool,
    /// Stale-if-error: for this long after a result expires, a refresh that failed
    /// *transiently* (upstream unavailable, timed out, connection closed, or retries
    /// exhausted on one of these) returns the expired result instead, marked
    /// `"stale": true`. Never after an `isError` result or any other error (an
    /// authorization failure must not be answered with the result from before it). Unset
    /// (the default): no stale results are ever served.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
            mark_hits: true,
            stale_if_error: None,
        }
    }
}

impl CacheConfig {
    /// The default total size: 64 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
    /// The default largest entry: 1 MiB.
    pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1024 * 1024;

    /// Turns the cache on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Bounds the total size of cached results.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bounds the size of one cached result.
    pub fn with_max_entry_bytes(mut self, max_entry_bytes: u64) -> Self {
        self.max_entry_bytes = max_entry_bytes;
        self
    }

    /// Marks hits in the result's `_meta` (or not).
    pub fn with_mark_hits(mut self, mark_hits: bool) -> Self {
        self.mark_hits = mark_hits;
        self
    }

    /// Serves an expired result for `window` after its expiry when its refresh fails.
    pub fn with_stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// Checks every value. Called by [`CacheLayer::new`](crate::CacheLayer::new); the
    /// stack's configuration calls it for its `[cache]` section.
    pub fn validate(&self) -> Result<(), InvalidCacheConfig> {
        if self.max_bytes == 0 {
            return Err(InvalidCacheConfig::new(
                "max_bytes",
                "must be greater than zero",
            ));
        }
        if self.max_entry_bytes == 0 {
            return Err(InvalidCacheConfig::new(
                "max_entry_bytes",
                "must be greater than zero",
            ));
        }
        if self.max_entry_bytes > self.max_bytes {
            return Err(InvalidCacheConfig::new(
                "max_entry_bytes",
                format!(
                    "must not exceed max_bytes ({} > {})",
                    self.max_entry_bytes, self.max_bytes
                ),
            ));
        }
        if self.max_entry_bytes > u64::from(u32::MAX) {
            return Err(InvalidCacheConfig::new(
                "max_entry_bytes",
                format!("must be at most {} (4 GiB - 1)", u32::MAX),
            ));
        }
        if self.stale_if_error.is_some_and(|w| w.is_zero()) {
            return Err(InvalidCacheConfig::new(
                "stale_if_error",
                "must be greater than zero (omit it to never serve stale results)",
            ));
        }
        Ok(())
    }
}

/// A [`CacheConfig`] value that does not make sense: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCacheConfig {
    /// The key within the `[cache]` section, like `max_entry_bytes`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidCacheConfig {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid cache configuration: cache.{}: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for InvalidCacheConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = CacheConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.enabled && c.mark_hits);
        assert_eq!(c.max_bytes, 64 * 1024 * 1024);
        assert_eq!(c.max_entry_bytes, 1024 * 1024);
        assert_eq!(c.stale_if_error, None);
    }

    #[test]
    fn parses_from_toml_with_humantime_durations() {
        let c: CacheConfig = toml_from_str(
            r#"
            max_bytes = 1000000
            max_entry_bytes = 1000
            mark_hits = false
            stale_if_error = "5m"
            "#,
        )
        .unwrap();
        assert_eq!(c.max_bytes, 1_000_000);
        assert_eq!(c.max_entry_bytes, 1000);
        assert!(!c.mark_hits && c.enabled);
        assert_eq!(c.stale_if_error, Some(Duration::from_secs(300)));
        // And back: the duration is written the same way.
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["stale_if_error"], "5m");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml_from_str("max_byte = 10").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (CacheConfig::default().with_max_bytes(0), "max_bytes"),
            (
                CacheConfig::default().with_max_entry_bytes(0),
                "max_entry_bytes",
            ),
            (
                CacheConfig::default()
                    .with_max_bytes(10)
                    .with_max_entry_bytes(11),
                "max_entry_bytes",
            ),
            (
                CacheConfig::default()
                    .with_max_bytes(u64::MAX)
                    .with_max_entry_bytes(u64::from(u32::MAX) + 1),
                "max_entry_bytes",
            ),
            (
                CacheConfig::default().with_stale_if_error(Duration::ZERO),
                "stale_if_error",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field, "{config:?}");
            assert!(err.to_string().contains(&format!("cache.{field}")));
        }
    }

    fn toml_from_str(s: &str) -> Result<CacheConfig, toml::de::Error> {
        toml::from_str(s)
    }
}
