//! [`call_many`]: a batch of tool calls with bounded parallelism, results in order (the
//! batch call of MCPStore).

use futures_util::{StreamExt, stream};
use mcp_tower_core::{CallToolResponse, ToolCall};
use rmcp::ErrorData;
use tower_service::Service;

/// Runs `calls` through `service`, at most `max_parallel` at once (`0` counts as `1`), and
/// returns their results in the order of `calls`.
///
/// The calls run on the caller's task (nothing is spawned), so rmcp's request-scoped state
/// and cancellation reach each of them; a failed call does not stop the others.
///
/// ```
/// use mcp_tower_core::{ToolCall, testing::ScriptedService};
/// use mcp_tower_pool::call_many;
/// use rmcp::{model::CallToolResponse, object};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ScriptedService::new();
/// let calls = (0..5).map(|i| ToolCall::new("echo", object!({ "i": i })));
/// let results = call_many(&service, calls, 2).await;
/// assert_eq!(results.len(), 5);
/// let CallToolResponse::Complete(third) = results[2].as_ref().unwrap() else { panic!() };
/// assert_eq!(third.structured_content.as_ref().unwrap()["arguments"]["i"], 2);
/// assert!(service.max_in_flight() <= 2);
/// # }
/// ```
pub async fn call_many<S>(
    service: &S,
    calls: impl IntoIterator<Item = ToolCall>,
    max_parallel: usize,
) -> Vec<Result<CallToolResponse, ErrorData>>
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone,
{
    stream::iter(calls)
        .map(|call| {
            let mut service = service.clone();
            async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(call).await
            }
        })
        .buffered(max_parallel.max(1))
        .collect()
        .await
}
