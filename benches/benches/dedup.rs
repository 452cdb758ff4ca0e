//! `dedup/*`: the deduplicator next to its baselines.
//!
//! - `dedup/passthrough`: a call that is not deduplicated (a tool without `dedup`), and a
//!   deduplicated call with nothing else in flight (it leads a flight alone), against the raw
//!   inner service. Fresh calls: the layer resolves the tool's policy and, for the
//!   deduplicated call, hashes the arguments into its key. Every function builds the same
//!   calls with the same policy table (`weather`, read-only; `dedup` off by override for the
//!   tool that is not deduplicated).
//! - `dedup/passthrough_prepared`: the layer's own cost. Each call's policy and key are
//!   already derived, as they are in the stack (the metrics layer resolves the policy, the
//!   cache computes the key); the calls are built before the timed region, carry no
//!   arguments, and the inner service answers an empty result, so that the few dozen ns
//!   the layer adds are not lost in the noise of allocating and freeing a typical call and
//!   result (a few hundred ns that vary by ±20 % from run to run on the 2-core VM).
//! - `dedup/followers_N`: one leader and N followers of the same call, against
//!   `async_singleflight` and tower-resilience's coalesce layer doing the same. The inner call
//!   waits at a gate that opens only once every caller has been polled (joined), so each
//!   burst measures one execution shared by N + 1 callers, not timing luck. All callers are
//!   polled by one task (`join_all`) on one thread, the same way for every contender.
//!   `dedup/followers_0` is the leader alone through the same gate: a burst's time minus
//!   this, divided by N, is the cost of one follower.
//! - `dedup/followers_256_tasks`: the same with each caller its own task on two worker
//!   threads, as rmcp runs requests (task spawns included, the same for every contender).
//! - `dedup/followers_16_slow_tool_cpu`: 16 followers as tasks, on a tool that takes 1 ms
//!   once every caller has joined (a tokio timer: the tool itself uses no CPU). The figure
//!   is **CPU time**, not wall time: what the two worker threads spent on the burst
//!   (`/proc/self/task/*/schedstat`), i.e. what waiting costs a server that has other work.

use std::{
    fs,
    future::{Future, poll_fn},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use async_singleflight::Group;
use criterion::{Criterion, criterion_group, criterion_main};
use mcp_tower_benches::{
    ReadyService, runtime_1, runtime_2, sample_call, time_calls, time_prebuilt_calls,
};
use mcp_tower_core::{
    CallKey, CallKeyBuildHasher, CallResolver, PolicyDefaults, PolicyTable, ToolCall, ToolOverride,
};
use mcp_tower_dedup::DedupLayer;
use pin_project_lite::pin_project;
use rmcp::{
    ErrorData,
    model::{CallToolResponse, CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations},
    object,
};
use tokio::sync::{Notify, futures::OwnedNotified};
use tower::{Layer, Service, ServiceExt};
use tower_resilience_coalesce::CoalesceLayer;

/// A resolver that knows `weather` as a read-only tool: deduplicated, unless `dedup` is
/// `false` (the same table either way, so both resolve a call at the same cost).
fn weather_resolver(dedup: bool) -> Arc<CallResolver> {
    let weather = Tool::new("weather", "Current weather", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true));
    Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default())
            .with_tools([weather])
            .with_override("weather", ToolOverride::default().with_dedup(dedup)),
    ))
}

/// A call whose policy, principal and key are derived, as in the stack.
fn prepared_call(resolver: &Arc<CallResolver>) -> ToolCall {
    let call = sample_call(resolver);
    std::hint::black_box(call.key());
    call
}

