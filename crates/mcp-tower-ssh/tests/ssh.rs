//! The SSH pool against an in-process russh server on 127.0.0.1 (the real protocol over
//! real sockets): exec, parallel execs on one connection, single-flight connect, many hosts,
//! idle reaping, restarts, host keys, output cap, timeout, SFTP, secrets.
//!
//! Real sockets and tokio's paused clock do not mix, so these tests run on real time; they
//! order events with the server's own counters (and its `wait-for` barrier), and bound every
//! wait generously.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use mcp_tower_core::{
    LayerReport,
    error::{ErrorKind, is_transient},
};
use mcp_tower_pool::PoolConfig;
use mcp_tower_ssh::{
    ExecLimits, HostKeyVerdict, HostProfile, Secret, SshConfig, SshError, SshPool,
    testing::{TEST_PASSWORD, TEST_USER, TestServer, random_ed25519, write_private_key},
};
use tempfile::TempDir;

/// A server, a client key file and a known_hosts file that trusts the server.
struct Fixture {
    server: TestServer,
    dir: TempDir,
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
            dir,
            key_file,
            known_hosts,
        }
    }

    fn profile(&self) -> HostProfile {
        self.server.profile(&self.key_file)
    }

    /// Pool config for tests: nothing kept warm, no pings, no connect backoff.
    fn config(&self) -> SshConfig {
        SshConfig::default()
            .with_known_hosts(&self.known_hosts)
            .with_pool(test_pool())
            .with_host("box", self.profile())
    }

    fn pool(&self) -> SshPool {
        SshPool::new(self.config()).unwrap()
    }
}

fn test_pool() -> PoolConfig {
    PoolConfig::default()
        .with_min(0)
        .with_health_interval(Duration::ZERO)
        .with_connect_backoff(Duration::ZERO)
}

/// Waits (bounded) until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn exec_reports_exit_status_stdout_and_stderr() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    let out = ssh.exec("box", "echo hello world").await.unwrap();
    assert_eq!(out.stdout, b"hello world\n");
    assert!(out.stderr.is_empty());
    assert_eq!(out.exit_status, Some(0));
    assert!(out.success() && !out.truncated);

    let out = ssh.exec("box", "fail disk full").await.unwrap();
    assert_eq!(out.stderr_lossy(), "disk full\n");
    assert_eq!(out.exit_status, Some(3));
    assert!(!out.success());

    assert_eq!(ssh.exec("box", "false").await.unwrap().exit_status, Some(1));
    let out = ssh.exec("box", "frobnicate").await.unwrap();
    assert_eq!(out.exit_status, Some(127));
    assert!(out.stderr_lossy().contains("unknown command"));

    let stats = f.server.stats();
    assert_eq!((stats.connections, stats.logins, stats.execs), (1, 1, 4));
    ssh.shutdown().await;
}

#[tokio::test]
async fn parallel_execs_run_at_once_over_one_connection() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    // `wait-for 10` exits only once ten commands run at the same time: this completes only
    // if the ten execs really are concurrent channels.
    let execs: Vec<_> = (0..10)
        .map(|_| {
            let ssh = ssh.clone();
            tokio::spawn(async move { ssh.exec("box", "wait-for 10").await })
        })
        .collect();
    for exec in execs {
        assert!(exec.await.unwrap().unwrap().success());
    }
    let stats = f.server.stats();
    assert_eq!(stats.connections, 1, "one connection carried every exec");
    assert_eq!(stats.peak_running, 10);
    assert_eq!(ssh.stats().key("box").unwrap().connects, 1);
}

#[tokio::test]
async fn a_hundred_concurrent_first_calls_make_one_connection() {
    let f = Fixture::new().await;
    // Ten at a time (one connection's channels), the other ninety waiting their turn.
    let ssh = SshPool::new(f.config().with_host_limit(10, 100, Duration::from_secs(60))).unwrap();
    let execs: Vec<_> = (0..100)
        .map(|_| {
            let ssh = ssh.clone();
            tokio::spawn(async move { ssh.exec("box", "true").await })
        })
        .collect();
    for exec in execs {
        assert!(exec.await.unwrap().unwrap().success());
    }
    let stats = f.server.stats();
    assert_eq!((stats.connections, stats.logins, stats.execs), (1, 1, 100));
    // A finished exec's channel slot is given back once the server confirmed the close.
    eventually("the last channels are given back", || {
        ssh.stats().key("box").unwrap().in_flight == 0
    })
    .await;
    let pool = ssh.stats();
    let key = pool.key("box").unwrap();
    assert_eq!((key.connects, key.connections, key.in_flight), (1, 1, 0));
}

