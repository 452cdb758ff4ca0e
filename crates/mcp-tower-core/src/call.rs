//! [`ToolCall`]: the request every mcp-tower layer handles, and the [`CallResolver`] that
//! derives its policy, principal and key.

use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, OnceLock},
};

use rmcp::{
    RoleServer,
    model::{CallToolRequestParams, JsonObject},
    service::RequestContext,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    Anonymous, CacheScope, CallKey, DefaultPartitioner, KeySecret, Partition, Partitioner,
    PolicyTable, Principal, ToolPolicy,
};

/// What every call of a stack shares: the [`PolicyTable`], the [`Partitioner`], the
/// [`KeySecret`] and how anonymous callers are treated ([`Anonymous`]). Built once (by the
/// facade's `McpStack`), shared by `Arc`.
#[derive(Debug)]
pub struct CallResolver {
    policies: PolicyTable,
    partitioner: Arc<dyn Partitioner>,
    secret: KeySecret,
    anonymous: Anonymous,
}

impl Default for CallResolver {
    fn default() -> Self {
        Self::new(PolicyTable::default())
    }
}

impl CallResolver {
    /// A resolver with these policies, the default partitioner and the process secret.
    pub fn new(policies: PolicyTable) -> Self {
        let secret = KeySecret::process();
        Self {
            policies,
            partitioner: Arc::new(DefaultPartitioner::new(secret)),
            secret,
            anonymous: Anonymous::default(),
        }
    }

    /// How calls of [`Principal::ANONYMOUS`] use private tools (default
    /// [`Anonymous::Bypass`]: not cached, not deduplicated).
    pub fn with_anonymous(mut self, anonymous: Anonymous) -> Self {
        self.anonymous = anonymous;
        self
    }

    /// How calls of [`Principal::ANONYMOUS`] use private tools.
    pub fn anonymous(&self) -> Anonymous {
        self.anonymous
    }

    /// Uses `secret` for call keys (and for the default partitioner's digests).
    pub fn with_secret(mut self, secret: KeySecret) -> Self {
        self.secret = secret;
        self.partitioner = Arc::new(DefaultPartitioner::new(secret));
        self
    }

    /// Uses `partitioner` to derive principals.
    pub fn with_partitioner(self, partitioner: impl Partitioner) -> Self {
        self.with_shared_partitioner(Arc::new(partitioner))
    }

    /// Uses an already shared `partitioner` to derive principals.
    pub fn with_shared_partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// The policy table.
    pub fn policies(&self) -> &PolicyTable {
        &self.policies
    }

    /// The partitioner.
    pub fn partitioner(&self) -> &dyn Partitioner {
        self.partitioner.as_ref()
    }

    /// The key secret.
    pub fn secret(&self) -> &KeySecret {
        &self.secret
    }

    /// The resolver used by [`ToolCall::new`]: an empty policy table (every tool
    /// conservative), the default partitioner and the process secret.
    pub fn shared_default() -> Arc<CallResolver> {
        static DEFAULT: OnceLock<Arc<CallResolver>> = OnceLock::new();
        Arc::clone(DEFAULT.get_or_init(|| Arc::new(CallResolver::default())))
    }
}

struct CallInner {
    params: CallToolRequestParams,
    context: Option<RequestContext<RoleServer>>,
    resolver: Arc<CallResolver>,
    received_at: Instant,
    policy: OnceLock<Arc<ToolPolicy>>,
    anonymous_bypass: OnceLock<bool>,
    principal: OnceLock<Principal>,
    key: OnceLock<CallKey>,
}

/// One `tools/call`, as every layer sees it.
///
/// It owns rmcp's [`CallToolRequestParams`] and, when it came through an rmcp server, the
/// [`RequestContext`] (cancellation token, peer for progress notifications, HTTP request
/// parts in its extensions). Derived data is computed at most once per call and shared by
/// every layer: the [`ToolPolicy`] ([`ToolCall::policy`]), the [`Principal`]
/// ([`ToolCall::principal`]) and the [`CallKey`] ([`ToolCall::key`]). The arrival time is
/// read once ([`ToolCall::received_at`]).
///
/// Cloning is cheap (one reference count): a retry sends a clone of the same call, and its
/// clones share the memoized key and policy.
///
/// ```
/// use mcp_tower_core::ToolCall;
/// use rmcp::object;
///
/// let a = ToolCall::new("weather", object!({"city": "Oslo", "units": "metric"}));
/// let b = ToolCall::new("weather", object!({"units": "metric", "city": "Oslo"}));
/// assert_eq!(a.name(), "weather");
/// assert_eq!(a.key(), b.key());
/// ```
#[derive(Clone)]
pub struct ToolCall {
    inner: Arc<CallInner>,
}

