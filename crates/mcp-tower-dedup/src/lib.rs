//! Cancellation-safe single-flight for identical concurrent MCP tool calls.
//!
//! [`DedupLayer`] is a Tower layer for the tool calls of an [rmcp](https://docs.rs/rmcp)
//! server (see mcp-tower): when several calls with the same [`CallKey`] (tool, canonical
//! arguments, and the caller's partition for private tools) are in flight at once, the inner
//! service runs **once** and every caller gets the outcome.
//!
//! Use it in front of tools that are expensive and safe to share: a search, a build, a
//! fetch from a slow API, that many agents or many sessions call with the same arguments at
//! the same time. In mcp-tower's stack it sits after the cache (a hit returns before any
//! coordination) and before the concurrency limit (followers take no permit).
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//!
//! use mcp_tower_core::{CallResolver, PolicyDefaults, PolicyTable, ToolCall};
//! use mcp_tower_dedup::DedupLayer;
//! use rmcp::{
//!     ErrorData,
//!     model::{CallToolResponse, CallToolResult, ContentBlock, Tool, ToolAnnotations},
//!     object,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A read-only tool: deduplicated by default.
//! let search = Tool::new("search", "Search the docs", object!({"type": "object"}))
//!     .with_annotations(ToolAnnotations::new().read_only(true));
//! let resolver = Arc::new(CallResolver::new(
//!     PolicyTable::new(PolicyDefaults::default()).with_tools([search]),
//! ));
//!
//! // The tool: counts its executions and takes a moment.
//! let executions = Arc::new(AtomicUsize::new(0));
//! let tool = tower::service_fn({
//!     let executions = Arc::clone(&executions);
//!     move |_call: ToolCall| {
//!         executions.fetch_add(1, Ordering::SeqCst);
//!         async {
//!             tokio::task::yield_now().await;
//!             let result = CallToolResult::success(vec![ContentBlock::text("3 pages")]);
//!             Ok::<_, ErrorData>(CallToolResponse::from(result))
//!         }
//!     }
//! });
//!
//! let dedup = DedupLayer::default();
//! let handle = dedup.handle();
//! let service = ServiceBuilder::new().layer(dedup).service(tool);
//!
//! // Ten callers ask the same thing at the same time.
//! let calls = (0..10).map(|_| {
//!     let call = ToolCall::with_resolver("search", object!({"q": "tower"}), Arc::clone(&resolver));
//!     service.clone().oneshot(call)
//! });
//! let results = futures_util::future::join_all(calls).await;
//! assert!(results.iter().all(Result::is_ok));
//! assert_eq!(executions.load(Ordering::SeqCst), 1);
//! assert_eq!(handle.stats().followers_served, 9);
//! # }
//! ```
//!
//! # Which calls are deduplicated
//!
//! Only calls whose [`ToolPolicy`] has `dedup` on: by default tools annotated
//! `readOnlyHint: true` or `idempotentHint: true`, changed per tool by a `ToolOverride`.
//! A destructive or unannotated tool, an unknown tool and a continuation of a
//! multi-round-trip call (`inputResponses`, `requestState`) pass straight through, at the
//! cost of one look at the call's (memoized) policy.
//!
//! For a *private* tool the key includes the caller's principal, so two principals never
//! share a flight; a *public* tool's calls are shared by everyone.
//!
//! # What every caller gets
//!
//! - A result, an `isError` result, or an error: every caller waiting at that moment gets
//!   it. Nothing is remembered: the next call after the flight runs fresh (caching is the
//!   cache layer's job).
//! - A panic of the tool: every caller gets an internal error (`data.kind = "panicked"`),
//!   and the key is freed.
//! - An `InputRequired` or `Task` response belongs to the request that produced it (its
//!   `requestState`, its task, the capabilities of its client): the caller that started the
//!   flight gets it, and every other caller runs its own call.
//!
//! # Cancellation
//!
//! The inner call belongs to the flight, not to the caller that started it:
//!
//! - If a caller goes away (its future is dropped) or cancels (the client sends
//!   `notifications/cancelled`: rmcp cancels the request's token but does not drop its
//!   future, so each waiter watches its own token and answers at once with a `Cancelled`
//!   error), it leaves the flight, and the flight goes on for the others.
//! - The inner call runs with a cancellation token of its own
//!   ([`ToolCall::into_with_cancellation`]: the first caller's request, with another token),
//!   cancelled only when the **last** waiter leaves; the inner future is then dropped, and
//!   the key freed.
//! - The inner future is never spawned: it is polled on the task of one of its waiters, so
//!   rmcp's task-locals and the request task's cancellation keep working. The caller that
//!   started the flight polls it; when that caller leaves, a follower takes over.
//!
//! # Cost
//!
//! A deduplicated call that nobody joins costs an entry in a sharded map (added, then
//! removed), its boxed inner future and two counter increments: its caller polls the inner
//! future itself, with no lock and no shared state. The state followers share (who waits,
//! the outcome) is built by the first follower. A follower joins, registers its waker and
//! sleeps until the outcome is there (it uses no CPU while the tool runs), then takes its
//! share: the last follower out moves the outcome, the others clone it. `benches/dedup.rs`
//! measures these paths next to `async_singleflight` and tower-resilience's coalesce,
//! including the CPU time a burst costs on a tool that takes 1 ms; `docs/performance.md`
//! has the figures.
//!
//! # What followers do not get
//!
//! The flight runs with the first caller's request context. **Progress notifications**
//! (and logging) the tool sends through that context reach only the first caller's client;
//! the others see none until the result arrives. A server-to-client request the tool makes
//! (sampling, elicitation) goes to the first caller's session; rmcp associates it with the
//! request of whichever waiter is polling the flight at that moment. Turn `dedup` off for
//! tools that talk to their caller while they run.
//!
//! # Figures
//!
//! [`DedupHandle::stats`] gives flights, followers served, flights cancelled and the keys in
//! flight (see [`DedupStats`]); the handle implements [`LayerReport`] for the metrics layer
//! (`mcp_dedup_flights_total`, `mcp_dedup_followers_served_total`, ...).
//!
//! [`CallKey`]: mcp_tower_core::CallKey
//! [`ToolPolicy`]: mcp_tower_core::ToolPolicy
//! [`ToolCall::into_with_cancellation`]: mcp_tower_core::ToolCall::into_with_cancellation
//! [`LayerReport`]: mcp_tower_core::LayerReport
#![deny(missing_docs)]

mod config;
mod flight;
mod future;
mod handle;
mod layer;
mod service;

pub use config::DedupConfig;
pub use future::ResponseFuture;
pub use handle::{DedupHandle, DedupStats};
pub use layer::DedupLayer;
pub use service::Dedup;