#[tokio::test]
async fn ten_hosts_are_served_in_parallel_each_with_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let client_key = random_ed25519();
    let key_file = dir.path().join("id");
    write_private_key(&client_key, &key_file).unwrap();
    let mut servers = Vec::new();
    for _ in 0..10 {
        servers.push(
            TestServer::start_with(random_ed25519(), client_key.clone())
                .await
                .unwrap(),
        );
    }
    let known_hosts = dir.path().join("known_hosts");
    let lines: Vec<String> = servers.iter().map(TestServer::known_hosts_line).collect();
    std::fs::write(&known_hosts, lines.join("\n")).unwrap();
    let mut config = SshConfig::default()
        .with_known_hosts(&known_hosts)
        .with_pool(test_pool());
    for (i, server) in servers.iter().enumerate() {
        config = config.with_host(format!("host-{i}"), server.profile(&key_file));
    }
    let ssh = SshPool::new(config).unwrap();
    // Every host's command waits for its own second exec: 20 execs, 10 hosts, all at once.
    let execs: Vec<_> = (0..20)
        .map(|i| {
            let ssh = ssh.clone();
            tokio::spawn(async move { ssh.exec(&format!("host-{}", i % 10), "wait-for 2").await })
        })
        .collect();
    for exec in execs {
        assert!(exec.await.unwrap().unwrap().success());
    }
    for server in &servers {
        let stats = server.stats();
        assert_eq!(
            (stats.connections, stats.execs, stats.peak_running),
            (1, 2, 2)
        );
    }
    let stats = ssh.stats();
    assert_eq!(stats.keys.len(), 10);
    assert!(
        stats
            .keys
            .iter()
            .all(|k| k.connects == 1 && k.connections == 1)
    );
}

#[tokio::test]
async fn idle_connections_are_reaped_and_the_next_call_reconnects() {
    let f = Fixture::new().await;
    let config = f
        .config()
        .with_pool(test_pool().with_idle_timeout(Duration::from_millis(200)));
    let ssh = SshPool::new(config).unwrap();
    assert!(ssh.exec("box", "true").await.unwrap().success());
    assert_eq!(ssh.stats().key("box").unwrap().connections, 1);
    eventually("the idle connection is reaped", || {
        let stats = ssh.stats();
        let key = stats.key("box").unwrap();
        key.connections == 0 && key.reaped == 1
    })
    .await;
    assert!(ssh.exec("box", "true").await.unwrap().success());
    assert_eq!(f.server.stats().connections, 2);
    assert_eq!(ssh.stats().key("box").unwrap().connects, 2);
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_on_the_next_call() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    assert!(ssh.exec("box", "true").await.unwrap().success());
    f.server.restart().await.unwrap();
    // No waiting for the client to notice: the very next call must work.
    let out = ssh.exec("box", "echo back").await.unwrap();
    assert_eq!(out.stdout, b"back\n");
    assert_eq!(f.server.stats().connections, 2);
    let stats = ssh.stats();
    let key = stats.key("box").unwrap();
    assert_eq!((key.connects, key.connections), (2, 1));
}

#[tokio::test]
async fn a_call_in_flight_when_the_server_dies_fails_as_upstream_unavailable() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    let hanging = {
        let ssh = ssh.clone();
        tokio::spawn(async move { ssh.exec("box", "hang").await })
    };
    eventually("the command runs", || f.server.stats().running == 1).await;
    f.server.stop().await;
    let err = tokio::time::timeout(Duration::from_secs(10), hanging)
        .await
        .expect("the call ends, it does not hang")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SshError::Disconnected { .. }), "{err}");
    let data = err.to_error_data("ssh_exec");
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::UpstreamUnavailable));
    assert!(is_transient(&data));
    assert!(data.message.contains("`box`"), "{}", data.message);

    // Down: a clear, transient error. Back up: served again.
    let down = ssh.exec("box", "true").await.unwrap_err();
    assert!(down.is_transient(), "{down}");
    assert_eq!(
        ErrorKind::of(&down.to_error_data("ssh_exec")),
        Some(ErrorKind::UpstreamUnavailable)
    );
    f.server.restart().await.unwrap();
    assert!(ssh.exec("box", "true").await.unwrap().success());
}

