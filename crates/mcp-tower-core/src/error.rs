//! Every error a mcp-tower layer raises itself.
//!
//! Each failure is a named struct that converts into [`rmcp::ErrorData`] (a JSON-RPC error
//! an MCP client understands) with a stable code from [`codes`], a message a person can act
//! on, and `data` naming the layer:
//!
//! ```json
//! {"code": -31050, "message": "tool `search` is busy: 8 calls in flight and 64 queued; retry in 250 ms",
//!  "data": {"layer": "concurrency", "kind": "busy", "tool": "search", "retryAfterMs": 250, "transient": false}}
//! ```
//!
//! Errors from the tool itself (an `isError` result) and from the handler (invalid
//! params, unknown tool) are passed through untouched; only these are ours.

use std::{borrow::Cow, fmt, time::Duration};

use rmcp::{ErrorData, model::ErrorCode};
use serde_json::{Map, Value, json};

/// The JSON-RPC error codes of mcp-tower's own errors.
///
/// They sit **outside** the JSON-RPC reserved range `-32768..=-32000`, as JSON-RPC 2.0 and
/// the MCP specification (2026-07-28, "Error Codes") ask of implementation-defined codes:
/// the spec reserves `-32020..=-32099` for codes it defines itself (implementations MUST NOT
/// emit others there) and calls `-32000..=-32019` legacy. mcp-tower's codes are
/// `-31050..=-31059`; they are stable across releases (`docs/errors.md` lists each with its
/// `data`). Before 0.2 they were `-32050..=-32055`.
pub mod codes {
    use rmcp::model::ErrorCode;

    /// A limit is reached and the call was not queued (or the queue is full).
    pub const BUSY: ErrorCode = ErrorCode(-31050);
    /// The call waited in a queue for longer than allowed.
    pub const QUEUE_TIMEOUT: ErrorCode = ErrorCode(-31051);
    /// One attempt of the call took longer than its timeout.
    pub const TIMED_OUT: ErrorCode = ErrorCode(-31052);
    /// The upstream (MCP server, SSH host) could not be reached or went away.
    pub const UPSTREAM_UNAVAILABLE: ErrorCode = ErrorCode(-31053);
    /// Every allowed attempt failed.
    pub const RETRIES_EXHAUSTED: ErrorCode = ErrorCode(-31054);
    /// The caller cancelled the call.
    pub const CANCELLED: ErrorCode = ErrorCode(-31055);

    /// Every code mcp-tower defines, in order.
    pub const ALL: [ErrorCode; 6] = [
        BUSY,
        QUEUE_TIMEOUT,
        TIMED_OUT,
        UPSTREAM_UNAVAILABLE,
        RETRIES_EXHAUSTED,
        CANCELLED,
    ];

    /// The codes inside the reserved range that a specification defines, and so may be
    /// emitted: JSON-RPC 2.0's five (`-32700`, `-32600`, `-32601`, `-32602`, `-32603`) and
    /// MCP's (`-32002` resource not found, legacy; `-32020` header mismatch; `-32021`
    /// missing required client capability; `-32022` unsupported protocol version; `-32042`
    /// URL elicitation required).
    pub const SPEC_DEFINED: [i32; 10] = [
        -32700, -32600, -32601, -32602, -32603, -32002, -32020, -32021, -32022, -32042,
    ];

    /// Whether `code` may be emitted: outside `-32768..=-32000`, or one a specification
    /// defines there ([`SPEC_DEFINED`]).
    pub fn is_allowed(code: ErrorCode) -> bool {
        !(-32768..=-32000).contains(&code.0) || SPEC_DEFINED.contains(&code.0)
    }
}

/// The layer that raised an error (the `layer` field of its `data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layer {
    /// `mcp-tower-cache`.
    Cache,
    /// `mcp-tower-dedup`.
    Dedup,
    /// `mcp-tower-concurrency`.
    Concurrency,
    /// `mcp-tower-retry`'s retry layer.
    Retry,
    /// `mcp-tower-retry`'s per-attempt timeout.
    Timeout,
    /// `mcp-tower-metrics`.
    Metrics,
    /// `mcp-tower-pool`.
    Pool,
    /// The call to the handler itself (`HandlerService`).
    Handler,
}

