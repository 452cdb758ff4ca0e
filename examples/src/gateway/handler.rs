//! [`Gateway`]: the `ServerHandler` that presents N upstream MCP servers as one, and
//! forwards every method but `tools/call` (which goes through the stack) to the upstream
//! that owns it.

// Logging, resource subscriptions, sampling and roots are deprecated by SEP-2577 but part
// of the protocol versions the gateway serves: it must forward them.
#![allow(deprecated)]

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use mcp_tower::{CallResolver, Principal};
use mcp_tower_pool::{
    Listed, PeerOutbox, PoolHandle, PoolService, UpstreamCallError, UpstreamNotification,
};
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
use tokio::sync::broadcast;

use super::forwarding::{ForwardConfig, Forwarding};
use super::lists::{self, Audience, Copies, Fetched, Keeping, ListItem, MergedHint, ReadCache};

/// How many upstream notifications a client session may fall behind before the newer ones
/// are dropped for it (see [`Gateway::relay_notifications`]).
const NOTIFICATION_QUEUE: usize = 64;

/// What the upstreams offer, as the gateway routes it; rebuilt from the latest listing of
/// each upstream whenever one is listed.
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
    /// Names refused because they would shadow a namespaced upstream's, sorted.
    refused: Vec<RefusedName>,
}

/// What an upstream declared at its handshake.
#[derive(Debug)]
struct Reached {
    name: Arc<str>,
    capabilities: ServerCapabilities,
    implementation: Option<Implementation>,
    instructions: Option<String>,
}

/// One upstream's latest lists (whoever they were listed for: they route, they are not
/// served) and what it declared at its handshake.
#[derive(Debug, Default)]
struct Listing {
    /// Whether the upstream was reached (its handshake seen).
    reached: bool,
    capabilities: ServerCapabilities,
    implementation: Option<Implementation>,
    instructions: Option<String>,
    tools: Vec<Tool>,
    prompts: Vec<Prompt>,
    resources: Vec<Resource>,
    templates: Vec<ResourceTemplate>,
}

/// An upstream resource subscription the gateway holds: (session key — the upstream's, or a
/// principal's own for a per-principal upstream — and URI).
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
    /// Its caller's principal, once a request told it (`logging/setLevel`,
    /// `resources/subscribe`): what a per-principal upstream's session says is for it
    /// alone.
    principal: Option<Principal>,
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
    /// Derives a caller's principal (the stack's partitioner), for private copies.
    resolver: Arc<CallResolver>,
    catalog: Arc<Mutex<Catalog>>,
    /// Each upstream's latest listing, the catalog's source.
    latest: Arc<Mutex<HashMap<Arc<str>, Listing>>>,
    /// The copies of upstream lists and resource reads the gateway serves from.
    copies: Arc<HeldCopies>,
    sessions: Arc<Mutex<HashMap<String, DownstreamSession>>>,
    /// Upstream resource subscriptions held for downstream subscribers, counted.
    upstream_subscriptions: Arc<Mutex<HashMap<HeldSubscription, usize>>>,
    /// The timeouts and the limit on forwarded requests.
    forwarding: Arc<Forwarding>,
}

/// Every copy the gateway keeps of what its upstreams answered.
#[derive(Debug, Default)]
struct HeldCopies {
    tools: Copies<Tool>,
    prompts: Copies<Prompt>,
    resources: Copies<Resource>,
    templates: Copies<ResourceTemplate>,
    reads: ReadCache,
    keeping: Option<Keeping>,
}

/// How many requests went upstream for what the gateway serves from its copies (for tests
/// and `/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyStats {
    /// `tools/list` requests sent upstream (each pagination counts once).
    pub tool_lists: u64,
    /// `prompts/list` requests sent upstream.
    pub prompt_lists: u64,
    /// `resources/list` requests sent upstream.
    pub resource_lists: u64,
    /// `resources/templates/list` requests sent upstream.
    pub template_lists: u64,
    /// `resources/read` requests answered from a held copy.
    pub read_hits: u64,
    /// `resources/read` requests sent upstream.
    pub read_misses: u64,
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
        other => ErrorData::from(mcp_tower::error::UpstreamUnavailable::with_detail(
            mcp_tower::error::Layer::Pool,
            upstream,
            other.reason(),
            &other,
        )),
    }
}

fn unexpected(method: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the upstream answered `{method}` with another kind of result"),
        None,
    )
}

