//! The mcp-tower gateway: N upstream MCP servers (stdio child processes or streamable HTTP)
//! behind one streamable HTTP endpoint, with the whole mcp-tower stack in front of their
//! tools.
//!
//! ```text
//! gateway --config examples/gateway.toml              # MCP at http://127.0.0.1:8080/mcp
//! gateway --config gateway.toml --http 0.0.0.0:9000   # override `listen`
//! ```

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use mcp_tower_examples::{
    gateway::{GatewayApp, GatewayConfig},
    serve,
};

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    about = "The mcp-tower gateway: many MCP servers behind one, with the mcp-tower stack in front"
)]
struct Args {
    /// The gateway's configuration (TOML: `listen`, `[stack]`, `[pool]`, `[upstreams.NAME]`).
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// Serve on this address instead of the configuration's `listen`.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "warn")]
    log: tracing::Level,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    serve::log_to_stderr(args.log);

    let config = GatewayConfig::load(&args.config)?;
    let addr = args.http.unwrap_or_else(|| config.listen());
    let http = config.stack.http.clone();
    let app = GatewayApp::build(config).await?;

    let shutdown = serve::shutdown_on_signal();
    // /mcp, and beside it /metrics, /health (503 while a required upstream is down) and
    // /stats, on the HTTP edge (`[stack.http]`: auth, origins, sessions).
    let served = serve::serve_edge(
        app.server.clone(),
        Some(app.server.handles()),
        http,
        Some(addr),
        shutdown,
    )
    .await;

    // Close every upstream session; child processes are reaped, none is left behind.
    app.shutdown().await;
    served
}
