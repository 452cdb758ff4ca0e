//! The bounds on what the gateway forwards itself (every method but `tools/call`, which the
//! stack bounds): a timeout per method, and one concurrency limit with a bounded queue,
//! answered with the same errors as the stack's timeout and concurrency layers.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use mcp_tower::error::{Busy, BusyReason, Layer, QueueTimeout, TimedOut};
use rmcp::ErrorData;
use serde::{Deserialize, Serialize};
use tokio::{sync::Semaphore, time::Instant};

/// The methods the gateway forwards itself, which `[forward.timeouts]` may name.
pub const FORWARDED_METHODS: [&str; 10] = [
    "tools/list",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
];

/// The largest `max_in_flight` or `max_queued`.
const MAX_LIMIT: usize = 1 << 20;

/// `[forward]`: the bounds on the requests the gateway forwards to its upstreams itself
/// (every method but `tools/call`, which goes through the stack and its `[stack.policy]`
/// timeout and `[stack.concurrency]` limit).
///
/// ```toml
/// [forward]
/// timeout = "30s"          # each forwarded request, from when it runs to its answer
/// max_in_flight = 64       # forwarded requests running at once, over every upstream
/// max_queued = 256         # waiting for one of those; beyond: the busy error
/// queue_timeout = "5s"     # the longest one waits; then the queue-timeout error
///
/// [forward.timeouts]       # per method
/// "resources/read" = "2m"
/// ```
///
/// `MCP_GATEWAY_FORWARD_*` environment variables override the scalar keys
/// (`MCP_GATEWAY_FORWARD_TIMEOUT=10s`, `MCP_GATEWAY_FORWARD_MAX_IN_FLIGHT=32`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// How long a forwarded request may run (session, upstream round trip; for a list,
    /// every page) before it is abandoned — cancelled upstream — and answered with the
    /// timed-out error. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Per-method timeouts (keys from [`FORWARDED_METHODS`]), instead of `timeout`.
    pub timeouts: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// Forwarded requests running at once, over every upstream and method. Default 64.
    pub max_in_flight: usize,
    /// Forwarded requests waiting for room; one that finds the queue full is answered at
    /// once with the busy error. `0`: no queue (a request that cannot run at once is
    /// busy). Default 256.
    pub max_queued: usize,
    /// The longest a request waits in the queue before it is answered with the
    /// queue-timeout error. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            timeouts: BTreeMap::new(),
            max_in_flight: 64,
            max_queued: 256,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

