//! Hardening of the SSH pool, against the in-process russh server: what a client may read of
//! an error (a code and a short reason, no address, user name or path), identity files
//! readable by others, SHA-1 algorithms off by default, the download limit and queue, and
//! the file-size cap.
//!
//! Events are ordered by the server's counters and by polling futures once, never by
//! sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    borrow::Cow,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    task::Poll,
    time::Duration,
};

use mcp_tower_core::error::{ErrorKind, codes};
use mcp_tower_pool::PoolConfig;
use mcp_tower_ssh::{
    ERROR_DATA_KEY, HostProfile, Secret, SshConfig, SshError, SshPool,
    testing::{TEST_USER, TestServer, random_ed25519, rsa_test_key, write_private_key},
};
use russh::{
    Preferred, cipher,
    keys::{Algorithm, HashAlg, PrivateKey},
    mac,
};
use tempfile::TempDir;

struct Fixture {
    server: TestServer,
    dir: TempDir,
    key_file: PathBuf,
    known_hosts: PathBuf,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(TestServer::start().await.unwrap())
    }

    fn with(server: TestServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("id_key");
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

    /// A server offering only these algorithms (host key `host_key`).
    async fn offering(host_key: PrivateKey, preferred: Preferred) -> Self {
        let server = TestServer::start_with_algorithms(host_key, random_ed25519(), preferred)
            .await
            .unwrap();
        Self::with(server)
    }

    fn config(&self) -> SshConfig {
        SshConfig::default()
            .with_known_hosts(&self.known_hosts)
            .with_pool(
                PoolConfig::default()
                    .with_min(0)
                    .with_health_interval(Duration::ZERO)
                    .with_connect_backoff(Duration::ZERO),
            )
            .with_host("box", self.server.profile(&self.key_file))
    }

    fn pool(&self) -> SshPool {
        SshPool::new(self.config()).unwrap()
    }
}

/// The text a client receives for `err` (message and data), and the code in its data.
fn client_view(err: &SshError) -> (String, String) {
    let data = err.to_error_data("ssh_exec");
    let code = data
        .data
        .as_ref()
        .and_then(|d| d.get(ERROR_DATA_KEY))
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_owned();
    let text = format!(
        "{} {} {}",
        data.message,
        serde_json::to_string(&data.data).unwrap(),
        err.client_message()
    );
    (text, code)
}

fn assert_private_details_absent(text: &str, private: &[&str]) {
    for p in private {
        assert!(!text.contains(p), "`{p}` reached the client: {text}");
    }
}