/// A name an unprefixed upstream listed that has the shape of another upstream's
/// namespaced names: left out of the catalog rather than shadowing it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefusedName {
    /// `"tool"` or `"prompt"`.
    pub kind: &'static str,
    /// The unprefixed upstream that listed it.
    pub upstream: Arc<str>,
    /// The name it listed (`beta__drop_table`).
    pub name: String,
    /// The namespaced upstream whose names have that shape (`beta`).
    pub owner: Arc<str>,
}

/// What [`expose`] exposes: (upstream, name upstream, item under its exposed name).
type Exposed<T> = Vec<(Arc<str>, String, T)>;

/// Exposes each upstream's items (tools or prompts) under their gateway names, in upstream
/// order, with each item's name upstream; a name two upstreams would expose stays with the
/// first, and a name an unprefixed upstream lists in another upstream's namespace
/// (`beta__x` while `beta` is namespaced) is refused (returned apart). `rename` sets an
/// item's name and returns the one it had.
fn expose<'a, T: Clone + 'a>(
    router: &mcp_tower_pool::UpstreamRouter,
    lists: impl IntoIterator<Item = (&'a Arc<str>, &'a [T])>,
    kind: &'static str,
    rename: impl Fn(&mut T, String) -> String,
) -> (Exposed<T>, Vec<RefusedName>) {
    let mut seen = HashSet::new();
    let mut exposed = Vec::new();
    let mut refused = Vec::new();
    for (upstream, items) in lists {
        for item in items {
            let mut item = item.clone();
            let original = rename(&mut item, String::new());
            let Some(name) = router.exposed_name(upstream, &original) else {
                continue;
            };
            if let Some(owner) = router.shadows(upstream, &name) {
                refused.push(RefusedName {
                    kind,
                    upstream: Arc::clone(upstream),
                    name,
                    owner,
                });
                continue;
            }
            if !seen.insert(name.clone()) {
                tracing::warn!(%upstream, kind, name = %name, "another upstream exposes one of that name; it keeps it");
                continue;
            }
            rename(&mut item, name);
            exposed.push((Arc::clone(upstream), original, item));
        }
    }
    (exposed, refused)
}

/// [`expose`] for tools, with their name upstream.
fn expose_tools<'a>(
    router: &mcp_tower_pool::UpstreamRouter,
    lists: impl IntoIterator<Item = (&'a Arc<str>, &'a [Tool])>,
) -> (Exposed<Tool>, Vec<RefusedName>) {
    expose(router, lists, "tool", |tool: &mut Tool, name| {
        std::mem::replace(&mut tool.name, name.into()).into_owned()
    })
}

/// [`expose`] for prompts, with their name upstream.
fn expose_prompts<'a>(
    router: &mcp_tower_pool::UpstreamRouter,
    lists: impl IntoIterator<Item = (&'a Arc<str>, &'a [Prompt])>,
) -> (Exposed<Prompt>, Vec<RefusedName>) {
    expose(router, lists, "prompt", |prompt: &mut Prompt, name| {
        std::mem::replace(&mut prompt.name, name)
    })
}

/// The method of a request the gateway forwards (for its `[forward]` timeout).
fn method_of(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::GetPromptRequest(_) => "prompts/get",
        ClientRequest::ReadResourceRequest(_) => "resources/read",
        ClientRequest::CompleteRequest(_) => "completion/complete",
        ClientRequest::SetLevelRequest(_) => "logging/setLevel",
        ClientRequest::SubscribeRequest(_) => "resources/subscribe",
        ClientRequest::UnsubscribeRequest(_) => "resources/unsubscribe",
        _ => "request",
    }
}

/// The method-not-found error rmcp's own handlers answer for a capability nobody declares.
fn not_declared(method: &str) -> ErrorData {
    ErrorData::new(
        rmcp::model::ErrorCode::METHOD_NOT_FOUND,
        format!("{method}: no upstream of this gateway declares it"),
        None,
    )
}

/// Where a kind of list lives in the gateway: its copies, and its slot in a listing.
trait Listable: Sized {
    fn copies(held: &HeldCopies) -> &Copies<Self>;
    fn keep(listing: &mut Listing, items: &[Self]);
}

