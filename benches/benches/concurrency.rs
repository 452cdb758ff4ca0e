//! `concurrency/*`: the concurrency layer next to `tower::limit::ConcurrencyLimit` (the
//! baseline of every group), tower-resilience's bulkhead and the raw inner service.
//!
//! - `concurrency/uncontended`: one thread, one call at a time, a fresh call each time (its
//!   tool's policy is resolved by the first layer that asks: here, ours). Limits never
//!   reached. `mcp_tower` needs a global and a tool permit (`weather` has
//!   `max_concurrency`); `mcp_tower_unknown_tool` only the global one.
//! - `concurrency/uncontended_prepared`: the same with one call built in advance and cloned
//!   (its policy already resolved, as it is in the stack where the metrics layer resolves
//!   it first): the layer's own cost, without the call's construction.
//! - `concurrency/contended_2_threads`: two tasks on two worker threads calling at once
//!   through one shared limit of 64: what sharing the limit's state between cores costs.
//! - `concurrency/saturated_2_threads`: eight tasks on two threads through a limit of 2,
//!   with an inner call that yields once (so permits are held across a scheduling round):
//!   calls really wait for permits and are handed them as others finish.
//!
//! The bulkhead is configured like our layer's defaults (a bounded wait: `max_wait_duration`
//! of 5 s, our `queue_timeout`) and its error mapped to `ErrorData` with `map_err`, since it
//! wraps errors in its own type.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_tower_benches::{
    ReadyService, runtime_1, runtime_2, sample_call, time_calls, time_calls_parallel,
};
use mcp_tower_concurrency::{ConcurrencyConfig, ConcurrencyLayer};
use mcp_tower_core::{CallResolver, PolicyDefaults, PolicyTable, ToolCall, ToolOverride};
use rmcp::{ErrorData, model::CallToolResponse};
use tower::{Layer, Service, ServiceExt, limit::ConcurrencyLimit};
use tower_resilience_bulkhead::BulkheadLayer;

const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// A resolver that knows `weather`, with a limit of its own.
fn limited_weather(max: usize) -> Arc<CallResolver> {
    Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default())
            .with_override("weather", ToolOverride::default().with_max_concurrency(max)),
    ))
}

/// A resolver that does not know `weather`: only the global limit applies.
fn unknown_weather() -> Arc<CallResolver> {
    Arc::new(CallResolver::new(PolicyTable::new(
        PolicyDefaults::default(),
    )))
}

fn ours<S>(inner: S, limit: usize) -> mcp_tower_concurrency::ConcurrencyLimit<S> {
    ConcurrencyLayer::new(
        ConcurrencyConfig::default()
            .with_max_in_flight(limit)
            .with_queue_timeout(QUEUE_TIMEOUT),
    )
    .expect("valid concurrency config")
    .layer(inner)
}

/// tower-resilience's bulkhead with a bounded wait, its error mapped to ours.
fn bulkhead<S>(
    inner: S,
    limit: usize,
) -> impl Service<
    ToolCall,
    Response = CallToolResponse,
    Error = ErrorData,
    Future = impl Future<Output = Result<CallToolResponse, ErrorData>> + Send,
> + Clone
+ Send
+ 'static
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    BulkheadLayer::builder()
        .max_concurrent_calls(limit)
        .max_wait_duration(QUEUE_TIMEOUT)
        .build()
        .expect("valid bulkhead config")
        .layer(inner)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))
}

/// Runs calls over `tasks` tasks and checks every one succeeded: a limiter that turned
/// calls away would look fast in a loop that ignores answers.
fn assert_all_succeed<S, F>(rt: &tokio::runtime::Runtime, service: &S, tasks: u64, make: F)
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone + Send + 'static,
    S::Future: Send,
    F: Fn() -> ToolCall + Clone + Send + 'static,
{
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let service = service.clone();
                let make = make.clone();
                tokio::spawn(async move {
                    for _ in 0..2_000 {
                        service
                            .clone()
                            .oneshot(make())
                            .await
                            .expect("the call succeeds");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("no task panicked");
        }
    });
}

