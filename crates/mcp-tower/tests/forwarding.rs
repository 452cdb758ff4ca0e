//! `LayeredServer` forwards every `ServerHandler` method but `call_tool` to the handler.
//!
//! Two checks:
//! 1. The list of methods `LayeredServer` implements equals the list of methods of rmcp's
//!    `ServerHandler` trait, read from the rmcp source in use (so an rmcp upgrade that adds a
//!    method fails this test until the method is forwarded).
//! 2. Each method, called on a `LayeredServer` with a real rmcp request context, reaches the
//!    handler and returns exactly what the handler returned.
#![allow(deprecated, clippy::unwrap_used)]

use std::{
    borrow::Cow,
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use mcp_tower::McpStack;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, ServiceExt,
    model::*,
    service::{NotificationContext, RequestContext},
};

/// The names of the functions declared between `start` and the end of its brace block.
fn fn_names(source: &str, start: &str) -> BTreeSet<String> {
    let begin = source
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not found"));
    let body = &source[begin..];
    let open = body.find('{').unwrap();
    let mut depth = 0usize;
    let mut end = body.len();
    for (i, c) in body[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = open + i;
                    break;
                }
            }
            _ => {}
        }
    }
    let block = &body[open..end];
    let mut names = BTreeSet::new();
    let mut rest = block;
    while let Some(i) = rest.find("fn ") {
        let preceded_ok = i == 0
            || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        let after = &rest[i + 3..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if preceded_ok
            && after[name.len()..].trim_start().starts_with(['(', '<'])
            && !name.is_empty()
        {
            names.insert(name);
        }
        rest = &rest[i + 3..];
    }
    names
}

fn rmcp_source_dir() -> std::path::PathBuf {
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-vV")
            .output()
            .expect("rustc -vV");
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    let host = rustc
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host triple");
    // Only the host's packages: they are all downloaded already, so this works offline.
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rmcp = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rmcp")
        .expect("rmcp in the dependency graph");
    std::path::Path::new(rmcp["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn layered_server_implements_every_method_of_the_trait() {
    let rmcp_server =
        std::fs::read_to_string(rmcp_source_dir().join("src/handler/server.rs")).unwrap();
    let trait_methods = fn_names(&rmcp_server, "macro_rules! server_handler_methods");
    assert!(
        trait_methods.len() > 30
            && trait_methods.contains("call_tool")
            && trait_methods.contains("list_tools"),
        "could not read rmcp's trait: {trait_methods:?}"
    );
    let ours = fn_names(
        include_str!("../src/layered.rs"),
        "impl<H, S> ServerHandler for LayeredServer<H, S>",
    );
    let missing: Vec<_> = trait_methods.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&trait_methods).collect();
    assert!(
        missing.is_empty(),
        "LayeredServer does not forward: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "LayeredServer defines methods rmcp does not have: {extra:?}"
    );
}

/// A handler that records every method called and answers with a marker error, so the test
/// can tell the answer came from it.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<&'static str>>>,
    request_cx: Arc<Mutex<Option<RequestContext<RoleServer>>>>,
    notification_cx: Arc<Mutex<Option<NotificationContext<RoleServer>>>>,
}

