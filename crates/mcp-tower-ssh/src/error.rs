//! [`SshError`]: every way an SSH operation fails, with the host's profile name (never its
//! credentials) and a message a person can act on; and its conversion into the core errors
//! an MCP client sees.

use std::{path::PathBuf, time::Duration};

use mcp_tower_core::error::{Layer, TimedOut, UpstreamUnavailable};
use mcp_tower_pool::PoolError;

use crate::HostKeyVerdict;

/// Why an SSH operation failed. Messages name the host by its profile name and never
/// contain a password, a passphrase or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The host is not in the allowlist of profiles.
    #[error("unknown SSH host `{host}`; the configured hosts are: {known}")]
    UnknownHost {
        /// The name asked for.
        host: String,
        /// The configured profile names, comma-separated.
        known: String,
    },
    /// The configuration is invalid; the message names the field.
    #[error("invalid SSH configuration: {0}")]
    Config(String),
    /// A private key file could not be read or decrypted.
    #[error("cannot load the private key of host `{host}` from {}: {reason}", .path.display())]
    Key {
        /// The profile.
        host: String,
        /// The key file.
        path: PathBuf,
        /// Why (never the key's contents).
        reason: String,
    },
    /// The TCP connection could not be made.
    #[error("cannot reach SSH host `{host}` at {address}: {source}")]
    Connect {
        /// The profile.
        host: String,
        /// `host:port`.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server's host key was not accepted: no session was opened.
    #[error("host key of `{host}` ({presented}) rejected: {verdict} [known_hosts: {}]", .known_hosts.display())]
    HostKey {
        /// The profile.
        host: String,
        /// The presented key's fingerprint (`SHA256:…`).
        presented: String,
        /// Why it was rejected.
        verdict: HostKeyVerdict,
        /// The known_hosts file checked.
        known_hosts: PathBuf,
    },
    /// The known_hosts file could not be read.
    #[error("cannot read the known_hosts file {}: {reason}", .path.display())]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server presented a host certificate, which is not supported.
    #[error("host `{host}` presented a host certificate; only plain host keys are supported")]
    HostCertificate {
        /// The profile.
        host: String,
    },
    /// The SSH handshake failed (protocol, algorithms).
    #[error("SSH handshake with `{host}` failed: {source}")]
    Handshake {
        /// The profile.
        host: String,
        /// russh's error.
        source: russh::Error,
    },
    /// The server refused every credential of the profile.
    #[error("authentication as `{user}` on `{host}` failed (tried: {tried})")]
    Auth {
        /// The profile.
        host: String,
        /// The user.
        user: String,
        /// The methods tried (`publickey`, `password`).
        tried: String,
    },
    /// No connection could be had from the pool (it wraps the connect error).
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The connection closed under the operation.
    #[error("the SSH connection to `{host}` closed during {during}")]
    Disconnected {
        /// The profile.
        host: String,
        /// What was running (`exec`, `sftp`…).
        during: &'static str,
    },
    /// The server refused to run the command (or to start SFTP).
    #[error("`{host}` refused the {request} request")]
    Refused {
        /// The profile.
        host: String,
        /// `exec` or `sftp subsystem`.
        request: &'static str,
    },
    /// The operation took longer than its timeout; its channel was closed.
    #[error("{during} on `{host}` timed out after {}", humantime_serde::re::humantime::format_duration(*.after))]
    Timeout {
        /// The profile.
        host: String,
        /// What timed out.
        during: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// An SFTP request failed (no such file, permission denied…).
    #[error("SFTP {op} `{path}` on `{host}` failed: {reason}")]
    Sftp {
        /// The profile.
        host: String,
        /// The operation (`download`, `upload`, `list`, `stat`).
        op: &'static str,
        /// The remote path.
        path: String,
        /// The server's answer.
        reason: String,
    },
    /// A file is larger than `max_file_bytes`.
    #[error("`{path}` on `{host}` is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The profile.
        host: String,
        /// The remote path.
        path: String,
        /// Its size.
        size: u64,
        /// `max_file_bytes`.
        limit: u64,
    },
}

impl SshError {
    /// Whether the operation may succeed if tried again: the host was unreachable, the
    /// connection dropped, or it timed out. Bad input, rejected keys and failed logins are
    /// not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            SshError::Connect { .. }
            | SshError::Disconnected { .. }
            | SshError::Timeout { .. }
            | SshError::Handshake { .. } => true,
            SshError::Pool(e) => pool_error_is_transient(e),
            _ => false,
        }
    }

    /// Whether the error is about the request rather than the host (an unknown host, a
    /// missing file, a file too large): an MCP tool reports it as a tool error
    /// (`isError: true`) rather than a protocol error.
    pub fn is_tool_failure(&self) -> bool {
        matches!(
            self,
            SshError::UnknownHost { .. }
                | SshError::Sftp { .. }
                | SshError::TooLarge { .. }
                | SshError::Refused { .. }
        )
    }

    /// The error an MCP client gets for it from tool `tool`: [`TimedOut`] for a timeout,
    /// [`UpstreamUnavailable`] (naming the host's profile) when the host could not be reached
    /// or the connection dropped, `invalid_params` for an unknown host, `internal_error`
    /// otherwise.
    pub fn to_error_data(&self, tool: &str) -> rmcp::ErrorData {
        match self {
            SshError::Timeout { after, .. } => TimedOut {
                layer: Layer::Pool,
                tool: tool.to_owned(),
                after: *after,
            }
            .into(),
            SshError::Pool(e) => e.clone().into(),
            SshError::Connect { host, .. }
            | SshError::Disconnected { host, .. }
            | SshError::Handshake { host, .. }
            | SshError::HostKey { host, .. }
            | SshError::HostCertificate { host }
            | SshError::Auth { host, .. } => UpstreamUnavailable {
                layer: Layer::Pool,
                upstream: host.clone(),
                reason: self.to_string().into(),
            }
            .into(),
            SshError::UnknownHost { .. } => rmcp::ErrorData::invalid_params(self.to_string(), None),
            _ => rmcp::ErrorData::internal_error(self.to_string(), None),
        }
    }
}

/// A pool error is transient unless it wraps a connect error that is not (a rejected host
/// key, a failed login, an unreadable known_hosts file), also while connects back off.
fn pool_error_is_transient(error: &PoolError) -> bool {
    match error {
        PoolError::Connect { source, .. } => source
            .downcast_ref::<SshError>()
            .is_none_or(SshError::is_transient),
        PoolError::Backoff { last, .. } => pool_error_is_transient(last),
        _ => true,
    }
}

impl From<SshError> for rmcp::ErrorData {
    fn from(e: SshError) -> Self {
        e.to_error_data("ssh")
    }
}
