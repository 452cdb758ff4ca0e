//! The conformance server's handler: everything the server scenarios of the official MCP
//! conformance suite (`@modelcontextprotocol/conformance`) call, written from the
//! scenarios' own expectations.
//!
//! - **tools**: text, image, audio, embedded-resource and mixed content; a tool error;
//!   logging and progress notifications; sampling and elicitation (as server-to-client
//!   requests on 2025 sessions, as input-required results on the 2026-07-28 stateless
//!   protocol); JSON Schema 2020-12 keywords; an `x-mcp-header` parameter (SEP-2243);
//!   list-change triggers; the SEP-2322 multi-round-trip flows (`test_input_required_result_*`);
//! - **resources**: static text and binary, a template, subscriptions (legacy
//!   `resources/subscribe` and 2026 `subscriptions/listen`), not-found errors;
//! - **prompts**: simple, with arguments, with an embedded resource or an image, and one that
//!   asks for input first; **completion**; **logging** levels (per session, or per request
//!   on 2026-07-28).
//!
//! The binary (`conformance --http 127.0.0.1:0 [--bare]`) serves it through the full
//! `McpStack`, or bare; `.ci/conformance.sh` runs the suite against both and compares. The
//! tools carry honest MCP annotations (see `fixtures`), so the stack's layers really act on
//! them: pure tools are cacheable and shareable, interactive ones are left alone.

// The suite still tests sampling, roots and logging, which rmcp marks deprecated (SEP-2577).
#![allow(deprecated)]

mod fixtures;
mod input_required;

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
        CompleteRequestParams, CompleteResult, CompletionInfo, ContentBlock,
        CreateMessageRequestParams, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
        Implementation, InputRequest, InputRequests, InputRequiredResult, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
        LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
        PromptMessage, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
        ReadResourceResult, Reference, ResourceContents, ResourceUpdatedNotificationParam, Role,
        SamplingMessage, ServerCapabilities, ServerConfig, SetLevelRequestMethod,
        SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
        UnsubscribeRequestParams,
    },
    service::{NotificationContext, Peer, RequestContext, SubscriptionContext},
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use fixtures::{DYNAMIC_PROMPT, DYNAMIC_TOOL};
use input_required::{InputRequiredFlows, Round};

/// Tools that talk to their caller while they run (log messages, progress). They are
/// read-only, but their notifications are part of what the caller sees, and a cached or
/// shared answer comes without them (a hit replays the result, not the notifications the
/// execution sent). The server turns caching and deduplication off for them, as any server
/// should for such tools.
pub const NOTIFYING_TOOLS: &[&str] = &[
    "test_tool_with_logging",
    "test_logging_tool",
    "test_tool_with_progress",
];

/// The delay between the notifications of the logging and progress tools, as the scenarios
/// describe them.
const NOTIFICATION_INTERVAL: Duration = Duration::from_millis(50);

/// A change that `subscriptions/listen` streams and sessions are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The tool list changed.
    Tools,
    /// The prompt list changed.
    Prompts,
    /// `test://watched-resource` has new contents (sent to its subscribers only).
    Watched,
}

/// What a 2025-style (initialize handshake) session has set: its log level and resource
/// subscriptions. The peer is kept to notify the session of list changes and to forget the
/// session once its transport is gone.
struct LegacySession {
    peer: Peer<RoleServer>,
    log_level: LoggingLevel,
    subscriptions: BTreeSet<String>,
}

struct State {
    flows: InputRequiredFlows,
    dynamic_tool: AtomicBool,
    dynamic_prompt: AtomicBool,
    /// Bumped by `test_update_watched_resource`; part of the watched resource's contents.
    watched_version: AtomicU64,
    changes: broadcast::Sender<Change>,
    sessions: Mutex<HashMap<String, LegacySession>>,
}

/// The conformance server's handler. Cloning shares its state.
#[derive(Clone)]
pub struct Conformance {
    state: Arc<State>,
}

