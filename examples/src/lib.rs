//! Example MCP servers built on mcp-tower, and the small pieces they share.
//!
//! - [`demo`]: the demo server's handler (`cargo run -p mcp-tower-examples --bin demo`).
//! - [`conformance`]: the official MCP conformance suite's server fixtures
//!   (`cargo run -p mcp-tower-examples --bin conformance -- --http 127.0.0.1:0`).
//! - [`gateway`]: the gateway — many upstream MCP servers behind one, with the stack in
//!   front (`cargo run -p mcp-tower-examples --bin gateway -- --config examples/gateway.toml`).
//! - [`ssh_tools`]: commands and files on an allowlist of SSH hosts over pooled, verified
//!   connections (`cargo run -p mcp-tower-examples --bin ssh_tools -- --hosts examples/ssh_tools.toml`).
//! - [`serve`]: serving a handler on stdio or streamable HTTP.
#![deny(missing_docs)]

pub mod conformance;
pub mod demo;
pub mod gateway;
pub mod serve;
pub mod ssh_tools;