fn passthrough(c: &mut Criterion) {
    let rt = runtime_1();
    let raw = ReadyService::default();
    let dedup = DedupLayer::default().layer(ReadyService::default());
    let plain = weather_resolver(false);
    let read_only = weather_resolver(true);
    assert!(!sample_call(&plain).policy().dedup);
    assert!(sample_call(&read_only).policy().dedup);

    let mut group = c.benchmark_group("dedup/passthrough");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_calls(&rt, &raw, iters, || sample_call(&read_only)))
    });
    group.bench_function("non_dedup_tool", |b| {
        b.iter_custom(|iters| time_calls(&rt, &dedup, iters, || sample_call(&plain)))
    });
    group.bench_function("nothing_in_flight", |b| {
        b.iter_custom(|iters| time_calls(&rt, &dedup, iters, || sample_call(&read_only)))
    });
    group.finish();
    assert_eq!(dedup.in_flight_keys(), 0);
}

/// The layer's own cost: each call's policy and key already derived (as in the stack, where
/// the metrics layer resolves the policy and the cache computes the key), the calls built
/// before the timed region (`time_prebuilt_calls`), no arguments to free and an empty
/// result to answer. What is left in the raw figure is the call and its response; the
/// difference is what the deduplicator adds.
fn passthrough_prepared(c: &mut Criterion) {
    let rt = runtime_1();
    let raw = ReadyService::empty();
    let dedup = DedupLayer::default().layer(ReadyService::empty());
    let plain = weather_resolver(false);
    let read_only = weather_resolver(true);
    let bare_call = |resolver: &Arc<CallResolver>| {
        let call = ToolCall::with_resolver("weather", JsonObject::new(), Arc::clone(resolver));
        std::hint::black_box(call.key());
        call
    };
    assert!(!bare_call(&plain).policy().dedup);
    assert!(bare_call(&read_only).policy().dedup);

    let mut group = c.benchmark_group("dedup/passthrough_prepared");
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time_prebuilt_calls(&rt, &raw, iters, || bare_call(&read_only)))
    });
    group.bench_function("non_dedup_tool", |b| {
        b.iter_custom(|iters| time_prebuilt_calls(&rt, &dedup, iters, || bare_call(&plain)))
    });
    group.bench_function("nothing_in_flight", |b| {
        b.iter_custom(|iters| time_prebuilt_calls(&rt, &dedup, iters, || bare_call(&read_only)))
    });
    group.finish();
    assert_eq!(dedup.in_flight_keys(), 0);
}

/// Where the one shared execution of a burst waits until every caller has joined. Each
/// burst arms it anew; an execution that starts after its burst's gate opened (a contender
/// that let a caller in late) passes straight through, so no burst can hang.
#[derive(Default)]
struct Gate {
    armed: AtomicU64,
    opened: AtomicU64,
    notify: Arc<Notify>,
}

impl Gate {
    fn arm(&self) {
        self.armed.fetch_add(1, Ordering::AcqRel);
    }

