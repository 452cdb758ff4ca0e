//! [`ConcurrencyHandle`]: reads the layer's gauges and changes its limits at run time.

use std::{fmt, sync::Arc};

use mcp_tower_core::{Figure, LayerReport};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    ConcurrencyConfig,
    limiter::{Limiter, Snapshot, UNLIMITED},
    limits::Limits,
};

/// Which limit a [`ConcurrencyHandle`] method is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope<'a> {
    /// The global limit (`max_in_flight`): calls of all tools together.
    Global,
    /// One tool's limit, by the tool's name.
    Tool(&'a str),
}

/// One limit's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitStats {
    /// The limit; `None` when there is none (a tool without `max_concurrency`).
    pub limit: Option<usize>,
    /// Calls holding a permit of this limit now. For a tool, that counts its calls that
    /// run and those that hold the tool's permit while they wait for the global one.
    pub in_flight: usize,
    /// The most calls that held a permit at once, since start.
    pub peak: usize,
    /// Calls waiting in this limit's queue now.
    pub queued: usize,
    /// The most calls that waited in this limit's queue at once, since start (never more
    /// than `max_queued`).
    pub queued_peak: usize,
    /// Calls that had to queue, since start.
    pub waited: u64,
    /// Calls turned away at once because the queue was full (or queueing is off).
    pub busy: u64,
    /// Calls turned away after waiting `queue_timeout`.
    pub timed_out: u64,
    /// Calls whose request was cancelled while they waited.
    pub cancelled: u64,
}

impl LimitStats {
    /// Calls this limit turned away: [`busy`](Self::busy) plus
    /// [`timed_out`](Self::timed_out).
    pub fn rejected(&self) -> u64 {
        self.busy + self.timed_out
    }

    fn from_snapshot(s: Snapshot) -> Self {
        Self {
            limit: (s.limit < UNLIMITED).then_some(s.limit),
            in_flight: s.in_flight,
            peak: s.peak,
            queued: s.queued,
            queued_peak: s.queued_peak,
            waited: s.waited,
            busy: s.busy,
            timed_out: s.timed_out,
            cancelled: s.cancelled,
        }
    }
}

/// Reads the concurrency layer's gauges and changes its limits while it serves.
///
/// Cloning shares the layer's state. Get one from
/// [`ConcurrencyLayer::handle`](crate::ConcurrencyLayer::handle).
///
/// ```
/// use mcp_tower_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Scope};
///
/// let layer = ConcurrencyLayer::new(ConcurrencyConfig::default().with_max_in_flight(8)).unwrap();
/// let handle = layer.handle();
/// handle.set_limit(Scope::Tool("search"), 2);
/// handle.set_limit(Scope::Global, 16);
/// assert_eq!(handle.limit(Scope::Tool("search")), Some(2));
/// assert_eq!(handle.limit(Scope::Global), Some(16));
/// assert_eq!(handle.in_flight(), 0);
/// ```
#[derive(Clone)]
pub struct ConcurrencyHandle {
    limits: Arc<Limits>,
}

impl fmt::Debug for ConcurrencyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyHandle")
            .field("global", &self.global_stats())
            .finish_non_exhaustive()
    }
}

impl ConcurrencyHandle {
    pub(crate) fn new(limits: Arc<Limits>) -> Self {
        Self { limits }
    }

    /// The configuration the layer was built with.
    pub fn config(&self) -> &ConcurrencyConfig {
        &self.limits.config
    }

    /// Sets a limit, at once.
    ///
    /// Growing it admits queued calls right away. Shrinking it below the calls in flight
    /// lets them finish: the surplus permits are retired as they return, and new calls
    /// wait until the count is under the new limit (no permit is lost or leaked). `0`
    /// pauses the scope: calls queue (and time out) until the limit is raised. A limit of
    /// [`MAX_LIMIT`](crate::MAX_LIMIT) + 1 or more means none.
    ///
    /// A tool's limit set here replaces its policy's `max_concurrency`, including for a
    /// tool that has not been called yet.
    pub fn set_limit(&self, scope: Scope<'_>, limit: usize) {
        match scope {
            Scope::Global => self.limits.global.set_limit(limit),
            Scope::Tool(name) => self.limits.named(&Arc::from(name), limit).set_limit(limit),
        }
    }

    /// Removes a tool's limit: its calls are then limited by the global limit only.
    pub fn clear_tool_limit(&self, tool: &str) {
        if let Some(limiter) = self.limits.find(tool) {
            limiter.set_limit(UNLIMITED);
        }
    }

    fn limiter(&self, scope: Scope<'_>) -> Option<Arc<Limiter>> {
        match scope {
            Scope::Global => Some(Arc::clone(&self.limits.global)),
            Scope::Tool(name) => self.limits.find(name),
        }
    }

    /// The limit now; `None` when the scope has none (a tool without a limit, or one this
    /// layer has not seen).
    pub fn limit(&self, scope: Scope<'_>) -> Option<usize> {
        self.limiter(scope)
            .map(|l| l.limit())
            .filter(|&l| l < UNLIMITED)
    }

