//! [`McpConnector`]: the [`Connector`] of upstream MCP sessions ([`McpSession`]), over stdio
//! child processes or streamable HTTP.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use process_wrap::tokio::CommandWrap;
use rmcp::{
    ClientHandler, ErrorData, Peer, RoleClient, RoleServer,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResponse, CancelledNotificationParam,
        ClientCapabilities, ClientConfig, ClientRequest, Implementation, PingRequest,
        ProgressNotificationParam, ProgressToken, RequestId, ServerResult,
    },
    serve_client,
    service::{
        NotificationContext, PeerRequestOptions, RequestContext, RunningService, ServiceError,
    },
    transport::{
        StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::watch,
};

use super::{
    config::{StderrMode, UpstreamConfig, UpstreamKind},
    progress::{ProgressRoute, ProgressRoutes},
};
use crate::Connector;

/// How long closing a session may take (the child process gets rmcp's stdio shutdown
/// sequence: stdin closed, then SIGTERM, then SIGKILL, a few seconds apart).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The data key rmcp marks "transport closed" errors with.
const TRANSPORT_CLOSED_MARKER: &str = "io.modelcontextprotocol/transportClosed";

/// Why an upstream session could not be opened or pinged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No upstream of that name is configured.
    #[error("no upstream named `{0}` is configured")]
    Unknown(Arc<str>),
    /// The upstream's configuration is invalid.
    #[error("invalid upstream configuration: {0}")]
    Config(String),
    /// The child process could not be started.
    #[error("starting `{command}` failed: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The MCP handshake (`initialize`) failed.
    #[error("the MCP handshake failed: {0}")]
    Handshake(String),
    /// A ping failed.
    #[error("ping failed: {0}")]
    Ping(String),
}

/// Why a call on an upstream session failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamCallError {
    /// The session's transport failed or closed: the session is gone.
    #[error("{0}")]
    Transport(String),
    /// The upstream answered with a JSON-RPC error (passed on to the caller as is).
    #[error("the upstream answered with an error: {}", .0.message)]
    Upstream(ErrorData),
    /// The upstream cancelled the request.
    #[error("the upstream cancelled the request{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    UpstreamCancelled(Option<String>),
    /// The caller cancelled; `notifications/cancelled` was sent upstream.
    #[error("cancelled by the caller")]
    Cancelled,
    /// The upstream answered `tools/call` with something else than a tool result.
    #[error("the upstream answered `tools/call` with an unexpected result")]
    Unexpected,
}

impl UpstreamCallError {
    fn from_service(error: ServiceError) -> Self {
        match error {
            ServiceError::McpError(e)
                if e.data
                    .as_ref()
                    .is_some_and(|d| d.get(TRANSPORT_CLOSED_MARKER).is_some()) =>
            {
                Self::Transport(format!("the session closed: {}", e.message))
            }
            ServiceError::McpError(e) => Self::Upstream(e),
            ServiceError::TransportSend(e) => Self::Transport(format!("sending failed: {e}")),
            ServiceError::TransportClosed => Self::Transport("the session closed".into()),
            ServiceError::Cancelled { reason } => Self::UpstreamCancelled(reason),
            ServiceError::UnexpectedResponse => Self::Unexpected,
            other => Self::Transport(other.to_string()),
        }
    }
}

/// What the upstreams tell the gateway outside of responses.
#[derive(Debug)]
struct UpstreamEvents {
    /// Bumped when an upstream's tool list may have changed (a new session, or
    /// `notifications/tools/list_changed`).
    tools_changed: watch::Sender<u64>,
}

impl UpstreamEvents {
    fn tools_changed(&self) {
        self.tools_changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The rmcp client handler of one upstream session: routes progress to callers and
/// reports tool list changes.
#[derive(Debug, Clone)]
struct UpstreamClient {
    upstream: Arc<str>,
    progress: Arc<ProgressRoutes>,
    events: Arc<UpstreamEvents>,
    info: ClientConfig,
}

impl ClientHandler for UpstreamClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.forward(params).await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::debug!(upstream = %self.upstream, "upstream tool list changed");
        self.events.tools_changed();
    }

    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }
}

