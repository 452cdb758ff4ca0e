//! [`PoolHandle`]: a pool's figures ([`PoolStats`], [`KeyStats`]), health and shutdown,
//! without its connector type, for admin endpoints and the metrics layer.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use mcp_tower_core::{Figure, LayerReport};
use serde::Serialize;
use serde_json::Value;

use crate::{Connector, pool::PoolInner};

/// One key's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct KeyStats {
    /// The key (its `Display` form: an upstream's name, a host).
    pub key: String,
    /// Open connections, including ones draining before they close.
    pub connections: usize,
    /// Connections handed out to new requests.
    pub in_service: usize,
    /// Requests in flight on the key's connections.
    pub in_flight: usize,
    /// Connects in progress.
    pub connecting: usize,
    /// Successful connects since start.
    pub connects: u64,
    /// Failed connects (errors and timeouts) since start.
    pub failures: u64,
    /// Connections closed for being idle (or evicted to make room) since start.
    pub reaped: u64,
    /// Closed or broken connections taken out of service since start.
    pub replaced: u64,
    /// Failed health pings since start.
    pub ping_failures: u64,
    /// Whether the key can be reached: it has a usable connection, or its last connect did
    /// not fail.
    pub up: bool,
    /// Whether the key was declared required.
    pub required: bool,
    /// The last connect's error, until a connect succeeds.
    pub last_error: Option<String>,
    /// While connects fail fast after a failure: how long until the next is tried.
    #[serde(with = "humantime_serde")]
    pub retry_in: Option<Duration>,
}

/// A pool's figures, per key (sorted by key).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// Every key the pool knows.
    pub keys: Vec<KeyStats>,
    /// Connections counted against `max_total` (open or connecting).
    pub open_total: usize,
    /// Whether the pool was shut down.
    pub shut_down: bool,
}

impl PoolStats {
    /// The figures of `key`.
    pub fn key(&self, key: &str) -> Option<&KeyStats> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// Whether every required key is up (and the pool is not shut down).
    pub fn healthy(&self) -> bool {
        !self.shut_down && self.keys.iter().all(|k| !k.required || k.up)
    }
}

type ShutdownFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What a [`PoolHandle`] needs of a pool, whatever its connector.
pub(crate) trait PoolControl: Send + Sync + fmt::Debug {
    fn stats(&self) -> PoolStats;
    fn shutdown(self: Arc<Self>) -> ShutdownFuture<'static>;
}

impl<C: Connector> PoolControl for PoolInner<C> {
    fn stats(&self) -> PoolStats {
        PoolInner::stats(self)
    }

    fn shutdown(self: Arc<Self>) -> ShutdownFuture<'static> {
        Box::pin(async move { PoolInner::shutdown(&self).await })
    }
}

/// A cloneable, type-erased handle on a [`Pool`](crate::Pool): its figures, its health and
/// its shutdown. It implements [`LayerReport`], so the metrics layer exports:
///
/// | figure | kind | labels |
/// |---|---|---|
/// | `mcp_pool_connections` | gauge | `upstream` |
/// | `mcp_pool_in_flight` | gauge | `upstream` |
/// | `mcp_pool_up` | gauge (1/0) | `upstream` |
/// | `mcp_pool_connects_total` | counter | `upstream` |
/// | `mcp_pool_connect_failures_total` | counter | `upstream` |
/// | `mcp_pool_reaped_total` | counter | `upstream` |
/// | `mcp_pool_replaced_total` | counter | `upstream` |
/// | `mcp_pool_ping_failures_total` | counter | `upstream` |
///
/// and [`healthy`](LayerReport::healthy) is `Some(false)` while a required key (upstream)
/// cannot be reached.
#[derive(Clone, Debug)]
pub struct PoolHandle {
    pool: Arc<dyn PoolControl>,
}

impl PoolHandle {
    pub(crate) fn new(pool: Arc<dyn PoolControl>) -> Self {
        Self { pool }
    }

    /// The pool's figures now.
    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Whether every required key is up.
    pub fn is_healthy(&self) -> bool {
        self.stats().healthy()
    }

    /// Shuts the pool down gracefully ([`Pool::shutdown`](crate::Pool::shutdown)).
    pub async fn shutdown(&self) {
        Arc::clone(&self.pool).shutdown().await;
    }
}

impl LayerReport for PoolHandle {
    fn layer(&self) -> &'static str {
        "pool"
    }

    fn figures(&self, out: &mut Vec<Figure>) {
        for k in self.stats().keys {
            let label = |f: Figure| f.with_label("upstream", k.key.clone());
            out.push(label(Figure::gauge(
                "mcp_pool_connections",
                "Open upstream connections",
                k.connections as f64,
            )));
            out.push(label(Figure::gauge(
                "mcp_pool_in_flight",
                "Requests in flight on upstream connections",
                k.in_flight as f64,
            )));
            out.push(label(Figure::gauge(
                "mcp_pool_up",
                "Whether the upstream can be reached (1) or not (0)",
                if k.up { 1.0 } else { 0.0 },
            )));
            out.push(label(Figure::counter(
                "mcp_pool_connects_total",
                "Successful upstream connects",
                k.connects,
            )));
            out.push(label(Figure::counter(
                "mcp_pool_connect_failures_total",
                "Failed upstream connects (errors and timeouts)",
                k.failures,
            )));
            out.push(label(Figure::counter(
                "mcp_pool_reaped_total",
                "Upstream connections closed for being idle",
                k.reaped,
            )));
            out.push(label(Figure::counter(
                "mcp_pool_replaced_total",
                "Closed or broken upstream connections replaced",
                k.replaced,
            )));
            out.push(label(Figure::counter(
                "mcp_pool_ping_failures_total",
                "Failed health pings of upstream connections",
                k.ping_failures,
            )));
        }
    }

    fn snapshot(&self) -> Value {
        serde_json::to_value(self.stats()).unwrap_or(Value::Null)
    }

    fn healthy(&self) -> Option<bool> {
        let stats = self.stats();
        if stats.shut_down {
            return Some(false);
        }
        let required: Vec<_> = stats.keys.iter().filter(|k| k.required).collect();
        if required.is_empty() {
            return None;
        }
        Some(required.iter().all(|k| k.up))
    }
}
