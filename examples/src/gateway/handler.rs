//! [`Gateway`]: the `ServerHandler` that presents N upstream MCP servers as one, and
//! forwards every method but `tools/call` (which goes through the stack) to the upstream
//! that owns it.

// Logging, resource subscriptions, sampling and roots are deprecated by SEP-2577 but part
// of the protocol versions the gateway serves: it must forward them.
#![allow(deprecated)]

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use mcp_tower_pool::{PoolHandle, PoolService, UpstreamCallError};
use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler,
    model::{
        ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult, GetPromptRequest,
        GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        Prompt, ReadResourceRequest, ReadResourceRequestParams, ReadResourceResponse, Reference,
        Resource, ResourceTemplate, ServerCapabilities, ServerConfig, ServerNotification,
        ServerResult, SetLevelRequest, SetLevelRequestParams, SubscribeRequest,
        SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequest,
        UnsubscribeRequestParams,
    },
    service::{NotificationContext, RequestContext, SubscriptionContext},
};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

/// What the upstreams offer, as the gateway exposes it; rebuilt by [`Gateway::refresh`].
#[derive(Debug, Default)]
struct Catalog {
    tools: Arc<Vec<Tool>>,
    tools_by_name: HashMap<String, Tool>,
    prompts: Arc<Vec<Prompt>>,
    /// Exposed prompt name → (upstream, its name there).
    prompt_routes: HashMap<String, (Arc<str>, String)>,
    resources: Arc<Vec<Resource>>,
    /// Resource URI → the upstream that listed it.
    resource_owners: HashMap<String, Arc<str>>,
    templates: Arc<Vec<ResourceTemplate>>,
    /// The literal part of each template (before its first `{`) → its upstream, longest
    /// first.
    template_owners: Vec<(String, Arc<str>)>,
    /// Every upstream's capabilities, merged.
    capabilities: ServerCapabilities,
    /// The upstreams reached, with what they declared.
    reached: Vec<Reached>,
    /// Upstreams that could not be listed last time (listed again next time).
    missing: Vec<Arc<str>>,
}

/// What an upstream declared at its handshake.
#[derive(Debug)]
struct Reached {
    name: Arc<str>,
    capabilities: ServerCapabilities,
    implementation: Option<Implementation>,
    instructions: Option<String>,
}

/// One upstream's lists.
#[derive(Debug, Default)]
struct Listing {
    capabilities: ServerCapabilities,
    implementation: Option<Implementation>,
    instructions: Option<String>,
    tools: Vec<Tool>,
    prompts: Vec<Prompt>,
    resources: Vec<Resource>,
    templates: Vec<ResourceTemplate>,
}

/// An upstream resource subscription the gateway holds: (upstream, URI).
type HeldSubscription = (Arc<str>, String);

/// A downstream session (streamable HTTP `Mcp-Session-Id`) that notifications not tied to a
/// request may be sent to.
#[derive(Debug)]
struct DownstreamSession {
    peer: Peer<RoleServer>,
    /// `resources/subscribe`d URIs.
    subscriptions: BTreeSet<String>,
    /// Whether it sent `logging/setLevel` (it then hears log messages that belong to no
    /// single request).
    logging: bool,
}