/// One upstream MCP session: an rmcp client over a child process's stdio or streamable
/// HTTP. Many tool calls share it at once.
pub struct McpSession {
    upstream: Arc<str>,
    peer: Peer<RoleClient>,
    running: tokio::sync::Mutex<Option<RunningService<RoleClient, UpstreamClient>>>,
    progress: Arc<ProgressRoutes>,
    pid: Option<u32>,
}

impl fmt::Debug for McpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpSession")
            .field("upstream", &self.upstream)
            .field("pid", &self.pid)
            .field("closed", &self.peer.is_transport_closed())
            .finish_non_exhaustive()
    }
}

impl McpSession {
    /// The upstream's name.
    pub fn upstream(&self) -> &Arc<str> {
        &self.upstream
    }

    /// The rmcp client peer: `list_all_tools`, `read_resource`… on the upstream.
    pub fn peer(&self) -> &Peer<RoleClient> {
        &self.peer
    }

    /// The child process's id (stdio upstreams).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Whether the session's transport is closed.
    pub fn is_closed(&self) -> bool {
        self.peer.is_transport_closed()
    }

    /// Calls a tool on the upstream.
    ///
    /// With the `downstream` request context of the caller:
    /// - progress notifications the upstream sends for this request reach the caller,
    ///   with the caller's progress token (when it gave one);
    /// - when the caller's cancellation token fires, `notifications/cancelled` is sent
    ///   upstream and the call ends with [`UpstreamCallError::Cancelled`].
    ///
    /// Dropping the future before the answer also cancels the upstream request.
    pub async fn call_tool(
        &self,
        params: CallToolRequestParams,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<CallToolResponse, UpstreamCallError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let handle = self
            .peer
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(UpstreamCallError::from_service)?;
        let route = downstream.and_then(|cx| {
            cx.meta.get_progress_token().map(|token| ProgressRoute {
                peer: cx.peer.clone(),
                token,
            })
        });
        let early = self
            .progress
            .register(handle.progress_token.clone(), route.clone());
        let mut guard = InFlightRequest {
            session: self,
            id: Some(handle.id.clone()),
            token: handle.progress_token.clone(),
        };
        if let Some(route) = &route {
            for params in early {
                route.deliver(params).await;
            }
        }
        let response = handle.await_response();
        let result = match downstream.map(|cx| &cx.ct) {
            Some(cancelled) => tokio::select! {
                biased;
                result = response => result,
                () = cancelled.cancelled() => {
                    guard.cancel("cancelled by the downstream client");
                    return Err(UpstreamCallError::Cancelled);
                }
            },
            None => response.await,
        };
        guard.disarm();
        match result.map_err(UpstreamCallError::from_service)? {
            ServerResult::CallToolResult(result) => Ok(CallToolResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(CallToolResponse::InputRequired(result))
            }
            ServerResult::CreateTaskResult(result) => Ok(CallToolResponse::Task(result)),
            _ => Err(UpstreamCallError::Unexpected),
        }
    }

    /// Closes the session and waits for it: rmcp's stdio shutdown for a child process
    /// (stdin closed, then SIGTERM, then SIGKILL to its process group; the child is reaped),
    /// a session `DELETE` for HTTP.
    pub async fn close(&self) {
        let running = self.running.lock().await.take();
        if let Some(mut running) = running {
            match running.close_with_timeout(CLOSE_TIMEOUT).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(upstream = %self.upstream, "closing the session timed out")
                }
                Err(error) => {
                    tracing::warn!(upstream = %self.upstream, %error, "closing the session failed")
                }
            }
        }
    }
}

/// An upstream request in flight: unregisters its progress route when it ends and
/// cancels it upstream if it ends without an answer (the caller's future was dropped).
struct InFlightRequest<'a> {
    session: &'a McpSession,
    id: Option<RequestId>,
    token: ProgressToken,
}

impl InFlightRequest<'_> {
    fn disarm(&mut self) {
        self.id = None;
    }

    fn cancel(&mut self, reason: &'static str) {
        if let Some(id) = self.id.take() {
            cancel_upstream(self.session, id, reason);
        }
    }
}

