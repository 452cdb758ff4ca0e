//! Isolation on the HTTP edge without a verified identity, driven with raw HTTP the way an
//! outside client (or an attacker) sends it:
//!
//! - anonymous 2026-07-28 stateless calls of a private tool: no shared hit, no shared flight
//!   (each runs), counted as `bypassed_anonymous` by the cache and the deduplicator;
//! - an empty `Authorization: Bearer ` is no identity either;
//! - a stateless request carrying another caller's `Mcp-Session-Id` gets nothing of that
//!   session's (rmcp does not check the header on 2026-07-28 requests), while the session's
//!   own legacy calls do share their private results;
//! - `anonymous = "shared"` makes every anonymous caller one principal;
//! - a public tool's result is shared by everyone, anonymous or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mcp_tower::{HttpConfig, McpStack, SessionsConfig, StackConfig, StackHandles, http::HttpEdge};
use mcp_tower_core::{Anonymous, CacheScope, ToolOverride};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
    },
    object,
    service::RequestContext,
};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

/// `account` (private: the default scope of a read-only tool), `weather` (public, by
/// override) and `slow_account` (private; each run waits at `barrier` until a second run
/// arrives, so two concurrent calls finish only if both really run).
#[derive(Clone)]
struct Tools {
    runs: Arc<AtomicUsize>,
    barrier: Arc<Barrier>,
}

fn tool(name: &'static str) -> Tool {
    Tool::new(
        name,
        "answers with a run number",
        object!({"type": "object"}),
    )
    .with_annotations(ToolAnnotations::new().read_only(true))
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            tool("account"),
            tool("weather"),
            tool("slow_account"),
        ]))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        ["account", "weather", "slow_account"]
            .into_iter()
            .find(|t| *t == name)
            .map(tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name == "slow_account" {
            self.barrier.wait().await;
        }
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("run {n}"))]).into())
    }
}

struct Served {
    url: String,
    tools: Tools,
    handles: StackHandles,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(anonymous: Anonymous) -> Served {
    let http = HttpConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        sessions: SessionsConfig {
            enabled: true,
            ..SessionsConfig::default()
        },
        ..HttpConfig::default()
    };
    let mut config = StackConfig {
        anonymous,
        ..StackConfig::default()
    };
    config.tools.insert(
        "weather".into(),
        ToolOverride::default().with_scope(CacheScope::Public),
    );
    let tools = Tools {
        runs: Arc::default(),
        barrier: Arc::new(Barrier::new(2)),
    };
    let server = McpStack::from_config(config).unwrap().serve(tools.clone());
    let handles = server.handles().clone();
    let stop = CancellationToken::new();
    let bound = HttpEdge::new(http)
        .unwrap()
        .bind(server, Some(&handles), &stop)
        .await
        .unwrap();
    let url = bound.url();
    tokio::spawn(bound.run());
    Served {
        url,
        tools,
        handles,
        stop,
    }
}

/// A 2026-07-28 stateless `tools/call`.
fn stateless_call(name: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": name, "arguments": {"currency": "NOK"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "isolation-test", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
}

/// Posts `body` with `headers` and returns the JSON-RPC message of the answer.
async fn post(url: &str, version: &str, headers: &[(&str, &str)], body: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version);
    if let Some(method) = body["method"].as_str() {
        request = request.header("mcp-method", method);
    }
    if let Some(name) = body["params"]["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{}: {:?}",
        response.status(),
        response.text().await
    );
    let text = response.text().await.unwrap();
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .unwrap_or_else(|| panic!("no JSON-RPC message in {text:?}"))
    })
}

async fn stateless(served: &Served, name: &str, headers: &[(&str, &str)]) -> Value {
    post(&served.url, "2026-07-28", headers, stateless_call(name)).await
}

fn is_hit(message: &Value) -> bool {
    assert!(message.get("result").is_some(), "{message}");
    message["result"]["_meta"]["io.github.mcp-tower/cache"]["hit"] == true
}

fn text(message: &Value) -> String {
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Opens a legacy (2025-11-25) session and returns its id.
async fn open_session(served: &Served) -> String {
    let response = reqwest::Client::new()
        .post(&served.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "isolation-test", "version": "1"}
                }
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.text().await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(
        &served.url,
        "2025-11-25",
        &[("mcp-session-id", &id)],
        initialized,
    )
    .await;
    id
}

