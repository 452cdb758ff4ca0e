//! Interop with a real OpenSSH server: exec (ed25519 and RSA keys), parallel execs, eleven
//! at once under `MaxSessions 10` (two connections), 200 through ten channels (none
//! refused), the host key checked, SFTP 1 MB round trip with a checksum computed on the server, recovery
//! after sshd is restarted (every connection killed), 64 concurrent downloads of a 15 MiB
//! file (capped or busy, peak RSS bounded), and errors that reach clients without the
//! address, the user or the known_hosts path.
//!
//! Ignored in a plain `cargo test`: `.ci/ssh.sh` starts sshd on 127.0.0.1 and runs them with
//! `-- --ignored`, pointing at it with these variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `MCP_TOWER_SSH_PORT` | sshd's port on 127.0.0.1 |
//! | `MCP_TOWER_SSH_USER` | the user to log in as |
//! | `MCP_TOWER_SSH_KEY` | an ed25519 private key file authorized for the user |
//! | `MCP_TOWER_SSH_RSA_KEY` | an RSA private key file authorized for the user (optional) |
//! | `MCP_TOWER_SSH_KNOWN_HOSTS` | a known_hosts file with sshd's host key |
//! | `MCP_TOWER_SSH_RESTART` | a command that restarts sshd, killing every connection |
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use mcp_tower_pool::PoolConfig;
use mcp_tower_ssh::{HostProfile, SshConfig, SshError, SshPool};
use sha2::{Digest, Sha256};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run .ci/ssh.sh)"))
}