/// The aggregating handler: presents the upstreams' tools, prompts and resources as one
/// server's and forwards each request to the upstream that owns it.
///
/// - Names: each upstream's tools and prompts are exposed as `<upstream>__<name>`, or as
///   they are for an upstream configured with `namespace = false` (the router decides;
///   when two unprefixed upstreams list the same name, the first upstream in name order
///   keeps it and the clash is logged).
/// - Resources keep their URIs; `resources/read`, `resources/subscribe` and completion of
///   a template argument go to the upstream that listed the URI (or the template whose
///   literal prefix matches it); with one upstream serving resources, to it.
/// - `completion/complete` for a prompt goes to the prompt's upstream; `logging/setLevel`
///   goes to every upstream that declares logging.
/// - Capabilities (`initialize`, `server/discover`): the union of the upstreams'. With a
///   single upstream, its implementation and instructions are presented as they are.
/// - Notifications that belong to no request (list changes, resource updates, log messages
///   that cannot be attributed to one request) go to the downstream sessions concerned and
///   to `subscriptions/listen` streams ([`Gateway::relay_notifications`]).
///
/// The catalog is rebuilt when stale: an upstream opened a new session or sent a
/// `notifications/*/list_changed`, or an upstream could not be listed last time.
#[derive(Clone, Debug)]
pub struct Gateway {
    service: PoolService,
    catalog: Arc<Mutex<Catalog>>,
    changes: Arc<Mutex<watch::Receiver<u64>>>,
    sessions: Arc<Mutex<HashMap<String, DownstreamSession>>>,
    /// Upstream resource subscriptions held for downstream subscribers, counted.
    upstream_subscriptions: Arc<Mutex<HashMap<HeldSubscription, usize>>>,
    list_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Merges `from` into `into`: objects key by key, `true` wins over anything.
fn merge_json(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(key) {
                    Some(existing) => merge_json(existing, value),
                    None => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (into @ Value::Bool(false), Value::Bool(true)) => *into = Value::Bool(true),
        _ => {}
    }
}

/// The union of several upstreams' capabilities: a capability is declared when one
/// upstream declares it (and nothing no upstream declares).
pub fn union_capabilities<'a>(
    capabilities: impl IntoIterator<Item = &'a ServerCapabilities>,
) -> ServerCapabilities {
    let mut merged = Value::Object(Default::default());
    for caps in capabilities {
        if let Ok(value) = serde_json::to_value(caps) {
            merge_json(&mut merged, &value);
        }
    }
    serde_json::from_value(merged).unwrap_or_default()
}

/// The literal prefix of a URI template (before its first expression).
fn template_prefix(template: &str) -> &str {
    template.split('{').next().unwrap_or(template)
}

fn forward_error(upstream: &str, error: UpstreamCallError) -> ErrorData {
    match error {
        UpstreamCallError::Upstream(error) => error,
        other => ErrorData::from(mcp_tower::error::UpstreamUnavailable {
            layer: mcp_tower::error::Layer::Pool,
            upstream: upstream.to_owned(),
            reason: other.to_string().into(),
        }),
    }
}

fn unexpected(method: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the upstream answered `{method}` with another kind of result"),
        None,
    )
}

impl Gateway {
    /// A gateway for the upstreams of `service`.
    pub fn new(service: &PoolService) -> Self {
        let changes = service.pool().connector().tools_changed();
        Self {
            list_timeout: service.pool().config().connect_timeout,
            service: service.clone(),
            catalog: Arc::new(Mutex::new(Catalog::default())),
            changes: Arc::new(Mutex::new(changes)),
            sessions: Arc::default(),
            upstream_subscriptions: Arc::default(),
        }
    }

    /// Lists every upstream's tools, prompts, resources and templates (in parallel, each
    /// kind only where the upstream declares it) and rebuilds the catalog. An upstream
    /// that cannot be reached is left out (and tried again by the next list request).
    /// Returns the tools.
    pub async fn refresh_tools(&self) -> Arc<Vec<Tool>> {
        self.refresh().await;
        self.tools()
    }

