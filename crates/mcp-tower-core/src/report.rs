//! [`LayerReport`]: how a layer's handle exposes its figures to the metrics layer and to the
//! `/health` and `/stats` endpoints, without the metrics crate depending on every layer.

use std::fmt;

use serde_json::Value;

/// Whether a [`Figure`] only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureKind {
    /// Monotonic since start (`…_total`).
    Counter,
    /// A current value.
    Gauge,
}

/// One figure a layer reports, read when metrics are scraped.
///
/// Names follow Prometheus conventions (`mcp_cache_hits_total`, `mcp_cache_weighted_bytes`);
/// label values must come from a bounded set (tool names from the policy table, upstream
/// names from configuration), never from client input.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The metric name.
    pub name: &'static str,
    /// One line of help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: FigureKind,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Figure {
    /// A counter without labels.
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            help,
            kind: FigureKind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    /// A gauge without labels.
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: FigureKind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }
}

/// Implemented by every stateful layer's handle (`CacheHandle`, `ConcurrencyHandle`,
/// `PoolHandle`…), so the metrics layer can export their figures and the admin endpoints can
/// show them.
pub trait LayerReport: Send + Sync + fmt::Debug + 'static {
    /// The layer's name: `cache`, `dedup`, `concurrency`, `retry`, `pool`.
    fn layer(&self) -> &'static str;

    /// Appends the layer's current figures to `out`.
    fn figures(&self, out: &mut Vec<Figure>);

    /// A JSON snapshot of the layer's state, for `/stats` and `/health`.
    fn snapshot(&self) -> Value;

    /// Whether the layer can serve: `Some(false)` turns `/health` to 503 (a required
    /// upstream is down). `None`: the layer has no opinion.
    fn healthy(&self) -> Option<bool> {
        None
    }
}
