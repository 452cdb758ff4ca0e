//! [`McpStack`]: builds the layers in the right order from a [`StackConfig`] and wraps a
//! handler in a [`LayeredServer`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use mcp_tower_cache::{CacheHandle, CacheLayer};
use mcp_tower_concurrency::{ConcurrencyHandle, ConcurrencyLayer};
use mcp_tower_core::{
    CallResolver, HandlerService, KeySecret, LayerReport, Partitioner, PolicyTable, ToolCall,
    ToolOverride,
};
use mcp_tower_dedup::{DedupHandle, DedupLayer};
use mcp_tower_metrics::MetricsHandle;
use mcp_tower_retry::{RetryHandle, RetryLayer, TimeoutLayer};
use rmcp::{
    ErrorData as McpError, ServerHandler,
    model::{CallToolResponse, Tool},
};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::{ConfigError, LayeredServer, StackConfig};

/// The handles of a built stack's stateful layers, to read and steer them at run time (an
/// admin endpoint, a test). Cloning shares them.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StackHandles {
    /// The resolver (policy table, partitioner, key secret) every call of the stack uses.
    pub resolver: Option<Arc<CallResolver>>,
    /// The metrics handle: Prometheus text, `/stats`, `/health` (`metrics.router()`). Present
    /// even when the metrics layer is off, so `/health` and `/stats` still answer.
    pub metrics: Option<MetricsHandle>,
    /// The cache's handle (`stats()`, `invalidate(tool)`…), when the cache is on.
    pub cache: Option<CacheHandle>,
    /// The deduplicator's handle, when it is on.
    pub dedup: Option<DedupHandle>,
    /// The concurrency limiter's handle (`set_limit`, `in_flight`…), when it is on.
    pub concurrency: Option<ConcurrencyHandle>,
    /// The retry layer's handle, when it is on.
    pub retry: Option<RetryHandle>,
}

impl StackHandles {
    /// Every stateful layer's handle as a [`LayerReport`], for an admin endpoint of your own.
    pub fn reports(&self) -> Vec<Arc<dyn LayerReport>> {
        let mut reports: Vec<Arc<dyn LayerReport>> = Vec::new();
        if let Some(h) = &self.cache {
            reports.push(Arc::new(h.clone()));
        }
        if let Some(h) = &self.dedup {
            reports.push(Arc::new(h.clone()));
        }
        if let Some(h) = &self.concurrency {
            reports.push(Arc::new(h.clone()));
        }
        if let Some(h) = &self.retry {
            reports.push(Arc::new(h.clone()));
        }
        reports
    }
}

/// The layers of a stack, built (and so validated) once by [`McpStackBuilder::build`].
struct Layers {
    metrics: MetricsHandle,
    metrics_on: bool,
    cache: Option<CacheLayer>,
    dedup: Option<DedupLayer>,
    concurrency: Option<ConcurrencyLayer>,
    retry: Option<RetryLayer>,
    timeout: Option<TimeoutLayer>,
}

impl Layers {
    fn build(config: &StackConfig) -> Result<Self, ConfigError> {
        let invalid = |section: &str, field: &str, reason: String| ConfigError::Invalid {
            field: format!("{section}.{field}"),
            reason,
        };
        let metrics = MetricsHandle::new(config.metrics.clone())
            .map_err(|e| invalid("metrics", e.field, e.reason))?;
        let cache = match config.cache.enabled {
            true => Some(
                CacheLayer::new(config.cache.clone())
                    .map_err(|e| invalid("cache", e.field, e.reason))?,
            ),
            false => None,
        };
        let concurrency = match config.concurrency.enabled {
            true => Some(
                ConcurrencyLayer::new(config.concurrency.clone())
                    .map_err(|e| invalid("concurrency", e.field, e.reason))?,
            ),
            false => None,
        };
        let retry = match config.retry.enabled {
            true => Some(
                RetryLayer::new(config.retry.clone())
                    .map_err(|e| invalid("retry", e.field, e.reason))?,
            ),
            false => None,
        };
        let layers = Self {
            metrics,
            metrics_on: config.metrics.enabled,
            cache,
            dedup: config
                .dedup
                .enabled
                .then(|| DedupLayer::new(config.dedup.clone())),
            concurrency,
            retry,
            timeout: config
                .timeout
                .enabled
                .then(|| TimeoutLayer::new(config.timeout.clone())),
        };
        for report in layers.handles(None).reports() {
            layers.metrics.add_report(report);
        }
        Ok(layers)
    }

