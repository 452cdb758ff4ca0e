//! Issue 18, the gateway's part: no caller receives another's result, request or message.
//!
//! - Names: a name an unprefixed upstream lists in a namespaced upstream's namespace is
//!   refused, and a catalog name reaches the upstream that listed it, with that upstream's
//!   policy.
//! - Forwarded methods (everything but `tools/call`) are bounded: a per-method timeout and
//!   a concurrency limit with a bounded queue.
//! - Lists are coalesced and a failing upstream is asked at most once per interval.
//! - `identity = "per-principal"` upstreams: one set of sessions per principal.
//!
//! Upstreams are small rmcp servers in this process (streamable HTTP on 127.0.0.1) that
//! count what they are asked; events are ordered with channels and `Notify`, never sleeps.
// `resources/subscribe` is legacy-only (SEP-2577) but what 2025 clients of the gateway use.
#![allow(clippy::unwrap_used, clippy::expect_used, deprecated)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use mcp_tower::StackConfig;
use mcp_tower::error::codes;
use mcp_tower_examples::{
    gateway::{ForwardConfig, GatewayApp, GatewayConfig},
    serve,
};
use mcp_tower_pool::{Identity, PoolConfig, UpstreamConfig};
use rmcp::{
    ClientHandler, ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest, ContentBlock,
        GetPromptRequestParams, GetPromptResponse, ListPromptsResult, ListResourcesResult,
        ListToolsRequest, ListToolsResult, PaginatedRequestParams, Prompt,
        ReadResourceRequestParams, ReadResourceResponse, Resource,
        ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig, ServerNotification,
        SubscribeRequestParams, Tool, ToolAnnotations,
    },
    object,
    service::{
        ClientCacheConfig, NotificationContext, PeerRequestOptions, RequestContext, RunningService,
        ServiceError,
    },
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

const HANG: Duration = Duration::from_secs(30);

/// A stub upstream: lists `tools`, answers calls (a call with `"hang": true` never
/// answers), and counts sessions, lists and calls. Its resource `hang://r` and prompt
/// `hang` never answer (each says when it arrived); its `tools/list` can be held until
/// released, or fail.
#[derive(Clone, Default)]
struct Stub {
    tools: Vec<Tool>,
    sessions: Arc<AtomicUsize>,
    tool_lists: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    /// Never notified: what a hung request waits for.
    never: Arc<Notify>,
    /// Told when a hung request, or a held list, arrives.
    arrived: Option<mpsc::UnboundedSender<&'static str>>,
    /// While set, `tools/list` waits for `release`.
    hold_lists: Arc<AtomicBool>,
    release: Arc<Notify>,
    /// While set, `tools/list` fails.
    fail_lists: Arc<AtomicBool>,
    /// The sessions that subscribed to a resource, in order.
    subscribers: Arc<std::sync::Mutex<Vec<Peer<RoleServer>>>>,
}

impl Stub {
    fn with_tools(tools: Vec<Tool>) -> Self {
        Self {
            tools,
            ..Self::default()
        }
    }
}

impl ServerHandler for Stub {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_prompts()
                .build(),
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("hang://r", "r"),
            Resource::new("hang://s", "s"),
        ]))
    }

    async fn subscribe(
        &self,
        _request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscribers.lock().unwrap().push(context.peer);
        Ok(())
    }

    async fn read_resource(
        &self,
        _request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if let Some(arrived) = &self.arrived {
            arrived.send("resources/read").ok();
        }
        self.never.notified().await;
        Err(ErrorData::internal_error("unreachable", None))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "hang",
            None::<String>,
            None,
        )]))
    }

    async fn get_prompt(
        &self,
        _request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if let Some(arrived) = &self.arrived {
            arrived.send("prompts/get").ok();
        }
        self.never.notified().await;
        Err(ErrorData::internal_error("unreachable", None))
    }

    async fn on_initialized(&self, _context: NotificationContext<RoleServer>) {
        self.sessions.fetch_add(1, Ordering::SeqCst);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.tool_lists.fetch_add(1, Ordering::SeqCst);
        if self.hold_lists.load(Ordering::SeqCst) {
            if let Some(arrived) = &self.arrived {
                arrived.send("tools/list").ok();
            }
            self.release.notified().await;
        }
        if self.fail_lists.load(Ordering::SeqCst) {
            return Err(ErrorData::internal_error("the list is broken", None));
        }
        Ok(ListToolsResult::with_all_items(self.tools.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let hang = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("hang"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if hang {
            self.never.notified().await;
        }
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(format!("{} call #{n}", request.name)),
        ])))
    }
}

