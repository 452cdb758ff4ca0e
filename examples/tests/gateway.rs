//! The gateway in front of real upstream MCP servers, driven by rmcp's client over
//! streamable HTTP.
//!
//! - With the demo binary as a stdio upstream (plain `cargo test`): listing and calling,
//!   killing the upstream under load (every call in flight ends with "upstream
//!   unavailable", none hangs, the pool reconnects), read-only calls surviving the crash
//!   through the retry layer, and the binary reaping its children on SIGTERM.
//! - With `@modelcontextprotocol/server-everything` (ignored here; `.ci/gateway.sh`
//!   installs it and runs them): its tools listed and called, progress of a long-running
//!   tool reaching the client, and a cancelled call cancelled upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, deprecated)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use mcp_tower::{
    CallResolver, PolicyDefaults, PolicyTable, ToolCall,
    error::{ErrorKind, is_transient},
};
use mcp_tower_examples::{
    conformance::Conformance,
    gateway::{GatewayApp, GatewayConfig},
    serve,
};
use mcp_tower_pool::{PoolConfig, PoolService, StderrMode, UpstreamConfig};
use mcp_tower_retry::{BudgetConfig, RetryConfig, RetryLayer, TimeoutLayer};
use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceExt,
    model::{
        ArgumentInfo, CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
        ClientConfig, ClientRequest, CompleteRequestParams, CreateMessageRequestParams,
        CreateMessageResult, ElicitRequestParams, ElicitResult, ElicitationAction,
        GetPromptRequestParams, GetPromptResult, Implementation, LoggingLevel,
        LoggingMessageNotificationParam, ProgressNotificationParam, ProtocolVersion,
        ReadResourceRequestParams, Reference, Request, ResourceUpdatedNotificationParam,
        SamplingMessage, ServerNotification, ServerResult, SetLevelRequestParams,
        SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
    },
    object, serve_client_with_lifecycle,
    service::{
        ClientLifecycleMode, NotificationContext, PeerRequestOptions, RunningService, ServiceError,
    },
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt as _};

/// A bound on every wait: generous, so it only trips on a hang.
const HANG: Duration = Duration::from_secs(30);

/// The environment variable naming server-everything's `dist/index.js` (set by
/// `.ci/gateway.sh`).
const EVERYTHING_ENV: &str = "SERVER_EVERYTHING_JS";

fn demo_upstream(weather_latency: &str) -> UpstreamConfig {
    UpstreamConfig::stdio(
        env!("CARGO_BIN_EXE_demo"),
        ["--weather-latency", weather_latency],
    )
    .with_stderr(StderrMode::Null)
}

fn config_with(
    upstreams: impl IntoIterator<Item = (&'static str, UpstreamConfig)>,
) -> GatewayConfig {
    GatewayConfig {
        upstreams: upstreams
            .into_iter()
            .map(|(name, u)| (name.to_owned(), u))
            .collect(),
        pool: PoolConfig::default().with_connect_timeout(HANG),
        ..GatewayConfig::default()
    }
}

/// A gateway served in process on 127.0.0.1:0; stopped (and its pool shut down) on drop.
struct RunningGateway {
    app: GatewayApp,
    url: String,
    stop: CancellationToken,
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_gateway(config: GatewayConfig) -> RunningGateway {
    let app = GatewayApp::build(config).await.unwrap();
    let stop = CancellationToken::new();
    let router = serve::mcp_router(app.server.clone(), &stop);
    let url = serve::serve_loopback(router, &stop).await.unwrap();
    RunningGateway { app, url, stop }
}

/// A client recording the progress notifications it receives.
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

async fn connect(url: &str) -> (Client, mpsc::UnboundedReceiver<ProgressNotificationParam>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Recorder { progress: tx }
        .serve(StreamableHttpClientTransport::from_uri(url.to_owned()))
        .await
        .unwrap();
    (client, rx)
}

fn params(tool: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args)
}

async fn call<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    tokio::time::timeout(HANG, client.call_tool(params(tool, args)))
        .await
        .expect("the call hung")
}

fn text(result: &CallToolResult) -> String {
    result.content[0].as_text().expect("text").text.clone()
}

