//! [`MetricsHandle`]: the recorder, the per-tool windows and the registered layer reports,
//! read by `/metrics`, `/stats` and `/health`.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use mcp_tower_core::{LayerReport, ToolCall};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::time::Instant;

use crate::{
    InvalidMetricsConfig, MetricsConfig, MetricsLayer,
    backend::Backend,
    exposition::write_figures,
    names::{
        CALL_DURATION_HELP, CALL_DURATION_SECONDS, CALLS_IN_FLIGHT, CALLS_IN_FLIGHT_HELP,
        CALLS_TOTAL, CALLS_TOTAL_HELP,
    },
    stats::{
        HealthReport, HealthStatus, LayerHealth, OutcomeCounts, StatsSnapshot, ToolStats,
        TotalStats, WindowStats,
    },
    tool::{ToolMetrics, ToolRegistry},
    window::LATENCY_SLOTS,
};

/// What the layer and the handle share.
pub(crate) struct Shared {
    config: MetricsConfig,
    backend: Arc<Backend>,
    tools: ToolRegistry,
    reports: RwLock<Vec<Arc<dyn LayerReport>>>,
}

impl Shared {
    /// A call enters: its tool's metrics, resolved by `ToolId`.
    pub(crate) fn enter(&self, call: &ToolCall) -> Arc<ToolMetrics> {
        let tool = self.tools.resolve(call.policy());
        tool.enter(call.received_at());
        tool
    }
}

/// The state of the metrics layer, shared by every clone of the layer and its services:
/// the Prometheus recorder, each tool's windows, and the other layers' reports.
///
/// Build one with [`MetricsHandle::new`], register the other layers' handles with
/// [`add_report`](Self::add_report), put [`layer`](Self::layer) in the stack and serve
/// [`router`](Self::router) (feature `http`) beside the MCP endpoint.
///
/// The recorder is the handle's own, not the process-wide one, so several handles (tests,
/// two stacks) never mix their figures. [`install_global_recorder`](Self::install_global_recorder)
/// makes it the global one too, so the application's own `metrics::counter!` calls appear
/// in `/metrics`.
#[derive(Clone)]
pub struct MetricsHandle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsHandle")
            .field("config", &self.shared.config)
            .field("tools", &self.shared.tools)
            .field("reports", &self.reports())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// [`MetricsHandle::install_global_recorder`] failed: a global recorder is already set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalRecorderAlreadySet;

impl fmt::Display for GlobalRecorderAlreadySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a global `metrics` recorder is already installed in this process; \
             the metrics handle keeps recording into its own",
        )
    }
}

impl std::error::Error for GlobalRecorderAlreadySet {}

/// The handle's recorder as the process-wide one.
#[derive(Debug)]
struct SharedRecorder(Arc<Backend>);

impl Recorder for SharedRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.recorder.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.recorder.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.recorder.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.0.recorder.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0.recorder.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.0.recorder.register_histogram(key, metadata)
    }
}