#[tokio::test]
async fn a_wrong_host_key_is_refused_with_a_clear_error_and_no_session() {
    let f = Fixture::new().await;
    let impostor = random_ed25519();
    std::fs::write(
        &f.known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            f.server.port(),
            impostor.public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let ssh = f.pool();
    let err = ssh.exec("box", "true").await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("host key of `box`"), "{message}");
    assert!(
        message.contains(&mcp_tower_ssh::fingerprint(f.server.host_key())),
        "names the presented key: {message}"
    );
    assert!(
        message.contains(&mcp_tower_ssh::fingerprint(impostor.public_key())),
        "names the expected key: {message}"
    );
    assert!(
        message.contains("changed, or someone is intercepting"),
        "{message}"
    );
    assert_eq!(f.server.stats().logins, 0, "no login, no session");
    assert_eq!(f.server.stats().execs, 0);
    let data = err.to_error_data("ssh_exec");
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::UpstreamUnavailable));
    assert!(
        !err.is_transient(),
        "a rejected host key does not heal by retrying"
    );

    // The root cause is reachable for code, not only in the text.
    let SshError::Pool(pool_error) = &err else {
        panic!("a connect failure comes through the pool: {err:?}")
    };
    let mcp_tower_pool::PoolError::Connect { source, .. } = pool_error else {
        panic!("{pool_error:?}")
    };
    let cause = source.downcast_ref::<SshError>().unwrap();
    assert!(matches!(
        cause,
        SshError::HostKey {
            verdict: HostKeyVerdict::Mismatch { .. },
            ..
        }
    ));
}

#[tokio::test]
async fn an_unknown_host_key_is_refused_and_the_opt_out_accepts_it() {
    let f = Fixture::new().await;
    std::fs::write(&f.known_hosts, "# nobody yet\n").unwrap();
    let err = f.pool().exec("box", "true").await.unwrap_err();
    assert!(
        err.to_string().contains("not in the known_hosts file"),
        "{err}"
    );
    assert_eq!(f.server.stats().logins, 0);

    // A missing known_hosts file is an error too, not an open door.
    let missing = f
        .config()
        .with_known_hosts(f.dir.path().join("does-not-exist"));
    let err = SshPool::new(missing)
        .unwrap()
        .exec("box", "true")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot read the known_hosts file"),
        "{err}"
    );
    assert_eq!(f.server.stats().logins, 0);

    let insecure = f.config().with_insecure_accept_any_host_key(true);
    let ssh = SshPool::new(insecure).unwrap();
    assert!(!ssh.pool().connector().verifies_host_keys());
    assert!(ssh.exec("box", "true").await.unwrap().success());
}

#[tokio::test]
async fn output_beyond_the_cap_is_cut_and_the_command_is_not_left_blocked() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    let limits = ExecLimits::new(Duration::from_secs(30), 1000);
    // `yes` writes forever: only closing the channel stops it.
    let out = ssh.exec_with("box", "yes", limits).await.unwrap();
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout.chunks(2).all(|c| c == b"y\n"));
    eventually("the command stopped", || {
        let s = f.server.stats();
        s.closed_by_client == 1 && s.running == 0
    })
    .await;
    // The connection is still good.
    assert!(ssh.exec("box", "true").await.unwrap().success());
    assert_eq!(f.server.stats().connections, 1);

    // A profile's own cap.
    let capped = f
        .config()
        .with_host("small", f.profile().with_max_output_bytes(4));
    let ssh = SshPool::new(capped).unwrap();
    let out = ssh.exec("small", "echo abcdefgh").await.unwrap();
    assert_eq!((out.stdout.as_slice(), out.truncated), (&b"abcd"[..], true));
    let out = ssh.exec("small", "echo abc").await.unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.truncated),
        (&b"abc\n"[..], false)
    );
}

