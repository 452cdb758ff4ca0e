//! Channel limits against the in-process server with a `MaxSessions`-like limit: a full
//! connection makes the pool open another, a refused channel is asked for again on another
//! connection, the SFTP session's channel counts, and per host a bounded queue turns calls
//! away (busy) or gives up on them (queue timeout).
//!
//! Real sockets, real time: events are ordered with the server's counters and its
//! `wait-for` barrier (no sleeps); the figures checked are connections and channels.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use mcp_tower_core::error::{ErrorKind, codes};
use mcp_tower_pool::PoolConfig;
use mcp_tower_ssh::{
    SshConfig, SshError, SshPool,
    testing::{TestServer, write_private_key},
};
use serde_json::Value;
use tempfile::TempDir;

struct Fixture {
    server: TestServer,
    _dir: TempDir,
    key_file: PathBuf,
    known_hosts: PathBuf,
}

impl Fixture {
    async fn new() -> Self {
        let server = TestServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("id_ed25519");
        write_private_key(server.client_key(), &key_file).unwrap();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line())).unwrap();
        Self {
            server,
            _dir: dir,
            key_file,
            known_hosts,
        }
    }

    /// Up to `max` connections to the one host `box`, nothing kept warm, no pings.
    fn config(&self, max: usize) -> SshConfig {
        SshConfig::default()
            .with_exec_timeout(Duration::from_secs(20))
            .with_known_hosts(&self.known_hosts)
            .with_pool(
                PoolConfig::default()
                    .with_min(0)
                    .with_max(max)
                    .with_health_interval(Duration::ZERO)
                    .with_connect_backoff(Duration::ZERO),
            )
            .with_host("box", self.server.profile(&self.key_file))
    }
}

/// Runs `n` copies of `command` on `box` at once; every result.
async fn parallel(ssh: &SshPool, n: usize, command: &str) -> Vec<Result<bool, SshError>> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let ssh = ssh.clone();
            let command = command.to_owned();
            tokio::spawn(async move { ssh.exec("box", &command).await.map(|o| o.success()) })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

#[tokio::test]
async fn eleven_parallel_execs_with_ten_channels_per_connection_make_exactly_two_connections() {
    let f = Fixture::new().await;
    f.server.set_max_sessions(10);
    let ssh = SshPool::new(f.config(4)).unwrap();
    // `wait-for 11` ends only once eleven commands run at the same time: all eleven must
    // hold a channel at once, which one connection of ten cannot give.
    for result in parallel(&ssh, 11, "wait-for 11").await {
        assert!(result.unwrap());
    }
    let stats = f.server.stats();
    assert_eq!(stats.connections, 2, "a second connection for the eleventh");
    assert_eq!(
        stats.channels_refused, 0,
        "no channel asked beyond the limit"
    );
    assert_eq!(stats.peak_channels, 10);
    assert_eq!(stats.peak_running, 11);
    assert_eq!(ssh.stats().key("box").unwrap().connects, 2);
    ssh.shutdown().await;
}

#[tokio::test]
async fn a_channel_the_server_refuses_is_asked_for_again_on_another_connection() {
    // The server takes two channels per connection; the client believes ten.
    let f = Fixture::new().await;
    f.server.set_max_sessions(2);
    let ssh = SshPool::new(f.config(2)).unwrap();
    for result in parallel(&ssh, 3, "wait-for 3").await {
        assert!(
            result.unwrap(),
            "the refused exec ran on the second connection"
        );
    }
    let stats = f.server.stats();
    assert_eq!(
        (
            stats.connections,
            stats.channels_refused,
            stats.peak_running
        ),
        (2, 1, 3)
    );
    ssh.shutdown().await;
}

#[tokio::test]
async fn a_refusal_on_every_connection_is_busy_for_the_client() {
    let f = Fixture::new().await;
    f.server.set_max_sessions(0);
    let ssh = SshPool::new(f.config(2)).unwrap();
    let err = ssh.exec("box", "true").await.unwrap_err();
    assert!(matches!(err, SshError::ChannelRefused { .. }), "{err}");
    assert_eq!(err.code(), "channel_refused");
    let data = err.to_error_data("ssh_exec");
    assert_eq!(data.code, codes::BUSY);
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::Busy));
    // Asked twice (once more on another connection), then given up.
    let stats = f.server.stats();
    assert_eq!((stats.channels_refused, stats.execs), (2, 0));
    ssh.shutdown().await;
}

#[tokio::test]
async fn with_every_connection_full_at_pool_max_calls_wait_for_a_channel() {
    let f = Fixture::new().await;
    f.server.set_max_sessions(2);
    let ssh = SshPool::new(f.config(1).with_max_channels_per_connection(2)).unwrap();
    assert_eq!(
        ssh.host_load("box").unwrap().limit,
        2,
        "pool.max × channels"
    );
    let ssh = SshPool::new(
        f.config(1)
            .with_max_channels_per_connection(2)
            .with_host_limit(20, 0, Duration::from_secs(30)),
    )
    .unwrap();
    for result in parallel(&ssh, 20, "true").await {
        assert!(result.unwrap());
    }
    let stats = f.server.stats();
    assert_eq!(
        (stats.connections, stats.execs, stats.channels_refused),
        (1, 20, 0)
    );
    assert!(stats.peak_channels <= 2);
    ssh.shutdown().await;
}

#[tokio::test]
async fn the_sftp_session_takes_one_of_the_channels() {
    let f = Fixture::new().await;
    f.server.set_max_sessions(3);
    let ssh = SshPool::new(f.config(2).with_max_channels_per_connection(3)).unwrap();
    ssh.upload("box", "/tmp/x", b"x").await.unwrap();
    // SFTP holds one channel of the first connection: two execs fit beside it, the third
    // goes to a second connection (not refused by the server).
    for result in parallel(&ssh, 3, "wait-for 3").await {
        assert!(result.unwrap());
    }
    let stats = f.server.stats();
    assert_eq!(
        (
            stats.connections,
            stats.channels_refused,
            stats.peak_channels
        ),
        (2, 0, 3)
    );
    ssh.shutdown().await;
}

