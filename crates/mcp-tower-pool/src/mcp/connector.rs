//! [`McpConnector`]: the [`Connector`] of upstream MCP sessions ([`McpSession`]), over stdio
//! child processes or streamable HTTP.

// Sampling, roots and logging are deprecated by SEP-2577 but still part of the protocol
// versions the gateway serves: it must relay them.
#![allow(deprecated)]

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use process_wrap::tokio::CommandWrap;
use rmcp::{
    ClientHandler, ErrorData, Peer, RoleClient, RoleServer,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResponse, CancelledNotificationParam,
        ClientCapabilities, ClientConfig, ClientRequest, ClientResult, CreateMessageRequest,
        CreateMessageRequestParams, CreateMessageResult, ElicitRequest, ElicitRequestParams,
        ElicitResult, GetExtensions, Implementation, ListPromptsRequest,
        ListResourceTemplatesRequest, ListResourcesRequest, ListRootsRequest, ListRootsResult,
        ListToolsRequest, LoggingMessageNotificationParam, PaginatedRequestParams, PingRequest,
        ProgressNotificationParam, ProgressToken, Prompt, PromptListChangedNotification,
        ProtocolVersion, RequestId, RequestMetaObject, Resource, ResourceListChangedNotification,
        ResourceTemplate, ResourceUpdatedNotification, ResourceUpdatedNotificationParam,
        ServerNotification, ServerPeerInfo, ServerRequest, ServerResult, Tool,
        ToolListChangedNotification,
    },
    serve_client,
    service::{
        ClientCacheConfig, NotificationContext, PeerRequestOptions, RequestContext, RunningService,
        ServiceError,
    },
    transport::{
        StreamableHttpClientTransport, TokioChildProcess, Transport,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{broadcast, mpsc, watch},
};

use super::{
    config::{StderrMode, UpstreamConfig, UpstreamKind},
    listed::Listed,
    outbox::PeerOutbox,
    progress::{ProgressRoute, ProgressRoutes},
    relay::{
        Attribution, Downstream, Marked, PendingLogs, RelayCounters, RelayReport, RelayStats,
        Relayed, Relays, RouteMark,
    },
};
use crate::Connector;

/// How long closing a session may take (the child process gets rmcp's stdio shutdown
/// sequence: stdin closed, then SIGTERM, then SIGKILL, a few seconds apart).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many upstream notifications [`McpConnector::notifications`] buffers per receiver.
const NOTIFICATION_CAPACITY: usize = 256;

/// How long an answered request waits at most for its last progress notifications to
/// reach the caller.
const PROGRESS_SETTLE_BOUND: Duration = Duration::from_millis(500);

/// The `_meta` key of a request's progress token (set by rmcp for each hop).
const PROGRESS_TOKEN: &str = "progressToken";

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
    /// The upstream answered with a result of another kind than the request's.
    #[error("the upstream answered with an unexpected result")]
    Unexpected,
}

impl UpstreamCallError {
    /// A short, fixed reason a client may read (the error's own text may carry addresses
    /// or the upstream's words: it goes to the log).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Transport(_) => "the connection was lost",
            Self::Upstream(_) => "it answered with an error",
            Self::UpstreamCancelled(_) => "it cancelled the call",
            Self::Cancelled => "the caller cancelled",
            Self::Unexpected => "it answered unexpectedly",
        }
    }

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

/// A notification an upstream sent that belongs to no request of the gateway's: a list
/// or resource changed. (Log messages go to the client of the request they belong to, or
/// to no one: never published here.)
/// What to do with it (which downstream sessions to tell) is the gateway's business:
/// see [`McpConnector::notifications`].
#[derive(Debug, Clone)]
pub struct UpstreamNotification {
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// The pool key of the session that received it: the upstream's name, or
    /// `<upstream>@<principal>` for a per-principal upstream's session of one principal
    /// (`PoolService::session_key`), whose notifications are that principal's alone.
    pub session: Arc<str>,
    /// The notification, as the upstream sent it.
    pub notification: ServerNotification,
}

