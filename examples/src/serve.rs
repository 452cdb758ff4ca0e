//! Serving an rmcp handler (usually a `LayeredServer`) on stdio or streamable HTTP.

use std::net::SocketAddr;

use anyhow::Context as _;
use mcp_tower::{HttpConfig, StackHandles, http::HttpEdge};
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
    // Legacy sessions are caller identities once rmcp has found them (see VerifiedSessions).
    let sessions = mcp_tower::http::VerifiedSessions::new(LocalSessionManager::default().into());
    let service = StreamableHttpService::new(move || Ok(server.clone()), sessions.into(), config);
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

/// Serves `server` (and the admin endpoints of `handles`) on the HTTP edge configured by
/// `http` (`[http]`; `bind`, when given, overrides its address) until `shutdown` is
/// cancelled: `TCP_NODELAY`, Host/Origin checks, bearer auth, the session cap
/// ([`mcp_tower::http`]). Prints `listening on http://ADDR/mcp` on stderr (useful with port
/// 0), and the admin address when it has its own listener.
pub async fn serve_edge<S: ServerHandler + Clone>(
    server: S,
    handles: Option<&StackHandles>,
    mut http: HttpConfig,
    bind: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = bind {
        http.bind = addr;
    }
    let edge = HttpEdge::new(http)?;
    let bound = edge.bind(server, handles, &shutdown).await?;
    eprintln!("listening on {}", bound.url());
    if let Some(admin) = bound.admin {
        eprintln!("admin endpoints on http://{admin}");
    }
    bound.run().await
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
