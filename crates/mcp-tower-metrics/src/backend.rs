//! [`Backend`]: what every tool's metrics share: the recorder, the clock's epoch, the
//! all-tools in-flight figures and the upkeep schedule.

use std::{
    fmt,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
};

use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use tokio::time::Instant;

pub(crate) struct Backend {
    pub(crate) recorder: PrometheusRecorder,
    pub(crate) prometheus: PrometheusHandle,
    /// Time zero of the `/stats` windows (tokio's clock).
    pub(crate) epoch: Instant,
    /// The width of a latency window slot.
    pub(crate) latency_slot_ms: u64,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// Milliseconds after the epoch when unscraped samples are next folded in.
    next_upkeep_ms: AtomicU64,
    upkeep_ms: u64,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("in_flight", &self.in_flight())
            .field("peak", &self.peak())
            .finish_non_exhaustive()
    }
}

impl Backend {
    pub(crate) fn new(recorder: PrometheusRecorder, latency_slot_ms: u64, upkeep_ms: u64) -> Self {
        Self {
            prometheus: recorder.handle(),
            recorder,
            epoch: Instant::now(),
            latency_slot_ms,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            next_upkeep_ms: AtomicU64::new(upkeep_ms),
            upkeep_ms,
        }
    }

    /// Milliseconds from the epoch to `at`.
    pub(crate) fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Durations wait in the recorder's lock-free buckets until folded into the histograms;
    /// a scrape does that, and so does this, every `upkeep_interval`, so a server nobody
    /// scrapes does not grow. The fold runs in a task of its own, not on a caller's time.
    pub(crate) fn upkeep_if_due(&self, now_ms: u64) {
        let due = self.next_upkeep_ms.load(Ordering::Relaxed);
        if now_ms < due
            || self
                .next_upkeep_ms
                .compare_exchange(
                    due,
                    now_ms.saturating_add(self.upkeep_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let prometheus = self.prometheus.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { prometheus.run_upkeep() })),
            Err(_) => prometheus.run_upkeep(),
        }
    }
}
