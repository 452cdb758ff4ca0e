//! Tower middleware for [rmcp](https://docs.rs/rmcp) MCP servers.
//!
//! MCP servers spend their time in tool calls that are slow, repeated and bursty.
//! `mcp-tower` puts Tower layers in front of those calls — and only those: every other
//! request (`tools/list`, resources, prompts, completion…) reaches your handler unchanged.
//! What each layer may do with a tool comes from the tool's MCP annotations
//! (`readOnlyHint`, `idempotentHint`, `destructiveHint`), overridable per tool from code, a
//! TOML file or `MCP_TOWER_*` environment variables.
//!
//! ```no_run
//! use mcp_tower::{McpStack, StackConfig};
//! use rmcp::{
//!     ServerHandler, ServiceExt,
//!     handler::server::{router::tool::ToolRouter, wrapper::Parameters},
//!     tool, tool_handler, tool_router, transport::stdio,
//! };
//!
//! #[derive(serde::Deserialize, rmcp::schemars::JsonSchema)]
//! struct CityArgs { city: String }
//!
//! #[derive(Clone)]
//! struct Weather { tool_router: ToolRouter<Self> }
//!
//! #[tool_router]
//! impl Weather {
//!     #[tool(description = "Current weather", annotations(read_only_hint = true))]
//!     async fn weather(&self, Parameters(args): Parameters<CityArgs>) -> String {
//!         format!("sunny in {}", args.city)
//!     }
//! }
//!
//! #[tool_handler(router = self.tool_router)]
//! impl ServerHandler for Weather {}
//!
//! # async fn run() -> anyhow::Result<()> {
//! let handler = Weather { tool_router: Weather::tool_router() };
//! let server = McpStack::from_config(StackConfig::load(None)?)?.serve(handler);
//! server.serve(stdio()).await?.waiting().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The contracts the layers share ([`ToolCall`], [`CallKey`], [`ToolPolicy`], the
//! [`error`] module) live in `mcp-tower-core` and are re-exported here.
#![deny(missing_docs)]

mod config;
#[cfg(feature = "http")]
pub mod http;
mod http_config;
mod layered;
mod stack;

pub use config::{ConfigError, ENV_PREFIX, StackConfig, is_secret_key, redact_figment_error};
pub use http_config::{AdminMode, HttpConfig, SessionsConfig};
pub use layered::LayeredServer;
pub use stack::{BuiltStack, McpStack, McpStackBuilder, StackFuture, StackHandles, StackService};

/// The tool-result cache ([`mcp_tower_cache`]).
pub use mcp_tower_cache as cache;
/// Global and per-tool concurrency limits ([`mcp_tower_concurrency`]).
pub use mcp_tower_concurrency as concurrency;
/// Single-flight deduplication ([`mcp_tower_dedup`]).
pub use mcp_tower_dedup as dedup;
/// Metrics and the `/metrics`, `/health`, `/stats` endpoints ([`mcp_tower_metrics`]).
pub use mcp_tower_metrics as metrics;
/// Retries and per-attempt timeouts ([`mcp_tower_retry`]).
pub use mcp_tower_retry as retry;

pub use mcp_tower_core::{
    Anonymous, AuthenticatedName, CacheScope, CallKey, CallResolver, CallToolResponse,
    DefaultPartitioner, Figure, FigureKind, HandlerService, KeySecret, LayerReport, Partition,
    Partitioner, PolicyDefaults, PolicyTable, Principal, ToolCall, ToolId, ToolOverride,
    ToolPattern, ToolPatternError, ToolPolicy, VerifiedSession, error,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
