//! [`SshConfig`]: the `[ssh]` section — known_hosts, timeouts, output caps, the pool, and the
//! allowlist of host profiles ([`HostProfile`]) with their credentials ([`Secret`]).

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use mcp_tower_pool::PoolConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `~/x` → `$HOME/x` (other paths unchanged), for paths written in a configuration file.
pub(crate) fn expand_home(path: &std::path::Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// A credential (a password, a key passphrase). Its `Debug` and `Display` print
/// `[redacted]`, and it serializes as `"[redacted]"`, so a configuration can be logged or
/// shown on an admin page without leaking it. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself. Only pass it to the SSH library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// A string. Anything else is refused *without* its value in the error (serde's own
    /// message would quote a number or a boolean, and a mistyped secret is still one).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (the value is not shown: it is a secret)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("a number"),
                    &self,
                ))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("a number"),
                    &self,
                ))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("a number"),
                    &self,
                ))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("a boolean"),
                    &self,
                ))
            }
        }
        deserializer.deserialize_string(SecretVisitor)
    }
}

/// One host a server may talk to: where it is and how to log in. The profile's *name* (its
/// key in [`SshConfig::hosts`]) is what tools and metrics use; the address and credentials
/// never appear in metric labels.
///
/// ```toml
/// [ssh.hosts.web-1]
/// host = "10.0.0.5"
/// port = 22
/// user = "deploy"
/// identity_file = "/etc/mcp/keys/deploy_ed25519"   # ed25519, ECDSA or RSA, OpenSSH or PEM
/// # identity_passphrase = "…"                     # if the key file is encrypted
/// # password = "…"                                # tried after the key, if given
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostProfile {
    /// Host name or IP address to connect to (also the name looked up in known_hosts).
    pub host: String,
    /// TCP port. Default `22`.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// A private key file (OpenSSH or PEM format: ed25519, ECDSA, RSA). Read once, when the
    /// pool is built. A leading `~/` is the user's home.
    pub identity_file: Option<PathBuf>,
    /// The passphrase of an encrypted `identity_file`.
    pub identity_passphrase: Option<Secret>,
    /// A password, tried after the key (or alone).
    pub password: Option<Secret>,
    /// Overrides [`SshConfig::exec_timeout`] for this host.
    #[serde(with = "humantime_serde")]
    pub exec_timeout: Option<Duration>,
    /// Overrides [`SshConfig::max_output_bytes`] for this host.
    pub max_output_bytes: Option<usize>,
    /// Overrides [`SshConfig::max_channels_per_connection`] for this host (its sshd's
    /// `MaxSessions`).
    pub max_channels_per_connection: Option<usize>,
}

impl Default for HostProfile {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 22,
            user: String::new(),
            identity_file: None,
            identity_passphrase: None,
            password: None,
            exec_timeout: None,
            max_output_bytes: None,
            max_channels_per_connection: None,
        }
    }
}

impl HostProfile {
    /// A profile for `user@host:port` with no credentials yet.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            ..Self::default()
        }
    }

    /// Logs in with this private key file.
    pub fn with_identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// Decrypts the key file with this passphrase.
    pub fn with_identity_passphrase(mut self, passphrase: Secret) -> Self {
        self.identity_passphrase = Some(passphrase);
        self
    }

    /// Logs in with this password (after the key, if there is one).
    pub fn with_password(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// Overrides the exec timeout for this host.
    pub fn with_exec_timeout(mut self, timeout: Duration) -> Self {
        self.exec_timeout = Some(timeout);
        self
    }

    /// Overrides the output cap for this host.
    pub fn with_max_output_bytes(mut self, max: usize) -> Self {
        self.max_output_bytes = Some(max);
        self
    }

    /// Overrides the channels per connection for this host (its sshd's `MaxSessions`).
    pub fn with_max_channels_per_connection(mut self, max: usize) -> Self {
        self.max_channels_per_connection = Some(max);
        self
    }

    /// How known_hosts names this host: `host` on port 22, `[host]:port` otherwise.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        if self.host.is_empty() {
            return Err(format!("ssh.hosts.{name}.host: must not be empty"));
        }
        if self.user.is_empty() {
            return Err(format!("ssh.hosts.{name}.user: must not be empty"));
        }
        if self.port == 0 {
            return Err(format!("ssh.hosts.{name}.port: must not be 0"));
        }
        if self.identity_file.is_none() && self.password.is_none() {
            return Err(format!(
                "ssh.hosts.{name}: give `identity_file` or `password` (or both)"
            ));
        }
        if self.identity_passphrase.is_some() && self.identity_file.is_none() {
            return Err(format!(
                "ssh.hosts.{name}.identity_passphrase: set without `identity_file`"
            ));
        }
        if self.exec_timeout.is_some_and(|t| t.is_zero()) {
            return Err(format!(
                "ssh.hosts.{name}.exec_timeout: must be greater than zero"
            ));
        }
        if self.max_output_bytes == Some(0) {
            return Err(format!(
                "ssh.hosts.{name}.max_output_bytes: must be at least 1"
            ));
        }
        if self.max_channels_per_connection == Some(0) {
            return Err(format!(
                "ssh.hosts.{name}.max_channels_per_connection: must be at least 1"
            ));
        }
        Ok(())
    }
}