impl Layer {
    /// The layer's name as it appears in `data.layer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Cache => "cache",
            Layer::Dedup => "dedup",
            Layer::Concurrency => "concurrency",
            Layer::Retry => "retry",
            Layer::Timeout => "timeout",
            Layer::Metrics => "metrics",
            Layer::Pool => "pool",
            Layer::Handler => "handler",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of one of our errors (the `kind` field of its `data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Busy`].
    Busy,
    /// [`QueueTimeout`].
    QueueTimeout,
    /// [`TimedOut`].
    TimedOut,
    /// [`UpstreamUnavailable`].
    UpstreamUnavailable,
    /// [`RetriesExhausted`].
    RetriesExhausted,
    /// [`Cancelled`].
    Cancelled,
    /// [`Panicked`].
    Panicked,
}

impl ErrorKind {
    /// The kind's name as it appears in `data.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Busy => "busy",
            ErrorKind::QueueTimeout => "queue_timeout",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::RetriesExhausted => "retries_exhausted",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Panicked => "panicked",
        }
    }

    /// The kind of `error`, if one of our layers raised it.
    pub fn of(error: &ErrorData) -> Option<ErrorKind> {
        let kind = error.data.as_ref()?.get("kind")?.as_str()?;
        let layer = error.data.as_ref()?.get("layer")?;
        layer.as_str()?;
        [
            ErrorKind::Busy,
            ErrorKind::QueueTimeout,
            ErrorKind::TimedOut,
            ErrorKind::UpstreamUnavailable,
            ErrorKind::RetriesExhausted,
            ErrorKind::Cancelled,
            ErrorKind::Panicked,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }
}

/// The marker rmcp puts in `data` when its transport closed under a request.
const RMCP_TRANSPORT_CLOSED: &str = "io.modelcontextprotocol/transportClosed";

/// Whether `error` is transient: the same call may succeed if tried again (a timeout, an
/// upstream that went away, a closed connection). Caller mistakes (invalid params, unknown
/// tool) and rejections by our own limits are not.
pub fn is_transient(error: &ErrorData) -> bool {
    if let Some(data) = error.data.as_ref() {
        if let Some(transient) = data.get("transient").and_then(Value::as_bool)
            && data.get("layer").is_some()
        {
            return transient;
        }
        if data.get(RMCP_TRANSPORT_CLOSED).is_some() {
            return true;
        }
    }
    error.code == codes::TIMED_OUT || error.code == codes::UPSTREAM_UNAVAILABLE
}

/// The key of the retry hint in an error's `data`: how many milliseconds the layer that
/// raised it expects to pass before the same call can succeed.
pub const RETRY_AFTER_MS: &str = "retryAfterMs";

/// The retry hint of `error`: its `data.retryAfterMs` (a whole number of milliseconds), if
/// it has one.
///
/// The hint is read whoever raised the error; whether the call may be repeated at all is
/// [`is_transient`]'s answer, not this one's. The retry layer waits at least this long
/// before retrying a transient error that carries it (the pool's upstream-unavailable error
/// during its `connect_backoff`, say); a client may do the same with the busy and
/// queue-timeout errors, which are not transient.
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_core::error::{Layer, UpstreamUnavailable, retry_after, with_retry_after};
///
/// let error = UpstreamUnavailable::new(Layer::Pool, "github", "connecting failed").into();
/// assert_eq!(retry_after(&error), None);
/// let error = with_retry_after(error, Duration::from_micros(999_400));
/// assert_eq!(retry_after(&error), Some(Duration::from_secs(1)), "rounded up to the ms");
/// ```
pub fn retry_after(error: &ErrorData) -> Option<Duration> {
    let ms = error.data.as_ref()?.get(RETRY_AFTER_MS)?.as_u64()?;
    Some(Duration::from_millis(ms))
}

/// `error` with the retry hint `after` in `data.retryAfterMs`, rounded up to the next whole
/// millisecond (so that a caller that waits that long does not come back a fraction of a
/// millisecond early). The message is unchanged.
///
/// An error without `data` gets an object holding the hint alone; one whose `data` is not
/// an object (a string, a number) is returned unchanged, since the hint has nowhere to go.
pub fn with_retry_after(mut error: ErrorData, after: Duration) -> ErrorData {
    let hint = Value::from(millis_ceil(after));
    match &mut error.data {
        Some(Value::Object(data)) => {
            data.insert(RETRY_AFTER_MS.into(), hint);
        }
        none @ None => *none = Some(json!({ RETRY_AFTER_MS: hint })),
        Some(_) => {}
    }
    error
}