/// Polls `condition` until it holds (bounded by `HANG`).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process exists (a zombie counts: it has not been reaped).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// The pid of upstream `name`'s pooled session.
async fn upstream_pid(service: &PoolService, name: &str) -> u32 {
    service
        .pool()
        .get(&Arc::from(name))
        .await
        .unwrap()
        .pid()
        .expect("a stdio upstream has a pid")
}

#[tokio::test]
async fn the_gateway_lists_and_calls_a_rust_upstream_over_http() {
    let gateway = start_gateway(config_with([("demo", demo_upstream("5ms"))])).await;
    let (client, _) = connect(&gateway.url).await;

    let tools = client.list_all_tools().await.unwrap();
    let names: BTreeSet<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "demo__append_note",
            "demo__echo",
            "demo__fx_rate",
            "demo__set_flag",
            "demo__weather"
        ]
        .map(String::from)
        .into(),
    );
    let weather = tools.iter().find(|t| t.name == "demo__weather").unwrap();
    assert_eq!(
        weather.annotations.as_ref().unwrap().read_only_hint,
        Some(true),
        "annotations are kept, so the stack's policies apply"
    );
    let policy = gateway
        .app
        .server
        .resolver()
        .policies()
        .resolve("demo__weather");
    assert!(policy.cacheable() && policy.retry, "{policy:?}");

    let echoed = call(
        &client,
        "demo__echo",
        json!({"text": "through the gateway"}),
    )
    .await
    .unwrap();
    assert!(
        text(&echoed).contains("through the gateway"),
        "{}",
        text(&echoed)
    );
    let report = call(&client, "demo__weather", json!({"city": "Oslo"}))
        .await
        .unwrap();
    assert_eq!(report.structured_content.unwrap()["city"], "Oslo");

    // Bad input: an upstream that does not exist, a tool the upstream does not have,
    // invalid arguments; the gateway keeps serving.
    let ServiceError::McpError(unknown) =
        call(&client, "nowhere__echo", json!({})).await.unwrap_err()
    else {
        panic!()
    };
    assert!(
        unknown.message.contains("unknown tool `nowhere__echo`"),
        "{}",
        unknown.message
    );
    assert!(
        call(&client, "demo__no_such_tool", json!({}))
            .await
            .is_err()
    );
    let invalid = call(&client, "demo__weather", json!({"town": "Oslo"})).await;
    assert!(
        invalid.is_err() || invalid.as_ref().unwrap().is_error == Some(true),
        "{invalid:?}"
    );
    call(&client, "demo__echo", json!({"text": "still up"}))
        .await
        .unwrap();

    let stats = gateway.app.gateway.pool_handle().stats();
    let demo = stats.key("demo").unwrap();
    assert_eq!(
        (demo.connects, demo.connections),
        (1, 1),
        "one pooled session: {demo:?}"
    );
    drop(client);
    gateway.app.shutdown().await;
}

#[tokio::test]
async fn killing_the_upstream_under_load_ends_every_call_with_upstream_unavailable() {
    let upstreams: BTreeMap<String, UpstreamConfig> =
        [("demo".to_owned(), demo_upstream("20s"))].into();
    let service = PoolService::from_config(&upstreams, PoolConfig::default()).unwrap();
    let pid = upstream_pid(&service, "demo").await;

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let call = ToolCall::new("demo__weather", object!({ "city": format!("city-{i}") }));
            tokio::spawn(service.clone().oneshot(call))
        })
        .collect();
    let handle = service.handle();
    eventually("20 calls in flight upstream", || {
        handle.stats().key("demo").unwrap().in_flight == 20
    })
    .await;

    let killed_at = tokio::time::Instant::now();
    kill("-KILL", pid);
    for call in calls {
        let outcome = tokio::time::timeout(HANG, call)
            .await
            .expect("a call hung after its upstream died")
            .unwrap();
        let err = outcome.unwrap_err();
        assert_eq!(
            ErrorKind::of(&err),
            Some(ErrorKind::UpstreamUnavailable),
            "{err:?}"
        );
        assert!(is_transient(&err));
        assert!(
            err.message.contains("upstream `demo` is unavailable"),
            "{}",
            err.message
        );
    }
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "the calls ended with the upstream, not at its 20 s latency"
    );

    // The pool reconnects: the next call gets a new session (a new child process).
    let next = service
        .clone()
        .oneshot(ToolCall::new("demo__echo", object!({"text": "back"})))
        .await
        .unwrap();
    let CallToolResponse::Complete(next) = next else {
        panic!()
    };
    assert!(text(&next).contains("back"));
    let new_pid = upstream_pid(&service, "demo").await;
    assert_ne!(new_pid, pid);
    let stats = handle.stats();
    let demo = stats.key("demo").unwrap();
    assert_eq!(demo.connects, 2, "{demo:?}");
    assert!(demo.replaced >= 1, "{demo:?}");
    assert!(demo.up);
    // The killed child is reaped, not left a zombie.
    eventually("the killed child reaped", || !process_exists(pid)).await;

    service.pool().shutdown().await;
    eventually("the second child reaped on shutdown", || {
        !process_exists(new_pid)
    })
    .await;
}

