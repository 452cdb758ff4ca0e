//! `PoolService` against a real rmcp upstream on streamable HTTP (in process), driven by a
//! real rmcp client through a small downstream server: forwarding, un-namespacing, errors,
//! progress back to the client, cancellation carried upstream, `_meta` passed on, a dead
//! upstream.
#![cfg(feature = "rmcp")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use mcp_tower_core::{
    CallResolver, ToolCall,
    error::{ErrorKind, is_transient},
};
use mcp_tower_pool::{PoolConfig, PoolService, UpstreamConfig};
use rmcp::{
    ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest, ContentBlock,
        ErrorCode, Implementation, ProgressNotificationParam, Request, RequestMetaObject,
        ServerCapabilities, ServerConfig, ServerResult,
    },
    object,
    service::{NotificationContext, PeerRequestOptions, RequestContext, RunningService},
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// A bound on every wait: generous, so it only trips on a hang.
const HANG: Duration = Duration::from_secs(20);

/// What the upstream saw, awaitable.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    sessions: usize,
    work_started: usize,
    work_cancelled: usize,
}

#[derive(Debug)]
struct Probe {
    seen: watch::Sender<Seen>,
    release: Semaphore,
}

impl Probe {
    async fn wait_for(&self, condition: impl Fn(&Seen) -> bool) -> Seen {
        let mut rx = self.seen.subscribe();
        let seen = tokio::time::timeout(HANG, rx.wait_for(|s| condition(s)))
            .await
            .expect("the upstream never got there");
        *seen.unwrap()
    }
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct WorkArgs {
    steps: u32,
}

#[derive(Clone)]
struct Upstream {
    tool_router: ToolRouter<Self>,
    probe: Arc<Probe>,
}

#[tool_router]
impl Upstream {
    #[tool(description = "Returns its input", annotations(read_only_hint = true))]
    async fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> String {
        args.text
    }

    #[tool(description = "Reports progress, then waits until released or cancelled")]
    async fn work(
        &self,
        Parameters(args): Parameters<WorkArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<String, ErrorData> {
        self.probe.seen.send_modify(|s| s.work_started += 1);
        if let Some(token) = context.meta.get_progress_token() {
            for step in 1..=args.steps {
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(args.steps));
                context.peer.notify_progress(progress).await.ok();
            }
        }
        tokio::select! {
            permit = self.probe.release.acquire() => {
                permit.unwrap().forget();
                Ok("done".into())
            }
            () = context.ct.cancelled() => {
                self.probe.seen.send_modify(|s| s.work_cancelled += 1);
                Err(ErrorData::internal_error("cancelled", None))
            }
        }
    }

    #[tool(description = "Returns the _meta it received")]
    async fn meta(&self, meta: RequestMetaObject) -> Result<CallToolResult, ErrorData> {
        let mut result = CallToolResult::success(vec![ContentBlock::text("meta")]);
        result.structured_content = Some(Value::Object(meta.0.0));
        Ok(result)
    }

