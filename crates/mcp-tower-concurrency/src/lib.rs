//! Concurrency limits for the tool calls of an rmcp server: one global limit, one per tool,
//! a bounded first-come-first-served queue, load shedding with a retry hint, and live
//! gauges.
//!
//! # When to use it
//!
//! When too many tool calls at once would hurt: a small machine, an upstream API with a
//! rate or connection limit, a tool that must not run twice at once (`max_concurrency =
//! 1`), or one slow tool that must not take every worker from the others. Without a limit,
//! rmcp runs every request it receives at once.
//!
//! # What it does
//!
//! A call runs only while it holds two permits: one of the **global** limit
//! (`max_in_flight`, all tools together) and one of its **tool's** limit (the tool's
//! `max_concurrency` from its [`ToolPolicy`](mcp_tower_core::ToolPolicy), or set at run
//! time). Tools without a limit of their own, and tools the policy table does not know,
//! are held back by the global limit only (a known tool still gets its own gauges).
//! Permits are returned when the call's response future is dropped, as with tower's
//! `ConcurrencyLimit`: as soon as it completes, or as soon as its caller gives up.
//!
//! - **Order**: the tool's permit first, then the global one. A call never holds a global
//!   permit while it waits for its tool's, so a saturated tool (say `max_concurrency = 1`
//!   with a backlog) cannot take global permits away from the other tools; it only holds
//!   back its own calls.
//! - **Queueing**: a call that cannot run at once waits, first come first served (a
//!   newcomer never overtakes a queued call), in the queue of the limit it waits for. Each
//!   queue holds at most `max_queued` calls; a call that finds it full is turned away at
//!   once with the core **busy** error (`-31050`). A call waits at most `queue_timeout`
//!   (default 5 s, counted from its arrival in the stack) in all, then gets the
//!   **queue-timeout** error (`-31051`). Both carry a
//!   retry hint (`data.retryAfterMs`) that grows with the backlog. No call hangs, and the
//!   memory a flood takes is bounded.
//! - **Cancellation**: rmcp does not drop a handler's future when the client sends
//!   `notifications/cancelled`; it cancels the request's token. A queued call watches that
//!   token and leaves the queue when it fires (with the **cancelled** error, `-31055`),
//!   freeing its place; a dropped future leaves the same way. A call whose token is already
//!   cancelled never queues.
//! - **Run-time limits**: [`ConcurrencyHandle::set_limit`] grows or shrinks the global or a
//!   tool's limit while calls are in flight: growing admits waiters at once, shrinking
//!   retires the surplus permits as their calls finish. No permit is lost or leaked.
//! - **Gauges**: [`ConcurrencyHandle`] reads in-flight, peak, queued and rejected counts,
//!   globally and per tool, and implements [`LayerReport`](mcp_tower_core::LayerReport)
//!   for Prometheus and `/stats`.
//!
//! # Back-pressure: why permits are taken in `call`
//!
//! `tower::limit::ConcurrencyLimit` takes its permit in `poll_ready`. This layer cannot:
//! which tool's limit applies depends on the request, which `poll_ready` does not see, and
//! taking the global permit there would mean holding it while waiting for the tool's
//! permit. So [`ConcurrencyLimit::poll_ready`](tower_service::Service::poll_ready) forwards
//! the inner service's readiness only, and the layer applies back-pressure in the call:
//! a bounded, timed queue, then an immediate busy error the client can retry. A caller
//! that relies on `poll_ready` to stop sending will not see this layer's limits there; it
//! sees them as queueing delay and busy errors. (rmcp itself spawns a task per request and
//! never waits for readiness, so this is also the only back-pressure that would reach an
//! MCP client.)
//!
//! # Cost
//!
//! A call admitted at once costs one compare-and-swap per permit to take it and one to
//! return it (lock-free while nobody is queued), one reference count, and no allocation
//! or clock read. A known tool's limiter is found by its
//! [`ToolId`](mcp_tower_core::ToolId) in an append-only table (an index: no hashing, no
//! lock). A call that must wait pays for it: one allocation, a timer for its deadline
//! (counted from `ToolCall::received_at`, so still no clock read), and the queue's mutex.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use mcp_tower_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Scope};
//! use mcp_tower_core::{
//!     CallResolver, PolicyDefaults, PolicyTable, ToolCall, ToolOverride,
//!     error::ErrorKind, testing::ScriptedService,
//! };
//! use rmcp::object;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `append_note` may run once at a time; everything together at most 16 at a time.
//! let resolver = Arc::new(CallResolver::new(
//!     PolicyTable::new(PolicyDefaults::default())
//!         .with_override("append_note", ToolOverride::default().with_max_concurrency(1)),
//! ));
//! let layer = ConcurrencyLayer::new(
//!     ConcurrencyConfig::default().with_max_in_flight(16).with_max_queued(64),
//! )?;
//! let handle = layer.handle();
//! let service = ServiceBuilder::new().layer(layer).service(ScriptedService::new());
//!
//! let call = ToolCall::with_resolver("append_note", object!({"text": "hi"}), resolver);
//! match service.clone().oneshot(call).await {
//!     Ok(_response) => {}
//!     // Turned away: `error.data.retryAfterMs` says when to try again.
//!     Err(error) if ErrorKind::of(&error) == Some(ErrorKind::Busy) => {}
//!     Err(error) => return Err(error.into()),
//! }
//!
//! assert_eq!(handle.limit(Scope::Tool("append_note")), Some(1));
//! assert_eq!(handle.stats(Scope::Tool("append_note")).unwrap().peak, 1);
//! handle.set_limit(Scope::Global, 32); // at run time, while serving
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod future;
mod handle;
mod layer;
mod limiter;
mod limits;
mod service;
mod wait_queue;

pub use config::{ConcurrencyConfig, InvalidConfig, MAX_LIMIT};
pub use future::ResponseFuture;
pub use handle::{ConcurrencyHandle, LimitStats, Scope};
pub use layer::ConcurrencyLayer;
pub use service::ConcurrencyLimit;