/// How an [`SshPool`](crate::SshPool) connects, verifies, limits and pools. Validated once
/// when the pool is built.
///
/// ```toml
/// [ssh]
/// known_hosts = "/etc/mcp/known_hosts"      # default: ~/.ssh/known_hosts
/// insecure_accept_any_host_key = false      # true: NO host key check (tests only; warns on every connect)
/// keepalive_interval = "15s"
/// keepalive_max = 3
/// exec_timeout = "60s"
/// max_output_bytes = 1048576                # stdout + stderr kept per exec
/// max_file_bytes = 8388608                  # largest SFTP download
/// max_concurrent_downloads = 4              # downloads reading at once
/// download_queue = 16                       # downloads waiting for one of those; more: busy
/// max_channels_per_connection = 10          # channels open at once on one connection (sshd's MaxSessions)
/// # max_in_flight_per_host = 40             # calls running at once per host (default: pool.max × the above)
/// host_queue = 64                           # calls waiting per host for one of those; more: busy
/// host_queue_timeout = "5s"                 # a call waiting longer gets queue-timeout
/// allow_sha1_algorithms = false             # true: also ssh-rsa host keys, hmac-sha1 (legacy servers)
/// allow_insecure_identity_permissions = false  # true: key files readable by others are used anyway
///
/// [ssh.pool]                                # mcp-tower-pool's PoolConfig
/// max = 4                                   # connections per host (its other keys default as in [pool])
/// idle_timeout = "5m"
///
/// [ssh.hosts.web-1]
/// host = "10.0.0.5"
/// user = "deploy"
/// identity_file = "/etc/mcp/keys/deploy_ed25519"
/// ```
///
/// ```
/// use mcp_tower_ssh::SshConfig;
///
/// let cfg: SshConfig = toml::from_str(r#"
///     known_hosts = "/etc/mcp/known_hosts"
///     [hosts.web-1]
///     host = "10.0.0.5"
///     user = "deploy"
///     password = "hunter2"
/// "#).unwrap();
/// cfg.validate().unwrap();
/// assert!(!format!("{cfg:?}").contains("hunter2"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// The known_hosts file host keys are checked against (OpenSSH format: plain and hashed
    /// names, `[host]:port`, wildcards, `!` negation, `@revoked`). Read on every connect, so
    /// it can be updated without a restart. A leading `~/` is the user's home. Default:
    /// `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Accept any host key, without checking. **Insecure**: anyone who can intercept the
    /// connection can impersonate the host and read everything, passwords included. For
    /// tests against throw-away servers only; a warning is logged on every connect. Default
    /// `false`.
    pub insecure_accept_any_host_key: bool,
    /// Send an SSH keep-alive when nothing was received for this long (`0s`: never). Default
    /// `15s`.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Close the connection after this many unanswered keep-alives. Default `3`.
    pub keepalive_max: usize,
    /// An exec running longer than this is abandoned (its channel closed). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub exec_timeout: Duration,
    /// Bytes of stdout and stderr kept per exec, together; beyond it the output is cut
    /// (`truncated`) and the channel closed so the remote command cannot block on a full
    /// pipe. Default `1048576` (1 MiB).
    pub max_output_bytes: usize,
    /// The largest file an SFTP download reads (`ssh_read_file`, `sftp_download`). A larger
    /// file fails with [`SshError::TooLarge`](crate::SshError::TooLarge) before anything is
    /// read (or after `max_file_bytes + 1` bytes if the server does not tell the size).
    /// Default `8388608` (8 MiB): an answer of that size, base64 and JSON-escaped, still fits
    /// the usual limits of MCP clients.
    pub max_file_bytes: u64,
    /// Downloads reading at once, across all hosts (each holds up to `max_file_bytes` in
    /// memory). Default `4`.
    pub max_concurrent_downloads: usize,
    /// Downloads waiting for one of those permits; a download beyond it fails at once with
    /// [`SshError::Busy`](crate::SshError::Busy) (`0`: none waits). Default `16`.
    pub download_queue: usize,
    /// Also negotiate the SHA-1 algorithms: `ssh-rsa` host keys (and RSA user-key signatures
    /// with SHA-1), the `hmac-sha1` and `hmac-sha1-etm@openssh.com` MACs and the
    /// `diffie-hellman-group14-sha1` key exchange. Off by default (as in OpenSSH ≥ 8.8): a
    /// server that offers nothing better is refused. Turn it on for legacy servers only.
    pub allow_sha1_algorithms: bool,
    /// Use identity files that the group or others may read. Off by default: such a key file
    /// is refused when the pool is built (OpenSSH's "UNPROTECTED PRIVATE KEY FILE"); fix it
    /// with `chmod 600`. Only checked on Unix.
    pub allow_insecure_identity_permissions: bool,
    /// An SFTP request without an answer for this long fails. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub sftp_timeout: Duration,
    /// Channels (execs, and the one SFTP session) open at once on one connection. OpenSSH's
    /// `MaxSessions` (10 by default) refuses the channel beyond it, so the pool does not go
    /// there: a call that finds every connection to its host full goes to another
    /// connection (opened up to `pool.max`), or waits for a channel to close. Set it to the
    /// servers' `MaxSessions` (per host:
    /// [`HostProfile::max_channels_per_connection`]). If a server refuses a channel anyway,
    /// the connection's limit is lowered to what it carried and the call is tried once more
    /// on another connection. Default `10`.
    pub max_channels_per_connection: usize,
    /// Calls (execs and SFTP operations) running at once per host. Beyond it a call waits in
    /// the host's queue (first come, first served). Default (`None`): `pool.max ×
    /// max_channels_per_connection` (the host's own, if it has one), what the host's
    /// connections can carry.
    pub max_in_flight_per_host: Option<usize>,
    /// Calls waiting per host for one of those; a call that finds the queue full fails at
    /// once with the busy error (`-31050`, [`SshError::HostBusy`](crate::SshError::HostBusy),
    /// with `retryAfterMs`). `0`: none waits. Default `64`.
    pub host_queue: usize,
    /// The longest a call waits in its host's queue before it fails with the queue-timeout
    /// error (`-31051`, [`SshError::QueueTimeout`](crate::SshError::QueueTimeout)). Default
    /// `5s`.
    #[serde(with = "humantime_serde")]
    pub host_queue_timeout: Duration,
    /// The connection pool. Per host up to 4 connections by default (`max = 4`), opened
    /// when the ones open are full; a `[ssh.pool]` section's missing keys take
    /// [`PoolConfig`]'s own defaults (`max = 1`), so give `max` there.
    #[serde(default = "default_pool")]
    pub pool: PoolConfig,
    /// The allowlist: profile name → host. Tools may reach these and nothing else.
    pub hosts: BTreeMap<String, HostProfile>,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            known_hosts: None,
            insecure_accept_any_host_key: false,
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            exec_timeout: Duration::from_secs(60),
            max_output_bytes: 1 << 20,
            max_file_bytes: 8 << 20,
            max_concurrent_downloads: 4,
            download_queue: 16,
            allow_sha1_algorithms: false,
            allow_insecure_identity_permissions: false,
            sftp_timeout: Duration::from_secs(30),
            max_channels_per_connection: 10,
            max_in_flight_per_host: None,
            host_queue: 64,
            host_queue_timeout: Duration::from_secs(5),
            pool: default_pool(),
            hosts: BTreeMap::new(),
        }
    }
}

