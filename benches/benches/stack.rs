//! `stack/*`: tool calls through the whole `McpStack` against the inner service alone.
//!
//! - `stack/passthrough`: the stack with every layer switched off (what `LayeredServer`
//!   and `StackService` cost by themselves);
//! - `stack/full_hit`: every layer on, a read-only tool whose result is cached — a fresh
//!   `ToolCall` per request, so the key is computed each time, as in production;
//! - `stack/full_miss`: every layer on, a new key each request: cache miss, dedup flight,
//!   concurrency permits, retry and timeout around the inner call, then the insert.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_tower::{McpStack, StackConfig, ToolCall};
use mcp_tower_benches::{ReadyService, runtime_1, sample_call, time_calls};
use rmcp::{
    model::{Tool, ToolAnnotations},
    object,
};

const ALL_OFF: &str = "[metrics]\nenabled = false\n[cache]\nenabled = false\n\
    [dedup]\nenabled = false\n[concurrency]\nenabled = false\n[retry]\nenabled = false\n\
    [timeout]\nenabled = false\n";

fn weather() -> Tool {
    Tool::new("weather", "Current weather", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true))
}

fn built(toml: &str) -> mcp_tower::BuiltStack {
    McpStack::builder()
        .config(StackConfig::from_toml_str(toml).expect("valid config"))
        .tools([weather()])
        .build()
        .expect("valid stack")
        .service(ReadyService::default())
}

fn passthrough(c: &mut Criterion) {
    let rt = runtime_1();
    let inner = ReadyService::default();
    let stack = built(ALL_OFF);
    let resolver = Arc::clone(&stack.resolver);

    let mut group = c.benchmark_group("stack/passthrough");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || sample_call(&resolver)))
    });
    group.bench_function("mcp_stack", |b| {
        b.iter_custom(|iters| time_calls(&rt, &stack.service, iters, || sample_call(&resolver)))
    });
    group.finish();
}

fn full_hit(c: &mut Criterion) {
    let rt = runtime_1();
    let inner = ReadyService::default();
    let stack = built("");
    let resolver = Arc::clone(&stack.resolver);
    // Fill the cache: every timed call is then a hit.
    time_calls(&rt, &stack.service, 1, || sample_call(&resolver));
    assert_eq!(
        stack.handles.cache.as_ref().map(|c| c.stats().inserts),
        Some(1)
    );

    let mut group = c.benchmark_group("stack/full_hit");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || sample_call(&resolver)))
    });
    group.bench_function("mcp_stack", |b| {
        b.iter_custom(|iters| time_calls(&rt, &stack.service, iters, || sample_call(&resolver)))
    });
    group.finish();
}

fn full_miss(c: &mut Criterion) {
    let rt = runtime_1();
    let inner = ReadyService::default();
    let stack = built("");
    let resolver = Arc::clone(&stack.resolver);
    let n = Arc::new(AtomicU64::new(0));
    // The same arguments as `sample_call`, plus a counter so every call is a new key.
    let make = || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        ToolCall::with_resolver(
            "weather",
            object!({"city": "Oslo", "units": "metric", "days": 3, "include": ["wind", "humidity"], "n": i}),
            Arc::clone(&resolver),
        )
    };

    let mut group = c.benchmark_group("stack/full_miss");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, make))
    });
    group.bench_function("mcp_stack", |b| {
        b.iter_custom(|iters| time_calls(&rt, &stack.service, iters, make))
    });
    group.finish();
}

criterion_group!(benches, passthrough, full_hit, full_miss);
criterion_main!(benches);
