//! [`PoolService`]: the `Service<ToolCall>` that forwards each call to its upstream over a
//! pooled session.

use std::{
    collections::BTreeMap,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use mcp_tower_core::{
    CallToolResponse, Principal, ToolCall,
    error::{Cancelled, Layer, UpstreamUnavailable},
};
use rmcp::{
    ErrorData,
    model::{CallToolRequestParams, RequestMetaObject},
};
use tower_service::Service;

use super::{
    config::{Identity, UpstreamConfig},
    connector::{McpConnector, UpstreamCallError, UpstreamError},
    future::PoolFuture,
    router::UpstreamRouter,
};
use crate::{BuildError, Pool, PoolConfig, PoolHandle, call_many};

/// The `_meta` keys that belong to one hop of the protocol (set again by rmcp for the
/// upstream request), not to the call.
const HOP_META_PREFIX: &str = "io.modelcontextprotocol/";
const PROGRESS_TOKEN: &str = "progressToken";

/// Separates an upstream's name from a principal in the pool key of a per-principal
/// upstream's sessions (`files@<32 hex digits>`); upstream names never contain it.
pub const PRINCIPAL_KEY_SEPARATOR: char = '@';

/// Whether `principal` is a caller without a verified identity, which may not use a
/// per-principal upstream (it would share one session with every other such caller).
fn is_anonymous(principal: Principal) -> bool {
    principal.is_anonymous()
}

/// Why a [`PoolService`] could not be built from configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolServiceError {
    /// An upstream's section is invalid.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The pool could not be built.
    #[error(transparent)]
    Pool(#[from] BuildError),
}

struct Shared {
    pool: Pool<McpConnector>,
    router: UpstreamRouter,
}

/// The innermost service of a gateway: forwards each [`ToolCall`] to the upstream MCP
/// server its [`UpstreamRouter`] names, over a session of a [`Pool`] of [`McpConnector`]
/// sessions.
///
/// - The tool name is un-namespaced (`github__search` → upstream `github`, tool
///   `search`); the arguments, the `_meta` (trace context, custom keys; not the
///   protocol's per-hop keys) and the multi-round-trip fields are passed on.
/// - **Cancellation goes upstream**: when the caller's cancellation token fires
///   (`notifications/cancelled` from the client) or the call's future is dropped, the
///   upstream request is cancelled with `notifications/cancelled`. The call then ends with
///   the core `Cancelled` error.
/// - **Progress comes back**: the upstream's progress notifications for the request reach
///   the caller through its own peer, with the caller's progress token, before the answer.
/// - **Server→client requests are relayed**: sampling, elicitation and `roots/list`
///   requests the upstream makes while serving the call are sent to the caller's client
///   from the caller's task (so they are associated with its request) and the answers go
///   back upstream; log messages reach the caller when the call is the session's only
///   request in flight ([`McpSession::request`](super::McpSession::request)).
/// - A dead upstream is the core's transient `UpstreamUnavailable` error, never a hang: a
///   closed session fails its requests at once and is replaced by the next call, and
///   connects are bounded by `connect_timeout`. An upstream's own JSON-RPC error is passed
///   on as is; an unknown tool is `invalid params`.
///
/// It is always ready (the pool never makes a caller wait for readiness; limit concurrency
/// with the concurrency layer in front of it). Cloning is one reference count. The call
/// runs on the caller's task (nothing is spawned), as rmcp's request-scoped state needs;
/// its future is boxed once per call, which is noise next to the upstream round trip.
///
/// ```no_run
/// use std::collections::BTreeMap;
/// use mcp_tower_pool::{PoolConfig, PoolService, UpstreamConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut upstreams = BTreeMap::new();
/// upstreams.insert(
///     "everything".to_string(),
///     UpstreamConfig::stdio("npx", ["-y", "@modelcontextprotocol/server-everything"]),
/// );
/// let service = PoolService::from_config(&upstreams, PoolConfig::default())?;
/// // put the stack in front: mcp_tower::McpStack::from_config(cfg)?.service(service)
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PoolService {
    shared: Arc<Shared>,
}

impl fmt::Debug for PoolService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolService")
            .field("pool", &self.shared.pool)
            .field("router", &self.shared.router)
            .finish()
    }
}