impl fmt::Debug for Conformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conformance")
            .field(
                "dynamic_tool",
                &self.state.dynamic_tool.load(Ordering::Relaxed),
            )
            .field(
                "dynamic_prompt",
                &self.state.dynamic_prompt.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Severity order of MCP log levels (RFC 5424 order, least severe first).
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Whether the request uses the 2026-07-28 stateless lifecycle, where the server may not
/// send requests to the client and asks through input-required results instead.
fn is_stateless(cx: &RequestContext<RoleServer>) -> bool {
    cx.protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

fn text_result(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn tool_error(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text)]))
}

/// A client capability a tool needs.
#[derive(Debug, Clone, Copy)]
enum Needs {
    Sampling,
    Elicitation,
}

impl Needs {
    fn declared_by(self, caps: Option<&ClientCapabilities>) -> bool {
        match self {
            Needs::Sampling => caps.is_some_and(|c| c.sampling.is_some()),
            Needs::Elicitation => caps.is_some_and(|c| c.elicitation.is_some()),
        }
    }

    fn as_capabilities(self) -> ClientCapabilities {
        match self {
            Needs::Sampling => ClientCapabilities::builder().enable_sampling().build(),
            Needs::Elicitation => ClientCapabilities::builder().enable_elicitation().build(),
        }
    }
}

/// What asking the client produced.
enum Asked {
    /// The client's answer (a `CreateMessageResult`, `ElicitResult`…, as JSON).
    Answer(Value),
    /// On the stateless protocol, the question goes back as an input-required result.
    Pending(InputRequiredResult),
    /// The client could not answer; the tool reports this as a tool error.
    Failed(String),
}