    async fn list_upstream(&self, name: &Arc<str>) -> Result<Listing, String> {
        let listed = tokio::time::timeout(self.list_timeout, async {
            let session = self.service.pool().get(name).await?;
            let info = session.server_info();
            let caps = info
                .as_ref()
                .map(|i| i.capabilities.clone())
                .unwrap_or_default();
            let mut listing = Listing {
                implementation: info.as_ref().and_then(|i| i.server_info.clone()),
                instructions: info.as_ref().and_then(|i| i.instructions.clone()),
                ..Listing::default()
            };
            if caps.tools.is_some() {
                listing.tools = session.list_all_tools().await?;
            }
            if caps.prompts.is_some() {
                listing.prompts = session.list_all_prompts().await?;
            }
            if caps.resources.is_some() {
                listing.resources = session.list_all_resources().await?;
                listing.templates = session.list_all_resource_templates().await?;
            }
            listing.capabilities = caps;
            anyhow::Ok(listing)
        })
        .await;
        match listed {
            Ok(Ok(listing)) => Ok(listing),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.list_timeout)),
        }
    }

    async fn refresh(&self) {
        // Changes seen from here on make the new catalog stale again.
        let _seen = *lock(&self.changes).borrow_and_update();
        let router = self.service.router();
        let upstreams = self.service.pool().connector().upstreams();
        let listings =
            futures_util::future::join_all(upstreams.iter().map(|n| self.list_upstream(n))).await;
        let mut catalog = Catalog::default();
        let mut capabilities = Vec::new();
        let mut tools: Vec<Tool> = Vec::new();
        let mut prompts: Vec<Prompt> = Vec::new();
        let mut resources = Vec::new();
        let mut templates = Vec::new();
        let mut unprefixed_names: Vec<(String, Arc<str>)> = Vec::new();
        for (name, listing) in upstreams.iter().zip(listings) {
            let listing = match listing {
                Ok(listing) => listing,
                Err(error) => {
                    tracing::warn!(upstream = %name, %error, "could not list the upstream");
                    catalog.missing.push(Arc::clone(name));
                    continue;
                }
            };
            for mut tool in listing.tools {
                let Some(exposed) = router.exposed_name(name, &tool.name) else {
                    continue;
                };
                if catalog.tools_by_name.contains_key(&exposed) {
                    tracing::warn!(upstream = %name, tool = %exposed, "another upstream exposes a tool of that name; it keeps it");
                    continue;
                }
                if router.is_unprefixed(name) {
                    unprefixed_names.push((exposed.clone(), Arc::clone(name)));
                }
                tool.name = exposed.clone().into();
                catalog.tools_by_name.insert(exposed, tool.clone());
                tools.push(tool);
            }
            for mut prompt in listing.prompts {
                let Some(exposed) = router.exposed_name(name, &prompt.name) else {
                    continue;
                };
                if catalog.prompt_routes.contains_key(&exposed) {
                    tracing::warn!(upstream = %name, prompt = %exposed, "another upstream exposes a prompt of that name; it keeps it");
                    continue;
                }
                let original = std::mem::replace(&mut prompt.name, exposed.clone());
                catalog
                    .prompt_routes
                    .insert(exposed, (Arc::clone(name), original));
                prompts.push(prompt);
            }
            for resource in listing.resources {
                catalog
                    .resource_owners
                    .entry(resource.uri.clone())
                    .or_insert_with(|| Arc::clone(name));
                resources.push(resource);
            }
            for template in listing.templates {
                catalog.template_owners.push((
                    template_prefix(&template.uri_template).to_owned(),
                    Arc::clone(name),
                ));
                templates.push(template);
            }
            capabilities.push(listing.capabilities.clone());
            catalog.reached.push(Reached {
                name: Arc::clone(name),
                capabilities: listing.capabilities,
                implementation: listing.implementation,
                instructions: listing.instructions,
            });
        }
        router.learn_unprefixed(
            unprefixed_names
                .iter()
                .map(|(tool, upstream)| (tool.as_str(), upstream.as_ref())),
        );
        catalog
            .template_owners
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        catalog.capabilities = union_capabilities(&capabilities);
        catalog.tools = Arc::new(tools);
        catalog.prompts = Arc::new(prompts);
        catalog.resources = Arc::new(resources);
        catalog.templates = Arc::new(templates);
        *lock(&self.catalog) = catalog;
    }

    /// The current tools (without refreshing them).
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        Arc::clone(&lock(&self.catalog).tools)
    }

    /// The pool's handle (for `/stats` and `/health`).
    pub fn pool_handle(&self) -> PoolHandle {
        self.service.handle()
    }

    fn is_stale(&self) -> bool {
        let changed = lock(&self.changes).has_changed().unwrap_or(false);
        changed || !lock(&self.catalog).missing.is_empty()
    }

    async fn refresh_if_stale(&self) {
        if self.is_stale() {
            self.refresh().await;
        }
    }

    /// Remembers the downstream session of a request, so that notifications can reach it.
    fn session<R>(
        &self,
        extensions: &rmcp::model::Extensions,
        peer: &Peer<RoleServer>,
        f: impl FnOnce(&mut DownstreamSession) -> R,
    ) -> Option<R> {
        let id = crate::serve::session_id(extensions)?;
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| !s.peer.is_transport_closed());
        let session = sessions.entry(id).or_insert_with(|| DownstreamSession {
            peer: peer.clone(),
            subscriptions: BTreeSet::new(),
            logging: false,
        });
        Some(f(session))
    }

    /// The upstream (and its name for it) of an exposed prompt name.
    fn prompt_route(&self, name: &str) -> Option<(Arc<str>, String)> {
        if let Some(route) = lock(&self.catalog).prompt_routes.get(name) {
            return Some(route.clone());
        }
        // Not listed (yet): the naming rules decide, and the upstream answers.
        self.service
            .router()
            .route(name)
            .map(|(upstream, name)| (upstream, name.to_owned()))
    }

    /// The upstream that owns a resource URI: the one that listed it, else the one whose
    /// template's literal prefix matches it, else the only upstream serving resources.
    fn resource_owner(&self, uri: &str) -> Result<Arc<str>, ErrorData> {
        let catalog = lock(&self.catalog);
        if let Some(owner) = catalog.resource_owners.get(uri) {
            return Ok(Arc::clone(owner));
        }
        if let Some((_, owner)) = catalog
            .template_owners
            .iter()
            .find(|(prefix, _)| !prefix.is_empty() && uri.starts_with(prefix.as_str()))
        {
            return Ok(Arc::clone(owner));
        }
        let serving: Vec<&Reached> = catalog
            .reached
            .iter()
            .filter(|r| r.capabilities.resources.is_some())
            .collect();
        match serving.as_slice() {
            [only] => Ok(Arc::clone(&only.name)),
            _ => Err(ErrorData::resource_not_found(
                "Resource not found",
                Some(serde_json::json!({ "uri": uri })),
            )),
        }
    }

    /// Sends `request` to `upstream` on behalf of the downstream request `cx` (its
    /// `_meta`, cancellation, progress and server→client requests), or of the gateway
    /// itself (`None`).
    async fn forward(
        &self,
        upstream: &Arc<str>,
        request: ClientRequest,
        cx: Option<&RequestContext<RoleServer>>,
    ) -> Result<ServerResult, ErrorData> {
        let get = self.service.pool().get(upstream);
        let session = match cx {
            Some(cx) => tokio::select! {
                session = get => session,
                () = cx.ct.cancelled() => {
                    return Err(ErrorData::from(mcp_tower::error::Cancelled {
                        layer: mcp_tower::error::Layer::Pool,
                        tool: String::new(),
                    }));
                }
            },
            None => get.await,
        }
        .map_err(|e| ErrorData::from(e.to_unavailable(upstream)))?;
        let result = session.request(request, cx).await;
        if let Err(UpstreamCallError::Transport(_)) = &result {
            session.mark_broken();
        }
        result.map_err(|e| forward_error(upstream, e))
    }

    /// The upstreams that declare logging (all of them, before any was reached).
    fn logging_upstreams(&self) -> Vec<Arc<str>> {
        let catalog = lock(&self.catalog);
        if catalog.reached.is_empty() {
            return self.service.pool().connector().upstreams();
        }
        catalog
            .reached
            .iter()
            .filter(|r| r.capabilities.logging.is_some())
            .map(|r| Arc::clone(&r.name))
            .collect()
    }

    /// Delivers the upstreams' notifications that belong to no request to the downstream
    /// sessions concerned, until the connector goes away: list changes to every session,
    /// resource updates to the sessions subscribed to the URI, log messages to the
    /// sessions that set a log level. (`subscriptions/listen` streams get theirs in
    /// [`ServerHandler::listen`].) Spawn it once.
    pub async fn relay_notifications(self) {
        let mut notifications = self.service.pool().connector().notifications();
        loop {
            let event = match notifications.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "upstream notifications were dropped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let peers: Vec<Peer<RoleServer>> = {
                let mut sessions = lock(&self.sessions);
                sessions.retain(|_, s| !s.peer.is_transport_closed());
                sessions
                    .values()
                    .filter(|s| match &event.notification {
                        ServerNotification::ResourceUpdatedNotification(n) => {
                            s.subscriptions.contains(&n.params.uri)
                        }
                        ServerNotification::LoggingMessageNotification(_) => s.logging,
                        _ => true,
                    })
                    .map(|s| s.peer.clone())
                    .collect()
            };
            for peer in peers {
                if let Err(error) = peer.send_notification(event.notification.clone()).await {
                    tracing::debug!(%error, "could not relay an upstream notification");
                }
            }
        }
    }

    /// Subscribes upstream to `uri` unless a downstream subscriber already made the
    /// gateway subscribe.
    async fn hold_subscription(
        &self,
        upstream: &Arc<str>,
        uri: &str,
        cx: Option<&RequestContext<RoleServer>>,
    ) -> Result<(), ErrorData> {
        let key = (Arc::clone(upstream), uri.to_owned());
        let first = {
            let mut held = lock(&self.upstream_subscriptions);
            let count = held.entry(key.clone()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if !first {
            return Ok(());
        }
        let request = ClientRequest::SubscribeRequest(SubscribeRequest::new(
            SubscribeRequestParams::new(uri),
        ));
        match self.forward(upstream, request, cx).await {
            Ok(_) => Ok(()),
            Err(error) => {
                self.release_count(&key);
                Err(error)
            }
        }
    }

    fn release_count(&self, key: &HeldSubscription) -> bool {
        let mut held = lock(&self.upstream_subscriptions);
        match held.get_mut(key) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                held.remove(key);
                true
            }
            None => false,
        }
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        let catalog = lock(&self.catalog);
        let config = ServerConfig::new(catalog.capabilities.clone());
        match catalog.reached.as_slice() {
            // One upstream: present it as it is.
            [only] if self.service.pool().connector().upstreams().len() == 1 => {
                let mut config =
                    config.with_server_info(only.implementation.clone().unwrap_or_else(|| {
                        Implementation::new("mcp-tower-gateway", env!("CARGO_PKG_VERSION"))
                    }));
                if let Some(instructions) = &only.instructions {
                    config = config.with_instructions(instructions.clone());
                }
                config
            }
            _ => {
                let upstreams = self.service.pool().connector().upstreams();
                let names: Vec<&str> = upstreams.iter().map(|u| u.as_ref()).collect();
                config
                    .with_server_info(Implementation::new(
                        "mcp-tower-gateway",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .with_instructions(format!(
                        "A gateway to the MCP servers {}: the tools and prompts of a namespaced server are named `<server>__<name>`.",
                        names.join(", ")
                    ))
            }
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.refresh_if_stale().await;
        Ok(ListToolsResult::with_all_items(Vec::clone(&self.tools())))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        lock(&self.catalog).tools_by_name.get(name).cloned()
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.refresh_if_stale().await;
        let prompts = Arc::clone(&lock(&self.catalog).prompts);
        Ok(ListPromptsResult::with_all_items(Vec::clone(&prompts)))
    }

    async fn get_prompt(
        &self,
        mut request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let Some((upstream, name)) = self.prompt_route(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt `{}`", request.name),
                None,
            ));
        };
        request.name = name;
        let request = ClientRequest::GetPromptRequest(GetPromptRequest::new(request));
        match self.forward(&upstream, request, Some(&context)).await? {
            ServerResult::GetPromptResult(result) => Ok(GetPromptResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(GetPromptResponse::InputRequired(result))
            }
            _ => Err(unexpected("prompts/get")),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.refresh_if_stale().await;
        let resources = Arc::clone(&lock(&self.catalog).resources);
        Ok(ListResourcesResult::with_all_items(Vec::clone(&resources)))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.refresh_if_stale().await;
        let templates = Arc::clone(&lock(&self.catalog).templates);
        Ok(ListResourceTemplatesResult::with_all_items(Vec::clone(
            &templates,
        )))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let upstream = self.resource_owner(&request.uri)?;
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request));
        match self.forward(&upstream, request, Some(&context)).await? {
            ServerResult::ReadResourceResult(result) => Ok(ReadResourceResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(ReadResourceResponse::InputRequired(result))
            }
            _ => Err(unexpected("resources/read")),
        }
    }

    async fn complete(
        &self,
        mut request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let upstream = match &mut request.r#ref {
            Reference::Prompt(prompt) => {
                let Some((upstream, name)) = self.prompt_route(&prompt.name) else {
                    return Err(ErrorData::invalid_params(
                        format!("unknown prompt `{}`", prompt.name),
                        None,
                    ));
                };
                prompt.name = name;
                upstream
            }
            Reference::Resource(template) => self.resource_owner(&template.uri)?,
            _ => {
                return Err(ErrorData::invalid_params(
                    "completion/complete: unknown kind of reference",
                    None,
                ));
            }
        };
        let request = ClientRequest::CompleteRequest(CompleteRequest::new(request));
        match self.forward(&upstream, request, Some(&context)).await? {
            ServerResult::CompleteResult(result) => Ok(result),
            _ => Err(unexpected("completion/complete")),
        }
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let upstreams = self.logging_upstreams();
        let mut first_error = None;
        let mut any = false;
        for upstream in &upstreams {
            let forwarded = ClientRequest::SetLevelRequest(SetLevelRequest::new(request.clone()));
            match self.forward(upstream, forwarded, Some(&context)).await {
                Ok(_) => any = true,
                Err(error) => {
                    tracing::debug!(%upstream, %error.message, "logging/setLevel failed upstream");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !any => Err(error),
            _ => {
                self.session(&context.extensions, &context.peer, |s| s.logging = true);
                Ok(())
            }
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let upstream = self.resource_owner(&request.uri)?;
        let already = self
            .session(&context.extensions, &context.peer, |s| {
                !s.subscriptions.insert(request.uri.clone())
            })
            .unwrap_or(false);
        if already {
            return Ok(());
        }
        let held = self
            .hold_subscription(&upstream, &request.uri, Some(&context))
            .await;
        if held.is_err() {
            self.session(&context.extensions, &context.peer, |s| {
                s.subscriptions.remove(&request.uri)
            });
        }
        held
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let upstream = self.resource_owner(&request.uri)?;
        let was = self
            .session(&context.extensions, &context.peer, |s| {
                s.subscriptions.remove(&request.uri)
            })
            .unwrap_or(false);
        let key = (Arc::clone(&upstream), request.uri.clone());
        let tell_upstream = if was {
            // The last subscriber gone: the gateway's upstream subscription goes too.
            self.release_count(&key)
        } else {
            // Not subscribed here: the upstream answers as it would, unless another
            // client holds the gateway's subscription (which must stay).
            !lock(&self.upstream_subscriptions).contains_key(&key)
        };
        if !tell_upstream {
            return Ok(());
        }
        let forwarded = ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(request));
        self.forward(&upstream, forwarded, Some(&context))
            .await
            .map(drop)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let catalog = lock(&self.catalog);
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resources_list_changed = requested.resources_list_changed;
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|uri| {
                    catalog.resource_owners.contains_key(uri.as_str())
                        || catalog
                            .template_owners
                            .iter()
                            .any(|(p, _)| !p.is_empty() && uri.starts_with(p.as_str()))
                })
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        let mut notifications = self.service.pool().connector().notifications();
        // The upstream sends resource updates to subscribed sessions: subscribe the
        // gateway's session for the stream's resources while it lasts.
        let uris: Vec<String> = subscription
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let mut held = Vec::new();
        for uri in &uris {
            let Ok(upstream) = self.resource_owner(uri) else {
                continue;
            };
            // On the gateway's own behalf: `resources/subscribe` is a session method,
            // which the stream's 2026-07-28 request `_meta` would make the upstream refuse.
            match self.hold_subscription(&upstream, uri, None).await {
                Ok(()) => held.push((upstream, uri.clone())),
                Err(error) => {
                    tracing::debug!(%uri, %error.message, "could not subscribe upstream")
                }
            }
        }
        let result = loop {
            let event = tokio::select! {
                () = subscription.cancelled() => break Ok(()),
                event = notifications.recv() => event,
            };
            let notification = match event {
                Ok(event) => event.notification,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break Ok(()),
            };
            if matches!(
                notification,
                ServerNotification::LoggingMessageNotification(_)
            ) {
                continue;
            }
            match subscription.sink().send(notification).await {
                Ok(()) => {}
                Err(rmcp::service::SubscriptionSendError::NotificationNotAccepted(_)) => {}
                Err(error) => {
                    tracing::debug!(%error, "subscription stream ended");
                    break Ok(());
                }
            }
        };
        for (upstream, uri) in held {
            let key = (Arc::clone(&upstream), uri.clone());
            if self.release_count(&key) {
                let request = ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(
                    UnsubscribeRequestParams::new(uri),
                ));
                if let Err(error) = self.forward(&upstream, request, None).await {
                    tracing::debug!(%error.message, "could not unsubscribe upstream");
                }
            }
        }
        result
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Registers the session, so list changes reach it.
        self.session(&context.extensions, &context.peer, |_| ());
    }
}