impl Recorder {
    fn record(&self, name: &'static str) {
        self.calls.lock().unwrap().push(name);
    }
    fn marker(&self, name: &'static str) -> McpError {
        self.record(name);
        McpError::internal_error(format!("from handler: {name}"), None)
    }
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl ServerHandler for Recorder {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("recorder")
    }
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&[ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2025_06_18])
    }
    fn negotiate_initialize(
        &self,
        request: &InitializeRequestParams,
    ) -> Result<InitializeResult, McpError> {
        self.record("negotiate_initialize");
        let mut info = self.get_info();
        info.protocol_version = request.protocol_version.clone();
        Ok(info)
    }
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        self.record("initialize");
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.record("list_tools");
        *self.request_cx.lock().unwrap() = Some(context);
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("t", "a tool", rmcp::object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(true)),
        ]))
    }
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.record("on_initialized");
        *self.notification_cx.lock().unwrap() = Some(context);
    }
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.record("call_tool");
        // The context reaches the handler: the same request id rmcp assigned, a live token.
        assert!(!context.ct.is_cancelled());
        Ok(
            CallToolResult::success(vec![ContentBlock::text(format!("ran {}", request.name))])
                .into(),
        )
    }
    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.record("get_tool");
        (name == "t").then(|| Tool::new("t", "a tool", rmcp::object!({"type": "object"})))
    }
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.record("accepted_subscription_filter");
        Some(requested.clone())
    }
    async fn ping(&self, _: RequestContext<RoleServer>) -> Result<(), McpError> {
        Err(self.marker("ping"))
    }
    async fn discover(&self, _: RequestContext<RoleServer>) -> Result<DiscoverResult, McpError> {
        Err(self.marker("discover"))
    }
    async fn complete(
        &self,
        _: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        Err(self.marker("complete"))
    }
    async fn set_level(
        &self,
        _: SetLevelRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Err(self.marker("set_level"))
    }
    async fn get_prompt(
        &self,
        _: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        Err(self.marker("get_prompt"))
    }
    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Err(self.marker("list_prompts"))
    }
    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Err(self.marker("list_resources"))
    }
    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Err(self.marker("list_resource_templates"))
    }
    async fn read_resource(
        &self,
        _: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        Err(self.marker("read_resource"))
    }
    async fn subscribe(
        &self,
        _: SubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Err(self.marker("subscribe"))
    }
    async fn unsubscribe(
        &self,
        _: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Err(self.marker("unsubscribe"))
    }
    async fn on_custom_request(
        &self,
        _: CustomRequest,
        _: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        Err(self.marker("on_custom_request"))
    }
    async fn on_cancelled(
        &self,
        _: CancelledNotificationParam,
        _: NotificationContext<RoleServer>,
    ) {
        self.record("on_cancelled");
    }
    async fn on_progress(&self, _: ProgressNotificationParam, _: NotificationContext<RoleServer>) {
        self.record("on_progress");
    }
    async fn on_roots_list_changed(&self, _: NotificationContext<RoleServer>) {
        self.record("on_roots_list_changed");
    }
    async fn on_custom_notification(
        &self,
        _: CustomNotification,
        _: NotificationContext<RoleServer>,
    ) {
        self.record("on_custom_notification");
    }
    async fn get_task(
        &self,
        _: GetTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Err(self.marker("get_task"))
    }
    async fn update_task(
        &self,
        _: UpdateTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Err(self.marker("update_task"))
    }
    async fn cancel_task(
        &self,
        _: CancelTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Err(self.marker("cancel_task"))
    }
    async fn list_skills(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListSkillsResult, McpError> {
        Err(self.marker("list_skills"))
    }
    async fn get_skill(
        &self,
        _: GetSkillRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetSkillResult, McpError> {
        Err(self.marker("get_skill"))
    }
    async fn read_resource_directory(
        &self,
        _: ReadResourceDirectoryRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceDirectoryResult, McpError> {
        Err(self.marker("read_resource_directory"))
    }
}

fn marker_of<T: std::fmt::Debug>(result: Result<T, McpError>) -> String {
    result
        .expect_err("the handler's marker error")
        .message
        .into_owned()
}

#[tokio::test]
async fn every_method_reaches_the_handler_with_its_context() {
    let recorder = Recorder::default();
    let layered = McpStack::with_defaults().unwrap().serve(recorder.clone());

    // A real session over an in-memory pipe gives us real contexts.
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn({
        let layered = layered.clone();
        async move { layered.serve(server_io).await.unwrap().waiting().await }
    });
    let client = ().serve(client_io).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    let result = client
        .call_tool(CallToolRequestParams::new("t").with_arguments(rmcp::object!({})))
        .await
        .unwrap();
    assert_eq!(result.content[0].as_text().unwrap().text, "ran t");
    let seen = recorder.take();
    for expected in [
        "initialize",
        "negotiate_initialize",
        "list_tools",
        "call_tool",
    ] {
        assert!(seen.contains(&expected), "{expected} not seen in {seen:?}");
    }
    // The initialized notification is handled concurrently with the first requests.
    tokio::task::yield_now().await;

    let cx = recorder.request_cx.lock().unwrap().clone().unwrap();
    let ncx = loop {
        if let Some(ncx) = recorder.notification_cx.lock().unwrap().clone() {
            break ncx;
        }
        tokio::task::yield_now().await;
    };
    recorder.take();

    macro_rules! check {
        ($name:literal, $call:expr) => {{
            let got = marker_of($call.await);
            assert_eq!(got, concat!("from handler: ", $name));
            assert_eq!(recorder.take(), vec![$name]);
        }};
    }
    check!("ping", layered.ping(cx.clone()));
    check!("discover", layered.discover(cx.clone()));
    check!(
        "complete",
        layered.complete(
            CompleteRequestParams::new(Reference::for_prompt("p"), ArgumentInfo::new("a", "b")),
            cx.clone()
        )
    );
    check!(
        "set_level",
        layered.set_level(SetLevelRequestParams::new(LoggingLevel::Info), cx.clone())
    );
    check!(
        "get_prompt",
        layered.get_prompt(GetPromptRequestParams::new("p"), cx.clone())
    );
    check!("list_prompts", layered.list_prompts(None, cx.clone()));
    check!("list_resources", layered.list_resources(None, cx.clone()));
    check!(
        "list_resource_templates",
        layered.list_resource_templates(None, cx.clone())
    );
    check!(
        "read_resource",
        layered.read_resource(ReadResourceRequestParams::new("file:///x"), cx.clone())
    );
    check!(
        "subscribe",
        layered.subscribe(SubscribeRequestParams::new("file:///x"), cx.clone())
    );
    check!(
        "unsubscribe",
        layered.unsubscribe(UnsubscribeRequestParams::new("file:///x"), cx.clone())
    );
    check!(
        "on_custom_request",
        layered.on_custom_request(CustomRequest::new("x/y", None), cx.clone())
    );
    check!(
        "get_task",
        layered.get_task(GetTaskParams::new("t1"), cx.clone())
    );
    check!(
        "update_task",
        layered.update_task(UpdateTaskParams::new("t1", Default::default()), cx.clone())
    );
    check!(
        "cancel_task",
        layered.cancel_task(CancelTaskParams::new("t1"), cx.clone())
    );
    check!("list_skills", layered.list_skills(None, cx.clone()));
    check!(
        "get_skill",
        layered.get_skill(GetSkillRequestParams::new("skill://x/SKILL.md"), cx.clone())
    );
    check!(
        "read_resource_directory",
        layered.read_resource_directory(
            ReadResourceDirectoryRequestParams::new("file:///d"),
            cx.clone()
        )
    );

    layered
        .on_cancelled(
            CancelledNotificationParam::new(Some(RequestId::Number(1)), None),
            ncx.clone(),
        )
        .await;
    layered
        .on_progress(
            ProgressNotificationParam::new(ProgressToken(NumberOrString::Number(1)), 0.5),
            ncx.clone(),
        )
        .await;
    layered.on_roots_list_changed(ncx.clone()).await;
    layered
        .on_custom_notification(CustomNotification::new("x/n", None), ncx.clone())
        .await;
    layered.on_initialized(ncx.clone()).await;
    assert_eq!(
        recorder.take(),
        vec![
            "on_cancelled",
            "on_progress",
            "on_roots_list_changed",
            "on_custom_notification",
            "on_initialized"
        ]
    );

    // The context-free methods.
    assert_eq!(layered.get_info().instructions.as_deref(), Some("recorder"));
    assert_eq!(
        layered.supported_protocol_versions().as_ref(),
        &[ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2025_06_18]
    );
    assert!(layered.get_tool("t").is_some());
    assert!(layered.get_tool("nope").is_none());
    let filter = SubscriptionFilter::default();
    assert_eq!(layered.accepted_subscription_filter(&filter), Some(filter));
    let init =
        InitializeRequestParams::new(ClientCapabilities::default(), Implementation::new("c", "1"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18);
    assert_eq!(
        layered
            .negotiate_initialize(&init)
            .unwrap()
            .protocol_version,
        ProtocolVersion::V_2025_06_18
    );
    assert_eq!(
        recorder.take(),
        vec![
            "get_tool",
            "get_tool",
            "accepted_subscription_filter",
            "negotiate_initialize"
        ]
    );

    client.cancel().await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn tool_lists_feed_the_policy_table() {
    let recorder = Recorder::default();
    let layered = McpStack::with_defaults().unwrap().serve(recorder.clone());
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn({
        let layered = layered.clone();
        async move { layered.serve(server_io).await.unwrap().waiting().await }
    });
    let client = ().serve(client_io).await.unwrap();
    let policies = layered.resolver().policies();
    assert!(policies.get("t").is_none());
    client.list_all_tools().await.unwrap();
    assert!(
        policies.get("t").unwrap().cacheable(),
        "read-only tool from tools/list is known"
    );
    client.cancel().await.unwrap();
}
