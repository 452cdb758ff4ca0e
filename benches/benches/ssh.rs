//! `ssh/*`: the SSH pool (mcp-tower-ssh on russh) next to a connection per exec and OpenSSH's
//! own multiplexing (ControlMaster).
//!
//! - `ssh/exec_true`: run `true` on the host. `pooled` (one connection kept open, a channel
//!   per exec) against `connect_per_exec` (TCP, key exchange, host key check and login for
//!   every exec: the pool disabled) and, when OpenSSH is the target and `ssh` is installed,
//!   `openssh_controlmaster` (`ssh -S <socket> host true`: a process per exec over a master
//!   connection). Goals: pooled p50 ≤ 3 ms on loopback, ≥ 10× connect-per-exec, ≥ 3×
//!   ControlMaster.
//! - `ssh/sftp_upload_1mb`: upload 1 MiB over the pooled connection's SFTP session, against
//!   a fresh connection (and SFTP session) per upload. Seed target: < 1 s.
//! - `ssh/warm_connection`: `SshPool::connection(host)` when the connection is open (the
//!   profile lookup and the pool's warm `get`) against the generic pool's `get`. Seed target:
//!   < 1 ms.
//!
//! The target: a real sshd when `.ci/ssh.sh` set it up (the `MCP_TOWER_SSH_*` variables, or
//! `.ci/work/ssh/env` and its `sshd-ctl.sh`, which this bench then starts and stops), else the
//! in-process russh server of `mcp_tower_ssh::testing` (on the same runtime, so its work is
//! in the figures too). The bench prints which.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group};
use mcp_tower_pool::PoolConfig;
use mcp_tower_ssh::{
    HostProfile, SshConfig, SshPool,
    testing::{TestServer, write_private_key},
};

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}

criterion_group!(benches, exec_true, sftp_upload_1mb, warm_connection);

fn runtime_io() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Where the commands run.
enum Target {
    /// The in-process russh server (kept alive for the bench).
    InProcess { _server: TestServer, dir: PathBuf },
    /// A real sshd set up by `.ci/ssh.sh`.
    OpenSsh {
        port: u16,
        user: String,
        key: PathBuf,
        known_hosts: PathBuf,
        /// `sshd-ctl.sh`, when this bench started sshd (and must stop it).
        started: Option<PathBuf>,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::InProcess { .. } => {
                "the in-process russh server (mcp_tower_ssh::testing; no sshd set up by .ci/ssh.sh)"
                    .into()
            }
            Target::OpenSsh { port, user, .. } => {
                format!("OpenSSH sshd on 127.0.0.1:{port} as `{user}` (set up by .ci/ssh.sh)")
            }
        }
    }

    fn profile(&self, key_file: &Path, port: u16, user: &str) -> HostProfile {
        HostProfile::new("127.0.0.1", port, user).with_identity_file(key_file)
    }

    /// The SSH configuration for the target, with this pool configuration.
    fn config(&self, pool: PoolConfig) -> SshConfig {
        let (profile, known_hosts) = match self {
            Target::InProcess { _server, dir } => (
                self.profile(
                    &dir.join("id"),
                    _server.port(),
                    mcp_tower_ssh::testing::TEST_USER,
                ),
                dir.join("known_hosts"),
            ),
            Target::OpenSsh {
                port,
                user,
                key,
                known_hosts,
                ..
            } => (self.profile(key, *port, user), known_hosts.clone()),
        };
        SshConfig::default()
            .with_known_hosts(known_hosts)
            .with_pool(pool)
            .with_host("bench", profile)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        match self {
            Target::InProcess { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Target::OpenSsh {
                started: Some(ctl), ..
            } => {
                let _ = Command::new("bash")
                    .arg(ctl.as_os_str())
                    .arg("stop")
                    .status();
            }
            Target::OpenSsh { .. } => {}
        }
    }
}

/// `MCP_TOWER_SSH_*` variables (name, value).
type Settings = Vec<(String, String)>;

/// The `MCP_TOWER_SSH_*` settings from the environment, else from `.ci/work/ssh/env` (with
/// the `sshd-ctl.sh` that starts sshd).
fn openssh_settings() -> Option<(Settings, Option<PathBuf>)> {
    let from_env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MCP_TOWER_SSH_"))
        .collect();
    if from_env.iter().any(|(k, _)| k == "MCP_TOWER_SSH_PORT") {
        return Some((from_env, None));
    }
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/work/ssh");
    let text = std::fs::read_to_string(work.join("env")).ok()?;
    let vars = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect();
    Some((vars, Some(work.join("sshd-ctl.sh"))))
}

