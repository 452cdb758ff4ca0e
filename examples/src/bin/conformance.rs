//! The conformance server: the fixtures of the official MCP conformance suite, served on
//! streamable HTTP through the full `McpStack` (or bare, to compare).
//!
//! ```text
//! conformance --http 127.0.0.1:0            # through every layer of the stack
//! conformance --http 127.0.0.1:0 --bare     # the handler alone, no layer
//! conformance --http 127.0.0.1:0 --config stack.toml
//! ```
//!
//! It prints `listening on http://ADDR/mcp` on stderr once bound. `.ci/conformance.sh`
//! runs the suite against both modes and compares the results.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use mcp_tower::{McpStack, StackConfig, ToolOverride};
use mcp_tower_examples::{
    conformance::{Conformance, NOTIFYING_TOOLS},
    serve,
};

#[derive(Debug, Parser)]
#[command(
    name = "conformance",
    about = "The MCP conformance suite's server fixtures, behind mcp-tower"
)]
struct Args {
    /// Serve streamable HTTP on this address (MCP at /mcp).
    #[arg(long, value_name = "ADDR")]
    http: SocketAddr,
    /// Serve the handler without any layer (the baseline the layered run is compared to).
    #[arg(long, conflicts_with = "config")]
    bare: bool,
    /// A TOML file with the stack's configuration (see StackConfig).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "warn")]
    log: tracing::Level,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    serve::log_to_stderr(args.log);

    let handler = Conformance::new()?;
    let shutdown = serve::shutdown_on_signal();
    let config = StackConfig::load(args.config.as_deref())?;
    let http = config.http.clone();
    if args.bare {
        serve::serve_edge(handler, None, http, Some(args.http), shutdown).await
    } else {
        // The per-tool override from code: tools whose notifications the caller must see
        // are neither cached nor shared (see NOTIFYING_TOOLS).
        let stack = NOTIFYING_TOOLS
            .iter()
            .fold(McpStack::builder().config(config), |stack, tool| {
                stack.tool_override(
                    *tool,
                    ToolOverride::default().with_cache(false).with_dedup(false),
                )
            })
            .build()?;
        serve::serve_edge(stack.serve(handler), None, http, Some(args.http), shutdown).await
    }
}
