//! The demo server, driven by rmcp's own client over stdio (child process) and streamable
//! HTTP: every tool listed with its annotations and called, and bad input answered with
//! clear errors while the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{HANG, HttpDemo, RawHttp, RawStdio, demo_command, text_of};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ErrorCode},
    object,
    service::RunningService,
    transport::{StreamableHttpClientTransport, TokioChildProcess},
};
use serde_json::{Value, json};

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: Value,
) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    tokio::time::timeout(
        HANG,
        client.call_tool(CallToolRequestParams::new(tool).with_arguments(args)),
    )
    .await
    .expect("call hung")
    .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// The whole tour a client takes: list, then call each tool and check what it returns.
async fn tour(client: &RunningService<RoleClient, ()>) {
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["append_note", "echo", "fx_rate", "set_flag", "weather"]
    );
    let ann = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .annotations
            .clone()
            .unwrap()
    };
    assert_eq!(ann("weather").read_only_hint, Some(true));
    assert_eq!(ann("fx_rate").open_world_hint, Some(true));
    assert_eq!(ann("set_flag").idempotent_hint, Some(true));
    assert_eq!(ann("append_note").destructive_hint, Some(true));
    assert_eq!(ann("echo").read_only_hint, Some(true));

    let weather = call(client, "weather", json!({"city": "Oslo"})).await;
    assert_ne!(weather.is_error, Some(true));
    let report = weather.structured_content.clone().unwrap();
    assert_eq!(report["city"], "Oslo");
    assert!(report["temperature_c"].is_number());
    // weather is read-only: the same call again is served by the stack's cache, marked so.
    let again = call(client, "weather", json!({"city": "Oslo"})).await;
    assert_eq!(again.structured_content, weather.structured_content);
    let marker =
        &again.meta.as_ref().expect("a cache hit carries _meta").0["io.github.mcp-tower/cache"];
    assert_eq!(marker["hit"], true, "{marker}");

    let fx = call(client, "fx_rate", json!({"from": "EUR", "to": "NOK"})).await;
    let rate = fx.structured_content.unwrap()["rate"].as_f64().unwrap();
    assert!((rate - 10.74 / 0.92).abs() < 1e-3, "{rate}");
    let unknown = call(client, "fx_rate", json!({"from": "EUR", "to": "XYZ"})).await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text_of(&unknown).contains("unknown currency `XYZ`"),
        "{}",
        text_of(&unknown)
    );

    let first = call(client, "set_flag", json!({"name": "beta", "value": true})).await;
    assert_eq!(first.structured_content.unwrap()["previous"], Value::Null);
    let again = call(client, "set_flag", json!({"name": "beta", "value": true})).await;
    assert_eq!(again.structured_content.unwrap()["previous"], true);

    let n1 = call(client, "append_note", json!({"text": "one"})).await;
    let n2 = call(client, "append_note", json!({"text": "one"})).await;
    let (c1, c2) = (
        n1.structured_content.unwrap()["count"].as_u64().unwrap(),
        n2.structured_content.unwrap()["count"].as_u64().unwrap(),
    );
    assert_eq!(c2, c1 + 1, "a destructive tool called twice runs twice");

    let echo = call(client, "echo", json!({"text": "héllo 🦀"})).await;
    assert_eq!(text_of(&echo), "héllo 🦀");
}

/// Caller mistakes a typed client can still make: each gets the right kind of answer and
/// the next call works.
async fn typed_mistakes(client: &RunningService<RoleClient, ()>) {
    // Unknown tool: a JSON-RPC error (-32602, as rmcp's router answers).
    let err = client
        .call_tool(CallToolRequestParams::new("no_such_tool").with_arguments(object!({})))
        .await
        .unwrap_err();
    let rmcp::ServiceError::McpError(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
    assert!(err.message.contains("tool not found"), "{}", err.message);

    // Missing required argument: an isError result the model can read and fix.
    let missing = call(client, "weather", json!({})).await;
    assert_eq!(missing.is_error, Some(true));
    assert!(
        text_of(&missing).contains("missing field `city`"),
        "{}",
        text_of(&missing)
    );

    // Wrong type.
    let wrong = call(client, "set_flag", json!({"name": "x", "value": "yes"})).await;
    assert_eq!(wrong.is_error, Some(true));

    // Validation inside the tool.
    let empty = call(client, "weather", json!({"city": "  "})).await;
    assert_eq!(empty.is_error, Some(true));
    assert!(text_of(&empty).contains("must not be empty"));

    let ok = call(client, "echo", json!({"text": "still serving"})).await;
    assert_eq!(text_of(&ok), "still serving");
}

#[tokio::test]
async fn stdio_child_process() {
    let transport = TokioChildProcess::new(demo_command()).unwrap();
    let client = tokio::time::timeout(HANG, ().serve(transport))
        .await
        .unwrap()
        .unwrap();
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "mcp-tower-demo");
    tour(&client).await;
    typed_mistakes(&client).await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn streamable_http() {
    let demo = HttpDemo::start(&[]).await;
    let transport = StreamableHttpClientTransport::from_uri(demo.url.clone());
    let client = tokio::time::timeout(HANG, ().serve(transport))
        .await
        .unwrap()
        .unwrap();
    tour(&client).await;
    typed_mistakes(&client).await;
    client.cancel().await.unwrap();

    // The admin endpoints beside /mcp count what the tour did.
    let base = demo.url.trim_end_matches("/mcp");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "mcp_tool_calls_total{tool=\"weather\",outcome=\"cache_hit\"} 1",
        "mcp_tool_calls_total{tool=\"append_note\",outcome=\"ok\"} 2",
        "mcp_tool_calls_total{tool=\"fx_rate\",outcome=\"tool_error\"} 1",
        "mcp_tool_calls_total{tool=\"unknown\",outcome=\"error\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in /metrics:\n{metrics}"
        );
    }
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let stats: Value = reqwest::get(format!("{base}/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["tools"]["weather"]["outcomes"]["cache_hit"], 1,
        "{stats}"
    );
}

