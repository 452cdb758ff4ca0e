//! [`Pool`]: a keyed pool of multiplexed connections, and its [`PoolBuilder`].
//!
//! - `checkout`: handing out connections (warm path, single-flight cold path, unpooled);
//! - `connect`: opening, installing, retiring and closing connections, and shutdown;
//! - `maintenance`: the background task (idle reaping, health pings, `min` connections);
//! - `key`: what the pool knows about one key.

mod checkout;
mod connect;
mod key;
mod maintenance;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    BuildError, Connector, PoolConfig, PoolError, PoolHandle, PoolStats, Pooled, handle::KeyStats,
};
use key::KeyState;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Sections under these locks do not panic; if one ever did, the state is still
    // consistent enough to keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pool's shared state, behind the one `Arc` every `Pool` clone holds.
pub(crate) struct PoolInner<C: Connector> {
    connector: C,
    config: PoolConfig,
    keys: ArcSwap<HashMap<C::Key, Arc<KeyState<C>>>>,
    keys_write: Mutex<()>,
    /// Connections open or connecting, for `max_total`.
    open_total: AtomicUsize,
    next_slot_id: AtomicU64,
    shutdown: CancellationToken,
    /// Connect, ping and close tasks (never a caller's request), awaited on shutdown.
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
}

