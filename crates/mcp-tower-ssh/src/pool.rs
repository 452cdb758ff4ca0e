//! [`SshPool`]: the allowlisted hosts of an [`SshConfig`] behind one
//! [`Pool`](mcp_tower_pool::Pool) of russh connections — exec and SFTP by host name.

use std::{collections::HashMap, sync::Arc, time::Duration};

use mcp_tower_pool::{Pool, PoolHandle, PoolStats, Pooled};
use tokio::{
    sync::{Semaphore, SemaphorePermit},
    time::Instant,
};

use crate::{
    DirEntry, ExecLimits, ExecOutput, FileStat, SshConfig, SshConnector, SshError,
    exec::CHANNEL_OPEN,
};

/// Pooled SSH to an allowlist of hosts: per host multiplexed connections (single-flight
/// connect, parallel across hosts, idle reaping, broken connections replaced on the next
/// call — all from [`mcp_tower_pool`]), many execs at once over each, and its SFTP session
/// reused.
///
/// Per host, at most `max_in_flight_per_host` calls run at once and `host_queue` wait
/// (first come, first served, up to `host_queue_timeout`); a call beyond them fails at once
/// with [`SshError::HostBusy`]. Per connection, at most `max_channels_per_connection`
/// channels are open: a call that finds the host's connections full goes to another one
/// (opened up to `pool.max`), or waits for a channel to close. A channel the server refuses
/// anyway is asked for once more on another connection.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct SshPool {
    pool: Pool<SshConnector>,
    downloads: Arc<DownloadLimit>,
    hosts: Arc<HashMap<Arc<str>, HostLimit>>,
}

/// How busy one host is ([`SshPool::host_load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostLoad {
    /// Calls running on the host (holding one of its `max_in_flight_per_host` permits).
    pub in_flight: usize,
    /// Calls waiting in its queue.
    pub queued: usize,
    /// `max_in_flight_per_host` (or its default).
    pub limit: usize,
    /// `host_queue`.
    pub queue: usize,
}

/// The most a busy or queue-timeout error tells a client to wait.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// One host's calls in flight and waiting: `limit` permits to run, `limit + queue` tickets
/// to be admitted at all (a call without a ticket is refused at once); waiting for a
/// permit is first come, first served (Tokio's semaphore is fair) and ends at `timeout`.
#[derive(Debug)]
struct HostLimit {
    admitted: Semaphore,
    running: Semaphore,
    limit: usize,
    queue: usize,
    timeout: Duration,
}

/// A call's right to run on its host.
type HostPermit<'a> = (SemaphorePermit<'a>, SemaphorePermit<'a>);

impl HostLimit {
    fn new(limit: usize, queue: usize, timeout: Duration) -> Self {
        Self {
            admitted: Semaphore::new(limit.saturating_add(queue)),
            running: Semaphore::new(limit),
            limit,
            queue,
            timeout,
        }
    }

    fn load(&self) -> HostLoad {
        let in_flight = self.limit - self.running.available_permits();
        let admitted = self.limit.saturating_add(self.queue) - self.admitted.available_permits();
        HostLoad {
            in_flight,
            queued: admitted.saturating_sub(in_flight),
            limit: self.limit,
            queue: self.queue,
        }
    }

    /// The concurrency layer's hint: 250 ms per wave of `limit` calls ahead, at most 30 s.
    fn retry_after(&self, queued: usize) -> Duration {
        let waves = queued.saturating_add(1).div_ceil(self.limit.max(1));
        crate::error::BUSY_RETRY_AFTER
            .checked_mul(u32::try_from(waves).unwrap_or(u32::MAX))
            .unwrap_or(MAX_RETRY_AFTER)
            .min(MAX_RETRY_AFTER)
    }