impl MetricsHandle {
    /// A handle with its own Prometheus recorder, after validating `config`.
    ///
    /// Create it inside the runtime that serves the calls when tests pause tokio's clock:
    /// the `/stats` windows count from the moment it is created, on tokio's clock.
    pub fn new(config: MetricsConfig) -> Result<Self, InvalidMetricsConfig> {
        config.validate()?;
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(CALL_DURATION_SECONDS.to_owned()),
                &config.duration_buckets,
            )
            .map_err(|e| InvalidMetricsConfig {
                field: "duration_buckets",
                reason: e.to_string(),
            })?
            .build_recorder();
        recorder.describe_counter(
            KeyName::from_const_str(CALLS_TOTAL),
            None,
            SharedString::const_str(CALLS_TOTAL_HELP),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(CALL_DURATION_SECONDS),
            None,
            SharedString::const_str(CALL_DURATION_HELP),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(CALLS_IN_FLIGHT),
            None,
            SharedString::const_str(CALLS_IN_FLIGHT_HELP),
        );
        let window_ms = u64::try_from(config.stats_window.as_millis()).unwrap_or(u64::MAX);
        let upkeep_ms = u64::try_from(config.upkeep_interval.as_millis()).unwrap_or(u64::MAX);
        let backend = Arc::new(Backend::new(recorder, window_ms / LATENCY_SLOTS, upkeep_ms));
        Ok(Self {
            shared: Arc::new(Shared {
                tools: ToolRegistry::new(&backend),
                backend,
                reports: RwLock::new(Vec::new()),
                config,
            }),
        })
    }

    /// The layer that records calls into this handle.
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer::new(self.clone())
    }

    /// The configuration.
    pub fn config(&self) -> &MetricsConfig {
        &self.shared.config
    }

    /// Adds a layer's report (its handle): its figures go into `/metrics`, its snapshot
    /// into `/stats` and `/health`, and `healthy() == Some(false)` turns `/health` to 503.
    pub fn add_report(&self, report: Arc<dyn LayerReport>) {
        self.shared
            .reports
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(report);
    }

    /// [`add_report`](Self::add_report), as a builder.
    pub fn with_report(self, report: Arc<dyn LayerReport>) -> Self {
        self.add_report(report);
        self
    }

    /// The registered reports.
    pub fn reports(&self) -> Vec<Arc<dyn LayerReport>> {
        self.shared
            .reports
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The Prometheus text exposition of everything: the call metrics (and anything else
    /// recorded into this recorder), then every report's figures, then the process figures
    /// (if `process_metrics` is on and the `process` feature is built).
    pub fn render(&self) -> String {
        self.shared.tools.publish_in_flight();
        let mut out = self.shared.backend.prometheus.render();
        let mut figures = Vec::new();
        for report in self.reports() {
            report.figures(&mut figures);
        }
        #[cfg(feature = "process")]
        if self.shared.config.process_metrics {
            crate::exposition::process_figures(&mut figures);
        }
        write_figures(&mut out, &figures);
        out
    }

    /// The Prometheus handle of the recorder, to render it alone (without the layers' and
    /// process figures, and with the in-flight gauges as of the last [`render`](Self::render)).
    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.shared.backend.prometheus
    }

    /// Folds recorded durations into the histograms now. Done on every scrape and, lazily,
    /// every `upkeep_interval`; call it yourself only to control exactly when.
    pub fn run_upkeep(&self) {
        self.shared.backend.prometheus.run_upkeep();
    }

    /// Makes this handle's recorder the process-wide `metrics` recorder, so the
    /// application's own `metrics::counter!`, `gauge!` and `histogram!` calls appear in
    /// [`render`](Self::render). Fails if the process already has one.
    pub fn install_global_recorder(&self) -> Result<(), GlobalRecorderAlreadySet> {
        metrics::set_global_recorder(SharedRecorder(Arc::clone(&self.shared.backend)))
            .map_err(|_| GlobalRecorderAlreadySet)
    }

    /// Tool calls being handled now, all tools together.
    pub fn in_flight(&self) -> usize {
        self.shared.backend.in_flight()
    }

    /// The most tool calls handled at once since the handle was created.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.backend.peak()
    }

    /// How long the handle has existed (tokio's clock).
    pub fn uptime(&self) -> Duration {
        self.shared.backend.epoch.elapsed()
    }

    /// The distinct `tool` label values in use: the known tools called so far, plus
    /// `unknown`. Bounded by the policy table, whatever names clients send.
    pub fn tool_labels(&self) -> usize {
        self.shared.tools.len()
    }

    /// One tool's figures (`"unknown"` for the calls to unknown tools); `None` if it has
    /// not been called.
    pub fn tool_stats(&self, tool: &str) -> Option<ToolStats> {
        let now_ms = self.shared.backend.millis(Instant::now());
        self.shared
            .tools
            .all()
            .into_iter()
            .find(|t| &*t.name == tool)
            .map(|t| self.tool_stats_at(&t, now_ms))
    }

    fn tool_stats_at(&self, tool: &ToolMetrics, now_ms: u64) -> ToolStats {
        let outcomes = OutcomeCounts::from_array(tool.counts());
        let (qps_1s, qps_10s) = tool.rate.qps(now_ms);
        let window = tool.latency.summary(now_ms);
        let [p50_ms, p95_ms, p99_ms] = match window.quantiles_ms {
            Some([a, b, c]) => [Some(a), Some(b), Some(c)],
            None => [None; 3],
        };
        ToolStats {
            calls: outcomes.total(),
            success_rate: outcomes.success_rate(),
            cache_hit_rate: outcomes.cache_hit_rate(),
            outcomes,
            qps_1s,
            qps_10s,
            in_flight: tool.in_flight(),
            peak_in_flight: tool.peak(),
            window: WindowStats {
                seconds: self.shared.config.stats_window.as_secs_f64(),
                calls: window.answered,
                success_rate: crate::stats::ratio(window.succeeded, window.answered),
                p50_ms,
                p95_ms,
                p99_ms,
            },
        }
    }

    /// What `GET /stats` returns: totals, per-tool figures and every layer's snapshot.
    pub fn stats(&self) -> StatsSnapshot {
        let now_ms = self.shared.backend.millis(Instant::now());
        let mut tools = BTreeMap::new();
        let mut outcomes = OutcomeCounts::default();
        let (mut qps_1s, mut qps_10s) = (0.0, 0.0);
        for tool in self.shared.tools.all() {
            let stats = self.tool_stats_at(&tool, now_ms);
            outcomes.add(&stats.outcomes);
            qps_1s += stats.qps_1s;
            qps_10s += stats.qps_10s;
            tools.insert(tool.name.to_string(), stats);
        }
        let mut layers = BTreeMap::new();
        for report in self.reports() {
            layers.insert(unique_name(&layers, report.layer()), report.snapshot());
        }
        StatsSnapshot {
            uptime_seconds: self.uptime().as_secs_f64(),
            totals: TotalStats {
                calls: outcomes.total(),
                success_rate: outcomes.success_rate(),
                cache_hit_rate: outcomes.cache_hit_rate(),
                outcomes,
                qps_1s,
                qps_10s,
                in_flight: self.in_flight(),
                peak_in_flight: self.peak_in_flight(),
            },
            tools,
            layers,
        }
    }

    /// What `GET /health` returns: `unhealthy` (HTTP 503) when any report says
    /// `healthy() == Some(false)`, with every layer's snapshot.
    pub fn health(&self) -> HealthReport {
        let mut layers = BTreeMap::new();
        let mut status = HealthStatus::Ok;
        for report in self.reports() {
            let healthy = report.healthy();
            if healthy == Some(false) {
                status = HealthStatus::Unhealthy;
            }
            layers.insert(
                unique_name(&layers, report.layer()),
                LayerHealth {
                    healthy,
                    snapshot: report.snapshot(),
                },
            );
        }
        HealthReport {
            status,
            uptime_seconds: self.uptime().as_secs_f64(),
            in_flight: self.in_flight(),
            layers,
        }
    }
}

/// `name`, or `name#2`, `name#3`… if taken.
fn unique_name<V>(taken: &BTreeMap<String, V>, name: &str) -> String {
    if !taken.contains_key(name) {
        return name.to_owned();
    }
    let mut n = 2;
    loop {
        let candidate = format!("{name}#{n}");
        if !taken.contains_key(&candidate) {
            return candidate;
        }
        n += 1;
    }
}
