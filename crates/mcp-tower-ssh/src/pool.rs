//! [`SshPool`]: the allowlisted hosts of an [`SshConfig`] behind one
//! [`Pool`](mcp_tower_pool::Pool) of russh connections — exec and SFTP by host name.

use std::sync::Arc;

use mcp_tower_pool::{Pool, PoolHandle, PoolStats, Pooled};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    DirEntry, ExecLimits, ExecOutput, FileStat, SshConfig, SshConnector, SshError,
    exec::CHANNEL_OPEN,
};

/// Pooled SSH to an allowlist of hosts: per host one multiplexed connection by default
/// (single-flight connect, parallel across hosts, idle reaping, broken connections replaced
/// on the next call — all from [`mcp_tower_pool`]), many execs at once over it, and its SFTP
/// session reused.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct SshPool {
    pool: Pool<SshConnector>,
    downloads: Arc<DownloadLimit>,
}

/// `max_concurrent_downloads` permits to read, and `max_concurrent_downloads +
/// download_queue` tickets to be admitted at all: a download without a ticket is refused
/// at once ([`SshError::Busy`]), so the waiting line is bounded.
#[derive(Debug)]
struct DownloadLimit {
    admitted: Semaphore,
    reading: Semaphore,
    max: usize,
    queue: usize,
}

impl DownloadLimit {
    fn new(max: usize, queue: usize) -> Self {
        Self {
            admitted: Semaphore::new(max.saturating_add(queue)),
            reading: Semaphore::new(max),
            max,
            queue,
        }
    }

    /// Waits for a permit to read, or fails at once when the queue is full.
    async fn acquire(&self) -> Result<(SemaphorePermit<'_>, SemaphorePermit<'_>), SshError> {
        let ticket = self.admitted.try_acquire().map_err(|_| {
            let in_flight = self.max - self.reading.available_permits();
            let admitted = self.max.saturating_add(self.queue) - self.admitted.available_permits();
            SshError::Busy {
                in_flight,
                queued: admitted.saturating_sub(in_flight),
            }
        })?;
        let permit = self
            .reading
            .acquire()
            .await
            .map_err(|_| SshError::Pool(mcp_tower_pool::PoolError::Shutdown))?;
        Ok((ticket, permit))
    }
}

impl SshPool {
    /// Validates `config`, loads the key files and starts the pool (inside a Tokio runtime).
    /// Nothing connects until the first call.
    pub fn new(config: SshConfig) -> Result<Self, SshError> {
        let connector = SshConnector::new(&config)?;
        let pool = Pool::builder(connector)
            .with_config(config.pool.clone())
            .build()
            .map_err(|e| SshError::Config(e.to_string()))?;
        let downloads = Arc::new(DownloadLimit::new(
            config.max_concurrent_downloads,
            config.download_queue,
        ));
        Ok(Self { pool, downloads })
    }

    /// The allowlisted host names, sorted.
    pub fn hosts(&self) -> Vec<&str> {
        self.pool.connector().host_names()
    }

    /// A connection to `host`, shared with other callers (connecting if needed).
    pub async fn connection(&self, host: &str) -> Result<Pooled<SshConnector>, SshError> {
        let profile = self.pool.connector().profile(host)?;
        Ok(self.pool.get(&profile.name).await?)
    }

    /// Runs `command` on `host` with the host's limits.
    pub async fn exec(&self, host: &str, command: &str) -> Result<ExecOutput, SshError> {
        let limits = self.pool.connector().profile(host)?.limits;
        self.exec_with(host, command, limits).await
    }

