//! `pool/*`: the keyed pool of multiplexed connections next to deadpool and bb8, and
//! `PoolService` (the gateway's innermost service) against a real stdio upstream.
//!
//! - `pool/warm_get`, `pool/warm_get_2_threads`: a `get` (and its release) when the
//!   connection is open, against deadpool's and bb8's `get`. Ours hands out a shared
//!   reference to a multiplexed connection; theirs check a connection out exclusively.
//!   Goal: ≤ 1 µs.
//! - `pool/gateway_call_stdio`: a tool call through `PoolService` to an MCP server on stdio
//!   over a pooled session, against a fresh upstream session per call (a child process
//!   started, initialized, called, closed: what a gateway without a pool does).
//! - `pool/throughput_stdio_echo`: 16 callers sharing 1 vs 4 sessions to the same upstream,
//!   whose tool does nothing (the cost of the pipes and processes).
//! - `pool/throughput_stdio_sequential`: the same against an upstream that handles one call
//!   at a time, 1 ms each (as many stdio servers do): where more sessions pay off.
//!
//! The stdio upstream is this bench binary itself, started with `POOL_BENCH_UPSTREAM=1`: a
//! single-threaded rmcp server (like a typical Node.js MCP server, it handles its requests
//! on one thread) with two tools: `echo`, and `sequential`, which holds a process-wide lock
//! for 1 ms.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group};
use mcp_tower_benches::{runtime_1, runtime_2, time_calls, time_calls_parallel};
use mcp_tower_core::{CallResolver, ToolCall};
use mcp_tower_pool::{Connector, Pool, PoolConfig, PoolService, StderrMode, UpstreamConfig};
use rmcp::object;

/// Set in the environment of the child process that serves as the stdio upstream.
const UPSTREAM_ENV: &str = "POOL_BENCH_UPSTREAM";

fn main() {
    if std::env::var_os(UPSTREAM_ENV).is_some() {
        upstream::serve();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

criterion_group!(
    benches,
    warm_get,
    warm_get_2_threads,
    gateway_call_stdio,
    throughput_stdio
);

/// A connection that costs nothing: what is left is the pool's own cost.
#[derive(Debug)]
struct Free;

impl Connector for Free {
    type Key = Arc<str>;
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self, _key: &Arc<str>) -> Result<u64, Infallible> {
        Ok(7)
    }
    fn is_closed(&self, _conn: &u64) -> bool {
        false
    }
    async fn ping(&self, _conn: &u64) -> Result<(), Infallible> {
        Ok(())
    }
}

struct FreeDeadpool;

impl deadpool::managed::Manager for FreeDeadpool {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(7)
    }
    async fn recycle(
        &self,
        _conn: &mut u64,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

struct FreeBb8;

impl bb8::ManageConnection for FreeBb8 {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(7)
    }
    async fn is_valid(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}

/// The three pools, each warm (its connection open), on `rt`.
struct Pools {
    ours: Pool<Free>,
    key: Arc<str>,
    deadpool: deadpool::managed::Pool<FreeDeadpool>,
    bb8: bb8::Pool<FreeBb8>,
}

fn pools(rt: &tokio::runtime::Runtime) -> Pools {
    rt.block_on(async {
        let ours = Pool::builder(Free)
            .with_config(PoolConfig::default().with_health_interval(Duration::ZERO))
            .build()
            .expect("pool");
        let key: Arc<str> = Arc::from("upstream");
        drop(ours.get(&key).await.expect("warm up"));
        let deadpool = deadpool::managed::Pool::builder(FreeDeadpool)
            .max_size(16)
            .build()
            .expect("deadpool");
        drop(deadpool.get().await.expect("warm up"));
        // bb8 checks every connection out with `is_valid` by default; turned off here,
        // as our pool does not ping on `get` either.
        let bb8 = bb8::Pool::builder()
            .max_size(16)
            .test_on_check_out(false)
            .build(FreeBb8)
            .await
            .expect("bb8");
        drop(bb8.get().await.expect("warm up"));
        Pools {
            ours,
            key,
            deadpool,
            bb8,
        }
    })
}

/// Times `iters` runs of `get` split over `tasks` tasks on `rt` (wall time).
fn time_gets<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, tasks: u64, get: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async {
        let per_task = iters.div_ceil(tasks);
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let get = get.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        get().await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("bench task panicked");
        }
        start.elapsed()
    })
}

fn bench_gets(c: &mut Criterion, group: &str, rt: &tokio::runtime::Runtime, tasks: u64) {
    let pools = pools(rt);
    let mut group = c.benchmark_group(group);
    let (ours, key) = (pools.ours.clone(), Arc::clone(&pools.key));
    group.bench_function("mcp_tower_pool", |b| {
        b.iter_custom(|iters| {
            let (ours, key) = (ours.clone(), Arc::clone(&key));
            time_gets(rt, iters, tasks, move || {
                let (ours, key) = (ours.clone(), Arc::clone(&key));
                async move {
                    std::hint::black_box(ours.get(&key).await.ok());
                }
            })
        })
    });
    let deadpool = pools.deadpool.clone();
    group.bench_function("deadpool", |b| {
        b.iter_custom(|iters| {
            let deadpool = deadpool.clone();
            time_gets(rt, iters, tasks, move || {
                let deadpool = deadpool.clone();
                async move {
                    std::hint::black_box(deadpool.get().await.ok());
                }
            })
        })
    });
    let bb8 = pools.bb8.clone();
    group.bench_function("bb8", |b| {
        b.iter_custom(|iters| {
            let bb8 = bb8.clone();
            time_gets(rt, iters, tasks, move || {
                let bb8 = bb8.clone();
                async move {
                    std::hint::black_box(bb8.get().await.ok());
                }
            })
        })
    });
    group.finish();
}