    #[tool(description = "Always rejects its input")]
    async fn reject(&self) -> Result<String, ErrorData> {
        Err(ErrorData::invalid_params(
            "the upstream does not like this",
            None,
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("test-upstream", "1"))
    }
}

/// An upstream on streamable HTTP at `http://ADDR/mcp`, stopped when dropped.
struct HttpUpstream {
    url: String,
    probe: Arc<Probe>,
    stop: CancellationToken,
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_upstream() -> HttpUpstream {
    let probe = Arc::new(Probe {
        seen: watch::channel(Seen::default()).0,
        release: Semaphore::new(0),
    });
    let stop = CancellationToken::new();
    let factory_probe = Arc::clone(&probe);
    let service = StreamableHttpService::new(
        move || {
            factory_probe.seen.send_modify(|s| s.sessions += 1);
            Ok(Upstream {
                tool_router: Upstream::tool_router(),
                probe: Arc::clone(&factory_probe),
            })
        },
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
            .await
            .ok();
    });
    HttpUpstream {
        url: format!("http://{addr}/mcp"),
        probe,
        stop,
    }
}

fn gateway(upstreams: &[(&str, &str)], config: PoolConfig) -> PoolService {
    let upstreams: BTreeMap<String, UpstreamConfig> = upstreams
        .iter()
        .map(|(name, url)| ((*name).to_owned(), UpstreamConfig::http(*url)))
        .collect();
    PoolService::from_config(&upstreams, config).unwrap()
}

/// The downstream server a client talks to: every tool call goes through the pool.
#[derive(Clone)]
struct Front {
    service: PoolService,
    resolver: Arc<CallResolver>,
    /// Every call's outcome as the front saw it (rmcp drops the answer to a cancelled
    /// request, so a test reads it here).
    outcomes: mpsc::UnboundedSender<Result<CallToolResponse, ErrorData>>,
}

impl ServerHandler for Front {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = ToolCall::from_request(request, Some(context), Arc::clone(&self.resolver));
        let outcome = self.service.clone().oneshot(call).await;
        self.outcomes.send(outcome.clone()).ok();
        outcome
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// A client that records the progress notifications it receives.
struct Recorder {
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.send(params).ok();
    }
}

type Client = RunningService<RoleClient, Recorder>;

struct Downstream {
    client: Client,
    progress: mpsc::UnboundedReceiver<ProgressNotificationParam>,
    outcomes: mpsc::UnboundedReceiver<Result<CallToolResponse, ErrorData>>,
}

/// A client connected to a `Front` over an in-process pipe.
async fn client_of(
    service: &PoolService,
) -> (Client, mpsc::UnboundedReceiver<ProgressNotificationParam>) {
    let d = downstream(service).await;
    (d.client, d.progress)
}

async fn downstream(service: &PoolService) -> Downstream {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
    let front = Front {
        service: service.clone(),
        resolver: CallResolver::shared_default(),
        outcomes: outcomes_tx,
    };
    tokio::spawn(async move {
        let running = front.serve(server_io).await.unwrap();
        running.waiting().await.ok();
    });
    let (tx, progress) = mpsc::unbounded_channel();
    let client = Recorder { progress: tx }.serve(client_io).await.unwrap();
    Downstream {
        client,
        progress,
        outcomes,
    }
}

/// Polls `condition` until it holds (bounded by `HANG`).
async fn eventually(condition: impl Fn() -> bool) {
    tokio::time::timeout(HANG, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the condition never held");
}

fn params(tool: &'static str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else { panic!() };
    CallToolRequestParams::new(tool).with_arguments(args)
}

fn text(result: &CallToolResult) -> String {
    result.content[0].as_text().unwrap().text.clone()
}

#[tokio::test]
async fn calls_are_forwarded_over_one_shared_session() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    let (client, _) = client_of(&service).await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let peer = client.peer().clone();
            tokio::spawn(async move {
                let text = format!("hello {i}");
                let result = peer
                    .call_tool(params("up__echo", json!({ "text": text })))
                    .await
                    .unwrap();
                (text, result)
            })
        })
        .collect();
    for call in calls {
        let (sent, result) = tokio::time::timeout(HANG, call).await.unwrap().unwrap();
        assert_eq!(text(&result), sent);
    }
    assert_eq!(
        upstream.probe.seen.borrow().sessions,
        1,
        "one pooled session"
    );
    let stats = service.handle().stats();
    let up = stats.key("up").unwrap();
    assert_eq!((up.connects, up.connections, up.in_flight), (1, 1, 0));
    service.pool().shutdown().await;
}

#[tokio::test]
async fn unknown_tools_and_upstream_errors_reach_the_caller() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    let (client, _) = client_of(&service).await;
    for tool in ["echo", "down__echo", "up__"] {
        let err = client
            .call_tool(params(tool, json!({"text": "x"})))
            .await
            .unwrap_err();
        let rmcp::service::ServiceError::McpError(err) = err else {
            panic!("{err}")
        };
        assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{tool}: {err:?}");
        assert!(err.message.contains("unknown tool"), "{}", err.message);
    }
    // The upstream's own error, passed on as is.
    let err = client
        .call_tool(params("up__reject", json!({})))
        .await
        .unwrap_err();
    let rmcp::service::ServiceError::McpError(err) = err else {
        panic!("{err}")
    };
    assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
    assert_eq!(err.message, "the upstream does not like this");
    // An upstream tool that does not exist: the upstream says so.
    let err = client
        .call_tool(params("up__nope", json!({})))
        .await
        .unwrap_err();
    let rmcp::service::ServiceError::McpError(err) = err else {
        panic!("{err}")
    };
    assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
    assert!(err.message.contains("tool not found"), "{}", err.message);
    // The gateway keeps serving.
    let ok = client
        .call_tool(params("up__echo", json!({"text": "still here"})))
        .await
        .unwrap();
    assert_eq!(text(&ok), "still here");
}

#[tokio::test]
async fn upstream_progress_reaches_the_downstream_client_with_its_token() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    let (client, mut progress) = client_of(&service).await;
    let request =
        ClientRequest::CallToolRequest(Request::new(params("up__work", json!({"steps": 5}))));
    let handle = client
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let token = handle.progress_token.clone();
    let mut steps = BTreeSet::new();
    while steps.len() < 5 {
        let p = tokio::time::timeout(HANG, progress.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.progress_token, token, "the client's own token");
        assert_eq!(p.total, Some(5.0));
        steps.insert(p.progress as u32);
    }
    assert_eq!(steps, (1..=5).collect());
    upstream.probe.release.add_permits(1);
    let response = tokio::time::timeout(HANG, handle.await_response())
        .await
        .unwrap()
        .unwrap();
    let ServerResult::CallToolResult(result) = response else {
        panic!("{response:?}")
    };
    assert_eq!(text(&result), "done");
}