#[tokio::test]
async fn the_bare_demo_has_no_stack() {
    let demo = HttpDemo::start(&["--bare"]).await;
    let transport = StreamableHttpClientTransport::from_uri(demo.url.clone());
    let client = tokio::time::timeout(HANG, ().serve(transport))
        .await
        .unwrap()
        .unwrap();
    call(&client, "weather", json!({"city": "Oslo"})).await;
    let again = call(&client, "weather", json!({"city": "Oslo"})).await;
    assert!(again.meta.is_none(), "no cache without the stack");
    client.cancel().await.unwrap();
    let base = demo.url.trim_end_matches("/mcp");
    let status = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

/// The raw cases: what only a hand-written JSON-RPC message can send.
fn assert_invalid_params(response: &Value, needle: &str) {
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("expected an error: {response}"));
    assert_eq!(error["code"], -32602, "{response}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn stdio_raw_bad_input() {
    let mut s = RawStdio::start().await;
    let r = s
        .request(
            2,
            "tools/call",
            json!({"name": "weather", "arguments": "Oslo"}),
        )
        .await;
    assert_invalid_params(&r, "`arguments` must be a JSON object, got a string");
    let r = s
        .request(
            3,
            "tools/call",
            json!({"name": "weather", "arguments": ["Oslo"]}),
        )
        .await;
    assert_invalid_params(&r, "got an array");
    let r = s.request(4, "tools/call", json!({"arguments": {}})).await;
    assert_invalid_params(&r, "`name` is missing");
    let r = s
        .request(5, "tools/call", json!({"name": "nope", "arguments": {}}))
        .await;
    assert_invalid_params(&r, "tool not found");
    let r = s.request(6, "tools/call", json!({"name": "weather"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let r = s
        .request(
            7,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "alive"}}),
        )
        .await;
    assert_eq!(r["result"]["content"][0]["text"], "alive", "{r}");
}

#[tokio::test]
async fn http_raw_bad_input() {
    let demo = HttpDemo::start(&[]).await;
    let s = RawHttp::start(&demo.url).await;
    let r = s
        .request(2, "tools/call", json!({"name": "weather", "arguments": 42}))
        .await;
    assert_invalid_params(&r, "`arguments` must be a JSON object, got a number");
    let r = s
        .request(3, "tools/call", json!({"name": 7, "arguments": {}}))
        .await;
    assert_invalid_params(&r, "`name` must be a string");
    let r = s
        .request(4, "tools/call", json!({"name": "nope", "arguments": {}}))
        .await;
    assert_invalid_params(&r, "tool not found");
    let r = s
        .request(
            5,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "alive"}}),
        )
        .await;
    assert_eq!(r["result"]["content"][0]["text"], "alive", "{r}");
}

/// The demo over HTTP shows both scopes side by side: `weather` is public (one entry for
/// every caller), `fx_rate` private (one per caller: per legacy session here, and none at
/// all for anonymous stateless callers).
#[tokio::test]
async fn public_hits_are_shared_and_private_results_stay_with_their_caller() {
    let demo = HttpDemo::start(&[]).await;
    let hit = |r: &Value| {
        assert!(r.get("result").is_some(), "{r}");
        r["result"]["_meta"]["io.github.mcp-tower/cache"]["hit"] == true
    };
    let (alice, bob) = (
        RawHttp::start(&demo.url).await,
        RawHttp::start(&demo.url).await,
    );
    let weather = json!({"name": "weather", "arguments": {"city": "Bergen"}});
    let fx = json!({"name": "fx_rate", "arguments": {"from": "EUR", "to": "SEK"}});
    assert!(!hit(&alice.request(2, "tools/call", weather.clone()).await));
    assert!(
        hit(&bob.request(2, "tools/call", weather.clone()).await),
        "public: shared"
    );
    assert!(!hit(&alice.request(3, "tools/call", fx.clone()).await));
    assert!(
        hit(&alice.request(4, "tools/call", fx.clone()).await),
        "same caller"
    );
    assert!(
        !hit(&bob.request(3, "tools/call", fx.clone()).await),
        "private: not bob's"
    );

    // Anonymous stateless (2026-07-28) callers: the public entry, but no private one.
    let stateless = |id: u64, params: &Value| {
        let mut params = params.clone();
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "anon", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}
        });
        let name = params["name"].as_str().unwrap().to_owned();
        let url = demo.url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", name)
                .json(
                    &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}),
                )
                .send()
                .await
                .unwrap();
            common::jsonrpc_body(response).await
        }
    };
    assert!(hit(&stateless(5, &weather).await));
    assert!(!hit(&stateless(6, &fx).await));
    assert!(
        !hit(&stateless(7, &fx).await),
        "anonymous callers share nothing private"
    );
    let stats: Value = reqwest::get(demo.url.replace("/mcp", "/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cache = stats["layers"]["cache"].clone();
    assert_eq!(cache["bypassed_anonymous"], 2, "{stats}");
}