#[tokio::test]
async fn read_only_calls_survive_an_upstream_crash_through_the_retry_layer() {
    let upstreams: BTreeMap<String, UpstreamConfig> =
        [("demo".to_owned(), demo_upstream("2s"))].into();
    let service = PoolService::from_config(&upstreams, PoolConfig::default()).unwrap();
    // The policies come from the upstream's tool list, as in the gateway.
    let session = service.pool().get(&Arc::from("demo")).await.unwrap();
    let tools = session.peer().list_all_tools().await.unwrap();
    let pid = session.pid().unwrap();
    drop(session);
    let namespaced = tools.into_iter().map(|mut t| {
        t.name = format!("demo__{}", t.name).into();
        t
    });
    let resolver = Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default()).with_tools(namespaced),
    ));
    let retry = RetryLayer::new(
        RetryConfig::default()
            .with_max_attempts(4)
            .with_base_delay(Duration::from_millis(50))
            .with_budget(BudgetConfig::default().with_min_per_sec(1000)),
    )
    .unwrap();
    let retries = retry.handle();
    let stack = ServiceBuilder::new()
        .layer(retry)
        .layer(TimeoutLayer::default())
        .service(service.clone());

    let calls: Vec<_> = (0..10)
        .map(|i| {
            let call = ToolCall::with_resolver(
                "demo__weather",
                object!({ "city": format!("city-{i}") }),
                Arc::clone(&resolver),
            );
            tokio::spawn(stack.clone().oneshot(call))
        })
        .collect();
    let handle = service.handle();
    eventually("10 calls in flight upstream", || {
        handle.stats().key("demo").unwrap().in_flight == 10
    })
    .await;
    kill("-KILL", pid);
    for (i, call) in calls.into_iter().enumerate() {
        let response = tokio::time::timeout(HANG, call).await.unwrap().unwrap();
        let Ok(CallToolResponse::Complete(result)) = response else {
            panic!("call {i} did not survive the crash: {response:?}")
        };
        assert_eq!(
            result.structured_content.unwrap()["city"],
            format!("city-{i}")
        );
    }
    assert!(retries.stats().retries >= 10, "{:?}", retries.stats());
    assert_eq!(handle.stats().key("demo").unwrap().connects, 2);
    service.pool().shutdown().await;
}

/// The pids of `pid`'s children (Linux).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    children
}

fn temp_config(toml: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "mcp-tower-gateway-test-{}-{}.toml",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, toml).unwrap();
    path
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn the_gateway_binary_serves_and_reaps_its_children_on_sigterm() {
    let config = temp_config(&format!(
        r#"
        listen = "127.0.0.1:0"
        [upstreams.demo]
        command = "{}"
        args = ["--weather-latency", "5ms"]
        stderr = "null"
        "#,
        env!("CARGO_BIN_EXE_demo")
    ));
    let mut gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(gateway.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("listening on ") {
                return url.to_owned();
            }
        }
        panic!("the gateway exited before listening");
    })
    .await
    .expect("the gateway did not start listening");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let (client, _) = connect(&url).await;
    let echoed = call(&client, "demo__echo", json!({"text": "hello"}))
        .await
        .unwrap();
    assert!(text(&echoed).contains("hello"));
    drop(client);

    let gateway_pid = gateway.id().unwrap();
    let children = children_of(gateway_pid);
    assert_eq!(children.len(), 1, "one upstream child: {children:?}");
    kill("-TERM", gateway_pid);
    let status = tokio::time::timeout(HANG, gateway.wait())
        .await
        .expect("the gateway did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    for child in children {
        assert!(
            !process_exists(child),
            "upstream child {child} outlived the gateway"
        );
    }
    std::fs::remove_file(config).ok();
}

