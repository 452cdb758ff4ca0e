//! [`ScriptedService`]: the one scripted inner service that every mcp-tower crate's tests
//! use (feature `testing`).
//!
//! It counts calls (in total, per tool and per [`CallKey`]), tracks how many are inside it
//! at once and the peak, can hold calls at its entrance until the test releases them, and
//! returns scripted outcomes: a result, an `isError` result, an rmcp error, a delay on
//! tokio's clock, a panic, or a future that never completes. Tests assert on these counts,
//! which do not flake, rather than on timings.
//!
//! ```
//! use mcp_tower_core::{ToolCall, testing::{Outcome, ScriptedService}};
//! use rmcp::object;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let inner = ScriptedService::new();
//! inner.push_for("flaky", Outcome::tool_error("try again"));
//! let first = inner.clone().oneshot(ToolCall::new("flaky", object!({}))).await.unwrap();
//! let second = inner.clone().oneshot(ToolCall::new("flaky", object!({}))).await.unwrap();
//! assert_eq!(inner.calls_for_tool("flaky"), 2);
//! # let _ = (first, second);
//! # }
//! ```

mod logs;

pub use logs::CapturedLogs;

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use rmcp::{
    ErrorData,
    model::{CallToolResponse, CallToolResult, ContentBlock},
};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tower_service::Service;

use crate::{CallKey, ToolCall};

/// What a scripted call does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// A successful result describing the call: `"<tool> #<n>"` as text, and
    /// `{"tool", "arguments", "execution"}` as structured content, where `execution` counts
    /// the service's completed-or-started calls (so two executions differ).
    Echo,
    /// This result.
    Result(CallToolResult),
    /// An `isError: true` result with this text.
    ToolError(String),
    /// This rmcp error.
    Error(ErrorData),
    /// Wait this long on tokio's clock, then do the inner outcome.
    Delay(Duration, Box<Outcome>),
    /// Panic with this message.
    Panic(String),
    /// Never complete (until dropped).
    Pending,
}

impl Outcome {
    /// An `isError` result.
    pub fn tool_error(text: impl Into<String>) -> Self {
        Outcome::ToolError(text.into())
    }

    /// An rmcp error.
    pub fn error(error: impl Into<ErrorData>) -> Self {
        Outcome::Error(error.into())
    }

    /// The echo result after `delay` on tokio's clock.
    pub fn delayed(delay: Duration) -> Self {
        Outcome::Delay(delay, Box::new(Outcome::Echo))
    }

    /// `self` after `delay` on tokio's clock.
    pub fn after(self, delay: Duration) -> Self {
        Outcome::Delay(delay, Box::new(self))
    }

    /// A panic.
    pub fn panic(message: impl Into<String>) -> Self {
        Outcome::Panic(message.into())
    }
}

#[derive(Default)]
struct Script {
    default: Option<Outcome>,
    queue: VecDeque<Outcome>,
    per_tool: HashMap<String, VecDeque<Outcome>>,
}

impl Script {
    fn next(&mut self, tool: &str) -> Outcome {
        if let Some(outcome) = self.per_tool.get_mut(tool).and_then(VecDeque::pop_front) {
            return outcome;
        }
        if let Some(outcome) = self.queue.pop_front() {
            return outcome;
        }
        self.default.clone().unwrap_or(Outcome::Echo)
    }
}