fn data(layer: Layer, kind: ErrorKind, tool: Option<&str>, transient: bool) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("layer".into(), Value::from(layer.as_str()));
    data.insert("kind".into(), Value::from(kind.as_str()));
    if let Some(tool) = tool {
        data.insert("tool".into(), Value::from(tool));
    }
    data.insert("transient".into(), Value::from(transient));
    data
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `d` in milliseconds, rounded up.
fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Why a call was rejected as [`Busy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusyReason {
    /// Every permit is taken and queueing is off.
    LimitReached,
    /// Every permit is taken and the queue is full.
    QueueFull,
}

/// A limit is reached: the call was rejected without running. Retry after `retry_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The layer that rejected the call.
    pub layer: Layer,
    /// The tool whose limit (or `None`: the global limit) is reached.
    pub tool: Option<String>,
    /// Why.
    pub reason: BusyReason,
    /// Calls running under the exhausted limit.
    pub in_flight: usize,
    /// Calls waiting for it.
    pub queued: usize,
    /// A hint for the client: try again after this long.
    pub retry_after: Duration,
}

/// "1 call in flight", "8 calls in flight".
fn calls_in_flight(n: usize) -> String {
    if n == 1 {
        "1 call in flight".to_owned()
    } else {
        format!("{n} calls in flight")
    }
}

impl From<Busy> for ErrorData {
    fn from(e: Busy) -> Self {
        let scope = match &e.tool {
            Some(tool) => format!("tool `{tool}` is busy"),
            None => "the server is busy".to_owned(),
        };
        let why = match e.reason {
            BusyReason::LimitReached => calls_in_flight(e.in_flight),
            BusyReason::QueueFull => {
                format!("{} and {} queued", calls_in_flight(e.in_flight), e.queued)
            }
        };
        let mut data = data(e.layer, ErrorKind::Busy, e.tool.as_deref(), false);
        data.insert("retryAfterMs".into(), Value::from(millis(e.retry_after)));
        data.insert("inFlight".into(), Value::from(e.in_flight));
        data.insert("queued".into(), Value::from(e.queued));
        ErrorData::new(
            codes::BUSY,
            format!("{scope}: {why}; retry in {} ms", millis(e.retry_after)),
            Some(Value::Object(data)),
        )
    }
}

/// The call waited for a permit longer than the queue allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTimeout {
    /// The layer whose queue timed out.
    pub layer: Layer,
    /// The tool whose limit it waited for (`None`: the global one).
    pub tool: Option<String>,
    /// How long it waited.
    pub waited: Duration,
    /// A hint for the client: try again after this long.
    pub retry_after: Duration,
}

impl From<QueueTimeout> for ErrorData {
    fn from(e: QueueTimeout) -> Self {
        let what = match &e.tool {
            Some(tool) => format!("tool `{tool}`"),
            None => "the server".to_owned(),
        };
        let mut data = data(e.layer, ErrorKind::QueueTimeout, e.tool.as_deref(), false);
        data.insert("waitedMs".into(), Value::from(millis(e.waited)));
        data.insert("retryAfterMs".into(), Value::from(millis(e.retry_after)));
        ErrorData::new(
            codes::QUEUE_TIMEOUT,
            format!(
                "waited {} ms for {what} to have room and gave up; retry in {} ms",
                millis(e.waited),
                millis(e.retry_after)
            ),
            Some(Value::Object(data)),
        )
    }
}

/// One attempt took longer than its timeout and was abandoned. Transient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// The layer that enforced the timeout.
    pub layer: Layer,
    /// The tool.
    pub tool: String,
    /// The timeout.
    pub after: Duration,
}

impl From<TimedOut> for ErrorData {
    fn from(e: TimedOut) -> Self {
        let mut data = data(e.layer, ErrorKind::TimedOut, Some(&e.tool), true);
        data.insert("timeoutMs".into(), Value::from(millis(e.after)));
        ErrorData::new(
            codes::TIMED_OUT,
            format!(
                "tool `{}` timed out after {}; raise its `timeout` if it is expected to be slow",
                e.tool,
                humantime_serde::re::humantime::format_duration(e.after)
            ),
            Some(Value::Object(data)),
        )
    }
}