impl Conformance {
    /// A handler with fresh state (and a fresh key for sealing `requestState`).
    pub fn new() -> anyhow::Result<Self> {
        let flows = InputRequiredFlows::new().map_err(|e| anyhow::anyhow!(e.message))?;
        let (changes, _) = broadcast::channel(16);
        Ok(Self {
            state: Arc::new(State {
                flows,
                dynamic_tool: AtomicBool::new(false),
                dynamic_prompt: AtomicBool::new(false),
                watched_version: AtomicU64::new(0),
                changes,
                sessions: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn tools(&self) -> Vec<Tool> {
        fixtures::tools(self.state.dynamic_tool.load(Ordering::Acquire))
    }

    /// Runs `f` on the session the request belongs to, registering it (with the default
    /// level) if it is new; sessions whose transport has closed are forgotten first.
    fn with_session<R>(
        &self,
        extensions: &rmcp::model::Extensions,
        peer: &Peer<RoleServer>,
        f: impl FnOnce(&mut LegacySession) -> R,
    ) -> Option<R> {
        let id = crate::serve::session_id(extensions)?;
        let mut sessions = lock(&self.state.sessions);
        sessions.retain(|_, s| !s.peer.is_transport_closed());
        let session = sessions.entry(id).or_insert_with(|| LegacySession {
            peer: peer.clone(),
            log_level: LoggingLevel::Info,
            subscriptions: BTreeSet::new(),
        });
        Some(f(session))
    }

    /// The least severe level the client wants to hear: the request's own `logLevel`
    /// (2026-07-28), else the session's `logging/setLevel`; `None` for a stateless request
    /// that asked for no logs.
    fn log_threshold(&self, cx: &RequestContext<RoleServer>) -> Option<LoggingLevel> {
        if let Some(level) = cx.meta.log_level() {
            return Some(level);
        }
        if is_stateless(cx) {
            return None;
        }
        self.with_session(&cx.extensions, &cx.peer, |s| s.log_level)
            .or(Some(LoggingLevel::Info))
    }

    async fn log(&self, cx: &RequestContext<RoleServer>, level: LoggingLevel, message: &str) {
        let Some(threshold) = self.log_threshold(cx) else {
            return;
        };
        if severity(level) < severity(threshold) {
            return;
        }
        let mut param =
            LoggingMessageNotificationParam::new(level, json!(message)).with_logger("conformance");
        // Names the request it belongs to, so that a gateway sharing this session between
        // clients can relay it to the right one (docs/gateway.md).
        param.meta = serde_json::from_value(json!({ "relatedRequestId": cx.id })).ok();
        if let Err(e) = cx.peer.notify_logging_message(param).await {
            tracing::debug!(error = %e, "log notification not delivered");
        }
    }

    /// Announces a change to every `subscriptions/listen` stream and every live 2025-style
    /// session (for the watched resource: every session subscribed to it).
    async fn announce(&self, change: Change) {
        // No receiver (no open listen stream) is not an error.
        let _ = self.state.changes.send(change);
        let peers: Vec<Peer<RoleServer>> = {
            let mut sessions = lock(&self.state.sessions);
            sessions.retain(|_, s| !s.peer.is_transport_closed());
            sessions
                .values()
                .filter(|s| {
                    change != Change::Watched || s.subscriptions.contains(fixtures::WATCHED_URI)
                })
                .map(|s| s.peer.clone())
                .collect()
        };
        for peer in peers {
            let sent = match change {
                Change::Tools => peer.notify_tool_list_changed().await,
                Change::Prompts => peer.notify_prompt_list_changed().await,
                Change::Watched => {
                    let param = ResourceUpdatedNotificationParam::new(fixtures::WATCHED_URI);
                    peer.notify_resource_updated(param).await
                }
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "change notification not delivered");
            }
        }
    }

    /// Asks the client one question: directly (a server-to-client request) on a 2025
    /// session, through an input-required result under `key` on the stateless protocol.
    async fn ask(
        &self,
        cx: &RequestContext<RoleServer>,
        params: &CallToolRequestParams,
        needs: Needs,
        key: &str,
        question: InputRequest,
    ) -> Result<Asked, McpError> {
        let caps = cx.client_capabilities();
        if is_stateless(cx) {
            if !needs.declared_by(caps.as_ref()) {
                return Err(McpError::missing_required_client_capability(
                    needs.as_capabilities(),
                ));
            }
            if let Some(answer) = params.input_responses.as_ref().and_then(|r| r.get(key)) {
                return Ok(Asked::Answer(answer.clone()));
            }
            let requests = InputRequests::from([(key.to_owned(), question)]);
            return Ok(Asked::Pending(InputRequiredResult::new(
                Some(requests),
                None,
            )));
        }
        if !needs.declared_by(caps.as_ref()) {
            return Ok(Asked::Failed(format!(
                "the client did not declare the {needs:?} capability"
            )));
        }
        let answer = match question {
            InputRequest::CreateMessage(request) => cx
                .peer
                .create_message(request.params)
                .await
                .map(serde_json::to_value),
            InputRequest::Elicitation(request) => cx
                .peer
                .create_elicitation(request.params)
                .await
                .map(serde_json::to_value),
            InputRequest::ListRoots(_) => cx.peer.list_roots().await.map(serde_json::to_value),
            other => {
                return Err(McpError::internal_error(
                    format!("cannot ask the client {other:?}"),
                    None,
                ));
            }
        };
        Ok(match answer {
            Ok(Ok(value)) => Asked::Answer(value),
            Ok(Err(e)) => Asked::Failed(format!("unreadable answer: {e}")),
            Err(e) => Asked::Failed(e.to_string()),
        })
    }

    /// `test_sampling`: asks the client's LLM the `prompt` argument.
    async fn sampling(
        &self,
        params: &CallToolRequestParams,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let prompt = params
            .arguments
            .as_ref()
            .and_then(|a| a.get("prompt"))
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::invalid_params("`prompt` (a string) is required", None))?;
        let question = InputRequest::CreateMessage(rmcp::model::CreateMessageRequest::new(
            CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100),
        ));
        Ok(
            match self
                .ask(cx, params, Needs::Sampling, "sampling", question)
                .await?
            {
                Asked::Answer(answer) => match input_required::sampling_text(&answer) {
                    Some(text) => text_result(format!("LLM response: {text}")),
                    None => tool_error(format!("Sampling error: no text in the answer {answer}")),
                },
                Asked::Pending(ask) => ask.into(),
                Asked::Failed(reason) => tool_error(format!("Sampling error: {reason}")),
            },
        )
    }

    /// The elicitation tools: ask the user through a form and report what came back.
    async fn elicitation(
        &self,
        params: &CallToolRequestParams,
        cx: &RequestContext<RoleServer>,
        message: &str,
        schema: Value,
        report: &str,
    ) -> Result<CallToolResponse, McpError> {
        let question = input_required::ask_form(message, schema)?;
        Ok(
            match self
                .ask(cx, params, Needs::Elicitation, "elicitation", question)
                .await?
            {
                Asked::Answer(answer) => {
                    let action = answer.get("action").and_then(Value::as_str).unwrap_or("?");
                    let content = answer.get("content").cloned().unwrap_or(Value::Null);
                    text_result(format!("{report}: action={action}, content={content}"))
                }
                Asked::Pending(ask) => ask.into(),
                Asked::Failed(reason) => tool_error(format!("Elicitation error: {reason}")),
            },
        )
    }

    async fn logging(&self, cx: &RequestContext<RoleServer>) -> CallToolResponse {
        let steps = [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ];
        for (i, step) in steps.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(NOTIFICATION_INTERVAL).await;
            }
            self.log(cx, LoggingLevel::Info, step).await;
        }
        text_result("Logging test completed")
    }

