//! `retry/*`: the retry layer's no-failure path next to `tower::retry::Retry` with an
//! equivalent policy, and the per-attempt timeout next to `tower::timeout::Timeout`; the
//! raw inner service in every group as the floor.
//!
//! - `retry/success`: one thread, one call at a time, a fresh call each time, of a
//!   read-only tool (so both layers keep a copy of the call, ready to retry it), and the
//!   inner service answers at once. `mcp_retry_not_retryable` calls a tool the policy table
//!   does not know: our layer passes it through.
//! - `retry/success_prepared`: the same with one call built in advance and cloned (its
//!   policy already resolved, as in the stack where the metrics layer resolves it first):
//!   the layer's own cost, without building the call.
//! - `retry/success_2_threads`: two tasks on two worker threads through one shared layer:
//!   what sharing the budget and counters between cores costs.
//! - `retry/timeout_ready`: a 30 s timeout around an inner service that answers at once.
//! - `retry/timeout_pending`: the same around an inner service that yields once before it
//!   answers, so that every attempt has to wait and both layers arm their timer.
//!
//! The tower policy makes the decisions ours makes: it keeps a copy only of calls whose
//! policy allows retries, retries transient errors (and `isError` results where the policy
//! says so) at most twice, waits with tower's `ExponentialBackoff`, and has a `TpsBudget`
//! with our budget's defaults (10 s, 10/s, 20%) that every call deposits into. tower's
//! `Timeout` fails with a `BoxError`, mapped to `ErrorData` with `map_err`.

use std::{
    future::{Future, Ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_tower_benches::{
    ReadyService, runtime_1, runtime_2, sample_call, time_calls, time_calls_parallel,
};
use mcp_tower_core::{
    CallResolver, PolicyDefaults, PolicyTable, ToolCall,
    error::{Layer as ErrorLayer, TimedOut, is_transient},
};
use mcp_tower_retry::{RetryConfig, RetryLayer, TimeoutLayer};
use rmcp::{
    ErrorData,
    model::{CallToolResponse, Tool, ToolAnnotations},
    object,
};
use tower::{
    BoxError, Layer, Service, ServiceExt,
    retry::{
        Policy, Retry,
        backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff},
        budget::{Budget, TpsBudget},
    },
    timeout::{Timeout, error::Elapsed},
    util::rng::HasherRng,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A resolver that knows `weather` as read-only: its calls may be retried.
fn read_only_weather() -> Arc<CallResolver> {
    let weather = Tool::new("weather", "Current weather", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true));
    Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default()).with_tools([weather]),
    ))
}

/// A resolver that does not know `weather`: never retried.
fn unknown_weather() -> Arc<CallResolver> {
    Arc::new(CallResolver::new(PolicyTable::new(
        PolicyDefaults::default(),
    )))
}

/// tower's retry policy, deciding as our layer does.
#[derive(Clone)]
struct TowerPolicy {
    budget: Arc<TpsBudget>,
    backoff: ExponentialBackoff<HasherRng>,
    attempts: u32,
    max_attempts: u32,
}

impl TowerPolicy {
    fn new() -> Self {
        let config = RetryConfig::default();
        let mut maker = ExponentialBackoffMaker::new(
            config.base_delay,
            config.max_delay,
            1.0,
            HasherRng::default(),
        )
        .expect("valid backoff");
        Self {
            budget: Arc::new(TpsBudget::new(
                config.budget.window,
                config.budget.min_per_sec,
                config.budget.ratio as f32,
            )),
            backoff: maker.make_backoff(),
            attempts: 0,
            max_attempts: config.max_attempts,
        }
    }
}

impl Policy<ToolCall, CallToolResponse, ErrorData> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        call: &mut ToolCall,
        result: &mut Result<CallToolResponse, ErrorData>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(CallToolResponse::Complete(r)) => {
                r.is_error == Some(true) && call.policy().retry_on_tool_error
            }
            Ok(_) => false,
            Err(error) => is_transient(error),
        };
        self.attempts += 1;
        if !retryable || self.attempts >= self.max_attempts || call.is_cancelled() {
            return None;
        }
        self.budget.withdraw().then(|| self.backoff.next_backoff())
    }

    fn clone_request(&mut self, call: &ToolCall) -> Option<ToolCall> {
        if !call.policy().retry {
            return None;
        }
        // The service's own policy sees every call once (its attempts stay 0); the
        // futures' copies see the retries.
        if self.attempts == 0 {
            self.budget.deposit();
        }
        Some(call.clone())
    }
}

fn tower_timeout_error(error: BoxError) -> ErrorData {
    match error.downcast::<ErrorData>() {
        Ok(error) => *error,
        Err(error) if error.is::<Elapsed>() => TimedOut {
            layer: ErrorLayer::Timeout,
            tool: String::new(),
            after: TIMEOUT,
        }
        .into(),
        Err(error) => ErrorData::internal_error(error.to_string(), None),
    }
}