impl<C: Connector> fmt::Debug for PoolInner<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .field("keys", &self.keys.load().len())
            .field("open_total", &self.open_total.load(Ordering::Relaxed))
            .field("shut_down", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A keyed pool of **multiplexed** connections: many callers share each connection.
///
/// - Per key, up to [`max`](PoolConfig::max) connections (default 1) and at least
///   [`min`](PoolConfig::min) kept open; requests go to the connection with the fewest in
///   flight (with more than two, the less busy of two picked at random: "power of two
///   choices"). A key grows by one connection when its least busy one carries
///   [`target_in_flight`](PoolConfig::target_in_flight) requests.
/// - **Single-flight connect**: a burst of first requests to a key makes exactly one
///   connection, and they all get it; different keys connect in parallel. Connects run in
///   tasks of their own under [`connect_timeout`](PoolConfig::connect_timeout), so a caller
///   that gives up does not abort a connect others wait for. No lock is held across an
///   `.await`.
/// - A closed connection ([`Connector::is_closed`]), one whose ping failed, or one a caller
///   [marked broken](Pooled::mark_broken) is replaced on the next `get`. After a failed
///   connect, `get`s fail fast for [`connect_backoff`](PoolConfig::connect_backoff).
/// - A background task reaps connections above `min` idle for
///   [`idle_timeout`](PoolConfig::idle_timeout), pings every connection each
///   [`health_interval`](PoolConfig::health_interval) and reconnects keys below `min`. It
///   never blocks `get`, which reads the connection list without a lock.
/// - Limits: `max` per key, [`max_total`](PoolConfig::max_total) in all (an idle connection
///   of another key is closed to make room), and per connection the connector's
///   [`capacity`](Connector::capacity): a full connection is not handed out; another is
///   opened (up to `max`), else the `get` waits until a request on one of them ends.
/// - [`Pool::shutdown`] stops everything, waits for requests in flight up to
///   [`drain_timeout`](PoolConfig::drain_timeout), closes every connection through
///   [`Connector::close`] (which reaps child processes) and waits for it.
///
/// Cloning is cheap and shares the pool. Dropping the last clone stops the background task
/// and drops the connections without ceremony; call [`shutdown`](Pool::shutdown) for a
/// graceful close.
///
/// ```
/// use std::{convert::Infallible, sync::{Arc, atomic::{AtomicUsize, Ordering}}};
/// use mcp_tower_pool::{Connector, Pool, PoolConfig};
///
/// #[derive(Debug, Default)]
/// struct Counting(AtomicUsize);
///
/// impl Connector for Counting {
///     type Key = &'static str;
///     type Connection = usize;
///     type Error = Infallible;
///     async fn connect(&self, _key: &&'static str) -> Result<usize, Infallible> {
///         Ok(self.0.fetch_add(1, Ordering::SeqCst))
///     }
///     fn is_closed(&self, _conn: &usize) -> bool { false }
///     async fn ping(&self, _conn: &usize) -> Result<(), Infallible> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::builder(Counting::default())
///     .with_config(PoolConfig::default().with_max(1))
///     .build()?;
/// let a = pool.get(&"github").await?;
/// let b = pool.get(&"github").await?;
/// assert_eq!(a.connection_id(), b.connection_id(), "one multiplexed connection, shared");
/// assert_eq!(pool.stats().keys[0].in_flight, 2);
/// drop((a, b));
/// pool.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Pool<C: Connector> {
    inner: Arc<PoolInner<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Connector> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Builds a [`Pool`]; [`build`](PoolBuilder::build) validates the configuration and starts
/// the maintenance task.
#[derive(Debug)]
pub struct PoolBuilder<C: Connector> {
    connector: C,
    config: PoolConfig,
    keys: Vec<(C::Key, bool)>,
}

impl<C: Connector> PoolBuilder<C> {
    /// Uses this configuration (default: [`PoolConfig::default`]).
    pub fn with_config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// Declares `key`: its `min` connections are opened at once and kept open.
    pub fn with_key(mut self, key: C::Key) -> Self {
        self.keys.push((key, false));
        self
    }

    /// Declares `key` as required: like [`with_key`](Self::with_key), and the pool reports
    /// unhealthy ([`PoolHandle::is_healthy`]) while it cannot be reached.
    pub fn with_required_key(mut self, key: C::Key) -> Self {
        self.keys.push((key, true));
        self
    }

    /// Validates the configuration, starts the maintenance task (so it must run inside a
    /// Tokio runtime) and returns the pool.
    pub fn build(self) -> Result<Pool<C>, BuildError> {
        self.config.validate().map_err(BuildError::Config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let inner = Arc::new(PoolInner {
            connector: self.connector,
            config: self.config,
            keys: ArcSwap::from_pointee(HashMap::new()),
            keys_write: Mutex::new(()),
            open_total: AtomicUsize::new(0),
            next_slot_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            runtime,
        });
        for (key, required) in self.keys {
            inner.declare(key, required);
        }
        maintenance::start(&inner);
        Ok(Pool { inner })
    }
}

impl<C: Connector> Pool<C> {
    /// A builder for a pool of `connector`'s connections.
    pub fn builder(connector: C) -> PoolBuilder<C> {
        PoolBuilder {
            connector,
            config: PoolConfig::default(),
            keys: Vec::new(),
        }
    }

    /// A pool with this configuration and no declared keys.
    pub fn new(connector: C, config: PoolConfig) -> Result<Self, BuildError> {
        Self::builder(connector).with_config(config).build()
    }

    /// A connection to `key`, shared with other callers.
    ///
    /// The warm path (a usable connection exists) takes no lock and does not allocate. The
    /// cold path waits for the key's single connect in flight (starting it if there is
    /// none) and fails with the connect's error if it fails, with
    /// [`PoolError::Backoff`] during `connect_backoff` after a failure, with
    /// [`PoolError::LimitReached`] when `max_total` is reached and nothing is idle, and with
    /// [`PoolError::Shutdown`] after [`shutdown`](Pool::shutdown).
    ///
    /// Dropping the future gives up waiting; a connect it started continues for the others.
    pub async fn get(&self, key: &C::Key) -> Result<Pooled<C>, PoolError> {
        if !self.inner.config.enabled {
            return self.inner.get_unpooled(key).await;
        }
        if let Some(pooled) = self.try_get(key) {
            return Ok(pooled);
        }
        let state = self.inner.key_state(key);
        self.inner.get_slow(&state).await
    }

    /// A connection to `key` if one is open and usable now; never waits or connects.
    pub fn try_get(&self, key: &C::Key) -> Option<Pooled<C>> {
        if !self.inner.config.enabled {
            return None;
        }
        let keys = self.inner.keys.load();
        let state = keys.get(key)?;
        self.inner.try_pick(state)
    }

    /// Declares `key` at run time (see [`PoolBuilder::with_key`]); its `min` connections are
    /// opened by the next maintenance tick.
    pub fn declare(&self, key: C::Key, required: bool) {
        self.inner.declare(key, required);
    }

    /// The connector.
    pub fn connector(&self) -> &C {
        &self.inner.connector
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Per-key figures: connections, requests in flight, connects, failures, reaped…
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// A type-erased handle (stats, health, shutdown) for admin endpoints and metrics.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle::new(Arc::clone(&self.inner) as Arc<dyn crate::handle::PoolControl>)
    }

    /// Whether [`shutdown`](Pool::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Shuts the pool down: later `get`s fail with [`PoolError::Shutdown`], connects in
    /// progress are abandoned, requests in flight get up to `drain_timeout` to finish, then
    /// every connection is closed with [`Connector::close`]. Returns once every connection
    /// is closed and every background task has ended. Calling it again waits for the same.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

impl<C: Connector> PoolInner<C> {
    pub(crate) fn stats(&self) -> PoolStats {
        let keys = self.keys.load();
        let now = Instant::now();
        let mut stats: Vec<KeyStats> = keys
            .values()
            .map(|state| {
                let slots = state.slots.load();
                let usable = slots.iter().filter(|s| self.usable(s)).count();
                let control = state.control();
                let last_error = control.last_failure.as_ref().map(|f| f.error.to_string());
                KeyStats {
                    key: state.label.to_string(),
                    connections: state.counters.open.load(Ordering::Acquire),
                    in_service: slots.len(),
                    in_flight: slots.iter().map(|s| s.in_flight()).sum(),
                    connecting: control.connecting,
                    connects: state.counters.connects.load(Ordering::Relaxed),
                    failures: state.counters.failures.load(Ordering::Relaxed),
                    reaped: state.counters.reaped.load(Ordering::Relaxed),
                    replaced: state.counters.replaced.load(Ordering::Relaxed),
                    ping_failures: state.counters.ping_failures.load(Ordering::Relaxed),
                    up: usable > 0 || control.last_failure.is_none(),
                    required: state.required.load(Ordering::Relaxed),
                    last_error,
                    retry_in: self.in_backoff(&control, now).and_then(|e| match e {
                        PoolError::Backoff { retry_in, .. } => Some(retry_in),
                        _ => None,
                    }),
                }
            })
            .collect();
        stats.sort_by(|a, b| a.key.cmp(&b.key));
        PoolStats {
            keys: stats,
            open_total: self.open_total.load(Ordering::Acquire),
            shut_down: self.shutdown.is_cancelled(),
        }
    }
}