/// The upstream could not be reached or went away mid-call. Transient.
///
/// What a client reads is the upstream's configured name and a short, stable reason. The
/// error that caused it (an I/O error with an address, a TLS error with a host name, an SSH
/// error with a user name or a `known_hosts` path) is for the server's log only:
///
/// ```
/// use mcp_tower_core::error::{Layer, UpstreamUnavailable};
///
/// let io = std::io::Error::other("connect to 10.1.2.3:8443 refused");
/// // Logs `io` (warn, with the upstream's name); the client reads only the reason.
/// let error = UpstreamUnavailable::with_detail(Layer::Pool, "github", "connecting failed", &io);
/// let data: rmcp::ErrorData = error.into();
/// assert_eq!(data.message, "upstream `github` is unavailable: connecting failed");
/// ```
///
/// A layer that knows when the upstream may be tried again (the pool, while it backs off
/// after a failed connect) adds that as the retry hint `data.retryAfterMs` with
/// [`with_retry_after`]; the retry layer then waits at least that long before its next
/// attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUnavailable {
    /// The layer (usually the pool).
    pub layer: Layer,
    /// The upstream's configured name (never an address, a URL or a credential).
    pub upstream: String,
    /// A short, stable reason a client may read, like `"connecting failed"`: a string
    /// literal (`Cow::Borrowed`).
    ///
    /// A reason built at run time (`Cow::Owned`, such as an error's `to_string()`) may
    /// carry an address, a path or a user name, so it is never sent: the conversion into
    /// [`ErrorData`] logs it (warn, with the upstream's name) and the client reads
    /// [`UpstreamUnavailable::UNREACHABLE`] instead. Build the error with
    /// [`UpstreamUnavailable::new`] or [`UpstreamUnavailable::with_detail`].
    pub reason: Cow<'static, str>,
}

impl UpstreamUnavailable {
    /// The reason a client reads when the one given was built at run time.
    pub const UNREACHABLE: &'static str = "the upstream could not be reached";

    /// The error for upstream `upstream` (its configured name), with a short, stable
    /// `reason` for the client.
    pub fn new(layer: Layer, upstream: impl Into<String>, reason: &'static str) -> Self {
        Self {
            layer,
            upstream: upstream.into(),
            reason: Cow::Borrowed(reason),
        }
    }

    /// Like [`UpstreamUnavailable::new`], and logs `detail` (the underlying error, which may
    /// name addresses, paths or users) at warn level with the upstream's name and `reason`.
    /// The detail goes to the log only, never to the client.
    pub fn with_detail(
        layer: Layer,
        upstream: impl Into<String>,
        reason: &'static str,
        detail: &dyn fmt::Display,
    ) -> Self {
        let error = Self::new(layer, upstream, reason);
        tracing::warn!(
            layer = layer.as_str(),
            upstream = %error.upstream,
            reason,
            detail = %detail,
            "upstream unavailable"
        );
        error
    }
}

impl From<UpstreamUnavailable> for ErrorData {
    fn from(e: UpstreamUnavailable) -> Self {
        let reason = match e.reason {
            Cow::Borrowed(reason) => reason,
            Cow::Owned(detail) => {
                tracing::warn!(
                    layer = e.layer.as_str(),
                    upstream = %e.upstream,
                    detail = %detail,
                    "upstream unavailable"
                );
                UpstreamUnavailable::UNREACHABLE
            }
        };
        let mut data = data(e.layer, ErrorKind::UpstreamUnavailable, None, true);
        data.insert("upstream".into(), Value::from(e.upstream.clone()));
        ErrorData::new(
            codes::UPSTREAM_UNAVAILABLE,
            format!("upstream `{}` is unavailable: {reason}", e.upstream),
            Some(Value::Object(data)),
        )
    }
}

/// Every allowed attempt failed; `last` is the final attempt's error.
#[derive(Debug, Clone, PartialEq)]
pub struct RetriesExhausted {
    /// The tool.
    pub tool: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// Why no more were made (`max_attempts`, `budget`, `deadline`).
    pub stopped_by: &'static str,
    /// The last attempt's error.
    pub last: ErrorData,
}