#[tokio::test]
async fn a_timeout_closes_the_channel_and_reports_timed_out() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    let limits = ExecLimits::new(Duration::from_millis(300), 1 << 20);
    let err = ssh.exec_with("box", "hang", limits).await.unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    let data = err.to_error_data("ssh_exec");
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::TimedOut));
    assert!(data.message.contains("ssh_exec"), "{}", data.message);
    eventually("the channel is closed on the server", || {
        let s = f.server.stats();
        s.closed_by_client == 1 && s.running == 0
    })
    .await;
    assert!(ssh.exec("box", "true").await.unwrap().success());
    assert_eq!(
        f.server.stats().connections,
        1,
        "a timeout does not cost the connection"
    );
}

#[tokio::test]
async fn dropping_an_exec_closes_its_channel() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    let exec = {
        let ssh = ssh.clone();
        tokio::spawn(async move { ssh.exec("box", "hang").await })
    };
    eventually("the command runs", || f.server.stats().running == 1).await;
    exec.abort();
    eventually("the channel is closed on the server", || {
        f.server.stats().closed_by_client == 1
    })
    .await;
    assert_eq!(ssh.stats().key("box").unwrap().in_flight, 0);
}

#[tokio::test]
async fn an_unknown_host_is_a_clear_error_and_connects_nowhere() {
    let f = Fixture::new().await;
    let ssh = SshPool::new(f.config().with_host("web-2", f.profile())).unwrap();
    let err = ssh.exec("db-9", "true").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown SSH host `db-9`; the configured hosts are: box, web-2"
    );
    assert!(err.is_tool_failure());
    assert_eq!(
        err.to_error_data("ssh_exec").code,
        rmcp::model::ErrorCode::INVALID_PARAMS
    );
    assert!(ssh.download("db-9", "/etc/passwd").await.is_err());
    assert_eq!(f.server.stats().connections, 0);
    assert!(ssh.stats().keys.is_empty());
}

#[tokio::test]
async fn password_login_works_and_a_wrong_password_never_shows() {
    let f = Fixture::new().await;
    let good = HostProfile::new("127.0.0.1", f.server.port(), TEST_USER)
        .with_password(Secret::new(TEST_PASSWORD));
    let bad = HostProfile::new("127.0.0.1", f.server.port(), TEST_USER)
        .with_password(Secret::new("sw0rdfish-hunter2"));
    let config = f.config().with_host("good", good).with_host("bad", bad);
    let ssh = SshPool::new(config.clone()).unwrap();
    assert!(ssh.exec("good", "true").await.unwrap().success());
    let err = ssh.exec("bad", "true").await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("authentication as `tester` on `bad` failed (tried: password)"),
        "{message}"
    );
    let data = err.to_error_data("ssh_exec");
    for text in [
        message,
        format!("{err:?}"),
        format!("{data:?}"),
        format!("{config:?}"),
        format!("{ssh:?}"),
        format!("{:?}", ssh.handle().snapshot()),
        toml::to_string(&config).unwrap(),
    ] {
        assert!(!text.contains("sw0rdfish-hunter2"), "leaked: {text}");
        assert!(!text.contains(TEST_PASSWORD), "leaked: {text}");
    }
}

#[tokio::test]
async fn key_material_and_passphrases_never_appear_in_debug_output() {
    let f = Fixture::new().await;
    let key_text = std::fs::read_to_string(&f.key_file).unwrap();
    let secret_line = key_text.lines().nth(1).unwrap().to_owned();
    let config = f.config().with_host(
        "encrypted",
        f.profile()
            .with_identity_passphrase(Secret::new("passphrase-xyzzy"))
            .with_password(Secret::new("pw-plugh")),
    );
    // The key file is not encrypted, so a passphrase is ignored by the parser; what matters
    // here is that nothing secret is printed.
    let ssh = SshPool::new(config.clone());
    let debug = format!("{config:?} {ssh:?}");
    for secret in ["passphrase-xyzzy", "pw-plugh", secret_line.as_str()] {
        assert!(!debug.contains(secret), "leaked {secret}: {debug}");
    }
    assert!(debug.contains("[redacted]"));

    // An unreadable key file names the file, not its contents.
    std::fs::write(
        &f.key_file,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n",
    )
    .unwrap();
    let err = SshPool::new(f.config()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("cannot load the private key of host `box`"),
        "{message}"
    );
    assert!(!message.contains("not a key"), "{message}");
}