/// What the upstreams tell the gateway outside of responses.
#[derive(Debug)]
struct UpstreamEvents {
    /// Bumped when an upstream's lists (tools, prompts, resources) may have changed (a new
    /// session, or a `notifications/*/list_changed`).
    lists_changed: watch::Sender<u64>,
    /// The same, per upstream: how many times its lists may have changed.
    list_generations: std::sync::Mutex<HashMap<Arc<str>, u64>>,
    notifications: broadcast::Sender<UpstreamNotification>,
}

impl UpstreamEvents {
    fn lists_changed(&self, upstream: &Arc<str>) {
        {
            let mut generations = self
                .list_generations
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let n = generations.entry(Arc::clone(upstream)).or_insert(0);
            *n = n.wrapping_add(1);
        }
        self.lists_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn publish(&self, upstream: &Arc<str>, session: &Arc<str>, notification: ServerNotification) {
        // No receiver (no gateway listening) is not an error.
        let _ = self.notifications.send(UpstreamNotification {
            upstream: Arc::clone(upstream),
            session: Arc::clone(session),
            notification,
        });
    }
}

/// The rmcp client handler of one upstream session: routes progress, log messages and
/// server→client requests to the downstream callers, and publishes the rest.
#[derive(Debug, Clone)]
struct UpstreamClient {
    upstream: Arc<str>,
    /// The session's pool key (see [`UpstreamNotification::session`]).
    session: Arc<str>,
    progress: Arc<ProgressRoutes>,
    relays: Arc<Relays>,
    events: Arc<UpstreamEvents>,
    info: ClientConfig,
}

impl UpstreamClient {
    async fn relay(
        &self,
        request: ServerRequest,
        context: &RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        self.relays
            .relay(request, context.extensions.get::<Attribution>())
            .await
    }
}

fn unexpected_answer(method: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the downstream client answered `{method}` with another kind of result"),
        None,
    )
}

