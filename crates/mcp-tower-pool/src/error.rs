//! [`PoolError`]: why [`Pool::get`](crate::Pool::get) could not hand out a connection, and
//! [`BuildError`]: why a pool could not be built.

use std::{sync::Arc, time::Duration};

use mcp_tower_core::error::{Layer, UpstreamUnavailable};

/// Why [`Pool::get`](crate::Pool::get) could not hand out a connection. Cheap to clone: one
/// failed connect is reported to every caller that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The connector failed to connect.
    #[error("connecting to `{key}` failed: {source}")]
    Connect {
        /// The key (its `Display` form).
        key: Arc<str>,
        /// The connector's error.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The connect took longer than `connect_timeout`.
    #[error("connecting to `{key}` timed out after {}", humantime_serde::re::humantime::format_duration(*.after))]
    ConnectTimeout {
        /// The key.
        key: Arc<str>,
        /// The timeout.
        after: Duration,
    },
    /// The key's last connect failed less than `connect_backoff` ago; no new connect was
    /// tried.
    #[error("`{key}` is down (retrying in {} ms): {last}", .retry_in.as_millis())]
    Backoff {
        /// The key.
        key: Arc<str>,
        /// The last connect's error.
        last: Box<PoolError>,
        /// When the next connect may be tried.
        retry_in: Duration,
    },
    /// `max_total` connections are open and none is idle.
    #[error(
        "cannot connect to `{key}`: the pool's limit of {limit} connections is reached and none is idle"
    )]
    LimitReached {
        /// The key.
        key: Arc<str>,
        /// `max_total`.
        limit: usize,
    },
    /// The pool is shutting down.
    #[error("the pool is shut down")]
    Shutdown,
}

impl PoolError {
    /// The key the error is about (`None` for [`PoolError::Shutdown`]).
    pub fn key(&self) -> Option<&str> {
        match self {
            PoolError::Connect { key, .. }
            | PoolError::ConnectTimeout { key, .. }
            | PoolError::Backoff { key, .. }
            | PoolError::LimitReached { key, .. } => Some(key),
            PoolError::Shutdown => None,
        }
    }

    /// The core's transient "upstream unavailable" error for this failure, naming
    /// `upstream` (what a tool call through the pool returns).
    ///
    /// The client reads a short, stable reason per kind of failure (`connecting failed`,
    /// `connecting timed out`…); the failure itself, whose text may carry an address, a
    /// path or a user name from the connector, is logged (warn) with the upstream's name.
    pub fn to_unavailable(&self, upstream: &str) -> UpstreamUnavailable {
        UpstreamUnavailable::with_detail(Layer::Pool, upstream, self.reason(), self)
    }

    /// The short, stable reason a client reads for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            PoolError::Connect { .. } => "connecting failed",
            PoolError::ConnectTimeout { .. } => "connecting timed out",
            PoolError::Backoff { .. } => "its last connect failed; not retrying yet",
            PoolError::LimitReached { .. } => {
                "the pool's connection limit is reached and none is idle"
            }
            PoolError::Shutdown => "the pool is shutting down",
        }
    }
}

impl From<PoolError> for rmcp::ErrorData {
    fn from(e: PoolError) -> Self {
        let upstream = e.key().unwrap_or("pool").to_owned();
        e.to_unavailable(&upstream).into()
    }
}

/// Why [`PoolBuilder::build`](crate::PoolBuilder::build) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid; the message names the field.
    #[error("invalid pool configuration: {0}")]
    Config(String),
    /// The pool's maintenance task needs a Tokio runtime, and there is none.
    #[error("a pool must be built inside a Tokio runtime (it spawns its maintenance task)")]
    NoRuntime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_tower_core::error::{ErrorKind, is_transient};

    #[test]
    fn pool_errors_become_transient_upstream_unavailable() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connect to 10.20.30.40:8443 refused",
        );
        let e = PoolError::Connect {
            key: "github".into(),
            source: Arc::new(io),
        };
        let data: rmcp::ErrorData = e.clone().into();
        assert_eq!(ErrorKind::of(&data), Some(ErrorKind::UpstreamUnavailable));
        assert!(is_transient(&data));
        assert_eq!(
            data.message,
            "upstream `github` is unavailable: connecting failed"
        );
        let sent = serde_json::to_string(&data).unwrap();
        assert!(
            !sent.contains("10.20.30.40"),
            "the connector's error is not sent: {sent}"
        );
        let backoff = PoolError::Backoff {
            key: "github".into(),
            last: Box::new(e),
            retry_in: Duration::from_millis(250),
        };
        assert!(
            backoff.to_string().contains("retrying in 250 ms"),
            "{backoff}"
        );
        let shutdown: rmcp::ErrorData = PoolError::Shutdown.into();
        assert!(is_transient(&shutdown));
    }
}
