//! The HTTP edge (`mcp_tower::http`) driven the way outside clients drive a server: raw
//! HTTP/1.1 on keep-alive connections (reqwest), each answer read to its end.
//!
//! - no Nagle stall: 50 sequential calls on one connection, median well under 10 ms;
//! - Origin: foreign → 403, allowed → 200, none → 200; a foreign Host → 403 on `/mcp` and on
//!   the admin endpoints;
//! - bearer auth: 401 with `WWW-Authenticate` without a valid token; the token's *name* is
//!   the principal (two tokens of one name share a private cache entry, two names never);
//! - the session cap: an `initialize` beyond it gets 503 with the busy error;
//! - a public bind without auth refuses to start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mcp_tower::{
    HttpConfig, McpStack, StackConfig,
    http::{HttpEdge, TokenSet, Tokens},
};
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
use tokio_util::sync::CancellationToken;

/// `echo`: read-only, so cached, and private (the default scope); counts its runs.
#[derive(Clone, Default)]
struct Echo {
    runs: Arc<AtomicUsize>,
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("echo", "echoes", object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(true)),
        ]))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == "echo").then(|| {
            Tool::new("echo", "echoes", object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(true))
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let text = format!(
            "{} #{n}",
            Value::Object(request.arguments.unwrap_or_default())
        );
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }
}

struct Served {
    url: String,
    base: String,
    echo: Echo,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(http: HttpConfig, tokens: Option<Tokens>) -> Served {
    let mut edge = HttpEdge::new(http).unwrap();
    if let Some(tokens) = tokens {
        edge = edge.with_tokens(TokenSet::fixed(tokens));
    }
    let echo = Echo::default();
    let server = McpStack::from_config(StackConfig::default())
        .unwrap()
        .serve(echo.clone());
    let handles = server.handles().clone();
    let stop = CancellationToken::new();
    let bound = edge.bind(server, Some(&handles), &stop).await.unwrap();
    let url = bound.url();
    let base = format!("http://{}", bound.mcp);
    tokio::spawn(bound.run());
    Served {
        url,
        base,
        echo,
        stop,
    }
}

fn loopback() -> HttpConfig {
    HttpConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..HttpConfig::default()
    }
}

/// A 2026-07-28 stateless `tools/call` of `echo`.
fn call_body(id: u64, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": "echo", "arguments": {"text": text},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "edge-test", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
}

fn post(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(body.to_string())
}

/// The JSON-RPC message of an answer (a JSON body, or the last `data:` of an SSE stream).
async fn message(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    if let Ok(value) = serde_json::from_str(&text) {
        return value;
    }
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC message in {text:?}"))
}