async fn serve_upstream<S: ServerHandler + Clone>(handler: S, stop: &CancellationToken) -> String {
    serve::serve_loopback(serve::mcp_router(handler, stop), stop)
        .await
        .unwrap()
}

struct Running {
    app: GatewayApp,
    url: String,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn config(upstreams: Vec<(&str, UpstreamConfig)>) -> GatewayConfig {
    GatewayConfig {
        upstreams: upstreams
            .into_iter()
            .map(|(name, u)| (name.to_owned(), u))
            .collect(),
        pool: PoolConfig::default().with_connect_timeout(HANG),
        ..GatewayConfig::default()
    }
}

async fn start(config: GatewayConfig) -> Running {
    let app = GatewayApp::build(config).await.unwrap();
    let stop = CancellationToken::new();
    let url = serve::serve_loopback(serve::mcp_router(app.server.clone(), &stop), &stop)
        .await
        .unwrap();
    Running { app, url, stop }
}

type Client = RunningService<RoleClient, ()>;

async fn client(url: &str, token: &str) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    client
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    client
}

fn tool(name: &str, annotations: ToolAnnotations) -> Tool {
    Tool::new(name.to_owned(), "a tool", object!({"type": "object"})).with_annotations(annotations)
}

async fn call(client: &Client, name: &str, args: serde_json::Value) -> Result<String, ErrorData> {
    let serde_json::Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let params = CallToolRequestParams::new(name.to_owned()).with_arguments(args);
    match tokio::time::timeout(HANG, client.call_tool(params))
        .await
        .expect("the call hung")
    {
        Ok(result) => Ok(result.content[0].as_text().expect("text").text.clone()),
        Err(rmcp::service::ServiceError::McpError(error)) => Err(error),
        Err(other) => panic!("transport error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprefixed_name_in_a_namespace_is_refused_and_the_call_reaches_its_owner_with_its_policy()
 {
    let stop = CancellationToken::new();
    // alpha (namespace = false) lists `beta__drop_table` as read-only; beta's own
    // `drop_table` is destructive.
    let alpha = Stub::with_tools(vec![
        tool("beta__drop_table", ToolAnnotations::new().read_only(true)),
        tool("plain", ToolAnnotations::new().read_only(true)),
    ]);
    let beta = Stub::with_tools(vec![tool(
        "drop_table",
        ToolAnnotations::new().read_only(false).destructive(true),
    )]);
    let alpha_url = serve_upstream(alpha.clone(), &stop).await;
    let beta_url = serve_upstream(beta.clone(), &stop).await;
    let mut config = config(vec![
        (
            "alpha",
            UpstreamConfig::http(&alpha_url).with_namespace(false),
        ),
        ("beta", UpstreamConfig::http(&beta_url)),
    ]);
    // A short attempt timeout: a retried call would reach beta twice before failing.
    config.stack = StackConfig::from_toml_str("[policy]\ntimeout = \"300ms\"").unwrap();
    let gw = start(config).await;

    // alpha's shadowing name is refused, named with both upstreams.
    let refused = gw.app.gateway.refused_names();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (
            refused[0].upstream.as_ref(),
            refused[0].name.as_str(),
            refused[0].owner.as_ref()
        ),
        ("alpha", "beta__drop_table", "beta")
    );
    let client = client(&gw.url, "alice").await;
    let tools = tokio::time::timeout(HANG, client.list_all_tools())
        .await
        .unwrap()
        .unwrap();
    let listed: Vec<(&str, Option<bool>)> = tools
        .iter()
        .map(|t| {
            (
                t.name.as_ref(),
                t.annotations.as_ref().and_then(|a| a.destructive_hint),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("plain", None), ("beta__drop_table", Some(true))],
        "beta's destructive tool, not alpha's read-only one"
    );

    // Not retried: the hung attempt times out once, and beta saw one attempt.
    let error = call(
        &client,
        "beta__drop_table",
        serde_json::json!({"hang": true}),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, mcp_tower::error::codes::TIMED_OUT, "{error:?}");
    assert_eq!(
        beta.calls.load(Ordering::SeqCst),
        1,
        "a destructive call is not retried"
    );
    // Not cached: the same call twice reaches beta twice.
    let args = serde_json::json!({"table": "users"});
    let first = call(&client, "beta__drop_table", args.clone())
        .await
        .unwrap();
    let second = call(&client, "beta__drop_table", args).await.unwrap();
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("drop_table call #1", "drop_table call #2")
    );
    assert_eq!(beta.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        alpha.calls.load(Ordering::SeqCst),
        0,
        "alpha never sees beta's name"
    );
    // alpha's own names still reach alpha.
    assert_eq!(
        call(&client, "plain", serde_json::json!({})).await.unwrap(),
        "plain call #0"
    );
    drop(gw);
    stop.cancel();
}

fn mcp_error(result: Result<impl std::fmt::Debug, ServiceError>) -> ErrorData {
    match result {
        Err(ServiceError::McpError(error)) => error,
        other => panic!("expected an MCP error, got {other:?}"),
    }
}

async fn arrival(arrived: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    tokio::time::timeout(HANG, arrived.recv())
        .await
        .expect("nothing arrived upstream")
        .expect("the stub is gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_to_a_hung_upstream_time_out_and_beyond_the_limit_are_busy() {
    let stop = CancellationToken::new();
    let (tx, mut arrived) = mpsc::unbounded_channel();
    let stub = Stub {
        arrived: Some(tx),
        ..Stub::default()
    };
    let url = serve_upstream(stub.clone(), &stop).await;
    let mut config = config(vec![("hung", UpstreamConfig::http(&url))]);
    let mut forward = ForwardConfig {
        timeout: Duration::from_secs(2),
        max_in_flight: 2,
        max_queued: 0,
        ..ForwardConfig::default()
    };
    forward
        .timeouts
        .insert("resources/read".into(), Duration::from_secs(3).into());
    config.forward = forward;
    let gw = start(config).await;
    let client = Arc::new(client(&gw.url, "alice").await);

    // Two hung requests take the two places…
    let read = tokio::spawn({
        let client = Arc::clone(&client);
        async move {
            client
                .read_resource(ReadResourceRequestParams::new("hang://r"))
                .await
        }
    });
    let prompt = tokio::spawn({
        let client = Arc::clone(&client);
        async move {
            client
                .get_prompt(GetPromptRequestParams::new("hung__hang"))
                .await
        }
    });
    let mut seen = [arrival(&mut arrived).await, arrival(&mut arrived).await];
    seen.sort_unstable();
    assert_eq!(seen, ["prompts/get", "resources/read"]);

    // …so a third is turned away at once with the busy error, without reaching upstream.
    let busy = mcp_error(
        client
            .get_prompt(GetPromptRequestParams::new("hung__hang"))
            .await,
    );
    assert_eq!(busy.code, codes::BUSY, "{busy:?}");

    // Each hung one ends with the timed-out error of its method's timeout.
    let prompt = mcp_error(tokio::time::timeout(HANG, prompt).await.unwrap().unwrap());
    assert_eq!(prompt.code, codes::TIMED_OUT, "{prompt:?}");
    assert!(
        prompt.message.contains("prompts/get") && prompt.message.contains("2s"),
        "{}",
        prompt.message
    );
    let read = mcp_error(tokio::time::timeout(HANG, read).await.unwrap().unwrap());
    assert_eq!(read.code, codes::TIMED_OUT, "{read:?}");
    assert!(
        read.message.contains("resources/read") && read.message.contains("3s"),
        "{}",
        read.message
    );
    assert!(
        arrived.try_recv().is_err(),
        "the busy request never went upstream"
    );
    drop(gw);
    stop.cancel();
}

/// Sends `tools/list` and returns once the gateway has the request (its answer is
/// awaited with the handle).
async fn send_list(client: &Client) -> rmcp::service::RequestHandle<RoleClient> {
    client
        .peer()
        .send_request_with_option(
            ClientRequest::ListToolsRequest(ListToolsRequest::default()),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lists_make_one_upstream_list_and_a_failing_upstream_is_asked_once_per_interval()
{
    let stop = CancellationToken::new();
    let (tx, mut arrived) = mpsc::unbounded_channel();
    let stub = Stub {
        tools: vec![tool("t", ToolAnnotations::new())],
        arrived: Some(tx),
        ..Stub::default()
    };
    let url = serve_upstream(stub.clone(), &stop).await;
    let mut config = config(vec![("up", UpstreamConfig::http(&url))]);
    config.min_list_interval = Some(Duration::from_secs(3600));
    let gw = start(config).await;
    assert_eq!(
        stub.tool_lists.load(Ordering::SeqCst),
        1,
        "the gateway's own list"
    );
    // Legacy lists (no hints) are private: a caller's list goes upstream on its behalf.
    let alice = client(&gw.url, "alice").await;

    // Eight concurrent lists while the upstream holds the first: one upstream list.
    stub.hold_lists.store(true, Ordering::SeqCst);
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(send_list(&alice).await);
    }
    assert_eq!(arrival(&mut arrived).await, "tools/list");
    // Any further list would not be held: it would show in the count.
    stub.hold_lists.store(false, Ordering::SeqCst);
    stub.release.notify_one();
    for handle in handles {
        let listed = tokio::time::timeout(HANG, handle.await_response())
            .await
            .unwrap()
            .unwrap();
        let rmcp::model::ServerResult::ListToolsResult(listed) = listed else {
            panic!("not a list: {listed:?}");
        };
        assert_eq!(listed.tools.len(), 1);
    }
    assert_eq!(
        stub.tool_lists.load(Ordering::SeqCst),
        2,
        "one list for eight callers"
    );

    // The upstream's list now fails: bob's burst makes one attempt, and nobody asks again
    // within the interval.
    stub.fail_lists.store(true, Ordering::SeqCst);
    stub.hold_lists.store(true, Ordering::SeqCst);
    let bob = client(&gw.url, "bob").await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(send_list(&bob).await);
    }
    assert_eq!(arrival(&mut arrived).await, "tools/list");
    // Any further list would not be held: it would show in the count.
    stub.hold_lists.store(false, Ordering::SeqCst);
    stub.release.notify_one();
    for handle in handles {
        tokio::time::timeout(HANG, handle.await_response())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        stub.tool_lists.load(Ordering::SeqCst),
        3,
        "one failed attempt for eight callers"
    );
    stub.hold_lists.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        let listed = tokio::time::timeout(HANG, bob.list_tools(None))
            .await
            .unwrap()
            .unwrap();
        assert!(listed.tools.is_empty());
        assert_eq!(listed.ttl_ms, Some(0), "incomplete: immediately stale");
    }
    assert_eq!(
        stub.tool_lists.load(Ordering::SeqCst),
        3,
        "a failing upstream is not asked again within min_list_interval"
    );
    drop(gw);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_principal_upstream_gives_each_principal_its_own_session() {
    let stop = CancellationToken::new();
    let shared = Stub::with_tools(vec![tool("s", ToolAnnotations::new())]);
    let mine = Stub::with_tools(vec![tool("m", ToolAnnotations::new())]);
    let shared_url = serve_upstream(shared.clone(), &stop).await;
    let mine_url = serve_upstream(mine.clone(), &stop).await;
    let gw = start(config(vec![
        ("shared", UpstreamConfig::http(&shared_url)),
        (
            "mine",
            UpstreamConfig::http(&mine_url).with_identity(Identity::PerPrincipal),
        ),
    ]))
    .await;
    // At start: one session each, the gateway's own.
    assert_eq!(shared.sessions.load(Ordering::SeqCst), 1);
    assert_eq!(mine.sessions.load(Ordering::SeqCst), 1);

    let alice = client(&gw.url, "alice").await;
    let alice_again = client(&gw.url, "alice").await;
    let bob = client(&gw.url, "bob").await;
    for (who, client) in [("alice", &alice), ("alice", &alice_again), ("bob", &bob)] {
        let text = call(client, "mine__m", serde_json::json!({}))
            .await
            .unwrap();
        assert!(text.starts_with("m call #"), "{who}: {text}");
        call(client, "shared__s", serde_json::json!({}))
            .await
            .unwrap();
    }
    assert_eq!(
        mine.sessions.load(Ordering::SeqCst),
        3,
        "the gateway's, alice's (both her clients share it) and bob's"
    );
    assert_eq!(
        shared.sessions.load(Ordering::SeqCst),
        1,
        "one session for everyone"
    );
    // Forwarded methods ride the caller's session too: alice's read opens nothing new.
    let _ = tokio::time::timeout(HANG, alice.list_tools(None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine.sessions.load(Ordering::SeqCst), 3);
    let carol = client(&gw.url, "carol").await;
    let _ = tokio::time::timeout(HANG, carol.list_tools(None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        mine.sessions.load(Ordering::SeqCst),
        4,
        "carol's list opened her session"
    );
    drop(gw);
    stop.cancel();
}

/// A stateless 2026-07-28 `tools/call` with no identity at all (no `Authorization`, no
/// session): the JSON-RPC message of the answer.
async fn anonymous_call(url: &str, name: &str) -> serde_json::Value {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": name, "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "anon", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str(d.trim()).ok())
            .unwrap_or_else(|| panic!("no JSON-RPC message in {text:?}"))
    })
}

/// An anonymous caller is refused by a per-principal upstream (it would otherwise share
/// one session, and the user state in it, with every other anonymous caller), and opens
/// nothing there; a shared upstream serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_caller_is_refused_by_a_per_principal_upstream() {
    let stop = CancellationToken::new();
    let shared = Stub::with_tools(vec![tool("s", ToolAnnotations::new())]);
    let mine = Stub::with_tools(vec![tool("m", ToolAnnotations::new())]);
    let shared_url = serve_upstream(shared.clone(), &stop).await;
    let mine_url = serve_upstream(mine.clone(), &stop).await;
    let gw = start(config(vec![
        ("shared", UpstreamConfig::http(&shared_url)),
        (
            "mine",
            UpstreamConfig::http(&mine_url).with_identity(Identity::PerPrincipal),
        ),
    ]))
    .await;
    let refused = anonymous_call(&gw.url, "mine__m").await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("verified identity"), "{message}");
    assert_eq!(
        mine.sessions.load(Ordering::SeqCst),
        1,
        "only the gateway's own session: nothing opened for the anonymous caller"
    );
    let served = anonymous_call(&gw.url, "shared__s").await;
    assert!(served.get("result").is_some(), "{served}");
    drop(gw);
    stop.cancel();
}