/// Yields until `host`'s queue holds `n` calls (bounded; no sleep).
async fn queued(ssh: &SshPool, n: usize) {
    for _ in 0..100_000 {
        if ssh.host_load("box").unwrap().queued >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the queue never held {n} calls");
}

#[tokio::test]
async fn calls_beyond_the_host_limit_and_queue_are_busy_at_once() {
    let f = Fixture::new().await;
    let ssh = SshPool::new(f.config(1).with_host_limit(1, 1, Duration::from_secs(60))).unwrap();
    let running = tokio::spawn({
        let ssh = ssh.clone();
        async move { ssh.exec("box", "hang").await }
    });
    f.server.wait_running(1).await;
    let waiting = tokio::spawn({
        let ssh = ssh.clone();
        async move { ssh.exec("box", "echo queued").await }
    });
    queued(&ssh, 1).await;
    let err = ssh.exec("box", "true").await.unwrap_err();
    match &err {
        SshError::HostBusy {
            host,
            in_flight,
            queued,
            retry_after,
        } => {
            assert_eq!((host.as_str(), *in_flight, *queued), ("box", 1, 1));
            assert_eq!(*retry_after, Duration::from_millis(500), "two waves ahead");
        }
        other => panic!("not busy: {other}"),
    }
    let data = err.to_error_data("ssh_exec");
    assert_eq!(data.code, codes::BUSY);
    let fields = data.data.unwrap();
    assert_eq!(fields["retryAfterMs"], Value::from(500));
    assert_eq!(fields["sshError"], Value::from("host_busy"));
    assert_eq!(f.server.stats().execs, 1, "the busy call sent nothing");
    // The running call ends: the queued one runs.
    running.abort();
    let out = waiting.await.unwrap().unwrap();
    assert_eq!(out.stdout_lossy(), "queued\n");
    assert_eq!(f.server.stats().connections, 1);
    ssh.shutdown().await;
}

#[tokio::test]
async fn a_queued_call_past_the_queue_timeout_gets_queue_timeout() {
    let f = Fixture::new().await;
    let timeout = Duration::from_millis(200);
    let ssh = SshPool::new(f.config(1).with_host_limit(1, 4, timeout)).unwrap();
    let running = tokio::spawn({
        let ssh = ssh.clone();
        async move { ssh.exec("box", "hang").await }
    });
    f.server.wait_running(1).await;
    let err = ssh.exec("box", "true").await.unwrap_err();
    let SshError::QueueTimeout { host, waited, .. } = &err else {
        panic!("not a queue timeout: {err}");
    };
    assert_eq!(host, "box");
    assert!(*waited >= timeout, "{waited:?}");
    let data = err.to_error_data("ssh_exec");
    assert_eq!(data.code, codes::QUEUE_TIMEOUT);
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::QueueTimeout));
    let fields = data.data.unwrap();
    assert!(fields["retryAfterMs"].as_u64().unwrap() > 0);
    assert_eq!(fields["sshError"], Value::from("queue_timeout"));
    assert_eq!(f.server.stats().execs, 1, "the timed-out call sent nothing");
    let load = ssh.host_load("box").unwrap();
    assert_eq!((load.in_flight, load.queued), (1, 0));
    running.abort();
    ssh.shutdown().await;
}

#[test]
fn channel_and_host_limits_from_toml_with_validation() {
    let cfg: SshConfig = toml::from_str(
        r#"
        known_hosts = "/etc/mcp/known_hosts"
        max_channels_per_connection = 8
        max_in_flight_per_host = 12
        host_queue = 3
        host_queue_timeout = "2s"
        [hosts.web-1]
        host = "10.0.0.5"
        user = "deploy"
        password = "pw"
        max_channels_per_connection = 4
        "#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.max_channels_per_connection, 8);
    assert_eq!((cfg.host_limit(), cfg.host_queue), (12, 3));
    assert_eq!(cfg.host_queue_timeout, Duration::from_secs(2));
    assert_eq!(cfg.hosts["web-1"].max_channels_per_connection, Some(4));
    let defaults = SshConfig::default();
    assert_eq!(
        defaults.max_channels_per_connection, 10,
        "OpenSSH's MaxSessions"
    );
    assert_eq!(defaults.pool.max, 4);
    assert_eq!(defaults.host_limit(), 40, "pool.max × channels");
    assert_eq!(
        (defaults.host_queue, defaults.host_queue_timeout),
        (64, Duration::from_secs(5))
    );
    let no_section: SshConfig = toml::from_str("").unwrap();
    assert_eq!(no_section.pool.max, 4);
    for (bad, field) in [
        (
            "max_channels_per_connection = 0",
            "ssh.max_channels_per_connection",
        ),
        ("max_in_flight_per_host = 0", "ssh.max_in_flight_per_host"),
        ("host_queue_timeout = \"0s\"", "ssh.host_queue_timeout"),
        (
            "[hosts.x]\nhost = \"h\"\nuser = \"u\"\npassword = \"p\"\nmax_channels_per_connection = 0",
            "ssh.hosts.x.max_channels_per_connection",
        ),
    ] {
        let cfg: SshConfig = toml::from_str(bad).unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(err.contains(field), "{bad}: {err}");
    }
    let no_queue: SshConfig =
        toml::from_str("host_queue = 0\nhost_queue_timeout = \"0s\"").unwrap();
    no_queue.validate().unwrap();
}
