//! The retry and timeout layers behind a real rmcp server, driven by a real rmcp client
//! over an in-memory pipe: a retried call reaches the client as a success, and the
//! client's `notifications/cancelled` (sent when it drops its request) ends a backoff.

mod fixtures;

use std::{sync::Arc, time::Duration};

use fixtures::*;
use mcp_tower_core::{
    CallResolver, ToolCall,
    error::codes,
    testing::{Outcome, ScriptedService},
};
use mcp_tower_retry::{Retry, RetryConfig, RetryHandle, RetryLayer, Timeout, TimeoutLayer};
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt as _,
    model::{CallToolRequestParams, CallToolResponse, ServerCapabilities, ServerConfig},
    object,
    service::RequestContext,
};
use tokio::sync::mpsc;
use tower::{ServiceBuilder, ServiceExt as _};

const WAIT: Duration = Duration::from_secs(10);

/// A server whose `call_tool` goes through `Retry → Timeout → ScriptedService`, and
/// reports every call's outcome on a channel.
#[derive(Clone)]
struct Layered {
    stack: Retry<Timeout<ScriptedService>>,
    resolver: Arc<CallResolver>,
    outcomes: mpsc::UnboundedSender<Result<CallToolResponse, ErrorData>>,
}

impl ServerHandler for Layered {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = ToolCall::from_request(request, Some(context), Arc::clone(&self.resolver));
        let outcome = self.stack.clone().oneshot(call).await;
        let _ = self.outcomes.send(outcome.clone());
        outcome
    }
}

struct Session {
    client: rmcp::service::RunningService<rmcp::RoleClient, ()>,
    inner: ScriptedService,
    handle: RetryHandle,
    outcomes: mpsc::UnboundedReceiver<Result<CallToolResponse, ErrorData>>,
}

async fn session(inner: ScriptedService, config: RetryConfig) -> Session {
    let retry = RetryLayer::new(config).expect("valid config");
    let handle = retry.handle();
    let stack = ServiceBuilder::new()
        .layer(retry)
        .layer(TimeoutLayer::default())
        .service(inner.clone());
    let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
    let server = Layered {
        stack,
        resolver: resolver(),
        outcomes: outcomes_tx,
    };
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await.expect("client connects");
    Session {
        client,
        inner,
        handle,
        outcomes,
    }
}

fn request(tool: &'static str) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(object!({"city": "Oslo"}))
}

#[tokio::test]
async fn a_retried_call_reaches_the_client_as_a_success() {
    let inner = ScriptedService::new();
    inner.push_for(READ, Outcome::error(upstream_down()));
    let mut s = session(
        inner,
        RetryConfig::default().with_base_delay(Duration::from_millis(1)),
    )
    .await;
    let result = s.client.call_tool(request(READ)).await.unwrap();
    assert_ne!(result.is_error, Some(true));
    assert_eq!(result.structured_content.unwrap()["execution"], 2);
    assert_eq!(s.inner.calls(), 2);
    assert!(s.outcomes.recv().await.unwrap().is_ok());
    assert_eq!(s.handle.stats().recovered, 1);
}

#[tokio::test]
async fn the_clients_cancellation_ends_a_backoff() {
    let hour = Duration::from_secs(3600);
    let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let mut s = session(
        inner,
        RetryConfig::default()
            .with_base_delay(hour)
            .with_max_delay(hour)
            .with_deadline(hour * 10),
    )
    .await;

    let peer = s.client.peer().clone();
    let pending = tokio::spawn(async move { peer.call_tool(request(READ)).await });
    // Wait (without sleeping) until the call is in its hour-long backoff.
    tokio::time::timeout(WAIT, async {
        while s.handle.stats().backing_off == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the call reaches its backoff");
    assert_eq!(s.inner.calls(), 1);

    // The client gives up: rmcp sends `notifications/cancelled` for the request.
    pending.abort();
    let outcome = tokio::time::timeout(WAIT, s.outcomes.recv())
        .await
        .expect("the backoff ended well before its hour")
        .unwrap();
    let error = outcome.unwrap_err();
    assert_eq!(error.code, codes::CANCELLED);
    assert_eq!(s.inner.calls(), 1, "no attempt after the cancellation");
    let stats = s.handle.stats();
    assert_eq!(
        (stats.cancelled, stats.backing_off, stats.retries),
        (1, 0, 0)
    );

    // The session is still usable.
    let _ = s.client.call_tool(request(PLAIN)).await;
    assert_eq!(s.inner.calls_for_tool(PLAIN), 1);
}
