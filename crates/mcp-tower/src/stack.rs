//! [`McpStack`]: builds the layers in the right order from a [`StackConfig`] and wraps a
//! handler in a [`LayeredServer`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use mcp_tower_core::{
    CallResolver, HandlerService, KeySecret, Partitioner, PolicyTable, ToolCall, ToolOverride,
};
use rmcp::{
    ErrorData as McpError, ServerHandler,
    model::{CallToolResponse, Tool},
};
use tower::{Service, ServiceExt};

use crate::{ConfigError, LayeredServer, StackConfig};

/// The handles of a built stack's stateful layers, to read and steer them at run time (an
/// admin endpoint, a test). Cloning shares them.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StackHandles {
    /// The resolver (policy table, partitioner, key secret) every call of the stack uses.
    pub resolver: Option<Arc<CallResolver>>,
}

/// The Tower service `McpStack` builds: every configured layer, in the order of
/// DESIGN §1, in front of the inner service.
///
/// Cloning is one reference count (the layers are shared behind an `Arc`), and a call costs
/// one boxed future: unlike `tower::util::BoxCloneSyncService`, whose clone allocates, this
/// matters because rmcp hands `call_tool` a `&self` and the service is cloned per call.
#[derive(Clone)]
pub struct StackService {
    inner: Arc<dyn CallStack>,
}

impl StackService {
    fn new<S>(service: S) -> Self
    where
        S: Service<ToolCall, Response = CallToolResponse, Error = McpError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Arc::new(service),
        }
    }
}

type BoxedCall = Pin<Box<dyn Future<Output = Result<CallToolResponse, McpError>> + Send>>;

/// Object-safe "clone the stack, wait until ready, call it".
trait CallStack: Send + Sync {
    fn call_stack(&self, call: ToolCall) -> BoxedCall;
}

impl<S> CallStack for S
where
    S: Service<ToolCall, Response = CallToolResponse, Error = McpError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn call_stack(&self, call: ToolCall) -> BoxedCall {
        Box::pin(self.clone().oneshot(call))
    }
}

impl fmt::Debug for StackService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackService").finish_non_exhaustive()
    }
}

/// The future of [`StackService`].
pub struct StackFuture {
    inner: BoxedCall,
}

impl fmt::Debug for StackFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StackFuture")
    }
}

impl Future for StackFuture {
    type Output = Result<CallToolResponse, McpError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl Service<ToolCall> for StackService {
    type Response = CallToolResponse;
    type Error = McpError;
    type Future = StackFuture;

    /// Always ready: readiness of the layers is awaited inside the call (each call drives
    /// its own clone of the stack to readiness, as `ServiceExt::oneshot` does).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        StackFuture {
            inner: self.inner.call_stack(call),
        }
    }
}

/// Builds mcp-tower's layers, in the right order, in front of an rmcp handler (or any
/// `Service<ToolCall>`), from a [`StackConfig`] and code.
///
/// ```
/// use mcp_tower::{McpStack, StackConfig};
/// use rmcp::{ServerHandler, model::ServerConfig};
///
/// #[derive(Clone)]
/// struct MyServer;
/// impl ServerHandler for MyServer {
///     fn get_info(&self) -> ServerConfig { ServerConfig::default() }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = McpStack::from_config(StackConfig::load(None)?)?.serve(MyServer);
/// // `server` is an rmcp ServerHandler: serve it on stdio or streamable HTTP as usual.
/// # let _ = server; Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct McpStack {
    config: StackConfig,
    overrides: Vec<(String, ToolOverride)>,
    tools: Vec<Tool>,
    partitioner: Option<Arc<dyn Partitioner>>,
    secret: Option<KeySecret>,
}

impl fmt::Debug for McpStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpStack")
            .field("config", &self.config)
            .field("overrides", &self.overrides)
            .field(
                "tools",
                &self.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("partitioner", &self.partitioner)
            .finish()
    }
}

impl McpStack {
    /// A stack with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, to set things from code (overrides, tools, partitioner).
    pub fn builder() -> McpStackBuilder {
        McpStackBuilder {
            stack: Self::default(),
        }
    }

    /// A stack from a configuration (validated here).
    pub fn from_config(config: StackConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// The configuration.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// The policy table from the configuration, the code overrides and the declared tools.
    fn policy_table(&self) -> PolicyTable {
        let mut table =
            PolicyTable::new(self.config.policy.clone()).with_overrides(&self.config.tools);
        for (name, o) in &self.overrides {
            table = table.with_override(name.clone(), o.clone());
        }
        table.with_tools(self.tools.iter().cloned())
    }

    fn resolver(&self, table: PolicyTable) -> Arc<CallResolver> {
        let mut resolver = CallResolver::new(table);
        if let Some(secret) = self.secret {
            resolver = resolver.with_secret(secret);
        }
        if let Some(partitioner) = &self.partitioner {
            resolver = resolver.with_shared_partitioner(Arc::clone(partitioner));
        }
        Arc::new(resolver)
    }

    fn build_service<S>(
        &self,
        inner: S,
        resolver: &Arc<CallResolver>,
    ) -> (StackService, StackHandles)
    where
        S: Service<ToolCall, Response = CallToolResponse, Error = McpError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let handles = StackHandles {
            resolver: Some(Arc::clone(resolver)),
        };
        let service = StackService::new(inner);
        (service, handles)
    }