/// The two traits of a kind of list: how it is listed upstream ([`ListItem`]) and where the
/// gateway keeps it ([`Listable`]).
macro_rules! list_kind {
    ($item:ty, $kind:literal, $method:literal, $field:ident, $slot:ident, $capability:ident, $fetch:ident) => {
        impl ListItem for $item {
            const KIND: &'static str = $kind;
            const METHOD: &'static str = $method;
            fn declared(capabilities: &ServerCapabilities) -> bool {
                capabilities.$capability.is_some()
            }
            fn fetch<'a>(
                session: &'a mcp_tower_pool::McpSession,
                downstream: Option<&'a RequestContext<RoleServer>>,
            ) -> impl std::future::Future<Output = Result<Listed<Self>, UpstreamCallError>> + Send + 'a
            {
                session.$fetch(downstream)
            }
        }

        impl Listable for $item {
            fn copies(held: &HeldCopies) -> &Copies<Self> {
                &held.$field
            }
            fn keep(listing: &mut Listing, items: &[Self]) {
                listing.$slot = items.to_vec();
            }
        }
    };
}

list_kind!(
    Tool,
    "tools",
    "tools/list",
    tools,
    tools,
    tools,
    list_all_tools
);
list_kind!(
    Prompt,
    "prompts",
    "prompts/list",
    prompts,
    prompts,
    prompts,
    list_all_prompts
);
list_kind!(
    Resource,
    "resources",
    "resources/list",
    resources,
    resources,
    resources,
    list_all_resources
);
list_kind!(
    ResourceTemplate,
    "resource templates",
    "resources/templates/list",
    templates,
    templates,
    resources,
    list_all_resource_templates
);

/// What a merged list request found: each serving upstream's copy, in upstream order, and
/// the merged hint.
struct Merged<T> {
    lists: Vec<(Arc<str>, Arc<Listed<T>>)>,
    hint: MergedHint,
    /// Whether any upstream serves the kind (or could not be asked).
    served: bool,
}

impl Gateway {
    /// A gateway for the upstreams of `service`, keeping upstream lists fresh for
    /// `min_list_interval` at least (see [`GatewayConfig`](super::GatewayConfig)); private
    /// copies are kept per principal, as `resolver`'s partitioner derives it.
    pub fn new(
        service: &PoolService,
        resolver: Arc<CallResolver>,
        min_list_interval: Duration,
    ) -> Self {
        let copies = HeldCopies {
            keeping: Some(Keeping {
                min_interval: min_list_interval,
            }),
            ..HeldCopies::default()
        };
        Self {
            service: service.clone(),
            resolver,
            catalog: Arc::new(Mutex::new(Catalog::default())),
            latest: Arc::default(),
            copies: Arc::new(copies),
            sessions: Arc::default(),
            upstream_subscriptions: Arc::default(),
            forwarding: Arc::new(Forwarding::new(ForwardConfig::default())),
        }
    }

    /// Bounds what the gateway forwards itself (every method but `tools/call`) by
    /// `config`: per-method timeouts and one concurrency limit with a bounded queue
    /// (default: [`ForwardConfig::default`]).
    pub fn with_forwarding(mut self, config: ForwardConfig) -> Self {
        self.forwarding = Arc::new(Forwarding::new(config));
        self
    }

    fn keeping(&self) -> Keeping {
        self.copies.keeping.unwrap_or(Keeping {
            min_interval: Duration::from_secs(1),
        })
    }

    /// Lists every upstream's tools, prompts, resources and templates on the gateway's own
    /// behalf (in parallel, each kind only where the upstream declares it) and rebuilds the
    /// catalog. An upstream that cannot be reached is left out (and tried again by the next
    /// list request). Returns the tools.
    pub async fn refresh_tools(&self) -> Arc<Vec<Tool>> {
        let upstreams = self.service.pool().connector().upstreams();
        futures_util::future::join_all(upstreams.iter().map(|upstream| async move {
            let _ = tokio::join!(
                self.list_for::<Tool>(upstream, Audience::Gateway, None),
                self.list_for::<Prompt>(upstream, Audience::Gateway, None),
                self.list_for::<Resource>(upstream, Audience::Gateway, None),
                self.list_for::<ResourceTemplate>(upstream, Audience::Gateway, None),
            );
        }))
        .await;
        self.tools()
    }

    /// What the gateway asked of its upstreams so far for the lists and reads it serves
    /// from its copies.
    pub fn copy_stats(&self) -> CopyStats {
        CopyStats {
            tool_lists: self.copies.tools.relists(),
            prompt_lists: self.copies.prompts.relists(),
            resource_lists: self.copies.resources.relists(),
            template_lists: self.copies.templates.relists(),
            read_hits: self.copies.reads.hits.load(Ordering::Relaxed),
            read_misses: self.copies.reads.misses.load(Ordering::Relaxed),
        }
    }

