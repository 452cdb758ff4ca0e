//! [`CallOutcome`]: how a tool call ended, the `outcome` label of every call metric.

use std::fmt;

use mcp_tower_core::error::ErrorKind;
use rmcp::{
    ErrorData,
    model::{CallToolResponse, CallToolResult},
};

/// The `_meta` key under which the cache layer marks a result it served:
/// `"io.github.mcp-tower/cache": {"hit": true, ...}` (the pre-0.2 key `mcp-tower/cache` is
/// still recognised; see [`mcp_tower_core::meta`]).
pub const CACHE_META_KEY: &str = mcp_tower_core::meta::CACHE;

/// How a tool call ended: the `outcome` label of `mcp_tool_calls_total` and
/// `mcp_tool_call_duration_seconds`. The set is closed, so the label stays bounded.
///
/// | outcome | when |
/// |---|---|
/// | `ok` | a result without `isError`; also an `InputRequired` or `Task` response (the server answered without error; the tool's final result comes in a later call) |
/// | `tool_error` | a result with `isError: true` (the tool failed and said so) |
/// | `cache_hit` | a result the cache layer served (its `_meta` holds `"io.github.mcp-tower/cache": {"hit": true}`) |
/// | `rejected` | our concurrency limit refused the call ([`ErrorKind::Busy`], [`ErrorKind::QueueTimeout`]) |
/// | `timeout` | an attempt timed out ([`ErrorKind::TimedOut`]), or retries ran out and the last attempt timed out |
/// | `cancelled` | the client cancelled ([`ErrorKind::Cancelled`]), or the call's future was dropped before it finished |
/// | `error` | any other error: invalid params, unknown tool, upstream unavailable, a panic, retries exhausted on a non-timeout |
///
/// `cancelled` is a seventh outcome beside the six the issue lists: a client walking away
/// is neither a server error nor a success, and counting it as `error` would page someone
/// for client behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallOutcome {
    /// Answered without error.
    Ok,
    /// The tool returned an `isError` result.
    ToolError,
    /// Served by the cache layer.
    CacheHit,
    /// Refused by a concurrency limit.
    Rejected,
    /// Timed out.
    Timeout,
    /// Cancelled by the client.
    Cancelled,
    /// Any other error.
    Error,
}

impl CallOutcome {
    /// Every outcome, in label order.
    pub const ALL: [CallOutcome; 7] = [
        CallOutcome::Ok,
        CallOutcome::ToolError,
        CallOutcome::CacheHit,
        CallOutcome::Rejected,
        CallOutcome::Timeout,
        CallOutcome::Cancelled,
        CallOutcome::Error,
    ];

    /// The number of outcomes.
    pub const COUNT: usize = Self::ALL.len();