fn uncontended(c: &mut Criterion) {
    let rt = runtime_1();
    let inner = ReadyService::default();
    let tower_limit = ConcurrencyLimit::new(inner.clone(), 64);
    let bulkhead = bulkhead(inner.clone(), 64);
    let mcp_tower = ours(inner.clone(), 64);
    let limited = limited_weather(64);
    let unknown = unknown_weather();
    assert_eq!(sample_call(&limited).policy().max_concurrency, Some(64));
    assert!(sample_call(&unknown).policy().tool.is_none());

    let mut group = c.benchmark_group("concurrency/uncontended");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || sample_call(&limited)))
    });
    group.bench_function("tower_limit", |b| {
        b.iter_custom(|iters| time_calls(&rt, &tower_limit, iters, || sample_call(&limited)))
    });
    group.bench_function("bulkhead", |b| {
        b.iter_custom(|iters| time_calls(&rt, &bulkhead, iters, || sample_call(&limited)))
    });
    group.bench_function("mcp_tower", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_tower, iters, || sample_call(&limited)))
    });
    group.bench_function("mcp_tower_unknown_tool", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_tower, iters, || sample_call(&unknown)))
    });
    group.finish();

    let prepared = sample_call(&limited);
    std::hint::black_box(prepared.policy());
    let prepared_unknown = sample_call(&unknown);
    std::hint::black_box(prepared_unknown.policy());
    let mut group = c.benchmark_group("concurrency/uncontended_prepared");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || prepared.clone()))
    });
    group.bench_function("tower_limit", |b| {
        b.iter_custom(|iters| time_calls(&rt, &tower_limit, iters, || prepared.clone()))
    });
    group.bench_function("bulkhead", |b| {
        b.iter_custom(|iters| time_calls(&rt, &bulkhead, iters, || prepared.clone()))
    });
    group.bench_function("mcp_tower", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_tower, iters, || prepared.clone()))
    });
    group.bench_function("mcp_tower_unknown_tool", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_tower, iters, || prepared_unknown.clone()))
    });
    group.finish();
}

fn contended(c: &mut Criterion) {
    let rt = runtime_2();
    let inner = ReadyService::default();
    let tower_limit = ConcurrencyLimit::new(inner.clone(), 64);
    let bulkhead = bulkhead(inner.clone(), 64);
    let mcp_tower = ours(inner.clone(), 64);
    let limited = limited_weather(64);
    let make = move || sample_call(&limited);
    assert_all_succeed(&rt, &tower_limit, 2, make.clone());
    assert_all_succeed(&rt, &bulkhead, 2, make.clone());
    assert_all_succeed(&rt, &mcp_tower, 2, make.clone());

    let mut group = c.benchmark_group("concurrency/contended_2_threads");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &inner, iters, 2, make.clone()))
    });
    group.bench_function("tower_limit", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &tower_limit, iters, 2, make.clone()))
    });
    group.bench_function("bulkhead", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &bulkhead, iters, 2, make.clone()))
    });
    group.bench_function("mcp_tower", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &mcp_tower, iters, 2, make.clone()))
    });
    group.finish();
}

/// An inner service whose calls yield to the scheduler once before answering, so a call
/// holds its permits across a scheduling round and others must wait for them.
#[derive(Clone, Debug, Default)]
struct YieldOnce {
    ready: ReadyService,
}

/// The future of [`YieldOnce`].
struct YieldOnceFuture {
    yielded: bool,
    answer: Option<<ReadyService as Service<ToolCall>>::Future>,
}

impl Future for YieldOnceFuture {
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match self.answer.take() {
            Some(answer) => Pin::new(&mut { answer }).poll(cx),
            None => Poll::Ready(Err(ErrorData::internal_error("polled twice", None))),
        }
    }
}

impl Service<ToolCall> for YieldOnce {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = YieldOnceFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        YieldOnceFuture {
            yielded: false,
            answer: Some(self.ready.call(call)),
        }
    }
}

fn saturated(c: &mut Criterion) {
    let rt = runtime_2();
    let inner = YieldOnce::default();
    let tower_limit = ConcurrencyLimit::new(inner.clone(), 2);
    let bulkhead = bulkhead(inner.clone(), 2);
    let limited = limited_weather(64);
    // A queue deep enough for every task: nothing is turned away, every call waits its turn.
    let mcp_tower = ours(inner.clone(), 2);
    let make = move || sample_call(&limited);
    const TASKS: u64 = 8;
    assert_all_succeed(&rt, &tower_limit, TASKS, make.clone());
    assert_all_succeed(&rt, &bulkhead, TASKS, make.clone());
    assert_all_succeed(&rt, &mcp_tower, TASKS, make.clone());
    let waited = mcp_tower.handle().global_stats().waited;
    assert!(waited > 0, "the saturated case makes calls wait");

    let mut group = c.benchmark_group("concurrency/saturated_2_threads");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &inner, iters, TASKS, make.clone()))
    });
    group.bench_function("tower_limit", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &tower_limit, iters, TASKS, make.clone()))
    });
    group.bench_function("bulkhead", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &bulkhead, iters, TASKS, make.clone()))
    });
    group.bench_function("mcp_tower", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &mcp_tower, iters, TASKS, make.clone()))
    });
    group.finish();
}

criterion_group!(benches, uncontended, contended, saturated);
criterion_main!(benches);
