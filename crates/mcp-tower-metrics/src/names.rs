//! The names of the metrics this crate records, and their help texts.

use metrics::{Level, Metadata};

/// `mcp_tool_calls_total{tool,outcome}`: tool calls by outcome (counter).
pub const CALLS_TOTAL: &str = "mcp_tool_calls_total";
/// `mcp_tool_call_duration_seconds{tool,outcome}`: time from receiving a call to its
/// answer (histogram).
pub const CALL_DURATION_SECONDS: &str = "mcp_tool_call_duration_seconds";
/// `mcp_tool_calls_in_flight{tool}`: calls being handled now (gauge).
pub const CALLS_IN_FLIGHT: &str = "mcp_tool_calls_in_flight";
/// The `tool` label of calls to tools the policy table does not know. (A real tool named
/// `unknown` shares its series.)
pub const UNKNOWN_TOOL: &str = "unknown";

pub(crate) const CALLS_TOTAL_HELP: &str = "Tool calls, by tool and outcome (ok, tool_error, cache_hit, rejected, timeout, cancelled, error).";
pub(crate) const CALL_DURATION_HELP: &str =
    "Seconds from receiving a tool call to its answer, by tool and outcome.";
pub(crate) const CALLS_IN_FLIGHT_HELP: &str = "Tool calls being handled now, by tool.";

/// The metadata handed to the recorder with every registration.
pub(crate) static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Names a [`LayerReport`](mcp_tower_core::LayerReport) may not use: this crate records
/// them itself, and a second `# TYPE` line would make the exposition invalid.
pub(crate) const RESERVED: [&str; 3] = [CALLS_TOTAL, CALL_DURATION_SECONDS, CALLS_IN_FLIGHT];
