//! Keyed pools of **multiplexed** upstream connections, and `PoolService` (feature
//! `rmcp`): the innermost `Service<ToolCall>` of a gateway, forwarding each tool call to an
//! upstream MCP server over a pooled session.
//!
//! # What it is for
//!
//! An MCP session, like an SSH connection or an HTTP/2 connection, carries many concurrent
//! requests. Opening one costs far more than using it (IBM ContextForge measured 20–23 ms
//! per call unpooled against 1–2 ms pooled; a stdio upstream is a whole child process), so
//! a gateway should keep its upstream sessions open and **share** them between callers.
//! deadpool and bb8 hand a connection to one caller at a time, which is wrong for such
//! connections; this pool hands out shared references, as hyper-util's pool does for
//! HTTP/2 (`Reservation::Shared`).
//!
//! - [`Pool`]: per key up to `max` connections (default 1) and `min` kept open, least
//!   in flight first (power of two choices above two), never beyond a connection's
//!   [`capacity`](Connector::capacity) (another connection is opened, or the call waits for
//!   room); single-flight connect per key,
//!   different keys in parallel, no lock across an `.await`; idle reaping, health pings and
//!   replacement of closed connections by a background task that never blocks
//!   [`Pool::get`]; limits per key and in total; graceful [`shutdown`](Pool::shutdown).
//! - [`Connector`]: what the pool needs of a kind of connection (connect, is_closed, ping,
//!   close). Implement it for your own connections (an SSH connector builds on it).
//! - [`PoolConfig`]: the `[pool]` configuration section; [`PoolHandle`]: figures
//!   ([`PoolStats`]), health and shutdown, exported as `mcp_pool_*` metrics through
//!   [`LayerReport`](mcp_tower_core::LayerReport).
//! - [`call_many`]: a batch of calls with bounded parallelism, results in order.
//! - feature `rmcp`: `McpConnector` (upstream MCP servers over stdio child processes or
//!   streamable HTTP, configured by `UpstreamConfig`), `UpstreamRouter` (`github__search` →
//!   upstream `github`, tool `search`; an upstream may also be left unprefixed, its tools
//!   then keep their own names) and `PoolService`, which carries cancellation upstream and
//!   brings upstream progress back to the caller. The connector also relays what an
//!   upstream asks of the client (sampling, elicitation, roots, logging) to the caller
//!   that made the request; `docs/gateway.md` lists the limits of that relay.
//!
//! # When to use it
//!
//! To put the mcp-tower stack in front of other MCP servers (a gateway, like MCPO or
//! MCPStore but in one binary), or to share any multiplexed connection between the tool
//! calls of a server.
//!
//! ```
//! use std::{convert::Infallible, sync::{Arc, atomic::{AtomicBool, Ordering}}};
//! use mcp_tower_pool::{Connector, Pool, PoolConfig};
//!
//! /// Stands in for a multiplexed session (an MCP client session, an SSH connection).
//! #[derive(Debug)]
//! struct Session { closed: AtomicBool }
//!
//! #[derive(Debug)]
//! struct Sessions;
//!
//! impl Connector for Sessions {
//!     type Key = String;
//!     type Connection = Session;
//!     type Error = Infallible;
//!
//!     async fn connect(&self, _host: &String) -> Result<Session, Infallible> {
//!         Ok(Session { closed: AtomicBool::new(false) })
//!     }
//!     fn is_closed(&self, session: &Session) -> bool {
//!         session.closed.load(Ordering::Relaxed)
//!     }
//!     async fn ping(&self, _session: &Session) -> Result<(), Infallible> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder(Sessions)
//!     .with_config(PoolConfig::default().with_max(2))
//!     .with_required_key("db-1".to_string())
//!     .build()?;
//! let session = pool.get(&"db-1".to_string()).await?; // shared, counted in flight
//! let stats = pool.stats();
//! assert_eq!(stats.key("db-1").unwrap().in_flight, 1);
//! assert!(pool.handle().is_healthy());
//! drop(session);
//! pool.shutdown().await; // drains, closes every connection, waits for it
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod config;
mod connector;
mod error;
mod handle;
mod pool;
mod pooled;

#[cfg(feature = "rmcp")]
mod mcp;

pub use batch::call_many;
pub use config::PoolConfig;
pub use connector::Connector;
pub use error::{BuildError, PoolError};
pub use handle::{KeyStats, PoolHandle, PoolStats};
pub use pool::{Pool, PoolBuilder};
pub use pooled::Pooled;

#[cfg(feature = "rmcp")]
pub use mcp::*;
