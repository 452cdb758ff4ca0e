//! The cache's security property over real streamable HTTP: two rmcp clients with
//! different `Authorization` headers call the same private tool with the same arguments,
//! and neither is ever served the other's result; a public tool's result is shared.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use mcp_tower::LayeredServer;
use mcp_tower_cache::{CACHE_META_KEY, CacheConfig, CacheHandle, CacheLayer};
use mcp_tower_core::{
    CacheScope, CallResolver, DefaultPartitioner, HandlerService, KeySecret, Partitioner,
    PolicyDefaults, PolicyTable, ToolOverride,
};
use rmcp::{
    ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
    },
    object,
    service::{RequestContext, RunningService},
    transport::{
        StreamableHttpClientTransport,
        streamable_http_client::StreamableHttpClientTransportConfig,
        streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
        },
    },
};

/// A server whose tools answer with who called them: `account` (private, the default for
/// a read-only tool) and `weather` (public). Both are read-only, so both are cached.
struct WhoIsAsking {
    /// Digests the caller's `Authorization` header, as the handler sees it.
    partitioner: DefaultPartitioner,
    runs: AtomicUsize,
}

fn tools() -> Vec<Tool> {
    ["account", "weather"]
        .into_iter()
        .map(|name| {
            Tool::new(name, "answers with its caller", object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(true))
        })
        .collect()
}

impl ServerHandler for WhoIsAsking {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let caller = self.partitioner.principal(Some(&context));
        let text = format!(
            "{} for caller {:032x} (run {run})",
            request.name,
            caller.as_u128()
        );
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }
}

struct Server {
    url: String,
    handler: Arc<WhoIsAsking>,
    cache: CacheHandle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_server() -> Server {
    let secret = KeySecret::from_bytes(b"a test secret, 16+ bytes").unwrap();
    let handler = Arc::new(WhoIsAsking {
        partitioner: DefaultPartitioner::new(secret),
        runs: AtomicUsize::new(0),
    });
    let resolver = Arc::new(
        CallResolver::new(
            PolicyTable::new(PolicyDefaults::default())
                .with_tools(tools())
                .with_override(
                    "weather",
                    ToolOverride::default().with_scope(CacheScope::Public),
                ),
        )
        .with_secret(secret),
    );
    let cache = CacheLayer::new(CacheConfig::default()).unwrap();
    let cache_handle = cache.handle();
    let stack = tower::ServiceBuilder::new()
        .layer(cache)
        .service(HandlerService::new(Arc::clone(&handler)));
    let server = LayeredServer::new(Arc::clone(&handler), stack, resolver);

    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { axum::serve(listener, router).await });
    Server {
        url: format!("http://{addr}/mcp"),
        handler,
        cache: cache_handle,
        serving,
    }
}

async fn client(url: &str, bearer_token: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(bearer_token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap()
}

/// Calls `tool` with the same arguments every time; returns its text and whether it was a
/// cache hit.
async fn call(client: &RunningService<RoleClient, ()>, tool: &'static str) -> (String, bool) {
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(object!({"q": "same"})))
        .await
        .unwrap();
    let hit = result
        .meta
        .as_ref()
        .is_some_and(|meta| meta.0.contains_key(CACHE_META_KEY));
    let text = match &result.content[0] {
        ContentBlock::Text(t) => t.text.clone(),
        other => panic!("not text: {other:?}"),
    };
    (text, hit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_result_never_reaches_another_principal() {
    let server = start_server().await;
    let alice = client(&server.url, "alice-token").await;
    let bob = client(&server.url, "bob-token").await;

    let (alice_1, hit) = call(&alice, "account").await;
    assert!(!hit);
    let (bob_1, hit) = call(&bob, "account").await;
    assert!(
        !hit,
        "Bob's first call must not be served Alice's cached result"
    );
    assert_ne!(bob_1, alice_1, "each caller sees their own result");
    assert_eq!(server.handler.runs.load(Ordering::SeqCst), 2);

    // Each is now served from the cache — their own entry.
    for _ in 0..3 {
        let (alice_n, hit) = call(&alice, "account").await;
        assert!(hit);
        assert_eq!(alice_n, alice_1);
        let (bob_n, hit) = call(&bob, "account").await;
        assert!(hit);
        assert_eq!(bob_n, bob_1);
        assert!(!bob_n.contains(&alice_1[alice_1.find("caller").unwrap()..]));
    }
    assert_eq!(server.handler.runs.load(Ordering::SeqCst), 2);

    // A second session of Alice (same token, new MCP session) shares her entries.
    let alice_again = client(&server.url, "alice-token").await;
    let (alice_other_session, hit) = call(&alice_again, "account").await;
    assert!(hit);
    assert_eq!(alice_other_session, alice_1);

    let stats = server.cache.stats();
    assert_eq!((stats.misses, stats.hits), (2, 7));

    for c in [alice, bob, alice_again] {
        c.cancel().await.unwrap();
    }
    server.serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_result_is_shared_by_every_caller() {
    let server = start_server().await;
    let alice = client(&server.url, "alice-token").await;
    let bob = client(&server.url, "bob-token").await;

    let (alice_1, hit) = call(&alice, "weather").await;
    assert!(!hit);
    let (bob_1, hit) = call(&bob, "weather").await;
    assert!(hit, "a public tool's result is shared");
    assert_eq!(bob_1, alice_1);
    assert_eq!(server.handler.runs.load(Ordering::SeqCst), 1);

    for c in [alice, bob] {
        c.cancel().await.unwrap();
    }
    server.serving.abort();
}
