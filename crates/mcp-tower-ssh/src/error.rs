//! [`SshError`]: every way an SSH operation fails, with the host's profile name (never its
//! credentials) and a message a person can act on; and its conversion into what an MCP
//! client sees: a stable code ([`SshError::code`]) and a short reason
//! ([`SshError::client_message`]) that name the host by its profile only — addresses, user
//! names and file paths stay in the `Display` text, for logs.

use std::{borrow::Cow, path::PathBuf, time::Duration};

use mcp_tower_core::error::{Busy, BusyReason, Layer, QueueTimeout, TimedOut, UpstreamUnavailable};
use mcp_tower_pool::PoolError;
use serde_json::Value;

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
    /// An identity file may be read by its group or by others, so it is not used (OpenSSH's
    /// "UNPROTECTED PRIVATE KEY FILE"). `chmod 600` it, or set
    /// [`allow_insecure_identity_permissions`](crate::SshConfig::allow_insecure_identity_permissions).
    #[error(
        "the private key file of host `{host}` ({}) has permissions {mode:04o}: it must not be readable by group or others (chmod 600 it, or set allow_insecure_identity_permissions = true)",
        .path.display()
    )]
    KeyPermissions {
        /// The profile.
        host: String,
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
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
        /// The failure's stable code: `no_such_file`, `permission_denied` or `sftp_failed`.
        code: &'static str,
        /// The server's answer.
        reason: String,
    },
    /// A file is larger than `max_file_bytes`.
    #[error("`{path}` on `{host}` is larger than the limit of {limit} bytes (max_file_bytes){}", .size.map(|s| format!(": {s} bytes")).unwrap_or_default())]
    TooLarge {
        /// The profile.
        host: String,
        /// The remote path.
        path: String,
        /// Its size, when the server told it (else more than `limit` bytes were sent).
        size: Option<u64>,
        /// `max_file_bytes`.
        limit: u64,
    },
    /// Too many calls to one host: `max_in_flight_per_host` run and `host_queue` wait.
    /// Nothing was sent; try again after `retry_after`.
    #[error("SSH host `{host}` is busy: {in_flight} calls running and {queued} waiting")]
    HostBusy {
        /// The profile.
        host: String,
        /// Calls running on the host now.
        in_flight: usize,
        /// Calls waiting.
        queued: usize,
        /// The retry hint: 250 ms per wave of calls ahead, at most 30 s.
        retry_after: Duration,
    },
    /// A call waited in its host's queue longer than `host_queue_timeout`. Nothing was
    /// sent; try again after `retry_after`.
    #[error("waited {} ms for SSH host `{host}` to have room and gave up", .waited.as_millis())]
    QueueTimeout {
        /// The profile.
        host: String,
        /// How long it waited.
        waited: Duration,
        /// The retry hint.
        retry_after: Duration,
    },
    /// The server refused to open a channel (OpenSSH's `MaxSessions` reached, or channels
    /// administratively prohibited), on the first connection and again on another.
    #[error(
        "`{host}` refused to open a channel with {open} calls on the connection (its sshd's MaxSessions is lower than max_channels_per_connection?)"
    )]
    ChannelRefused {
        /// The profile.
        host: String,
        /// Calls on the connection when it refused (this one included).
        open: usize,
    },
    /// Too many downloads: `max_concurrent_downloads` run and `download_queue` wait.
    /// Nothing was read; try again later.
    #[error("too many SFTP downloads: {in_flight} reading and {queued} waiting")]
    Busy {
        /// Downloads reading now.
        in_flight: usize,
        /// Downloads waiting.
        queued: usize,
    },
}

/// How long a client is told to wait after [`SshError::Busy`] (`retryAfterMs`).
pub(crate) const BUSY_RETRY_AFTER: Duration = Duration::from_millis(250);

/// The key of the stable SSH error code in an error's `data`.
pub const ERROR_DATA_KEY: &str = "sshError";