fn target(rt: &tokio::runtime::Runtime) -> Target {
    if let Some((vars, ctl)) = openssh_settings() {
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (usable, started) = match ctl {
            // Set up by `.ci/ssh.sh` earlier but not running now: start sshd for the bench
            // (needs the rights `.ci/ssh.sh` had; if that fails, use the in-process server).
            Some(ctl) => {
                let ok = Command::new("bash")
                    .arg(ctl.as_os_str())
                    .arg("start")
                    .status()
                    .is_ok_and(|s| s.success());
                (ok, ok.then_some(ctl))
            }
            // Run by `.ci/ssh.sh bench`: sshd is up.
            None => (true, None),
        };
        if let (true, Some(port), Some(user), Some(key), Some(known_hosts)) = (
            usable,
            get("MCP_TOWER_SSH_PORT").and_then(|p| p.parse().ok()),
            get("MCP_TOWER_SSH_USER"),
            get("MCP_TOWER_SSH_KEY"),
            get("MCP_TOWER_SSH_KNOWN_HOSTS"),
        ) {
            let openssh = Target::OpenSsh {
                port,
                user,
                key: key.into(),
                known_hosts: known_hosts.into(),
                started,
            };
            // A stale setup (keys regenerated by another checkout's `.ci/ssh.sh`, say) must
            // not sink the whole bench run: probe once, else use the in-process server.
            match rt.block_on(probe(&openssh)) {
                Ok(()) => return openssh,
                Err(e) => eprintln!(
                    "ssh bench: the OpenSSH target set up by .ci/ssh.sh does not answer ({e}); \
                     using the in-process server (rerun .ci/ssh.sh to bench OpenSSH)"
                ),
            }
        }
    }
    let server = rt
        .block_on(TestServer::start())
        .expect("start the in-process SSH server");
    let dir = std::env::temp_dir().join(format!("mcp-tower-ssh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench temp dir");
    write_private_key(server.client_key(), &dir.join("id")).expect("write the client key");
    std::fs::write(dir.join("known_hosts"), server.known_hosts_line()).expect("known_hosts");
    Target::InProcess {
        _server: server,
        dir,
    }
}

/// One exec of `true` on `target` over a fresh pool.
async fn probe(target: &Target) -> Result<(), String> {
    let pool = SshPool::new(target.config(quiet_pool())).map_err(|e| e.to_string())?;
    let result = pool.exec("bench", "true").await;
    pool.shutdown().await;
    match result {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!("`true` exited with {:?}", out.exit_status)),
        Err(e) => Err(e.to_string()),
    }
}

fn quiet_pool() -> PoolConfig {
    PoolConfig::default()
        .with_health_interval(Duration::ZERO)
        .with_connect_backoff(Duration::ZERO)
}

/// Times `iters` sequential runs of `op` on `rt`.
fn time_async<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            op().await;
        }
        start.elapsed()
    })
}

/// OpenSSH's ControlMaster: a master connection, then `ssh -S socket host true` per exec.
struct ControlMaster {
    args: Vec<String>,
    socket: PathBuf,
}

impl ControlMaster {
    fn start(target: &Target) -> Option<Self> {
        let Target::OpenSsh {
            port,
            user,
            key,
            known_hosts,
            ..
        } = target
        else {
            return None;
        };
        Command::new("ssh").arg("-V").output().ok()?;
        let socket = std::env::temp_dir().join(format!("mcp-tower-ssh-cm-{}", std::process::id()));
        let args: Vec<String> = vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "-i".into(),
            key.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-S".into(),
            socket.display().to_string(),
            "-l".into(),
            user.clone(),
        ];
        let master = Command::new("ssh")
            .args(&args)
            .args([
                "-o",
                "ControlMaster=yes",
                "-o",
                "ControlPersist=yes",
                "-f",
                "-N",
                "127.0.0.1",
            ])
            .status()
            .ok()?;
        master.success().then_some(Self { args, socket })
    }

    fn exec_true(&self) {
        let status = Command::new("ssh")
            .args(&self.args)
            .args(["-o", "ControlMaster=no", "127.0.0.1", "true"])
            .status()
            .expect("spawn ssh");
        assert!(status.success(), "ssh -S … true failed");
    }
}

