//! What the integration tests share: a resolver that knows some tools, calls, a strict
//! Prometheus text parse, and small `LayerReport`s standing in for the other layers.
#![allow(dead_code, unreachable_pub)]

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use mcp_tower_core::{CallResolver, Figure, LayerReport, PolicyDefaults, PolicyTable, ToolCall};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use rmcp::{model::Tool, object};
use serde_json::json;

/// A resolver whose policy table knows `tools`.
pub fn resolver(tools: &[&'static str]) -> Arc<CallResolver> {
    let tools = tools
        .iter()
        .map(|name| Tool::new(*name, "a test tool", object!({"type": "object"})));
    Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default()).with_tools(tools),
    ))
}

/// A call of `tool`, resolved by `resolver`.
pub fn call(resolver: &Arc<CallResolver>, tool: impl Into<String>) -> ToolCall {
    ToolCall::with_resolver(tool.into(), object!({"q": 1}), Arc::clone(resolver))
}

/// Parses the exposition with `prometheus-parse`, first checking that every line is a
/// comment, blank, or a sample the parser understands with a numeric value (the parser
/// itself skips lines it cannot read, which would hide a malformed exposition).
pub fn parse(text: &str) -> Scrape {
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            if trimmed.starts_with('#') {
                assert!(
                    trimmed.starts_with("# HELP ") || trimmed.starts_with("# TYPE "),
                    "unexpected comment: {line}"
                );
            }
            continue;
        }
        match LineInfo::parse(line) {
            LineInfo::Sample { value, .. } => {
                let ok = matches!(value, "NaN" | "+Inf" | "-Inf") || value.parse::<f64>().is_ok();
                assert!(ok, "bad value in {line:?}");
            }
            other => panic!("not a sample line: {line:?} ({other:?})"),
        }
    }
    // Every metric name has at most one TYPE line.
    let mut typed = std::collections::HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(typed.insert(name.to_owned()), "two TYPE lines for {name}");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse the exposition")
}

/// The samples of `metric` whose labels include every pair of `labels`.
pub fn samples<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The single value (counter, gauge or untyped) of `metric` with `labels`.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = samples(scrape, metric, labels);
    assert!(
        found.len() <= 1,
        "{metric} {labels:?} matches {} samples",
        found.len()
    );
    found.first().map(|s| match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric} is not a single value: {other:?}"),
    })
}

/// The value of `mcp_tool_calls_total{tool, outcome}` (0 when absent).
pub fn calls(scrape: &Scrape, tool: &str, outcome: &str) -> f64 {
    let found = samples(
        scrape,
        "mcp_tool_calls_total",
        &[("tool", tool), ("outcome", outcome)],
    );
    assert!(found.len() <= 1);
    match found.first().map(|s| &s.value) {
        Some(Value::Counter(v)) => *v,
        Some(other) => panic!("mcp_tool_calls_total is typed {other:?}"),
        None => 0.0,
    }
}

/// The cache layer stand-in: two counters and a gauge, no opinion on health.
#[derive(Debug, Default)]
pub struct FakeCache {
    pub hits: AtomicU64,
}

impl LayerReport for FakeCache {
    fn layer(&self) -> &'static str {
        "cache"
    }

    fn figures(&self, out: &mut Vec<Figure>) {
        let hits = self.hits.load(Ordering::SeqCst);
        out.push(
            Figure::counter("mcp_cache_hits_total", "Cache hits.", hits)
                .with_label("tool", "weather"),
        );
        out.push(Figure::counter(
            "mcp_cache_misses_total",
            "Cache misses.",
            2,
        ));
        out.push(Figure::gauge(
            "mcp_cache_weighted_bytes",
            "Bytes held by the cache.",
            1024.0,
        ));
    }

    fn snapshot(&self) -> serde_json::Value {
        json!({"hits": self.hits.load(Ordering::SeqCst), "misses": 2, "weighted_bytes": 1024})
    }
}

/// The pool stand-in: one required upstream, up or down.
#[derive(Debug)]
pub struct FakePool {
    pub up: AtomicBool,
}

impl FakePool {
    pub fn new(up: bool) -> Self {
        Self {
            up: AtomicBool::new(up),
        }
    }
}

impl LayerReport for FakePool {
    fn layer(&self) -> &'static str {
        "pool"
    }

    fn figures(&self, out: &mut Vec<Figure>) {
        let up = self.up.load(Ordering::SeqCst);
        out.push(
            Figure::gauge(
                "mcp_pool_upstream_up",
                "Whether the upstream is reachable.",
                if up { 1.0 } else { 0.0 },
            )
            .with_label("upstream", "github"),
        );
        out.push(
            Figure::counter("mcp_pool_connects_total", "Connections made.", 3)
                .with_label("upstream", "github"),
        );
    }

    fn snapshot(&self) -> serde_json::Value {
        json!({"upstreams": {"github": {"up": self.up.load(Ordering::SeqCst), "required": true}}})
    }

    fn healthy(&self) -> Option<bool> {
        Some(self.up.load(Ordering::SeqCst))
    }
}
