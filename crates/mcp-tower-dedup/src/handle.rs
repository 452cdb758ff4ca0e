//! [`DedupHandle`] and [`DedupStats`]: the deduplicator's figures, for tests, admin endpoints
//! and the metrics layer.

use std::sync::{Arc, atomic::Ordering};

use mcp_tower_core::{Figure, LayerReport};
use serde::Serialize;
use serde_json::Value;

use crate::flight::Stats;

/// What the deduplicator has done since it was built.
///
/// Counters of a flight's waiters (`followers_served`, `followers_rerun`,
/// `waiters_cancelled`) are added when the flight ends (its last waiter has its answer or
/// has left), so a snapshot taken while flights run may lag by those flights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct DedupStats {
    /// Flights started: executions of the inner service on behalf of deduplicated calls.
    pub flights: u64,
    /// Calls that joined a flight someone else started and got its outcome (a result or an
    /// error) without an execution of their own.
    pub followers_served: u64,
    /// Calls that joined a flight whose response turned out to belong to the leader's
    /// request alone (`InputRequired`, `Task`) and so ran their own call.
    pub followers_rerun: u64,
    /// Flights whose every waiter left before the end: the inner call was dropped.
    pub flights_cancelled: u64,
    /// Flights whose inner call panicked: every waiter got an internal error.
    pub flights_panicked: u64,
    /// Waiters (leaders or followers) that left a flight before its outcome: their caller
    /// cancelled or went away.
    pub waiters_cancelled: u64,
    /// Calls to a private tool by an anonymous caller (no verified identity) that ran on
    /// their own instead of joining a flight (see `mcp_tower_core::Anonymous`).
    pub bypassed_anonymous: u64,
    /// Keys with a flight running now.
    pub in_flight_keys: usize,
}

/// A cloneable handle to a deduplicator's figures, from [`DedupLayer::handle`] or
/// [`Dedup::handle`]. It implements [`LayerReport`] for the metrics layer and the admin
/// endpoints.
///
/// ```
/// use mcp_tower_dedup::DedupLayer;
///
/// let layer = DedupLayer::default();
/// let handle = layer.handle();
/// assert_eq!(handle.stats().flights, 0);
/// assert_eq!(handle.stats().in_flight_keys, 0);
/// ```
///
/// [`DedupLayer::handle`]: crate::DedupLayer::handle
/// [`Dedup::handle`]: crate::Dedup::handle
#[derive(Debug, Clone)]
pub struct DedupHandle {
    stats: Arc<Stats>,
    enabled: bool,
}

impl DedupHandle {
    pub(crate) fn new(stats: Arc<Stats>, enabled: bool) -> Self {
        Self { stats, enabled }
    }

    /// The figures now.
    pub fn stats(&self) -> DedupStats {
        let s = &self.stats;
        DedupStats {
            flights: s.flights.load(Ordering::Relaxed),
            followers_served: s.followers_served.load(Ordering::Relaxed),
            followers_rerun: s.followers_rerun.load(Ordering::Relaxed),
            flights_cancelled: s.flights_cancelled.load(Ordering::Relaxed),
            flights_panicked: s.flights_panicked.load(Ordering::Relaxed),
            waiters_cancelled: s.waiters_cancelled.load(Ordering::Relaxed),
            bypassed_anonymous: s.bypassed_anonymous.load(Ordering::Relaxed),
            in_flight_keys: usize::try_from(s.in_flight()).unwrap_or(usize::MAX),
        }
    }

    /// Whether the layer deduplicates (`DedupConfig::enabled`).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

impl LayerReport for DedupHandle {
    fn layer(&self) -> &'static str {
        "dedup"
    }

    fn figures(&self, out: &mut Vec<Figure>) {
        let s = self.stats();
        out.extend([
            Figure::counter(
                "mcp_dedup_flights_total",
                "Executions of the inner service on behalf of deduplicated calls.",
                s.flights,
            ),
            Figure::counter(
                "mcp_dedup_followers_served_total",
                "Calls answered by another call's execution.",
                s.followers_served,
            ),
            Figure::counter(
                "mcp_dedup_followers_rerun_total",
                "Calls that joined a flight whose response was the leader's alone and ran their own.",
                s.followers_rerun,
            ),
            Figure::counter(
                "mcp_dedup_flights_cancelled_total",
                "Flights dropped because every caller waiting for them went away.",
                s.flights_cancelled,
            ),
            Figure::counter(
                "mcp_dedup_flights_panicked_total",
                "Flights whose tool panicked.",
                s.flights_panicked,
            ),
            Figure::counter(
                "mcp_dedup_waiters_cancelled_total",
                "Callers that left a flight before its outcome.",
                s.waiters_cancelled,
            ),
            Figure::counter(
                "mcp_dedup_bypassed_anonymous_total",
                "Calls to private tools not deduplicated because the caller is anonymous.",
                s.bypassed_anonymous,
            ),
            Figure::gauge(
                "mcp_dedup_in_flight_keys",
                "Keys with a flight running now.",
                s.in_flight_keys as f64,
            ),
        ]);
    }

    fn snapshot(&self) -> Value {
        let mut snapshot = serde_json::to_value(self.stats()).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut snapshot {
            map.insert("enabled".into(), Value::Bool(self.enabled));
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_tower_core::FigureKind;

    #[test]
    fn report_names_every_figure_once() {
        let stats = Arc::new(Stats::default());
        stats.flights.fetch_add(3, Ordering::Relaxed);
        stats.flights_ended.fetch_add(2, Ordering::Relaxed);
        let handle = DedupHandle::new(stats, true);
        let mut figures = Vec::new();
        handle.figures(&mut figures);
        assert_eq!(figures.len(), 8);
        let flights = figures
            .iter()
            .find(|f| f.name == "mcp_dedup_flights_total")
            .unwrap();
        assert_eq!(flights.value, 3.0);
        assert_eq!(flights.kind, FigureKind::Counter);
        let keys = figures
            .iter()
            .find(|f| f.name == "mcp_dedup_in_flight_keys")
            .unwrap();
        assert_eq!(keys.kind, FigureKind::Gauge);
        assert_eq!(keys.value, 1.0);
        let mut names: Vec<_> = figures.iter().map(|f| f.name).collect();
        names.dedup();
        assert_eq!(names.len(), 8);
        assert_eq!(handle.layer(), "dedup");

        let snapshot = handle.snapshot();
        assert_eq!(snapshot["flights"], 3);
        assert_eq!(snapshot["in_flight_keys"], 1);
        assert_eq!(snapshot["enabled"], true);
    }
}
