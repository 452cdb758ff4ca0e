//! The conformance server, bare and behind `McpStack`, driven by rmcp's own client over
//! streamable HTTP on both lifecycles: a 2025-11-25 session (server-to-client requests) and
//! the 2026-07-28 stateless protocol (input-required results). Both servers must answer
//! alike — the official suite (`.ci/conformance.sh`) checks the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The client answers sampling and roots requests, which rmcp marks deprecated (SEP-2577).
#![allow(deprecated)]

use std::time::Duration;

use mcp_tower::{McpStack, StackConfig};
use mcp_tower_examples::{conformance::Conformance, serve};
use rmcp::{
    ClientHandler, ErrorData as McpError, RoleClient, ServiceError,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
        CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
        ElicitationAction, ErrorCode, GetPromptRequestParams, Implementation, ListRootsResult,
        ProtocolVersion, ReadResourceRequestParams, ResourceContents,
        ResourceUpdatedNotificationParam, Root, SamplingMessage, ServerNotification,
        SubscribeRequestParams, SubscriptionFilter,
    },
    object,
    service::{
        ClientLifecycleMode, ClientServiceExt, NotificationContext, RequestContext, RunningService,
    },
    transport::StreamableHttpClientTransport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A bound on every wait: generous, so it only trips on a hang.
const HANG: Duration = Duration::from_secs(30);

/// Serves the conformance handler (bare or through the default stack) on a free port.
async fn start(bare: bool) -> (String, CancellationToken) {
    let shutdown = CancellationToken::new();
    let handler = Conformance::new().unwrap();
    let router = if bare {
        serve::mcp_router(handler, &shutdown)
    } else {
        let stack = McpStack::from_config(StackConfig::default()).unwrap();
        serve::mcp_router(stack.serve(handler), &shutdown)
    };
    let url = serve::serve_loopback(router, &shutdown).await.unwrap();
    (url, shutdown)
}

/// A client that can answer sampling, elicitation and roots requests, and reports the
/// `notifications/resources/updated` it receives.
#[derive(Clone)]
struct AnsweringClient {
    config: ClientConfig,
    updates: mpsc::UnboundedSender<String>,
}

impl AnsweringClient {
    fn new(version: ProtocolVersion) -> (Self, mpsc::UnboundedReceiver<String>) {
        let capabilities = ClientCapabilities::builder()
            .enable_sampling()
            .enable_elicitation()
            .enable_roots()
            .build();
        let (updates, received) = mpsc::unbounded_channel();
        let client = Self {
            config: ClientConfig::new(capabilities, Implementation::new("tests", "1.0"))
                .with_protocol_version(version),
            updates,
        };
        (client, received)
    }
}

impl ClientHandler for AnsweringClient {
    fn get_info(&self) -> ClientConfig {
        self.config.clone()
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        let _ = self.updates.send(params.uri);
    }

    async fn create_message(
        &self,
        _params: CreateMessageRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text("Paris"),
            "test-model".into(),
        ))
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        Ok(
            ElicitResult::new(ElicitationAction::Accept).with_content(serde_json::json!({
                "name": "Ada", "username": "ada", "email": "ada@example.com", "color": "green"
            })),
        )
    }

    async fn list_roots(
        &self,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, McpError> {
        Ok(ListRootsResult::new(vec![Root::new("file:///work")]))
    }
}

/// Connects with the lifecycle of `handler`'s protocol version: the `initialize` handshake
/// up to 2025-11-25, `server/discover` and per-request metadata from 2026-07-28.
async fn connect<H: ClientHandler>(url: &str, handler: H) -> RunningService<RoleClient, H> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    let version = handler.get_info().protocol_version;
    let lifecycle = if version.has_initialize() {
        ClientLifecycleMode::Initialize
    } else {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![version],
        }
    };
    tokio::time::timeout(HANG, handler.serve_with_lifecycle(transport, lifecycle))
        .await
        .expect("connect hung")
        .expect("connect")
}

