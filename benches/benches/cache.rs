//! `cache/*`: the cache layer's hit and miss paths next to moka used raw and to
//! tower-resilience's cache layer.
//!
//! - `cache/hit_1_thread`, `cache/hit_2_threads`: a hit. `moka_raw` (the baseline) is the
//!   store's own `get` of a precomputed key; `layer` is our `Cache` answering the call
//!   (policy, key, lookup, freshness and invalidation checks, copying the result out and
//!   marking its `_meta`); `layer_unmarked` the same without the marker; `layer_fresh_call`
//!   builds a new `ToolCall` per call (its arguments and key hash included);
//!   `tower_resilience` is tower-resilience's cache layer keyed by the same `CallKey`;
//!   `inner_only` is the inner service alone (what answering costs without a cache).
//! - `cache/miss_insert`: a call the cache has never seen, whose result is then stored.
//!   `ready_service` (the baseline) is the inner service alone; `moka_raw` a raw `get`
//!   that misses and an `insert`.
//! - `cache/key`: deriving a call's [`CallKey`] (once per call in the stack, shared by the
//!   cache and the deduplicator) from `sample_call`'s arguments. `serialize_then_hash` (the
//!   baseline) is the obvious way: serialize the arguments to canonical JSON (serde_json's
//!   map is sorted) and hash the bytes with the same keyed SipHash.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_tower_benches::{
    ReadyService, runtime_1, runtime_2, sample_call, time_calls, time_calls_parallel,
};
use mcp_tower_cache::{CacheConfig, CacheLayer, MokaStore, estimate_result_bytes};
use mcp_tower_core::{
    CacheScope, CallKey, CallKeyBuildHasher, CallResolver, KeySecret, Partition, PolicyDefaults,
    PolicyTable, ToolCall, ToolOverride,
};
use rmcp::{
    ErrorData,
    model::{CallToolResponse, CallToolResult, ContentBlock, Tool, ToolAnnotations},
    object,
};
use tower::{Layer, Service, ServiceExt};
use tower_resilience_cache::CacheError;

/// `weather` (the tool `sample_call` calls): read-only, public, cached for an hour.
fn resolver() -> Arc<CallResolver> {
    let weather = Tool::new("weather", "Current weather", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true));
    Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default())
            .with_tools([weather])
            .with_override(
                "weather",
                ToolOverride::default()
                    .with_cache_ttl(Duration::from_secs(3600))
                    .with_scope(CacheScope::Public),
            ),
    ))
}

/// Our cache over the ready inner service, and the store behind it.
fn our_cache(
    config: CacheConfig,
) -> (
    impl Service<ToolCall, Response = CallToolResponse, Error = ErrorData, Future: Send>
    + Clone
    + Send
    + 'static,
    MokaStore,
) {
    let store = MokaStore::new(config.max_bytes);
    let layer = CacheLayer::with_store(config, store.clone()).expect("valid cache config");
    (layer.layer(ReadyService::default()), store)
}

/// tower-resilience's cache layer over the ready inner service, keyed by the call's key,
/// its errors mapped back to rmcp's.
fn their_cache()
-> impl Service<ToolCall, Response = CallToolResponse, Error = ErrorData, Future: Send>
+ Clone
+ Send
+ 'static {
    let layer = tower_resilience_cache::CacheLayer::builder()
        .max_size(100_000)
        .ttl(Duration::from_secs(3600))
        .key_extractor(|call: &ToolCall| call.key())
        .build()
        .expect("valid tower-resilience cache config");
    layer
        .layer(ReadyService::default())
        .map_err(|CacheError::Inner(e): CacheError<ErrorData>| e)
}