    async fn progress(&self, cx: &RequestContext<RoleServer>) -> CallToolResponse {
        let token = cx.meta.get_progress_token();
        for (i, (progress, message)) in [(0.0, "Starting"), (50.0, "Halfway"), (100.0, "Complete")]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                tokio::time::sleep(NOTIFICATION_INTERVAL).await;
            }
            if let Some(token) = &token {
                let param = ProgressNotificationParam::new(token.clone(), progress)
                    .with_total(100.0)
                    .with_message(message);
                if let Err(e) = cx.peer.notify_progress(param).await {
                    tracing::debug!(error = %e, "progress notification not delivered");
                }
            }
        }
        text_result("Progress test completed")
    }

    fn toggle(&self, flag: &AtomicBool) -> bool {
        !flag.fetch_xor(true, Ordering::AcqRel)
    }

    async fn run_tool(
        &self,
        params: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let round = Round {
            name: &params.name,
            responses: params.input_responses.as_ref(),
            state: params.request_state.as_deref(),
        };
        if let Some(result) = self
            .state
            .flows
            .call_tool(round, cx.client_capabilities().as_ref())
        {
            return result;
        }
        let arguments = params.arguments.clone().unwrap_or_default();
        Ok(match params.name.as_ref() {
            "test_simple_text" => text_result(fixtures::SIMPLE_TEXT),
            "test_image_content" => CallToolResult::success(vec![ContentBlock::image(
                fixtures::RED_PIXEL_PNG,
                "image/png",
            )])
            .into(),
            "test_audio_content" => CallToolResult::success(vec![ContentBlock::audio(
                fixtures::SILENT_WAV,
                "audio/wav",
            )])
            .into(),
            "test_embedded_resource" => CallToolResult::success(vec![ContentBlock::resource(
                ResourceContents::text(
                    "This is an embedded resource content.",
                    "test://embedded-resource",
                )
                .with_mime_type("text/plain"),
            )])
            .into(),
            "test_multiple_content_types" => CallToolResult::success(vec![
                ContentBlock::text("Multiple content types test:"),
                ContentBlock::image(fixtures::RED_PIXEL_PNG, "image/png"),
                ContentBlock::resource(
                    ResourceContents::text(
                        r#"{"test":"data","value":123}"#,
                        "test://mixed-content-resource",
                    )
                    .with_mime_type("application/json"),
                ),
            ])
            .into(),
            "test_error_handling" => tool_error(fixtures::TOOL_ERROR_TEXT),
            "test_tool_with_logging" | "test_logging_tool" => self.logging(&cx).await,
            "test_tool_with_progress" => self.progress(&cx).await,
            "test_sampling" => self.sampling(&params, &cx).await?,
            "test_missing_capability" => {
                // Needs sampling: without it, -32021 on the stateless protocol, a tool error
                // on a 2025 session (whose wire has no such error).
                let mut params = params.clone();
                params.arguments = Some(rmcp::object!({ "prompt": "Say hello" }));
                self.sampling(&params, &cx).await?
            }
            "test_elicitation" => {
                let message = arguments
                    .get("message")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        McpError::invalid_params("`message` (a string) is required", None)
                    })?;
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "username": { "type": "string", "description": "User's response" },
                        "email": { "type": "string", "description": "User's email address" }
                    },
                    "required": ["username", "email"]
                });
                self.elicitation(&params, &cx, message, schema, "User response")
                    .await?
            }
            "test_elicitation_sep1034_defaults" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "name": { "type": "string", "description": "User's name", "default": "John Doe" },
                        "age": { "type": "integer", "description": "User's age", "default": 30 },
                        "score": { "type": "number", "description": "User's score", "default": 95.5 },
                        "status": {
                            "type": "string",
                            "description": "User's status",
                            "enum": ["active", "inactive", "pending"],
                            "default": "active"
                        },
                        "verified": { "type": "boolean", "description": "Whether user is verified", "default": true }
                    }
                });
                let message = "Please review these values (all have defaults)";
                self.elicitation(&params, &cx, message, schema, "Elicitation completed")
                    .await?
            }
            "test_elicitation_sep1330_enums" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "untitledSingle": {
                            "type": "string",
                            "description": "Untitled single-select",
                            "enum": ["option1", "option2", "option3"]
                        },
                        "titledSingle": {
                            "type": "string",
                            "description": "Titled single-select",
                            "oneOf": [
                                { "const": "value1", "title": "First Option" },
                                { "const": "value2", "title": "Second Option" },
                                { "const": "value3", "title": "Third Option" }
                            ]
                        },
                        "legacyEnum": {
                            "type": "string",
                            "description": "Legacy titled enum",
                            "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"]
                        },
                        "untitledMulti": {
                            "type": "array",
                            "description": "Untitled multi-select",
                            "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
                        },
                        "titledMulti": {
                            "type": "array",
                            "description": "Titled multi-select",
                            "items": {
                                "anyOf": [
                                    { "const": "value1", "title": "First Choice" },
                                    { "const": "value2", "title": "Second Choice" },
                                    { "const": "value3", "title": "Third Choice" }
                                ]
                            }
                        }
                    }
                });
                let message = "Please pick from these options";
                self.elicitation(&params, &cx, message, schema, "Elicitation completed")
                    .await?
            }
            "test_streaming_elicitation" => {
                if let Some(token) = cx.meta.get_progress_token() {
                    let param = ProgressNotificationParam::new(token, 0.0)
                        .with_total(1.0)
                        .with_message("Waiting for the user");
                    if let Err(e) = cx.peer.notify_progress(param).await {
                        tracing::debug!(error = %e, "progress notification not delivered");
                    }
                }
                let schema = json!({
                    "type": "object",
                    "properties": { "answer": { "type": "string" } },
                    "required": ["answer"]
                });
                self.elicitation(&params, &cx, "What should I stream?", schema, "Streamed")
                    .await?
            }
            "json_schema_2020_12_tool" => {
                text_result(format!("Received: {}", Value::Object(arguments)))
            }
            "test_reconnection" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                text_result("Reconnection test completed")
            }
            "test_custom_headers" => {
                let region = arguments
                    .get("region")
                    .and_then(Value::as_str)
                    .unwrap_or("(none)");
                text_result(format!("region={region}"))
            }
            "test_trigger_tool_change" => {
                let present = self.toggle(&self.state.dynamic_tool);
                self.announce(Change::Tools).await;
                text_result(format!("{DYNAMIC_TOOL} present: {present}"))
            }
            "test_trigger_prompt_change" => {
                let present = self.toggle(&self.state.dynamic_prompt);
                self.announce(Change::Prompts).await;
                text_result(format!("{DYNAMIC_PROMPT} present: {present}"))
            }
            "test_update_watched_resource" => {
                let version = self.state.watched_version.fetch_add(1, Ordering::AcqRel) + 1;
                self.announce(Change::Watched).await;
                text_result(format!(
                    "{} is now at version {version}",
                    fixtures::WATCHED_URI
                ))
            }
            DYNAMIC_TOOL if self.state.dynamic_tool.load(Ordering::Acquire) => {
                text_result("The dynamic tool answers.")
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool: {other}"),
                    Some(json!({ "tool": other })),
                ));
            }
        })
    }

    fn get_prompt_now(
        &self,
        request: GetPromptRequestParams,
    ) -> Result<GetPromptResponse, McpError> {
        let argument = |name: &str| -> Result<String, McpError> {
            request
                .arguments
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    McpError::invalid_params(
                        format!("prompt {} needs the argument `{name}`", request.name),
                        None,
                    )
                })
        };
        let messages = match request.name.as_str() {
            "test_simple_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "This is a simple prompt for testing.",
            )],
            "test_prompt_with_arguments" => {
                let (arg1, arg2) = (argument("arg1")?, argument("arg2")?);
                vec![PromptMessage::new_text(
                    Role::User,
                    format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"),
                )]
            }
            "test_prompt_with_embedded_resource" => {
                let uri = argument("resourceUri")?;
                vec![
                    PromptMessage::new(
                        Role::User,
                        ContentBlock::resource(
                            ResourceContents::text("Embedded resource content for testing.", uri)
                                .with_mime_type("text/plain"),
                        ),
                    ),
                    PromptMessage::new_text(
                        Role::User,
                        "Please process the embedded resource above.",
                    ),
                ]
            }
            "test_prompt_with_image" => vec![
                PromptMessage::new(
                    Role::User,
                    ContentBlock::image(fixtures::RED_PIXEL_PNG, "image/png"),
                ),
                PromptMessage::new_text(Role::User, "Please analyze the image above."),
            ],
            "test_input_required_result_prompt" => {
                return self.state.flows.prompt(Round {
                    name: &request.name,
                    responses: request.input_responses.as_ref(),
                    state: request.request_state.as_deref(),
                });
            }
            DYNAMIC_PROMPT if self.state.dynamic_prompt.load(Ordering::Acquire) => {
                vec![PromptMessage::new_text(
                    Role::User,
                    "This prompt was added at run time.",
                )]
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown prompt: {other}"),
                    Some(json!({ "prompt": other })),
                ));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }
}