#[tokio::test]
async fn the_pool_handle_reports_per_host_figures_labelled_by_profile_name() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    ssh.exec("box", "true").await.unwrap();
    let handle = ssh.handle();
    let mut figures = Vec::new();
    handle.figures(&mut figures);
    let connects = figures
        .iter()
        .find(|fig| fig.name == "mcp_pool_connects_total")
        .unwrap();
    assert_eq!(connects.labels, vec![("upstream", "box".to_owned())]);
    let text = format!("{figures:?}");
    assert!(
        !text.contains("127.0.0.1"),
        "addresses stay out of labels: {text}"
    );
}

#[tokio::test]
async fn sftp_round_trip_of_one_megabyte_on_one_reused_session() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    ssh.upload("box", "/data/blob.bin", &data).await.unwrap();
    assert_eq!(f.server.file("/data/blob.bin").unwrap(), data);
    let back = ssh.download("box", "/data/blob.bin").await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the bytes came back unchanged");

    let stat = ssh.stat("box", "/data/blob.bin").await.unwrap();
    assert_eq!(stat.size, Some(1 << 20));
    assert!(stat.is_file && !stat.is_dir);
    assert_eq!(stat.permissions, Some(0o644));

    ssh.upload("box", "/data/notes.txt", b"hi").await.unwrap();
    let list = ssh.list("box", "/data").await.unwrap();
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["blob.bin", "notes.txt"]);
    assert_eq!(list[1].stat.size, Some(2));

    let stats = f.server.stats();
    assert_eq!(
        stats.sftp_sessions, 1,
        "one SFTP session served every operation"
    );
    assert_eq!(stats.connections, 1);
}

#[tokio::test]
async fn sftp_errors_are_about_the_request_and_leave_the_session_usable() {
    let f = Fixture::new().await;
    let ssh = SshPool::new(f.config().with_max_file_bytes(10)).unwrap();
    let err = ssh.download("box", "/nope.txt").await.unwrap_err();
    assert!(
        matches!(err, SshError::Sftp { op: "download", .. }),
        "{err}"
    );
    assert!(err.is_tool_failure());
    assert!(err.to_string().contains("/nope.txt"), "{err}");

    f.server.put_file("/big.bin", vec![0u8; 11]);
    let err = ssh.download("box", "/big.bin").await.unwrap_err();
    assert!(
        matches!(
            err,
            SshError::TooLarge {
                size: Some(11),
                limit: 10,
                ..
            }
        ),
        "{err}"
    );
    f.server.put_file("/ok.bin", vec![1u8; 10]);
    assert_eq!(ssh.download("box", "/ok.bin").await.unwrap(), vec![1u8; 10]);
    assert_eq!(f.server.stats().sftp_sessions, 1);
}

#[tokio::test]
async fn sftp_after_a_restart_opens_a_new_session_on_the_new_connection() {
    let f = Fixture::new().await;
    let ssh = f.pool();
    ssh.upload("box", "/a", b"1").await.unwrap();
    f.server.restart().await.unwrap();
    // The SFTP session died with its connection: the next read gets a new connection and a
    // new session.
    assert_eq!(ssh.download("box", "/a").await.unwrap(), b"1");
    assert_eq!(f.server.stats().sftp_sessions, 2);
    assert_eq!(ssh.stats().key("box").unwrap().connects, 2);
    // And so does the next upload after another restart.
    f.server.restart().await.unwrap();
    ssh.upload("box", "/b", b"2").await.unwrap();
    assert_eq!(f.server.file("/b").unwrap(), b"2");
    assert_eq!(ssh.stats().key("box").unwrap().connects, 3);
}