    /// Runs `command` on `host` with these limits.
    ///
    /// If the pooled connection turns out to be dead before the command was sent (the
    /// server restarted, and the client has not noticed yet), the call goes once to a
    /// fresh connection: nothing ran, so this cannot run a command twice.
    pub async fn exec_with(
        &self,
        host: &str,
        command: &str,
        limits: ExecLimits,
    ) -> Result<ExecOutput, SshError> {
        let conn = self.connection(host).await?;
        match conn.exec_with(command, limits).await {
            Err(e) if Repeat::IfNothingSent.allows(&e) => {
                conn.mark_broken();
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.exec_with(command, limits).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// Writes `data` to `path` on `host` over SFTP. If the connection is found dead before
    /// the upload started, it goes once to a fresh connection.
    pub async fn upload(&self, host: &str, path: &str, data: &[u8]) -> Result<(), SshError> {
        let conn = self.connection(host).await?;
        match conn.upload(path, data).await {
            Err(e) if Repeat::IfNothingSent.allows(&e) => {
                conn.mark_broken();
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.upload(path, data).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// Reads `path` on `host` over SFTP (at most `max_file_bytes`). Reads are repeated once
    /// on a fresh connection if the connection dies under them (after a server restart).
    ///
    /// At most `max_concurrent_downloads` run at once (across hosts), with up to
    /// `download_queue` more waiting their turn; beyond that the call fails at once with
    /// [`SshError::Busy`], before connecting or reading anything.
    pub async fn download(&self, host: &str, path: &str) -> Result<Vec<u8>, SshError> {
        self.pool.connector().profile(host)?;
        let _permit = self.downloads.acquire().await?;
        let conn = self.connection(host).await?;
        match conn.download(path).await {
            Err(e) if Repeat::IfDisconnected.allows(&e) => {
                conn.mark_broken();
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.download(path).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// Lists the directory `path` on `host` (repeated once if the connection dies under it).
    pub async fn list(&self, host: &str, path: &str) -> Result<Vec<DirEntry>, SshError> {
        let conn = self.connection(host).await?;
        match conn.list(path).await {
            Err(e) if Repeat::IfDisconnected.allows(&e) => {
                conn.mark_broken();
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.list(path).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// The attributes of `path` on `host` (repeated once if the connection dies under it).
    pub async fn stat(&self, host: &str, path: &str) -> Result<FileStat, SshError> {
        let conn = self.connection(host).await?;
        match conn.stat(path).await {
            Err(e) if Repeat::IfDisconnected.allows(&e) => {
                conn.mark_broken();
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.stat(path).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// A connection that dropped under a call is marked broken, so the next call to the
    /// host reconnects at once rather than wait for the maintenance task.
    fn finish<T>(conn: &Pooled<SshConnector>, result: Result<T, SshError>) -> Result<T, SshError> {
        if let Err(SshError::Disconnected { .. }) = &result {
            conn.mark_broken();
        }
        result
    }

    /// The pool's figures (connections, in flight, connects, reaped, replaced… per host).
    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// A type-erased handle for `/stats`, `/health` and the metrics layer (a
    /// [`LayerReport`](mcp_tower_core::LayerReport): `mcp_pool_*{upstream="<host>"}`).
    pub fn handle(&self) -> PoolHandle {
        self.pool.handle()
    }

    /// The underlying generic pool.
    pub fn pool(&self) -> &Pool<SshConnector> {
        &self.pool
    }

    /// Closes every connection gracefully (waits for calls in flight up to the pool's
    /// `drain_timeout`).
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }
}

/// When an operation that failed on a dead connection may run again on a fresh one.
#[derive(Debug, Clone, Copy)]
enum Repeat {
    /// Only if nothing was sent: the connection was found dead when opening the channel
    /// (commands and writes: never run twice).
    IfNothingSent,
    /// Whenever the connection died under it (reads: running twice is harmless).
    IfDisconnected,
}

impl Repeat {
    fn allows(self, error: &SshError) -> bool {
        match (self, error) {
            (Repeat::IfNothingSent, SshError::Disconnected { during, .. }) => {
                *during == CHANNEL_OPEN
            }
            (Repeat::IfDisconnected, SshError::Disconnected { .. }) => true,
            _ => false,
        }
    }
}