impl Drop for InFlightRequest<'_> {
    fn drop(&mut self) {
        self.session.progress.unregister(&self.token);
        self.cancel("the caller went away");
    }
}

/// Sends `notifications/cancelled` for `id` without making the caller wait for the write
/// (a notification, not a tool call: it may run on a task of its own).
fn cancel_upstream(session: &McpSession, id: RequestId, reason: &'static str) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let peer = session.peer.clone();
    let upstream = Arc::clone(&session.upstream);
    runtime.spawn(async move {
        tracing::debug!(%upstream, %id, reason, "cancelling the upstream request");
        let params = CancelledNotificationParam::new(Some(id), Some(reason.to_owned()));
        if let Err(error) = peer.notify_cancelled(params).await {
            tracing::debug!(%upstream, %error, "could not send the cancellation upstream");
        }
    });
}

struct Upstream {
    name: Arc<str>,
    config: UpstreamConfig,
    kind: UpstreamKind,
}

/// The [`Connector`] of upstream MCP servers: for each configured upstream, a session is
/// an rmcp client over a child process's stdio (the child is started in its own process
/// group and reaped on close) or over streamable HTTP.
///
/// ```no_run
/// use mcp_tower_pool::{McpConnector, Pool, PoolConfig, UpstreamConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let connector = McpConnector::new([
///     ("everything", UpstreamConfig::stdio("npx", ["-y", "@modelcontextprotocol/server-everything"])),
///     ("search", UpstreamConfig::http("http://127.0.0.1:9000/mcp")),
/// ])?;
/// let pool = Pool::builder(connector).with_config(PoolConfig::default()).build()?;
/// let session = pool.get(&"everything".into()).await?;
/// let tools = session.peer().list_all_tools().await?;
/// # let _ = tools; Ok(())
/// # }
/// ```
pub struct McpConnector {
    upstreams: HashMap<Arc<str>, Upstream>,
    info: ClientConfig,
    events: Arc<UpstreamEvents>,
}

impl fmt::Debug for McpConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.upstreams.keys().map(|k| k.as_ref()).collect();
        names.sort_unstable();
        f.debug_struct("McpConnector")
            .field("upstreams", &names)
            .finish_non_exhaustive()
    }
}

impl McpConnector {
    /// A connector for these upstreams (by name). Disabled upstreams are left out; every
    /// other one is validated ([`UpstreamConfig::validate`]).
    pub fn new<N: Into<String>>(
        upstreams: impl IntoIterator<Item = (N, UpstreamConfig)>,
    ) -> Result<Self, UpstreamError> {
        let mut map = HashMap::new();
        for (name, config) in upstreams {
            let name: String = name.into();
            if !config.enabled {
                continue;
            }
            let kind = config.validate(&name).map_err(UpstreamError::Config)?;
            let name: Arc<str> = Arc::from(name);
            map.insert(Arc::clone(&name), Upstream { name, config, kind });
        }
        Ok(Self {
            upstreams: map,
            info: ClientConfig::new(
                ClientCapabilities::default(),
                Implementation::new("mcp-tower-gateway", env!("CARGO_PKG_VERSION")),
            ),
            events: Arc::new(UpstreamEvents {
                tools_changed: watch::channel(0).0,
            }),
        })
    }

    /// A connector for the upstreams of a configuration's `[upstreams.*]` sections.
    pub fn from_config(
        upstreams: &BTreeMap<String, UpstreamConfig>,
    ) -> Result<Self, UpstreamError> {
        Self::new(upstreams.iter().map(|(n, c)| (n.clone(), c.clone())))
    }

    /// Introduces the gateway to upstreams as `client_info` (default
    /// `mcp-tower-gateway`).
    pub fn with_client_info(mut self, client_info: Implementation) -> Self {
        self.info.client_info = client_info;
        self
    }

    /// The configured (enabled) upstreams' names, sorted.
    pub fn upstreams(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.upstreams.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The configuration of upstream `name`.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.get(name).map(|u| &u.config)
    }