/// An inner service that yields once before it answers: every call has to wait.
#[derive(Clone, Default)]
struct YieldOnce(ReadyService);

struct YieldThen<F> {
    yielded: bool,
    answer: F,
}

impl<F: Future + Unpin> Future for YieldThen<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.answer).poll(cx)
    }
}

impl Service<ToolCall> for YieldOnce {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = YieldThen<Ready<Result<CallToolResponse, ErrorData>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ErrorData>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        YieldThen {
            yielded: false,
            answer: self.0.call(call),
        }
    }
}

/// Checks a service answers `make`'s calls with a success before it is timed.
fn assert_succeeds<S, F>(rt: &tokio::runtime::Runtime, service: &S, make: F)
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
    F: Fn() -> ToolCall,
{
    rt.block_on(async {
        for _ in 0..100 {
            service
                .clone()
                .oneshot(make())
                .await
                .expect("the call succeeds");
        }
    });
}

fn success(c: &mut Criterion) {
    let rt = runtime_1();
    let inner = ReadyService::default();
    let tower_retry = Retry::new(TowerPolicy::new(), inner.clone());
    let retry_layer = RetryLayer::new(RetryConfig::default()).expect("valid retry config");
    let mcp_retry = retry_layer.layer(inner.clone());
    let read_only = read_only_weather();
    let unknown = unknown_weather();
    assert!(sample_call(&read_only).policy().retry);
    assert!(!sample_call(&unknown).policy().retry);
    assert_succeeds(&rt, &tower_retry, || sample_call(&read_only));
    assert_succeeds(&rt, &mcp_retry, || sample_call(&read_only));
    assert_eq!(
        retry_layer.handle().stats().calls,
        100,
        "our layer kept the calls"
    );

    let mut group = c.benchmark_group("retry/success");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || sample_call(&read_only)))
    });
    group.bench_function("tower_retry", |b| {
        b.iter_custom(|iters| time_calls(&rt, &tower_retry, iters, || sample_call(&read_only)))
    });
    group.bench_function("mcp_retry", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_retry, iters, || sample_call(&read_only)))
    });
    group.bench_function("mcp_retry_not_retryable", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_retry, iters, || sample_call(&unknown)))
    });
    group.finish();

    let prepared = sample_call(&read_only);
    std::hint::black_box(prepared.policy());
    let mut group = c.benchmark_group("retry/success_prepared");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || prepared.clone()))
    });
    group.bench_function("tower_retry", |b| {
        b.iter_custom(|iters| time_calls(&rt, &tower_retry, iters, || prepared.clone()))
    });
    group.bench_function("mcp_retry", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_retry, iters, || prepared.clone()))
    });
    group.finish();
}

fn success_2_threads(c: &mut Criterion) {
    let rt = runtime_2();
    let inner = ReadyService::default();
    let tower_retry = Retry::new(TowerPolicy::new(), inner.clone());
    let mcp_retry = RetryLayer::new(RetryConfig::default())
        .expect("valid retry config")
        .layer(inner.clone());
    let read_only = read_only_weather();
    let make = move || sample_call(&read_only);

    let mut group = c.benchmark_group("retry/success_2_threads");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &inner, iters, 2, make.clone()))
    });
    group.bench_function("tower_retry", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &tower_retry, iters, 2, make.clone()))
    });
    group.bench_function("mcp_retry", |b| {
        b.iter_custom(|iters| time_calls_parallel(&rt, &mcp_retry, iters, 2, make.clone()))
    });
    group.finish();
}

fn timeouts<S>(c: &mut Criterion, name: &str, inner: S)
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
{
    let rt = runtime_1();
    let tower_timeout = Timeout::new(inner.clone(), TIMEOUT).map_err(tower_timeout_error);
    let mcp_timeout = TimeoutLayer::default().layer(inner.clone());
    let prepared = sample_call(&read_only_weather());
    assert_eq!(prepared.policy().timeout, Some(TIMEOUT));
    assert_succeeds(&rt, &tower_timeout, || prepared.clone());
    assert_succeeds(&rt, &mcp_timeout, || prepared.clone());

    let mut group = c.benchmark_group(name);
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, || prepared.clone()))
    });
    group.bench_function("tower_timeout", |b| {
        b.iter_custom(|iters| time_calls(&rt, &tower_timeout, iters, || prepared.clone()))
    });
    group.bench_function("mcp_timeout", |b| {
        b.iter_custom(|iters| time_calls(&rt, &mcp_timeout, iters, || prepared.clone()))
    });
    group.finish();
}

fn timeout(c: &mut Criterion) {
    timeouts(c, "retry/timeout_ready", ReadyService::default());
    timeouts(c, "retry/timeout_pending", YieldOnce::default());
}

criterion_group!(benches, success, success_2_threads, timeout);
criterion_main!(benches);
