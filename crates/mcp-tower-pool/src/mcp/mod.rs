//! Feature `rmcp`: upstream MCP servers as pooled sessions, and [`PoolService`], the
//! `Service<ToolCall>` that forwards tool calls to them.

mod config;
mod connector;
mod future;
#[cfg(test)]
mod isolation_tests;
mod listed;
mod outbox;
mod progress;
mod relay;
mod router;
mod service;

pub use config::{
    DEFAULT_INHERITED_ENV, Identity, NAMESPACE_SEPARATOR, StderrMode, UpstreamConfig, UpstreamKind,
};
pub use connector::{
    McpConnector, McpSession, UpstreamCallError, UpstreamError, UpstreamNotification,
};
pub use future::PoolFuture;
pub use listed::{Listed, merge_scope};
pub use outbox::PeerOutbox;
pub use relay::{RelayReport, RelayStats};
pub use router::UpstreamRouter;
pub use service::{PRINCIPAL_KEY_SEPARATOR, PoolService, PoolServiceError};