fn is_hit(message: &Value) -> bool {
    message["result"]["_meta"]["io.github.mcp-tower/cache"]["hit"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_calls_on_one_keep_alive_connection_do_not_stall() {
    // SSE answers (several writes per answer): where Nagle's algorithm would hold the last
    // piece for the client's delayed ACK.
    let served = serve(
        HttpConfig {
            json_response: false,
            ..loopback()
        },
        None,
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut times = Vec::new();
    for i in 0..50 {
        let started = Instant::now();
        // Different arguments each time: every call runs the tool (no cache hit).
        let response = post(&client, &served.url, &call_body(i, &format!("n{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer = message(response).await;
        times.push(started.elapsed());
        assert!(
            answer["result"]["content"][0]["text"].is_string(),
            "{answer}"
        );
    }
    times.sort();
    let median = times[times.len() / 2];
    assert_eq!(served.echo.runs.load(Ordering::SeqCst), 50);
    // A delayed-ACK stall costs ~40 ms a call; a generous bound it cannot pass.
    assert!(
        median < Duration::from_millis(10),
        "median {median:?} per call on a keep-alive connection (a Nagle stall?): {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_and_host_are_checked_on_mcp_and_admin_endpoints() {
    let served = serve(loopback(), None).await;
    let client = reqwest::Client::new();
    let body = call_body(1, "o");
    let evil = post(&client, &served.url, &body)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403, "a foreign Origin");
    let allowed = post(&client, &served.url, &body)
        .header("origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200, "an allowed Origin");
    let none = post(&client, &served.url, &body).send().await.unwrap();
    assert_eq!(none.status(), 200, "no Origin (not a browser)");

    let foreign_host = post(&client, &served.url, &body)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign_host.status(), 403, "a foreign Host on /mcp");
    for path in ["/metrics", "/health", "/stats"] {
        let url = format!("{}{path}", served.base);
        let ok = client.get(&url).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path}");
        let rebinding = client
            .get(&url)
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(rebinding.status(), 403, "a foreign Host on {path}");
        let origin = client
            .get(&url)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(origin.status(), 403, "a foreign Origin on {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_makes_the_token_name_the_principal() {
    let tokens = Tokens::parse(
        "alice:alice-token-one-0000\nalice:alice-token-two-0000\nbob:bob-token-0000000000\n",
        "test",
    )
    .unwrap();
    let served = serve(loopback(), Some(tokens)).await;
    let client = reqwest::Client::new();
    let body = call_body(1, "same arguments");

    let anonymous = post(&client, &served.url, &body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
    );
    let wrong = post(&client, &served.url, &body)
        .bearer_auth("not-a-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let empty = post(&client, &served.url, &body)
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 401);
    let admin = client
        .get(format!("{}/stats", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 401, "the admin endpoints too");
    assert_eq!(served.echo.runs.load(Ordering::SeqCst), 0);

    let call = |token: &'static str| {
        let request = post(&client, &served.url, &body).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            message(response).await
        }
    };
    let first = call("alice-token-one-0000").await;
    assert!(!is_hit(&first), "{first}");
    let rotated = call("alice-token-two-0000").await;
    assert!(
        is_hit(&rotated),
        "another token of alice shares her entry: {rotated}"
    );
    let bob = call("bob-token-0000000000").await;
    assert!(
        !is_hit(&bob),
        "bob never gets alice's private result: {bob}"
    );
    assert_eq!(served.echo.runs.load(Ordering::SeqCst), 2);
}

/// A 2025-11-25 `initialize` (opens a legacy session).
async fn initialize(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "edge-test", "version": "1"}
                }
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_turns_away_a_session_beyond_it_with_a_clear_error() {
    let mut http = loopback();
    http.sessions.max = 2;
    let served = serve(http, None).await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let opened = initialize(&client, &served.url).await;
        assert_eq!(opened.status(), 200);
        assert!(opened.headers().contains_key("mcp-session-id"));
    }
    let refused = initialize(&client, &served.url).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let error = message(refused).await;
    assert_eq!(error["error"]["code"], mcp_tower::error::codes::BUSY.0);
    assert_eq!(error["error"]["data"]["maxSessions"], 2);
    let text = error["error"]["message"].as_str().unwrap();
    assert!(text.contains("http.sessions.max"), "{text}");

    // Stateless 2026-07-28 calls are not sessions: they still go through.
    let call = post(&client, &served.url, &call_body(9, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
}

#[test]
fn a_public_bind_without_auth_refuses_to_start_unless_told() {
    let public = HttpConfig {
        bind: SocketAddr::from(([0, 0, 0, 0], 8080)),
        allowed_hosts: vec!["mcp.example.com".into()],
        ..HttpConfig::default()
    };
    let no_hosts = HttpEdge::new(HttpConfig {
        allowed_hosts: Vec::new(),
        allow_unauthenticated: true,
        ..public.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(no_hosts.contains("http.allowed_hosts"), "{no_hosts}");
    let error = HttpEdge::new(public.clone()).unwrap_err().to_string();
    assert!(
        error.contains("http.bind")
            && error.contains("tokens_file")
            && error.contains("allow_unauthenticated"),
        "{error}"
    );
    let allowed = HttpConfig {
        allow_unauthenticated: true,
        ..public
    };
    assert!(HttpEdge::new(allowed).is_ok());
    let from_toml = StackConfig::from_toml_str(
        "[http]\nbind = \"0.0.0.0:9000\"\nallowed_hosts = [\"mcp.example.com\"]\n",
    )
    .unwrap_err();
    assert!(from_toml.to_string().contains("http.bind"), "{from_toml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_on_their_own_address_with_their_own_token_or_off() {
    let dir = std::env::temp_dir().join(format!("mcp-tower-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    let admin_tokens = dir.join("admin-tokens");
    std::fs::write(&tokens, "alice:alice-token-0000000\n").unwrap();
    std::fs::write(&admin_tokens, "ops:ops-token-00000000000\n").unwrap();
    let http = HttpConfig {
        admin: mcp_tower::AdminMode::Separate,
        admin_bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tokens_file: Some(tokens.clone()),
        admin_tokens_file: Some(admin_tokens),
        ..loopback()
    };
    let edge = HttpEdge::new(http).unwrap();
    let echo = Echo::default();
    let server = McpStack::with_defaults().unwrap().serve(echo);
    let handles = server.handles().clone();
    let stop = CancellationToken::new();
    let bound = edge.bind(server, Some(&handles), &stop).await.unwrap();
    let admin = bound.admin.expect("an admin listener");
    let mcp = bound.mcp;
    tokio::spawn(bound.run());
    let client = reqwest::Client::new();
    let get = |url: String, token: &'static str| {
        let request = client.get(url).bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        get(format!("http://{admin}/stats"), "ops-token-00000000000").await,
        200
    );
    assert_eq!(
        get(format!("http://{admin}/stats"), "alice-token-0000000").await,
        401,
        "the admin endpoints take their own tokens"
    );
    assert_eq!(
        get(format!("http://{mcp}/stats"), "alice-token-0000000").await,
        404,
        "not beside /mcp"
    );

    // SIGHUP reads the tokens file again: a new token works, the removed one is refused.
    std::fs::write(&tokens, "alice:alice-rotated-00000000\n").unwrap();
    let body = call_body(1, "after rotation");
    let status = |token: &'static str| {
        let request = post(&client, &format!("http://{mcp}/mcp"), &body).bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status("alice-token-0000000").await, 200);
    let pid = std::process::id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // The reload runs on the signal task: wait for its effect, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("alice-rotated-00000000").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the tokens file was not reloaded"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(status("alice-token-0000000").await, 401);
    stop.cancel();

    // `admin = "off"`: no admin endpoint anywhere.
    let off = serve(
        HttpConfig {
            admin: mcp_tower::AdminMode::Off,
            ..loopback()
        },
        None,
    )
    .await;
    let stats = client
        .get(format!("{}/stats", off.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 404);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_and_sessions_off_answers_legacy_clients_statelessly() {
    let served = serve(
        HttpConfig {
            max_body_bytes: 1024,
            sessions: mcp_tower::SessionsConfig {
                enabled: false,
                ..Default::default()
            },
            ..loopback()
        },
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let big = call_body(1, &"x".repeat(4096));
    let refused = post(&client, &served.url, &big).send().await.unwrap();
    assert_eq!(refused.status(), 413);
    assert_eq!(served.echo.runs.load(Ordering::SeqCst), 0, "nothing ran");
    let small = post(&client, &served.url, &call_body(2, "fits"))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);

    let opened = initialize(&client, &served.url).await;
    assert_eq!(opened.status(), 200);
    assert!(
        !opened.headers().contains_key("mcp-session-id"),
        "no session with `sessions.enabled = false`"
    );
}