#[tokio::test]
async fn clients_get_a_code_and_a_short_reason_without_addresses_users_or_paths() {
    let f = Fixture::new().await;
    let port = f.server.port().to_string();
    let known_hosts = f.known_hosts.display().to_string();
    let key_file = f.key_file.display().to_string();
    let private = [
        "127.0.0.1",
        port.as_str(),
        known_hosts.as_str(),
        key_file.as_str(),
        TEST_USER,
        "deploy-user-x",
    ];

    // A wrong host key.
    std::fs::write(
        &f.known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            f.server.port(),
            random_ed25519().public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let err = f.pool().exec("box", "true").await.unwrap_err();
    assert!(
        err.to_string().contains(&known_hosts),
        "logs keep it: {err}"
    );
    let (text, code) = client_view(&err);
    assert_eq!(code, "host_key_rejected");
    assert!(
        text.contains("host_key_rejected: the host key of `box` was rejected"),
        "{text}"
    );
    let data = err.to_error_data("ssh_exec");
    assert_eq!(data.code, codes::UPSTREAM_UNAVAILABLE);
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::UpstreamUnavailable));
    assert_private_details_absent(&text, &private);

    // An unknown host, and a known_hosts file that cannot be read.
    std::fs::write(&f.known_hosts, "").unwrap();
    let err = f.pool().exec("box", "true").await.unwrap_err();
    let (text, _) = client_view(&err);
    assert!(text.contains("the host is not in known_hosts"), "{text}");
    assert_private_details_absent(&text, &private);
    let missing = f.dir.path().join("no-such-known-hosts");
    let err = SshPool::new(f.config().with_known_hosts(&missing))
        .unwrap()
        .exec("box", "true")
        .await
        .unwrap_err();
    let (text, code) = client_view(&err);
    assert_eq!(code, "known_hosts_unreadable");
    assert_private_details_absent(&text, &[&missing.display().to_string()]);
    std::fs::write(&f.known_hosts, format!("{}\n", f.server.known_hosts_line())).unwrap();

    // A failed login names the profile and the methods, not the user.
    let config = f.config().with_host(
        "other",
        HostProfile::new("127.0.0.1", f.server.port(), "deploy-user-x")
            .with_password(Secret::new("wrong-pw")),
    );
    let err = SshPool::new(config)
        .unwrap()
        .exec("other", "true")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("deploy-user-x"),
        "logs keep it: {err}"
    );
    let (text, code) = client_view(&err);
    assert_eq!(code, "auth_failed");
    assert!(
        text.contains("login to `other` failed (tried: password)"),
        "{text}"
    );
    assert_private_details_absent(&text, &private);

    // Nothing listens: connection refused, without the address.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = f.config().with_host(
        "down",
        HostProfile::new("127.0.0.1", closed, "deploy-user-x").with_identity_file(&f.key_file),
    );
    let err = SshPool::new(config)
        .unwrap()
        .exec("down", "true")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1"), "logs keep it: {err}");
    let (text, code) = client_view(&err);
    assert_eq!(code, "connect_failed");
    assert!(text.contains("cannot reach `down`"), "{text}");
    let closed = closed.to_string();
    assert_private_details_absent(&text, &[&closed, "127.0.0.1", "deploy-user-x"]);

    // Tool errors: no remote path, no server text; the cap, not the path.
    let ssh = SshPool::new(f.config().with_max_file_bytes(10)).unwrap();
    let err = ssh
        .download("box", "/secret/dir/nope.txt")
        .await
        .unwrap_err();
    assert!(err.is_tool_failure());
    assert_eq!(err.code(), "no_such_file");
    assert_eq!(
        err.client_message(),
        "no_such_file: SFTP download on `box` failed: no such file"
    );
    let err = ssh.download("box", "/forbidden/x").await.unwrap_err();
    assert_eq!(err.code(), "permission_denied");
    assert!(!err.client_message().contains("/forbidden"), "{err}");
    f.server.put_file("/secret/big.bin", vec![0u8; 11]);
    let err = ssh.download("box", "/secret/big.bin").await.unwrap_err();
    assert_eq!(
        err.client_message(),
        "file_too_large: the file is larger than the limit of 10 bytes (max_file_bytes): 11 bytes"
    );
    assert!(err.to_string().contains("/secret/big.bin"), "logs keep it");
}

/// Captures what `tracing` writes.
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

