//! The contracts every mcp-tower layer shares.
//!
//! mcp-tower is a set of [Tower](https://docs.rs/tower) layers that sit in front of the
//! tool calls of an [rmcp](https://docs.rs/rmcp) server. This crate holds what the layers
//! agree on, so that each can be written, tested and benchmarked on its own:
//!
//! - [`ToolCall`]: the request (rmcp's `CallToolRequestParams` plus the request context),
//!   with its [`CallKey`], [`ToolPolicy`] and [`Principal`] derived at most once per call.
//!   Every layer is a `Service<ToolCall, Response = CallToolResponse, Error = rmcp::ErrorData>`.
//! - [`CallKey`]: a 128-bit keyed hash of tool, canonical arguments and partition.
//! - [`ToolPolicy`] and [`PolicyTable`]: what a layer may do with a tool, from its MCP
//!   annotations and per-tool overrides (by exact name or glob: [`ToolPattern`]).
//! - [`Partitioner`] and [`CacheScope`]: whose calls may share results.
//! - [`error`]: every error a layer raises, each with a stable code.
//! - [`HandlerService`]: the innermost service, calling the user's `ServerHandler`.
//! - [`LayerReport`]: how a layer's handle shows its figures to metrics and admin endpoints.
//! - `testing` (feature): `testing::ScriptedService`, the scripted inner service of every
//!   crate's tests.
//!
//! Layers act only on `CallToolResponse::Complete`; `InputRequired` and `Task` responses
//! pass through untouched. A result with `is_error: Some(true)` is a *tool* failure: it
//! reaches the caller, is never cached and is retried only where the policy says so.
//!
//! ```
//! use std::sync::Arc;
//! use mcp_tower_core::{CallResolver, PolicyDefaults, PolicyTable, ToolCall};
//! use rmcp::{model::{Tool, ToolAnnotations}, object};
//!
//! let weather = Tool::new("weather", "Current weather", object!({"type": "object"}))
//!     .with_annotations(ToolAnnotations::new().read_only(true));
//! let resolver = Arc::new(CallResolver::new(
//!     PolicyTable::new(PolicyDefaults::default()).with_tools([weather]),
//! ));
//! let call = ToolCall::with_resolver("weather", object!({"city": "Oslo"}), resolver);
//! assert!(call.policy().cacheable());
//! println!("{:?}", call.key());
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod call;
pub mod error;
mod handler;
mod key;
pub mod meta;
mod partition;
mod pattern;
mod policy;
mod report;
#[cfg(feature = "testing")]
pub mod testing;

pub use call::{CallResolver, ToolCall};
pub use handler::{HandlerFuture, HandlerService};
pub use key::{
    CallKey, CallKeyBuildHasher, CallKeyHasher, KeySecret, KeySecretTooShort, Partition,
};
pub use partition::{
    Anonymous, AuthenticatedName, DefaultPartitioner, Partitioner, Principal, SESSION_ID_HEADER,
    VerifiedSession,
};
pub use pattern::{ToolPattern, ToolPatternError};
pub use policy::{CacheScope, PolicyDefaults, PolicyTable, ToolId, ToolOverride, ToolPolicy};
pub use report::{Figure, FigureKind, LayerReport};

/// The response every layer returns: rmcp's `tools/call` response.
pub type CallToolResponse = rmcp::model::CallToolResponse;
