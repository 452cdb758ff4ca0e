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
    /// `upstream`. A tool call through the pool returns it as
    /// [`to_error_data`](Self::to_error_data) does, with the retry hint.
    ///
    /// The client reads a short, stable reason per kind of failure (`connecting failed`,
    /// `connecting timed out`…); the failure itself, whose text may carry an address, a
    /// path or a user name from the connector, is logged (warn) with the upstream's name.
    pub fn to_unavailable(&self, upstream: &str) -> UpstreamUnavailable {
        UpstreamUnavailable::with_detail(Layer::Pool, upstream, self.reason(), self)
    }

    /// The error a tool call through the pool returns for this failure, naming `upstream`:
    /// [`to_unavailable`](Self::to_unavailable) as `ErrorData`, with the retry hint
    /// `data.retryAfterMs` when the pool knows when the key may be tried again
    /// ([`retry_after`](Self::retry_after), rounded up to the millisecond).
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use mcp_tower_core::error::retry_after;
    /// use mcp_tower_pool::PoolError;
    ///
    /// let backoff = PoolError::Backoff {
    ///     key: "github".into(),
    ///     last: Box::new(PoolError::Shutdown),
    ///     retry_in: Duration::from_millis(750),
    /// };
    /// let error = backoff.to_error_data("github");
    /// assert_eq!(retry_after(&error), Some(Duration::from_millis(750)));
    /// assert_eq!(error.data.unwrap()["retryAfterMs"], 750);
    /// ```
    pub fn to_error_data(&self, upstream: &str) -> rmcp::ErrorData {
        let error = self.to_unavailable(upstream).into();
        match self.retry_after() {
            Some(after) => mcp_tower_core::error::with_retry_after(error, after),
            None => error,
        }
    }

    /// When the pool will try the key again, if it holds off: `retry_in` of
    /// [`PoolError::Backoff`]; `None` for every other failure (the next call may connect at
    /// once).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PoolError::Backoff { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
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
        e.to_error_data(e.key().unwrap_or("pool"))
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
    use mcp_tower_core::error::{ErrorKind, is_transient, retry_after};

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

    #[test]
    fn a_backoff_error_carries_retry_in_as_its_retry_hint() {
        let connect = PoolError::Connect {
            key: "github".into(),
            source: Arc::new(std::io::Error::other("refused")),
        };
        for (retry_in, ms) in [
            (Duration::from_millis(1000), 1000),
            (Duration::from_micros(999_001), 1000),
            (Duration::from_nanos(1), 1),
        ] {
            let backoff = PoolError::Backoff {
                key: "github".into(),
                last: Box::new(connect.clone()),
                retry_in,
            };
            assert_eq!(backoff.retry_after(), Some(retry_in));
            for data in [backoff.to_error_data("github"), backoff.clone().into()] {
                assert_eq!(ErrorKind::of(&data), Some(ErrorKind::UpstreamUnavailable));
                assert!(is_transient(&data));
                assert_eq!(data.data.as_ref().unwrap()["retryAfterMs"], ms);
                assert_eq!(retry_after(&data), Some(Duration::from_millis(ms)));
                assert_eq!(
                    data.message,
                    "upstream `github` is unavailable: its last connect failed; not retrying yet"
                );
            }
        }
        // The other failures give no hint: the next call may connect at once.
        for other in [
            connect,
            PoolError::ConnectTimeout {
                key: "github".into(),
                after: Duration::from_secs(10),
            },
            PoolError::Shutdown,
        ] {
            assert_eq!(other.retry_after(), None);
            let data: rmcp::ErrorData = other.into();
            assert_eq!(retry_after(&data), None);
            assert!(data.data.unwrap().get("retryAfterMs").is_none());
        }
    }
}
