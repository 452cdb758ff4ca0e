//! [`SshConnection`]: one open, authenticated connection, as the pool holds it. Exec lives
//! in `exec.rs`, SFTP in `sftp.rs`.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

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
    /// `max_channels_per_connection` for this host.
    pub(crate) max_channels: usize,
    /// The channel limit learned from a refusal (`usize::MAX` until then).
    pub(crate) learned_channels: AtomicUsize,
    /// Whether the SFTP session (one channel) is open.
    pub(crate) sftp_open: AtomicBool,
}

impl fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshConnection")
            .field("host", &self.profile.name)
            .field("closed", &self.handle.is_closed())
            .field("max_channels", &self.max_channels())
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

    /// Channels this connection may have open at once: `max_channels_per_connection`, or
    /// less once the server refused a channel below it.
    pub fn max_channels(&self) -> usize {
        self.max_channels
            .min(self.learned_channels.load(Ordering::Relaxed))
    }

    /// Calls the pool may put on this connection at once: [`max_channels`](Self::max_channels),
    /// less the SFTP session's channel while it is open (SFTP calls share that channel, but
    /// each counts as a call, which errs on the safe side).
    pub fn capacity(&self) -> usize {
        let sftp = usize::from(self.sftp_open.load(Ordering::Relaxed));
        self.max_channels().saturating_sub(sftp).max(1)
    }

    /// The server refused a channel while `calls` calls (the refused one included) were on
    /// the connection: it takes no more than the others from now on.
    pub(crate) fn learn_channel_limit(&self, calls: usize) {
        let limit = calls.saturating_sub(1).max(1);
        let before = self.learned_channels.fetch_min(limit, Ordering::Relaxed);
        if limit < before.min(self.max_channels) {
            tracing::info!(
                host = %self.profile.name,
                limit,
                "the server refused a channel: this connection now carries at most {limit} \
                 calls (raise the server's MaxSessions, or lower max_channels_per_connection)"
            );
        }
    }

    /// The profile's exec limits.
    pub fn limits(&self) -> ExecLimits {
        self.profile.limits
    }
}