#[tokio::test]
async fn a_downstream_cancellation_cancels_the_upstream_request() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    let (client, _) = client_of(&service).await;
    let request =
        ClientRequest::CallToolRequest(Request::new(params("up__work", json!({"steps": 0}))));
    let handle = client
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    upstream.probe.wait_for(|s| s.work_started == 1).await;
    handle
        .cancel(Some("the user pressed stop".into()))
        .await
        .unwrap();
    let seen = upstream.probe.wait_for(|s| s.work_cancelled == 1).await;
    assert_eq!(seen.work_started, 1);
    // The session is still good for the next call.
    let ok = client
        .call_tool(params("up__echo", json!({"text": "next"})))
        .await
        .unwrap();
    assert_eq!(text(&ok), "next");
    assert_eq!(service.handle().stats().key("up").unwrap().in_flight, 0);
}

#[tokio::test]
async fn dropping_the_call_cancels_the_upstream_request() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    let call = ToolCall::new("up__work", object!({"steps": 0}));
    let future = service.clone().oneshot(call);
    let running = tokio::spawn(future);
    upstream.probe.wait_for(|s| s.work_started == 1).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    upstream.probe.wait_for(|s| s.work_cancelled == 1).await;
    assert_eq!(service.handle().stats().key("up").unwrap().in_flight, 0);
}

#[tokio::test]
async fn a_cancelled_call_waiting_for_its_session_ends_at_once() {
    // A connect that never completes: the port accepts but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", silent.local_addr().unwrap());
    let service = gateway(&[("slow", &url)], PoolConfig::default().with_min(0));
    let mut downstream = downstream(&service).await;
    let request = ClientRequest::CallToolRequest(Request::new(params("slow__x", json!({}))));
    let handle = downstream
        .client
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let pool = service.handle();
    eventually(|| pool.stats().key("slow").is_some_and(|k| k.connecting == 1)).await;
    handle.cancel(None).await.unwrap();
    let outcome = tokio::time::timeout(HANG, downstream.outcomes.recv())
        .await
        .expect("the cancelled call must end")
        .unwrap();
    let err = outcome.unwrap_err();
    assert_eq!(ErrorKind::of(&err), Some(ErrorKind::Cancelled), "{err:?}");
    drop(silent);
}

#[tokio::test]
async fn meta_is_passed_on_without_the_hop_keys() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    let (client, _) = client_of(&service).await;
    let mut p = params("up__meta", json!({}));
    let mut meta = RequestMetaObject::new();
    meta.set_traceparent("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01");
    meta.0.0.insert("com.example/tenant".into(), json!("acme"));
    p.meta = Some(meta);
    let result = client.call_tool(p).await.unwrap();
    let seen = result.structured_content.unwrap();
    assert_eq!(
        seen["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    );
    assert_eq!(seen["com.example/tenant"], "acme");
}

#[tokio::test]
async fn a_dead_upstream_is_a_transient_error_not_a_hang() {
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/mcp");
    let service = gateway(
        &[("dead", &url)],
        PoolConfig::default().with_connect_timeout(Duration::from_secs(5)),
    );
    let call = ToolCall::new("dead__anything", object!({}));
    let err = tokio::time::timeout(HANG, service.clone().oneshot(call))
        .await
        .expect("a dead upstream must not hang")
        .unwrap_err();
    assert_eq!(
        ErrorKind::of(&err),
        Some(ErrorKind::UpstreamUnavailable),
        "{err:?}"
    );
    assert!(is_transient(&err));
    assert!(
        err.message.contains("upstream `dead` is unavailable"),
        "{}",
        err.message
    );
    let stats = service.handle().stats();
    assert!(!stats.key("dead").unwrap().up);
    assert!(!stats.healthy(), "a required upstream is down");
}

#[tokio::test]
async fn an_upstream_that_goes_away_is_replaced_by_a_new_session() {
    let first = start_upstream().await;
    let service = gateway(&[("up", &first.url)], PoolConfig::default());
    let call = || ToolCall::new("up__echo", object!({"text": "x"}));
    service.clone().oneshot(call()).await.unwrap();
    // Mark the session broken as a transport failure would, and check the next call
    // opens a new session on the same upstream.
    let session = service.pool().get(&"up".into()).await.unwrap();
    session.mark_broken();
    drop(session);
    service.clone().oneshot(call()).await.unwrap();
    first.probe.wait_for(|s| s.sessions == 2).await;
    let stats = service.handle().stats();
    assert_eq!(stats.key("up").unwrap().replaced, 1);
}

#[tokio::test]
async fn a_batch_returns_results_in_order() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    let calls = (0..10).map(|i| {
        if i == 4 {
            ToolCall::new("nowhere__echo", object!({}))
        } else {
            ToolCall::new("up__echo", object!({ "text": format!("#{i}") }))
        }
    });
    let results = service.call_many(calls, 3).await;
    assert_eq!(results.len(), 10);
    for (i, result) in results.iter().enumerate() {
        if i == 4 {
            assert!(result.is_err());
            continue;
        }
        let Ok(CallToolResponse::Complete(r)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(text(r), format!("#{i}"));
    }
}

#[tokio::test]
async fn shutdown_closes_sessions_and_fails_later_calls() {
    let upstream = start_upstream().await;
    let service = gateway(&[("up", &upstream.url)], PoolConfig::default());
    service
        .clone()
        .oneshot(ToolCall::new("up__echo", object!({"text": "x"})))
        .await
        .unwrap();
    tokio::time::timeout(HANG, service.pool().shutdown())
        .await
        .unwrap();
    let stats = service.handle().stats();
    assert_eq!(stats.key("up").unwrap().connections, 0);
    let err = service
        .clone()
        .oneshot(ToolCall::new("up__echo", object!({"text": "x"})))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), Some(ErrorKind::UpstreamUnavailable));
    assert!(err.message.contains("shutting down"), "{}", err.message);
}

