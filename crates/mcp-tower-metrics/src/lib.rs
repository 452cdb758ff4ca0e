//! Prometheus metrics for the tool calls of an [rmcp](https://docs.rs/rmcp) server, and the
//! `/metrics`, `/health` and `/stats` endpoints.
//!
//! [`MetricsLayer`] records every tool call, through the [`metrics`] facade into a
//! Prometheus recorder the [`MetricsHandle`] owns:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mcp_tool_calls_total` | counter | `tool`, `outcome` |
//! | `mcp_tool_call_duration_seconds` | histogram (1 ms – 60 s by default) | `tool`, `outcome` |
//! | `mcp_tool_calls_in_flight` | gauge | `tool` |
//!
//! `outcome` is one of `ok`, `tool_error`, `cache_hit`, `rejected`, `timeout`, `cancelled`,
//! `error` (see [`CallOutcome`]). The `tool` label takes only names the policy table knows;
//! any other name is `unknown`, so a client sending 10,000 made-up names adds no series.
//!
//! The handle also collects, at scrape time, the figures of the other layers' handles
//! (anything implementing [`LayerReport`](mcp_tower_core::LayerReport): `mcp_cache_hits_total`,
//! `mcp_cache_weighted_bytes`, pool and concurrency figures…) and the process figures
//! (resident memory, CPU seconds, open file descriptors; feature `process`), and keeps per
//! tool, on tokio's clock, the figures `/stats` shows: calls and success rate, p50/p95/p99
//! over a sliding window, calls per second over 1 s and 10 s, in-flight and peak.
//!
//! With the `http` feature (on by default), [`MetricsHandle::router`] serves
//! `GET /metrics` (Prometheus text), `GET /health` (JSON; 503 when a layer says it cannot
//! serve, such as a pool whose required upstream is down) and `GET /stats` (JSON).
//!
//! Use it outermost in the stack (the facade's `McpStack` does), so it sees cache hits
//! and rejections with their true latency.
//!
//! ```
//! use mcp_tower_core::{ToolCall, testing::ScriptedService};
//! use mcp_tower_metrics::{MetricsConfig, MetricsHandle};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = MetricsHandle::new(MetricsConfig::default())?;
//! let service = ServiceBuilder::new()
//!     .layer(metrics.layer())
//!     .service(ScriptedService::new());
//!
//! service.oneshot(ToolCall::new("weather", rmcp::object!({"city": "Oslo"}))).await?;
//!
//! // No policy table knows `weather` here, so it is counted as `unknown`.
//! assert!(metrics.render().contains(r#"mcp_tool_calls_total{tool="unknown",outcome="ok"} 1"#));
//! assert_eq!(metrics.stats().totals.calls, 1);
//!
//! // Serve GET /metrics, /health and /stats beside the MCP endpoint (feature `http`):
//! # #[cfg(feature = "http")]
//! let _app: axum::Router = axum::Router::new().merge(metrics.router());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
mod exposition;
mod future;
mod handle;
#[cfg(feature = "http")]
mod http;
mod layer;
pub mod names;
mod outcome;
mod service;
mod stats;
mod tool;
mod window;

pub use config::{DEFAULT_DURATION_BUCKETS, InvalidMetricsConfig, MetricsConfig};
pub use future::ResponseFuture;
pub use handle::{GlobalRecorderAlreadySet, MetricsHandle};
#[cfg(feature = "http")]
pub use http::{HEALTH_PATH, METRICS_PATH, PROMETHEUS_CONTENT_TYPE, STATS_PATH};
pub use layer::MetricsLayer;
pub use outcome::{CACHE_META_KEY, CallOutcome};
pub use service::Metrics;
pub use stats::{
    HealthReport, HealthStatus, LayerHealth, OutcomeCounts, StatsSnapshot, ToolStats, TotalStats,
    WindowStats,
};