    /// A receiver that changes whenever an upstream's tool list may have changed: a new
    /// session was opened, or an upstream sent `notifications/tools/list_changed`.
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.events.tools_changed.subscribe()
    }

    async fn open(&self, upstream: &Upstream) -> Result<McpSession, UpstreamError> {
        let progress = Arc::new(ProgressRoutes::default());
        let client = UpstreamClient {
            upstream: Arc::clone(&upstream.name),
            progress: Arc::clone(&progress),
            events: Arc::clone(&self.events),
            info: self.info.clone(),
        };
        let handshake =
            |e: rmcp::service::ClientInitializeError| UpstreamError::Handshake(e.to_string());
        let (running, pid) = match upstream.kind {
            UpstreamKind::Stdio => {
                let (transport, pid) = spawn_child(upstream)?;
                (
                    serve_client(client, transport).await.map_err(handshake)?,
                    pid,
                )
            }
            UpstreamKind::Http => {
                let transport = StreamableHttpClientTransport::from_config(http_config(upstream)?);
                (
                    serve_client(client, transport).await.map_err(handshake)?,
                    None,
                )
            }
        };
        self.events.tools_changed();
        Ok(McpSession {
            upstream: Arc::clone(&upstream.name),
            peer: running.peer().clone(),
            running: tokio::sync::Mutex::new(Some(running)),
            progress,
            pid,
        })
    }
}

fn spawn_child(upstream: &Upstream) -> Result<(TokioChildProcess, Option<u32>), UpstreamError> {
    let config = &upstream.config;
    let command = config.command.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(&config.args).envs(&config.env);
    if let Some(cwd) = &config.cwd {
        cmd.current_dir(cwd);
    }
    let mut wrap = CommandWrap::from(cmd);
    // Its own process group, so closing the session also ends what it started (`npx`
    // runs the server as a grandchild).
    #[cfg(unix)]
    wrap.wrap(process_wrap::tokio::ProcessGroup::leader());
    let stderr = match config.stderr {
        StderrMode::Log => Stdio::piped(),
        StderrMode::Inherit => Stdio::inherit(),
        StderrMode::Null => Stdio::null(),
    };
    let (transport, stderr) = TokioChildProcess::builder(wrap)
        .stderr(stderr)
        .spawn()
        .map_err(|source| UpstreamError::Spawn {
            command: command.clone(),
            source,
        })?;
    let pid = transport.id();
    if let Some(stderr) = stderr {
        let name = Arc::clone(&upstream.name);
        // Ends at EOF, when the child exits.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "mcp_tower_pool::upstream", upstream = %name, "{line}");
            }
        });
    }
    Ok((transport, pid))
}

fn http_config(upstream: &Upstream) -> Result<StreamableHttpClientTransportConfig, UpstreamError> {
    let config = &upstream.config;
    let url = config.url.clone().unwrap_or_default();
    let mut headers = HashMap::new();
    for (name, value) in &config.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| UpstreamError::Config(format!("header `{name}`: {e}")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|e| UpstreamError::Config(format!("header `{name}`: {e}")))?;
        headers.insert(name, value);
    }
    Ok(StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers))
}

impl Connector for McpConnector {
    type Key = Arc<str>;
    type Connection = McpSession;
    type Error = UpstreamError;

    async fn connect(&self, key: &Arc<str>) -> Result<McpSession, UpstreamError> {
        let upstream = self
            .upstreams
            .get(key)
            .ok_or_else(|| UpstreamError::Unknown(Arc::clone(key)))?;
        self.open(upstream).await
    }

    fn is_closed(&self, session: &McpSession) -> bool {
        session.is_closed()
    }

    async fn ping(&self, session: &McpSession) -> Result<(), UpstreamError> {
        session
            .peer
            .send_request(ClientRequest::PingRequest(PingRequest::default()))
            .await
            .map(drop)
            .map_err(|e| UpstreamError::Ping(e.to_string()))
    }

    async fn close(&self, session: &McpSession) {
        session.close().await;
    }
}
