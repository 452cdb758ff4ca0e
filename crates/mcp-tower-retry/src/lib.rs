//! Retries and per-attempt timeouts for the tool calls of an
//! [rmcp](https://docs.rs/rmcp) MCP server, only where a repeat is safe.
//!
//! Two [Tower](https://docs.rs/tower) layers over mcp-tower's `ToolCall`:
//!
//! - [`RetryLayer`] / [`Retry`]: retries *transient* failures (timed out, upstream
//!   unavailable, connection closed) of tools whose policy allows it — read-only or
//!   idempotent by their MCP annotations, or configured so. A destructive or unannotated
//!   tool is called exactly once, whatever happens; a caller mistake (invalid params,
//!   unknown tool) is never repeated. Waits are exponential with full jitter, bounded by
//!   `max_attempts`, an overall deadline, and a **retry budget** (retries are at most a
//!   share of recent calls plus a small floor), so an outage cannot multiply the load on
//!   an upstream. A failure that says when to come back (`data.retryAfterMs`, as the
//!   pool's error while it backs off after a failed connect) is retried no sooner than
//!   that, or not at all when that is past the deadline. The client's
//!   `notifications/cancelled` stops the loop at once.
//! - [`TimeoutLayer`] / [`Timeout`]: bounds each attempt by the tool's timeout (its
//!   policy's, 30 s by default), drops the attempt when it expires, and fails it with
//!   the core's transient "timed out" error, which the retry layer may retry.
//!
//! Use them when a tool fronts something that fails now and then (an upstream MCP server,
//! an SSH host, an HTTP API). In an `McpStack` they sit innermost, in this order:
//! `… → Concurrency → Retry → Timeout → inner`, so that retries hold the caller's
//! concurrency permit and every attempt has its own deadline.
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
//!
//! use mcp_tower_core::{
//!     CallResolver, PolicyDefaults, PolicyTable, ToolCall,
//!     error::{Layer, UpstreamUnavailable},
//! };
//! use mcp_tower_retry::{RetryConfig, RetryLayer, TimeoutLayer};
//! use rmcp::{
//!     ErrorData,
//!     model::{CallToolResponse, CallToolResult, ContentBlock, Tool, ToolAnnotations},
//!     object,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `weather` is read-only: repeating it is safe, so its transient failures are retried.
//! let weather = Tool::new("weather", "Current weather", object!({"type": "object"}))
//!     .with_annotations(ToolAnnotations::new().read_only(true));
//! let resolver = Arc::new(CallResolver::new(
//!     PolicyTable::new(PolicyDefaults::default()).with_tools([weather]),
//! ));
//!
//! // An upstream that is unreachable once, then answers.
//! let down = Arc::new(AtomicBool::new(true));
//! let upstream = tower::service_fn(move |_call: ToolCall| {
//!     let was_down = down.swap(false, Ordering::SeqCst);
//!     async move {
//!         if was_down {
//!             return Err(ErrorData::from(UpstreamUnavailable {
//!                 layer: Layer::Pool,
//!                 upstream: "weather-api".into(),
//!                 reason: "connection refused".into(),
//!             }));
//!         }
//!         Ok(CallToolResponse::from(CallToolResult::success(vec![ContentBlock::text("sunny")])))
//!     }
//! });
//!
//! let retry = RetryLayer::new(RetryConfig::default())?;
//! let handle = retry.handle();
//! let service = ServiceBuilder::new()
//!     .layer(retry)
//!     .layer(TimeoutLayer::default())
//!     .service(upstream);
//!
//! let call = ToolCall::with_resolver("weather", object!({"city": "Oslo"}), resolver);
//! let response = service.oneshot(call).await?;
//! assert!(matches!(response, CallToolResponse::Complete(_)));
//! assert_eq!(handle.stats().retries, 1);
//! # Ok(())
//! # }
//! ```
//!
//! Configuration: [`RetryConfig`] (`[retry]`, with its `[retry.budget]`) and
//! [`TimeoutConfig`] (`[timeout]`); per-tool retry and timeout settings are in the tools'
//! policies (`[tools.<name>] retry = true`, `retry_on_tool_error = true`,
//! `timeout = "2m"`). Figures: [`RetryHandle`], which implements
//! [`LayerReport`](mcp_tower_core::LayerReport).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod retry;
pub mod timeout;

pub use retry::{
    Backoff, BudgetConfig, InvalidConfig, Retry, RetryConfig, RetryHandle, RetryLayer, RetryStats,
};
pub use timeout::{Timeout, TimeoutConfig, TimeoutLayer};