impl fmt::Debug for ToolCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCall")
            .field("name", &self.name())
            .field("arguments", &self.inner.params.arguments)
            .field("has_context", &self.inner.context.is_some())
            .finish_non_exhaustive()
    }
}

impl ToolCall {
    /// A call without an rmcp context (tests, benches), resolved by
    /// [`CallResolver::shared_default`].
    ///
    /// `arguments` is a JSON object (`rmcp::object!({...})`) or `None`.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        arguments: impl Into<Option<JsonObject>>,
    ) -> Self {
        Self::with_resolver(name, arguments, CallResolver::shared_default())
    }

    /// A call without an rmcp context, resolved by `resolver`.
    pub fn with_resolver(
        name: impl Into<Cow<'static, str>>,
        arguments: impl Into<Option<JsonObject>>,
        resolver: Arc<CallResolver>,
    ) -> Self {
        let mut params = CallToolRequestParams::new(name);
        params.arguments = arguments.into();
        Self::from_request(params, None, resolver)
    }

    /// The call rmcp handed to `ServerHandler::call_tool`.
    pub fn from_request(
        params: CallToolRequestParams,
        context: Option<RequestContext<RoleServer>>,
        resolver: Arc<CallResolver>,
    ) -> Self {
        Self {
            inner: Arc::new(CallInner {
                params,
                context,
                resolver,
                received_at: Instant::now(),
                policy: OnceLock::new(),
                anonymous_bypass: OnceLock::new(),
                principal: OnceLock::new(),
                key: OnceLock::new(),
            }),
        }
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.inner.params.name
    }

    /// The arguments, if any were sent.
    pub fn arguments(&self) -> Option<&JsonObject> {
        self.inner.params.arguments.as_ref()
    }

    /// The request as rmcp decoded it (name, arguments, `_meta`, MRTR fields).
    pub fn params(&self) -> &CallToolRequestParams {
        &self.inner.params
    }

    /// The rmcp request context, when the call came through an rmcp server.
    pub fn context(&self) -> Option<&RequestContext<RoleServer>> {
        self.inner.context.as_ref()
    }

    /// The request's cancellation token (cancelled when the client sends
    /// `notifications/cancelled` or goes away), when there is a context.
    pub fn cancellation(&self) -> Option<&CancellationToken> {
        self.inner.context.as_ref().map(|cx| &cx.ct)
    }

    /// Whether the client has cancelled the call.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// The resolver the call was built with.
    pub fn resolver(&self) -> &Arc<CallResolver> {
        &self.inner.resolver
    }

    /// When the call entered the stack (one clock read per call, on tokio's clock so
    /// tests with a paused clock see consistent times).
    pub fn received_at(&self) -> Instant {
        self.inner.received_at
    }

    /// Whether this call continues a multi-round-trip exchange (it carries
    /// `inputResponses` or `requestState` from an earlier `InputRequired` result). Such
    /// calls are never cached or shared: their answer depends on state outside the key.
    pub fn is_continuation(&self) -> bool {
        self.inner.params.input_responses.is_some() || self.inner.params.request_state.is_some()
    }

    /// The tool's policy, resolved once per call. For a continuation
    /// ([`ToolCall::is_continuation`]), and for an anonymous caller of a private tool
    /// ([`ToolCall::bypasses_anonymous`]), caching and deduplication are off.
    pub fn policy(&self) -> &ToolPolicy {
        self.inner.policy.get_or_init(|| {
            let policy = self.inner.resolver.policies().resolve(self.name());
            let shares = policy.cacheable() || policy.dedup;
            let anonymous = shares
                && policy.scope == CacheScope::Private
                && self.inner.resolver.anonymous == Anonymous::Bypass
                && self.principal().is_anonymous();
            let _ = self.inner.anonymous_bypass.set(anonymous);
            if shares && (anonymous || self.is_continuation()) {
                let mut own = ToolPolicy::clone(&policy);
                own.cache_ttl = None;
                own.dedup = false;
                Arc::new(own)
            } else {
                policy
            }
        })
    }

    /// Whether the call would have been cached or deduplicated, but is not because its tool
    /// is private and its caller anonymous ([`Principal::ANONYMOUS`] with
    /// [`Anonymous::Bypass`]). The cache and the deduplicator count these calls as
    /// `bypassed_anonymous`.
    pub fn bypasses_anonymous(&self) -> bool {
        self.policy();
        self.inner.anonymous_bypass.get().copied().unwrap_or(false)
    }

    /// The caller's principal, derived once per call by the resolver's partitioner.
    pub fn principal(&self) -> Principal {
        *self.inner.principal.get_or_init(|| {
            self.inner
                .resolver
                .partitioner()
                .principal(self.inner.context.as_ref())
        })
    }

    /// The partition the call's results belong to: shared for public tools, the caller's
    /// principal for private ones.
    pub fn partition(&self) -> Partition {
        match self.policy().scope {
            CacheScope::Public => Partition::Shared,
            CacheScope::Private => Partition::Principal(self.principal()),
        }
    }

    /// The call's key (tool, canonical arguments, partition), computed once per call.
    pub fn key(&self) -> CallKey {
        *self.inner.key.get_or_init(|| {
            CallKey::compute(
                self.inner.resolver.secret(),
                self.name(),
                self.arguments(),
                self.partition(),
            )
        })
    }

    /// A copy of this call whose request context carries `token` as its cancellation
    /// token. The derived data (policy, principal, key, arrival time) is carried over, not
    /// recomputed.
    ///
    /// For a layer that runs one execution on behalf of several callers (the deduplicator):
    /// the execution must stop when *all* of them are gone, not when the first one cancels.
    /// A call without a context stays without one.
    pub fn with_cancellation(&self, token: CancellationToken) -> ToolCall {
        let context = self.inner.context.clone().map(|mut cx| {
            cx.ct = token;
            cx
        });
        fn copy<T: Clone>(cell: &OnceLock<T>) -> OnceLock<T> {
            let new = OnceLock::new();
            if let Some(v) = cell.get() {
                let _ = new.set(v.clone());
            }
            new
        }
        ToolCall {
            inner: Arc::new(CallInner {
                params: self.inner.params.clone(),
                context,
                resolver: Arc::clone(&self.inner.resolver),
                received_at: self.inner.received_at,
                policy: copy(&self.inner.policy),
                anonymous_bypass: copy(&self.inner.anonymous_bypass),
                principal: copy(&self.inner.principal),
                key: copy(&self.inner.key),
            }),
        }
    }

    /// [`ToolCall::with_cancellation`], consuming the call: when this is the only handle to
    /// it, the token is swapped in place (nothing is copied: not the arguments, not the
    /// context's extensions with the HTTP request parts); otherwise the call is copied.
    pub fn into_with_cancellation(mut self, token: CancellationToken) -> ToolCall {
        if self.inner.context.is_none() {
            return self;
        }
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                if let Some(cx) = inner.context.as_mut() {
                    cx.ct = token;
                }
                self
            }
            None => self.with_cancellation(token),
        }
    }

    /// Takes the request and context out, for the innermost service. Moves them when this
    /// is the only handle to the call, clones them otherwise (a retry keeps its copy).
    pub fn into_parts(self) -> (CallToolRequestParams, Option<RequestContext<RoleServer>>) {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => (inner.params, inner.context),
            Err(shared) => (shared.params.clone(), shared.context.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PolicyDefaults, ToolOverride};
    use rmcp::{
        model::{Tool, ToolAnnotations},
        object,
    };

    fn resolver() -> Arc<CallResolver> {
        let tools = [
            Tool::new("pub", "", object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(true)),
            Tool::new("priv", "", object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(true)),
        ];
        Arc::new(CallResolver::new(
            PolicyTable::new(PolicyDefaults::default())
                .with_tools(tools)
                .with_override(
                    "pub",
                    ToolOverride::default().with_scope(CacheScope::Public),
                ),
        ))
    }

    #[test]
    fn key_ignores_meta_and_depends_on_scope() {
        let r = resolver();
        let mut with_meta = CallToolRequestParams::new("pub").with_arguments(object!({"a": 1}));
        let mut meta = rmcp::model::RequestMetaObject::default();
        meta.set_progress_token(rmcp::model::ProgressToken(
            rmcp::model::NumberOrString::Number(7),
        ));
        with_meta.meta = Some(meta);
        let a = ToolCall::from_request(with_meta, None, Arc::clone(&r));
        let b = ToolCall::with_resolver("pub", object!({"a": 1}), Arc::clone(&r));
        assert_eq!(a.key(), b.key(), "_meta is not part of the key");
        assert_eq!(a.partition(), Partition::Shared);

        let p = ToolCall::with_resolver("priv", object!({"a": 1}), Arc::clone(&r));
        assert_eq!(p.partition(), Partition::Principal(Principal::LOCAL));
        assert_ne!(p.key(), b.key());
    }

    #[test]
    fn derived_data_is_shared_by_clones() {
        let call = ToolCall::with_resolver("pub", object!({"x": [1, 2, 3]}), resolver());
        let clone = call.clone();
        let policy_ptr = call.policy() as *const ToolPolicy;
        assert_eq!(policy_ptr, clone.policy() as *const ToolPolicy);
        assert_eq!(call.key(), clone.key());
        assert_eq!(call.received_at(), clone.received_at());
    }

    #[test]
    fn continuations_are_never_cached_or_shared() {
        let r = resolver();
        let mut params = CallToolRequestParams::new("pub");
        params.request_state = Some("opaque".into());
        let call = ToolCall::from_request(params, None, Arc::clone(&r));
        assert!(call.is_continuation());
        assert!(!call.policy().cacheable());
        assert!(!call.policy().dedup);
        assert!(call.policy().retry, "retry is unaffected");
        let plain = ToolCall::with_resolver("pub", None, r);
        assert!(plain.policy().cacheable());
    }

    #[derive(Debug)]
    struct Nobody;
    impl Partitioner for Nobody {
        fn principal(&self, _: Option<&RequestContext<RoleServer>>) -> Principal {
            Principal::ANONYMOUS
        }
    }

    #[test]
    fn anonymous_callers_of_private_tools_share_nothing_by_default() {
        let tables = || Arc::try_unwrap(resolver()).unwrap();
        let bypass = Arc::new(tables().with_partitioner(Nobody));
        let private = ToolCall::with_resolver("priv", object!({"a": 1}), Arc::clone(&bypass));
        assert!(private.bypasses_anonymous());
        assert!(!private.policy().cacheable());
        assert!(!private.policy().dedup);
        let public = ToolCall::with_resolver("pub", object!({"a": 1}), Arc::clone(&bypass));
        assert!(
            !public.bypasses_anonymous(),
            "public results do not depend on the caller"
        );
        assert!(public.policy().cacheable() && public.policy().dedup);

        let shared = Arc::new(
            tables()
                .with_partitioner(Nobody)
                .with_anonymous(Anonymous::Shared),
        );
        let private = ToolCall::with_resolver("priv", object!({"a": 1}), shared);
        assert!(!private.bypasses_anonymous());
        assert!(private.policy().cacheable());
        assert_eq!(
            private.partition(),
            Partition::Principal(Principal::ANONYMOUS)
        );
        // The local principal (stdio) is an identity.
        let local = ToolCall::with_resolver("priv", object!({"a": 1}), resolver());
        assert!(!local.bypasses_anonymous() && local.policy().cacheable());
    }

    #[test]
    fn into_parts_moves_when_unique_and_clones_when_shared() {
        let call = ToolCall::new("t", object!({"k": "v"}));
        let kept = call.clone();
        let (params, context) = call.into_parts();
        assert_eq!(params.name, "t");
        assert!(context.is_none());
        let (again, _) = kept.into_parts();
        assert_eq!(again.arguments, params.arguments);
    }

    #[test]
    fn with_cancellation_keeps_derived_data() {
        let call = ToolCall::with_resolver("pub", object!({"x": 1}), resolver());
        let key = call.key();
        let copy = call.with_cancellation(CancellationToken::new());
        assert_eq!(copy.key(), key);
        assert_eq!(copy.received_at(), call.received_at());
        assert!(copy.policy().cacheable());
        assert!(copy.context().is_none(), "no context stays no context");
    }

    #[test]
    fn into_with_cancellation_keeps_a_call_without_context_as_it_is() {
        let call = ToolCall::with_resolver("pub", object!({"x": 1}), resolver());
        let key = call.key();
        let same = call
            .clone()
            .into_with_cancellation(CancellationToken::new());
        assert!(
            Arc::ptr_eq(&same.inner, &call.inner),
            "nothing to swap, nothing copied"
        );
        assert_eq!(same.key(), key);
        assert!(same.context().is_none());
    }

    #[test]
    fn new_without_context_is_conservative_and_not_cancelled() {
        let call = ToolCall::new("anything", None);
        assert!(!call.is_cancelled());
        assert!(call.cancellation().is_none());
        assert!(!call.policy().cacheable());
        assert_eq!(call.principal(), Principal::LOCAL);
    }
}
