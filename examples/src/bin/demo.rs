//! The mcp-tower demo server: five annotated tools behind the full `McpStack`.
//!
//! ```text
//! demo                               # MCP over stdio (for Claude Desktop, Inspector…)
//! demo --http 127.0.0.1:8080         # MCP over streamable HTTP at http://127.0.0.1:8080/mcp,
//!                                    # with /metrics, /health and /stats beside it (the
//!                                    # `[http]` section sets the rest: auth, origins…)
//! demo --config stack.toml           # stack configuration (MCP_TOWER_* env vars also apply)
//! demo --bare                        # the same handler without any layer (a baseline)
//! ```

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use mcp_tower::{HttpConfig, McpStack, StackConfig, StackHandles};
use mcp_tower_examples::{demo::Demo, serve};
use rmcp::ServerHandler;

#[derive(Debug, Parser)]
#[command(name = "demo", about = "The mcp-tower demo MCP server")]
struct Args {
    /// Serve streamable HTTP on this address (MCP at /mcp) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// A TOML file with the stack's configuration (see StackConfig).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The simulated latency of the `weather` tool.
    #[arg(long, value_name = "DURATION", default_value = "150ms", value_parser = humantime_serde::re::humantime::parse_duration)]
    weather_latency: Duration,
    /// Serve the handler without any mcp-tower layer (the baseline of the end-to-end bench).
    #[arg(long)]
    bare: bool,
    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "warn")]
    log: tracing::Level,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    serve::log_to_stderr(args.log);

    let handler = Demo::new().with_weather_latency(args.weather_latency);
    let mut config = StackConfig::load(args.config.as_deref())?;
    Demo::declare_scopes(&mut config);
    let http = config.http.clone();
    if args.bare {
        return serve(handler, args.http, None, http).await;
    }
    let server = McpStack::from_config(config)?.serve(handler);
    let handles = server.handles().clone();
    serve(server, args.http, Some(&handles), http).await
}

/// Serves on stdio, or on the HTTP edge with `/mcp` and (when the stack is there) the admin
/// endpoints.
async fn serve<S: ServerHandler + Clone>(
    server: S,
    bind: Option<SocketAddr>,
    handles: Option<&StackHandles>,
    http: HttpConfig,
) -> anyhow::Result<()> {
    match bind {
        None => serve::serve_stdio(server).await,
        Some(addr) => {
            let shutdown = serve::shutdown_on_signal();
            serve::serve_edge(server, handles, http, Some(addr), shutdown).await
        }
    }
}