/// A stdio MCP server in `sh`: answers `initialize`, and `tools/call` with what it sees of
/// its environment (the test's secret, the configured variable, `PATH`).
#[cfg(unix)]
const ENV_REPORTING_SERVER: &str = r#"
while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/.*"id":\([0-9][0-9]*\),"method".*/\1/p')
  [ -n "$id" ] || continue
  case "$line" in
    *'"method":"initialize"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"env","version":"0"}}}\n' "$id" ;;
    *'"method":"tools/call"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"secret=%s given=%s path=%s"}]}}\n' \
        "$id" "${MCP_TOWER_TEST_SECRET-unset}" "${GIVEN-unset}" "${PATH:+set}" ;;
    *)
      printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"unknown method"}}\n' "$id" ;;
  esac
done
"#;

/// Set by [`a_stdio_child_sees_only_the_allowlist_and_its_own_env`] for the run of itself
/// it starts.
#[cfg(unix)]
const TEST_SECRET: &str = "MCP_TOWER_TEST_SECRET";

/// Runs this test binary again with a secret in its environment (the test process must not
/// change its own: `set_var` is unsafe), and that run spawns the child.
#[cfg(unix)]
#[test]
fn a_stdio_child_sees_only_the_allowlist_and_its_own_env() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_child_of_a_process_with_a_secret_does_not_see_it",
            "--ignored",
            "--nocapture",
        ])
        .env(TEST_SECRET, "s3cret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Run by [`a_stdio_child_sees_only_the_allowlist_and_its_own_env`], with the secret set.
#[cfg(unix)]
#[tokio::test]
#[ignore = "run by a_stdio_child_sees_only_the_allowlist_and_its_own_env"]
async fn the_child_of_a_process_with_a_secret_does_not_see_it() {
    use mcp_tower_pool::{Connector, McpConnector, StderrMode};

    assert_eq!(
        std::env::var(TEST_SECRET).as_deref(),
        Ok("s3cret"),
        "run through a_stdio_child_sees_only_the_allowlist_and_its_own_env"
    );
    let config = UpstreamConfig::stdio("sh", ["-c", ENV_REPORTING_SERVER])
        .with_env("GIVEN", "configured")
        .with_stderr(StderrMode::Null);
    let connector = McpConnector::new([("env", config)]).unwrap();
    let session = tokio::time::timeout(HANG, connector.connect(&"env".into()))
        .await
        .unwrap()
        .unwrap();
    let answer = tokio::time::timeout(
        HANG,
        session.call_tool(CallToolRequestParams::new("env"), None),
    )
    .await
    .unwrap()
    .unwrap();
    let CallToolResponse::Complete(result) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(text(&result), "secret=unset given=configured path=set");

    // Inheriting it is a choice the configuration makes.
    let config = UpstreamConfig::stdio("sh", ["-c", ENV_REPORTING_SERVER])
        .with_inherited_env(TEST_SECRET)
        .with_stderr(StderrMode::Null);
    let connector = McpConnector::new([("env", config)]).unwrap();
    let inherited = connector.connect(&"env".into()).await.unwrap();
    let answer = inherited
        .call_tool(CallToolRequestParams::new("env"), None)
        .await
        .unwrap();
    let CallToolResponse::Complete(result) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(text(&result), "secret=s3cret given=unset path=set");
    session.close().await;
    inherited.close().await;
}