/// The SSH pool's default: up to 4 connections per host.
fn default_pool() -> PoolConfig {
    PoolConfig::default().with_max(4)
}

impl SshConfig {
    /// Adds (or replaces) the host profile `name`.
    pub fn with_host(mut self, name: impl Into<String>, profile: HostProfile) -> Self {
        self.hosts.insert(name.into(), profile);
        self
    }

    /// Checks host keys against this known_hosts file.
    pub fn with_known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }

    /// **Insecure**: accepts any host key (see the field's documentation).
    pub fn with_insecure_accept_any_host_key(mut self, insecure: bool) -> Self {
        self.insecure_accept_any_host_key = insecure;
        self
    }

    /// Abandons execs after `timeout`.
    pub fn with_exec_timeout(mut self, timeout: Duration) -> Self {
        self.exec_timeout = timeout;
        self
    }

    /// Keeps at most `max` bytes of output per exec.
    pub fn with_max_output_bytes(mut self, max: usize) -> Self {
        self.max_output_bytes = max;
        self
    }

    /// Reads files of at most `max` bytes over SFTP.
    pub fn with_max_file_bytes(mut self, max: u64) -> Self {
        self.max_file_bytes = max;
        self
    }

    /// Reads at most `max` downloads at once, with at most `queue` more waiting.
    pub fn with_download_limit(mut self, max: usize, queue: usize) -> Self {
        self.max_concurrent_downloads = max;
        self.download_queue = queue;
        self
    }

    /// Also negotiates the SHA-1 algorithms (see the field's documentation).
    pub fn with_allow_sha1_algorithms(mut self, allow: bool) -> Self {
        self.allow_sha1_algorithms = allow;
        self
    }

    /// Uses identity files others may read (see the field's documentation).
    pub fn with_allow_insecure_identity_permissions(mut self, allow: bool) -> Self {
        self.allow_insecure_identity_permissions = allow;
        self
    }

    /// Sends keep-alives every `interval` (`Duration::ZERO`: never).
    pub fn with_keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// Opens at most `max` channels at once on one connection.
    pub fn with_max_channels_per_connection(mut self, max: usize) -> Self {
        self.max_channels_per_connection = max;
        self
    }

    /// Runs at most `max` calls at once per host, with at most `queue` more waiting up to
    /// `timeout`.
    pub fn with_host_limit(mut self, max: usize, queue: usize, timeout: Duration) -> Self {
        self.max_in_flight_per_host = Some(max);
        self.host_queue = queue;
        self.host_queue_timeout = timeout;
        self
    }

    /// Calls running at once per host: [`max_in_flight_per_host`](Self::max_in_flight_per_host),
    /// else `pool.max × max_channels_per_connection` (a host with its own
    /// `max_channels_per_connection` gets `pool.max ×` that).
    pub fn host_limit(&self) -> usize {
        self.max_in_flight_per_host.unwrap_or_else(|| {
            self.pool
                .max
                .saturating_mul(self.max_channels_per_connection)
        })
    }

    /// Uses this pool configuration.
    pub fn with_pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// The known_hosts file in use: [`known_hosts`](Self::known_hosts), else
    /// `$HOME/.ssh/known_hosts`.
    pub fn known_hosts_path(&self) -> Option<PathBuf> {
        match &self.known_hosts {
            Some(path) => Some(expand_home(path)),
            None => {
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
            }
        }
    }

    /// Checks that the values make sense together. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.pool.validate().map_err(|e| format!("ssh.{e}"))?;
        if self.exec_timeout.is_zero() {
            return Err("ssh.exec_timeout: must be greater than zero".into());
        }
        if self.sftp_timeout.as_secs() == 0 {
            return Err("ssh.sftp_timeout: must be at least 1s".into());
        }
        if self.max_output_bytes == 0 {
            return Err("ssh.max_output_bytes: must be at least 1".into());
        }
        if self.max_file_bytes == 0 {
            return Err("ssh.max_file_bytes: must be at least 1".into());
        }
        if self.max_concurrent_downloads == 0 {
            return Err("ssh.max_concurrent_downloads: must be at least 1".into());
        }
        if self.max_channels_per_connection == 0 {
            return Err("ssh.max_channels_per_connection: must be at least 1".into());
        }
        if self.max_in_flight_per_host == Some(0) {
            return Err("ssh.max_in_flight_per_host: must be at least 1".into());
        }
        if self.host_limit().saturating_add(self.host_queue) > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(
                "ssh.max_in_flight_per_host + ssh.host_queue: too large (keep them below a million)"
                    .into(),
            );
        }
        if self.host_queue > 0 && self.host_queue_timeout.is_zero() {
            return Err(
                "ssh.host_queue_timeout: must be greater than zero when host_queue > 0".into(),
            );
        }
        if !self.insecure_accept_any_host_key && self.known_hosts_path().is_none() {
            return Err(
                "ssh.known_hosts: not set and $HOME is unknown; give the known_hosts file".into(),
            );
        }
        for (name, profile) in &self.hosts {
            if name.is_empty() {
                return Err("ssh.hosts: a profile name must not be empty".into());
            }
            profile.validate(name)?;
        }
        Ok(())
    }
}