    fn open(&self) {
        self.opened
            .store(self.armed.load(Ordering::Acquire), Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// An inner service whose calls wait at the gate, then answer like [`ReadyService`].
#[derive(Clone)]
struct GatedService {
    gate: Arc<Gate>,
    result: Arc<CallToolResult>,
}

impl GatedService {
    fn new(gate: Arc<Gate>) -> Self {
        Self {
            gate,
            result: Arc::new(CallToolResult::success(vec![ContentBlock::text(
                "sunny, 21°C, light breeze from the south-west",
            )])),
        }
    }
}

pin_project! {
    struct Gated {
        gate: Arc<Gate>,
        burst: u64,
        // Created with the call: it sees any `notify_waiters` from then on.
        #[pin]
        opened: OwnedNotified,
        result: Arc<CallToolResult>,
    }
}

impl Future for Gated {
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.gate.opened.load(Ordering::Acquire) < *this.burst {
            ready!(this.opened.poll(cx));
        }
        Poll::Ready(Ok(CallToolResult::clone(this.result).into()))
    }
}

impl Service<ToolCall> for GatedService {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = Gated;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _call: ToolCall) -> Self::Future {
        let burst = self.gate.armed.load(Ordering::Acquire);
        Gated {
            gate: Arc::clone(&self.gate),
            burst,
            opened: Arc::clone(&self.gate.notify).notified_owned(),
            result: Arc::clone(&self.result),
        }
    }
}

/// How the callers of a burst are run.
#[derive(Clone, Copy)]
enum Callers {
    /// All polled by one task (`join_all`), on one thread, outside tokio's cooperative
    /// budget (else a contender built on tokio's primitives, async_singleflight's mutex,
    /// would be told to yield part-way through the first round and join late).
    OneTask,
    /// Each its own task, on two worker threads: how an rmcp server runs requests.
    Tasks,
}

/// Runs one burst: every caller is polled once (the leader starts the execution, the
/// others join it), then the gate opens and all of them run to the end. Returns how long it
/// took.
async fn burst<F>(callers: Vec<F>, gate: &Gate, mode: Callers) -> Duration
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    gate.arm();
    match mode {
        Callers::OneTask => {
            tokio::task::unconstrained(async {
                let start = Instant::now();
                let mut all = std::pin::pin!(futures_util::future::join_all(callers));
                let first = poll_fn(|cx| Poll::Ready(all.as_mut().poll(cx))).await;
                assert!(first.is_pending(), "the execution waits at the gate");
                gate.open();
                let results = all.await;
                let elapsed = start.elapsed();
                std::hint::black_box(results);
                elapsed
            })
            .await
        }
        Callers::Tasks => {
            let count = callers.len();
            let joined = Arc::new((AtomicUsize::new(0), Notify::new()));
            let start = Instant::now();
            let tasks: Vec<_> = callers
                .into_iter()
                .map(|caller| {
                    let joined = Arc::clone(&joined);
                    tokio::spawn(async move {
                        let mut caller = std::pin::pin!(caller);
                        let first = poll_fn(|cx| Poll::Ready(caller.as_mut().poll(cx))).await;
                        if joined.0.fetch_add(1, Ordering::AcqRel) + 1 == count {
                            joined.1.notify_one();
                        }
                        match first {
                            Poll::Ready(output) => output,
                            Poll::Pending => caller.await,
                        }
                    })
                })
                .collect();
            joined.1.notified().await;
            gate.open();
            for task in tasks {
                std::hint::black_box(task.await.expect("caller task"));
            }
            start.elapsed()
        }
    }
}

/// What a burst's figure is.
#[derive(Clone, Copy)]
enum Measure {
    /// Wall time, from the first poll to the last answer.
    Wall,
    /// CPU time of the runtime's [`WORKER`] threads over the burst.
    WorkerCpu,
}

/// Measures bursts of `n + 1` identical calls through `callers` (which turns prepared calls
/// into the contender's futures); the calls are built outside the measured part.
#[allow(clippy::too_many_arguments)]
fn time_bursts<F, M>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    n: usize,
    resolver: &Arc<CallResolver>,
    gate: &Gate,
    mode: Callers,
    measure: Measure,
    mut callers: M,
) -> Duration
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    M: FnMut(ToolCall) -> F,
{
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let futures: Vec<F> = (0..=n).map(|_| callers(prepared_call(resolver))).collect();
            let cpu_before = matches!(measure, Measure::WorkerCpu).then(worker_cpu);
            let elapsed = burst(futures, gate, mode).await;
            total += match cpu_before {
                None => elapsed,
                Some(before) => worker_cpu().saturating_sub(before),
            };
        }
        assert!(total > Duration::ZERO, "nothing measured");
        total
    })
}