/// Times `iters` runs of `f` split over `tasks` tasks on `rt` (wall time for all).
fn time_parallel<F>(rt: &tokio::runtime::Runtime, iters: u64, tasks: u64, f: F) -> Duration
where
    F: Fn() + Clone + Send + 'static,
{
    rt.block_on(async {
        let start = Instant::now();
        let per_task = iters.div_ceil(tasks);
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        f();
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

fn hit(c: &mut Criterion, threads: u64) {
    let rt = if threads == 1 {
        runtime_1()
    } else {
        runtime_2()
    };
    let resolver = resolver();
    // One prepared call, cloned per request: its key and policy are computed once, like
    // the precomputed key of the raw baseline.
    let call = sample_call(&resolver);
    let key = call.key();

    let (marked, store) = our_cache(CacheConfig::default());
    let (unmarked, _) = our_cache(CacheConfig::default().with_mark_hits(false));
    let theirs = their_cache();
    let inner = ReadyService::default();
    // Fill every cache with the call's result.
    rt.block_on(async {
        for service in [marked.clone(), unmarked.clone()] {
            service.oneshot(call.clone()).await.expect("fill");
        }
        theirs.clone().oneshot(call.clone()).await.expect("fill");
    });
    assert!(store.moka().get(&key).is_some(), "the result is cached");

    let name = if threads == 1 {
        "cache/hit_1_thread"
    } else {
        "cache/hit_2_threads"
    };
    let mut group = c.benchmark_group(name);
    let moka = store.moka().clone();
    group.bench_function("moka_raw", |b| {
        b.iter_custom(|iters| {
            let moka = moka.clone();
            time_parallel(&rt, iters, threads, move || {
                std::hint::black_box(moka.get(std::hint::black_box(&key)));
            })
        })
    });
    macro_rules! bench_service {
        ($id:literal, $service:expr, $make:expr) => {
            group.bench_function($id, |b| {
                b.iter_custom(|iters| {
                    if threads == 1 {
                        time_calls(&rt, &$service, iters, $make)
                    } else {
                        time_calls_parallel(&rt, &$service, iters, threads, $make)
                    }
                })
            });
        };
    }
    let prepared = {
        let call = call.clone();
        move || call.clone()
    };
    let fresh = {
        let resolver = Arc::clone(&resolver);
        move || sample_call(&resolver)
    };
    bench_service!("layer", marked, prepared.clone());
    bench_service!("layer_unmarked", unmarked, prepared.clone());
    bench_service!("layer_fresh_call", marked, fresh.clone());
    bench_service!("tower_resilience", theirs, prepared.clone());
    bench_service!("inner_only", inner, prepared.clone());

    // The same hit through the whole McpStack (metrics, cache, dedup, concurrency, retry,
    // timeout), with a call of the stack's own resolver, prepared the same way.
    let stack = mcp_tower::McpStack::builder()
        .tools([
            Tool::new("weather", "Current weather", object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(true)),
        ])
        .tool_override(
            "weather",
            ToolOverride::default()
                .with_cache_ttl(Duration::from_secs(3600))
                .with_scope(CacheScope::Public),
        )
        .build()
        .expect("valid stack")
        .service(ReadyService::default());
    let stack_call = sample_call(&stack.resolver);
    rt.block_on(stack.service.clone().oneshot(stack_call.clone()))
        .expect("fill");
    let stack_service = stack.service.clone();
    let stack_prepared = move || stack_call.clone();
    bench_service!("mcp_stack", stack_service, stack_prepared.clone());
    group.finish();
}

fn hit_1_thread(c: &mut Criterion) {
    hit(c, 1);
}

fn hit_2_threads(c: &mut Criterion) {
    hit(c, 2);
}

fn miss_insert(c: &mut Criterion) {
    let rt = runtime_1();
    let resolver = resolver();
    // Distinct arguments per call, so every call misses and its result is stored.
    let counter = Arc::new(AtomicU64::new(0));
    let distinct = {
        let resolver = Arc::clone(&resolver);
        let counter = Arc::clone(&counter);
        move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            ToolCall::with_resolver(
                "weather",
                object!({"city": "Oslo", "units": "metric", "days": 3, "n": n}),
                Arc::clone(&resolver),
            )
        }
    };

    let inner = ReadyService::default();
    let (ours, _) = our_cache(CacheConfig::default());
    let theirs = their_cache();
    let raw: moka::sync::Cache<CallKey, Arc<CallToolResult>, CallKeyBuildHasher> =
        moka::sync::Cache::builder()
            .max_capacity(CacheConfig::DEFAULT_MAX_BYTES)
            .weigher(|_: &CallKey, result: &Arc<CallToolResult>| {
                u32::try_from(estimate_result_bytes(result)).unwrap_or(u32::MAX)
            })
            .time_to_live(Duration::from_secs(3600))
            .build_with_hasher(CallKeyBuildHasher::default());
    let result = Arc::new(CallToolResult::success(vec![ContentBlock::text(
        "sunny, 21°C, light breeze from the south-west",
    )]));

    let mut group = c.benchmark_group("cache/miss_insert");
    group.bench_function("ready_service", |b| {
        b.iter_custom(|iters| time_calls(&rt, &inner, iters, distinct.clone()))
    });
    group.bench_function("moka_raw", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                // Spread the counter over 128 bits: `CallKeyBuildHasher` passes a key's
                // bits straight to the map, as real keys (keyed hashes) are uniform.
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let key = CallKey::from_u128((u128::from(h) << 64) | u128::from(h.rotate_left(29)));
                if raw.get(&key).is_none() {
                    raw.insert(key, Arc::clone(&result));
                }
            }
            start.elapsed()
        })
    });
    group.bench_function("layer", |b| {
        b.iter_custom(|iters| time_calls(&rt, &ours, iters, distinct.clone()))
    });
    group.bench_function("tower_resilience", |b| {
        b.iter_custom(|iters| time_calls(&rt, &theirs, iters, distinct.clone()))
    });
    group.finish();
}

fn key(c: &mut Criterion) {
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;

    let secret = KeySecret::from_bytes(b"a configured secret for the bench").expect("secret");
    let call = sample_call(&resolver());
    let arguments = call
        .arguments()
        .cloned()
        .expect("sample_call has arguments");
    let mut group = c.benchmark_group("cache/key");
    group.bench_function("serialize_then_hash", |b| {
        b.iter(|| {
            let json = serde_json::to_vec(std::hint::black_box(&arguments)).expect("json");
            let mut hasher = SipHasher13::new_with_keys(1, 2);
            hasher.write(b"weather");
            hasher.write(&json);
            hasher.write_u8(0);
            hasher.finish128().as_u128()
        })
    });
    group.bench_function("call_key", |b| {
        b.iter(|| {
            CallKey::compute(
                &secret,
                "weather",
                Some(std::hint::black_box(&arguments)),
                Partition::Shared,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, hit_1_thread, hit_2_threads, miss_insert, key);
criterion_main!(benches);
