//! The HTTP edge (feature `http`): what sits between a socket and a [`LayeredServer`](crate::LayeredServer) —
//! bind, `TCP_NODELAY` on every accepted connection, Host and Origin checks, optional bearer
//! auth whose token *name* becomes the caller's principal, a cap on live legacy sessions,
//! the admin endpoints (`/metrics`, `/health`, `/stats`) beside `/mcp`, on their own address
//! or off, and graceful shutdown. Configured by [`HttpConfig`] (`[http]` in the stack's
//! file, `MCP_TOWER_HTTP__*` in the environment).
//!
//! ```no_run
//! use mcp_tower::{McpStack, StackConfig, http::HttpEdge};
//! # #[derive(Clone)] struct MyServer;
//! # impl rmcp::ServerHandler for MyServer {}
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = StackConfig::load(None)?;
//! let edge = HttpEdge::new(config.http.clone())?;
//! let server = McpStack::from_config(config)?.serve(MyServer);
//! let handles = server.handles().clone();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let bound = edge.bind(server, Some(&handles), &shutdown).await?;
//! eprintln!("listening on {}", bound.url());
//! bound.run().await?;
//! # Ok(()) }
//! ```
//!
//! Why `TCP_NODELAY`: a streamable HTTP answer is often written in several pieces (an SSE
//! stream); with Nagle's algorithm on, the last piece waits for the client's delayed ACK,
//! about 40 ms per call for any client that reads each answer to its end (httpx, `fetch`,
//! wrk).

mod auth;
mod budget;
mod guard;
mod sessions;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use rmcp::{
    ServerHandler,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use auth::{TokenSet, Tokens, TokensError, require_bearer};
pub use budget::{BodyBudget, limit_bodies};
pub use guard::{Guard, check_host_and_origin};
pub use sessions::{SessionCap, VerifiedSessions, cap_sessions};

use crate::{AdminMode, HttpConfig, StackHandles};

/// The path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";

/// The HTTP edge, ready to bind: a validated [`HttpConfig`] and its tokens.
#[derive(Debug, Clone)]
pub struct HttpEdge {
    config: HttpConfig,
    tokens: Option<TokenSet>,
    admin_tokens: Option<TokenSet>,
}

impl HttpEdge {
    /// Validates `config` and reads its tokens files. Refuses a non-loopback bind without
    /// auth unless `allow_unauthenticated` is set.
    pub fn new(config: HttpConfig) -> anyhow::Result<Self> {
        config.validate().map_err(|(field, reason)| {
            anyhow::anyhow!("invalid configuration: http.{field}: {reason}")
        })?;
        let tokens = config
            .tokens_file
            .as_deref()
            .map(TokenSet::load)
            .transpose()?;
        let admin_tokens = match &config.admin_tokens_file {
            Some(path) => Some(TokenSet::load(path)?),
            None => tokens.clone(),
        };
        Ok(Self {
            config,
            tokens,
            admin_tokens,
        })
    }

    /// Uses these tokens for `/mcp` (and the admin endpoints unless they have their own).
    pub fn with_tokens(mut self, tokens: TokenSet) -> Self {
        if self.admin_tokens.is_none() || self.config.admin_tokens_file.is_none() {
            self.admin_tokens = Some(tokens.clone());
        }
        self.tokens = Some(tokens);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    fn guard(&self) -> Guard {
        Guard::new(
            self.config.effective_allowed_hosts(),
            self.config.allowed_origins.clone(),
        )
    }

    /// The MCP endpoint at [`MCP_PATH`]: Host and Origin checked, bearer auth when
    /// configured, the body budget, the session cap, then rmcp's streamable HTTP service
    /// over `server`.
    pub fn mcp_router<S: ServerHandler + Clone>(
        &self,
        server: S,
        shutdown: &CancellationToken,
    ) -> Router {
        let c = &self.config;
        let mut rmcp_config = StreamableHttpServerConfig::default()
            .with_cancellation_token(shutdown.child_token())
            .with_allowed_hosts(c.effective_allowed_hosts())
            .with_max_request_body_bytes(c.max_body_bytes)
            .with_legacy_session_mode(c.sessions.enabled)
            .with_json_response(c.json_response);
        rmcp_config = if c.allowed_origins.is_empty() {
            rmcp_config.enforce_origin_validation()
        } else {
            rmcp_config.with_allowed_origins(c.allowed_origins.clone())
        };
        let mut manager = LocalSessionManager::default();
        manager.session_config.keep_alive = Some(c.sessions.idle_timeout);
        let manager = Arc::new(manager);
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(VerifiedSessions::new(Arc::clone(&manager))),
            rmcp_config,
        );
        let mut router = Router::new().nest_service(MCP_PATH, service);
        if c.sessions.enabled {
            let cap = SessionCap::new(manager, c.sessions.max, c.max_body_bytes);
            router = router.layer(middleware::from_fn_with_state(cap, cap_sessions));
        }
        let budget = BodyBudget::new(c.max_body_bytes_in_flight, c.max_body_bytes);
        router = router.layer(middleware::from_fn_with_state(budget, limit_bodies));
        if let Some(tokens) = &self.tokens {
            router = router.layer(middleware::from_fn_with_state(
                tokens.clone(),
                require_bearer,
            ));
        }
        router.layer(middleware::from_fn_with_state(
            self.guard(),
            check_host_and_origin,
        ))
    }

