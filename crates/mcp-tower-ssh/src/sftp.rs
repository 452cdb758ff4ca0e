//! SFTP on a pooled connection: one session per connection, opened on first use and shared
//! by every caller ([`SshConnection::sftp`]); upload, download (size-capped), list, stat.

use std::{
    sync::{Arc, atomic::Ordering},
    time::UNIX_EPOCH,
};

use russh_sftp::{
    client::{Config as SftpConfig, SftpSession, error::Error as SftpError},
    protocol::StatusCode,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{SshConnection, SshError};

/// What SFTP says about a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FileStat {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Whether it is a regular file.
    pub is_file: bool,
    /// Whether it is a symbolic link (`list` reports links as such).
    pub is_symlink: bool,
    /// Unix permission bits (`0o644`…).
    pub permissions: Option<u32>,
    /// Last modification, in seconds since the Unix epoch.
    pub modified: Option<u64>,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DirEntry {
    /// The entry's name (not its path).
    pub name: String,
    /// Its attributes.
    pub stat: FileStat,
}

fn stat_of(attrs: &russh_sftp::client::fs::Metadata) -> FileStat {
    FileStat {
        size: attrs.size,
        is_dir: attrs.is_dir(),
        is_file: attrs.is_regular(),
        is_symlink: attrs.is_symlink(),
        permissions: attrs.permissions.map(|p| p & 0o7777),
        modified: attrs
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
    }
}

impl SshConnection {
    /// The connection's SFTP session, opened on first use (the `sftp` subsystem on a
    /// channel of its own) and then shared. A session that failed is reopened.
    pub async fn sftp(&self) -> Result<Arc<SftpSession>, SshError> {
        let mut slot = self.sftp.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(Arc::clone(session));
        }
        let disconnected = || SshError::Disconnected {
            host: self.host().to_owned(),
            during: "sftp",
        };
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_open_failed(e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|_| disconnected())?;
        let config = SftpConfig {
            request_timeout_secs: self.sftp_timeout.as_secs().max(1),
            ..SftpConfig::default()
        };
        let session = SftpSession::new_with_config(channel.into_stream(), config)
            .await
            .map_err(|e| {
                tracing::debug!(host = %self.host(), "opening the SFTP session failed: {e}");
                if self.is_closed() {
                    disconnected()
                } else {
                    SshError::Refused {
                        host: self.host().to_owned(),
                        request: "sftp subsystem",
                    }
                }
            })?;
        let session = Arc::new(session);
        *slot = Some(Arc::clone(&session));
        self.sftp_open.store(true, Ordering::Relaxed);
        Ok(session)
    }

    /// Maps an SFTP failure: a status from the server is the request's fault; anything else
    /// (I/O, timeout, session closed) means the session is unusable, so it is dropped and
    /// reopened by the next call.
    async fn sftp_failed(&self, op: &'static str, path: &str, error: SftpError) -> SshError {
        if let SftpError::Status(status) = &error {
            let code = match status.status_code {
                StatusCode::NoSuchFile => "no_such_file",
                StatusCode::PermissionDenied => "permission_denied",
                _ => "sftp_failed",
            };
            return SshError::Sftp {
                host: self.host().to_owned(),
                op,
                path: path.to_owned(),
                code,
                reason: format!("{}: {}", status.status_code, status.error_message),
            };
        }
        if self.sftp.lock().await.take().is_some() {
            self.sftp_open.store(false, Ordering::Relaxed);
        }
        if self.is_closed() {
            return SshError::Disconnected {
                host: self.host().to_owned(),
                during: "sftp",
            };
        }
        if matches!(error, SftpError::Timeout) {
            return SshError::Timeout {
                host: self.host().to_owned(),
                during: "sftp",
                after: self.sftp_timeout,
            };
        }
        SshError::Sftp {
            host: self.host().to_owned(),
            op,
            path: path.to_owned(),
            code: "sftp_failed",
            reason: error.to_string(),
        }
    }

    /// Writes `data` to `path` (created or truncated).
    pub async fn upload(&self, path: &str, data: &[u8]) -> Result<(), SshError> {
        let sftp = self.sftp().await?;
        let result = async {
            let mut file = sftp.create(path).await?;
            file.write_all(data).await?;
            file.shutdown().await?;
            Ok::<_, SftpError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.sftp_failed("upload", path, e).await),
        }
    }

    /// Reads the file at `path`; fails with [`SshError::TooLarge`] beyond
    /// `max_file_bytes`: at once if the server reports a larger size, else after reading
    /// `max_file_bytes + 1` bytes (never more, whatever the file's real size).
    pub async fn download(&self, path: &str) -> Result<Vec<u8>, SshError> {
        let sftp = self.sftp().await?;
        let limit = self.max_file_bytes;
        let result = async {
            let file = sftp.open(path).await?;
            let size = file.metadata().await?.size;
            if let Some(size) = size
                && size > limit
            {
                return Ok(Err(Some(size)));
            }
            // The reported size may be wrong (a growing file, a special file): read one byte
            // more than allowed, at most, to tell.
            let expected = usize::try_from(size.unwrap_or(0).min(limit)).unwrap_or(0);
            let mut data = Vec::with_capacity(expected);
            let mut capped = file.take(limit.saturating_add(1));
            capped.read_to_end(&mut data).await?;
            if data.len() as u64 > limit {
                return Ok(Err(None));
            }
            Ok::<_, SftpError>(Ok(data))
        }
        .await;
        match result {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(size)) => Err(SshError::TooLarge {
                host: self.host().to_owned(),
                path: path.to_owned(),
                size,
                limit,
            }),
            Err(e) => Err(self.sftp_failed("download", path, e).await),
        }
    }

    /// The entries of the directory at `path` (without `.` and `..`), sorted by name.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>, SshError> {
        let sftp = self.sftp().await?;
        match sftp.read_dir(path).await {
            Ok(entries) => {
                let mut list: Vec<DirEntry> = entries
                    .filter(|e| e.file_name() != "." && e.file_name() != "..")
                    .map(|e| DirEntry {
                        name: e.file_name(),
                        stat: stat_of(&e.metadata()),
                    })
                    .collect();
                list.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(list)
            }
            Err(e) => Err(self.sftp_failed("list", path, e).await),
        }
    }

    /// The attributes of `path` (following symbolic links).
    pub async fn stat(&self, path: &str) -> Result<FileStat, SshError> {
        let sftp = self.sftp().await?;
        match sftp.metadata(path).await {
            Ok(attrs) => Ok(stat_of(&attrs)),
            Err(e) => Err(self.sftp_failed("stat", path, e).await),
        }
    }
}
