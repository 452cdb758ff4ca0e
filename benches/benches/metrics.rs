//! `metrics/*`: the per-call cost of `MetricsLayer` (Prometheus recorder, per-tool handles)
//! against the raw inner service, and the cost of rendering `/metrics` with 100 tools.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_tower_benches::{
    ReadyService, runtime_1, runtime_2, sample_call, time_calls, time_calls_parallel,
};
use mcp_tower_core::{CallResolver, PolicyDefaults, PolicyTable, ToolCall};
use mcp_tower_metrics::{Metrics, MetricsConfig, MetricsHandle};
use rmcp::{
    ErrorData,
    model::{CallToolResponse, Tool},
    object,
};
use tower::{Layer, Service};

fn resolver(tools: impl IntoIterator<Item = String>) -> Arc<CallResolver> {
    let tools = tools
        .into_iter()
        .map(|name| Tool::new(name, "a benchmark tool", object!({"type": "object"})));
    Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default()).with_tools(tools),
    ))
}

/// `time_calls`, plus the recorder's upkeep (folding the recorded durations into the
/// histograms) inside the measured time: it is part of what a call costs, paid later.
fn time_calls_with_upkeep<S, F>(
    rt: &tokio::runtime::Runtime,
    service: &S,
    handle: &MetricsHandle,
    iters: u64,
    make: F,
) -> Duration
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
    F: Fn() -> ToolCall,
{
    let calls = time_calls(rt, service, iters, make);
    let start = Instant::now();
    handle.run_upkeep();
    calls + start.elapsed()
}

/// The same figures recorded the obvious way: `metrics` macros with owned labels, resolved
/// per call through a recorder, as a service would without per-tool handles.
#[derive(Clone)]
struct MacroLabels<S> {
    inner: S,
    recorder: Arc<metrics_exporter_prometheus::PrometheusRecorder>,
}

impl<S> Service<ToolCall> for MacroLabels<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
    S::Future: Send + 'static,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<CallToolResponse, ErrorData>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ErrorData>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let recorder = Arc::clone(&self.recorder);
        let tool = call.policy().label().to_owned();
        let start = call.received_at();
        let future = self.inner.call(call);
        Box::pin(async move {
            let result = future.await;
            metrics::with_local_recorder(recorder.as_ref(), || {
                metrics::counter!("mcp_tool_calls_total", "tool" => tool.clone(), "outcome" => "ok")
                    .increment(1);
                metrics::histogram!("mcp_tool_call_duration_seconds", "tool" => tool, "outcome" => "ok")
                    .record(start.elapsed().as_secs_f64());
            });
            result
        })
    }
}

/// Resolves the call's policy and nothing else: the part of the metrics layer's cost that a
/// full stack pays once whichever layer asks first (cache, dedup and concurrency do too).
#[derive(Clone)]
struct PolicyLookup<S>(S);

impl<S> Service<ToolCall> for PolicyLookup<S>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData>,
{
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ErrorData>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        std::hint::black_box(call.policy().tool_id());
        self.0.call(call)
    }
}

fn call_overhead(c: &mut Criterion) {
    let rt = runtime_1();
    let resolver = resolver(["weather".to_owned()]);
    let inner = ReadyService::default();
    let handle = rt.block_on(async {
        MetricsHandle::new(MetricsConfig::default()).expect("the default config is valid")
    });
    let metered: Metrics<ReadyService> = handle.layer().layer(inner.clone());
    let macro_recorder =
        Arc::new(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
    let macro_labels = MacroLabels {
        inner: inner.clone(),
        recorder: Arc::clone(&macro_recorder),
    };

    let mut group = c.benchmark_group("metrics/call");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || sample_call(&resolver)))
    });
    group.bench_function("policy_lookup", |b| {
        let lookup = PolicyLookup(inner.clone());
        b.iter_custom(|iters| time_calls(&rt, &lookup, iters, || sample_call(&resolver)))
    });
    group.bench_function("metrics_layer", |b| {
        b.iter_custom(|iters| {
            time_calls_with_upkeep(&rt, &metered, &handle, iters, || sample_call(&resolver))
        })
    });
    group.bench_function("macro_labels", |b| {
        b.iter_custom(|iters| {
            let calls = time_calls(&rt, &macro_labels, iters, || sample_call(&resolver));
            let start = Instant::now();
            macro_recorder.handle().run_upkeep();
            calls + start.elapsed()
        })
    });
    group.finish();

    // Two workers calling the same tool: the per-tool atomics are shared.
    let rt2 = runtime_2();
    let mut group = c.benchmark_group("metrics/call_2_threads");
    group.bench_function("raw", |b| {
        let resolver = Arc::clone(&resolver);
        b.iter_custom(|iters| {
            let resolver = Arc::clone(&resolver);
            time_calls_parallel(&rt2, &inner, iters, 2, move || sample_call(&resolver))
        })
    });
    group.bench_function("metrics_layer", |b| {
        let resolver = Arc::clone(&resolver);
        b.iter_custom(|iters| {
            let resolver = Arc::clone(&resolver);
            let calls =
                time_calls_parallel(&rt2, &metered, iters, 2, move || sample_call(&resolver));
            let start = Instant::now();
            handle.run_upkeep();
            calls + start.elapsed()
        })
    });
    group.finish();
}

fn render_100_tools(c: &mut Criterion) {
    let rt = runtime_1();
    let names: Vec<String> = (0..100).map(|i| format!("tool_{i:03}")).collect();
    let resolver = resolver(names.clone());
    let handle = rt.block_on(async {
        MetricsHandle::new(MetricsConfig::default()).expect("the default config is valid")
    });
    let service = handle.layer().layer(ReadyService::default());
    // Every tool called: 7 outcome counters, an in-flight gauge and an `ok` histogram each.
    for name in &names {
        let name = name.clone();
        let resolver = Arc::clone(&resolver);
        time_calls(&rt, &service, 10, move || {
            ToolCall::with_resolver(name.clone(), object!({"q": 1}), Arc::clone(&resolver))
        });
    }
    let lines = handle.render().lines().count();
    assert!(lines > 100 * 25, "100 tools render {lines} lines");

    let mut group = c.benchmark_group("metrics/render_100_tools");
    group.bench_function("prometheus_render", |b| {
        b.iter(|| std::hint::black_box(handle.prometheus().render()))
    });
    group.bench_function("metrics_render", |b| {
        b.iter(|| std::hint::black_box(handle.render()))
    });
    group.bench_function("stats_json", |b| {
        b.iter(|| {
            std::hint::black_box(serde_json::to_vec(&handle.stats()).expect("stats serialize"))
        })
    });
    group.finish();
}

criterion_group!(benches, call_overhead, render_100_tools);
criterion_main!(benches);