impl Drop for ControlMaster {
    fn drop(&mut self) {
        let _ = Command::new("ssh")
            .args(&self.args)
            .args(["-O", "exit", "127.0.0.1"])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn exec_true(c: &mut Criterion) {
    let rt = runtime_io();
    let target = target(&rt);
    eprintln!("ssh bench target: {}", target.describe());
    let (pooled, fresh) = rt.block_on(async {
        let pooled = SshPool::new(target.config(quiet_pool())).expect("pool");
        let fresh = SshPool::new(target.config(quiet_pool().with_enabled(false).with_min(0)))
            .expect("pool");
        // Warm: the pooled connection is open before timing.
        assert!(pooled.exec("bench", "true").await.expect("exec").success());
        (pooled, fresh)
    });
    let control_master = ControlMaster::start(&target);
    if control_master.is_none() {
        eprintln!(
            "ssh bench: no OpenSSH ControlMaster baseline (needs sshd set up by .ci/ssh.sh and `ssh`)"
        );
    }

    let mut group = c.benchmark_group("ssh/exec_true");
    group.sample_size(20);
    group.bench_function("connect_per_exec", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async {
                let out = fresh.exec("bench", "true").await.expect("exec");
                assert!(out.success());
            })
        })
    });
    if let Some(cm) = &control_master {
        group.bench_function("openssh_controlmaster", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    cm.exec_true();
                }
                start.elapsed()
            })
        });
    }
    group.bench_function("pooled", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async {
                let out = pooled.exec("bench", "true").await.expect("exec");
                assert!(out.success());
            })
        })
    });
    group.finish();
    let connects = pooled.stats().key("bench").map(|k| k.connects);
    eprintln!("ssh bench: pooled execs used {connects:?} connection(s)");
    drop(control_master);
    rt.block_on(async {
        pooled.shutdown().await;
        fresh.shutdown().await;
    });
    drop(target);
}

fn sftp_upload_1mb(c: &mut Criterion) {
    let rt = runtime_io();
    let target = target(&rt);
    let data: Arc<Vec<u8>> = Arc::new((0..1u32 << 20).map(|i| (i % 251) as u8).collect());
    let path = format!("/tmp/mcp-tower-ssh-bench-{}.bin", std::process::id());
    let (pooled, fresh) = rt.block_on(async {
        let pooled = SshPool::new(target.config(quiet_pool())).expect("pool");
        let fresh = SshPool::new(target.config(quiet_pool().with_enabled(false).with_min(0)))
            .expect("pool");
        pooled.upload("bench", &path, &data).await.expect("upload");
        (pooled, fresh)
    });
    let mut group = c.benchmark_group("ssh/sftp_upload_1mb");
    group.sample_size(10);
    for (name, ssh) in [("fresh_connection", &fresh), ("pooled", &pooled)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_async(&rt, iters, || async {
                    ssh.upload("bench", &path, &data).await.expect("upload");
                })
            })
        });
    }
    group.finish();
    rt.block_on(async {
        if matches!(target, Target::OpenSsh { .. }) {
            let _ = pooled.exec("bench", &format!("rm -f {path}")).await;
        }
        pooled.shutdown().await;
        fresh.shutdown().await;
    });
    drop(target);
}

fn warm_connection(c: &mut Criterion) {
    let rt = runtime_io();
    let target = target(&rt);
    let ssh = rt.block_on(async {
        let ssh = SshPool::new(target.config(quiet_pool())).expect("pool");
        ssh.exec("bench", "true").await.expect("exec");
        ssh
    });
    let key: Arc<str> = Arc::from("bench");
    let mut group = c.benchmark_group("ssh/warm_connection");
    group.bench_function("pool_get", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async {
                std::hint::black_box(ssh.pool().get(&key).await.expect("get"));
            })
        })
    });
    group.bench_function("ssh_pool_connection", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async {
                std::hint::black_box(ssh.connection("bench").await.expect("connection"));
            })
        })
    });
    group.finish();
    rt.block_on(ssh.shutdown());
    drop(target);
}
