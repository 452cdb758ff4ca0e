//! What every benchmark file shares: the runtimes, a ready inner service, and loops that
//! time a service in the way criterion's `iter_custom` expects.
//!
//! Each group puts an mcp-tower layer next to its baseline in the same group; the baseline
//! of each group is declared in `benches/baselines.toml` and used by `cargo xtask bench`
//! to compute the ratios in `target/bench/summary.json`.
#![deny(missing_docs)]

use std::{
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use mcp_tower_core::{CallResolver, ToolCall};
use rmcp::{
    ErrorData,
    model::{CallToolResponse, CallToolResult, ContentBlock},
    object,
};
use tower::{Service, ServiceExt};

/// A single-threaded runtime: per-call costs without cross-thread noise.
pub fn runtime_1() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// A two-worker runtime, for contended figures on the 2-core machine.
pub fn runtime_2() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// An inner service that answers at once with a fixed, shared result: the floor every
/// layer is measured against.
#[derive(Clone, Debug)]
pub struct ReadyService {
    result: Arc<CallToolResult>,
}

impl Default for ReadyService {
    fn default() -> Self {
        Self {
            result: Arc::new(CallToolResult::success(vec![ContentBlock::text(
                "sunny, 21°C, light breeze from the south-west",
            )])),
        }
    }
}

impl ReadyService {
    /// Answers an empty result (no content): nothing to copy or free per call, for groups
    /// that measure a layer's own few dozen ns, where a typical result's allocations would
    /// add more noise than the layer adds time.
    pub fn empty() -> Self {
        Self {
            result: Arc::new(CallToolResult::success(Vec::new())),
        }
    }
}

impl Service<ToolCall> for ReadyService {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = Ready<Result<CallToolResponse, ErrorData>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _call: ToolCall) -> Self::Future {
        ready(Ok(CallToolResult::clone(&self.result).into()))
    }
}

/// A typical call: a tool name and ~100 bytes of arguments.
pub fn sample_call(resolver: &Arc<CallResolver>) -> ToolCall {
    ToolCall::with_resolver(
        "weather",
        object!({"city": "Oslo", "units": "metric", "days": 3, "include": ["wind", "humidity"]}),
        Arc::clone(resolver),
    )
}

/// Times `iters` sequential calls of `service` on `rt`, each with a fresh call from `make`.
pub fn time_calls<S, F>(rt: &tokio::runtime::Runtime, service: &S, iters: u64, make: F) -> Duration
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
    F: Fn() -> ToolCall,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let response = service.clone().oneshot(make()).await;
            std::hint::black_box(response).ok();
        }
        start.elapsed()
    })
}

/// Times `iters` sequential calls of `service` on `rt`, like [`time_calls`], but with the
/// calls built beforehand (in batches, outside the timed region): only the service call,
/// the response and its drop are timed. For a layer whose own cost is a small part of a
/// call's, where the building of the call (allocations, a few hundred ns) would otherwise
/// add more noise than the layer adds time.
pub fn time_prebuilt_calls<S, F>(
    rt: &tokio::runtime::Runtime,
    service: &S,
    iters: u64,
    make: F,
) -> Duration
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
    F: Fn() -> ToolCall,
{
    const BATCH: u64 = 512;
    rt.block_on(async {
        let mut total = Duration::ZERO;
        let mut left = iters;
        let mut calls = Vec::with_capacity(BATCH as usize);
        while left > 0 {
            let n = left.min(BATCH);
            calls.extend((0..n).map(|_| make()));
            let start = Instant::now();
            for call in calls.drain(..) {
                let response = service.clone().oneshot(call).await;
                std::hint::black_box(response).ok();
            }
            total += start.elapsed();
            left -= n;
        }
        total
    })
}

/// Times `iters` calls split over `tasks` tasks on `rt` (wall time for all of them): the
/// per-call figure under contention.
pub fn time_calls_parallel<S, F>(
    rt: &tokio::runtime::Runtime,
    service: &S,
    iters: u64,
    tasks: u64,
    make: F,
) -> Duration
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone + Send + 'static,
    S::Future: Send,
    F: Fn() -> ToolCall + Clone + Send + 'static,
{
    rt.block_on(async {
        let start = Instant::now();
        let per_task = iters.div_ceil(tasks);
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let service = service.clone();
                let make = make.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        let response = service.clone().oneshot(make()).await;
                        std::hint::black_box(response).ok();
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
