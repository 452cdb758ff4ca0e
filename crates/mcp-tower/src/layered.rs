//! [`LayeredServer`]: an rmcp `ServerHandler` whose `tools/call` goes through a Tower stack.

#![allow(deprecated)] // rmcp's legacy methods (subscribe, logging…) must still be forwarded.

use std::{borrow::Cow, fmt, future::Future, sync::Arc};

use mcp_tower_core::{CallResolver, ToolCall};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::*,
    service::{MaybeSendFuture, NotificationContext, RequestContext, SubscriptionContext},
};
use tower::{Service, ServiceExt};

use crate::StackHandles;

/// An rmcp [`ServerHandler`] that sends `tools/call` through the service `S` (a Tower stack
/// ending in the handler, or in a pool for a gateway) and forwards **every other method** to
/// the handler `H` unchanged: initialization, `tools/list`, resources, prompts, completion,
/// logging, tasks, skills, notifications, `get_info`, `get_tool`…
///
/// The call's request context (cancellation token, peer for progress notifications,
/// extensions with the HTTP request parts) travels inside the [`ToolCall`] and reaches the
/// handler intact — which rmcp's own `tower` feature does not do.
///
/// Every `tools/list` result the handler returns is fed to the stack's policy table, so
/// tools added later (after `notifications/tools/list_changed`) get their policies.
///
/// Cloning is cheap: the handler and the stack's state are shared, so one `LayeredServer`
/// can be handed to every session of a streamable HTTP server.
pub struct LayeredServer<H, S> {
    handler: Arc<H>,
    service: S,
    resolver: Arc<CallResolver>,
    handles: StackHandles,
}

impl<H, S: Clone> Clone for LayeredServer<H, S> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
            service: self.service.clone(),
            resolver: Arc::clone(&self.resolver),
            handles: self.handles.clone(),
        }
    }
}

impl<H, S> fmt::Debug for LayeredServer<H, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredServer")
            .field("handler", &std::any::type_name::<H>())
            .field("service", &std::any::type_name::<S>())
            .field("resolver", &self.resolver)
            .finish()
    }
}

impl<H, S> LayeredServer<H, S> {
    /// A server sending tool calls through `service` and everything else to `handler`.
    ///
    /// `McpStack::serve` builds this for you; use `new` to put your own Tower stack in front
    /// of a handler.
    pub fn new(handler: Arc<H>, service: S, resolver: Arc<CallResolver>) -> Self {
        Self {
            handler,
            service,
            resolver,
            handles: StackHandles::default(),
        }
    }

    pub(crate) fn with_handles(mut self, handles: StackHandles) -> Self {
        self.handles = handles;
        self
    }

    /// The wrapped handler.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// The resolver (policy table, partitioner, key secret) every call uses.
    pub fn resolver(&self) -> &Arc<CallResolver> {
        &self.resolver
    }

    /// The handles of the stack's stateful layers, to read and steer them at run time.
    pub fn handles(&self) -> &StackHandles {
        &self.handles
    }
}

impl<H, S> ServerHandler for LayeredServer<H, S>
where
    H: ServerHandler,
    S: Service<ToolCall, Response = CallToolResponse, Error = McpError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CallToolResponse, McpError>> + MaybeSendFuture + '_ {
        let call = ToolCall::from_request(request, Some(context), Arc::clone(&self.resolver));
        self.service.clone().oneshot(call)
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let result = self.handler.list_tools(request, context).await?;
        if self.resolver.policies().observe_tools(&result.tools) {
            tracing::debug!(
                tools = result.tools.len(),
                "tool list changed; policies updated"
            );
        }
        Ok(result)
    }

    // Everything below forwards to the handler unchanged. `tests/forwarding.rs` checks this
    // list against rmcp's trait, so a method added to rmcp cannot be silently missed.

    fn ping(
        &self,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.handler.ping(context)
    }

    fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<InitializeResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.initialize(request, context)
    }

    fn negotiate_initialize(
        &self,
        request: &InitializeRequestParams,
    ) -> Result<InitializeResult, McpError> {
        self.handler.negotiate_initialize(request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.handler.supported_protocol_versions()
    }

    fn discover(
        &self,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<DiscoverResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.discover(context)
    }

    fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CompleteResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.complete(request, context)
    }

    fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.handler.set_level(request, context)
    }

    fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetPromptResponse, McpError>> + MaybeSendFuture + '_ {
        self.handler.get_prompt(request, context)
    }

    fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListPromptsResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.list_prompts(request, context)
    }

    fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListResourcesResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.list_resources(request, context)
    }

    fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListResourceTemplatesResult, McpError>> + MaybeSendFuture + '_
    {
        self.handler.list_resource_templates(request, context)
    }

    fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ReadResourceResponse, McpError>> + MaybeSendFuture + '_ {
        self.handler.read_resource(request, context)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.handler.accepted_subscription_filter(requested)
    }

    fn listen(
        &self,
        context: SubscriptionContext,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.handler.listen(context)
    }

    fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.handler.subscribe(request, context)
    }

    fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.handler.unsubscribe(request, context)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.handler.get_tool(name)
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        // rmcp decodes a `tools/call` whose params do not fit (arguments that are not an
        // object, a missing name) as a custom request and would answer "method not found".
        // The request is a tools/call with invalid params: say so (-32602), with the reason.
        if request.method == "tools/call" {
            return Err(invalid_tool_call_params(request.params.as_ref()));
        }
        self.handler.on_custom_request(request, context).await
    }

    fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.handler.on_cancelled(notification, context)
    }

    fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.handler.on_progress(notification, context)
    }

    fn on_initialized(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.handler.on_initialized(context)
    }

    fn on_roots_list_changed(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.handler.on_roots_list_changed(context)
    }

    fn on_custom_notification(
        &self,
        notification: CustomNotification,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.handler.on_custom_notification(notification, context)
    }

    fn get_info(&self) -> ServerConfig {
        self.handler.get_info()
    }

    fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetTaskResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.get_task(request, context)
    }

    fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.handler.update_task(request, context)
    }

    fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + MaybeSendFuture + '_ {
        self.handler.cancel_task(request, context)
    }

    fn list_skills(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListSkillsResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.list_skills(request, context)
    }

    fn get_skill(
        &self,
        request: GetSkillRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<GetSkillResult, McpError>> + MaybeSendFuture + '_ {
        self.handler.get_skill(request, context)
    }

    fn read_resource_directory(
        &self,
        request: ReadResourceDirectoryRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ReadResourceDirectoryResult, McpError>> + MaybeSendFuture + '_
    {
        self.handler.read_resource_directory(request, context)
    }
}

/// The JSON-RPC error for a `tools/call` whose params rmcp could not decode.
fn invalid_tool_call_params(params: Option<&serde_json::Value>) -> McpError {
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    let reason = match params {
        None => "params are missing".to_owned(),
        Some(serde_json::Value::Object(p)) => match (p.get("name"), p.get("arguments")) {
            (None, _) => "`name` is missing".to_owned(),
            (Some(name), _) if !name.is_string() => {
                format!("`name` must be a string, got {}", kind(name))
            }
            (_, Some(args)) if !args.is_object() && !args.is_null() => {
                format!("`arguments` must be a JSON object, got {}", kind(args))
            }
            _ => match serde_json::from_value::<CallToolRequestParams>(serde_json::Value::Object(
                p.clone(),
            )) {
                Err(e) => e.to_string(),
                Ok(_) => "params could not be decoded".to_owned(),
            },
        },
        Some(other) => format!("params must be an object, got {}", kind(other)),
    };
    McpError::invalid_params(format!("invalid tools/call params: {reason}"), None)
}