/// A client that records the resource updates it hears.
struct Hearing(mpsc::UnboundedSender<String>);

impl ClientHandler for Hearing {
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0.send(params.uri).ok();
    }
}

async fn hearing_client(
    url: &str,
    token: &str,
) -> (
    RunningService<RoleClient, Hearing>,
    mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let client = Hearing(tx)
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    (client, rx)
}

async fn heard(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("heard nothing")
        .expect("the client is gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_principal_session_s_resource_updates_reach_only_its_principal() {
    let stop = CancellationToken::new();
    let stub = Stub::default();
    let url = serve_upstream(stub.clone(), &stop).await;
    let gw = start(config(vec![(
        "mine",
        UpstreamConfig::http(&url).with_identity(Identity::PerPrincipal),
    )]))
    .await;
    let (alice, mut alice_heard) = hearing_client(&gw.url, "alice").await;
    let (bob, mut bob_heard) = hearing_client(&gw.url, "bob").await;
    // Each subscribes to both resources, on its own upstream session.
    for client in [&alice, &bob] {
        for uri in ["hang://r", "hang://s"] {
            tokio::time::timeout(HANG, client.subscribe(SubscribeRequestParams::new(uri)))
                .await
                .unwrap()
                .unwrap();
        }
    }
    let subscribers = stub.subscribers.lock().unwrap().clone();
    assert_eq!(
        subscribers.len(),
        4,
        "two subscriptions on each principal's session"
    );
    let (alice_session, bob_session) = (&subscribers[0], &subscribers[2]);
    // alice's session says `hang://r` changed, then bob's says `hang://s` did: the gateway
    // relays them in that order, so bob hearing `hang://r` first would be alice's.
    let updated = |uri: &str| {
        ServerNotification::ResourceUpdatedNotification(
            rmcp::model::ResourceUpdatedNotification::new(ResourceUpdatedNotificationParam::new(
                uri,
            )),
        )
    };
    alice_session
        .send_notification(updated("hang://r"))
        .await
        .unwrap();
    assert_eq!(heard(&mut alice_heard).await, "hang://r");
    bob_session
        .send_notification(updated("hang://s"))
        .await
        .unwrap();
    assert_eq!(
        heard(&mut bob_heard).await,
        "hang://s",
        "never alice's update"
    );
    assert!(alice_heard.try_recv().is_err(), "never bob's update");
    drop(gw);
    stop.cancel();
}
