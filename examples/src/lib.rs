//! Example MCP servers built on mcp-tower, and the small pieces they share.
//!
//! - [`demo`]: the demo server's handler (`cargo run -p mcp-tower-examples --bin demo`).
//! - [`serve`]: serving a handler on stdio or streamable HTTP.
#![deny(missing_docs)]

pub mod demo;
pub mod serve;
