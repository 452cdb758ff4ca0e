//! [`SshConnector`]: how the pool opens, checks and closes russh client connections — TCP
//! with `TCP_NODELAY`, the host key checked against known_hosts, then key or password
//! authentication.

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use mcp_tower_pool::Connector;
use russh::{
    Preferred, client, kex,
    keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg},
    mac,
};

use crate::{
    ExecLimits, HostProfile, KnownHosts, SshConfig, SshConnection, SshError,
    host_key::{ClientHandler, HostKeyCheck},
};

/// One allowlisted host, resolved: its credentials loaded.
pub(crate) struct Profile {
    pub(crate) name: Arc<str>,
    pub(crate) settings: HostProfile,
    key: Option<Arc<PrivateKey>>,
    pub(crate) limits: ExecLimits,
    /// Channels per connection.
    pub(crate) max_channels: usize,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `settings` redacts its secrets; the private key is never printed.
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("key", &self.key.as_ref().map(|k| k.algorithm().to_string()))
            .finish()
    }
}

/// Opens russh client connections to the allowlisted hosts of an [`SshConfig`], for a
/// [`Pool`](mcp_tower_pool::Pool). Keys are profile names.
///
/// Every connection: `TCP_NODELAY` (Nagle would add ~40 ms to each exec), keep-alives, the
/// host key checked against the known_hosts file (unless
/// [`insecure_accept_any_host_key`](SshConfig::insecure_accept_any_host_key), which is logged
/// as a warning on every connect), then public-key authentication with the profile's key
/// file and/or password authentication.
pub struct SshConnector {
    profiles: HashMap<Arc<str>, Arc<Profile>>,
    client_config: Arc<client::Config>,
    /// Whether RSA user keys may sign with SHA-1 (`ssh-rsa`).
    allow_sha1: bool,
    /// `None`: host keys are not checked (insecure opt-out).
    known_hosts: Option<PathBuf>,
    pub(crate) sftp_timeout: Duration,
    pub(crate) max_file_bytes: u64,
}

impl fmt::Debug for SshConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hosts: Vec<&str> = self.profiles.keys().map(|k| &**k).collect();
        hosts.sort_unstable();
        f.debug_struct("SshConnector")
            .field("hosts", &hosts)
            .field("known_hosts", &self.known_hosts)
            .field("verifies_host_keys", &self.known_hosts.is_some())
            .finish_non_exhaustive()
    }
}

impl SshConnector {
    /// Validates `config` and loads every profile's private key (so a bad key file fails
    /// here, not on the first call).
    pub fn new(config: &SshConfig) -> Result<Self, SshError> {
        config.validate().map_err(SshError::Config)?;
        let known_hosts = if config.insecure_accept_any_host_key {
            tracing::warn!(
                "SSH host key verification is OFF (insecure_accept_any_host_key = true): \
                 any server can impersonate the configured hosts"
            );
            None
        } else {
            config.known_hosts_path()
        };
        let mut profiles = HashMap::with_capacity(config.hosts.len());
        for (name, settings) in &config.hosts {
            let key = match &settings.identity_file {
                Some(path) => Some(Arc::new(load_key(
                    name,
                    path,
                    settings,
                    config.allow_insecure_identity_permissions,
                )?)),
                None => None,
            };
            let limits = ExecLimits::new(
                settings.exec_timeout.unwrap_or(config.exec_timeout),
                settings.max_output_bytes.unwrap_or(config.max_output_bytes),
            );
            let name: Arc<str> = Arc::from(name.as_str());
            profiles.insert(
                Arc::clone(&name),
                Arc::new(Profile {
                    name,
                    settings: settings.clone(),
                    key,
                    limits,
                    max_channels: settings
                        .max_channels_per_connection
                        .unwrap_or(config.max_channels_per_connection),
                }),
            );
        }
        let keepalive = (!config.keepalive_interval.is_zero()).then_some(config.keepalive_interval);
        if config.allow_sha1_algorithms {
            tracing::warn!(
                "SHA-1 SSH algorithms are allowed (allow_sha1_algorithms = true): ssh-rsa host \
                 keys, hmac-sha1 and diffie-hellman-group14-sha1 may be negotiated"
            );
        }
        let client_config = client::Config {
            preferred: preferred(config.allow_sha1_algorithms),
            nodelay: true,
            keepalive_interval: keepalive,
            keepalive_max: config.keepalive_max,
            inactivity_timeout: None,
            ..client::Config::default()
        };
        Ok(Self {
            profiles,
            client_config: Arc::new(client_config),
            allow_sha1: config.allow_sha1_algorithms,
            known_hosts,
            sftp_timeout: config.sftp_timeout,
            max_file_bytes: config.max_file_bytes,
        })
    }

