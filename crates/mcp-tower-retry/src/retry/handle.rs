//! [`RetryHandle`]: the retry layer's figures, and the state its services share.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use mcp_tower_core::{Figure, LayerReport};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{backoff::Backoff, budget::RetryBudget, config::RetryConfig, striped::StripedCounter};

/// What every service built from one [`RetryLayer`](crate::RetryLayer) shares: the
/// configuration, the budget and the counters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RetryConfig,
    pub(crate) backoff: Backoff,
    pub(crate) budget: RetryBudget,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn new(config: RetryConfig) -> Self {
        Self {
            backoff: Backoff::new(config.base_delay, config.multiplier, config.max_delay),
            budget: RetryBudget::new(&config.budget),
            counters: Counters::default(),
            config,
        }
    }

    /// Whether the layer may retry at all (on, and more than one attempt allowed).
    pub(crate) fn retries_enabled(&self) -> bool {
        self.config.enabled && self.config.max_attempts > 1
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Updated by every retryable call: striped per thread.
    pub(crate) calls: StripedCounter,
    pub(crate) retries: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) gave_up: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) backing_off: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one call waiting in a backoff for as long as it lives.
#[derive(Debug)]
pub(crate) struct BackingOff {
    shared: Arc<Shared>,
}

impl BackingOff {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Counters::bump(&shared.counters.backing_off);
        Self {
            shared: Arc::clone(shared),
        }
    }
}

impl Drop for BackingOff {
    fn drop(&mut self) {
        self.shared
            .counters
            .backing_off
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The retry layer's figures since it was built. Only calls of tools whose policy allows
/// retries are counted: the layer does nothing at all for the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Calls of retryable tools that reached the layer.
    pub calls: u64,
    /// Attempts made on the inner service for them: `calls + retries`.
    pub attempts: u64,
    /// Retries made (attempts after the first).
    pub retries: u64,
    /// Calls that succeeded after at least one retry.
    pub recovered: u64,
    /// Retries refused because the retry budget was exhausted.
    pub budget_exhausted: u64,
    /// Calls that ended with a retryable failure because retrying stopped: attempts
    /// exhausted, the deadline reached or the budget empty.
    pub gave_up: u64,
    /// Retry loops stopped because the client cancelled the call.
    pub cancelled: u64,
    /// Calls waiting in a backoff now.
    pub backing_off: u64,
}

/// A handle on a [`RetryLayer`](crate::RetryLayer) and every service built from it: its
/// figures and its budget. Cloning shares them.
///
/// ```
/// use mcp_tower_retry::{RetryConfig, RetryLayer};
///
/// let layer = RetryLayer::new(RetryConfig::default()).unwrap();
/// let handle = layer.handle();
/// assert_eq!(handle.stats().retries, 0);
/// assert_eq!(handle.budget_available(), 100, "the floor: 10/s over a 10 s window");
/// ```
#[derive(Debug, Clone)]
pub struct RetryHandle {
    shared: Arc<Shared>,
}

impl RetryHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The figures now.
    pub fn stats(&self) -> RetryStats {
        let c = &self.shared.counters;
        let calls = c.calls.sum();
        let retries = c.retries.load(Ordering::Relaxed);
        RetryStats {
            calls,
            attempts: calls + retries,
            retries,
            recovered: c.recovered.load(Ordering::Relaxed),
            budget_exhausted: c.budget_exhausted.load(Ordering::Relaxed),
            gave_up: c.gave_up.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            backing_off: c.backing_off.load(Ordering::Relaxed),
        }
    }

    /// How many retries the budget would allow now.
    pub fn budget_available(&self) -> u64 {
        self.shared.budget.available(Instant::now())
    }

    /// The configuration the layer was built with.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }
}

impl LayerReport for RetryHandle {
    fn layer(&self) -> &'static str {
        "retry"
    }

    fn figures(&self, out: &mut Vec<Figure>) {
        let s = self.stats();
        out.extend([
            Figure::counter(
                "mcp_retry_calls_total",
                "Calls of retryable tools that reached the retry layer.",
                s.calls,
            ),
            Figure::counter(
                "mcp_retry_attempts_total",
                "Attempts made on the inner service for retryable tools (first attempts and retries).",
                s.attempts,
            ),
            Figure::counter(
                "mcp_retry_retries_total",
                "Retries made (attempts after the first).",
                s.retries,
            ),
            Figure::counter(
                "mcp_retry_recovered_total",
                "Calls that succeeded after at least one retry.",
                s.recovered,
            ),
            Figure::counter(
                "mcp_retry_budget_exhausted_total",
                "Retries refused because the retry budget was exhausted.",
                s.budget_exhausted,
            ),
            Figure::counter(
                "mcp_retry_gave_up_total",
                "Calls that failed after retrying stopped (attempts, deadline or budget).",
                s.gave_up,
            ),
            Figure::counter(
                "mcp_retry_cancelled_total",
                "Retry loops stopped because the client cancelled the call.",
                s.cancelled,
            ),
            Figure::gauge(
                "mcp_retry_backing_off",
                "Calls waiting in a backoff before their next attempt.",
                s.backing_off as f64,
            ),
            Figure::gauge(
                "mcp_retry_budget_available",
                "Retries the retry budget would allow now.",
                self.budget_available() as f64,
            ),
        ]);
    }

    fn snapshot(&self) -> Value {
        let s = self.stats();
        let c = &self.shared.config;
        let budget = self.shared.budget.config();
        json!({
            "calls": s.calls,
            "attempts": s.attempts,
            "retries": s.retries,
            "recovered": s.recovered,
            "budget_exhausted": s.budget_exhausted,
            "gave_up": s.gave_up,
            "cancelled": s.cancelled,
            "backing_off": s.backing_off,
            "budget": {
                "available": self.budget_available(),
                "window_ms": u64::try_from(budget.window.as_millis()).unwrap_or(u64::MAX),
                "min_per_sec": budget.min_per_sec,
                "ratio": budget.ratio,
            },
            "config": {
                "enabled": c.enabled,
                "max_attempts": c.max_attempts,
                "base_delay_ms": u64::try_from(c.base_delay.as_millis()).unwrap_or(u64::MAX),
                "multiplier": c.multiplier,
                "max_delay_ms": u64::try_from(c.max_delay.as_millis()).unwrap_or(u64::MAX),
                "deadline_ms": u64::try_from(c.deadline.as_millis()).unwrap_or(u64::MAX),
            },
        })
    }
}