    /// Waits for a permit to run on `host`: fails at once when the queue is full, and after
    /// `timeout` in it.
    async fn acquire(&self, host: &str) -> Result<HostPermit<'_>, SshError> {
        let ticket = self.admitted.try_acquire().map_err(|_| {
            let load = self.load();
            SshError::HostBusy {
                host: host.to_owned(),
                in_flight: load.in_flight,
                queued: load.queued,
                retry_after: self.retry_after(load.queued),
            }
        })?;
        if let Ok(permit) = self.running.try_acquire() {
            return Ok((ticket, permit));
        }
        let since = Instant::now();
        match tokio::time::timeout(self.timeout, self.running.acquire()).await {
            Ok(Ok(permit)) => Ok((ticket, permit)),
            Ok(Err(_closed)) => Err(SshError::Pool(mcp_tower_pool::PoolError::Shutdown)),
            Err(_elapsed) => {
                drop(ticket);
                Err(SshError::QueueTimeout {
                    host: host.to_owned(),
                    waited: since.elapsed(),
                    retry_after: self.retry_after(self.load().queued),
                })
            }
        }
    }
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
        let hosts = config
            .hosts
            .iter()
            .map(|(name, profile)| {
                // A host's own channel limit makes its default limit of calls.
                let limit = config.max_in_flight_per_host.unwrap_or_else(|| {
                    config.pool.max.saturating_mul(
                        profile
                            .max_channels_per_connection
                            .unwrap_or(config.max_channels_per_connection),
                    )
                });
                (
                    Arc::from(name.as_str()),
                    HostLimit::new(limit, config.host_queue, config.host_queue_timeout),
                )
            })
            .collect();
        Ok(Self {
            pool,
            downloads,
            hosts: Arc::new(hosts),
        })
    }

    /// How busy `host` is (`None` for a host not in the allowlist).
    pub fn host_load(&self, host: &str) -> Option<HostLoad> {
        self.hosts.get(host).map(HostLimit::load)
    }

    /// Waits for `host`'s permit to run a call ([`SshError::HostBusy`] at once when its
    /// queue is full, [`SshError::QueueTimeout`] after `host_queue_timeout`).
    async fn admit(&self, host: &str) -> Result<HostPermit<'_>, SshError> {
        let profile = self.pool.connector().profile(host)?;
        match self.hosts.get(&profile.name) {
            Some(limit) => limit.acquire(host).await,
            // Every profile has a limit (both come from the same configuration).
            None => Err(SshError::UnknownHost {
                host: host.to_owned(),
                known: self.hosts().join(", "),
            }),
        }
    }

    /// The allowlisted host names, sorted.
    pub fn hosts(&self) -> Vec<&str> {
        self.pool.connector().host_names()
    }

    /// A connection to `host` with a free channel, shared with other callers (connecting if
    /// needed, or waiting for a channel to close when the host's connections are full and
    /// at `pool.max`). It does not count against `max_in_flight_per_host`.
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
    /// server restarted, and the client has not noticed yet), or the server refuses the
    /// channel (its `MaxSessions`), the call goes once to another connection: nothing ran,
    /// so this cannot run a command twice.
    pub async fn exec_with(
        &self,
        host: &str,
        command: &str,
        limits: ExecLimits,
    ) -> Result<ExecOutput, SshError> {
        let _permit = self.admit(host).await?;
        let conn = self.connection(host).await?;
        let (conn, result) = match conn.exec_with(command, limits).await {
            Err(e) if second_chance(&conn, &e, Repeat::IfNothingSent) => {
                drop(conn);
                let conn = self.connection(host).await?;
                let result = conn.exec_with(command, limits).await;
                (conn, result)
            }
            result => (conn, result),
        };
        let result = Self::finish(&conn, result);
        if result.is_ok() {
            settle(conn);
        }
        result
    }

    /// Writes `data` to `path` on `host` over SFTP. If the connection is found dead before
    /// the upload started, it goes once to a fresh connection.
    pub async fn upload(&self, host: &str, path: &str, data: &[u8]) -> Result<(), SshError> {
        let _permit = self.admit(host).await?;
        let conn = self.connection(host).await?;
        match conn.upload(path, data).await {
            Err(e) if second_chance(&conn, &e, Repeat::IfNothingSent) => {
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
        let _host = self.admit(host).await?;
        let _permit = self.downloads.acquire().await?;
        let conn = self.connection(host).await?;
        match conn.download(path).await {
            Err(e) if second_chance(&conn, &e, Repeat::IfDisconnected) => {
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.download(path).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// Lists the directory `path` on `host` (repeated once if the connection dies under it).
    pub async fn list(&self, host: &str, path: &str) -> Result<Vec<DirEntry>, SshError> {
        let _permit = self.admit(host).await?;
        let conn = self.connection(host).await?;
        match conn.list(path).await {
            Err(e) if second_chance(&conn, &e, Repeat::IfDisconnected) => {
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.list(path).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// The attributes of `path` on `host` (repeated once if the connection dies under it).
    pub async fn stat(&self, host: &str, path: &str) -> Result<FileStat, SshError> {
        let _permit = self.admit(host).await?;
        let conn = self.connection(host).await?;
        match conn.stat(path).await {
            Err(e) if second_chance(&conn, &e, Repeat::IfDisconnected) => {
                drop(conn);
                let conn = self.connection(host).await?;
                Self::finish(&conn, conn.stat(path).await)
            }
            result => Self::finish(&conn, result),
        }
    }

    /// A connection that dropped under a call is marked broken, so the next call to the
    /// host reconnects at once rather than wait for the maintenance task.
    /// A refused channel says how many calls the connection carried.
    fn finish<T>(
        conn: &Pooled<SshConnector>,
        mut result: Result<T, SshError>,
    ) -> Result<T, SshError> {
        match &mut result {
            Err(SshError::Disconnected { .. }) => conn.mark_broken(),
            Err(SshError::ChannelRefused { open, .. }) => {
                *open = conn.in_flight();
                conn.learn_channel_limit(conn.in_flight());
            }
            _ => {}
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

/// How long a finished exec's channel slot is held at most while the server confirms the
/// close ([`settle`]).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Gives a finished exec's channel slot back to the pool once the server has processed the
/// channel's close, in a task of its own (the caller has its output already).
///
/// sshd frees a session (under `MaxSessions`) only when it collects the closed channel,
/// after the packets that arrived with the close: a channel opened at once in the freed
/// slot may arrive in the same batch and be refused. A keep-alive round trip after the
/// close (russh sends the close before the exec sees it) means the next open on the
/// connection is read after that collection.
fn settle(conn: Pooled<SshConnector>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(SETTLE_TIMEOUT, conn.handle.send_ping()).await;
            drop(conn);
        });
    }
}

/// Whether a first attempt that failed with `error` on `conn` goes once more to another
/// connection: the server refused the channel (the connection learns it is full, so the
/// pool hands out another or opens one), or the connection died as `repeat` allows (it is
/// marked broken). Either way nothing ran.
fn second_chance(conn: &Pooled<SshConnector>, error: &SshError, repeat: Repeat) -> bool {
    match error {
        SshError::ChannelRefused { .. } => {
            conn.learn_channel_limit(conn.in_flight());
            true
        }
        e if repeat.allows(e) => {
            conn.mark_broken();
            true
        }
        _ => false,
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
