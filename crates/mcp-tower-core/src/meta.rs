//! The `_meta` keys mcp-tower adds to results.
//!
//! MCP reserves `_meta` keys with an `io.modelcontextprotocol/` (or `modelcontextprotocol`,
//! `mcp`) prefix for the protocol and recommends a reverse-DNS prefix for everyone else, so
//! mcp-tower's keys start with `io.github.mcp-tower/`. Until 0.2 the cache marker was
//! `mcp-tower/cache`; readers ([`cache_marker`]) still accept it for one release, writers
//! only write the new key.

use rmcp::model::MetaObject;
use serde_json::Value;

/// The key of the cache layer's marker on a result it served:
/// `"io.github.mcp-tower/cache": {"hit": true, "ageMs": N}` (and `"stale": true` when it
/// stood in for a failed refresh).
pub const CACHE: &str = "io.github.mcp-tower/cache";

/// The marker's key before 0.2, still read (never written) until the next release.
pub const LEGACY_CACHE: &str = "mcp-tower/cache";

/// The cache marker in `meta`, under its key or its pre-0.2 key.
pub fn cache_marker(meta: &MetaObject) -> Option<&Value> {
    meta.0.get(CACHE).or_else(|| meta.0.get(LEGACY_CACHE))
}

/// Whether `meta` marks a result the cache served.
pub fn is_cache_hit(meta: Option<&MetaObject>) -> bool {
    meta.and_then(cache_marker)
        .and_then(|marker| marker.get("hit"))
        .and_then(Value::as_bool)
        == Some(true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(value: Value) -> MetaObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_key_has_a_reverse_dns_prefix_outside_the_protocols() {
        let (prefix, name) = CACHE.split_once('/').unwrap();
        assert_eq!(name, "cache");
        assert!(prefix.split('.').count() >= 3, "{prefix}");
        assert!(!prefix.contains("modelcontextprotocol") && !prefix.starts_with("mcp"));
    }

    #[test]
    fn both_keys_are_read() {
        assert!(is_cache_hit(Some(&meta(json!({CACHE: {"hit": true}})))));
        assert!(is_cache_hit(Some(&meta(
            json!({LEGACY_CACHE: {"hit": true}})
        ))));
        assert!(!is_cache_hit(Some(&meta(json!({CACHE: {"hit": false}})))));
        assert!(!is_cache_hit(Some(&meta(
            json!({"other/cache": {"hit": true}})
        ))));
        assert!(!is_cache_hit(None));
    }
}
