//! Helpers shared by the examples' integration tests: spawning the demo binary, and raw
//! JSON-RPC over stdio and HTTP for the inputs a typed client cannot send.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{process::Stdio, time::Duration};

use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// A bound on every wait in these tests: generous, so it only trips on a hang.
pub const HANG: Duration = Duration::from_secs(30);

/// The demo binary's command with fast simulated latencies.
pub fn demo_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_demo"));
    cmd.args(["--weather-latency", "5ms"]).kill_on_drop(true);
    cmd
}

/// A demo server on streamable HTTP on a free port; killed on drop.
pub struct HttpDemo {
    pub child: Child,
    pub url: String,
}

impl HttpDemo {
    pub async fn start(extra_args: &[&str]) -> Self {
        let mut cmd = demo_command();
        cmd.args(["--http", "127.0.0.1:0"])
            .args(extra_args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("spawn demo");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(HANG, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.to_owned();
                }
            }
            panic!("demo exited before listening");
        })
        .await
        .expect("demo did not start listening");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url }
    }
}

/// A raw JSON-RPC session over the demo's stdio.
pub struct RawStdio {
    _child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl RawStdio {
    pub async fn start() -> Self {
        let mut child = demo_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut s = Self {
            _child: child,
            stdin,
            stdout,
        };
        let init = s
            .request(
                1,
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "1"}
                }),
            )
            .await;
        assert!(init.get("result").is_some(), "{init}");
        s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        s
    }

    pub async fn send(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends a request and returns the response with the same id (skipping notifications).
    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        tokio::time::timeout(HANG, async {
            loop {
                let line = self
                    .stdout
                    .next_line()
                    .await
                    .unwrap()
                    .expect("demo closed stdout");
                let message: Value = serde_json::from_str(&line).unwrap();
                if message.get("id") == Some(&json!(id)) {
                    return message;
                }
            }
        })
        .await
        .expect("no response")
    }
}

/// Reads a JSON-RPC response out of an HTTP response body (JSON or SSE).
pub async fn jsonrpc_body(response: reqwest::Response) -> Value {
    let is_sse = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    if !is_sse {
        return serde_json::from_str(&text).unwrap();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC response in {text}"))
}

/// A raw JSON-RPC session over the demo's streamable HTTP endpoint.
pub struct RawHttp {
    client: reqwest::Client,
    url: String,
    session: Option<String>,
}

impl RawHttp {
    pub async fn start(url: &str) -> Self {
        let mut s = Self {
            client: reqwest::Client::new(),
            url: url.to_owned(),
            session: None,
        };
        let response = s
            .post(json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
            }))
            .await;
        s.session = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let init = jsonrpc_body(response).await;
        assert!(init.get("result").is_some(), "{init}");
        let ack = s
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert!(ack.status().is_success(), "{}", ack.status());
        s
    }

    pub async fn post(&self, message: Value) -> reqwest::Response {
        let mut req = self
            .client
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&message);
        if let Some(session) = &self.session {
            req = req.header("mcp-session-id", session);
        }
        tokio::time::timeout(HANG, req.send())
            .await
            .expect("HTTP hang")
            .unwrap()
    }

    pub async fn request(&self, id: u64, method: &str, params: Value) -> Value {
        let response = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        jsonrpc_body(response).await
    }
}

/// The text of a tool result's first content block.
pub fn text_of(result: &CallToolResult) -> String {
    result.content[0]
        .as_text()
        .expect("text content")
        .text
        .clone()
}