#[tokio::test]
async fn the_gateway_refuses_a_bad_configuration() {
    let config = temp_config("[upstreams.a]\nurl = \"ftp://nowhere\"\n");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("upstreams.a.url"), "{stderr}");
    std::fs::remove_file(config).ok();

    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", "/no/such/gateway.toml"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

// --- @modelcontextprotocol/server-everything (run by .ci/gateway.sh) ---

fn everything_js() -> String {
    std::env::var(EVERYTHING_ENV).unwrap_or_else(|_| {
        panic!("set {EVERYTHING_ENV} to server-everything's dist/index.js (.ci/gateway.sh does)")
    })
}

/// server-everything on stdio; with `tap`, its stdin is also copied to that file, so a
/// test can see what the gateway sent it.
fn everything_upstream(tap: Option<&Path>) -> UpstreamConfig {
    let js = everything_js();
    let upstream = match tap {
        None => UpstreamConfig::stdio("node", [js.as_str(), "stdio"]),
        Some(tap) => UpstreamConfig::stdio(
            "sh",
            [
                "-c".to_owned(),
                format!("tee -a '{}' | exec node '{js}' stdio", tap.display()),
            ],
        ),
    };
    upstream.with_stderr(StderrMode::Null)
}

#[tokio::test]
#[ignore = "needs @modelcontextprotocol/server-everything (run by .ci/gateway.sh)"]
async fn server_everything_tools_are_listed_and_called_through_the_gateway() {
    let gateway = start_gateway(config_with([("everything", everything_upstream(None))])).await;
    let (client, _) = connect(&gateway.url).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: BTreeSet<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for expected in [
        "everything__echo",
        "everything__get-sum",
        "everything__trigger-long-running-operation",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(names.iter().all(|n| n.starts_with("everything__")));
    let echo = tools.iter().find(|t| t.name == "everything__echo").unwrap();
    assert_eq!(
        echo.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );

    let echoed = call(&client, "everything__echo", json!({"message": "hi there"}))
        .await
        .unwrap();
    assert_eq!(text(&echoed), "Echo: hi there");
    let sum = call(&client, "everything__get-sum", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert!(text(&sum).contains('5'), "{}", text(&sum));
    // Invalid arguments: the upstream's error reaches the client; the gateway keeps serving.
    let bad = call(&client, "everything__get-sum", json!({"a": "two"})).await;
    assert!(
        bad.is_err() || bad.as_ref().unwrap().is_error == Some(true),
        "{bad:?}"
    );
    call(&client, "everything__echo", json!({"message": "again"}))
        .await
        .unwrap();
    drop(client);
    gateway.app.shutdown().await;
}

#[tokio::test]
#[ignore = "needs @modelcontextprotocol/server-everything (run by .ci/gateway.sh)"]
async fn server_everything_progress_reaches_the_client() {
    let gateway = start_gateway(config_with([("everything", everything_upstream(None))])).await;
    let (client, mut progress) = connect(&gateway.url).await;
    let request = ClientRequest::CallToolRequest(Request::new(params(
        "everything__trigger-long-running-operation",
        json!({"duration": 1, "steps": 4}),
    )));
    let handle = client
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let token = handle.progress_token.clone();
    let response = tokio::time::timeout(HANG, handle.await_response())
        .await
        .unwrap()
        .unwrap();
    let ServerResult::CallToolResult(result) = response else {
        panic!("{response:?}")
    };
    assert!(text(&result).contains("completed"), "{}", text(&result));
    let mut steps = BTreeSet::new();
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), progress.recv()).await {
        assert_eq!(p.progress_token, token, "the client's own progress token");
        assert_eq!(p.total, Some(4.0));
        steps.insert(p.progress as u32);
        if steps.len() == 4 {
            break;
        }
    }
    assert_eq!(
        steps,
        (1..=4).collect(),
        "every step's progress reached the client"
    );
    drop(client);
    gateway.app.shutdown().await;
}