#[tokio::test(flavor = "current_thread")]
async fn the_full_error_goes_to_the_log_when_a_client_gets_the_short_one() {
    let f = Fixture::new().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    std::fs::write(&f.known_hosts, "").unwrap();
    let err = f.pool().exec("box", "true").await.unwrap_err();
    let data = err.to_error_data("ssh_exec");
    assert!(!data.message.contains("127.0.0.1"), "{}", data.message);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("host_key_rejected"), "{text}");
    assert!(
        text.contains(&f.known_hosts.display().to_string()),
        "the log names the known_hosts file: {text}"
    );
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn identity_files_readable_by_group_or_others_are_refused_unless_allowed() {
    let f = Fixture::new().await;
    for mode in [0o644, 0o640, 0o604] {
        chmod(&f.key_file, mode);
        let err = SshPool::new(f.config()).unwrap_err();
        assert!(
            matches!(&err, SshError::KeyPermissions { host, mode: m, .. } if host == "box" && *m == mode),
            "{err:?}"
        );
        assert_eq!(err.code(), "identity_file_permissions");
        let message = err.to_string();
        assert!(message.contains(&format!("{mode:04o}")), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
        assert!(
            message.contains("allow_insecure_identity_permissions"),
            "{message}"
        );
        assert!(
            !err.client_message()
                .contains(&f.key_file.display().to_string()),
            "{}",
            err.client_message()
        );
    }
    // The opt-out: the same file is used, and works.
    let ssh = SshPool::new(f.config().with_allow_insecure_identity_permissions(true)).unwrap();
    assert!(ssh.exec("box", "true").await.unwrap().success());
    // Owner-only permissions need no opt-out.
    for mode in [0o600, 0o400] {
        chmod(&f.key_file, mode);
        assert!(f.pool().exec("box", "true").await.unwrap().success());
    }
}

fn only_host_keys(keys: &[Algorithm]) -> Preferred {
    Preferred {
        key: Cow::Owned(keys.to_vec()),
        ..Preferred::default()
    }
}

#[tokio::test]
async fn ssh_rsa_host_keys_are_refused_by_default_and_accepted_with_the_opt_in() {
    let f = Fixture::offering(
        rsa_test_key(),
        only_host_keys(&[Algorithm::Rsa { hash: None }]),
    )
    .await;
    let err = f.pool().exec("box", "true").await.unwrap_err();
    assert_eq!(err.code(), "no_common_algorithm", "{err}");
    assert!(
        err.client_message().contains("allow_sha1_algorithms"),
        "{}",
        err.client_message()
    );
    let data = err.to_error_data("ssh_exec");
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::UpstreamUnavailable));
    assert_eq!(f.server.stats().logins, 0, "no session without a host key");

    let ssh = SshPool::new(f.config().with_allow_sha1_algorithms(true)).unwrap();
    assert!(ssh.exec("box", "true").await.unwrap().success());
    assert_eq!(f.server.stats().logins, 1);
}

#[tokio::test]
async fn rsa_sha2_host_keys_and_rsa_user_keys_work_by_default() {
    for hash in [HashAlg::Sha256, HashAlg::Sha512] {
        let f = Fixture::offering(
            rsa_test_key(),
            only_host_keys(&[Algorithm::Rsa { hash: Some(hash) }]),
        )
        .await;
        assert!(f.pool().exec("box", "true").await.unwrap().success());
    }
    // An RSA user key signs with SHA-2.
    let server = TestServer::start_with(random_ed25519(), rsa_test_key())
        .await
        .unwrap();
    let f = Fixture::with(server);
    assert!(f.pool().exec("box", "true").await.unwrap().success());
    assert_eq!(f.server.stats().logins, 1);
}

#[tokio::test]
async fn sha1_macs_are_refused_by_default_and_accepted_with_the_opt_in() {
    for sha1 in [mac::HMAC_SHA1, mac::HMAC_SHA1_ETM] {
        let preferred = Preferred {
            // A cipher that needs a MAC (the AEAD ones carry their own).
            cipher: Cow::Owned(vec![cipher::AES_128_CTR]),
            mac: Cow::Owned(vec![sha1]),
            ..Preferred::default()
        };
        let f = Fixture::offering(random_ed25519(), preferred).await;
        let err = f.pool().exec("box", "true").await.unwrap_err();
        assert_eq!(err.code(), "no_common_algorithm", "{err}");
        assert!(
            err.client_message().contains("mac"),
            "{}",
            err.client_message()
        );
        assert_eq!(f.server.stats().logins, 0);
        let ssh = SshPool::new(f.config().with_allow_sha1_algorithms(true)).unwrap();
        assert!(ssh.exec("box", "true").await.unwrap().success());
    }
}

