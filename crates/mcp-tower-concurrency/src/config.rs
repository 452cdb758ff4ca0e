//! [`ConcurrencyConfig`]: the `[concurrency]` section of the stack's configuration,
//! validated once when the layer is built.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limiter::UNLIMITED;

/// The concurrency layer's configuration (the `[concurrency]` section of `StackConfig`).
///
/// Per-tool limits are not here: they are each tool's `max_concurrency` (in `[tools.<name>]`
/// or a `ToolOverride`), and can be changed at run time with
/// [`ConcurrencyHandle::set_limit`](crate::ConcurrencyHandle::set_limit).
///
/// ```toml
/// [concurrency]
/// max_in_flight = 64      # calls running at once, all tools together
/// max_queued = 256        # waiting calls per queue (the global one, and each tool's)
/// queue_timeout = "5s"    # the longest a call waits before it is turned away
/// retry_after = "1s"      # the retry hint a turned-away call gets for one wave of calls...
/// retry_after_max = "30s" # ...growing with the backlog, up to this
/// ```
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_concurrency::ConcurrencyConfig;
///
/// let config = ConcurrencyConfig::default()
///     .with_max_in_flight(16)
///     .with_queue_timeout(Duration::from_secs(2));
/// assert!(config.validate().is_ok());
/// assert!(config.with_max_in_flight(0).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Whether `McpStack` puts the layer in the stack. Default `true`. (The layer itself
    /// does not read it: leave the layer out to turn it off.)
    pub enabled: bool,
    /// The global limit: calls of all tools running at once. Default 64.
    ///
    /// Why 64: an agent driving a server issues a handful of calls in parallel, so a
    /// single client never meets the limit; a server shared by many clients, or one that a
    /// runaway client floods, stops at a level a small machine and most upstream APIs
    /// sustain. Tools that need less get their own `max_concurrency`.
    pub max_in_flight: usize,
    /// The most calls each queue holds (the global queue, and each limited tool's). A call
    /// that finds its queue full is turned away at once with the busy error. `0` turns
    /// queueing off: a call that cannot run at once is turned away. Default 256 (four
    /// waves of the default limit): it bounds the memory a flood can take.
    pub max_queued: usize,
    /// The longest a call waits in the queues (tool and global together) before it is
    /// turned away with the queue-timeout error. Default `5s`.
    ///
    /// It counts from the call's arrival in the stack (`ToolCall::received_at`, read once
    /// per call), which in `McpStack`'s order is when the call reaches this layer. A layer
    /// put in front that holds calls (a retry loop, say) spends the same budget.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// The retry hint (`data.retryAfterMs` of the busy and queue-timeout errors) for a
    /// backlog of one wave of calls: set it near a typical call's duration. The hint is
    /// this times the waves of calls ahead (`ceil((queued + 1) / limit)`), so it grows with
    /// the backlog. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// The largest retry hint. Set it equal to `retry_after` for a fixed hint. Default
    /// `30s`.
    #[serde(with = "humantime_serde")]
    pub retry_after_max: Duration,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_in_flight: 64,
            max_queued: 256,
            queue_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(30),
        }
    }
}

/// A [`ConcurrencyConfig`] value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid concurrency configuration: {field}: {reason}")]
pub struct InvalidConfig {
    /// The key, like `max_in_flight` (within the `[concurrency]` section).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        field,
        reason: reason.into(),
    }
}

/// The largest limit or queue length a configuration may set.
pub const MAX_LIMIT: usize = UNLIMITED - 1;

impl ConcurrencyConfig {
    /// Sets [`enabled`](Self::enabled).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the global limit ([`max_in_flight`](Self::max_in_flight)).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Sets [`max_queued`](Self::max_queued).
    pub fn with_max_queued(mut self, max: usize) -> Self {
        self.max_queued = max;
        self
    }

    /// Sets [`queue_timeout`](Self::queue_timeout).
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Sets [`retry_after`](Self::retry_after).
    pub fn with_retry_after(mut self, hint: Duration) -> Self {
        self.retry_after = hint;
        self
    }