/// One group: this layer, `async_singleflight` and coalesce, each over its own inner
/// service from `inner` (given the gate its calls wait at).
fn contenders<S>(
    c: &mut Criterion,
    name: &str,
    (n, mode, measure): (usize, Callers, Measure),
    rt: &tokio::runtime::Runtime,
    inner: impl Fn(Arc<Gate>) -> S,
) where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let resolver = weather_resolver(true);
    let mut group = c.benchmark_group(name);
    if matches!(measure, Measure::WorkerCpu) {
        group.sample_size(20);
    }

    group.bench_function("dedup", |b| {
        let gate = Arc::new(Gate::default());
        let layer = DedupLayer::default();
        let handle = layer.handle();
        let service = layer.layer(inner(Arc::clone(&gate)));
        b.iter_custom(|iters| {
            time_bursts(rt, iters, n, &resolver, &gate, mode, measure, |call| {
                service.clone().oneshot(call)
            })
        });
        let stats = handle.stats();
        assert_eq!(
            stats.followers_served,
            stats.flights * n as u64,
            "one execution per burst"
        );
    });

    group.bench_function("async_singleflight", |b| {
        let gate = Arc::new(Gate::default());
        let inner = inner(Arc::clone(&gate));
        let flights: Arc<Group<CallKey, CallToolResponse, ErrorData, CallKeyBuildHasher>> =
            Arc::new(Group::new());
        b.iter_custom(|iters| {
            time_bursts(rt, iters, n, &resolver, &gate, mode, measure, |call| {
                let flights = Arc::clone(&flights);
                let execution = inner.clone().oneshot(call.clone());
                async move { flights.work(&call.key(), execution).await }
            })
        });
    });

    group.bench_function("coalesce", |b| {
        let gate = Arc::new(Gate::default());
        let service =
            CoalesceLayer::new(|call: &ToolCall| call.key()).layer(inner(Arc::clone(&gate)));
        b.iter_custom(|iters| {
            time_bursts(rt, iters, n, &resolver, &gate, mode, measure, |call| {
                service.clone().oneshot(call)
            })
        });
    });
    group.finish();
}

fn followers(c: &mut Criterion) {
    let rt_1 = runtime_1();
    let rt_2 = runtime_2();
    let cases = [
        ("dedup/followers_0", 0, Callers::OneTask, &rt_1),
        ("dedup/followers_1", 1, Callers::OneTask, &rt_1),
        ("dedup/followers_16", 16, Callers::OneTask, &rt_1),
        ("dedup/followers_256", 256, Callers::OneTask, &rt_1),
        ("dedup/followers_256_tasks", 256, Callers::Tasks, &rt_2),
    ];
    for (name, n, mode, rt) in cases {
        contenders(c, name, (n, mode, Measure::Wall), rt, GatedService::new);
    }
}

/// How long the slow tool takes once every caller has joined.
const SLOW_TOOL: Duration = Duration::from_millis(1);

/// The gated service, then [`SLOW_TOOL`] more on a timer (no CPU of its own).
#[derive(Clone)]
struct SlowService(GatedService);

impl Service<ToolCall> for SlowService {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = Pin<Box<dyn Future<Output = Result<CallToolResponse, ErrorData>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let gated = self.0.call(call);
        Box::pin(async move {
            let outcome = gated.await;
            tokio::time::sleep(SLOW_TOOL).await;
            outcome
        })
    }
}

/// The name of the slow-tool runtime's worker threads (at most 15 bytes: Linux's limit).
const WORKER: &str = "burst-worker";

/// CPU time the [`WORKER`] threads have used so far (nanoseconds on CPU, from
/// `/proc/self/task/<tid>/schedstat`). Linux only, as the CI and bench machines are.
fn worker_cpu() -> Duration {
    let mut total = 0u64;
    let tasks = fs::read_dir("/proc/self/task").expect("/proc/self/task (Linux)");
    for task in tasks.flatten() {
        let path = task.path();
        let is_worker =
            fs::read_to_string(path.join("comm")).is_ok_and(|name| name.trim_end() == WORKER);
        if !is_worker {
            continue;
        }
        if let Ok(stat) = fs::read_to_string(path.join("schedstat"))
            && let Some(on_cpu) = stat.split_whitespace().next()
        {
            total += on_cpu.parse::<u64>().unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

fn slow_tool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(WORKER)
        .enable_time()
        .build()
        .expect("tokio runtime");
    contenders(
        c,
        "dedup/followers_16_slow_tool_cpu",
        (16, Callers::Tasks, Measure::WorkerCpu),
        &rt,
        |gate| SlowService(GatedService::new(gate)),
    );
}

criterion_group!(
    benches,
    passthrough,
    passthrough_prepared,
    followers,
    slow_tool
);
criterion_main!(benches);