/// Completion candidates for a prompt or template argument, by prefix.
fn completions(reference: &Reference, argument: &str, prefix: &str) -> Vec<String> {
    let candidates: &[&str] = match (reference, argument) {
        (Reference::Prompt(p), "arg1" | "arg2") if p.name == "test_prompt_with_arguments" => {
            &["paris", "park", "party", "test", "testing"]
        }
        (Reference::Resource(r), "id") if r.uri == fixtures::TEMPLATE_URI => {
            &["1", "2", "3", "123"]
        }
        _ => &[],
    };
    candidates
        .iter()
        .filter(|c| c.starts_with(prefix))
        .map(|c| (*c).to_owned())
        .collect()
}

impl ServerHandler for Conformance {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "mcp-tower-conformance",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("The mcp-tower conformance server: the fixtures of the official MCP conformance suite.")
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools().into_iter().find(|t| t.name == name)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.run_tool(request, cx).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(fixtures::prompts(
            self.state.dynamic_prompt.load(Ordering::Acquire),
        )))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        self.get_prompt_now(request)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(fixtures::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            fixtures::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let watched_version = self.state.watched_version.load(Ordering::Acquire);
        match fixtures::read(&request.uri, watched_version) {
            Some(contents) => Ok(ReadResourceResult::new(vec![contents]).into()),
            None => Err(McpError::resource_not_found(
                "Resource not found",
                Some(json!({ "uri": request.uri })),
            )),
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let values = completions(
            &request.r#ref,
            &request.argument.name,
            &request.argument.value,
        );
        let info = CompletionInfo::with_all_values(values)
            .map_err(|e| McpError::internal_error(e, None))?;
        Ok(CompleteResult::new(info))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // logging/setLevel belongs to the session lifecycle; 2026-07-28 removed it.
        if is_stateless(&cx) {
            return Err(McpError::method_not_found::<SetLevelRequestMethod>());
        }
        match self.with_session(&cx.extensions, &cx.peer, |s| s.log_level = request.level) {
            Some(()) => Ok(()),
            None => Err(McpError::invalid_request(
                "logging/setLevel needs a session (Mcp-Session-Id)",
                None,
            )),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if !fixtures::is_known_uri(&request.uri) {
            return Err(McpError::resource_not_found(
                "Resource not found",
                Some(json!({ "uri": request.uri })),
            ));
        }
        let uri = request.uri;
        match self.with_session(&cx.extensions, &cx.peer, |s| s.subscriptions.insert(uri)) {
            Some(_) => Ok(()),
            None => Err(McpError::invalid_request(
                "resources/subscribe needs a session (Mcp-Session-Id)",
                None,
            )),
        }
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = request.uri;
        match self.with_session(&cx.extensions, &cx.peer, |s| s.subscriptions.remove(&uri)) {
            Some(_) => Ok(()),
            None => Err(McpError::invalid_request(
                "resources/unsubscribe needs a session (Mcp-Session-Id)",
                None,
            )),
        }
    }

    async fn on_initialized(&self, cx: NotificationContext<RoleServer>) {
        // Registers the session, so list changes reach it.
        let _ = self.with_session(&cx.extensions, &cx.peer, |_| ());
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|uri| fixtures::is_known_uri(uri))
                .cloned()
                .collect()
        });
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resource_subscriptions = resource_subscriptions;
        Some(accepted)
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), McpError> {
        let mut changes = self.state.changes.subscribe();
        loop {
            let change = tokio::select! {
                () = subscription.cancelled() => return Ok(()),
                change = changes.recv() => change,
            };
            let sent = match change {
                Ok(Change::Tools) => subscription.sink().notify_tool_list_changed().await,
                Ok(Change::Prompts) => subscription.sink().notify_prompt_list_changed().await,
                Ok(Change::Watched) => {
                    let sink = subscription.sink();
                    sink.notify_resource_updated(fixtures::WATCHED_URI).await
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            };
            match sent {
                Ok(()) => {}
                // The client did not ask for this kind of change.
                Err(rmcp::service::SubscriptionSendError::NotificationNotAccepted(_)) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "subscription stream ended");
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_filter_by_prefix_and_know_their_references() {
        let prompt = Reference::for_prompt("test_prompt_with_arguments");
        assert_eq!(
            completions(&prompt, "arg1", "par"),
            ["paris", "park", "party"]
        );
        assert!(completions(&prompt, "arg3", "").is_empty());
        let other = Reference::for_prompt("test_simple_prompt");
        assert!(completions(&other, "arg1", "").is_empty());
    }

    #[test]
    fn severity_follows_the_syslog_order() {
        assert!(severity(LoggingLevel::Debug) < severity(LoggingLevel::Info));
        assert!(severity(LoggingLevel::Warning) < severity(LoggingLevel::Emergency));
    }

    #[test]
    fn the_trigger_tools_toggle_the_dynamic_entries() {
        let server = Conformance::new().expect("a server");
        assert!(server.get_tool(DYNAMIC_TOOL).is_none());
        assert!(server.toggle(&server.state.dynamic_tool));
        assert!(server.get_tool(DYNAMIC_TOOL).is_some());
        assert!(!server.toggle(&server.state.dynamic_tool));
        assert!(server.get_tool(DYNAMIC_TOOL).is_none());
    }
}
