//! Feature `rmcp`: upstream MCP servers as pooled sessions, and [`PoolService`], the
//! `Service<ToolCall>` that forwards tool calls to them.

mod config;
mod connector;
mod future;
mod listed;
mod progress;
mod relay;
mod router;
mod service;

pub use config::{Identity, NAMESPACE_SEPARATOR, StderrMode, UpstreamConfig, UpstreamKind};
pub use connector::{
    McpConnector, McpSession, UpstreamCallError, UpstreamError, UpstreamNotification,
};
pub use future::PoolFuture;
pub use listed::{Listed, merge_scope};
pub use router::UpstreamRouter;
pub use service::{PRINCIPAL_KEY_SEPARATOR, PoolService, PoolServiceError};