    /// The profile named `host`, with the pool key to use for it.
    pub(crate) fn profile(&self, host: &str) -> Result<&Arc<Profile>, SshError> {
        self.profiles
            .get(host)
            .ok_or_else(|| SshError::UnknownHost {
                host: host.to_owned(),
                known: self.host_names().join(", "),
            })
    }

    /// The allowlisted profile names, sorted.
    pub fn host_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.profiles.keys().map(|k| &**k).collect();
        names.sort_unstable();
        names
    }

    /// Whether host keys are checked (false only with the insecure opt-out).
    pub fn verifies_host_keys(&self) -> bool {
        self.known_hosts.is_some()
    }

    async fn host_key_check(&self, profile: &Profile) -> Result<HostKeyCheck, SshError> {
        let Some(path) = &self.known_hosts else {
            tracing::warn!(
                host = %profile.name,
                "accepting any host key for `{}`: insecure_accept_any_host_key is set",
                profile.name
            );
            return Ok(HostKeyCheck::AcceptAny);
        };
        let read_path = path.clone();
        let hosts = tokio::task::spawn_blocking(move || KnownHosts::read(&read_path))
            .await
            .map_err(|e| SshError::KnownHosts {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| SshError::KnownHosts {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(HostKeyCheck::Against {
            hosts,
            name: profile.settings.known_hosts_name(),
            path: path.clone(),
        })
    }

    async fn authenticate(
        &self,
        profile: &Profile,
        handle: &mut client::Handle<ClientHandler>,
    ) -> Result<(), SshError> {
        let handshake = |source| SshError::Handshake {
            host: profile.name.to_string(),
            source,
        };
        let user = profile.settings.user.as_str();
        let mut tried = Vec::new();
        if let Some(key) = &profile.key {
            tried.push("publickey");
            let hash = if key.algorithm().is_rsa() {
                let best = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(handshake)?
                    .flatten();
                // `None` is `ssh-rsa` (SHA-1): only when allowed; otherwise rsa-sha2-256,
                // which a server that does not list its signature algorithms may well take.
                if self.allow_sha1 {
                    best
                } else {
                    best.or(Some(HashAlg::Sha256))
                }
            } else {
                None
            };
            let result = handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
                .await
                .map_err(handshake)?;
            if result.success() {
                return Ok(());
            }
        }
        if let Some(password) = &profile.settings.password {
            tried.push("password");
            let result = handle
                .authenticate_password(user, password.expose())
                .await
                .map_err(handshake)?;
            if result.success() {
                return Ok(());
            }
        }
        Err(SshError::Auth {
            host: profile.name.to_string(),
            user: user.to_owned(),
            tried: tried.join(", "),
        })
    }
}

/// The algorithms offered: russh's defaults without `ssh-rsa` (SHA-1) host keys — russh
/// already leaves SHA-1 MACs and key exchanges out — or, for legacy servers, those plus
/// `ssh-rsa`, `hmac-sha1-etm@openssh.com`, `hmac-sha1` and `diffie-hellman-group14-sha1`
/// (last, so they are only chosen when the server offers nothing better).
pub(crate) fn preferred(allow_sha1: bool) -> Preferred {
    let defaults = Preferred::default();
    let mut key: Vec<Algorithm> = defaults
        .key
        .iter()
        .filter(|a| !matches!(a, Algorithm::Rsa { hash: None }))
        .cloned()
        .collect();
    let mut mac: Vec<mac::Name> = defaults
        .mac
        .iter()
        .filter(|m| **m != mac::HMAC_SHA1 && **m != mac::HMAC_SHA1_ETM)
        .copied()
        .collect();
    let mut kex: Vec<kex::Name> = defaults
        .kex
        .iter()
        .filter(|k| !k.as_ref().contains("sha1"))
        .copied()
        .collect();
    if allow_sha1 {
        key.push(Algorithm::Rsa { hash: None });
        mac.extend([mac::HMAC_SHA1_ETM, mac::HMAC_SHA1]);
        // Before the extension pseudo-algorithms (`ext-info-c`, `kex-strict-…`), which only
        // ever match themselves.
        let at = kex
            .iter()
            .position(|k| {
                k.as_ref().starts_with("ext-info") || k.as_ref().starts_with("kex-strict")
            })
            .unwrap_or(kex.len());
        kex.insert(at, kex::DH_G14_SHA1);
    }
    Preferred {
        key: key.into(),
        mac: mac.into(),
        kex: kex.into(),
        ..defaults
    }
}

/// Loads the identity file of profile `name`, refusing (on Unix) one that its group or
/// others may read, unless `allow_insecure` — as OpenSSH does.
fn load_key(
    name: &str,
    path: &std::path::Path,
    settings: &HostProfile,
    allow_insecure: bool,
) -> Result<PrivateKey, SshError> {
    let file = crate::config::expand_home(path);
    let failed = |reason: String| SshError::Key {
        host: name.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .map_err(|e| failed(e.to_string()))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            if !allow_insecure {
                return Err(SshError::KeyPermissions {
                    host: name.to_owned(),
                    path: path.to_path_buf(),
                    mode,
                });
            }
            tracing::warn!(
                host = name,
                "the private key file {} has permissions {mode:04o} (readable by others); \
                 used anyway because allow_insecure_identity_permissions is set",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = allow_insecure;
    russh::keys::load_secret_key(
        file,
        settings.identity_passphrase.as_ref().map(|p| p.expose()),
    )
    .map_err(|e| failed(e.to_string()))
}

impl Connector for SshConnector {
    type Key = Arc<str>;
    type Connection = SshConnection;
    type Error = SshError;

    async fn connect(&self, key: &Arc<str>) -> Result<SshConnection, SshError> {
        let profile = Arc::clone(self.profile(key)?);
        let check = self.host_key_check(&profile).await?;
        let address = format!("{}:{}", profile.settings.host, profile.settings.port);
        let socket =
            tokio::net::TcpStream::connect((profile.settings.host.as_str(), profile.settings.port))
                .await
                .map_err(|source| SshError::Connect {
                    host: profile.name.to_string(),
                    address: address.clone(),
                    source,
                })?;
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(host = %profile.name, "set_nodelay failed: {e}");
        }
        let rejection = Arc::new(Mutex::new(None));
        let handler = ClientHandler {
            host: Arc::clone(&profile.name),
            check,
            rejection: Arc::clone(&rejection),
        };
        let mut handle =
            match client::connect_stream(Arc::clone(&self.client_config), socket, handler).await {
                Ok(handle) => handle,
                Err(source) => {
                    let rejected = rejection
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .take();
                    return Err(rejected.unwrap_or(SshError::Handshake {
                        host: profile.name.to_string(),
                        source,
                    }));
                }
            };
        if let Err(e) = self.authenticate(&profile, &mut handle).await {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
            return Err(e);
        }
        tracing::debug!(host = %profile.name, "SSH connection open");
        Ok(SshConnection {
            max_channels: profile.max_channels,
            profile,
            handle,
            sftp: tokio::sync::Mutex::new(None),
            sftp_timeout: self.sftp_timeout,
            max_file_bytes: self.max_file_bytes,
            learned_channels: std::sync::atomic::AtomicUsize::new(usize::MAX),
            sftp_open: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn is_closed(&self, conn: &SshConnection) -> bool {
        conn.handle.is_closed()
    }

    /// [`SshConnection::capacity`]: the pool puts no more calls on a connection than it
    /// has channels for.
    fn capacity(&self, conn: &SshConnection) -> usize {
        conn.capacity()
    }

    async fn ping(&self, conn: &SshConnection) -> Result<(), SshError> {
        let disconnected = || SshError::Disconnected {
            host: conn.profile.name.to_string(),
            during: "keep-alive",
        };
        conn.handle.send_ping().await.map_err(|_| disconnected())?;
        if conn.handle.is_closed() {
            return Err(disconnected());
        }
        Ok(())
    }

    async fn close(&self, conn: &SshConnection) {
        if let Some(sftp) = conn.sftp.lock().await.take() {
            let _ = sftp.close().await;
        }
        let _ = conn
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