fn warm_get(c: &mut Criterion) {
    let rt = runtime_1();
    bench_gets(c, "pool/warm_get", &rt, 1);
}

fn warm_get_2_threads(c: &mut Criterion) {
    let rt = runtime_2();
    bench_gets(c, "pool/warm_get_2_threads", &rt, 2);
}

/// A runtime that can spawn and talk to child processes.
fn runtime_io() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A `PoolService` for one stdio upstream ("up": this binary as an echo server).
fn stdio_service(rt: &tokio::runtime::Runtime, pool: PoolConfig) -> PoolService {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let upstream = UpstreamConfig::stdio(exe.to_string_lossy(), Vec::<String>::new())
        .with_env(UPSTREAM_ENV, "1")
        .with_stderr(StderrMode::Null);
    let upstreams: BTreeMap<String, UpstreamConfig> = [("up".to_owned(), upstream)].into();
    rt.block_on(async {
        let service = PoolService::from_config(&upstreams, pool).expect("pool service");
        // Wait for the declared `min` sessions, then check one call goes through.
        let min = service.pool().config().min;
        if service.pool().config().enabled {
            while service
                .handle()
                .stats()
                .key("up")
                .is_none_or(|k| k.in_service < min)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let probe =
            tower::ServiceExt::oneshot(service.clone(), echo_call(&CallResolver::shared_default()))
                .await;
        assert!(
            probe.is_ok(),
            "the stdio upstream does not answer: {probe:?}"
        );
        service
    })
}

fn echo_call(resolver: &Arc<CallResolver>) -> ToolCall {
    upstream_call("up__echo", resolver)
}

fn upstream_call(tool: &'static str, resolver: &Arc<CallResolver>) -> ToolCall {
    ToolCall::with_resolver(
        tool,
        object!({"city": "Oslo", "units": "metric", "days": 3, "include": ["wind", "humidity"]}),
        Arc::clone(resolver),
    )
}

fn gateway_call_stdio(c: &mut Criterion) {
    let rt = runtime_io();
    let resolver = CallResolver::shared_default();
    let quiet = PoolConfig::default().with_health_interval(Duration::ZERO);
    let pooled = stdio_service(&rt, quiet.clone());
    let fresh = stdio_service(&rt, quiet.with_enabled(false).with_min(0));

    let mut group = c.benchmark_group("pool/gateway_call_stdio");
    group.sample_size(10);
    group.bench_function("fresh_session", |b| {
        let resolver = Arc::clone(&resolver);
        b.iter_custom(|iters| time_calls(&rt, &fresh, iters, || echo_call(&resolver)))
    });
    group.bench_function("pooled", |b| {
        let resolver = Arc::clone(&resolver);
        b.iter_custom(|iters| time_calls(&rt, &pooled, iters, || echo_call(&resolver)))
    });
    group.finish();
    rt.block_on(async {
        pooled.pool().shutdown().await;
        fresh.pool().shutdown().await;
    });
}

fn throughput_stdio(c: &mut Criterion) {
    let rt = runtime_io();
    let resolver = CallResolver::shared_default();
    let config = |n: usize| {
        PoolConfig::default()
            .with_health_interval(Duration::ZERO)
            .with_min(n)
            .with_max(n)
    };
    let one = stdio_service(&rt, config(1));
    let four = stdio_service(&rt, config(4));

    for (group, tool) in [
        ("pool/throughput_stdio_echo", "up__echo"),
        ("pool/throughput_stdio_sequential", "up__sequential"),
    ] {
        let mut group = c.benchmark_group(group);
        group.sample_size(20);
        for (name, service) in [("1_connection", &one), ("4_connections", &four)] {
            group.bench_function(name, |b| {
                let resolver = Arc::clone(&resolver);
                b.iter_custom(|iters| {
                    let resolver = Arc::clone(&resolver);
                    time_calls_parallel(&rt, service, iters, 16, move || {
                        upstream_call(tool, &resolver)
                    })
                })
            });
        }
        group.finish();
    }
    rt.block_on(async {
        one.pool().shutdown().await;
        four.pool().shutdown().await;
    });
}

/// The stdio upstream, served on a single thread: `echo` returns its arguments at once;
/// `sequential` takes 1 ms and runs one call at a time.
mod upstream {
    use std::time::Duration;

    use tokio::sync::Mutex;

    use rmcp::{
        ErrorData, RoleServer, ServerHandler, ServiceExt,
        model::{
            CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
            ServerCapabilities, ServerConfig,
        },
        service::RequestContext,
        transport::stdio,
    };

    static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

    #[derive(Clone)]
    struct Echo;

    impl ServerHandler for Echo {
        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            _context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            if request.name == "sequential" {
                let _one = ONE_AT_A_TIME.lock().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let text = serde_json::to_string(&request.arguments).unwrap_or_default();
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
        }

        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }
    }

    pub(super) fn serve() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            if let Ok(running) = Echo.serve(stdio()).await {
                running.waiting().await.ok();
            }
        });
    }
}
