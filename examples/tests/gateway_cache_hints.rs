//! The gateway honours SEP-2549 cache hints (`ttlMs`, `cacheScope`) and keeps every
//! principal's private answers to that principal.
//!
//! Upstreams here are small rmcp servers in this process (streamable HTTP on 127.0.0.1)
//! whose lists and reads carry the hints a test chooses and count how often they are asked.
//! Callers are rmcp clients with their own `Authorization` header (the stack's default
//! partitioner makes each one a principal) and their own response cache turned off, so
//! every list they make reaches the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mcp_tower_examples::{
    gateway::{GatewayApp, GatewayConfig},
    serve,
};
use mcp_tower_pool::{PoolConfig, UpstreamConfig};
use rmcp::{
    ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt,
    model::{
        CacheScope, ErrorCode, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ResourceContents,
        ServerCapabilities, ServerConfig, Tool,
    },
    object,
    service::{ClientCacheConfig, RequestContext, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio_util::sync::CancellationToken;

const HANG: Duration = Duration::from_secs(30);

/// An upstream whose `tools/list` and `resources/list` carry `hint`, and whose reads of
/// `public://…` and `private://…` are public and private for a minute. Counts what it is
/// asked.
#[derive(Clone)]
struct Hinted {
    tool: &'static str,
    hint: Option<(u64, CacheScope)>,
    tool_lists: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
}

impl Hinted {
    fn new(tool: &'static str, hint: Option<(u64, CacheScope)>) -> Self {
        Self {
            tool,
            hint,
            tool_lists: Arc::default(),
            reads: Arc::default(),
        }
    }
}

impl ServerHandler for Hinted {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.tool_lists.fetch_add(1, Ordering::SeqCst);
        let tools = vec![Tool::new(self.tool, "a tool", object!({"type": "object"}))];
        let mut result = ListToolsResult::with_all_items(tools);
        if let Some((ttl, scope)) = self.hint {
            result = result.with_ttl_ms(ttl).with_cache_scope(scope);
        }
        Ok(result)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resource = |uri: &str| rmcp::model::Resource::new(format!("{uri}{}", self.tool), "r");
        let mut result = ListResourcesResult::with_all_items(vec![
            resource("public://"),
            resource("private://"),
        ]);
        if let Some((ttl, scope)) = self.hint {
            result = result.with_ttl_ms(ttl).with_cache_scope(scope);
        }
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        let scope = if request.uri.starts_with("public://") {
            CacheScope::Public
        } else {
            CacheScope::Private
        };
        let result = ReadResourceResult::new(vec![ResourceContents::text(
            format!("read #{n}"),
            request.uri.clone(),
        )])
        .with_ttl_ms(60_000)
        .with_cache_scope(scope);
        Ok(ReadResourceResponse::Complete(result))
    }
}

async fn serve_upstream(handler: Hinted, stop: &CancellationToken) -> String {
    serve::serve_loopback(serve::mcp_router(handler, stop), stop)
        .await
        .unwrap()
}

struct Running {
    app: GatewayApp,
    url: String,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn gateway(upstreams: &[(&str, &str)]) -> Running {
    let config = GatewayConfig {
        upstreams: upstreams
            .iter()
            .map(|(name, url)| ((*name).to_owned(), UpstreamConfig::http(*url)))
            .collect(),
        pool: PoolConfig::default().with_connect_timeout(HANG),
        ..GatewayConfig::default()
    };
    let app = GatewayApp::build(config).await.unwrap();
    let stop = CancellationToken::new();
    let url = serve::serve_loopback(serve::mcp_router(app.server.clone(), &stop), &stop)
        .await
        .unwrap();
    Running { app, url, stop }
}

async fn client(url: &str, token: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    client
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    client
}

async fn list_tools(client: &RunningService<RoleClient, ()>) -> ListToolsResult {
    tokio::time::timeout(HANG, client.list_tools(None))
        .await
        .expect("tools/list hung")
        .unwrap()
}

/// The text a read answered.
fn text_of(result: &ReadResourceResult) -> String {
    match &result.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("unexpected contents {other:?}"),
    }
}

async fn read_with(
    client: &RunningService<RoleClient, ()>,
    params: ReadResourceRequestParams,
) -> String {
    let result = tokio::time::timeout(HANG, client.read_resource(params))
        .await
        .expect("resources/read hung")
        .unwrap();
    text_of(&result)
}

async fn read(client: &RunningService<RoleClient, ()>, uri: &str) -> String {
    read_with(client, ReadResourceRequestParams::new(uri)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_lists_carry_the_smallest_ttl_and_private_wins_and_private_copies_stay_per_principal()
 {
    let stop = CancellationToken::new();
    let alpha = Hinted::new("one", Some((60_000, CacheScope::Public)));
    let beta = Hinted::new("two", Some((30_000, CacheScope::Private)));
    let alpha_url = serve_upstream(alpha.clone(), &stop).await;
    let beta_url = serve_upstream(beta.clone(), &stop).await;
    let gw = gateway(&[("beta", &beta_url), ("alpha", &alpha_url)]).await;
    // The gateway listed each upstream once for itself at start-up.
    assert_eq!(alpha.tool_lists.load(Ordering::SeqCst), 1);
    assert_eq!(beta.tool_lists.load(Ordering::SeqCst), 1);

    let alice = client(&gw.url, "alice-token").await;
    let bob = client(&gw.url, "bob-token").await;

    let listed = list_tools(&alice).await;
    let names: Vec<&str> = listed.tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        ["alpha__one", "beta__two"],
        "upstreams in name order"
    );
    let ttl = listed.ttl_ms.expect("a merged list carries ttlMs");
    assert!(ttl > 0 && ttl <= 30_000, "the smaller of the two: {ttl}");
    assert_eq!(
        listed.cache_scope,
        Some(CacheScope::Private),
        "private wins"
    );
    // alpha's public list was shared from the gateway's own copy; beta's private one was
    // listed again, for alice.
    assert_eq!(alpha.tool_lists.load(Ordering::SeqCst), 1);
    assert_eq!(beta.tool_lists.load(Ordering::SeqCst), 2);

    // Within the TTL, a burst of alice's lists is served from her copy.
    let burst = futures_util::future::join_all((0..10).map(|_| list_tools(&alice))).await;
    assert!(burst.iter().all(|l| l.tools.len() == 2));
    assert_eq!(
        beta.tool_lists.load(Ordering::SeqCst),
        2,
        "no re-list per call"
    );

    // bob never gets alice's private copy: his list goes upstream, once for his burst.
    let burst = futures_util::future::join_all((0..10).map(|_| list_tools(&bob))).await;
    assert!(burst.iter().all(|l| l.tools.len() == 2));
    assert_eq!(beta.tool_lists.load(Ordering::SeqCst), 3);
    assert_eq!(alpha.tool_lists.load(Ordering::SeqCst), 1);
    let stats = gw.app.gateway.copy_stats();
    assert_eq!(stats.tool_lists, 4, "{stats:?}");

    // Resource reads: a private read is held for its reader only, a public one for all.
    assert_eq!(read(&alice, "private://one").await, "read #0");
    assert_eq!(
        read(&alice, "private://one").await,
        "read #0",
        "alice's copy"
    );
    assert_eq!(
        read(&bob, "private://one").await,
        "read #1",
        "never alice's"
    );
    assert_eq!(read(&bob, "private://one").await, "read #1");
    assert_eq!(read(&alice, "public://one").await, "read #2");
    assert_eq!(read(&bob, "public://one").await, "read #2", "shared");
    assert_eq!(alpha.reads.load(Ordering::SeqCst), 3);
    let stats = gw.app.gateway.copy_stats();
    assert_eq!((stats.read_hits, stats.read_misses), (3, 3), "{stats:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_without_hints_is_private_and_immediately_stale_and_an_undeclared_list_is_method_not_found()
 {
    let stop = CancellationToken::new();
    let legacy = Hinted::new("old", None);
    let url = serve_upstream(legacy.clone(), &stop).await;
    let gw = gateway(&[("legacy", &url)]).await;
    let alice = client(&gw.url, "alice-token").await;
    let listed = list_tools(&alice).await;
    assert_eq!(listed.tools.len(), 1);
    assert_eq!(listed.ttl_ms, Some(0));
    assert_eq!(listed.cache_scope, Some(CacheScope::Private));

    // No upstream declares prompts: the gateway answers as rmcp's own handlers do.
    let error = alice.list_prompts(None).await.unwrap_err();
    let rmcp::service::ServiceError::McpError(error) = error else {
        panic!("expected a JSON-RPC error, got {error:?}");
    };
    assert_eq!(error.code, ErrorCode::METHOD_NOT_FOUND);

    // The pooled upstream session keeps no response cache of its own (it would be shared
    // by every caller of the gateway).
    let session = gw.app.service.pool().get(&"legacy".into()).await.unwrap();
    assert!(!session.peer().response_cache_config().await.enabled);
    stop.cancel();
}

/// An upstream whose reads say whether they carried the client's `inputResponses` (a
/// multi-round-trip retry), each public for a minute.
#[derive(Clone, Default)]
struct Rounds {
    reads: Arc<AtomicUsize>,
}

impl ServerHandler for Rounds {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_resources().build())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        let kind = if request.input_responses.is_some() {
            "answered"
        } else {
            "plain"
        };
        let result = ReadResourceResult::new(vec![ResourceContents::text(
            format!("{kind} #{n}"),
            request.uri.clone(),
        )])
        .with_ttl_ms(60_000)
        .with_cache_scope(CacheScope::Public);
        Ok(ReadResourceResponse::Complete(result))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_round_trip_retry_is_never_held_nor_served_from_a_copy() {
    let stop = CancellationToken::new();
    let upstream = Rounds::default();
    let url = serve::serve_loopback(serve::mcp_router(upstream.clone(), &stop), &stop)
        .await
        .unwrap();
    let gw = gateway(&[("rounds", &url)]).await;
    let alice = client(&gw.url, "alice-token").await;
    let retry = || {
        let mut params = ReadResourceRequestParams::new("file:///x");
        params.input_responses = Some(
            [(
                "confirm".to_owned(),
                serde_json::json!({"action": "accept"}),
            )]
            .into_iter()
            .collect(),
        );
        params
    };
    let text = |result: ReadResourceResult| match &result.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("unexpected contents {other:?}"),
    };
    let first = alice.read_resource(retry()).await.unwrap();
    assert_eq!(text(first), "answered #0");
    let second = alice.read_resource(retry()).await.unwrap();
    assert_eq!(
        text(second),
        "answered #1",
        "a retry is not served from a copy"
    );
    assert_eq!(
        read(&alice, "file:///x").await,
        "plain #2",
        "nor held for plain reads"
    );
    assert_eq!(
        read(&alice, "file:///x").await,
        "plain #2",
        "a plain read is held"
    );
    assert_eq!(upstream.reads.load(Ordering::SeqCst), 3);
    stop.cancel();
}
