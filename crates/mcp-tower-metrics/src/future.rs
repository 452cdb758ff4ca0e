//! [`ResponseFuture`]: the future of [`Metrics`](crate::Metrics), and the record that counts
//! a call however it ends.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use mcp_tower_core::ToolCall;
use pin_project_lite::pin_project;
use rmcp::{ErrorData, model::CallToolResponse};
use tokio::time::Instant;

use crate::{CallOutcome, handle::Shared, tool::ToolMetrics};

/// One call in flight. Finished, it records the outcome and leaves the in-flight gauges;
/// dropped unfinished, it does the same with `cancelled`, or `error` if the inner future
/// panicked (whether the panic is still unwinding or was caught above us).
pub(crate) struct CallRecord {
    tool: Arc<ToolMetrics>,
    start: Instant,
    finished: bool,
    /// Set while the inner future is being polled: still set when the record is dropped,
    /// the inner poll never returned (it panicked, and the panic was caught above us).
    polling: bool,
}

impl CallRecord {
    pub(crate) fn start(shared: &Shared, call: &ToolCall) -> Self {
        Self {
            tool: shared.enter(call),
            start: call.received_at(),
            finished: false,
            polling: false,
        }
    }

    /// Records the outcome and takes the call out of the in-flight gauges.
    fn finish(&mut self, outcome: CallOutcome) {
        self.finished = true;
        self.tool.finish(self.start, outcome);
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.finished {
            let outcome = if self.polling || std::thread::panicking() {
                CallOutcome::Error
            } else {
                CallOutcome::Cancelled
            };
            self.finish(outcome);
        }
    }
}

impl fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRecord")
            .field("tool", &self.tool.name)
            .field("start", &self.start)
            .field("finished", &self.finished)
            .finish()
    }
}

pin_project! {
    /// The future of [`Metrics`](crate::Metrics): the inner future, and the record of the
    /// call, completed with the call's outcome when the inner future completes.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        record: CallRecord,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, record: CallRecord) -> Self {
        Self { inner, record }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CallToolResponse, ErrorData>>,
{
    type Output = Result<CallToolResponse, ErrorData>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.record.polling = true;
        let poll = this.inner.poll(cx);
        this.record.polling = false;
        let result = ready!(poll);
        if !this.record.finished {
            this.record.finish(CallOutcome::of(&result));
        }
        Poll::Ready(result)
    }
}