impl SshError {
    /// Whether the operation may succeed if tried again: the host was unreachable, the
    /// connection dropped, or it timed out (a busy host, or one that waited too long in its
    /// host's queue, is not: its error carries `retryAfterMs` instead). Bad input, rejected keys and failed logins are
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
    /// (`isError: true`, text [`client_message`](Self::client_message)) rather than a
    /// protocol error.
    pub fn is_tool_failure(&self) -> bool {
        matches!(
            self,
            SshError::UnknownHost { .. }
                | SshError::Sftp { .. }
                | SshError::TooLarge { .. }
                | SshError::Refused { .. }
        )
    }

    /// The error's stable code, for clients and alerts (it never changes meaning):
    /// `unknown_host`, `config`, `identity_file`, `identity_file_permissions`,
    /// `connect_failed`, `connect_timeout`, `host_key_rejected`, `known_hosts_unreadable`,
    /// `host_certificate`, `handshake_failed`, `no_common_algorithm`, `auth_failed`,
    /// `pool_limit`, `shutdown`, `disconnected`, `refused`, `timeout`, `no_such_file`,
    /// `permission_denied`, `sftp_failed`, `file_too_large`, `busy`, `host_busy`,
    /// `queue_timeout`, `channel_refused`.
    pub fn code(&self) -> &'static str {
        match self {
            SshError::UnknownHost { .. } => "unknown_host",
            SshError::Config(_) => "config",
            SshError::Key { .. } => "identity_file",
            SshError::KeyPermissions { .. } => "identity_file_permissions",
            SshError::Connect { .. } => "connect_failed",
            SshError::HostKey { .. } => "host_key_rejected",
            SshError::KnownHosts { .. } => "known_hosts_unreadable",
            SshError::HostCertificate { .. } => "host_certificate",
            SshError::Handshake {
                source: russh::Error::NoCommonAlgo { .. },
                ..
            } => "no_common_algorithm",
            SshError::Handshake { .. } => "handshake_failed",
            SshError::Auth { .. } => "auth_failed",
            SshError::Pool(e) => match ssh_cause(e) {
                Some(cause) => cause.code(),
                None => match e {
                    PoolError::ConnectTimeout { .. } => "connect_timeout",
                    PoolError::LimitReached { .. } => "pool_limit",
                    PoolError::Shutdown => "shutdown",
                    _ => "connect_failed",
                },
            },
            SshError::Disconnected { .. } => "disconnected",
            SshError::Refused { .. } => "refused",
            SshError::Timeout { .. } => "timeout",
            SshError::Sftp { code, .. } => code,
            SshError::TooLarge { .. } => "file_too_large",
            SshError::Busy { .. } => "busy",
            SshError::HostBusy { .. } => "host_busy",
            SshError::QueueTimeout { .. } => "queue_timeout",
            SshError::ChannelRefused { .. } => "channel_refused",
        }
    }

    /// What a client may read: `<code>: <short reason>`, naming the host by its profile
    /// name only. Unlike `Display` (which is for logs), it never carries an address, a user
    /// name, a remote or local path, a known_hosts line or a server's free text.
    pub fn client_message(&self) -> String {
        format!("{}: {}", self.code(), self.client_reason())
    }

    fn client_reason(&self) -> Cow<'static, str> {
        match self {
            // The name asked for is the caller's own input; the rest are profile names.
            SshError::UnknownHost { host, known } => Cow::Owned(format!(
                "unknown SSH host `{host}`; the configured hosts are: {known}"
            )),
            SshError::Config(_) => "the SSH configuration is invalid".into(),
            SshError::Key { host, .. } => {
                format!("the private key of `{host}` cannot be loaded").into()
            }
            SshError::KeyPermissions { host, .. } => {
                format!("the private key file of `{host}` is readable by others").into()
            }
            SshError::Connect { host, source, .. } => {
                format!("cannot reach `{host}` ({})", source.kind()).into()
            }
            SshError::HostKey { host, verdict, .. } => {
                let why = match verdict {
                    HostKeyVerdict::Trusted { .. } => "trusted",
                    HostKeyVerdict::Mismatch { .. } => "it does not match the recorded key",
                    HostKeyVerdict::Unknown => "the host is not in known_hosts",
                    HostKeyVerdict::Revoked { .. } => "the key is revoked",
                };
                format!("the host key of `{host}` was rejected: {why}").into()
            }
            SshError::KnownHosts { .. } => "the known_hosts file cannot be read".into(),
            SshError::HostCertificate { host } => {
                format!("`{host}` presented a host certificate, which is not supported").into()
            }
            SshError::Handshake {
                host,
                source: russh::Error::NoCommonAlgo { kind, .. },
            } => format!(
                "`{host}` offers no {} algorithm this client accepts (SHA-1 algorithms are off \
                 unless allow_sha1_algorithms is set)",
                format!("{kind:?}").to_lowercase()
            )
            .into(),
            SshError::Handshake { host, .. } => {
                format!("the SSH handshake with `{host}` failed").into()
            }
            SshError::Auth { host, tried, .. } => {
                format!("login to `{host}` failed (tried: {tried})").into()
            }
            SshError::Pool(e) => match (ssh_cause(e), e) {
                (Some(cause), PoolError::Backoff { retry_in, .. }) => format!(
                    "{} (next attempt in {} ms)",
                    cause.client_reason(),
                    retry_in.as_millis()
                )
                .into(),
                (Some(cause), _) => cause.client_reason(),
                (None, PoolError::Shutdown) => "the SSH pool is shutting down".into(),
                // The pool's own messages name the key (the profile) only.
                (None, other) => other.to_string().into(),
            },
            SshError::Disconnected { host, during } => {
                format!("the connection to `{host}` closed during {during}").into()
            }
            SshError::Refused { .. }
            | SshError::Timeout { .. }
            | SshError::Busy { .. }
            | SshError::HostBusy { .. }
            | SshError::QueueTimeout { .. }
            | SshError::ChannelRefused { .. } => {
                // No address, user or path in these.
                self.to_string().into()
            }
            SshError::Sftp { host, op, code, .. } => {
                let what = match *code {
                    "no_such_file" => "no such file",
                    "permission_denied" => "permission denied",
                    _ => "the server refused it",
                };
                format!("SFTP {op} on `{host}` failed: {what}").into()
            }
            SshError::TooLarge { size, limit, .. } => format!(
                "the file is larger than the limit of {limit} bytes (max_file_bytes){}",
                size.map(|s| format!(": {s} bytes")).unwrap_or_default()
            )
            .into(),
        }
    }

    /// The core's upstream-unavailable error for profile `host`, whose message carries
    /// [`client_message`](Self::client_message): built from the code and profile names
    /// only (the core would replace any reason built at run time with a generic one).
    fn unavailable(&self, host: &str) -> rmcp::ErrorData {
        let mut error: rmcp::ErrorData =
            UpstreamUnavailable::new(Layer::Pool, host, UpstreamUnavailable::UNREACHABLE).into();
        error.message = format!(
            "upstream `{host}` is unavailable: {}",
            self.client_message()
        )
        .into();
        error
    }

    /// The error an MCP client gets for it from tool `tool`: [`TimedOut`] for a timeout,
    /// [`Busy`] (`-31050`, with `retryAfterMs`) when too many downloads run, when a host's
    /// queue is full or when the host refused a channel twice, [`QueueTimeout`] (`-31051`)
    /// when a call waited too long for its host, [`UpstreamUnavailable`] (naming the host's
    /// profile) when the host could not be reached or the connection dropped,
    /// `invalid_params` for an unknown host, `internal_error` otherwise. Its message is
    /// [`client_message`](Self::client_message) (no address, user name or path), and
    /// `data.sshError` holds the [`code`](Self::code). The full error is logged (`WARN`).
    pub fn to_error_data(&self, tool: &str) -> rmcp::ErrorData {
        tracing::warn!(tool, code = self.code(), "SSH call failed: {self}");
        let mut data = match self {
            SshError::Timeout { after, .. } => TimedOut {
                layer: Layer::Pool,
                tool: tool.to_owned(),
                after: *after,
            }
            .into(),
            SshError::Busy { in_flight, queued } => Busy {
                layer: Layer::Pool,
                tool: Some(tool.to_owned()),
                reason: BusyReason::QueueFull,
                in_flight: *in_flight,
                queued: *queued,
                retry_after: BUSY_RETRY_AFTER,
            }
            .into(),
            SshError::HostBusy {
                in_flight,
                queued,
                retry_after,
                ..
            } => Busy {
                layer: Layer::Pool,
                tool: Some(tool.to_owned()),
                reason: if *queued == 0 {
                    BusyReason::LimitReached
                } else {
                    BusyReason::QueueFull
                },
                in_flight: *in_flight,
                queued: *queued,
                retry_after: *retry_after,
            }
            .into(),
            SshError::QueueTimeout {
                waited,
                retry_after,
                ..
            } => QueueTimeout {
                layer: Layer::Pool,
                tool: Some(tool.to_owned()),
                waited: *waited,
                retry_after: *retry_after,
            }
            .into(),
            SshError::ChannelRefused { open, .. } => Busy {
                layer: Layer::Pool,
                tool: Some(tool.to_owned()),
                reason: BusyReason::LimitReached,
                in_flight: *open,
                queued: 0,
                retry_after: BUSY_RETRY_AFTER,
            }
            .into(),
            SshError::Pool(e) => {
                let error = self.unavailable(e.key().unwrap_or("ssh"));
                // The pool is backing off: the retry layer waits for it instead of spending
                // its attempts at once.
                match e.retry_after() {
                    Some(after) => mcp_tower_core::error::with_retry_after(error, after),
                    None => error,
                }
            }
            SshError::Connect { host, .. }
            | SshError::Disconnected { host, .. }
            | SshError::Handshake { host, .. }
            | SshError::HostKey { host, .. }
            | SshError::HostCertificate { host }
            | SshError::Auth { host, .. } => self.unavailable(host),
            SshError::UnknownHost { .. } => {
                rmcp::ErrorData::invalid_params(self.client_message(), None)
            }
            _ => rmcp::ErrorData::internal_error(self.client_message(), None),
        };
        match &mut data.data {
            Some(Value::Object(map)) => {
                map.insert(ERROR_DATA_KEY.into(), Value::from(self.code()));
            }
            other => *other = Some(serde_json::json!({ ERROR_DATA_KEY: self.code() })),
        }
        data
    }
}

/// The SSH error a pool error wraps (a failed connect, also while connects back off).
fn ssh_cause(error: &PoolError) -> Option<&SshError> {
    match error {
        PoolError::Connect { source, .. } => source.downcast_ref::<SshError>(),
        PoolError::Backoff { last, .. } => ssh_cause(last),
        _ => None,
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    /// The pool's backoff reaches the client as a retry hint (the retry layer then waits
    /// for it); the message stays the short vetted one.
    #[test]
    fn a_pool_backoff_carries_its_retry_hint() {
        let key: Arc<str> = Arc::from("box");
        let error = SshError::Pool(PoolError::Backoff {
            key: Arc::clone(&key),
            last: Box::new(PoolError::ConnectTimeout {
                key,
                after: Duration::from_secs(1),
            }),
            retry_in: Duration::from_millis(750),
        });
        let data = error.to_error_data("ssh_exec");
        assert_eq!(
            mcp_tower_core::error::retry_after(&data),
            Some(Duration::from_millis(750))
        );
        assert!(
            data.message.contains("upstream `box` is unavailable"),
            "{}",
            data.message
        );
    }
}