impl PoolService {
    /// Forwards calls routed by `router` to sessions of `pool`.
    pub fn new(pool: Pool<McpConnector>, router: UpstreamRouter) -> Self {
        Self {
            shared: Arc::new(Shared { pool, router }),
        }
    }

    /// A service for the `[upstreams.*]` sections of a configuration: a pool with `pool`'s
    /// settings in which every enabled upstream is declared (its `min` sessions open at
    /// once; required if the section says so), and a router that namespaces every
    /// upstream except those whose section says `namespace = false`.
    ///
    /// Must be called inside a Tokio runtime (the pool starts its maintenance task).
    pub fn from_config(
        upstreams: &BTreeMap<String, UpstreamConfig>,
        pool: PoolConfig,
    ) -> Result<Self, PoolServiceError> {
        let connector = McpConnector::from_config(upstreams)?;
        let names = connector.upstreams();
        let mut builder = Pool::builder(connector).with_config(pool);
        for name in &names {
            let required = upstreams.get(name.as_ref()).is_some_and(|u| u.required);
            builder = if required {
                builder.with_required_key(Arc::clone(name))
            } else {
                builder.with_key(Arc::clone(name))
            };
        }
        let mut router = UpstreamRouter::namespaced(names.iter().cloned());
        for name in &names {
            if upstreams.get(name.as_ref()).is_some_and(|u| !u.namespace) {
                router = router.with_unprefixed(Arc::clone(name));
            }
        }
        Ok(Self::new(builder.build()?, router))
    }

    /// The pool key of `upstream`'s sessions for a caller: `upstream` itself for a shared
    /// upstream, `upstream@<principal>` for a per-principal one
    /// ([`Identity::PerPrincipal`]), whose sessions are then that principal's alone.
    /// `principal` is only called for a per-principal upstream. An anonymous caller of a
    /// per-principal upstream is refused (invalid request), never given a shared session.
    pub fn session_key(
        &self,
        upstream: &Arc<str>,
        principal: impl FnOnce() -> Principal,
    ) -> Result<Arc<str>, ErrorData> {
        if !self.is_per_principal(upstream) {
            return Ok(Arc::clone(upstream));
        }
        let principal = principal();
        if is_anonymous(principal) {
            return Err(ErrorData::invalid_request(
                format!(
                    "upstream `{upstream}` keeps per-user state (identity = \"per-principal\"): a caller without a verified identity cannot use it; authenticate first"
                ),
                None,
            ));
        }
        Ok(Arc::from(format!(
            "{upstream}{PRINCIPAL_KEY_SEPARATOR}{:032x}",
            principal.as_u128()
        )))
    }

    /// Whether `upstream` has sessions per principal ([`Identity::PerPrincipal`]).
    pub fn is_per_principal(&self, upstream: &str) -> bool {
        self.shared
            .pool
            .connector()
            .upstream(upstream)
            .is_some_and(|u| u.identity == Identity::PerPrincipal)
    }

    /// The pool of upstream sessions.
    pub fn pool(&self) -> &Pool<McpConnector> {
        &self.shared.pool
    }

    /// The router.
    pub fn router(&self) -> &UpstreamRouter {
        &self.shared.router
    }

    /// The pool's handle (stats, health, shutdown; a `LayerReport` for metrics).
    pub fn handle(&self) -> PoolHandle {
        self.shared.pool.handle()
    }

    /// Runs a batch of calls through this service, at most `max_parallel` at once, and
    /// returns the results in order ([`call_many`]).
    pub async fn call_many(
        &self,
        calls: impl IntoIterator<Item = ToolCall>,
        max_parallel: usize,
    ) -> Vec<Result<CallToolResponse, ErrorData>> {
        call_many(self, calls, max_parallel).await
    }
}