impl From<RetriesExhausted> for ErrorData {
    fn from(e: RetriesExhausted) -> Self {
        let mut data = data(
            Layer::Retry,
            ErrorKind::RetriesExhausted,
            Some(&e.tool),
            false,
        );
        data.insert("attempts".into(), Value::from(e.attempts));
        data.insert("stoppedBy".into(), Value::from(e.stopped_by));
        data.insert(
            "lastError".into(),
            json!({"code": e.last.code.0, "message": e.last.message, "data": e.last.data}),
        );
        ErrorData::new(
            codes::RETRIES_EXHAUSTED,
            format!(
                "tool `{}` failed after {} attempt{} (stopped by {}): {}",
                e.tool,
                e.attempts,
                if e.attempts == 1 { "" } else { "s" },
                e.stopped_by,
                e.last.message
            ),
            Some(Value::Object(data)),
        )
    }
}

/// The caller cancelled the call while a layer held it (queued, backing off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The layer that noticed.
    pub layer: Layer,
    /// The tool.
    pub tool: String,
}

impl From<Cancelled> for ErrorData {
    fn from(e: Cancelled) -> Self {
        let data = data(e.layer, ErrorKind::Cancelled, Some(&e.tool), false);
        ErrorData::new(
            codes::CANCELLED,
            format!("call to tool `{}` was cancelled by the client", e.tool),
            Some(Value::Object(data)),
        )
    }
}

/// The tool's code panicked. Reported as an internal error; the server keeps serving.
///
/// The client reads a short, fixed reason ("the tool panicked"): a panic's message is the
/// tool's internals (an index, a path, a value it was handling, a secret in a `Debug`
/// output) and, under dedup, would reach every caller that joined the call. The message
/// goes to the server's log instead: [`Panicked::from_payload`] logs it at error level with
/// the tool's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    /// The layer that caught the panic.
    pub layer: Layer,
    /// The tool.
    pub tool: String,
}

impl Panicked {
    /// The reason a client reads.
    pub const REASON: &'static str = "the tool panicked";

    /// The error for a caught panic of tool `tool`; logs the panic's message (when its
    /// payload is a string) at error level with the tool's name and the layer. Call it once
    /// per panic: every caller that shares the call gets a clone of the error, not another
    /// log line.
    pub fn from_payload(layer: Layer, tool: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = Self::payload_message(payload).unwrap_or("(not a string)");
        tracing::error!(
            layer = layer.as_str(),
            tool,
            panic = message,
            "a tool panicked; its callers get an internal error"
        );
        Self {
            layer,
            tool: tool.to_owned(),
        }
    }

    /// A panic payload's message, when it is a string (`panic!("...")` with or without
    /// arguments).
    pub fn payload_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
        payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
    }
}