#[test]
fn config_from_toml_with_defaults_and_validation() {
    let cfg: SshConfig = toml::from_str(
        r#"
        known_hosts = "/etc/mcp/known_hosts"
        exec_timeout = "5s"
        max_output_bytes = 65536
        [pool]
        idle_timeout = "1m"
        [hosts.web-1]
        host = "10.0.0.5"
        user = "deploy"
        identity_file = "/keys/deploy"
        [hosts.db-1]
        host = "db.internal"
        port = 2222
        user = "ops"
        password = "pw"
        exec_timeout = "2s"
        "#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.exec_timeout, Duration::from_secs(5));
    assert_eq!(cfg.pool.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.hosts["web-1"].port, 22);
    assert_eq!(cfg.hosts["db-1"].known_hosts_name(), "[db.internal]:2222");
    assert_eq!(cfg.hosts["web-1"].known_hosts_name(), "10.0.0.5");
    assert!(!cfg.insecure_accept_any_host_key);
    let defaults = SshConfig::default();
    assert_eq!(defaults.keepalive_interval, Duration::from_secs(15));
    assert_eq!(defaults.max_output_bytes, 1 << 20);
    assert_eq!(defaults.max_file_bytes, 8 << 20);
    assert_eq!(
        (defaults.max_concurrent_downloads, defaults.download_queue),
        (4, 16)
    );
    assert!(!defaults.allow_sha1_algorithms);
    assert!(!defaults.allow_insecure_identity_permissions);
    let knobs: SshConfig = toml::from_str(
        "max_concurrent_downloads = 2\ndownload_queue = 0\nallow_sha1_algorithms = true\n\
         allow_insecure_identity_permissions = true\nmax_file_bytes = 1024",
    )
    .unwrap();
    assert_eq!(
        (knobs.max_concurrent_downloads, knobs.download_queue),
        (2, 0)
    );
    assert!(knobs.allow_sha1_algorithms && knobs.allow_insecure_identity_permissions);

    for (bad, field) in [
        ("[hosts.x]\nhost = \"h\"\nuser = \"u\"", "identity_file"),
        (
            "[hosts.x]\nhost = \"\"\nuser = \"u\"\npassword = \"p\"",
            "ssh.hosts.x.host",
        ),
        ("exec_timeout = \"0s\"", "exec_timeout"),
        ("max_output_bytes = 0", "max_output_bytes"),
        ("max_file_bytes = 0", "ssh.max_file_bytes"),
        (
            "max_concurrent_downloads = 0",
            "ssh.max_concurrent_downloads",
        ),
        ("[pool]\nmax = 0", "ssh.pool.max"),
    ] {
        let cfg: SshConfig = toml::from_str(bad).unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(err.contains(field), "{bad}: {err}");
    }
    assert!(toml::from_str::<SshConfig>("known_host = \"/x\"").is_err());
}

/// Captures what `tracing` writes, for the warning tests.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Single-threaded runtime: the subscriber set for this thread sees the pool's connect task.
#[tokio::test(flavor = "current_thread")]
async fn the_insecure_opt_out_warns_when_built_and_on_every_connect() {
    let f = Fixture::new().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let ssh = SshPool::new(
        f.config()
            .with_insecure_accept_any_host_key(true)
            .with_pool(test_pool().with_enabled(false)),
    )
    .unwrap();
    assert!(
        logs.text().contains("host key verification is OFF"),
        "{}",
        logs.text()
    );
    for _ in 0..3 {
        assert!(ssh.exec("box", "true").await.unwrap().success());
    }
    let text = logs.text();
    assert_eq!(
        text.matches("accepting any host key for `box`").count(),
        3,
        "one warning per connect: {text}"
    );
    assert!(text.contains("WARN"), "{text}");

    // Verified connections log no such warning.
    let before = logs.text().len();
    assert!(f.pool().exec("box", "true").await.unwrap().success());
    assert!(
        !logs.text()[before..].contains("host key"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn health_pings_keep_a_live_connection_and_find_a_dead_one() {
    let f = Fixture::new().await;
    let config = f
        .config()
        .with_pool(test_pool().with_health_interval(Duration::from_millis(50)));
    let ssh = SshPool::new(config).unwrap();
    assert!(ssh.exec("box", "true").await.unwrap().success());
    // Several ping rounds against a live server: none fails, nothing is replaced. (A bounded
    // window for a negative property, not an ordering.)
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = ssh.stats();
    let key = stats.key("box").unwrap();
    assert_eq!((key.ping_failures, key.replaced, key.connects), (0, 0, 1));
    assert_eq!(f.server.stats().connections, 1);

    f.server.stop().await;
    eventually("the dead connection is taken out of service", || {
        let stats = ssh.stats();
        let key = stats.key("box").unwrap();
        key.replaced >= 1 && key.connections == 0
    })
    .await;
    f.server.restart().await.unwrap();
    assert!(ssh.exec("box", "true").await.unwrap().success());
}
