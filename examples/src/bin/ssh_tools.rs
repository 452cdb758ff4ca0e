//! The `ssh_tools` MCP server: `ssh_exec`, `ssh_read_file`, `sftp_upload`, `sftp_download` on
//! an allowlist of SSH hosts, through pooled, host-key-verified russh connections and behind
//! the full `McpStack`.
//!
//! ```text
//! ssh_tools --hosts examples/ssh_tools.toml                       # MCP over stdio
//! ssh_tools --hosts hosts.toml --http 127.0.0.1:8080              # streamable HTTP at /mcp,
//!                                                                 # with /metrics, /health, /stats
//! ssh_tools --hosts hosts.toml --config stack.toml                # stack configuration too
//! ```

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use clap::Parser;
use mcp_tower::{McpStack, StackConfig};
use mcp_tower_examples::{
    serve,
    ssh_tools::{SshTools, load_config},
};
use mcp_tower_ssh::SshPool;

#[derive(Debug, Parser)]
#[command(
    name = "ssh_tools",
    about = "MCP tools over pooled, verified SSH connections"
)]
struct Args {
    /// The SSH configuration: known_hosts, limits, `[pool]` and the `[hosts.<name>]` allowlist.
    #[arg(long, value_name = "PATH")]
    hosts: PathBuf,
    /// Serve streamable HTTP on this address (MCP at /mcp) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
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

    let ssh = SshPool::new(load_config(&args.hosts)?)?;
    let config = StackConfig::load(args.config.as_deref())?;
    let http = config.http.clone();
    let server = McpStack::from_config(config)?.serve(SshTools::new(ssh.clone()));
    // The pool's figures (per host: connections, in flight, connects, reaped…) in /metrics,
    // /stats and /health.
    if let Some(metrics) = server.handles().metrics.as_ref() {
        metrics.add_report(Arc::new(ssh.handle()));
    }
    let served = match args.http {
        None => serve::serve_stdio(server).await,
        Some(addr) => {
            let shutdown = serve::shutdown_on_signal();
            let handles = server.handles().clone();
            serve::serve_edge(server, Some(&handles), http, Some(addr), shutdown).await
        }
    };
    ssh.shutdown().await;
    served
}