impl ForwardConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("forward.timeout: must be greater than zero".into());
        }
        for (method, timeout) in &self.timeouts {
            if !FORWARDED_METHODS.contains(&method.as_str()) {
                return Err(format!(
                    "forward.timeouts.\"{method}\": not a method the gateway forwards (one of {}; `tools/call` is bounded by [stack.policy] timeout)",
                    FORWARDED_METHODS.join(", ")
                ));
            }
            if timeout.is_zero() {
                return Err(format!(
                    "forward.timeouts.\"{method}\": must be greater than zero"
                ));
            }
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_LIMIT {
            return Err(format!(
                "forward.max_in_flight: must be between 1 and {MAX_LIMIT}"
            ));
        }
        if self.max_queued > MAX_LIMIT {
            return Err(format!("forward.max_queued: must be at most {MAX_LIMIT}"));
        }
        if self.max_queued > 0 && self.queue_timeout.is_zero() {
            return Err(
                "forward.queue_timeout: must be greater than zero (set `max_queued = 0` to turn queueing off)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The timeout of `method`.
    pub fn timeout_of(&self, method: &str) -> Duration {
        self.timeouts.get(method).map_or(self.timeout, |t| **t)
    }
}

/// The limiter every forwarded request goes through.
#[derive(Debug)]
pub(super) struct Forwarding {
    config: ForwardConfig,
    permits: Semaphore,
    queued: AtomicUsize,
}

/// Takes one back from the queue count when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Forwarding {
    pub(super) fn new(config: ForwardConfig) -> Self {
        Self {
            permits: Semaphore::new(config.max_in_flight),
            queued: AtomicUsize::new(0),
            config,
        }
    }

    /// The retry hint for `queued` requests waiting: a second per wave ahead, at most 30 s
    /// (the concurrency layer's defaults).
    fn retry_after(&self, queued: usize) -> Duration {
        let waves = queued.saturating_add(1).div_ceil(self.config.max_in_flight);
        Duration::from_secs(u64::try_from(waves).unwrap_or(u64::MAX)).min(Duration::from_secs(30))
    }

    /// Runs `forwarded` (a request of `method`) under the limit and the method's timeout.
    pub(super) async fn run<T>(
        &self,
        method: &str,
        forwarded: impl Future<Output = Result<T, ErrorData>>,
    ) -> Result<T, ErrorData> {
        let _permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let ahead = self.queued.fetch_add(1, Ordering::AcqRel);
                let _queued = Queued(&self.queued);
                if ahead >= self.config.max_queued {
                    return Err(Busy {
                        layer: Layer::Concurrency,
                        tool: None,
                        reason: if self.config.max_queued == 0 {
                            BusyReason::LimitReached
                        } else {
                            BusyReason::QueueFull
                        },
                        in_flight: self.config.max_in_flight,
                        queued: ahead,
                        retry_after: self.retry_after(ahead),
                    }
                    .into());
                }
                let since = Instant::now();
                match tokio::time::timeout(self.config.queue_timeout, self.permits.acquire()).await
                {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return Err(ErrorData::internal_error(
                            "the gateway's forwarding limiter is closed",
                            None,
                        ));
                    }
                    Err(_) => {
                        return Err(QueueTimeout {
                            layer: Layer::Concurrency,
                            tool: None,
                            waited: since.elapsed(),
                            retry_after: self.retry_after(self.queued.load(Ordering::Acquire)),
                        }
                        .into());
                    }
                }
            }
        };
        let after = self.config.timeout_of(method);
        tokio::time::timeout(after, forwarded)
            .await
            .unwrap_or_else(|_| {
                Err(TimedOut {
                    layer: Layer::Timeout,
                    tool: method.to_owned(),
                    after,
                }
                .into())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_forward_sections_name_the_key() {
        let d = ForwardConfig::default;
        assert!(d().validate().is_ok());
        let zero = ForwardConfig {
            timeout: Duration::ZERO,
            ..d()
        };
        assert!(zero.validate().unwrap_err().contains("forward.timeout"));
        let mut unknown = d();
        unknown
            .timeouts
            .insert("tools/call".into(), Duration::from_secs(1).into());
        assert!(unknown.validate().unwrap_err().contains("\"tools/call\""));
        let none = ForwardConfig {
            max_in_flight: 0,
            ..d()
        };
        assert!(none.validate().unwrap_err().contains("max_in_flight"));
        let mut read = d();
        read.timeouts
            .insert("resources/read".into(), Duration::from_secs(120).into());
        assert_eq!(read.timeout_of("resources/read"), Duration::from_secs(120));
        assert_eq!(read.timeout_of("prompts/get"), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_request_times_out_and_requests_beyond_the_limit_are_busy() {
        let forwarding = std::sync::Arc::new(Forwarding::new(ForwardConfig {
            max_in_flight: 1,
            max_queued: 1,
            ..ForwardConfig::default()
        }));
        let hung = {
            let f = std::sync::Arc::clone(&forwarding);
            tokio::spawn(async move {
                f.run(
                    "resources/read",
                    std::future::pending::<Result<(), ErrorData>>(),
                )
                .await
            })
        };
        tokio::task::yield_now().await;
        let queued = {
            let f = std::sync::Arc::clone(&forwarding);
            tokio::spawn(async move { f.run("prompts/get", async { Ok(()) }).await })
        };
        tokio::task::yield_now().await;
        let busy = forwarding
            .run("prompts/get", async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(busy.code, mcp_tower::error::codes::BUSY, "{busy:?}");
        // The queued one waits up to queue_timeout (5 s), then gives up.
        let waited = queued.await.unwrap().unwrap_err();
        assert_eq!(
            waited.code,
            mcp_tower::error::codes::QUEUE_TIMEOUT,
            "{waited:?}"
        );
        let timed_out = hung.await.unwrap().unwrap_err();
        assert_eq!(timed_out.code, mcp_tower::error::codes::TIMED_OUT);
        assert!(
            timed_out.message.contains("resources/read"),
            "{}",
            timed_out.message
        );
        // Room again: a request runs.
        forwarding
            .run("prompts/get", async { Ok(()) })
            .await
            .unwrap();
    }
}