#[tokio::test]
#[ignore = "needs @modelcontextprotocol/server-everything (run by .ci/gateway.sh)"]
async fn server_everything_sees_a_cancelled_call_cancelled() {
    let tap = std::env::temp_dir().join(format!("mcp-tower-gateway-tap-{}", rand_suffix()));
    let gateway = start_gateway(config_with([(
        "everything",
        everything_upstream(Some(&tap)),
    )]))
    .await;
    let (client, mut progress) = connect(&gateway.url).await;
    let request = ClientRequest::CallToolRequest(Request::new(params(
        "everything__trigger-long-running-operation",
        json!({"duration": 60, "steps": 60}),
    )));
    let handle = client
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    // Running upstream: its first progress arrived.
    tokio::time::timeout(HANG, progress.recv())
        .await
        .unwrap()
        .unwrap();
    handle
        .cancel(Some("the user pressed stop".into()))
        .await
        .unwrap();

    eventually("the upstream got notifications/cancelled", || {
        std::fs::read_to_string(&tap)
            .map(|sent| sent.contains("notifications/cancelled"))
            .unwrap_or(false)
    })
    .await;
    let handle = gateway.app.gateway.pool_handle();
    eventually("nothing in flight at the pool", || {
        handle.stats().key("everything").unwrap().in_flight == 0
    })
    .await;
    // No more progress for the cancelled call reaches the client.
    while progress.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        progress.try_recv().is_err(),
        "progress after the cancellation"
    );
    // The session still serves.
    call(&client, "everything__echo", json!({"message": "after"}))
        .await
        .unwrap();
    drop(client);
    gateway.app.shutdown().await;
    std::fs::remove_file(tap).ok();
}

// --- The gateway as a transparent proxy, in front of the conformance server -------------
//
// The conformance server (examples/src/conformance.rs) serves every MCP method; it runs
// in process on 127.0.0.1:0 as a streamable HTTP upstream, and a real rmcp client talks
// to the gateway.

/// A conformance server served on 127.0.0.1:0; stopped on drop.
struct Upstream {
    url: String,
    stop: CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_conformance_upstream() -> Upstream {
    let stop = CancellationToken::new();
    let router = serve::mcp_router(Conformance::new().unwrap(), &stop);
    let url = serve::serve_loopback(router, &stop).await.unwrap();
    Upstream { url, stop }
}

/// What the client heard from the gateway.
#[derive(Debug, Clone)]
enum Heard {
    Log(String),
    ResourceUpdated(String),
    ToolListChanged,
    Sampled,
    Elicited,
}

/// A client that answers sampling and elicitation, and records what it hears.
struct Answering {
    heard: mpsc::UnboundedSender<Heard>,
}

impl ClientHandler for Answering {
    async fn create_message(
        &self,
        _params: CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        self.heard.send(Heard::Sampled).ok();
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text("hello from the client"),
            "test-model".into(),
        ))
    }

    async fn create_elicitation(
        &self,
        _params: ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.heard.send(Heard::Elicited).ok();
        Ok(ElicitResult::new(ElicitationAction::Accept)
            .with_content(json!({ "username": "ada", "email": "ada@example.com" })))
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.heard.send(Heard::Log(params.data.to_string())).ok();
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.heard.send(Heard::ResourceUpdated(params.uri)).ok();
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.heard.send(Heard::ToolListChanged).ok();
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities: ClientCapabilities = serde_json::from_value(json!({
            "sampling": {},
            "elicitation": { "form": {} },
        }))
        .unwrap();
        ClientConfig::new(capabilities, Implementation::new("gateway-test", "1.0"))
    }
}

type AnsweringClient = RunningService<RoleClient, Answering>;

async fn connect_answering(url: &str) -> (AnsweringClient, mpsc::UnboundedReceiver<Heard>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Answering { heard: tx }
        .serve(StreamableHttpClientTransport::from_uri(url.to_owned()))
        .await
        .unwrap();
    (client, rx)
}