async fn in_session(served: &Served, session: &str, name: &str) -> Value {
    let mut body = stateless_call(name);
    body["params"].as_object_mut().unwrap().remove("_meta");
    post(
        &served.url,
        "2025-11-25",
        &[("mcp-session-id", session)],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_empty_token_callers_never_share_a_private_result() {
    let served = serve(Anonymous::Bypass).await;
    let cases: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", "Bearer ")],
        &[("authorization", "")],
        &[("authorization", "Bearer ")],
    ];
    let mut seen = Vec::new();
    for headers in cases {
        let answer = stateless(&served, "account", headers).await;
        assert!(!is_hit(&answer), "an anonymous caller got a cached result");
        seen.push(text(&answer));
    }
    seen.dedup();
    assert_eq!(seen.len(), 4, "every anonymous call ran: {seen:?}");
    assert_eq!(served.tools.runs.load(Ordering::SeqCst), 4);
    let cache = served.handles.cache.as_ref().unwrap().stats();
    assert_eq!(cache.bypassed_anonymous, 4);
    assert_eq!(
        cache.inserts, 0,
        "nothing of an anonymous caller was stored"
    );

    // A real credential is an identity: its second call hits.
    let with_token = [("authorization", "Bearer some-token")];
    assert!(!is_hit(&stateless(&served, "account", &with_token).await));
    assert!(is_hit(&stateless(&served, "account", &with_token).await));

    // Public results do not depend on the caller: shared by everyone.
    assert!(!is_hit(&stateless(&served, "weather", &[]).await));
    assert!(is_hit(&stateless(&served, "weather", &[]).await));
    assert!(is_hit(&stateless(&served, "weather", &with_token).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_never_share_a_flight() {
    let served = serve(Anonymous::Bypass).await;
    // Each run waits for a second run: deduplicated into one flight, neither would finish.
    let both = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            stateless(&served, "slow_account", &[]),
            stateless(&served, "slow_account", &[("authorization", "Bearer ")])
        )
    })
    .await
    .expect("two anonymous calls were merged into one flight");
    assert_ne!(text(&both.0), text(&both.1));
    assert_eq!(served.tools.runs.load(Ordering::SeqCst), 2);
    let dedup = served.handles.dedup.as_ref().unwrap().stats();
    assert_eq!(dedup.bypassed_anonymous, 2);
    assert_eq!(dedup.flights, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_session_header_gets_nothing_of_that_session() {
    let served = serve(Anonymous::Bypass).await;
    let session = open_session(&served).await;
    // The session's own calls: a verified identity, so its private result is cached...
    let first = in_session(&served, &session, "account").await;
    assert!(!is_hit(&first));
    let again = in_session(&served, &session, "account").await;
    assert!(is_hit(&again), "a live session is an identity: {again}");
    assert_eq!(text(&again), text(&first));
    // ...and a stateless request carrying the same header is not that session.
    let forged = stateless(&served, "account", &[("mcp-session-id", &session)]).await;
    assert!(
        !is_hit(&forged),
        "the forged header reached the session's entry"
    );
    assert_ne!(text(&forged), text(&first));
    assert_eq!(served.tools.runs.load(Ordering::SeqCst), 2);
    // Another live session does not share either.
    let other = open_session(&served).await;
    assert!(!is_hit(&in_session(&served, &other, "account").await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_shared_makes_every_anonymous_caller_one_principal() {
    let served = serve(Anonymous::Shared).await;
    let first = stateless(&served, "account", &[]).await;
    assert!(!is_hit(&first));
    let second = stateless(&served, "account", &[("authorization", "Bearer ")]).await;
    assert!(is_hit(&second));
    assert_eq!(text(&first), text(&second));
    // Never shared with an identified caller.
    let identified = stateless(&served, "account", &[("authorization", "Bearer t")]).await;
    assert!(!is_hit(&identified));
    assert_eq!(
        served
            .handles
            .cache
            .as_ref()
            .unwrap()
            .stats()
            .bypassed_anonymous,
        0
    );
}