    fn handles(&self, resolver: Option<&Arc<CallResolver>>) -> StackHandles {
        StackHandles {
            resolver: resolver.cloned(),
            metrics: Some(self.metrics.clone()),
            cache: self.cache.as_ref().map(CacheLayer::handle),
            dedup: self.dedup.as_ref().map(DedupLayer::handle),
            concurrency: self.concurrency.as_ref().map(ConcurrencyLayer::handle),
            retry: self.retry.as_ref().map(RetryLayer::handle),
        }
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layers")
            .field("metrics", &self.metrics_on)
            .field("cache", &self.cache.is_some())
            .field("dedup", &self.dedup.is_some())
            .field("concurrency", &self.concurrency.is_some())
            .field("retry", &self.retry.is_some())
            .field("timeout", &self.timeout.is_some())
            .finish()
    }
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
pub struct McpStack {
    settings: Settings,
    layers: Layers,
}

/// What a builder collects: the configuration and what code adds to it.
#[derive(Default)]
struct Settings {
    config: StackConfig,
    overrides: Vec<(String, ToolOverride)>,
    tools: Vec<Tool>,
    partitioner: Option<Arc<dyn Partitioner>>,
    secret: Option<KeySecret>,
}

impl fmt::Debug for McpStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpStack")
            .field("settings", &self.settings)
            .field("layers", &self.layers)
            .finish()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
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
    /// A builder, to set things from code (overrides, tools, partitioner).
    pub fn builder() -> McpStackBuilder {
        McpStackBuilder::default()
    }

    /// A stack with the default configuration (every layer on, default limits).
    pub fn with_defaults() -> Result<Self, ConfigError> {
        Self::builder().build()
    }

    /// A stack from a configuration (validated here).
    pub fn from_config(config: StackConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// The configuration.
    pub fn config(&self) -> &StackConfig {
        &self.settings.config
    }

    /// The policy table from the configuration, the code overrides and the declared tools.
    fn policy_table(&self) -> PolicyTable {
        let mut table = PolicyTable::new(self.settings.config.policy.clone())
            .with_overrides(&self.settings.config.tools);
        for (name, o) in &self.settings.overrides {
            table = table.with_override(name.clone(), o.clone());
        }
        table.with_tools(self.settings.tools.iter().cloned())
    }

    fn resolver(&self, table: PolicyTable) -> Arc<CallResolver> {
        let mut resolver = CallResolver::new(table).with_anonymous(self.settings.config.anonymous);
        if let Some(secret) = self.settings.secret {
            resolver = resolver.with_secret(secret);
        }
        if let Some(partitioner) = &self.settings.partitioner {
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
        let layers = &self.layers;
        let service = ServiceBuilder::new()
            .option_layer(layers.metrics_on.then(|| layers.metrics.layer()))
            .option_layer(layers.cache.clone())
            .option_layer(layers.dedup.clone())
            .option_layer(layers.concurrency.clone())
            .option_layer(layers.retry.clone())
            .option_layer(layers.timeout.clone())
            .service(inner);
        (StackService::new(service), layers.handles(Some(resolver)))
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

/// Sets an [`McpStack`] up from code; [`build`](McpStackBuilder::build) validates it and
/// builds the layers.
#[derive(Debug, Default)]
pub struct McpStackBuilder {
    settings: Settings,
}

impl McpStackBuilder {
    /// Starts from this configuration (file and env overrides already applied).
    pub fn config(mut self, config: StackConfig) -> Self {
        self.settings.config = config;
        self
    }

    /// Overrides `tool`'s policy (applied after the configuration's overrides: it replaces
    /// a configured override with the same key).
    ///
    /// `tool` is an exact name or a glob ([`ToolPattern`](mcp_tower_core::ToolPattern):
    /// `github__*`, `get_?`), with the same rules as `[tools]` keys: each field of a tool's
    /// policy comes from the most specific override that sets it. An invalid key (empty,
    /// `**`, a reserved character) makes [`build`](McpStackBuilder::build) fail.
    pub fn tool_override(mut self, tool: impl Into<String>, o: ToolOverride) -> Self {
        self.settings.overrides.push((tool.into(), o));
        self
    }

    /// Declares tools (with their annotations) up front, for handlers without `get_tool`.
    pub fn tools(mut self, tools: impl IntoIterator<Item = Tool>) -> Self {
        self.settings.tools.extend(tools);
        self
    }

    /// Derives principals with `partitioner` instead of the default.
    pub fn partitioner(mut self, partitioner: impl Partitioner) -> Self {
        self.settings.partitioner = Some(Arc::new(partitioner));
        self
    }

    /// Keys call keys with `secret` (overrides the configuration's `key_secret`).
    pub fn key_secret(mut self, secret: KeySecret) -> Self {
        self.settings.secret = Some(secret);
        self
    }

    /// Validates everything and builds the layers.
    pub fn build(mut self) -> Result<McpStack, ConfigError> {
        let settings = &mut self.settings;
        settings.config.validate()?;
        if settings.secret.is_none() {
            settings.secret = settings.config.key_secret()?;
        }
        let code = StackConfig {
            tools: settings.overrides.iter().cloned().collect(),
            ..StackConfig::default()
        };
        code.validate()?;
        let layers = Layers::build(&settings.config)?;
        Ok(McpStack {
            settings: self.settings,
            layers,
        })
    }

    /// Builds the stack and wraps `handler` ([`McpStack::serve`]).
    pub fn serve<H: ServerHandler>(
        self,
        handler: H,
    ) -> Result<LayeredServer<H, StackService>, ConfigError> {
        Ok(self.build()?.serve(handler))
    }
}