fn params(tool: &'static str) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(object!({}))
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn error_code(error: ServiceError) -> ErrorCode {
    match error {
        ServiceError::McpError(e) => e.code,
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

/// What every client sees, whatever the lifecycle.
async fn common_tour<H: ClientHandler>(client: &RunningService<RoleClient, H>) {
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools[0].name, "test_simple_text");
    let hints = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        tool.annotations
            .clone()
            .map(|a| (a.read_only_hint, a.destructive_hint))
    };
    assert_eq!(hints("test_simple_text"), Some((Some(true), None)));
    assert_eq!(hints("test_sampling"), None);
    assert_eq!(
        hints("test_trigger_tool_change"),
        Some((Some(false), Some(true)))
    );

    let simple = client.call_tool(params("test_simple_text")).await.unwrap();
    assert_eq!(text(&simple), "This is a simple text response for testing.");
    // Twice: the second may come from the stack's cache and must look the same.
    let again = client.call_tool(params("test_simple_text")).await.unwrap();
    assert_eq!(text(&again), text(&simple));

    let failing = client
        .call_tool(params("test_error_handling"))
        .await
        .unwrap();
    assert_eq!(failing.is_error, Some(true));
    assert!(text(&failing).contains("intentionally returns an error"));

    let unknown = client.call_tool(params("no_such_tool")).await.unwrap_err();
    assert_eq!(error_code(unknown), ErrorCode::INVALID_PARAMS);

    let data = client
        .read_resource(ReadResourceRequestParams::new("test://template/42/data"))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents { text, .. } = &data.contents[0] else {
        panic!("expected text contents");
    };
    assert!(text.contains("Data for ID: 42"), "{text}");

    let missing_argument = client
        .get_prompt(
            GetPromptRequestParams::new("test_prompt_with_arguments")
                .with_arguments(object!({ "arg1": "hello" })),
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(missing_argument), ErrorCode::INVALID_PARAMS);
}

/// 2025-11-25: a session; interactive tools send requests to the client.
async fn session_tour(url: &str) {
    let (handler, mut updates) = AnsweringClient::new(ProtocolVersion::V_2025_11_25);
    let client = connect(url, handler).await;
    common_tour(&client).await;

    // A subscriber hears about the watched resource's changes.
    client
        .subscribe(SubscribeRequestParams::new("test://watched-resource"))
        .await
        .unwrap();
    client
        .call_tool(params("test_update_watched_resource"))
        .await
        .unwrap();
    assert_eq!(updates.recv().await.unwrap(), "test://watched-resource");
    let unknown = client
        .subscribe(SubscribeRequestParams::new("test://nowhere"))
        .await
        .unwrap_err();
    assert_eq!(error_code(unknown), ErrorCode::RESOURCE_NOT_FOUND);

    let sampled = client
        .call_tool(params("test_sampling").with_arguments(object!({ "prompt": "Capital?" })))
        .await
        .unwrap();
    assert_eq!(text(&sampled), "LLM response: Paris");
    let elicited = client
        .call_tool(params("test_elicitation").with_arguments(object!({ "message": "Who?" })))
        .await
        .unwrap();
    assert!(
        text(&elicited).starts_with("User response: action=accept"),
        "{}",
        text(&elicited)
    );

    let missing = client
        .read_resource(ReadResourceRequestParams::new("test://nowhere"))
        .await
        .unwrap_err();
    assert_eq!(error_code(missing), ErrorCode::RESOURCE_NOT_FOUND);
    client.cancel().await.unwrap();
}

/// 2026-07-28: stateless; interactive tools answer with input-required results, which
/// rmcp's client fulfils and retries.
async fn stateless_tour(url: &str) {
    let (handler, _updates) = AnsweringClient::new(ProtocolVersion::V_2026_07_28);
    let client = connect(url, handler).await;
    common_tour(&client).await;

    // subscriptions/listen: the accepted filter, then only the notifications asked for.
    let mut filter = SubscriptionFilter::new();
    filter.tools_list_changed = Some(true);
    filter.resource_subscriptions = Some(vec![
        "test://watched-resource".into(),
        "test://nowhere".into(),
    ]);
    let mut subscription = client.listen(filter).await.unwrap();
    assert_eq!(
        subscription.acknowledged().resource_subscriptions,
        Some(vec!["test://watched-resource".to_owned()])
    );
    client
        .call_tool(params("test_trigger_prompt_change"))
        .await
        .unwrap();
    client
        .call_tool(params("test_update_watched_resource"))
        .await
        .unwrap();
    client
        .call_tool(params("test_trigger_tool_change"))
        .await
        .unwrap();
    let first = subscription.next().await.unwrap().unwrap();
    assert!(
        matches!(&first, ServerNotification::ResourceUpdatedNotification(n) if n.params.uri == "test://watched-resource"),
        "{first:?}"
    );
    let second = subscription.next().await.unwrap().unwrap();
    assert!(
        matches!(second, ServerNotification::ToolListChangedNotification(_)),
        "the prompt change was not asked for: {second:?}"
    );
    drop(subscription);

    let all = client
        .call_tool(params("test_input_required_result_multiple_inputs"))
        .await
        .unwrap();
    assert!(text(&all).contains("Ada"), "{}", text(&all));
    let sampled = client
        .call_tool(params("test_sampling").with_arguments(object!({ "prompt": "Capital?" })))
        .await
        .unwrap();
    assert_eq!(text(&sampled), "LLM response: Paris");

    // A tampered requestState is refused, not trusted.
    let first = client
        .call_tool_once(params("test_input_required_result_tampered_state"))
        .await
        .unwrap();
    let CallToolResponse::InputRequired(first) = first else {
        panic!("expected an input-required result, got {first:?}");
    };
    let mut retry = params("test_input_required_result_tampered_state");
    retry.input_responses = Some(
        [(
            "confirm".to_owned(),
            serde_json::json!({ "action": "accept", "content": { "ok": true } }),
        )]
        .into(),
    );
    retry.request_state = Some(format!("{}x", first.request_state.unwrap()));
    let tampered = client.call_tool_once(retry).await.unwrap_err();
    assert_eq!(error_code(tampered), ErrorCode::INVALID_PARAMS);

    let missing = client
        .read_resource(ReadResourceRequestParams::new("test://nowhere"))
        .await
        .unwrap_err();
    assert_eq!(error_code(missing), ErrorCode::INVALID_PARAMS);
    client.cancel().await.unwrap();

    // A client that declared no capability is told what it lacks (-32021).
    let plain = ClientConfig::new(ClientCapabilities::default(), Implementation::new("t", "1"))
        .with_protocol_version(ProtocolVersion::V_2026_07_28);
    let client = connect(url, plain).await;
    let refused = client
        .call_tool(params("test_missing_capability"))
        .await
        .unwrap_err();
    assert_eq!(
        error_code(refused),
        ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bare_server_on_both_lifecycles() {
    let (url, shutdown) = start(true).await;
    tokio::time::timeout(HANG, async {
        session_tour(&url).await;
        stateless_tour(&url).await;
    })
    .await
    .expect("the tour hung");
    shutdown.cancel();
}

#[tokio::test]
async fn layered_server_on_both_lifecycles() {
    let (url, shutdown) = start(false).await;
    tokio::time::timeout(HANG, async {
        session_tour(&url).await;
        stateless_tour(&url).await;
    })
    .await
    .expect("the tour hung");
    shutdown.cancel();
}