    /// One upstream's list of kind `T` for `who`, into the catalog when listed now; logs a
    /// failure. `Ok(None)`: the upstream does not serve the kind.
    async fn list_for<T: ListItem + Listable>(
        &self,
        upstream: &Arc<str>,
        who: Audience,
        downstream: Option<&RequestContext<RoleServer>>,
    ) -> Result<Option<lists::Copy<T>>, ()> {
        // A caller's list of a per-principal upstream rides the caller's own session and is
        // kept for the caller alone; the gateway's own listing uses the upstream's key.
        let private = self.service.is_per_principal(upstream);
        let session = match who {
            Audience::Principal(principal) => self.service.session_key(upstream, || principal),
            Audience::Anonymous => self.service.session_key(upstream, || Principal::ANONYMOUS),
            Audience::Everyone | Audience::Gateway => Ok(Arc::clone(upstream)),
        };
        let session = match session {
            Ok(session) => session,
            Err(error) => {
                tracing::debug!(%upstream, kind = T::KIND, %error.message, "not listed for this caller");
                return Err(());
            }
        };
        let fetched = T::copies(&self.copies)
            .get(
                self.service.pool(),
                upstream,
                &session,
                private,
                who,
                downstream,
                || self.service.pool().connector().list_generation(upstream),
                self.keeping(),
                &self.forwarding,
                |name, info| self.seen(name, info),
            )
            .await;
        match fetched {
            Ok(Fetched::List(copy, listed_now)) => {
                if listed_now {
                    {
                        let mut latest = lock(&self.latest);
                        let listing = latest.entry(Arc::clone(upstream)).or_default();
                        T::keep(listing, &copy.listed.items);
                    }
                    self.rebuild_catalog();
                }
                Ok(Some(copy))
            }
            Ok(Fetched::NotServed) => Ok(None),
            Err(error) => {
                tracing::warn!(%upstream, kind = T::KIND, %error, "could not list the upstream");
                Err(())
            }
        }
    }

    /// Remembers what an upstream declared at its handshake.
    fn seen(&self, upstream: &Arc<str>, info: Option<Arc<rmcp::model::ServerPeerInfo>>) {
        let changed = {
            let mut latest = lock(&self.latest);
            let listing = latest.entry(Arc::clone(upstream)).or_default();
            let capabilities = info
                .as_ref()
                .map(|i| i.capabilities.clone())
                .unwrap_or_default();
            let changed = !listing.reached || listing.capabilities != capabilities;
            listing.reached = true;
            listing.capabilities = capabilities;
            listing.implementation = info.as_ref().and_then(|i| i.server_info.clone());
            listing.instructions = info.as_ref().and_then(|i| i.instructions.clone());
            changed
        };
        if changed {
            self.rebuild_catalog();
        }
    }

    /// Every serving upstream's list of kind `T` for the caller of `cx`: copies while fresh
    /// (public ones shared, private ones the caller's own), else listed now on the caller's
    /// behalf.
    async fn merged<T: ListItem + Listable>(&self, cx: &RequestContext<RoleServer>) -> Merged<T> {
        let who = self.audience_of(cx);
        let upstreams: Vec<Arc<str>> = {
            let latest = lock(&self.latest);
            self.service
                .pool()
                .connector()
                .upstreams()
                .into_iter()
                .filter(|u| {
                    latest
                        .get(u)
                        .is_none_or(|l| !l.reached || T::declared(&l.capabilities))
                })
                .collect()
        };
        let results = futures_util::future::join_all(
            upstreams
                .iter()
                .map(|upstream| self.list_for::<T>(upstream, who, Some(cx))),
        )
        .await;
        let now = tokio::time::Instant::now();
        let mut merged = Merged {
            lists: Vec::new(),
            hint: MergedHint::default(),
            served: false,
        };
        for (upstream, result) in upstreams.into_iter().zip(results) {
            match result {
                Ok(Some(copy)) => {
                    merged.served = true;
                    merged.hint.add(&copy, now);
                    merged.lists.push((upstream, copy.listed));
                }
                Ok(None) => {}
                Err(()) => {
                    merged.served = true;
                    merged.hint.incomplete();
                }
            }
        }
        merged
    }