    /// Calls running now (holding a global permit).
    pub fn in_flight(&self) -> usize {
        self.limits.global.in_flight()
    }

    /// The most calls that ran at once, since start.
    pub fn peak(&self) -> usize {
        self.global_stats().peak
    }

    /// Calls waiting now, in the global queue and every tool's.
    pub fn queued(&self) -> usize {
        self.limits.global.queued()
            + self
                .limits
                .tools()
                .iter()
                .map(|l| l.queued())
                .sum::<usize>()
    }

    /// Calls turned away since start (busy or queue timeout), by any limit.
    pub fn rejected(&self) -> u64 {
        self.global_stats().rejected()
            + self
                .tool_stats()
                .iter()
                .map(|(_, s)| s.rejected())
                .sum::<u64>()
    }

    /// One limit's figures; `None` for a tool this layer has not seen.
    pub fn stats(&self, scope: Scope<'_>) -> Option<LimitStats> {
        self.limiter(scope)
            .map(|l| LimitStats::from_snapshot(l.snapshot()))
    }

    /// The global limit's figures.
    pub fn global_stats(&self) -> LimitStats {
        LimitStats::from_snapshot(self.limits.global.snapshot())
    }

    /// Every tool's figures (each tool called so far, or given a limit), by name.
    pub fn tool_stats(&self) -> Vec<(Arc<str>, LimitStats)> {
        self.limits
            .tools()
            .into_iter()
            .filter_map(|l| {
                let name = Arc::clone(l.name()?);
                Some((name, LimitStats::from_snapshot(l.snapshot())))
            })
            .collect()
    }
}

fn push_figures(out: &mut Vec<Figure>, stats: &LimitStats, tool: Option<&str>) {
    let names = match tool {
        None => [
            "mcp_concurrency_limit",
            "mcp_concurrency_in_flight",
            "mcp_concurrency_peak",
            "mcp_concurrency_queued",
            "mcp_concurrency_waited_total",
            "mcp_concurrency_rejected_total",
            "mcp_concurrency_cancelled_total",
        ],
        Some(_) => [
            "mcp_concurrency_tool_limit",
            "mcp_concurrency_tool_in_flight",
            "mcp_concurrency_tool_peak",
            "mcp_concurrency_tool_queued",
            "mcp_concurrency_tool_waited_total",
            "mcp_concurrency_tool_rejected_total",
            "mcp_concurrency_tool_cancelled_total",
        ],
    };
    let label = |figure: Figure| match tool {
        Some(tool) => figure.with_label("tool", tool),
        None => figure,
    };
    if let Some(limit) = stats.limit {
        out.push(label(Figure::gauge(
            names[0],
            "The concurrency limit: calls allowed to run at once.",
            limit as f64,
        )));
    }
    out.push(label(Figure::gauge(
        names[1],
        "Calls holding a permit of the limit now.",
        stats.in_flight as f64,
    )));
    out.push(label(Figure::gauge(
        names[2],
        "The most calls that held a permit of the limit at once since start.",
        stats.peak as f64,
    )));
    out.push(label(Figure::gauge(
        names[3],
        "Calls waiting for a permit of the limit now.",
        stats.queued as f64,
    )));
    out.push(label(Figure::counter(
        names[4],
        "Calls that had to wait for a permit of the limit.",
        stats.waited,
    )));
    out.push(
        label(Figure::counter(
            names[5],
            "Calls the limit turned away, by reason: busy (queue full) or queue_timeout.",
            stats.busy,
        ))
        .with_label("reason", "busy"),
    );
    out.push(
        label(Figure::counter(
            names[5],
            "Calls the limit turned away, by reason: busy (queue full) or queue_timeout.",
            stats.timed_out,
        ))
        .with_label("reason", "queue_timeout"),
    );
    out.push(label(Figure::counter(
        names[6],
        "Calls cancelled by the client while they waited for a permit of the limit.",
        stats.cancelled,
    )));
}

fn stats_json(stats: &LimitStats) -> Value {
    serde_json::to_value(stats).unwrap_or(Value::Null)
}

impl LayerReport for ConcurrencyHandle {
    fn layer(&self) -> &'static str {
        "concurrency"
    }

    /// Global figures as `mcp_concurrency_*`, each tool's as `mcp_concurrency_tool_*` with
    /// a `tool` label (tools known to the policy table, or named through the handle).
    fn figures(&self, out: &mut Vec<Figure>) {
        push_figures(out, &self.global_stats(), None);
        for (name, stats) in self.tool_stats() {
            push_figures(out, &stats, Some(&name));
        }
    }

    /// `{"global": {...}, "tools": {"<name>": {...}}, "config": {...}}`, each limit's
    /// object being its [`LimitStats`].
    fn snapshot(&self) -> Value {
        let tools: Map<String, Value> = self
            .tool_stats()
            .into_iter()
            .map(|(name, stats)| (name.to_string(), stats_json(&stats)))
            .collect();
        serde_json::json!({
            "global": stats_json(&self.global_stats()),
            "tools": tools,
            "config": serde_json::to_value(self.config()).unwrap_or(Value::Null),
        })
    }
}
