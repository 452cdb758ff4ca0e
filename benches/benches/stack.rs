//! `stack/*`: a tool call through the whole `McpStack` against the inner service alone.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_tower::McpStack;
use mcp_tower_benches::{ReadyService, runtime_1, sample_call, time_calls};

fn passthrough(c: &mut Criterion) {
    let rt = runtime_1();
    let inner = ReadyService::default();
    let built = McpStack::new().service(inner.clone());
    let resolver = Arc::clone(&built.resolver);

    let mut group = c.benchmark_group("stack/passthrough");
    group.bench_function("raw", |b| {
        let resolver = Arc::clone(&resolver);
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || sample_call(&resolver)))
    });
    group.bench_function("mcp_stack", |b| {
        let resolver = Arc::clone(&resolver);
        b.iter_custom(|iters| time_calls(&rt, &built.service, iters, || sample_call(&resolver)))
    });
    group.finish();
}

criterion_group!(benches, passthrough);
criterion_main!(benches);