    /// Rebuilds the routing catalog from every upstream's latest listing.
    fn rebuild_catalog(&self) {
        let router = self.service.router();
        let upstreams = self.service.pool().connector().upstreams();
        let latest = lock(&self.latest);
        let listings: Vec<(&Arc<str>, &Listing)> = upstreams
            .iter()
            .filter_map(|u| latest.get_key_value(u))
            .collect();
        let mut catalog = Catalog::default();
        let (tools, mut refused) = expose_tools(
            router,
            listings.iter().map(|(u, l)| (*u, l.tools.as_slice())),
        );
        // Each exposed tool name goes to the upstream that listed it (never re-parsed).
        router.learn(tools.iter().map(|(upstream, original, tool)| {
            (tool.name.as_ref(), upstream.as_ref(), original.as_str())
        }));
        for (_, _, tool) in &tools {
            catalog
                .tools_by_name
                .insert(tool.name.to_string(), tool.clone());
        }
        let (prompts, refused_prompts) = expose_prompts(
            router,
            listings.iter().map(|(u, l)| (*u, l.prompts.as_slice())),
        );
        refused.extend(refused_prompts);
        refused.sort();
        for (upstream, original, prompt) in &prompts {
            catalog.prompt_routes.insert(
                prompt.name.clone(),
                (Arc::clone(upstream), original.clone()),
            );
        }
        let mut resources = Vec::new();
        let mut templates = Vec::new();
        let mut capabilities = Vec::new();
        for (name, listing) in &listings {
            for resource in &listing.resources {
                catalog
                    .resource_owners
                    .entry(resource.uri.clone())
                    .or_insert_with(|| Arc::clone(name));
                resources.push(resource.clone());
            }
            for template in &listing.templates {
                catalog.template_owners.push((
                    template_prefix(&template.uri_template).to_owned(),
                    Arc::clone(name),
                ));
                templates.push(template.clone());
            }
            if listing.reached {
                capabilities.push(listing.capabilities.clone());
                catalog.reached.push(Reached {
                    name: Arc::clone(name),
                    capabilities: listing.capabilities.clone(),
                    implementation: listing.implementation.clone(),
                    instructions: listing.instructions.clone(),
                });
            }
        }
        catalog
            .template_owners
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        catalog.capabilities = union_capabilities(&capabilities);
        catalog.tools = Arc::new(tools.into_iter().map(|(_, _, t)| t).collect());
        catalog.prompts = Arc::new(prompts.into_iter().map(|(_, _, p)| p).collect());
        catalog.resources = Arc::new(resources);
        catalog.templates = Arc::new(templates);
        drop(latest);
        let mut current = lock(&self.catalog);
        for name in refused.iter().filter(|r| !current.refused.contains(r)) {
            tracing::warn!(
                upstream = %name.upstream,
                kind = name.kind,
                name = %name.name,
                owner = %name.owner,
                "refused: upstream `{}` (namespace = false) lists {} `{}`, a name in namespaced upstream `{}`'s namespace; it is left out so that `{}` always reaches `{}`",
                name.upstream, name.kind, name.name, name.owner, name.name, name.owner,
            );
        }
        catalog.refused = refused;
        *current = catalog;
    }

    /// The names left out of the catalog because an unprefixed upstream listed them in a
    /// namespaced upstream's namespace (each is logged once, at warn level, when refused).
    pub fn refused_names(&self) -> Vec<RefusedName> {
        lock(&self.catalog).refused.clone()
    }