impl Service<ToolCall> for PoolService {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = PoolFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let Some((upstream, tool)) = self.shared.router.route(call.name()) else {
            return PoolFuture::failed(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`: no upstream serves it (namespaced tools are named `upstream__tool`)",
                    call.name()
                ),
                None,
            ));
        };
        let key = match self.session_key(&upstream, || call.principal()) {
            Ok(key) => key,
            Err(error) => return PoolFuture::failed(error),
        };
        let params = upstream_params(&call, tool);
        let shared = Arc::clone(&self.shared);
        PoolFuture::forwarding(Box::pin(async move {
            forward(&shared.pool, upstream, key, params, call).await
        }))
    }
}

/// The upstream request: the upstream's tool name, the caller's arguments, `_meta` and
/// multi-round-trip fields.
fn upstream_params(call: &ToolCall, tool: &str) -> CallToolRequestParams {
    let source = call.params();
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = source.arguments.clone();
    params.input_responses = source.input_responses.clone();
    params.request_state = source.request_state.clone();
    // rmcp moves a request's `_meta` into its context; without a context, take the
    // params' own.
    let meta = call.context().map(|cx| &cx.meta).or(source.meta.as_ref());
    if let Some(meta) = meta {
        let forwarded: RequestMetaObject = meta
            .0
            .0
            .iter()
            .filter(|(key, _)| key.as_str() != PROGRESS_TOKEN && !key.starts_with(HOP_META_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        if !forwarded.0.0.is_empty() {
            params.meta = Some(forwarded);
        }
    }
    params
}

async fn forward(
    pool: &Pool<McpConnector>,
    upstream: Arc<str>,
    key: Arc<str>,
    params: CallToolRequestParams,
    call: ToolCall,
) -> Result<CallToolResponse, ErrorData> {
    let cancelled = || -> ErrorData {
        Cancelled {
            layer: Layer::Pool,
            tool: call.name().to_owned(),
        }
        .into()
    };
    let session = match call.cancellation() {
        Some(token) => tokio::select! {
            session = pool.get(&key) => session,
            () = token.cancelled() => return Err(cancelled()),
        },
        None => pool.get(&key).await,
    }
    .map_err(|e| e.to_error_data(&upstream))?;
    match session.call_tool(params, call.context()).await {
        Ok(response) => Ok(response),
        Err(UpstreamCallError::Upstream(error)) => Err(error),
        Err(UpstreamCallError::Cancelled) => Err(cancelled()),
        Err(error @ UpstreamCallError::Transport(_)) => {
            // Replace it on the next call rather than wait for the next health check.
            session.mark_broken();
            Err(unavailable(&upstream, error))
        }
        Err(error @ (UpstreamCallError::UpstreamCancelled(_) | UpstreamCallError::Unexpected)) => {
            Err(unavailable(&upstream, error))
        }
    }
}

fn unavailable(upstream: &str, error: UpstreamCallError) -> ErrorData {
    UpstreamUnavailable::with_detail(Layer::Pool, upstream, error.reason(), &error).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_principal_upstreams_have_a_session_key_per_principal() {
        let mut upstreams = BTreeMap::new();
        upstreams.insert(
            "shared".to_owned(),
            UpstreamConfig::http("http://127.0.0.1:1/mcp"),
        );
        upstreams.insert(
            "mine".to_owned(),
            UpstreamConfig::http("http://127.0.0.1:1/mcp").with_identity(Identity::PerPrincipal),
        );
        let service = PoolService::from_config(&upstreams, PoolConfig::default()).unwrap();
        let (shared, mine): (Arc<str>, Arc<str>) = ("shared".into(), "mine".into());
        let alice = Principal::from_u128(0xa11ce);
        let key = service
            .session_key(&shared, || panic!("not asked for a shared upstream"))
            .unwrap();
        assert_eq!(key, shared);
        let key = service.session_key(&mine, || alice).unwrap();
        assert_eq!(key.as_ref(), "mine@000000000000000000000000000a11ce");
        assert_ne!(
            service
                .session_key(&mine, || Principal::from_u128(0xb0b))
                .unwrap(),
            key
        );
        assert!(service.is_per_principal("mine") && !service.is_per_principal("shared"));
        service.pool().shutdown().await;
    }
}
