//! The memory ceiling of `ssh_read_file`: 64 concurrent reads of a 15 MiB file, through the
//! full `McpStack` (cache and dedup off, so every call reads) and rmcp's client over an
//! in-memory pipe, against the in-process SSH server. Every call ends as a result, a busy
//! error or a cap error — never an abort — and the process's peak resident memory grows by
//! less than a bound computed from the cap and the download limit.
//!
//! The peak is the kernel's (`VmHWM` in `/proc/self/status`, reset through
//! `/proc/self/clear_refs` before each round), so this file holds this one test: another
//! test running alongside would count in it. It counts everything in the process — the SSH
//! server, the MCP server and the client — so the bound is generous; without the limit the
//! 64 reads take several times more (see `docs/ssh.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::time::Duration;

use mcp_tower::error::codes;
use mcp_tower::{LayeredServer, McpStack, StackConfig};
use mcp_tower_examples::ssh_tools::SshTools;
use mcp_tower_pool::PoolConfig;
use mcp_tower_ssh::{
    SshConfig, SshPool,
    testing::{TestServer, write_private_key},
};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult},
    service::{Peer, RunningService},
};
use serde_json::json;

const MIB: u64 = 1 << 20;
const FILE_BYTES: usize = 15 << 20;
const CALLS: usize = 64;

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Resets the peak (`VmHWM`) to the current resident size; false if the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Outcomes {
    read: usize,
    busy: usize,
    too_large: usize,
}

async fn start(
    server: &TestServer,
    dir: &std::path::Path,
    ssh: SshConfig,
) -> RunningService<RoleClient, ()> {
    let key_file = dir.join("id_ed25519");
    write_private_key(server.client_key(), &key_file).unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, server.known_hosts_line()).unwrap();
    let ssh = SshPool::new(
        ssh.with_known_hosts(&known_hosts)
            .with_pool(
                PoolConfig::default()
                    .with_min(0)
                    .with_health_interval(Duration::ZERO),
            )
            .with_host("box", server.profile(&key_file)),
    )
    .unwrap();
    // Every call reads: no copy served from the cache, no call folded into another.
    let stack =
        StackConfig::from_toml_str("[cache]\nenabled = false\n[dedup]\nenabled = false\n").unwrap();
    let layered: LayeredServer<SshTools, _> = McpStack::from_config(stack)
        .unwrap()
        .serve(SshTools::new(ssh));
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let running = layered.serve(server_io).await.unwrap();
        let _ = running.waiting().await;
    });
    ().serve(client_io).await.unwrap()
}

/// 64 concurrent `ssh_read_file` of the big file; each answer is checked and dropped.
async fn flood(peer: &Peer<RoleClient>) -> Outcomes {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let peer = peer.clone();
        calls.spawn(async move {
            let args = json!({"host": "box", "path": "/var/log/big.log"});
            let serde_json::Value::Object(args) = args else {
                unreachable!()
            };
            tokio::time::timeout(
                Duration::from_secs(120),
                peer.call_tool(CallToolRequestParams::new("ssh_read_file").with_arguments(args)),
            )
            .await
            .expect("a call hung")
        });
    }
    let mut outcomes = Outcomes::default();
    while let Some(joined) = calls.join_next().await {
        match joined.expect("a call task panicked") {
            Ok(result) => classify(&result, &mut outcomes),
            Err(rmcp::ServiceError::McpError(e)) if e.code == codes::BUSY => outcomes.busy += 1,
            Err(e) => panic!("neither a result nor busy: {e}"),
        }
    }
    outcomes
}

fn classify(result: &CallToolResult, outcomes: &mut Outcomes) {
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>();
    if result.is_error == Some(true) {
        assert!(
            text.iter().any(|t| t.starts_with("file_too_large:")),
            "an unexpected tool error: {text:?}"
        );
        outcomes.too_large += 1;
    } else {
        assert_eq!(text.len(), 1, "one text block");
        assert_eq!(text[0].len(), FILE_BYTES, "the whole file");
        assert_eq!(result.structured_content, None, "no second copy");
        outcomes.read += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_reads_of_a_15_mib_file_stay_under_the_memory_bound() {
    let server = TestServer::start().await.unwrap();
    // Text, so a successful read is a text block (JSON escaping adds nothing to it).
    let line = b"2026-12-08T00:00:00Z mcp-tower ssh memory ceiling test line\n";
    let file: Vec<u8> = line.iter().copied().cycle().take(FILE_BYTES).collect();
    server.put_file("/var/log/big.log", file);
    let dir = tempfile::tempdir().unwrap();

    // Round 1, the defaults (8 MiB cap): every call is refused by size, nothing is read.
    let client = start(&server, dir.path(), SshConfig::default()).await;
    let baseline = status_bytes("VmRSS:");
    assert!(
        reset_peak(),
        "/proc/self/clear_refs is needed to measure the peak"
    );
    let outcomes = flood(client.peer()).await;
    let growth = status_bytes("VmHWM:").saturating_sub(baseline);
    eprintln!(
        "defaults: {outcomes:?}, peak RSS growth {} MiB",
        growth / MIB
    );
    assert_eq!(outcomes.read, 0);
    assert_eq!(outcomes.too_large + outcomes.busy, CALLS);
    assert!(outcomes.too_large > 0);
    assert_eq!(server.stats().sftp_bytes_sent, 0, "no file byte was read");
    assert!(growth < 64 * MIB, "{} MiB for 64 refusals", growth / MIB);
    client.cancel().await.unwrap();

    // Round 2, a cap the file fits under (16 MiB), 2 reads at once and 4 waiting: the rest
    // are busy, and memory is bounded by the reads allowed, not by the calls made.
    let (limit, queue) = (2u64, 4u64);
    let cap = 16 * MIB;
    let ssh = SshConfig::default()
        .with_max_file_bytes(cap)
        .with_download_limit(limit as usize, queue as usize);
    let client = start(&server, dir.path(), ssh).await;
    let baseline = status_bytes("VmRSS:");
    assert!(reset_peak());
    let outcomes = flood(client.peer()).await;
    let growth = status_bytes("VmHWM:").saturating_sub(baseline);
    eprintln!(
        "cap 16 MiB, {limit} reading + {queue} queued: {outcomes:?}, peak RSS growth {} MiB",
        growth / MIB
    );
    assert_eq!(outcomes.too_large, 0);
    assert_eq!(outcomes.read + outcomes.busy, CALLS);
    assert!(outcomes.read >= 1, "{outcomes:?}");
    assert!(outcomes.busy >= 1, "{outcomes:?}");
    // Each read in flight may hold the bytes a few times over (the download, the JSON the
    // server writes, the client's read buffer and its parsed copy): 6 copies of the cap per
    // read allowed at once, plus 128 MiB for buffers, stay well under 1 GiB. 64 unlimited
    // reads need several GiB.
    let bound = (limit * 6 * cap + 128 * MIB).min(1 << 30);
    assert!(
        growth < bound,
        "peak RSS grew {} MiB, over the bound of {} MiB",
        growth / MIB,
        bound / MIB
    );
    client.cancel().await.unwrap();
}