struct Shared {
    script: Mutex<Script>,
    calls: AtomicUsize,
    by_tool: Mutex<HashMap<String, usize>>,
    by_key: Mutex<HashMap<CallKey, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    completed: AtomicUsize,
    dropped: AtomicUsize,
    /// The number of calls that have entered, for [`ScriptedService::wait_for_calls`].
    entered: watch::Sender<usize>,
    /// Present when calls are held at the entrance until released.
    gate: Option<Semaphore>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking scripted call must not poison the counters for the rest of the test.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scripted inner [`Service<ToolCall>`] that counts what reaches it. Clones share state.
#[derive(Clone)]
pub struct ScriptedService {
    shared: Arc<Shared>,
}

impl fmt::Debug for ScriptedService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedService")
            .field("calls", &self.calls())
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.max_in_flight())
            .field("completed", &self.completed())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Default for ScriptedService {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedService {
    /// A service whose calls all succeed at once with [`Outcome::Echo`].
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A service that holds every call at its entrance (counted as entered and in flight)
    /// until [`release`](Self::release) or [`release_all`](Self::release_all).
    pub fn held() -> Self {
        Self::build(Some(Semaphore::new(0)))
    }

    fn build(gate: Option<Semaphore>) -> Self {
        Self {
            shared: Arc::new(Shared {
                script: Mutex::new(Script::default()),
                calls: AtomicUsize::new(0),
                by_tool: Mutex::new(HashMap::new()),
                by_key: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                completed: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
                entered: watch::channel(0).0,
                gate,
            }),
        }
    }

    /// Sets the outcome of calls with nothing scripted for them.
    pub fn with_default(self, outcome: Outcome) -> Self {
        lock(&self.shared.script).default = Some(outcome);
        self
    }

    /// Scripts the outcome of the next call (of any tool without its own script).
    pub fn push(&self, outcome: Outcome) {
        lock(&self.shared.script).queue.push_back(outcome);
    }

    /// Scripts the outcome of the next call of `tool`.
    pub fn push_for(&self, tool: &str, outcome: Outcome) {
        lock(&self.shared.script)
            .per_tool
            .entry(tool.to_owned())
            .or_default()
            .push_back(outcome);
    }

    /// Lets `n` held calls through.
    pub fn release(&self, n: usize) {
        if let Some(gate) = &self.shared.gate {
            gate.add_permits(n);
        }
    }

    /// Lets every held call, and every later one, through.
    pub fn release_all(&self) {
        if let Some(gate) = &self.shared.gate {
            gate.close();
        }
    }

    /// Calls that reached the service.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Calls of `tool` that reached the service.
    pub fn calls_for_tool(&self, tool: &str) -> usize {
        lock(&self.shared.by_tool).get(tool).copied().unwrap_or(0)
    }

    /// Calls with this key that reached the service.
    pub fn calls_for_key(&self, key: CallKey) -> usize {
        lock(&self.shared.by_key).get(&key).copied().unwrap_or(0)
    }

    /// Calls inside the service now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most calls that were inside the service at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Calls that ran to completion (including errors and `isError` results).
    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Calls whose future was dropped before it completed (cancelled).
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` calls have reached the service.
    pub async fn wait_for_calls(&self, n: usize) {
        let mut rx = self.shared.entered.subscribe();
        // `wait_for` only fails if the sender is gone, and `self` holds it.
        let _ = rx.wait_for(|entered| *entered >= n).await;
    }

    fn record_entry(&self, call: &ToolCall) {
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        *lock(&self.shared.by_tool)
            .entry(call.name().to_owned())
            .or_insert(0) += 1;
        *lock(&self.shared.by_key).entry(call.key()).or_insert(0) += 1;
        let now = self.shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.shared.entered.send_modify(|n| *n += 1);
    }
}

/// Decrements `in_flight` however the call ends, and counts a drop before completion.
struct InFlightGuard {
    shared: Arc<Shared>,
    completed: bool,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.completed {
            self.shared.completed.fetch_add(1, Ordering::SeqCst);
        } else if !std::thread::panicking() {
            self.shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The future of a [`ScriptedService`] call.
pub struct ScriptedFuture {
    inner: Pin<Box<dyn Future<Output = Result<CallToolResponse, ErrorData>> + Send>>,
}

impl fmt::Debug for ScriptedFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScriptedFuture")
    }
}

impl Future for ScriptedFuture {
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

fn echo(call: &ToolCall, execution: usize) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
        "{} #{execution}",
        call.name()
    ))]);
    result.structured_content = Some(json!({
        "tool": call.name(),
        "arguments": call.arguments(),
        "execution": execution,
    }));
    result
}

async fn run(
    outcome: Outcome,
    call: &ToolCall,
    execution: usize,
) -> Result<CallToolResponse, ErrorData> {
    let mut outcome = outcome;
    loop {
        return match outcome {
            Outcome::Echo => Ok(echo(call, execution).into()),
            Outcome::Result(result) => Ok(result.into()),
            Outcome::ToolError(text) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(text)]).into())
            }
            Outcome::Error(error) => Err(error),
            Outcome::Delay(delay, then) => {
                tokio::time::sleep(delay).await;
                outcome = *then;
                continue;
            }
            Outcome::Panic(message) => panic!("{message}"),
            Outcome::Pending => std::future::pending().await,
        };
    }
}

impl Service<ToolCall> for ScriptedService {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = ScriptedFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let this = self.clone();
        ScriptedFuture {
            inner: Box::pin(async move {
                this.record_entry(&call);
                let execution = this.shared.calls.load(Ordering::SeqCst);
                let mut guard = InFlightGuard {
                    shared: Arc::clone(&this.shared),
                    completed: false,
                };
                if let Some(gate) = &this.shared.gate {
                    // A closed gate (release_all) lets everyone through.
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                }
                let outcome = lock(&this.shared.script).next(call.name());
                let result = run(outcome, &call, execution).await;
                guard.completed = true;
                result
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use rmcp::object;
    use tower::ServiceExt;

    fn call(tool: &'static str) -> ToolCall {
        ToolCall::new(tool, object!({"n": 1}))
    }

    #[tokio::test]
    async fn counts_per_tool_and_key() {
        let s = ScriptedService::new();
        for _ in 0..3 {
            s.clone().oneshot(call("a")).await.unwrap();
        }
        s.clone().oneshot(call("b")).await.unwrap();
        assert_eq!(s.calls(), 4);
        assert_eq!(s.calls_for_tool("a"), 3);
        assert_eq!(s.calls_for_key(call("a").key()), 3);
        assert_eq!(s.completed(), 4);
        assert_eq!(s.max_in_flight(), 1);
    }

    #[tokio::test]
    async fn scripted_outcomes_in_order() {
        let s = ScriptedService::new();
        s.push_for("t", Outcome::tool_error("nope"));
        s.push_for("t", Outcome::error(ErrorData::invalid_params("bad", None)));
        let first = s.clone().oneshot(call("t")).await.unwrap();
        let CallToolResponse::Complete(first) = first else {
            panic!()
        };
        assert_eq!(first.is_error, Some(true));
        assert!(s.clone().oneshot(call("t")).await.is_err());
        let third = s.clone().oneshot(call("t")).await.unwrap();
        let CallToolResponse::Complete(third) = third else {
            panic!()
        };
        assert_eq!(third.structured_content.unwrap()["execution"], 3);
    }

    #[tokio::test(start_paused = true)]
    async fn held_calls_wait_for_release_and_count_drops() {
        let s = ScriptedService::held();
        let a = tokio::spawn(s.clone().oneshot(call("t")));
        let b = tokio::spawn(s.clone().oneshot(call("t")));
        s.wait_for_calls(2).await;
        assert_eq!(s.in_flight(), 2);
        b.abort();
        assert!(b.await.unwrap_err().is_cancelled());
        assert_eq!(s.dropped(), 1);
        s.release(1);
        a.await.unwrap().unwrap();
        assert_eq!(s.completed(), 1);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.max_in_flight(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_run_on_the_paused_clock() {
        let s = ScriptedService::new().with_default(Outcome::delayed(Duration::from_secs(3600)));
        let start = tokio::time::Instant::now();
        s.clone().oneshot(call("slow")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn panics_propagate_and_leave_counters_consistent() {
        let s = ScriptedService::new();
        s.push(Outcome::panic("boom"));
        let result = std::panic::AssertUnwindSafe(s.clone().oneshot(call("t")))
            .catch_unwind()
            .await;
        assert!(result.is_err());
        assert_eq!(s.in_flight(), 0);
        s.clone().oneshot(call("t")).await.unwrap();
        assert_eq!(s.calls(), 2);
    }

    #[tokio::test]
    async fn pending_never_completes() {
        let s = ScriptedService::new();
        s.push(Outcome::Pending);
        let mut fut = Box::pin(s.clone().oneshot(call("t")));
        assert!(futures_util::poll!(&mut fut).is_pending());
        drop(fut);
        assert_eq!(s.dropped(), 1);
    }
}