    /// Wraps `handler`: tool calls go through the stack and then to the handler; every other
    /// request goes straight to the handler.
    ///
    /// Tools' policies come from the handler's `get_tool` (generated by rmcp's
    /// `#[tool_handler]`), from every `tools/list` result, from
    /// [`McpStackBuilder::tools`] and from the overrides.
    pub fn serve<H: ServerHandler>(self, handler: H) -> LayeredServer<H, StackService> {
        let handler = Arc::new(handler);
        let lookup_handler = Arc::clone(&handler);
        let table = self
            .policy_table()
            .with_lookup(move |name| lookup_handler.get_tool(name));
        let resolver = self.resolver(table);
        let (service, handles) =
            self.build_service(HandlerService::new(Arc::clone(&handler)), &resolver);
        LayeredServer::new(handler, service, resolver).with_handles(handles)
    }

    /// Puts the stack in front of any inner service (a pool forwarding to upstreams, say).
    /// Tools are known from [`McpStackBuilder::tools`] and the overrides; feed tool lists
    /// later with `resolver.policies().observe_tools(..)`.
    pub fn service<S>(self, inner: S) -> BuiltStack
    where
        S: Service<ToolCall, Response = CallToolResponse, Error = McpError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let resolver = self.resolver(self.policy_table());
        let (service, handles) = self.build_service(inner, &resolver);
        BuiltStack {
            service,
            handles,
            resolver,
        }
    }
}

/// A stack built around an inner service by [`McpStack::service`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuiltStack {
    /// The layered service.
    pub service: StackService,
    /// The handles of its stateful layers.
    pub handles: StackHandles,
    /// The resolver to build calls with (`ToolCall::from_request(.., resolver)`).
    pub resolver: Arc<CallResolver>,
}

impl BuiltStack {
    /// Wraps `handler` for every request but `tools/call`, which goes through this stack
    /// (a gateway: the handler lists the upstreams' tools, the stack's inner service
    /// forwards the calls).
    pub fn serve<H: ServerHandler>(self, handler: H) -> LayeredServer<H, StackService> {
        LayeredServer::new(Arc::new(handler), self.service, self.resolver)
            .with_handles(self.handles)
    }
}

/// Sets an [`McpStack`] up from code; [`build`](McpStackBuilder::build) validates it.
#[derive(Debug, Default)]
pub struct McpStackBuilder {
    stack: McpStack,
}

impl McpStackBuilder {
    /// Starts from this configuration (file and env overrides already applied).
    pub fn config(mut self, config: StackConfig) -> Self {
        self.stack.config = config;
        self
    }

    /// Overrides `tool`'s policy (applied after the configuration's overrides).
    pub fn tool_override(mut self, tool: impl Into<String>, o: ToolOverride) -> Self {
        self.stack.overrides.push((tool.into(), o));
        self
    }

    /// Declares tools (with their annotations) up front, for handlers without `get_tool`.
    pub fn tools(mut self, tools: impl IntoIterator<Item = Tool>) -> Self {
        self.stack.tools.extend(tools);
        self
    }

    /// Derives principals with `partitioner` instead of the default.
    pub fn partitioner(mut self, partitioner: impl Partitioner) -> Self {
        self.stack.partitioner = Some(Arc::new(partitioner));
        self
    }

    /// Keys call keys with `secret` (overrides the configuration's `key_secret`).
    pub fn key_secret(mut self, secret: KeySecret) -> Self {
        self.stack.secret = Some(secret);
        self
    }

    /// Validates everything and returns the stack.
    pub fn build(mut self) -> Result<McpStack, ConfigError> {
        self.stack.config.validate()?;
        if self.stack.secret.is_none() {
            self.stack.secret = self.stack.config.key_secret()?;
        }
        let code = StackConfig {
            tools: self.stack.overrides.iter().cloned().collect(),
            ..StackConfig::default()
        };
        code.validate()?;
        Ok(self.stack)
    }

    /// Builds the stack and wraps `handler` ([`McpStack::serve`]).
    pub fn serve<H: ServerHandler>(
        self,
        handler: H,
    ) -> Result<LayeredServer<H, StackService>, ConfigError> {
        Ok(self.build()?.serve(handler))
    }
}
