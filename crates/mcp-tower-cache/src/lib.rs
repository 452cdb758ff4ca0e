//! A tool-result cache for [rmcp](https://docs.rs/rmcp) MCP servers, as a Tower layer:
//! scoped per caller, bounded in bytes, and driven by each tool's policy.
//!
//! Use it when tools are read-only and slow or costly (a weather API, a search index, a
//! database query) and clients repeat calls: a hit is answered in well under a microsecond
//! without touching the tool.
//!
//! # What is cached, for how long, for whom
//!
//! - **Which tools**: those whose [`ToolPolicy`](mcp_tower_core::ToolPolicy) has a
//!   `cache_ttl` — by default the tools annotated `readOnlyHint: true`; any tool can be
//!   switched on or off by a per-tool override. Unknown tools, destructive tools and
//!   continuations of multi-round-trip calls are never cached.
//! - **Which results**: only complete results (`InputRequired` and `Task` responses pass
//!   through), never an `isError` result, never the result of a call the client cancelled
//!   while it ran, and nothing larger than [`CacheConfig::max_entry_bytes`] (counted as
//!   `skipped_too_large`).
//! - **For how long**: the tool's own TTL, per entry, on tokio's clock (so tests can use a
//!   paused clock). An entry's age counts from its call's arrival, so no result is
//!   served older than its TTL.
//! - **For whom**: the key is the call's [`CallKey`](mcp_tower_core::CallKey): tool,
//!   canonical arguments (object key order does not matter) and partition. A *private*
//!   tool's results (the default scope) are keyed by the caller's principal (by default a
//!   digest of the HTTP `Authorization` header), so one caller never receives another's
//!   result; *public* tools share results between callers.
//! - **How much**: [`CacheConfig::max_bytes`] in total, by the estimated size of each
//!   result ([`estimate_result_bytes`]), not by entry count.
//!
//! A hit's result carries `"io.github.mcp-tower/cache": {"hit": true, "ageMs": N}` in its `_meta`
//! ([`CacheConfig::mark_hits`]); the stored entry is never modified.
//!
//! With [stale-if-error](CacheConfig::stale_if_error) on, a refresh of a recently expired
//! entry that failed transiently (upstream unavailable, timeout) is answered with the
//! expired result, marked `"stale": true`; an `isError` result or any other error is not.
//!
//! [`CacheHandle`] reads the figures ([`CacheStats`], and `mcp_cache_*` metrics through
//! [`LayerReport`](mcp_tower_core::LayerReport)) and invalidates by tool or everything.
//! When the policy table's tool list changes (`tools/list_changed`), the tools whose policy
//! changed are invalidated.
//!
//! Entries live in a [`CacheStore`]: [`MokaStore`] (in-process) by default; the trait admits
//! a shared tier (answers may come later, writes must not block).
//!
//! # Where it goes in a stack
//!
//! Outside the deduplicator, the concurrency limit and retries (`McpStack` puts it there):
//! a hit returns before any of them. The cache does not coalesce concurrent misses of one
//! key; the deduplicator below it does.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! use mcp_tower_cache::{CacheConfig, CacheLayer};
//! use mcp_tower_core::{CallResolver, PolicyDefaults, PolicyTable, ToolCall};
//! use rmcp::{ErrorData, model::{CallToolResult, ContentBlock, Tool, ToolAnnotations}, object};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A read-only tool: cacheable, for the default TTL (60 s), per caller.
//! let weather = Tool::new("weather", "Current weather", object!({"type": "object"}))
//!     .with_annotations(ToolAnnotations::new().read_only(true));
//! let resolver = Arc::new(CallResolver::new(
//!     PolicyTable::new(PolicyDefaults::default()).with_tools([weather]),
//! ));
//!
//! // The tool itself (here a function; usually `HandlerService` or a pool).
//! let runs = Arc::new(AtomicUsize::new(0));
//! let counted = Arc::clone(&runs);
//! let tool = service_fn(move |_call: ToolCall| {
//!     counted.fetch_add(1, Ordering::SeqCst);
//!     async { Ok::<_, ErrorData>(CallToolResult::success(vec![ContentBlock::text("sunny")]).into()) }
//! });
//!
//! let cache = CacheLayer::new(CacheConfig::default())?;
//! let handle = cache.handle();
//! let service = ServiceBuilder::new().layer(cache).service(tool);
//!
//! let call = || ToolCall::with_resolver("weather", object!({"city": "Oslo"}), Arc::clone(&resolver));
//! service.clone().oneshot(call()).await?;
//! service.clone().oneshot(call()).await?; // answered from the cache
//! assert_eq!(runs.load(Ordering::SeqCst), 1);
//! assert_eq!(handle.stats().hits, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod config;
mod entry;
mod future;
mod handle;
mod layer;
mod moka_store;
mod service;
mod state;
mod store;
mod weight;

pub use config::{CacheConfig, InvalidCacheConfig};
pub use entry::{CACHE_META_KEY, CacheEntry};
pub use future::ResponseFuture;
pub use handle::{CacheHandle, CacheStats};
pub use layer::CacheLayer;
pub use moka_store::MokaStore;
pub use service::Cache;
pub use store::{CacheStore, StoreLookup, StoreStats};
pub use weight::{ENTRY_OVERHEAD_BYTES, estimate_result_bytes};
