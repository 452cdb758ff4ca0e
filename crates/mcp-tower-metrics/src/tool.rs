//! Per-tool state: the tool's metric handles (registered once, when the tool is first
//! called) and its `/stats` windows, found per call by `ToolId` without a lock.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use arc_swap::ArcSwap;
use mcp_tower_core::ToolPolicy;
use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder};
use tokio::time::Instant;

use crate::{
    CallOutcome,
    backend::Backend,
    names::{CALL_DURATION_SECONDS, CALLS_IN_FLIGHT, CALLS_TOTAL, METADATA, UNKNOWN_TOOL},
    window::{LatencyWindow, RateWindow},
};

/// Everything kept for one tool label.
pub(crate) struct ToolMetrics {
    backend: Arc<Backend>,
    pub(crate) name: Arc<str>,
    calls: [Counter; CallOutcome::COUNT],
    /// Registered on the first call with each outcome, so only outcomes that happened
    /// render (a histogram is ~20 lines of exposition).
    durations: [OnceLock<Histogram>; CallOutcome::COUNT],
    /// Set from `in_flight` when the metrics are rendered (a gauge is a current value;
    /// keeping it per call would cost two compare-and-swap loops on a shared line).
    in_flight_gauge: Gauge,
    counts: [AtomicU64; CallOutcome::COUNT],
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    pub(crate) rate: RateWindow,
    pub(crate) latency: LatencyWindow,
}

impl fmt::Debug for ToolMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolMetrics")
            .field("name", &self.name)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl ToolMetrics {
    fn new(name: Arc<str>, backend: &Arc<Backend>) -> Self {
        let recorder = &backend.recorder;
        let calls = CallOutcome::ALL.map(|outcome| {
            recorder.register_counter(&call_key(CALLS_TOTAL, &name, Some(outcome)), &METADATA)
        });
        let in_flight_gauge =
            recorder.register_gauge(&call_key(CALLS_IN_FLIGHT, &name, None), &METADATA);
        Self {
            calls,
            durations: Default::default(),
            in_flight_gauge,
            counts: Default::default(),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            rate: RateWindow::new(),
            latency: LatencyWindow::new(backend.latency_slot_ms),
            backend: Arc::clone(backend),
            name,
        }
    }

    /// A call received at `received_at` entered.
    pub(crate) fn enter(&self, received_at: Instant) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.backend.enter();
        self.rate.record(self.backend.millis(received_at));
    }

    /// The call received at `start` ended with `outcome`: counts it, records its duration
    /// (one clock read) and takes it out of the in-flight figures.
    pub(crate) fn finish(&self, start: Instant, outcome: CallOutcome) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
        let now_ms = self.backend.millis(now);
        let i = outcome.index();
        self.calls[i].increment(1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.durations[i]
            .get_or_init(|| {
                self.backend.recorder.register_histogram(
                    &call_key(CALL_DURATION_SECONDS, &self.name, Some(outcome)),
                    &METADATA,
                )
            })
            .record(elapsed.as_secs_f64());
        if outcome != CallOutcome::Cancelled {
            let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            self.latency.record(now_ms, micros, outcome.is_success());
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.backend.leave();
        self.backend.upkeep_if_due(now_ms);
    }

    /// Copies the in-flight count into its gauge (before rendering).
    pub(crate) fn publish_in_flight(&self) {
        self.in_flight_gauge.set(self.in_flight() as f64);
    }

    /// Calls by outcome since start.
    pub(crate) fn counts(&self) -> [u64; CallOutcome::COUNT] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

fn call_key(name: &'static str, tool: &Arc<str>, outcome: Option<CallOutcome>) -> Key {
    let mut labels = vec![Label::new("tool", tool.to_string())];
    if let Some(outcome) = outcome {
        labels.push(Label::new("outcome", outcome.as_str()));
    }
    Key::from_parts(name, labels)
}

/// Every tool's [`ToolMetrics`]: a lock-free index by `ToolId` for the hot path, and a map
/// by name (under a mutex, for new tools and for reading them all).
pub(crate) struct ToolRegistry {
    by_id: ArcSwap<Vec<Option<Arc<ToolMetrics>>>>,
    by_name: Mutex<BTreeMap<Arc<str>, Arc<ToolMetrics>>>,
    unknown: Arc<ToolMetrics>,
    backend: Arc<Backend>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.len())
            .finish_non_exhaustive()
    }
}

impl ToolRegistry {
    pub(crate) fn new(backend: &Arc<Backend>) -> Self {
        Self {
            by_id: ArcSwap::from_pointee(Vec::new()),
            by_name: Mutex::new(BTreeMap::new()),
            unknown: Arc::new(ToolMetrics::new(Arc::from(UNKNOWN_TOOL), backend)),
            backend: Arc::clone(backend),
        }
    }

    /// The metrics of the tool `policy` describes: its own when the policy table knows the
    /// tool, the shared `unknown` ones otherwise (so made-up names create no series).
    pub(crate) fn resolve(&self, policy: &ToolPolicy) -> Arc<ToolMetrics> {
        let Some((id, name)) = &policy.tool else {
            return Arc::clone(&self.unknown);
        };
        if let Some(Some(metrics)) = self.by_id.load().get(id.index())
            // Ids are dense per policy table; a handle shared by stacks with different
            // tables may see another tool under the same id: check the name.
            && (Arc::ptr_eq(&metrics.name, name) || metrics.name == *name)
        {
            return Arc::clone(metrics);
        }
        self.resolve_slow(id.index(), name)
    }

    #[cold]
    fn resolve_slow(&self, id: usize, name: &Arc<str>) -> Arc<ToolMetrics> {
        let mut by_name = self
            .by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let metrics = Arc::clone(
            by_name
                .entry(Arc::clone(name))
                .or_insert_with(|| Arc::new(ToolMetrics::new(Arc::clone(name), &self.backend))),
        );
        // Index it by id unless another tool (of another table) holds the id already.
        let by_id = self.by_id.load();
        if by_id.get(id).is_none_or(Option::is_none) {
            let mut next = Vec::clone(&by_id);
            if next.len() <= id {
                next.resize(id + 1, None);
            }
            next[id] = Some(Arc::clone(&metrics));
            // Writers are serialized by `by_name`'s lock, so a plain store is enough.
            self.by_id.store(Arc::new(next));
        }
        metrics
    }

    /// Every tool called so far (by name), then `unknown` if it was called.
    pub(crate) fn all(&self) -> Vec<Arc<ToolMetrics>> {
        let by_name = self
            .by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut all: Vec<_> = by_name.values().cloned().collect();
        if self.unknown.counts().iter().any(|&n| n > 0) || self.unknown.in_flight() > 0 {
            all.push(Arc::clone(&self.unknown));
        }
        all
    }

    /// Copies every tool's in-flight count into its gauge.
    pub(crate) fn publish_in_flight(&self) {
        self.unknown.publish_in_flight();
        let by_name = self
            .by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for tool in by_name.values() {
            tool.publish_in_flight();
        }
    }

    /// Tool labels in use, `unknown` included.
    pub(crate) fn len(&self) -> usize {
        self.by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
            + 1
    }
}