/// Polls `future` once: it has started and is waiting for something.
async fn poll_once<T>(future: &mut Pin<Box<impl Future<Output = T>>>) {
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "it has to wait");
}

#[tokio::test]
async fn downloads_beyond_the_limit_and_its_queue_are_busy_at_once() {
    let f = Fixture::new().await;
    f.server.put_file("/f", "contents");
    let ssh = SshPool::new(f.config().with_download_limit(1, 1)).unwrap();
    // The first takes the only permit (and waits for the connection), the second the only
    // place in the queue.
    let mut reading = Box::pin(ssh.download("box", "/f"));
    poll_once(&mut reading).await;
    let mut queued = Box::pin(ssh.download("box", "/f"));
    poll_once(&mut queued).await;

    let err = ssh.download("box", "/f").await.unwrap_err();
    assert!(
        matches!(
            err,
            SshError::Busy {
                in_flight: 1,
                queued: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "busy");
    assert!(!err.is_transient());
    let data = err.to_error_data("ssh_read_file");
    assert_eq!(data.code, codes::BUSY);
    assert_eq!(ErrorKind::of(&data), Some(ErrorKind::Busy));
    let data = data.data.unwrap();
    assert_eq!(data["tool"], "ssh_read_file");
    assert_eq!(data[ERROR_DATA_KEY], "busy");
    assert!(data["retryAfterMs"].as_u64().unwrap() > 0);
    // An unknown host is still that, not busy.
    assert_eq!(
        ssh.download("db-9", "/f").await.unwrap_err().code(),
        "unknown_host"
    );

    assert_eq!(reading.await.unwrap(), b"contents");
    assert_eq!(queued.await.unwrap(), b"contents");
    // Room again.
    assert_eq!(ssh.download("box", "/f").await.unwrap(), b"contents");

    // Without a queue, the second is refused at once.
    let ssh = SshPool::new(f.config().with_download_limit(1, 0)).unwrap();
    let mut reading = Box::pin(ssh.download("box", "/f"));
    poll_once(&mut reading).await;
    assert!(matches!(
        ssh.download("box", "/f").await.unwrap_err(),
        SshError::Busy {
            in_flight: 1,
            queued: 0
        }
    ));
    assert_eq!(reading.await.unwrap(), b"contents");
}

#[tokio::test]
async fn a_file_over_the_cap_is_refused_without_reading_it_whole() {
    let f = Fixture::new().await;
    let cap: u64 = 100_000;
    let big = 10usize << 20;
    f.server.put_file("/big", vec![7u8; big]);
    let ssh = SshPool::new(f.config().with_max_file_bytes(cap)).unwrap();

    // The server tells the size: refused before reading a byte.
    let err = ssh.download("box", "/big").await.unwrap_err();
    assert!(
        matches!(err, SshError::TooLarge { size: Some(s), limit, .. } if s == big as u64 && limit == cap),
        "{err:?}"
    );
    assert_eq!(f.server.stats().sftp_bytes_sent, 0);

    // It does not: cut after cap + 1 bytes (plus what the client asked ahead: at most 16
    // reads of 256 KiB), not the 10 MiB.
    f.server.hide_sizes(true);
    let err = ssh.download("box", "/big").await.unwrap_err();
    assert!(
        matches!(err, SshError::TooLarge { size: None, limit, .. } if limit == cap),
        "{err:?}"
    );
    assert!(err.client_message().contains("100000 bytes"), "{err}");
    let sent = f.server.stats().sftp_bytes_sent;
    assert!(
        sent as u64 <= cap + 1 + 16 * 262_144,
        "{sent} bytes were sent for a cap of {cap}"
    );
    // A file within the cap, size unknown, is read whole.
    f.server.put_file("/small", vec![1u8; cap as usize]);
    assert_eq!(
        ssh.download("box", "/small").await.unwrap(),
        vec![1u8; cap as usize]
    );
}