/// Waits for the first thing heard that `wanted` accepts (bounded by `HANG`).
async fn hear(
    heard: &mut mpsc::UnboundedReceiver<Heard>,
    wanted: impl Fn(&Heard) -> bool,
) -> Heard {
    tokio::time::timeout(HANG, async {
        loop {
            let next = heard.recv().await.expect("the client is gone");
            if wanted(&next) {
                return next;
            }
        }
    })
    .await
    .expect("never heard it")
}

fn unprefixed(url: &str) -> UpstreamConfig {
    UpstreamConfig::http(url).with_namespace(false)
}

fn prompt_text(result: &GetPromptResult) -> String {
    result.messages[0]
        .content
        .as_text()
        .expect("a text message")
        .text
        .clone()
}

#[tokio::test]
async fn one_unprefixed_upstream_is_forwarded_method_by_method() {
    let upstream = start_conformance_upstream().await;
    let gateway = start_gateway(config_with([("conformance", unprefixed(&upstream.url))])).await;
    let (direct, _) = connect_answering(&upstream.url).await;
    let (client, _) = connect_answering(&gateway.url).await;

    // initialize: the upstream's implementation and exactly its capabilities.
    let info = client.peer_info().unwrap();
    let upstream_info = direct.peer_info().unwrap();
    assert_eq!(info.server_info, upstream_info.server_info);
    assert_eq!(info.capabilities, upstream_info.capabilities);
    assert_eq!(info.instructions, upstream_info.instructions);

    // tools: the same names, called as they are.
    let names = |tools: Vec<rmcp::model::Tool>| -> Vec<String> {
        tools.into_iter().map(|t| t.name.to_string()).collect()
    };
    assert_eq!(
        names(client.list_all_tools().await.unwrap()),
        names(direct.list_all_tools().await.unwrap())
    );
    let result = client
        .call_tool(params("test_simple_text", json!({})))
        .await
        .unwrap();
    assert_eq!(
        text(&result),
        text(
            &direct
                .call_tool(params("test_simple_text", json!({})))
                .await
                .unwrap()
        )
    );
    let unknown = client.call_tool(params("no_such_tool", json!({}))).await;
    let direct_unknown = direct.call_tool(params("no_such_tool", json!({}))).await;
    assert_eq!(
        format!("{unknown:?}"),
        format!("{direct_unknown:?}"),
        "an unknown tool is the upstream's own answer"
    );

    // prompts: listed and got, arguments passed on.
    let prompts = client.list_all_prompts().await.unwrap();
    assert_eq!(
        prompts.len(),
        direct.list_all_prompts().await.unwrap().len()
    );
    let got = client
        .get_prompt(
            GetPromptRequestParams::new("test_prompt_with_arguments")
                .with_arguments(object!({ "arg1": "alpha", "arg2": "beta" })),
        )
        .await
        .unwrap();
    assert!(prompt_text(&got).contains("arg1='alpha'"), "{got:?}");
    assert!(
        client
            .get_prompt(GetPromptRequestParams::new("no_such_prompt"))
            .await
            .is_err()
    );

    // resources: listed, read (static and through a template), templates listed.
    let resources = client.list_all_resources().await.unwrap();
    assert!(resources.iter().any(|r| r.uri == "test://static-text"));
    assert_eq!(
        client.list_all_resource_templates().await.unwrap().len(),
        direct.list_all_resource_templates().await.unwrap().len()
    );
    for uri in [
        "test://static-text",
        "test://static-binary",
        "test://template/123/data",
    ] {
        let read = client
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
            .unwrap();
        let read_directly = direct
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
            .unwrap();
        assert_eq!(read.contents, read_directly.contents, "{uri}");
    }
    let missing = client
        .read_resource(ReadResourceRequestParams::new("test://nonexistent"))
        .await
        .unwrap_err();
    let missing_directly = direct
        .read_resource(ReadResourceRequestParams::new("test://nonexistent"))
        .await
        .unwrap_err();
    assert_eq!(format!("{missing:?}"), format!("{missing_directly:?}"));

    // completion, for a prompt argument and a template argument.
    let completed = client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("test_prompt_with_arguments"),
            ArgumentInfo::new("arg1", "par"),
        ))
        .await
        .unwrap();
    assert_eq!(completed.completion.values, ["paris", "park", "party"]);
    let completed = client
        .complete(CompleteRequestParams::new(
            Reference::for_resource("test://template/{id}/data"),
            ArgumentInfo::new("id", "1"),
        ))
        .await
        .unwrap();
    assert_eq!(completed.completion.values, ["1", "123"]);

    // logging/setLevel and ping.
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
        .await
        .unwrap();
    client
        .send_request(ClientRequest::PingRequest(Default::default()))
        .await
        .unwrap();
    direct.cancel().await.ok();
    client.cancel().await.ok();
}

