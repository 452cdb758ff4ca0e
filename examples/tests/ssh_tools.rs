//! The `ssh_tools` server behind the full `McpStack`, driven by rmcp's client over an
//! in-memory pipe, against the in-process SSH server: the tools and their annotations, exec
//! never cached, reads cached, SFTP round trip, unknown hosts, rejected host keys, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use mcp_tower::{LayeredServer, McpStack};
use mcp_tower_examples::ssh_tools::SshTools;
use mcp_tower_pool::PoolConfig;
use mcp_tower_ssh::{
    HostProfile, Secret, SshConfig, SshPool,
    testing::{TestServer, random_ed25519, write_private_key},
};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ResourceContents},
    service::RunningService,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const HANG: Duration = Duration::from_secs(30);

struct Setup {
    server: TestServer,
    _dir: TempDir,
    known_hosts: PathBuf,
    client: RunningService<RoleClient, ()>,
    ssh: SshPool,
}

async fn setup(trust_the_server: bool) -> Setup {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("id_ed25519");
    write_private_key(server.client_key(), &key_file).unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let line = if trust_the_server {
        server.known_hosts_line()
    } else {
        format!(
            "[127.0.0.1]:{} {}",
            server.port(),
            random_ed25519().public_key().to_openssh().unwrap()
        )
    };
    std::fs::write(&known_hosts, line).unwrap();
    let config = SshConfig::default()
        .with_known_hosts(&known_hosts)
        .with_pool(
            PoolConfig::default()
                .with_min(0)
                .with_health_interval(Duration::ZERO)
                .with_connect_backoff(Duration::ZERO),
        )
        .with_host(
            "box",
            server
                .profile(&key_file)
                .with_password(Secret::new("pw-never-shown")),
        )
        .with_host(
            "other",
            HostProfile::new("127.0.0.1", server.port(), "nobody")
                .with_password(Secret::new("pw-never-shown")),
        );
    let ssh = SshPool::new(config).unwrap();
    let layered: LayeredServer<SshTools, _> = McpStack::with_defaults()
        .unwrap()
        .serve(SshTools::new(ssh.clone()));
    if let Some(metrics) = layered.handles().metrics.as_ref() {
        metrics.add_report(Arc::new(ssh.handle()));
    }
    let metrics = layered.handles().metrics.clone();
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let running = layered.serve(server_io).await.unwrap();
        let _ = running.waiting().await;
        drop(metrics);
    });
    let client = ().serve(client_io).await.unwrap();
    Setup {
        server,
        _dir: dir,
        known_hosts,
        client,
        ssh,
    }
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: Value,
) -> Result<CallToolResult, rmcp::ServiceError> {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    tokio::time::timeout(
        HANG,
        client.call_tool(CallToolRequestParams::new(tool).with_arguments(args)),
    )
    .await
    .expect("call hung")
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one blob of a result: its bytes (decoded), its URI and MIME type.
fn blob_of(result: &CallToolResult) -> (Vec<u8>, String, Option<String>) {
    assert_eq!(result.content.len(), 1, "one content block: {result:?}");
    let Some(ResourceContents::BlobResourceContents {
        blob,
        uri,
        mime_type,
        ..
    }) = result.content[0].as_resource().map(|r| r.resource.clone())
    else {
        panic!("not a blob: {result:?}")
    };
    (
        data_encoding::BASE64.decode(blob.as_bytes()).unwrap(),
        uri,
        mime_type,
    )
}

fn cache_hit(result: &CallToolResult) -> bool {
    result
        .meta
        .as_ref()
        .and_then(|m| m.0.get("io.github.mcp-tower/cache"))
        .and_then(|c| c.get("hit"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[tokio::test]
async fn tools_are_listed_with_honest_annotations() {
    let s = setup(true).await;
    let tools = s.client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["sftp_download", "sftp_upload", "ssh_exec", "ssh_read_file"]
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
    assert_eq!(ann("ssh_exec").read_only_hint, Some(false));
    assert_eq!(ann("ssh_exec").idempotent_hint, Some(false));
    assert_eq!(ann("ssh_read_file").read_only_hint, Some(true));
    assert_eq!(ann("sftp_download").read_only_hint, Some(true));
    assert_eq!(ann("sftp_upload").read_only_hint, Some(false));
    assert_eq!(ann("sftp_upload").idempotent_hint, Some(true));
}

#[tokio::test]
async fn exec_runs_every_time_and_is_never_cached() {
    let s = setup(true).await;
    for _ in 0..2 {
        let result = call(
            &s.client,
            "ssh_exec",
            json!({"host": "box", "command": "echo hi"}),
        )
        .await
        .unwrap();
        assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
        assert!(!cache_hit(&result));
        let out = result.structured_content.unwrap();
        assert_eq!(out["stdout"], "hi\n");
        assert_eq!(out["exit_status"], 0);
        assert_eq!(out["truncated"], false);
    }
    assert_eq!(s.server.stats().execs, 2, "both calls ran the command");
    assert_eq!(s.server.stats().connections, 1);
    let failed = call(
        &s.client,
        "ssh_exec",
        json!({"host": "box", "command": "fail nope"}),
    )
    .await
    .unwrap();
    let out = failed.structured_content.unwrap();
    assert_eq!(
        (out["exit_status"].clone(), out["stderr"].clone()),
        (json!(3), json!("nope\n"))
    );
}

#[tokio::test]
async fn reads_are_cached_and_sftp_round_trips_bytes() {
    let s = setup(true).await;
    s.server.put_file("/etc/motd", "welcome\n");
    let first = call(
        &s.client,
        "ssh_read_file",
        json!({"host": "box", "path": "/etc/motd"}),
    )
    .await
    .unwrap();
    // The text, once: one text block and no structured copy of it.
    assert_eq!(first.content.len(), 1);
    assert_eq!(text_of(&first), "welcome\n");
    assert_eq!(first.structured_content, None);
    s.server.put_file("/etc/motd", "changed\n");
    let again = call(
        &s.client,
        "ssh_read_file",
        json!({"host": "box", "path": "/etc/motd"}),
    )
    .await
    .unwrap();
    assert!(
        cache_hit(&again),
        "ssh_read_file is read-only: served from the cache"
    );
    assert_eq!(text_of(&again), "welcome\n");

    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let b64 = data_encoding::BASE64.encode(&bytes);
    let up = call(
        &s.client,
        "sftp_upload",
        json!({"host": "box", "path": "/tmp/blob", "content": b64, "encoding": "base64"}),
    )
    .await
    .unwrap();
    assert_ne!(up.is_error, Some(true), "{}", text_of(&up));
    assert_eq!(s.server.file("/tmp/blob").unwrap(), bytes);
    let down = call(
        &s.client,
        "sftp_download",
        json!({"host": "box", "path": "/tmp/blob"}),
    )
    .await
    .unwrap();
    assert_eq!(down.structured_content, None, "the bytes once, as the blob");
    let (content, uri, mime) = blob_of(&down);
    assert_eq!(content, bytes);
    assert_eq!(uri, "sftp://box/tmp/blob");
    assert_eq!(mime.as_deref(), Some("application/octet-stream"));
    // ssh_read_file of a file that is not UTF-8: the same single blob, not lossy text.
    let read = call(
        &s.client,
        "ssh_read_file",
        json!({"host": "box", "path": "/tmp/blob"}),
    )
    .await
    .unwrap();
    assert_ne!(read.is_error, Some(true), "{}", text_of(&read));
    assert_eq!(read.structured_content, None);
    assert_eq!(blob_of(&read).0, bytes);
    assert_eq!(s.server.stats().sftp_sessions, 1);
}

#[tokio::test]
async fn bad_requests_are_tool_errors_the_caller_can_act_on() {
    let s = setup(true).await;
    let unknown = call(
        &s.client,
        "ssh_exec",
        json!({"host": "prod-db", "command": "true"}),
    )
    .await
    .unwrap();
    assert_eq!(unknown.is_error, Some(true));
    assert_eq!(
        text_of(&unknown),
        "unknown_host: unknown SSH host `prod-db`; the configured hosts are: box, other"
    );
    let missing = call(
        &s.client,
        "ssh_read_file",
        json!({"host": "box", "path": "/nope"}),
    )
    .await
    .unwrap();
    assert_eq!(missing.is_error, Some(true));
    assert_eq!(
        text_of(&missing),
        "no_such_file: SFTP download on `box` failed: no such file"
    );
    // Over the cap (8 MiB by default): the cap is named, not the path; nothing is read.
    s.server.put_file("/var/big.log", vec![b'x'; (8 << 20) + 1]);
    let big = call(
        &s.client,
        "ssh_read_file",
        json!({"host": "box", "path": "/var/big.log"}),
    )
    .await
    .unwrap();
    assert_eq!(big.is_error, Some(true));
    assert_eq!(
        text_of(&big),
        "file_too_large: the file is larger than the limit of 8388608 bytes (max_file_bytes): 8388609 bytes"
    );
    assert_eq!(s.server.stats().sftp_bytes_sent, 0);
    let bad_b64 = call(
        &s.client,
        "sftp_upload",
        json!({"host": "box", "path": "/x", "content": "%%%", "encoding": "base64"}),
    )
    .await
    .unwrap();
    assert_eq!(bad_b64.is_error, Some(true));
    let empty = call(
        &s.client,
        "ssh_exec",
        json!({"host": "box", "command": "  "}),
    )
    .await
    .unwrap();
    assert_eq!(empty.is_error, Some(true));
    // A missing argument: rejected before the tool runs (as a protocol or a tool error).
    match call(&s.client, "ssh_exec", json!({"host": "box"})).await {
        Err(_) => {}
        Ok(result) => assert_eq!(result.is_error, Some(true), "{}", text_of(&result)),
    }
    assert_eq!(s.server.stats().execs, 0);
}

#[tokio::test]
async fn unreachable_hosts_are_transient_upstream_errors_without_secrets() {
    let s = setup(false).await;
    let err = call(
        &s.client,
        "ssh_exec",
        json!({"host": "box", "command": "true"}),
    )
    .await
    .unwrap_err();
    let text = format!("{err:?} {err}");
    assert!(text.contains("-31053"), "upstream unavailable: {text}");
    assert!(
        text.contains("host_key_rejected: the host key of `box` was rejected"),
        "{text}"
    );
    let known_hosts = s.known_hosts.display().to_string();
    let port = s.server.port().to_string();
    let private = [
        "pw-never-shown",
        "127.0.0.1",
        port.as_str(),
        known_hosts.as_str(),
        "tester",
        "nobody",
    ];
    for p in private {
        assert!(!text.contains(p), "`{p}` reached the client: {text}");
    }
    assert_eq!(s.server.stats().logins, 0);

    std::fs::write(&s.known_hosts, s.server.known_hosts_line()).unwrap();
    let err = call(
        &s.client,
        "ssh_exec",
        json!({"host": "other", "command": "true"}),
    )
    .await
    .unwrap_err();
    let text = format!("{err:?} {err}");
    assert!(
        text.contains("auth_failed: login to `other` failed (tried: password)"),
        "{text}"
    );
    for p in private {
        assert!(!text.contains(p), "`{p}` reached the client: {text}");
    }
    // The host key is trusted now: box works.
    let ok = call(
        &s.client,
        "ssh_exec",
        json!({"host": "box", "command": "true"}),
    )
    .await
    .unwrap();
    assert_eq!(ok.structured_content.unwrap()["exit_status"], 0);
    let stats = s.ssh.stats();
    assert_eq!(stats.key("box").unwrap().connects, 1);
    assert!(stats.key("other").unwrap().failures >= 1);
}

#[test]
fn the_example_hosts_file_parses_and_validates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ssh_tools.toml");
    let config = mcp_tower_examples::ssh_tools::load_config(&path).unwrap();
    assert_eq!(
        config.hosts.keys().map(String::as_str).collect::<Vec<_>>(),
        ["db-1", "web-1"]
    );
    assert!(!config.insecure_accept_any_host_key);
    assert_eq!(config.hosts["web-1"].known_hosts_name(), "[127.0.0.1]:2222");
    // Its key files do not exist here: building the pool says which file, not a panic.
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { SshPool::new(config).map(drop) })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot load the private key of host"),
        "{err}"
    );
}
