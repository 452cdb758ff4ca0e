//! The HTTP edge's memory ceiling, on the demo binary as a separate process: 200 clients
//! each send a 4 MiB `tools/call` at once. Every one gets either its answer or the busy
//! error (503 from the body budget, before its body is read); the server is not killed and
//! its peak RSS stays under 384 MiB: the default budget (64 MiB of bodies) times the few
//! copies a request makes (bytes, parsed arguments, the answer), plus the process. Measured
//! here: 102 MiB with the budget; 676 MiB (and 106 s instead of 10) with the budget lifted
//! (`MCP_TOWER_HTTP__MAX_BODY_BYTES_IN_FLIGHT=10737418240`), so the bound does tell them
//! apart.
//!
//! The requests are raw HTTP/1.1 with `Expect: 100-continue`, as curl sends large bodies:
//! a client writes its body only once the server asked for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Stdio, time::Duration};

use common::HANG;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Command,
};

const CLIENTS: usize = 200;
const TEXT_BYTES: usize = 4 * 1024 * 1024 - 4096;
const PEAK_RSS_BOUND: u64 = 384 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Answered,
    Busy,
}

/// Reads one response head: the status and the headers (lower-cased names).
async fn head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return (status, headers);
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

async fn one_client(addr: String, n: usize, filler: &'static [u8]) -> Outcome {
    let prefix = format!(
        r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"echo","_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{{"name":"memory","version":"1"}},"io.modelcontextprotocol/clientCapabilities":{{}}}},"arguments":{{"text":"client {n:04} "#
    );
    let suffix = r#""}}}"#;
    let length = prefix.len() + filler.len() + suffix.len();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let request_head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n\
         mcp-method: tools/call\r\nmcp-name: echo\r\ncontent-length: {length}\r\n\
         expect: 100-continue\r\nconnection: close\r\n\r\n"
    );
    reader
        .get_mut()
        .write_all(request_head.as_bytes())
        .await
        .unwrap();
    let (mut status, mut headers) = head(&mut reader).await;
    if status == 100 {
        let stream = reader.get_mut();
        stream.write_all(prefix.as_bytes()).await.unwrap();
        stream.write_all(filler).await.unwrap();
        stream.write_all(suffix.as_bytes()).await.unwrap();
        (status, headers) = head(&mut reader).await;
    }
    let mut body = Vec::new();
    reader.read_to_end(&mut body).await.unwrap();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    assert!(!chunked, "a JSON answer with a length was expected");
    let message: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&body)));
    let busy = mcp_tower::error::codes::BUSY.0;
    match status {
        503 => {
            assert_eq!(message["error"]["code"], busy, "{message}");
            assert!(headers.iter().any(|(k, _)| k == "retry-after"));
            Outcome::Busy
        }
        200 if message["error"]["code"] == json!(busy) => Outcome::Busy,
        200 => {
            let text = message["result"]["content"][0]["text"].as_str().unwrap();
            assert!(
                text.starts_with(&format!("client {n:04} ")),
                "another's answer"
            );
            assert_eq!(text.len(), TEXT_BYTES + 12);
            Outcome::Answered
        }
        other => panic!("{other}: {message}"),
    }
}

/// The process's peak resident set (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_4_mib_bodies_at_once_get_answers_or_busy_and_memory_stays_bounded() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc to read the server's peak RSS from");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--http", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("listening on ") {
                return url.to_owned();
            }
        }
        panic!("demo exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let pid = child.id().unwrap();
    let before = peak_rss(pid);

    let filler: &'static [u8] = vec![b'x'; TEXT_BYTES].leak();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(one_client(addr.clone(), n, filler)))
        .collect();
    let mut answered = 0;
    let mut busy = 0;
    for client in clients {
        match tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("a client hung")
            .unwrap()
        {
            Outcome::Answered => answered += 1,
            Outcome::Busy => busy += 1,
        }
    }
    let peak = peak_rss(pid);
    eprintln!(
        "{answered} answered, {busy} busy; server peak RSS {} MiB (before {} MiB)",
        peak >> 20,
        before >> 20
    );
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    assert_eq!(answered + busy, CLIENTS);
    assert!(answered > 0, "nothing got through");
    assert!(
        peak < PEAK_RSS_BOUND,
        "server peak RSS {} MiB over the 384 MiB bound",
        peak >> 20
    );
}
