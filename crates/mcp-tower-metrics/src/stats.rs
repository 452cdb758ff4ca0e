//! The figures of `/stats` and `/health`, as plain structs.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::CallOutcome;

/// Calls by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// Answered without error.
    pub ok: u64,
    /// `isError` results.
    pub tool_error: u64,
    /// Served by the cache layer.
    pub cache_hit: u64,
    /// Refused by a concurrency limit.
    pub rejected: u64,
    /// Timed out.
    pub timeout: u64,
    /// Cancelled by the client.
    pub cancelled: u64,
    /// Any other error.
    pub error: u64,
}

impl OutcomeCounts {
    pub(crate) fn from_array(counts: [u64; CallOutcome::COUNT]) -> Self {
        let n = |o: CallOutcome| counts[o.index()];
        Self {
            ok: n(CallOutcome::Ok),
            tool_error: n(CallOutcome::ToolError),
            cache_hit: n(CallOutcome::CacheHit),
            rejected: n(CallOutcome::Rejected),
            timeout: n(CallOutcome::Timeout),
            cancelled: n(CallOutcome::Cancelled),
            error: n(CallOutcome::Error),
        }
    }

    /// The count of `outcome`.
    pub fn get(&self, outcome: CallOutcome) -> u64 {
        match outcome {
            CallOutcome::Ok => self.ok,
            CallOutcome::ToolError => self.tool_error,
            CallOutcome::CacheHit => self.cache_hit,
            CallOutcome::Rejected => self.rejected,
            CallOutcome::Timeout => self.timeout,
            CallOutcome::Cancelled => self.cancelled,
            CallOutcome::Error => self.error,
        }
    }

    /// Every call that finished.
    pub fn total(&self) -> u64 {
        CallOutcome::ALL.iter().map(|&o| self.get(o)).sum()
    }

    /// Calls that got an answer (all but the cancelled ones).
    pub fn answered(&self) -> u64 {
        self.total() - self.cancelled
    }

    /// `ok` and `cache_hit` over the answered calls (`None` before any).
    pub fn success_rate(&self) -> Option<f64> {
        ratio(self.ok + self.cache_hit, self.answered())
    }

    /// `cache_hit` over the answered calls (`None` before any).
    pub fn cache_hit_rate(&self) -> Option<f64> {
        ratio(self.cache_hit, self.answered())
    }

    pub(crate) fn add(&mut self, other: &OutcomeCounts) {
        for outcome in CallOutcome::ALL {
            *self.get_mut(outcome) += other.get(outcome);
        }
    }

    fn get_mut(&mut self, outcome: CallOutcome) -> &mut u64 {
        match outcome {
            CallOutcome::Ok => &mut self.ok,
            CallOutcome::ToolError => &mut self.tool_error,
            CallOutcome::CacheHit => &mut self.cache_hit,
            CallOutcome::Rejected => &mut self.rejected,
            CallOutcome::Timeout => &mut self.timeout,
            CallOutcome::Cancelled => &mut self.cancelled,
            CallOutcome::Error => &mut self.error,
        }
    }
}

pub(crate) fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Answered calls over the sliding window (`MetricsConfig::stats_window`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WindowStats {
    /// The window's length in seconds.
    pub seconds: f64,
    /// Calls answered in the window (cancelled calls are not counted).
    pub calls: u64,
    /// `ok` and `cache_hit` over `calls`.
    pub success_rate: Option<f64>,
    /// Median latency in milliseconds (at most 6.25 % high, never low).
    pub p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
}

/// One tool's figures in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ToolStats {
    /// Calls that finished since start.
    pub calls: u64,
    /// Those calls by outcome.
    pub outcomes: OutcomeCounts,
    /// `ok` and `cache_hit` over answered calls, since start.
    pub success_rate: Option<f64>,
    /// `cache_hit` over answered calls, since start.
    pub cache_hit_rate: Option<f64>,
    /// Calls received per second over the last second (of complete 100 ms slots).
    pub qps_1s: f64,
    /// Calls received per second over the last 10 seconds.
    pub qps_10s: f64,
    /// Calls being handled now.
    pub in_flight: usize,
    /// The most calls handled at once since start.
    pub peak_in_flight: usize,
    /// The sliding window.
    pub window: WindowStats,
}

/// The whole server's figures in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TotalStats {
    /// Calls that finished since start.
    pub calls: u64,
    /// Those calls by outcome.
    pub outcomes: OutcomeCounts,
    /// `ok` and `cache_hit` over answered calls, since start.
    pub success_rate: Option<f64>,
    /// `cache_hit` over answered calls, since start.
    pub cache_hit_rate: Option<f64>,
    /// Calls received per second over the last second, all tools.
    pub qps_1s: f64,
    /// Calls received per second over the last 10 seconds, all tools.
    pub qps_10s: f64,
    /// Calls being handled now.
    pub in_flight: usize,
    /// The most calls handled at once since start, all tools together.
    pub peak_in_flight: usize,
}

/// What `GET /stats` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Seconds since the metrics handle was created.
    pub uptime_seconds: f64,
    /// All tools together.
    pub totals: TotalStats,
    /// Per tool label (tool names the policy table knows, and `unknown`), for every tool
    /// called since start.
    pub tools: BTreeMap<String, ToolStats>,
    /// Each registered layer's snapshot, by layer name (`cache`, `pool`, …; a second
    /// report of the same layer is `pool#2`).
    pub layers: BTreeMap<String, Value>,
}

/// `ok` or `unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every layer that has an opinion says it can serve.
    Ok,
    /// At least one layer says it cannot (a required upstream is down).
    Unhealthy,
}

/// One layer in `/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerHealth {
    /// What the layer says (`null`: no opinion).
    pub healthy: Option<bool>,
    /// Its snapshot (pool and upstream state, cache statistics…).
    pub snapshot: Value,
}

/// What `GET /health` returns (with status 503 when `status` is `unhealthy`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// `ok`, or `unhealthy` when any layer reports `healthy() == Some(false)`.
    pub status: HealthStatus,
    /// Seconds since the metrics handle was created.
    pub uptime_seconds: f64,
    /// Tool calls being handled now.
    pub in_flight: usize,
    /// Each registered layer, by name.
    pub layers: BTreeMap<String, LayerHealth>,
}

impl HealthReport {
    /// Whether the server can serve.
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Ok
    }
}