fn config() -> SshConfig {
    let port: u16 = env("MCP_TOWER_SSH_PORT").parse().unwrap();
    let user = env("MCP_TOWER_SSH_USER");
    let mut config = SshConfig::default()
        .with_known_hosts(PathBuf::from(env("MCP_TOWER_SSH_KNOWN_HOSTS")))
        .with_pool(
            PoolConfig::default()
                .with_min(0)
                .with_connect_backoff(Duration::ZERO)
                .with_health_interval(Duration::ZERO),
        )
        .with_host(
            "sshd",
            HostProfile::new("127.0.0.1", port, &user).with_identity_file(env("MCP_TOWER_SSH_KEY")),
        );
    if let Ok(rsa) = std::env::var("MCP_TOWER_SSH_RSA_KEY") {
        config = config.with_host(
            "sshd-rsa",
            HostProfile::new("127.0.0.1", port, &user).with_identity_file(rsa),
        );
    }
    config
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_exec_status_output_and_parallel_channels() {
    let ssh = SshPool::new(config()).unwrap();
    let out = ssh
        .exec("sshd", "echo hello; echo oops >&2; exit 7")
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "hello\n");
    assert_eq!(out.stderr_lossy(), "oops\n");
    assert_eq!(out.exit_status, Some(7));
    // Eight commands at once on the one connection (under sshd's MaxSessions).
    let execs: Vec<_> = (0..8)
        .map(|i| {
            let ssh = ssh.clone();
            tokio::spawn(async move { ssh.exec("sshd", &format!("sleep 0.2; echo {i}")).await })
        })
        .collect();
    for (i, exec) in execs.into_iter().enumerate() {
        assert_eq!(
            exec.await.unwrap().unwrap().stdout_lossy(),
            format!("{i}\n")
        );
    }
    let stats = ssh.stats();
    assert_eq!(stats.key("sshd").unwrap().connects, 1);
    if std::env::var("MCP_TOWER_SSH_RSA_KEY").is_ok() {
        assert!(
            ssh.exec("sshd-rsa", "true").await.unwrap().success(),
            "RSA key login"
        );
    }
    ssh.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_eleven_parallel_execs_under_max_sessions_10_all_succeed() {
    // .ci/ssh.sh sets `MaxSessions 10`. Each command waits (up to 20 s, on the server) until
    // all eleven have started: they succeed only if they hold eleven channels at once, which
    // one connection of ten cannot give.
    let barrier = format!("/tmp/mcp-tower-ssh-barrier-{}", std::process::id());
    let ssh = SshPool::new(
        config()
            .with_pool(
                PoolConfig::default()
                    .with_min(0)
                    .with_max(4)
                    .with_connect_backoff(Duration::ZERO)
                    .with_health_interval(Duration::ZERO),
            )
            .with_exec_timeout(Duration::from_secs(30)),
    )
    .unwrap();
    assert!(
        ssh.exec("sshd", &format!("rm -rf {barrier}; mkdir -p {barrier}"))
            .await
            .unwrap()
            .success()
    );
    let execs: Vec<_> = (0..11)
        .map(|i| {
            let ssh = ssh.clone();
            let command = format!(
                "touch {barrier}/{i}; n=0; \
                 while [ $(ls {barrier} | wc -l) -lt 11 ] && [ $n -lt 400 ]; do \
                 sleep 0.05; n=$((n+1)); done; \
                 [ $(ls {barrier} | wc -l) -ge 11 ] && echo {i}"
            );
            tokio::spawn(async move { ssh.exec("sshd", &command).await })
        })
        .collect();
    for (i, exec) in execs.into_iter().enumerate() {
        let out = exec.await.unwrap().unwrap();
        assert!(out.success(), "exec {i}: {}", out.stderr_lossy());
        assert_eq!(out.stdout_lossy(), format!("{i}\n"));
    }
    let key = ssh.stats();
    let key = key.key("sshd").unwrap();
    eprintln!(
        "11 parallel execs under MaxSessions 10: {} connections",
        key.connects
    );
    assert_eq!(key.connects, 2, "a second connection for the eleventh");
    ssh.exec("sshd", &format!("rm -rf {barrier}"))
        .await
        .unwrap();
    ssh.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_two_hundred_execs_through_ten_channels_are_never_refused() {
    // One connection, ten channels, 200 short execs: each freed channel is reused at once.
    // sshd frees a session only when it collects the closed channel, so an open sent right
    // behind the close would be refused; the pool gives a channel back only after the
    // server confirmed the close. A refusal would show as a lowered `max_channels`.
    let ssh = SshPool::new(config().with_host_limit(10, 200, Duration::from_secs(60))).unwrap();
    let execs: Vec<_> = (0..200)
        .map(|_| {
            let ssh = ssh.clone();
            tokio::spawn(async move { ssh.exec("sshd", "true").await })
        })
        .collect();
    for exec in execs {
        assert!(exec.await.unwrap().unwrap().success());
    }
    let conn = ssh.connection("sshd").await.unwrap();
    assert_eq!(conn.max_channels(), 10, "no channel was refused");
    drop(conn);
    assert_eq!(ssh.stats().key("sshd").unwrap().connects, 1);
    ssh.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_output_cap_and_timeout_stop_the_remote_command() {
    let ssh = SshPool::new(config().with_max_output_bytes(4096)).unwrap();
    let out = ssh.exec("sshd", "yes").await.unwrap();
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), 4096);
    let limits = mcp_tower_ssh::ExecLimits::new(Duration::from_millis(500), 4096);
    let err = ssh.exec_with("sshd", "sleep 30", limits).await.unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    // Neither left anything running (the timed-out `sleep` prints nothing, so only the
    // signal sent before closing its channel stops it).
    let mut left = String::new();
    for _ in 0..50 {
        left = ssh
            .exec(
                "sshd",
                "pgrep -u \"$(id -u)\" -x yes; pgrep -u \"$(id -u)\" -x sleep",
            )
            .await
            .unwrap()
            .stdout_lossy();
        if left.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left.trim(), "", "processes left running");
    ssh.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_sftp_one_megabyte_round_trip_with_checksum() {
    let ssh = SshPool::new(config()).unwrap();
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let path = format!("/tmp/mcp-tower-ssh-{}.bin", std::process::id());
    ssh.upload("sshd", &path, &data).await.unwrap();
    let expected = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let remote = ssh
        .exec("sshd", &format!("sha256sum {path}"))
        .await
        .unwrap();
    assert!(
        remote.stdout_lossy().starts_with(&expected),
        "{}",
        remote.stdout_lossy()
    );
    let back = ssh.download("sshd", &path).await.unwrap();
    assert!(back == data, "the megabyte came back unchanged");
    let stat = ssh.stat("sshd", &path).await.unwrap();
    assert_eq!(stat.size, Some(1 << 20));
    let listing = ssh.list("sshd", "/tmp").await.unwrap();
    assert!(listing.iter().any(|e| path.ends_with(&e.name)));
    ssh.exec("sshd", &format!("rm -f {path}")).await.unwrap();
    ssh.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_restart_is_recovered_on_the_next_call() {
    let ssh = SshPool::new(config()).unwrap();
    assert!(ssh.exec("sshd", "true").await.unwrap().success());
    let status = std::process::Command::new("sh")
        .args(["-c", &env("MCP_TOWER_SSH_RESTART")])
        .status()
        .unwrap();
    assert!(status.success(), "restarting sshd failed");
    let out = ssh.exec("sshd", "echo back").await.unwrap();
    assert_eq!(out.stdout_lossy(), "back\n");
    let key = ssh.stats().key("sshd").cloned().unwrap();
    assert_eq!(key.connects, 2, "one reconnect");
    // SFTP recovers too (its session was on the dead connection).
    ssh.upload("sshd", "/tmp/mcp-tower-ssh-restart.txt", b"ok")
        .await
        .unwrap();
    ssh.exec("sshd", "rm -f /tmp/mcp-tower-ssh-restart.txt")
        .await
        .unwrap();
    ssh.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_wrong_host_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let port = env("MCP_TOWER_SSH_PORT");
    let impostor = mcp_tower_ssh::testing::random_ed25519();
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{port} {}\n",
            impostor.public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let ssh = SshPool::new(config().with_known_hosts(&known_hosts)).unwrap();
    let err = ssh.exec("sshd", "true").await.unwrap_err();
    assert!(err.to_string().contains("host key of `sshd`"), "{err}");
}

/// `VmHWM` (peak resident memory) of this process, in bytes, after resetting it to the
/// current size with `/proc/self/clear_refs` (`None` where that is not possible).
fn peak_after(reset: bool) -> Option<u64> {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_sixty_four_concurrent_downloads_of_15_mib_are_capped_or_busy() {
    const MIB: u64 = 1 << 20;
    let path = format!("/tmp/mcp-tower-ssh-big-{}.log", std::process::id());
    let setup = SshPool::new(config()).unwrap();
    let made = setup
        .exec("sshd", &format!("head -c {} /dev/zero > {path}", 15 * MIB))
        .await
        .unwrap();
    assert!(made.success(), "{}", made.stderr_lossy());

    for (cap, limit, queue) in [(8 * MIB, 4, 16), (16 * MIB, 2, 4)] {
        // The host admits all 64 at once: the download limit is what turns them away.
        let ssh = SshPool::new(
            config()
                .with_max_file_bytes(cap)
                .with_download_limit(limit, queue)
                .with_host_limit(64, 0, Duration::from_secs(60)),
        )
        .unwrap();
        let start = peak_after(true);
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let ssh = ssh.clone();
                let path = path.clone();
                tokio::spawn(async move { ssh.download("sshd", &path).await.map(|d| d.len()) })
            })
            .collect();
        let (mut read, mut busy, mut too_large) = (0, 0, 0);
        for call in calls {
            match call.await.unwrap() {
                Ok(len) => {
                    assert_eq!(len as u64, 15 * MIB);
                    read += 1;
                }
                Err(SshError::Busy { .. }) => busy += 1,
                Err(SshError::TooLarge { size, limit, .. }) => {
                    assert_eq!((size, limit), (Some(15 * MIB), cap));
                    too_large += 1;
                }
                Err(e) => panic!("neither a read, busy nor too large: {e}"),
            }
        }
        let growth = match (start, peak_after(false)) {
            (Some(start), Some(peak)) => peak.saturating_sub(start),
            _ => 0,
        };
        eprintln!(
            "cap {} MiB, {limit} + {queue} queued: {read} read, {busy} busy, {too_large} too large; peak RSS growth {} MiB",
            cap / MIB,
            growth / MIB
        );
        assert_eq!(read + busy + too_large, 64);
        assert!(busy >= 1);
        if cap < 15 * MIB {
            assert_eq!(read, 0);
        } else {
            assert!(read >= 1);
        }
        // The downloads allowed at once, a few copies each, and buffers: far from 64 × 15 MiB.
        assert!(
            growth < limit as u64 * 3 * cap + 64 * MIB,
            "peak RSS grew {} MiB",
            growth / MIB
        );
        ssh.shutdown().await;
    }
    setup.exec("sshd", &format!("rm -f {path}")).await.unwrap();
    setup.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real sshd: run .ci/ssh.sh"]
async fn openssh_errors_reach_clients_without_address_user_or_paths() {
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let ssh = SshPool::new(config().with_known_hosts(&known_hosts)).unwrap();
    let err = ssh.exec("sshd", "true").await.unwrap_err();
    let data = err.to_error_data("ssh_exec");
    let text = format!("{} {:?}", data.message, data.data);
    for private in [
        "127.0.0.1".to_owned(),
        env("MCP_TOWER_SSH_PORT"),
        env("MCP_TOWER_SSH_USER"),
        known_hosts.display().to_string(),
    ] {
        assert!(
            !text.contains(&private),
            "`{private}` reached the client: {text}"
        );
    }
    assert!(text.contains("host_key_rejected"), "{text}");
}