    /// Sets [`retry_after_max`](Self::retry_after_max).
    pub fn with_retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// Checks every value (the layer's constructor calls it).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_in_flight == 0 {
            return Err(invalid(
                "max_in_flight",
                "must be at least 1 (leave the layer out, or set `enabled = false`, for no limit)",
            ));
        }
        if self.max_in_flight > MAX_LIMIT {
            return Err(invalid(
                "max_in_flight",
                format!("must be at most {MAX_LIMIT}"),
            ));
        }
        if self.max_queued > MAX_LIMIT {
            return Err(invalid(
                "max_queued",
                format!("must be at most {MAX_LIMIT}"),
            ));
        }
        if self.max_queued > 0 && self.queue_timeout.is_zero() {
            return Err(invalid(
                "queue_timeout",
                "must be greater than zero (set `max_queued = 0` to turn queueing off)",
            ));
        }
        if self.retry_after.is_zero() {
            return Err(invalid("retry_after", "must be greater than zero"));
        }
        if self.retry_after_max < self.retry_after {
            return Err(invalid("retry_after_max", "must be at least `retry_after`"));
        }
        Ok(())
    }

    /// The retry hint for a limit of `limit` with `queued` calls waiting.
    pub(crate) fn retry_after_for(&self, queued: usize, limit: usize) -> Duration {
        if limit == 0 {
            // Paused: nothing drains until someone raises the limit.
            return self.retry_after_max;
        }
        let waves = queued.saturating_add(1).div_ceil(limit);
        let waves = u32::try_from(waves).unwrap_or(u32::MAX);
        self.retry_after
            .checked_mul(waves)
            .unwrap_or(self.retry_after_max)
            .min(self.retry_after_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = ConcurrencyConfig::default();
        c.validate().unwrap();
        assert!(c.enabled);
        assert_eq!(c.max_in_flight, 64);
        assert_eq!(c.max_queued, 256);
        assert_eq!(c.queue_timeout, Duration::from_secs(5));
    }

    #[test]
    fn parses_from_toml_with_humane_durations() {
        let c: ConcurrencyConfig = toml::from_str(
            r#"
            max_in_flight = 8
            max_queued = 0
            queue_timeout = "1500ms"
            retry_after = "250ms"
            retry_after_max = "5s"
            "#,
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 8);
        assert_eq!(c.max_queued, 0);
        assert_eq!(c.queue_timeout, Duration::from_millis(1500));
        assert_eq!(c.retry_after, Duration::from_millis(250));
        c.validate().unwrap();
        let round_trip: ConcurrencyConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(round_trip, c);
        assert!(
            toml::from_str::<ConcurrencyConfig>("max_inflight = 3").is_err(),
            "a misspelt key is an error"
        );
        let partial: ConcurrencyConfig = toml::from_str("enabled = false").unwrap();
        assert_eq!(partial.max_in_flight, 64, "unset keys keep their defaults");
    }

    #[test]
    fn out_of_range_values_are_rejected_with_their_key() {
        let d = ConcurrencyConfig::default;
        let cases = [
            (d().with_max_in_flight(0), "max_in_flight"),
            (d().with_max_in_flight(usize::MAX), "max_in_flight"),
            (d().with_max_queued(usize::MAX), "max_queued"),
            (d().with_queue_timeout(Duration::ZERO), "queue_timeout"),
            (d().with_retry_after(Duration::ZERO), "retry_after"),
            (
                d().with_retry_after(Duration::from_secs(2))
                    .with_retry_after_max(Duration::from_secs(1)),
                "retry_after_max",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field));
        }
        // No queue, no timeout needed.
        d().with_max_queued(0)
            .with_queue_timeout(Duration::ZERO)
            .validate()
            .unwrap();
    }

    #[test]
    fn retry_hint_grows_with_the_backlog_and_is_capped() {
        let c = ConcurrencyConfig::default()
            .with_retry_after(Duration::from_millis(100))
            .with_retry_after_max(Duration::from_secs(1));
        assert_eq!(c.retry_after_for(0, 8), Duration::from_millis(100));
        assert_eq!(c.retry_after_for(7, 8), Duration::from_millis(100));
        assert_eq!(c.retry_after_for(8, 8), Duration::from_millis(200));
        assert_eq!(c.retry_after_for(1000, 8), Duration::from_secs(1));
        assert_eq!(c.retry_after_for(usize::MAX - 1, 1), Duration::from_secs(1));
        assert_eq!(c.retry_after_for(0, 0), Duration::from_secs(1), "paused");
    }
}