#[tokio::test]
async fn namespaced_and_unprefixed_upstreams_side_by_side() {
    let first = start_conformance_upstream().await;
    let second = start_conformance_upstream().await;
    let gateway = start_gateway(config_with([
        ("ns", UpstreamConfig::http(&first.url)),
        ("plain", unprefixed(&second.url)),
    ]))
    .await;
    let (client, _) = connect_answering(&gateway.url).await;

    let tools: BTreeSet<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(tools.contains("ns__test_simple_text") && tools.contains("test_simple_text"));
    assert!(!tools.contains("plain__test_simple_text"));
    for tool in ["ns__test_simple_text", "test_simple_text"] {
        client.call_tool(params(tool, json!({}))).await.unwrap();
    }
    let unknown = client
        .call_tool(params("other__test_simple_text", json!({})))
        .await
        .unwrap_err();
    assert!(
        format!("{unknown:?}").contains("unknown tool"),
        "{unknown:?}"
    );

    let prompts: BTreeSet<String> = client
        .list_all_prompts()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(prompts.contains("ns__test_simple_prompt") && prompts.contains("test_simple_prompt"));
    for prompt in ["ns__test_simple_prompt", "test_simple_prompt"] {
        client
            .get_prompt(GetPromptRequestParams::new(prompt))
            .await
            .unwrap();
    }
    let completed = client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("ns__test_prompt_with_arguments"),
            ArgumentInfo::new("arg2", "test"),
        ))
        .await
        .unwrap();
    assert_eq!(
        completed.completion.values,
        ["test", "testing"],
        "the name is un-namespaced"
    );
    assert!(
        client
            .get_prompt(GetPromptRequestParams::new("nobody__test_simple_prompt"))
            .await
            .is_err(),
        "an unroutable prompt is refused"
    );
    // Both list the same resources: the URI has one owner, and the read succeeds.
    let resources = client.list_all_resources().await.unwrap();
    let static_text = resources
        .iter()
        .filter(|r| r.uri == "test://static-text")
        .count();
    assert_eq!(
        static_text, 2,
        "resources are listed as the upstreams list them"
    );
    client
        .read_resource(ReadResourceRequestParams::new("test://static-text"))
        .await
        .unwrap();
    let missing = client
        .read_resource(ReadResourceRequestParams::new("elsewhere://nothing"))
        .await
        .unwrap_err();
    assert!(format!("{missing:?}").contains("not found"), "{missing:?}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn sampling_elicitation_and_logs_of_a_call_reach_its_client() {
    let upstream = start_conformance_upstream().await;
    let gateway = start_gateway(config_with([("conformance", unprefixed(&upstream.url))])).await;
    let (client, mut heard) = connect_answering(&gateway.url).await;

    let sampled = call(&client, "test_sampling", json!({ "prompt": "hi?" }))
        .await
        .unwrap();
    assert_eq!(text(&sampled), "LLM response: hello from the client");
    hear(&mut heard, |h| matches!(h, Heard::Sampled)).await;

    let elicited = call(&client, "test_elicitation", json!({ "message": "who?" }))
        .await
        .unwrap();
    assert!(
        text(&elicited).contains("action=accept"),
        "{}",
        text(&elicited)
    );
    assert!(
        text(&elicited).contains("ada@example.com"),
        "{}",
        text(&elicited)
    );

    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
        .await
        .unwrap();
    call(&client, "test_tool_with_logging", json!({}))
        .await
        .unwrap();
    let mut logs = Vec::new();
    while logs.len() < 3 {
        if let Heard::Log(line) = hear(&mut heard, |h| matches!(h, Heard::Log(_))).await {
            logs.push(line);
        }
    }
    assert!(logs[0].contains("Tool execution started"), "{logs:?}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn subscribers_hear_resource_updates_and_everyone_hears_list_changes() {
    let upstream = start_conformance_upstream().await;
    let gateway = start_gateway(config_with([("conformance", unprefixed(&upstream.url))])).await;
    let (subscriber, mut subscriber_heard) = connect_answering(&gateway.url).await;
    let (other, mut other_heard) = connect_answering(&gateway.url).await;
    subscriber
        .subscribe(SubscribeRequestParams::new("test://watched-resource"))
        .await
        .unwrap();
    assert!(
        subscriber
            .subscribe(SubscribeRequestParams::new("test://nonexistent"))
            .await
            .is_err(),
        "the upstream's refusal is passed on"
    );

    call(&other, "test_update_watched_resource", json!({}))
        .await
        .unwrap();
    let updated = hear(&mut subscriber_heard, |h| {
        matches!(h, Heard::ResourceUpdated(_))
    })
    .await;
    assert!(matches!(updated, Heard::ResourceUpdated(uri) if uri == "test://watched-resource"));

    let before = other.list_all_tools().await.unwrap().len();
    call(&other, "test_trigger_tool_change", json!({}))
        .await
        .unwrap();
    hear(&mut subscriber_heard, |h| {
        matches!(h, Heard::ToolListChanged)
    })
    .await;
    hear(&mut other_heard, |h| matches!(h, Heard::ToolListChanged)).await;
    assert_ne!(
        other.list_all_tools().await.unwrap().len(),
        before,
        "the gateway lists the upstream's new tools"
    );
    assert!(
        !std::iter::from_fn(|| other_heard.try_recv().ok())
            .any(|h| matches!(h, Heard::ResourceUpdated(_))),
        "a session that did not subscribe hears no update"
    );

    // Two subscribers share the gateway's one upstream subscription: the first leaving
    // does not end it for the second.
    other
        .subscribe(SubscribeRequestParams::new("test://watched-resource"))
        .await
        .unwrap();
    subscriber
        .unsubscribe(UnsubscribeRequestParams::new("test://watched-resource"))
        .await
        .unwrap();
    call(&subscriber, "test_update_watched_resource", json!({}))
        .await
        .unwrap();
    let updated = hear(&mut other_heard, |h| matches!(h, Heard::ResourceUpdated(_))).await;
    assert!(matches!(updated, Heard::ResourceUpdated(uri) if uri == "test://watched-resource"));
    subscriber.cancel().await.ok();
    other.cancel().await.ok();
}

#[tokio::test]
async fn a_2026_client_is_served_statelessly_through_the_gateway() {
    let upstream = start_conformance_upstream().await;
    let gateway = start_gateway(config_with([("conformance", unprefixed(&upstream.url))])).await;
    let (tx, _heard) = mpsc::unbounded_channel();
    let client = serve_client_with_lifecycle(
        Answering { heard: tx },
        StreamableHttpClientTransport::from_uri(gateway.url.clone()),
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    let result = call(&client, "test_simple_text", json!({})).await.unwrap();
    assert!(!text(&result).is_empty());
    // The upstream sees a 2026-07-28 request: sampling is asked for with an
    // input-required result, which rmcp's client answers and retries (multi-round).
    let sampled = call(&client, "test_sampling", json!({ "prompt": "hi?" }))
        .await
        .unwrap();
    assert_eq!(text(&sampled), "LLM response: hello from the client");
    // Session methods are gone in 2026-07-28, exactly as the upstream says.
    assert!(
        client
            .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
            .await
            .is_err()
    );
    // subscriptions/listen: the gateway subscribes upstream for the stream's resources.
    let mut subscription = client
        .listen(
            SubscriptionFilter::builder()
                .resource_subscriptions(["test://watched-resource"])
                .build(),
        )
        .await
        .unwrap();
    let (other, _) = connect_answering(&gateway.url).await;
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        call(&other, "test_update_watched_resource", json!({}))
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await;
        if let Ok(Ok(Some(ServerNotification::ResourceUpdatedNotification(n)))) = next {
            assert_eq!(n.params.uri, "test://watched-resource");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listen stream never heard the update"
        );
    }
    drop(subscription);
    other.cancel().await.ok();
    client.cancel().await.ok();
}