impl ClientHandler for UpstreamClient {
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        match self.relay(request, &context).await? {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            _ => Err(unexpected_answer("sampling/createMessage")),
        }
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let request = ServerRequest::ListRootsRequest(ListRootsRequest::default());
        match self.relay(request, &context).await? {
            ClientResult::ListRootsResult(result) => Ok(result),
            _ => Err(unexpected_answer("roots/list")),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match self.relay(request, &context).await? {
            ClientResult::ElicitResult(result) => Ok(result),
            _ => Err(unexpected_answer("elicitation/create")),
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.forward(params).await;
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        context: NotificationContext<RoleClient>,
    ) {
        self.relays
            .log(params, context.extensions.get::<Attribution>())
            .await;
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.events.publish(
            &self.upstream,
            &self.session,
            ServerNotification::ResourceUpdatedNotification(ResourceUpdatedNotification::new(
                params,
            )),
        );
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.events.lists_changed(&self.upstream);
        self.events.publish(
            &self.upstream,
            &self.session,
            ServerNotification::ResourceListChangedNotification(
                ResourceListChangedNotification::default(),
            ),
        );
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::debug!(upstream = %self.upstream, "upstream tool list changed");
        self.events.lists_changed(&self.upstream);
        self.events.publish(
            &self.upstream,
            &self.session,
            ServerNotification::ToolListChangedNotification(ToolListChangedNotification::default()),
        );
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.events.lists_changed(&self.upstream);
        self.events.publish(
            &self.upstream,
            &self.session,
            ServerNotification::PromptListChangedNotification(
                PromptListChangedNotification::default(),
            ),
        );
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
    pub(crate) relays: Arc<Relays>,
    /// How the gateway introduced itself (for its own requests on the 2026-07-28
    /// lifecycle).
    info: ClientConfig,
    /// Whether the upstream answers the gateway's own list requests on the newest
    /// protocol version (unknown, yes, no).
    modern_lists: AtomicU8,
    pid: Option<u32>,
}

const MODERN_UNKNOWN: u8 = 0;
const MODERN_YES: u8 = 1;
const MODERN_NO: u8 = 2;

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

    /// What the upstream declared at the handshake: protocol version, capabilities,
    /// implementation, instructions.
    pub fn server_info(&self) -> Option<Arc<ServerPeerInfo>> {
        self.peer.peer_info()
    }

    /// Calls a tool on the upstream ([`request`](Self::request) with `tools/call`).
    pub async fn call_tool(
        &self,
        params: CallToolRequestParams,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<CallToolResponse, UpstreamCallError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        match self.request(request, downstream).await? {
            ServerResult::CallToolResult(result) => Ok(CallToolResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(CallToolResponse::InputRequired(result))
            }
            ServerResult::CreateTaskResult(result) => Ok(CallToolResponse::Task(result)),
            _ => Err(UpstreamCallError::Unexpected),
        }
    }

    /// Sends any request to the upstream on behalf of a downstream request.
    ///
    /// With the `downstream` request context of the caller:
    /// - its `_meta` goes upstream (but its progress token: rmcp sets one per hop), so a
    ///   2026-07-28 request's protocol version, client info, client capabilities and log
    ///   level reach the upstream as the client sent them;
    /// - progress notifications the upstream sends for this request reach the caller,
    ///   with the caller's progress token (when it gave one);
    /// - server→client requests the upstream makes while serving it (sampling,
    ///   elicitation, roots) are sent to the caller from the caller's task (associated
    ///   with its request) and the answers go back upstream, and log messages reach the
    ///   caller — when they can be attributed to this request: by the stream they arrived
    ///   on, or their `_meta` naming it (`relatedRequestId`, or for logs `progressToken`).
    ///   What cannot be attributed is refused (requests) or dropped (logs), and counted
    ///   ([`McpConnector::relay_stats`]), even with one request in flight;
    /// - when the caller's cancellation token fires, `notifications/cancelled` is sent
    ///   upstream and the call ends with [`UpstreamCallError::Cancelled`].
    ///
    /// Dropping the future before the answer also cancels the upstream request.
    pub async fn request(
        &self,
        request: ClientRequest,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<ServerResult, UpstreamCallError> {
        let meta = self.upstream_meta(downstream);
        self.request_with_meta(request, downstream, meta).await
    }

    async fn request_with_meta(
        &self,
        request: ClientRequest,
        downstream: Option<&RequestContext<RoleServer>>,
        meta: RequestMetaObject,
    ) -> Result<ServerResult, UpstreamCallError> {
        let mut options = PeerRequestOptions::no_options();
        options.meta = Some(meta);
        // The route exists before the request is sent: the session's transport binds the
        // request's id and progress token to it before writing the request, so nothing the
        // upstream sends about it can arrive first.
        let (relay_tx, mut relayed) = mpsc::channel::<Relayed>(4);
        let logs = Arc::<PendingLogs>::default();
        let mut request = request;
        let _route = downstream.map(|cx| {
            let mark = self.relays.open(Downstream {
                peer: cx.peer.clone(),
                requests: relay_tx,
                logs: Arc::clone(&logs),
            });
            request.extensions_mut().insert(mark);
            Route {
                relays: &self.relays,
                mark,
            }
        });
        let handle = self
            .peer
            .send_request_with_option(request, options)
            .await
            .map_err(UpstreamCallError::from_service)?;
        let route = downstream.and_then(|cx| {
            cx.meta.get_progress_token().map(|token| ProgressRoute {
                peer: cx.peer.clone(),
                token,
            })
        });
        let handle_token = handle.progress_token.clone();
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
        let result = match downstream {
            Some(cx) => {
                tokio::pin!(response);
                // Server→client requests being answered by the caller: sent from this
                // task, so they are associated with the caller's request.
                let mut answering = FuturesUnordered::new();
                loop {
                    tokio::select! {
                        biased;
                        () = cx.ct.cancelled() => {
                            guard.cancel("cancelled by the downstream client");
                            return Err(UpstreamCallError::Cancelled);
                        }
                        result = &mut response => break result,
                        Some(Relayed { request, reply }) = relayed.recv() => {
                            let peer = cx.peer.clone();
                            answering.push(async move {
                                let answer = peer
                                    .send_request(request)
                                    .await
                                    .map_err(downstream_error);
                                let _ = reply.send(answer);
                            });
                        }
                        Some(()) = answering.next(), if !answering.is_empty() => {}
                    }
                }
            }
            None => response.await,
        };
        if route.is_some() {
            // Progress sent before the answer reaches the caller before the answer.
            self.progress
                .settle(&handle_token, PROGRESS_SETTLE_BOUND)
                .await;
        }
        if downstream.is_some() {
            // So do the log messages it sent before its answer.
            logs.settle(PROGRESS_SETTLE_BOUND).await;
        }
        guard.disarm();
        result.map_err(UpstreamCallError::from_service)
    }

    /// The `_meta` of an upstream request: the downstream request's (but its progress
    /// token), and always a protocol version — the downstream request's, else the
    /// session's. rmcp's streamable HTTP client derives the `MCP-Protocol-Version` header
    /// of a request from its `_meta` version and keeps the last one for requests without
    /// one, so a request without a version after a 2026-07-28 request would go out under
    /// the wrong version.
    fn upstream_meta(&self, downstream: Option<&RequestContext<RoleServer>>) -> RequestMetaObject {
        let mut meta: RequestMetaObject = match downstream {
            Some(cx) => cx
                .meta
                .0
                .0
                .iter()
                .filter(|(key, _)| key.as_str() != PROGRESS_TOKEN)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            None => RequestMetaObject::default(),
        };
        if meta.protocol_version().is_none() {
            let version = downstream
                .and_then(|cx| cx.protocol_version())
                .or_else(|| self.peer.peer_info().map(|i| i.protocol_version.clone()));
            if let Some(version) = version {
                meta.set_protocol_version(version);
            }
        }
        meta
    }

    /// Every page of a list request, concatenated, with `meta`.
    async fn list_all_with<T>(
        &self,
        request: &impl Fn(PaginatedRequestParams) -> ClientRequest,
        page: &impl Fn(ServerResult) -> Option<(Listed<T>, Option<String>)>,
        meta: &RequestMetaObject,
    ) -> Result<Listed<T>, UpstreamCallError> {
        let mut listed: Option<Listed<T>> = None;
        let mut cursor = None;
        loop {
            let params = PaginatedRequestParams::default().with_cursor(cursor);
            let result = self
                .request_with_meta(request(params), None, meta.clone())
                .await?;
            let (more, next) = page(result).ok_or(UpstreamCallError::Unexpected)?;
            match &mut listed {
                Some(listed) => listed.extend(more),
                None => listed = Some(more),
            }
            cursor = next;
            if cursor.is_none() {
                return listed.ok_or(UpstreamCallError::Unexpected);
            }
        }
    }

    /// Every page of a list request, concatenated, with the merged cache hint.
    ///
    /// On behalf of a `downstream` request, with its `_meta` (protocol version, client
    /// info). On the gateway's own behalf (`None`): on the newest protocol version when
    /// the upstream speaks it (so that rmcp's HTTP client learns the tools' `x-mcp-header`
    /// annotations, which 2026-07-28 calls need), else on the session's.
    async fn list_all<T>(
        &self,
        request: impl Fn(PaginatedRequestParams) -> ClientRequest,
        page: impl Fn(ServerResult) -> Option<(Listed<T>, Option<String>)>,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<Listed<T>, UpstreamCallError> {
        if downstream.is_some() {
            let meta = self.upstream_meta(downstream);
            return self.list_all_with(&request, &page, &meta).await;
        }
        let session_meta = self.upstream_meta(None);
        let session_is_newest = session_meta.protocol_version() == Some(ProtocolVersion::LATEST);
        if !session_is_newest && self.modern_lists.load(Ordering::Relaxed) != MODERN_NO {
            let modern = RequestMetaObject::with_client_context(
                ProtocolVersion::LATEST,
                self.info.client_info.clone(),
                self.info.capabilities.clone(),
            );
            match self.list_all_with(&request, &page, &modern).await {
                Ok(items) => {
                    self.modern_lists.store(MODERN_YES, Ordering::Relaxed);
                    return Ok(items);
                }
                Err(UpstreamCallError::Upstream(error)) => {
                    tracing::debug!(upstream = %self.upstream, %error.message, "the upstream does not list on the newest protocol version");
                    self.modern_lists.store(MODERN_NO, Ordering::Relaxed);
                }
                Err(other) => return Err(other),
            }
        }
        self.list_all_with(&request, &page, &session_meta).await
    }

    /// The upstream's tools, every page (`tools/list`), with the list's cache hint; on
    /// behalf of `downstream` when given (see [`request`](Self::request)).
    pub async fn list_all_tools(
        &self,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<Listed<Tool>, UpstreamCallError> {
        self.list_all(
            |p| ClientRequest::ListToolsRequest(ListToolsRequest::with_param(p)),
            |r| match r {
                ServerResult::ListToolsResult(r) => {
                    Some((Listed::new(r.tools, r.ttl_ms, r.cache_scope), r.next_cursor))
                }
                _ => None,
            },
            downstream,
        )
        .await
    }

    /// The upstream's prompts, every page (`prompts/list`), with the list's cache hint.
    pub async fn list_all_prompts(
        &self,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<Listed<Prompt>, UpstreamCallError> {
        self.list_all(
            |p| ClientRequest::ListPromptsRequest(ListPromptsRequest::with_param(p)),
            |r| match r {
                ServerResult::ListPromptsResult(r) => Some((
                    Listed::new(r.prompts, r.ttl_ms, r.cache_scope),
                    r.next_cursor,
                )),
                _ => None,
            },
            downstream,
        )
        .await
    }

    /// The upstream's resources, every page (`resources/list`), with the list's cache hint.
    pub async fn list_all_resources(
        &self,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<Listed<Resource>, UpstreamCallError> {
        self.list_all(
            |p| ClientRequest::ListResourcesRequest(ListResourcesRequest::with_param(p)),
            |r| match r {
                ServerResult::ListResourcesResult(r) => Some((
                    Listed::new(r.resources, r.ttl_ms, r.cache_scope),
                    r.next_cursor,
                )),
                _ => None,
            },
            downstream,
        )
        .await
    }

    /// The upstream's resource templates, every page (`resources/templates/list`), with
    /// the list's cache hint.
    pub async fn list_all_resource_templates(
        &self,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<Listed<ResourceTemplate>, UpstreamCallError> {
        self.list_all(
            |p| {
                ClientRequest::ListResourceTemplatesRequest(
                    ListResourceTemplatesRequest::with_param(p),
                )
            },
            |r| match r {
                ServerResult::ListResourceTemplatesResult(r) => Some((
                    Listed::new(r.resource_templates, r.ttl_ms, r.cache_scope),
                    r.next_cursor,
                )),
                _ => None,
            },
            downstream,
        )
        .await
    }

    /// Pings the upstream (with the session's protocol version, see
    /// [`request`](Self::request)).
    pub async fn ping(&self) -> Result<(), UpstreamCallError> {
        self.request(ClientRequest::PingRequest(PingRequest::default()), None)
            .await
            .map(drop)
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
    /// `None` once answered (nothing to cancel).
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

/// The relay route of an upstream request on behalf of a downstream one: closed when the
/// request ends, however it ends.
struct Route<'a> {
    relays: &'a Relays,
    mark: RouteMark,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.relays.close(self.mark);
    }
}

impl Drop for InFlightRequest<'_> {
    fn drop(&mut self) {
        self.session.progress.unregister(&self.token);
        self.cancel("the caller went away");
    }
}

/// A downstream client's failure to answer a relayed request, as the upstream sees it.
fn downstream_error(error: ServiceError) -> ErrorData {
    match error {
        ServiceError::McpError(error) => error,
        other => ErrorData::internal_error(
            format!("the downstream client did not answer: {other}"),
            None,
        ),
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
/// let tools = session.list_all_tools(None).await?.items;
/// # let _ = tools; Ok(())
/// # }
/// ```
pub struct McpConnector {
    upstreams: HashMap<Arc<str>, Upstream>,
    info: ClientConfig,
    events: Arc<UpstreamEvents>,
    relay: Arc<RelayCounters>,
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
                relaying_capabilities(),
                Implementation::new("mcp-tower-gateway", env!("CARGO_PKG_VERSION")),
            ),
            events: Arc::new(UpstreamEvents {
                lists_changed: watch::channel(0).0,
                list_generations: std::sync::Mutex::default(),
                notifications: broadcast::channel(NOTIFICATION_CAPACITY).0,
            }),
            relay: Arc::default(),
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

    /// A receiver that changes whenever an upstream's lists (tools, prompts, resources)
    /// may have changed: a new session was opened, or an upstream sent a
    /// `notifications/*/list_changed`.
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.events.lists_changed.subscribe()
    }

    /// How many times `upstream`'s lists may have changed so far (a new session, or one of
    /// its `notifications/*/list_changed`): a copy of its lists taken at one value is stale
    /// once the value moves. Other upstreams' changes leave it alone.
    pub fn list_generation(&self, upstream: &str) -> u64 {
        self.events
            .list_generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(upstream)
            .copied()
            .unwrap_or(0)
    }

    /// The upstreams' notifications that belong to no request in flight: list changes and
    /// resource updates (the last 256 are kept for a slow receiver). Log messages never
    /// come here: they reach the client of the request they belong to, or no one (see
    /// [`relay_stats`](Self::relay_stats)).
    pub fn notifications(&self) -> broadcast::Receiver<UpstreamNotification> {
        self.events.notifications.subscribe()
    }

    /// How the sessions' relays fared: server→client requests and log messages relayed
    /// to the client of the request they belong to, and those that could not be attributed
    /// (refused, dropped).
    pub fn relay_stats(&self) -> RelayStats {
        self.relay.snapshot()
    }

    /// A handle on [`relay_stats`](Self::relay_stats) for the metrics layer (`mcp_relay_*`
    /// figures, `/stats`).
    pub fn relay_report(&self) -> RelayReport {
        RelayReport {
            counters: Arc::clone(&self.relay),
        }
    }

    /// A [`PeerOutbox`] for a downstream client session whose dropped notifications are
    /// counted in [`relay_stats`](Self::relay_stats) (`relay_notifications_dropped`).
    pub fn outbox(&self, peer: Peer<RoleServer>, capacity: usize) -> PeerOutbox {
        PeerOutbox::spawn_counted(peer, capacity, Some(Arc::clone(&self.relay)))
    }

    async fn open(
        &self,
        upstream: &Upstream,
        session: &Arc<str>,
    ) -> Result<McpSession, UpstreamError> {
        match upstream.kind {
            UpstreamKind::Stdio => {
                let (transport, pid) = spawn_child(upstream)?;
                self.serve(&upstream.name, session, transport, pid).await
            }
            UpstreamKind::Http => {
                let transport = StreamableHttpClientTransport::from_config(http_config(upstream)?);
                self.serve(&upstream.name, session, transport, None).await
            }
        }
    }

    /// A session `session` (its pool key) of upstream `name` over `transport`: the MCP
    /// handshake, then the session.
    async fn serve<T: Transport<RoleClient> + 'static>(
        &self,
        name: &Arc<str>,
        session: &Arc<str>,
        transport: T,
        pid: Option<u32>,
    ) -> Result<McpSession, UpstreamError> {
        let progress = Arc::new(ProgressRoutes::default());
        let relays = Arc::new(Relays::new(Arc::clone(&self.relay)));
        let client = UpstreamClient {
            upstream: Arc::clone(name),
            session: Arc::clone(session),
            progress: Arc::clone(&progress),
            relays: Arc::clone(&relays),
            events: Arc::clone(&self.events),
            info: self.info.clone(),
        };
        let transport = Marked::new(transport, Arc::clone(&relays));
        let running = serve_client(client, transport)
            .await
            .map_err(|e| UpstreamError::Handshake(e.to_string()))?;
        // The gateway keeps its own copies of the upstream's lists and resources, partitioned
        // by principal (SEP-2549 hints honoured); rmcp's per-connection response cache would
        // share one caller's private answer with every caller of this session.
        running
            .peer()
            .set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        self.events.lists_changed(name);
        Ok(McpSession {
            upstream: Arc::clone(name),
            peer: running.peer().clone(),
            running: tokio::sync::Mutex::new(Some(running)),
            progress,
            relays,
            info: self.info.clone(),
            modern_lists: AtomicU8::new(MODERN_UNKNOWN),
            pid,
        })
    }

    /// A session of upstream `name` over an in-memory transport (tests).
    #[cfg(test)]
    pub(crate) async fn serve_for_test<T: Transport<RoleClient> + 'static>(
        &self,
        name: &str,
        transport: T,
    ) -> Result<McpSession, UpstreamError> {
        let name = Arc::from(name);
        self.serve(&name, &name, transport, None).await
    }
}

/// What the gateway declares to upstreams: everything it can relay to its own clients
/// (sampling, form and URL elicitation, roots). A downstream client that lacks one answers
/// the relayed request with its own error. Requests on the 2026-07-28 lifecycle carry the
/// downstream client's own capabilities instead.
fn relaying_capabilities() -> ClientCapabilities {
    let declared = serde_json::json!({
        "roots": { "listChanged": true },
        "sampling": {},
        "elicitation": { "form": {}, "url": {} },
    });
    serde_json::from_value(declared).unwrap_or_default()
}

fn spawn_child(upstream: &Upstream) -> Result<(TokioChildProcess, Option<u32>), UpstreamError> {
    let config = &upstream.config;
    let command = config.command.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&command);
    // A cleared environment: the gateway's secrets (its key, cloud credentials) are not the
    // child's business. It gets what programs need to run and what it is configured with.
    cmd.args(&config.args)
        .env_clear()
        .envs(config.child_env(std::env::vars_os()));
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
        // `<upstream>@<principal>`: a per-principal upstream's session for one principal
        // (`PoolService::session_key`).
        let upstream = match self.upstreams.get(key) {
            Some(upstream) => Some(upstream),
            None => key
                .split_once(super::service::PRINCIPAL_KEY_SEPARATOR)
                .and_then(|(name, _)| self.upstreams.get(name))
                .filter(|u| u.config.identity == super::config::Identity::PerPrincipal),
        }
        .ok_or_else(|| UpstreamError::Unknown(Arc::clone(key)))?;
        self.open(upstream, key).await
    }

    fn is_closed(&self, session: &McpSession) -> bool {
        session.is_closed()
    }

    async fn ping(&self, session: &McpSession) -> Result<(), UpstreamError> {
        session
            .ping()
            .await
            .map_err(|e| UpstreamError::Ping(e.to_string()))
    }

    async fn close(&self, session: &McpSession) {
        session.close().await;
    }
}