    /// The label value: `ok`, `tool_error`, `cache_hit`, `rejected`, `timeout`,
    /// `cancelled` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ToolError => "tool_error",
            CallOutcome::CacheHit => "cache_hit",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Error => "error",
        }
    }

    /// A dense index (`0..COUNT`), for per-outcome arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the caller got what it asked for (`ok` or `cache_hit`).
    pub fn is_success(self) -> bool {
        matches!(self, CallOutcome::Ok | CallOutcome::CacheHit)
    }

    /// The outcome of a finished call.
    pub fn of(result: &Result<CallToolResponse, ErrorData>) -> Self {
        match result {
            Ok(CallToolResponse::Complete(result)) => Self::of_result(result),
            // InputRequired or Task (or a kind a later rmcp adds): the server answered; the
            // tool's own result arrives in a later call (the retry carrying
            // `inputResponses`) or through `tasks/get`.
            Ok(_) => CallOutcome::Ok,
            Err(error) => Self::of_error(error),
        }
    }

    /// The outcome of a completed result: `cache_hit`, `tool_error` or `ok`.
    pub fn of_result(result: &CallToolResult) -> Self {
        if is_cache_hit(result) {
            CallOutcome::CacheHit
        } else if result.is_error == Some(true) {
            CallOutcome::ToolError
        } else {
            CallOutcome::Ok
        }
    }

    /// The outcome of an error: ours are told apart by [`ErrorKind::of`], anything else
    /// (the handler's own errors) is `error`.
    pub fn of_error(error: &ErrorData) -> Self {
        match ErrorKind::of(error) {
            Some(ErrorKind::Busy | ErrorKind::QueueTimeout) => CallOutcome::Rejected,
            Some(ErrorKind::TimedOut) => CallOutcome::Timeout,
            Some(ErrorKind::Cancelled) => CallOutcome::Cancelled,
            Some(ErrorKind::RetriesExhausted) if last_attempt_timed_out(error) => {
                CallOutcome::Timeout
            }
            _ => CallOutcome::Error,
        }
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_cache_hit(result: &CallToolResult) -> bool {
    mcp_tower_core::meta::is_cache_hit(result.meta.as_ref())
}

/// `RetriesExhausted` carries its last attempt's error as `data.lastError`
/// (`{"code", "message", "data"}`); rebuild enough of it to ask its kind.
fn last_attempt_timed_out(error: &ErrorData) -> bool {
    let Some(last) = error.data.as_ref().and_then(|data| data.get("lastError")) else {
        return false;
    };
    let last = ErrorData::new(error.code, String::new(), last.get("data").cloned());
    match ErrorKind::of(&last) {
        Some(ErrorKind::TimedOut) => true,
        // A retry layer inside another one: look at the innermost last attempt.
        Some(ErrorKind::RetriesExhausted) => last_attempt_timed_out(&last),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mcp_tower_core::error::{
        Busy, BusyReason, Cancelled, Layer, Panicked, QueueTimeout, RetriesExhausted, TimedOut,
        UpstreamUnavailable,
    };
    use rmcp::model::{ContentBlock, InputRequiredResult, MetaObject};
    use serde_json::json;

    use super::*;

    fn timed_out() -> ErrorData {
        TimedOut {
            layer: Layer::Timeout,
            tool: "t".into(),
            after: Duration::from_secs(1),
        }
        .into()
    }

    fn exhausted(last: ErrorData) -> ErrorData {
        RetriesExhausted {
            tool: "t".into(),
            attempts: 3,
            stopped_by: "max_attempts",
            last,
        }
        .into()
    }

    #[test]
    fn results_are_ok_tool_error_or_cache_hit() {
        let ok = CallToolResult::success(vec![ContentBlock::text("x")]);
        assert_eq!(CallOutcome::of(&Ok(ok.clone().into())), CallOutcome::Ok);
        let failed = CallToolResult::error(vec![ContentBlock::text("x")]);
        assert_eq!(CallOutcome::of(&Ok(failed.into())), CallOutcome::ToolError);

        let mut hit = ok.clone();
        hit.meta = Some(MetaObject(
            json!({CACHE_META_KEY: {"hit": true, "age_ms": 12}})
                .as_object()
                .cloned()
                .unwrap(),
        ));
        assert_eq!(CallOutcome::of(&Ok(hit.into())), CallOutcome::CacheHit);

        let mut miss = ok;
        miss.meta = Some(MetaObject(
            json!({CACHE_META_KEY: {"hit": false}})
                .as_object()
                .cloned()
                .unwrap(),
        ));
        assert_eq!(CallOutcome::of(&Ok(miss.into())), CallOutcome::Ok);
    }

    #[test]
    fn input_required_is_an_answer() {
        let response = InputRequiredResult::from_request_state("state").into();
        assert_eq!(CallOutcome::of(&Ok(response)), CallOutcome::Ok);
    }

    #[test]
    fn our_errors_map_to_their_outcomes() {
        let busy: ErrorData = Busy {
            layer: Layer::Concurrency,
            tool: None,
            reason: BusyReason::LimitReached,
            in_flight: 1,
            queued: 0,
            retry_after: Duration::from_millis(5),
        }
        .into();
        let queue: ErrorData = QueueTimeout {
            layer: Layer::Concurrency,
            tool: Some("t".into()),
            waited: Duration::from_secs(1),
            retry_after: Duration::from_millis(5),
        }
        .into();
        let upstream: ErrorData = UpstreamUnavailable {
            layer: Layer::Pool,
            upstream: "u".into(),
            reason: "refused".into(),
        }
        .into();
        let cancelled: ErrorData = Cancelled {
            layer: Layer::Retry,
            tool: "t".into(),
        }
        .into();
        let panicked: ErrorData = Panicked {
            layer: Layer::Handler,
            tool: "t".into(),
        }
        .into();
        let cases = [
            (busy, CallOutcome::Rejected),
            (queue, CallOutcome::Rejected),
            (timed_out(), CallOutcome::Timeout),
            (exhausted(timed_out()), CallOutcome::Timeout),
            (exhausted(upstream.clone()), CallOutcome::Error),
            (
                exhausted(ErrorData::internal_error("boom", None)),
                CallOutcome::Error,
            ),
            (upstream, CallOutcome::Error),
            (cancelled, CallOutcome::Cancelled),
            (panicked, CallOutcome::Error),
            (
                ErrorData::invalid_params("missing field `city`", None),
                CallOutcome::Error,
            ),
        ];
        for (error, outcome) in cases {
            assert_eq!(CallOutcome::of(&Err(error.clone())), outcome, "{error:?}");
        }
    }

    #[test]
    fn a_lookalike_last_error_is_not_a_timeout() {
        // `lastError.data` without a `layer` is someone else's data.
        let error = ErrorData::new(
            mcp_tower_core::error::codes::RETRIES_EXHAUSTED,
            "x",
            Some(json!({"layer": "retry", "kind": "retries_exhausted",
                        "lastError": {"code": 1, "message": "m", "data": {"kind": "timed_out"}}})),
        );
        assert_eq!(CallOutcome::of_error(&error), CallOutcome::Error);
    }

    #[test]
    fn labels_are_distinct_and_indices_dense() {
        let labels: std::collections::HashSet<_> =
            CallOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), CallOutcome::COUNT);
        for (i, o) in CallOutcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
