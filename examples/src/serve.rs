//! Serving an rmcp handler (usually a `LayeredServer`) on stdio or streamable HTTP.

use std::net::SocketAddr;

use anyhow::Context as _;
use mcp_tower::StackHandles;
use rmcp::{
    ServerHandler, ServiceExt,
    transport::{
        stdio,
        streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
        },
    },
};
use tokio_util::sync::CancellationToken;

/// The path the MCP endpoint is served at.
pub const MCP_PATH: &str = "/mcp";

/// Serves `server` on stdin/stdout until the client goes away.
pub async fn serve_stdio<S: ServerHandler>(server: S) -> anyhow::Result<()> {
    let running = server
        .serve(stdio())
        .await
        .context("starting the stdio transport")?;
    running.waiting().await.context("serving stdio")?;
    Ok(())
}

/// An axum router with the streamable HTTP MCP endpoint at [`MCP_PATH`]. Every session gets
/// a clone of `server` (cheap: its state is shared).
pub fn mcp_router<S: ServerHandler + Clone>(
    server: S,
    shutdown: &CancellationToken,
) -> axum::Router {
    let config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    axum::Router::new().nest_service(MCP_PATH, service)
}

/// Serves `router` on 127.0.0.1, at a port the OS picks, in a spawned task until `shutdown`
/// is cancelled; returns the MCP endpoint's URL. For tests and for embedding a server.
pub async fn serve_loopback(
    router: axum::Router,
    shutdown: &CancellationToken,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::warn!(error = %e, %addr, "serving on the loopback address failed");
        }
    });
    Ok(format!("http://{addr}{MCP_PATH}"))
}

/// The `Mcp-Session-Id` of the streamable HTTP request that carried a message (`None` on
/// stdio, or before the session has an id).
pub fn session_id(extensions: &rmcp::model::Extensions) -> Option<String> {
    extensions
        .get::<http::request::Parts>()?
        .headers
        .get("mcp-session-id")?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// Logs events at `level` and above to stderr, without colours: on stdio, stdout carries
/// the MCP messages. Call once, at the start of `main`.
pub fn log_to_stderr(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Adds the admin endpoints — `GET /metrics` (Prometheus text), `GET /health` (JSON; 503
/// when a layer reports itself unhealthy, such as a pool whose required upstream is down) and
/// `GET /stats` (JSON per tool and per layer) — beside the MCP endpoint, on the same listener.
pub fn with_admin_endpoints(router: axum::Router, handles: &StackHandles) -> axum::Router {
    match &handles.metrics {
        Some(metrics) => router.merge(metrics.router()),
        None => router,
    }
}

/// Binds `addr` and serves `router` until `shutdown` is cancelled. Prints the bound address
/// (useful with port 0) on stderr as `listening on http://ADDR/mcp`.
pub async fn serve_http(
    router: axum::Router,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    eprintln!("listening on http://{bound}{MCP_PATH}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
        .context("serving HTTP")?;
    Ok(())
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        cancel.cancel();
    });
    token
}