    /// The admin endpoints (`/metrics`, `/health`, `/stats`) of `handles`, behind the same
    /// Host and Origin checks and the admin tokens (when any). `None` without a metrics
    /// layer.
    pub fn admin_router(&self, handles: &StackHandles) -> Option<Router> {
        let mut router = handles.metrics.as_ref()?.router();
        if let Some(tokens) = &self.admin_tokens {
            router = router.layer(middleware::from_fn_with_state(
                tokens.clone(),
                require_bearer,
            ));
        }
        Some(router.layer(middleware::from_fn_with_state(
            self.guard(),
            check_host_and_origin,
        )))
    }

    /// Binds the listeners (`bind`, and `admin_bind` with `admin = "separate"`) and starts
    /// serving `server` (and the admin endpoints of `handles`) until `shutdown` is
    /// cancelled. Every accepted connection gets `TCP_NODELAY`. With a tokens file, SIGHUP
    /// reads it again.
    pub async fn bind<S: ServerHandler + Clone>(
        self,
        server: S,
        handles: Option<&StackHandles>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Bound> {
        let mut router = self.mcp_router(server, shutdown);
        let admin = handles.and_then(|h| self.admin_router(h));
        let mut admin_router = None;
        match (self.config.admin, admin) {
            (AdminMode::Same, Some(admin)) => router = router.merge(admin),
            (AdminMode::Separate, Some(admin)) => admin_router = Some(admin),
            _ => {}
        }
        let (mcp, mcp_task) = serve_on(self.config.bind, router, shutdown).await?;
        let admin = match (admin_router, self.config.admin_bind) {
            (Some(admin), Some(addr)) => Some(serve_on(addr, admin, shutdown).await?),
            _ => None,
        };
        #[cfg(unix)]
        if self.tokens.is_some() || self.admin_tokens.is_some() {
            reload_on_sighup(
                [self.tokens.clone(), self.admin_tokens.clone()],
                shutdown.clone(),
            );
        }
        let (admin, admin_task) = match admin {
            Some((addr, task)) => (Some(addr), Some(task)),
            None => (None, None),
        };
        Ok(Bound {
            mcp,
            admin,
            tasks: [Some(mcp_task), admin_task].into_iter().flatten().collect(),
        })
    }
}

/// Listeners bound and serving.
#[derive(Debug)]
pub struct Bound {
    /// Where `/mcp` is served.
    pub mcp: SocketAddr,
    /// Where the admin endpoints are served when on their own listener.
    pub admin: Option<SocketAddr>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Bound {
    /// The MCP endpoint's URL (`http://ADDR/mcp`).
    pub fn url(&self) -> String {
        format!("http://{}{MCP_PATH}", self.mcp)
    }

    /// Waits until every listener has stopped (after the shutdown token is cancelled and
    /// the connections in flight are done).
    pub async fn run(self) -> anyhow::Result<()> {
        for task in self.tasks {
            task.await.context("the HTTP server task failed")??;
        }
        Ok(())
    }
}

/// A request the edge turns away before rmcp sees it: 503 with `Retry-After` and the
/// project's busy error (`data` adds to `layer`, `kind`, `transient`, `retryAfterMs`).
fn busy_response(message: String, retry_after_secs: u64, data: serde_json::Value) -> Response {
    let mut full = serde_json::json!({
        "layer": "http", "kind": "busy", "transient": false,
        "retryAfterMs": retry_after_secs * 1000,
    });
    if let (Some(full), serde_json::Value::Object(more)) = (full.as_object_mut(), data) {
        full.extend(more);
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": crate::error::codes::BUSY.0, "message": message, "data": full},
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

async fn serve_on(
    addr: SocketAddr,
    router: Router,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY on an accepted connection");
        }
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .with_context(|| format!("serving HTTP on {bound}"))
    });
    Ok((bound, task))
}

#[cfg(unix)]
fn reload_on_sighup(sets: [Option<TokenSet>; 2], shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: tokens files will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            for set in sets.iter().flatten() {
                match set.reload() {
                    Ok(n) => tracing::info!(tokens = n, "reloaded the tokens file"),
                    Err(error) => tracing::error!(%error, "kept the previous tokens"),
                }
            }
        }
    });
}