    /// The current tools (without listing them again).
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        Arc::clone(&lock(&self.catalog).tools)
    }

    /// The pool's handle (for `/stats` and `/health`).
    pub fn pool_handle(&self) -> PoolHandle {
        self.service.handle()
    }

    /// Whether the catalog knows upstreams and none of them declares what `declared` asks.
    fn nobody_declares(&self, declared: impl Fn(&ServerCapabilities) -> bool) -> bool {
        let catalog = lock(&self.catalog);
        !catalog.reached.is_empty() && !declared(&catalog.capabilities)
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
            principal: None,
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
        let method = method_of(&request);
        self.forwarding
            .run(method, self.forward_unbounded(upstream, request, cx))
            .await
    }

    /// [`forward`](Self::forward) without the `[forward]` bounds.
    async fn forward_unbounded(
        &self,
        upstream: &Arc<str>,
        request: ClientRequest,
        cx: Option<&RequestContext<RoleServer>>,
    ) -> Result<ServerResult, ErrorData> {
        // The caller's own session to a per-principal upstream; the shared one otherwise
        // (and for the gateway's own requests).
        let key = match cx {
            Some(cx) => self
                .service
                .session_key(upstream, || self.resolver.partitioner().principal(Some(cx)))?,
            None => Arc::clone(upstream),
        };
        let get = self.service.pool().get(&key);
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
    /// resource updates to the sessions subscribed to the URI. (`subscriptions/listen`
    /// streams get theirs in [`ServerHandler::listen`]. Upstream log messages are not
    /// published there: the connector delivers each to the client of its request, or to
    /// no one.) Spawn it once.
    ///
    /// Each session gets the notifications through its own bounded queue
    /// ([`PeerOutbox`](mcp_tower_pool::PeerOutbox)): a client that does not read its stream
    /// loses its own (counted: `relay_notifications_dropped`) and holds up no one else.
    pub async fn relay_notifications(self) {
        let connector = self.service.pool().connector();
        let mut notifications = connector.notifications();
        let mut outboxes: HashMap<String, PeerOutbox> = HashMap::new();
        loop {
            let event = match notifications.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "upstream notifications were dropped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if matches!(
                event.notification,
                ServerNotification::ResourceUpdatedNotification(_)
                    | ServerNotification::ResourceListChangedNotification(_)
            ) {
                // A held read may be out of date: the next read goes upstream.
                self.copies.reads.clear();
            }
            let peers: Vec<(String, Peer<RoleServer>)> = {
                let mut sessions = lock(&self.sessions);
                sessions.retain(|_, s| !s.peer.is_transport_closed());
                outboxes.retain(|id, outbox| sessions.contains_key(id) && !outbox.is_closed());
                sessions
                    .iter()
                    .filter(|(_, s)| match &event.notification {
                        ServerNotification::ResourceUpdatedNotification(n) => {
                            s.subscriptions.contains(&n.params.uri)
                        }
                        ServerNotification::LoggingMessageNotification(_) => s.logging,
                        _ => true,
                    })
                    .filter(|(_, s)| self.may_hear(&event, s.principal))
                    .map(|(id, s)| (id.clone(), s.peer.clone()))
                    .collect()
            };
            for (id, peer) in peers {
                outboxes
                    .entry(id)
                    .or_insert_with(|| connector.outbox(peer, NOTIFICATION_QUEUE))
                    .push(event.notification.clone());
            }
        }
    }

    /// The principal of a request, as the stack's partitioner derives it.
    fn principal_of(&self, cx: &RequestContext<RoleServer>) -> Principal {
        self.resolver.partitioner().principal(Some(cx))
    }

    /// Whose private copies (lists, reads) a request may be served and fill: its
    /// principal's, or none for an anonymous caller (unless the stack says
    /// `anonymous = "shared"`: then the anonymous callers are one principal).
    fn audience_of(&self, cx: &RequestContext<RoleServer>) -> Audience {
        let principal = self.principal_of(cx);
        if principal.is_anonymous() && self.resolver.anonymous() == mcp_tower::Anonymous::Bypass {
            Audience::Anonymous
        } else {
            Audience::Principal(principal)
        }
    }

    /// The pool key of the session a request for `upstream` rides (see
    /// [`PoolService::session_key`]): a subscription is held per session.
    fn subscription_session(
        &self,
        upstream: &Arc<str>,
        cx: Option<&RequestContext<RoleServer>>,
    ) -> Result<Arc<str>, ErrorData> {
        match cx {
            Some(cx) => self.service.session_key(upstream, || self.principal_of(cx)),
            None => Ok(Arc::clone(upstream)),
        }
    }

    /// Whether a downstream caller of `principal` may hear `event`: anything from a shared
    /// session; from a per-principal upstream's session of one principal, only list
    /// changes (which say nothing about anyone's state) unless the caller is that
    /// principal.
    fn may_hear(&self, event: &UpstreamNotification, principal: Option<Principal>) -> bool {
        if event.session == event.upstream {
            return true;
        }
        let content_free = matches!(
            event.notification,
            ServerNotification::ToolListChangedNotification(_)
                | ServerNotification::PromptListChangedNotification(_)
                | ServerNotification::ResourceListChangedNotification(_)
        );
        content_free
            || principal.is_some_and(|p| {
                self.service
                    .session_key(&event.upstream, || p)
                    .is_ok_and(|key| key == event.session)
            })
    }

    /// Subscribes upstream to `uri` unless a downstream subscriber already made the
    /// gateway subscribe (on the same session: the caller's own for a per-principal
    /// upstream).
    async fn hold_subscription(
        &self,
        upstream: &Arc<str>,
        uri: &str,
        cx: Option<&RequestContext<RoleServer>>,
    ) -> Result<(), ErrorData> {
        let key = (self.subscription_session(upstream, cx)?, uri.to_owned());
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
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let merged = self.merged::<Tool>(&context).await;
        if !merged.served && self.nobody_declares(|c| c.tools.is_some()) {
            return Err(not_declared("tools/list"));
        }
        let router = self.service.router();
        let (tools, _) = expose_tools(
            router,
            merged.lists.iter().map(|(u, l)| (u, l.items.as_slice())),
        );
        Ok(
            ListToolsResult::with_all_items(tools.into_iter().map(|(_, _, t)| t).collect())
                .with_ttl_ms(merged.hint.ttl_ms())
                .with_cache_scope(merged.hint.scope()),
        )
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        lock(&self.catalog).tools_by_name.get(name).cloned()
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let merged = self.merged::<Prompt>(&context).await;
        if !merged.served && self.nobody_declares(|c| c.prompts.is_some()) {
            return Err(not_declared("prompts/list"));
        }
        let router = self.service.router();
        let (prompts, _) = expose_prompts(
            router,
            merged.lists.iter().map(|(u, l)| (u, l.items.as_slice())),
        );
        Ok(
            ListPromptsResult::with_all_items(prompts.into_iter().map(|(_, _, p)| p).collect())
                .with_ttl_ms(merged.hint.ttl_ms())
                .with_cache_scope(merged.hint.scope()),
        )
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
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let merged = self.merged::<Resource>(&context).await;
        if !merged.served && self.nobody_declares(|c| c.resources.is_some()) {
            return Err(not_declared("resources/list"));
        }
        let resources = merged
            .lists
            .iter()
            .flat_map(|(_, l)| l.items.iter().cloned())
            .collect();
        Ok(ListResourcesResult::with_all_items(resources)
            .with_ttl_ms(merged.hint.ttl_ms())
            .with_cache_scope(merged.hint.scope()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let merged = self.merged::<ResourceTemplate>(&context).await;
        if !merged.served && self.nobody_declares(|c| c.resources.is_some()) {
            return Err(not_declared("resources/templates/list"));
        }
        let templates = merged
            .lists
            .iter()
            .flat_map(|(_, l)| l.items.iter().cloned())
            .collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates)
            .with_ttl_ms(merged.hint.ttl_ms())
            .with_cache_scope(merged.hint.scope()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let upstream = self.resource_owner(&request.uri)?;
        // A retry of a multi-round-trip read carries the client's answers: its result is
        // for that exchange only, never held nor served from a copy.
        let continuation = request.input_responses.is_some() || request.request_state.is_some();
        let who = self.audience_of(&context);
        let reads = &self.copies.reads;
        if !continuation && let Some(held) = reads.get(&upstream, &request.uri, who) {
            return Ok(ReadResourceResponse::Complete(held));
        }
        let uri = request.uri.clone();
        let asked_at = tokio::time::Instant::now();
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request));
        match self.forward(&upstream, request, Some(&context)).await? {
            ServerResult::ReadResourceResult(result) => {
                if !continuation {
                    let private = self.service.is_per_principal(&upstream);
                    reads.put(&upstream, &uri, who, private, &result, asked_at);
                }
                Ok(ReadResourceResponse::Complete(result))
            }
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
                let principal = self.principal_of(&context);
                self.session(&context.extensions, &context.peer, |s| {
                    s.logging = true;
                    s.principal = Some(principal);
                });
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
        let principal = self.principal_of(&context);
        let already = self
            .session(&context.extensions, &context.peer, |s| {
                s.principal = Some(principal);
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
        let key = (
            self.subscription_session(&upstream, Some(&context))?,
            request.uri.clone(),
        );
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
        let principal = self.principal_of(subscription.request_context());
        let result = loop {
            let event = tokio::select! {
                () = subscription.cancelled() => break Ok(()),
                event = notifications.recv() => event,
            };
            let notification = match event {
                Ok(event) if !self.may_hear(&event, Some(principal)) => continue,
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
            let key = (Arc::clone(&upstream), uri.clone()); // the gateway's own session
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
