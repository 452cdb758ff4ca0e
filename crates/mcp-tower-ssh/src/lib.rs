//! Pooled SSH for MCP servers, on [russh](https://docs.rs/russh) and
//! [`mcp_tower_pool`]: run commands and move files on an allowlist of hosts from tool
//! calls, over connections kept open and shared.
//!
//! # What it is for
//!
//! An MCP server whose tools act on machines (`ssh_exec`, `ssh_read_file`, SFTP…) should not
//! pay an SSH handshake per call (tens of milliseconds, more over a WAN), nor open a
//! connection per concurrent call, nor skip host-key checking as most SSH tool servers do.
//! [`SshPool`] keeps multiplexed connections per host (each exec is a channel on one, at
//! most `max_channels_per_connection` — OpenSSH's `MaxSessions`, 10 — per connection; a
//! full connection makes it open another, up to `pool.max`), bounds the calls in flight per
//! host with a queue (busy and queue-timeout errors beyond it), verifies every host key
//! against a known_hosts file, caps what a command may print and how long it may run, and
//! reuses one SFTP session per connection.
//!
//! - [`SshConfig`]: the `[ssh]` section — known_hosts, keep-alives, exec timeout and output
//!   cap, SFTP limits, channels per connection and calls per host, the
//!   [`PoolConfig`](mcp_tower_pool::PoolConfig), and the allowlist of
//!   [`HostProfile`]s (address, user, key file and/or password as [`Secret`]s, which never
//!   appear in `Debug` output, errors, logs or metric labels).
//! - [`SshPool`]: `exec`, `upload`, `download`, `list`, `stat` by host name; an unknown host
//!   is an error naming the allowed ones. [`host_load`](SshPool::host_load) tells how busy
//!   a host is ([`HostLoad`]). Its [`handle`](SshPool::handle) is a
//!   [`LayerReport`](mcp_tower_core::LayerReport) for `/metrics` and `/stats`.
//! - [`SshConnector`]: the [`Connector`](mcp_tower_pool::Connector) behind it (TCP with
//!   `TCP_NODELAY`, host key check, key or password login, keep-alive pings), for use with
//!   the generic pool directly.
//! - [`KnownHosts`]: the OpenSSH known_hosts format (hashed names, `[host]:port`, wildcards,
//!   negation, `@revoked`).
//! - [`SshError::to_error_data`]: what an MCP client sees — `UpstreamUnavailable` when the
//!   host cannot be reached or the connection drops mid-call, `TimedOut` on a timeout,
//!   `Busy` (`-31050`, `retryAfterMs`) when too many downloads run or a host's queue is
//!   full, `QueueTimeout` (`-31051`) when a call waited too long for its host — with a
//!   stable [code](SshError::code) and a
//!   [short reason](SshError::client_message) that never carry an address, a user name or a
//!   path (the full error is logged).
//!
//! Hardened defaults: SHA-1 algorithms (`ssh-rsa` host keys, `hmac-sha1`) are not offered
//! ([`allow_sha1_algorithms`](SshConfig::allow_sha1_algorithms) brings them back), identity
//! files readable by others are refused
//! ([`allow_insecure_identity_permissions`](SshConfig::allow_insecure_identity_permissions)),
//! and downloads are capped at 8 MiB with at most 4 reading at once.
//!
//! russh is built with `ring` (pure Rust and C from crates.io, no cmake or system
//! library) and `rsa` (RSA keys).
//!
//! # When to use it
//!
//! In a server whose tools run commands or move files on a known set of hosts. It is not a
//! shell: each exec is one command on a fresh channel, without a pty.
//!
//! ```no_run
//! use mcp_tower_ssh::{HostProfile, SshConfig, SshPool};
//!
//! # async fn run() -> Result<(), mcp_tower_ssh::SshError> {
//! let config = SshConfig::default()
//!     .with_known_hosts("/etc/mcp/known_hosts")
//!     .with_host(
//!         "web-1",
//!         HostProfile::new("10.0.0.5", 22, "deploy").with_identity_file("/etc/mcp/deploy_ed25519"),
//!     );
//! let ssh = SshPool::new(config)?;
//! let out = ssh.exec("web-1", "uptime").await?; // connects once, then reuses
//! println!("{} (exit {:?})", out.stdout_lossy(), out.exit_status);
//! ssh.upload("web-1", "/tmp/hello.txt", b"hello").await?;
//! assert_eq!(ssh.download("web-1", "/tmp/hello.txt").await?, b"hello");
//! assert!(ssh.exec("db-9", "true").await.is_err()); // not in the allowlist
//! ssh.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod config;
mod connection;
mod connector;
mod error;
mod exec;
mod host_key;
mod known_hosts;
mod pool;
mod sftp;

pub use config::{HostProfile, Secret, SshConfig};
pub use connection::SshConnection;
pub use connector::SshConnector;
pub use error::{ERROR_DATA_KEY, SshError};
pub use exec::{ExecLimits, ExecOutput};
pub use known_hosts::{HostKeyVerdict, KnownHosts, fingerprint};
pub use pool::{HostLoad, SshPool};
pub use sftp::{DirEntry, FileStat};

#[cfg(feature = "testing")]
pub mod testing;