impl From<Panicked> for ErrorData {
    fn from(e: Panicked) -> Self {
        let data = data(e.layer, ErrorKind::Panicked, Some(&e.tool), false);
        ErrorData::new(
            ErrorCode::INTERNAL_ERROR,
            format!(
                "tool `{}` failed with an internal error: {}",
                e.tool,
                Panicked::REASON
            ),
            Some(Value::Object(data)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_names_its_layer_and_kind() {
        let cases: Vec<(ErrorData, ErrorKind, &str, bool)> = vec![
            (
                Busy {
                    layer: Layer::Concurrency,
                    tool: Some("search".into()),
                    reason: BusyReason::QueueFull,
                    in_flight: 8,
                    queued: 64,
                    retry_after: Duration::from_millis(250),
                }
                .into(),
                ErrorKind::Busy,
                "concurrency",
                false,
            ),
            (
                QueueTimeout {
                    layer: Layer::Concurrency,
                    tool: None,
                    waited: Duration::from_secs(5),
                    retry_after: Duration::from_millis(100),
                }
                .into(),
                ErrorKind::QueueTimeout,
                "concurrency",
                false,
            ),
            (
                TimedOut {
                    layer: Layer::Timeout,
                    tool: "slow".into(),
                    after: Duration::from_secs(30),
                }
                .into(),
                ErrorKind::TimedOut,
                "timeout",
                true,
            ),
            (
                UpstreamUnavailable {
                    layer: Layer::Pool,
                    upstream: "github".into(),
                    reason: "connection refused".into(),
                }
                .into(),
                ErrorKind::UpstreamUnavailable,
                "pool",
                true,
            ),
            (
                RetriesExhausted {
                    tool: "flaky".into(),
                    attempts: 3,
                    stopped_by: "max_attempts",
                    last: TimedOut {
                        layer: Layer::Timeout,
                        tool: "flaky".into(),
                        after: Duration::from_secs(1),
                    }
                    .into(),
                }
                .into(),
                ErrorKind::RetriesExhausted,
                "retry",
                false,
            ),
            (
                Cancelled {
                    layer: Layer::Retry,
                    tool: "x".into(),
                }
                .into(),
                ErrorKind::Cancelled,
                "retry",
                false,
            ),
            (
                Panicked {
                    layer: Layer::Dedup,
                    tool: "x".into(),
                }
                .into(),
                ErrorKind::Panicked,
                "dedup",
                false,
            ),
        ];
        let mut codes = std::collections::HashSet::new();
        for (err, kind, layer, transient) in cases {
            assert_eq!(ErrorKind::of(&err), Some(kind), "{err:?}");
            let data = err.data.as_ref().unwrap();
            assert_eq!(data["layer"], layer);
            assert_eq!(is_transient(&err), transient, "{err:?}");
            assert!(!err.message.is_empty());
            assert!(
                codes::is_allowed(err.code),
                "{:?} emits {} inside the JSON-RPC reserved range",
                kind,
                err.code.0
            );
            codes.insert(err.code.0);
        }
        assert_eq!(codes.len(), 7, "each kind has its own code");
    }

    #[test]
    fn our_codes_are_outside_the_reserved_range_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for code in codes::ALL {
            assert!(
                !(-32768..=-32000).contains(&code.0),
                "{} is in the JSON-RPC reserved range",
                code.0
            );
            assert!(codes::is_allowed(code));
            assert!(seen.insert(code.0), "{} is used twice", code.0);
        }
        // The check itself: a made-up code in the range is refused, a spec-defined one and
        // one outside the range are allowed.
        assert!(!codes::is_allowed(ErrorCode(-32050)));
        assert!(!codes::is_allowed(ErrorCode(-32000)));
        assert!(!codes::is_allowed(ErrorCode(-32768)));
        assert!(codes::is_allowed(ErrorCode::INVALID_PARAMS));
        assert!(codes::is_allowed(ErrorCode(-32042)));
        assert!(codes::is_allowed(ErrorCode(-31999)));
        assert!(codes::is_allowed(ErrorCode(-32769)));
    }

    #[test]
    fn messages_are_actionable() {
        let e: ErrorData = Busy {
            layer: Layer::Concurrency,
            tool: Some("search".into()),
            reason: BusyReason::QueueFull,
            in_flight: 8,
            queued: 64,
            retry_after: Duration::from_millis(250),
        }
        .into();
        assert_eq!(
            e.message,
            "tool `search` is busy: 8 calls in flight and 64 queued; retry in 250 ms"
        );
        let one: ErrorData = Busy {
            layer: Layer::Concurrency,
            tool: None,
            reason: BusyReason::LimitReached,
            in_flight: 1,
            queued: 0,
            retry_after: Duration::from_millis(100),
        }
        .into();
        assert_eq!(
            one.message,
            "the server is busy: 1 call in flight; retry in 100 ms"
        );
        let t: ErrorData = TimedOut {
            layer: Layer::Timeout,
            tool: "slow".into(),
            after: Duration::from_millis(1500),
        }
        .into();
        assert!(
            t.message.contains("timed out after 1s 500ms"),
            "{}",
            t.message
        );
    }

    #[test]
    fn foreign_errors_are_not_ours_and_not_transient() {
        let invalid = ErrorData::invalid_params("missing field `city`", None);
        assert_eq!(ErrorKind::of(&invalid), None);
        assert!(!is_transient(&invalid));
        // A `kind` without a `layer` is someone else's data.
        let lookalike =
            ErrorData::internal_error("x", Some(json!({"kind": "busy", "transient": true})));
        assert_eq!(ErrorKind::of(&lookalike), None);
        assert!(!is_transient(&lookalike));
        let closed =
            ErrorData::internal_error("transport closed", Some(json!({RMCP_TRANSPORT_CLOSED: 42})));
        assert!(is_transient(&closed));
    }

    #[test]
    fn panic_payloads_are_read_for_the_log_and_never_sent() {
        assert_eq!(Panicked::payload_message(&"static str"), Some("static str"));
        assert_eq!(
            Panicked::payload_message(&String::from("owned")),
            Some("owned")
        );
        assert_eq!(Panicked::payload_message(&42u32), None);
        let payload = String::from("token=hunter2-s3cr3t");
        let error: ErrorData = Panicked::from_payload(Layer::Dedup, "t", &payload).into();
        assert_eq!(
            error.message,
            "tool `t` failed with an internal error: the tool panicked"
        );
        let sent = serde_json::to_string(&error).unwrap();
        assert!(!sent.contains("hunter2"), "{sent}");
    }

    #[test]
    fn a_retry_hint_is_written_rounded_up_and_read_back() {
        let unavailable: ErrorData =
            UpstreamUnavailable::new(Layer::Pool, "github", "connecting failed").into();
        assert_eq!(retry_after(&unavailable), None);
        let hinted = with_retry_after(unavailable.clone(), Duration::from_micros(1_000_001));
        assert_eq!(hinted.data.as_ref().unwrap()[RETRY_AFTER_MS], 1001);
        assert_eq!(retry_after(&hinted), Some(Duration::from_millis(1001)));
        assert_eq!(
            hinted.message, unavailable.message,
            "the message is unchanged"
        );
        assert!(is_transient(&hinted), "still transient");
        assert_eq!(ErrorKind::of(&hinted), Some(ErrorKind::UpstreamUnavailable));
        let exact = with_retry_after(unavailable, Duration::from_millis(250));
        assert_eq!(retry_after(&exact), Some(Duration::from_millis(250)));

        // Busy's own hint is read the same way.
        let busy: ErrorData = Busy {
            layer: Layer::Concurrency,
            tool: None,
            reason: BusyReason::LimitReached,
            in_flight: 1,
            queued: 0,
            retry_after: Duration::from_millis(100),
        }
        .into();
        assert_eq!(retry_after(&busy), Some(Duration::from_millis(100)));

        // Someone else's error: no data gets an object, non-object data is left alone.
        let bare = with_retry_after(
            ErrorData::internal_error("x", None),
            Duration::from_millis(5),
        );
        assert_eq!(bare.data, Some(json!({"retryAfterMs": 5})));
        let text = with_retry_after(
            ErrorData::internal_error("x", Some(json!("text"))),
            Duration::from_millis(5),
        );
        assert_eq!(text.data, Some(json!("text")));
        assert_eq!(retry_after(&text), None);
        let not_a_number = ErrorData::internal_error("x", Some(json!({"retryAfterMs": "soon"})));
        assert_eq!(retry_after(&not_a_number), None);
    }

    #[test]
    fn an_upstream_error_built_at_run_time_is_never_sent() {
        let literal: ErrorData =
            UpstreamUnavailable::new(Layer::Pool, "github", "connecting timed out").into();
        assert_eq!(
            literal.message,
            "upstream `github` is unavailable: connecting timed out"
        );
        let detail = std::io::Error::other("connect to 10.9.8.7:22 as deploy refused");
        let with_detail: ErrorData =
            UpstreamUnavailable::with_detail(Layer::Pool, "github", "connecting failed", &detail)
                .into();
        // A reason formatted at run time (an error's text) is replaced, whoever built it.
        let owned: ErrorData = UpstreamUnavailable {
            layer: Layer::Pool,
            upstream: "github".into(),
            reason: detail.to_string().into(),
        }
        .into();
        assert_eq!(
            owned.message,
            "upstream `github` is unavailable: the upstream could not be reached"
        );
        for error in [with_detail, owned] {
            let sent = serde_json::to_string(&error).unwrap();
            assert!(
                !sent.contains("10.9.8.7") && !sent.contains("deploy"),
                "{sent}"
            );
            assert!(is_transient(&error));
        }
    }
}
