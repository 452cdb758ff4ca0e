//! [`SshConnection`]: one open, authenticated connection, as the pool holds it. Exec lives
//! in `exec.rs`, SFTP in `sftp.rs`.

use std::{fmt, sync::Arc, time::Duration};

use russh::client;
use russh_sftp::client::SftpSession;

use crate::{ExecLimits, connector::Profile, host_key::ClientHandler};

/// One open, authenticated SSH connection. Many execs run on it at once, each on a channel
/// of its own; its SFTP session is opened on first use and then shared.
pub struct SshConnection {
    pub(crate) profile: Arc<Profile>,
    pub(crate) handle: client::Handle<ClientHandler>,
    pub(crate) sftp: tokio::sync::Mutex<Option<Arc<SftpSession>>>,
    pub(crate) sftp_timeout: Duration,
    pub(crate) max_file_bytes: u64,
}

impl fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshConnection")
            .field("host", &self.profile.name)
            .field("closed", &self.handle.is_closed())
            .finish_non_exhaustive()
    }
}

impl SshConnection {
    /// The host's profile name.
    pub fn host(&self) -> &str {
        &self.profile.name
    }

    /// Whether the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// The profile's exec limits.
    pub fn limits(&self) -> ExecLimits {
        self.profile.limits
    }
}
