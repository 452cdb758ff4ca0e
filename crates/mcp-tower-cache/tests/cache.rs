//! The cache's behaviour, through the layer, against core's `ScriptedService`.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::FutureExt;
use mcp_tower_cache::{
    CACHE_META_KEY, Cache, CacheConfig, CacheHandle, CacheLayer, CacheStore, MokaStore,
    StoreLookup, StoreStats,
};
use mcp_tower_core::{
    CacheScope, CallKey, CallResolver, LayerReport, PolicyDefaults, PolicyTable, ToolCall,
    ToolOverride,
    error::{Busy, BusyReason, Layer, RetriesExhausted, UpstreamUnavailable},
    testing::{Outcome, ScriptedService},
};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
        InputRequiredResult, JsonObject, MetaObject, RequestId, Tool, ToolAnnotations,
    },
    object,
    service::{RequestContext, RunningService, serve_directly},
};
use serde_json::{Value, json};
use tokio::time::advance;
use tower::{Layer as _, Service, ServiceBuilder, ServiceExt, service_fn};

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

fn read_only(name: &'static str) -> Tool {
    Tool::new(name, "test tool", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true))
}

/// `weather`: read-only, public, 10 s. `news`: read-only, private, the default 60 s.
/// `notes`: read-only, private, 5 s. `delete_file`: destructive. Nothing else is known.
fn policy_table() -> PolicyTable {
    PolicyTable::new(PolicyDefaults::default())
        .with_tools([
            read_only("weather"),
            read_only("news"),
            read_only("notes"),
            Tool::new("delete_file", "test tool", object!({"type": "object"}))
                .with_annotations(ToolAnnotations::new().read_only(false).destructive(true)),
        ])
        .with_override(
            "weather",
            ToolOverride::default()
                .with_cache_ttl(Duration::from_secs(10))
                .with_scope(CacheScope::Public),
        )
        .with_override(
            "notes",
            ToolOverride::default().with_cache_ttl(Duration::from_secs(5)),
        )
}

struct Fixture {
    resolver: Arc<CallResolver>,
    inner: ScriptedService,
    service: Cache<ScriptedService>,
    handle: CacheHandle,
}

impl Fixture {
    fn new(config: CacheConfig) -> Self {
        Self::with_inner(config, ScriptedService::new())
    }

    fn with_inner(config: CacheConfig, inner: ScriptedService) -> Self {
        let layer = CacheLayer::new(config).unwrap();
        Self::from_layer(layer, inner)
    }

    fn from_layer(layer: CacheLayer, inner: ScriptedService) -> Self {
        let handle = layer.handle();
        let service = layer.layer(inner.clone());
        Self {
            resolver: Arc::new(CallResolver::new(policy_table())),
            inner,
            service,
            handle,
        }
    }

    fn call(&self, tool: &'static str, args: JsonObject) -> ToolCall {
        ToolCall::with_resolver(tool, args, Arc::clone(&self.resolver))
    }

    async fn run(&self, call: ToolCall) -> Result<CallToolResponse, ErrorData> {
        self.service.clone().oneshot(call).await
    }

    fn spawn(
        &self,
        call: ToolCall,
    ) -> tokio::task::JoinHandle<Result<CallToolResponse, ErrorData>> {
        tokio::spawn(self.service.clone().oneshot(call))
    }

    async fn complete(&self, tool: &'static str, args: JsonObject) -> CallToolResult {
        complete(self.run(self.call(tool, args)).await)
    }
}

fn complete(response: Result<CallToolResponse, ErrorData>) -> CallToolResult {
    match response {
        Ok(CallToolResponse::Complete(result)) => result,
        other => panic!("expected a complete result, got {other:?}"),
    }
}

fn marker(result: &CallToolResult) -> Option<&Value> {
    result.meta.as_ref()?.0.get(CACHE_META_KEY)
}

/// Which execution of the scripted service produced `result` (1 for the first call...).
fn execution(result: &CallToolResult) -> u64 {
    result.structured_content.as_ref().unwrap()["execution"]
        .as_u64()
        .unwrap()
}

fn text(result: &CallToolResult) -> &str {
    match &result.content[0] {
        ContentBlock::Text(t) => &t.text,
        other => panic!("not text: {other:?}"),
    }
}

fn big_result(bytes: usize) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text("x".repeat(bytes))])
}

// ---------------------------------------------------------------------------------------
// Hits and misses
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_repeated_call_is_a_hit_marked_in_meta() {
    let f = Fixture::new(CacheConfig::default());
    let first = f.complete("weather", object!({"city": "Oslo"})).await;
    assert_eq!(marker(&first), None, "a miss is not marked");

    advance(Duration::from_millis(1500)).await;
    let second = f.complete("weather", object!({"city": "Oslo"})).await;
    assert_eq!(f.inner.calls(), 1, "the hit did not reach the tool");
    assert_eq!(execution(&second), 1);
    assert_eq!(second.content, first.content);
    assert_eq!(
        marker(&second),
        Some(&json!({"hit": true, "ageMs": 1500})),
        "{second:?}"
    );

    let other_city = f.complete("weather", object!({"city": "Bergen"})).await;
    assert_eq!(
        execution(&other_city),
        2,
        "other arguments are another call"
    );

    let stats = f.handle.stats();
    assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 2, 2));
    assert_eq!(stats.hit_ratio(), Some(1.0 / 3.0));
}

#[tokio::test]
async fn argument_order_does_not_matter() {
    let f = Fixture::new(CacheConfig::default());
    let args: JsonObject =
        serde_json::from_str(r#"{"a": 1, "b": {"y": [1, 2], "x": null}, "c": "z"}"#).unwrap();
    let reordered: JsonObject =
        serde_json::from_str(r#"{"c": "z", "b": {"x": null, "y": [1, 2]}, "a": 1}"#).unwrap();
    f.complete("news", args).await;
    let hit = f.complete("news", reordered).await;
    assert_eq!(f.inner.calls(), 1);
    assert!(marker(&hit).is_some());
    // ...while a different value is a different call.
    f.complete(
        "news",
        object!({"a": 2, "b": {"x": null, "y": [1, 2]}, "c": "z"}),
    )
    .await;
    assert_eq!(f.inner.calls(), 2);
}

#[tokio::test]
async fn marking_can_be_turned_off_and_never_touches_the_stored_entry() {
    let inner = ScriptedService::new();
    let mut own_meta = CallToolResult::success(vec![ContentBlock::text("from the tool")]);
    own_meta.meta = Some(MetaObject(
        json!({"source": "api"}).as_object().cloned().unwrap(),
    ));
    inner.push_for("news", Outcome::Result(own_meta.clone()));
    let store = MokaStore::new(CacheConfig::DEFAULT_MAX_BYTES);
    let layer = CacheLayer::with_store(CacheConfig::default(), store.clone()).unwrap();
    let f = Fixture::from_layer(layer, inner);

    assert_eq!(f.complete("news", object!({})).await, own_meta);
    for _ in 0..3 {
        let hit = f.complete("news", object!({})).await;
        let meta = &hit.meta.as_ref().unwrap().0;
        assert_eq!(meta["source"], "api", "the tool's own _meta is kept");
        assert_eq!(
            meta.len(),
            2,
            "exactly one marker, however many hits: {meta:?}"
        );
    }
    let (_, stored) = store.moka().iter().next().unwrap();
    assert_eq!(
        stored.result(),
        &own_meta,
        "hits never modify the stored result"
    );

    let unmarked = Fixture::new(CacheConfig::default().with_mark_hits(false));
    unmarked.complete("news", object!({})).await;
    let hit = unmarked.complete("news", object!({})).await;
    assert_eq!(unmarked.inner.calls(), 1);
    assert_eq!(hit.meta, None);
}

// ---------------------------------------------------------------------------------------
// TTL
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl_on_tokios_clock() {
    let f = Fixture::new(CacheConfig::default());
    f.complete("weather", object!({"city": "Oslo"})).await; // TTL 10 s
    advance(Duration::from_millis(9_999)).await;
    let hit = f.complete("weather", object!({"city": "Oslo"})).await;
    assert_eq!(execution(&hit), 1);
    advance(Duration::from_millis(1)).await;
    let refreshed = f.complete("weather", object!({"city": "Oslo"})).await;
    assert_eq!(execution(&refreshed), 2, "expired at exactly 10 s");
    assert_eq!(marker(&refreshed), None);
    // The refresh is cached again, from its own arrival.
    advance(Duration::from_secs(9)).await;
    assert_eq!(
        execution(&f.complete("weather", object!({"city": "Oslo"})).await),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn every_tool_has_its_own_ttl() {
    let f = Fixture::new(CacheConfig::default());
    f.complete("notes", object!({})).await; // 5 s
    f.complete("weather", object!({})).await; // 10 s
    f.complete("news", object!({})).await; // 60 s (the default)
    advance(Duration::from_secs(6)).await;
    f.complete("notes", object!({})).await;
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls_for_tool("notes"), 2);
    assert_eq!(f.inner.calls_for_tool("weather"), 1);
    advance(Duration::from_secs(5)).await;
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls_for_tool("weather"), 2);
    assert_eq!(f.inner.calls_for_tool("news"), 1);
    advance(Duration::from_secs(50)).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls_for_tool("news"), 2);
}

// ---------------------------------------------------------------------------------------
// What is never cached
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn is_error_results_and_errors_are_never_cached() {
    let f = Fixture::new(CacheConfig::default());
    f.inner
        .push_for("news", Outcome::tool_error("upstream said no"));
    f.inner.push_for(
        "news",
        Outcome::error(ErrorData::internal_error("handler failed", None)),
    );
    let failed = f.complete("news", object!({"q": 1})).await;
    assert_eq!(failed.is_error, Some(true));
    assert!(f.run(f.call("news", object!({"q": 1}))).await.is_err());
    let ok = f.complete("news", object!({"q": 1})).await;
    assert_ne!(ok.is_error, Some(true));
    let hit = f.complete("news", object!({"q": 1})).await;
    assert_eq!(
        f.inner.calls(),
        3,
        "the two failures ran, then one success was cached"
    );
    assert_eq!(execution(&hit), 3);
    let stats = f.handle.stats();
    assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 3, 1));
}

#[tokio::test]
async fn a_destructive_tool_called_twice_runs_twice() {
    let f = Fixture::new(CacheConfig::default());
    for _ in 0..2 {
        let result = f.complete("delete_file", object!({"path": "/tmp/x"})).await;
        assert_eq!(marker(&result), None);
    }
    assert_eq!(f.inner.calls_for_tool("delete_file"), 2);
    let stats = f.handle.stats();
    assert_eq!((stats.hits, stats.misses, stats.bypassed), (0, 0, 2));
}

#[tokio::test]
async fn unknown_tools_and_tools_switched_off_are_not_cached() {
    let resolver = Arc::new(CallResolver::new(
        policy_table().with_override("news", ToolOverride::default().with_cache(false)),
    ));
    let f = Fixture::new(CacheConfig::default());
    for _ in 0..2 {
        f.complete("made_up", object!({})).await;
        let call = ToolCall::with_resolver("news", object!({}), Arc::clone(&resolver));
        complete(f.run(call).await);
    }
    assert_eq!(f.inner.calls_for_tool("made_up"), 2);
    assert_eq!(f.inner.calls_for_tool("news"), 2);
    assert_eq!(f.handle.stats().bypassed, 4);
}

#[tokio::test]
async fn continuations_are_not_cached() {
    let f = Fixture::new(CacheConfig::default());
    for _ in 0..2 {
        let mut params = CallToolRequestParams::new("news").with_arguments(object!({}));
        params.request_state = Some("opaque".into());
        let call = ToolCall::from_request(params, None, Arc::clone(&f.resolver));
        complete(f.run(call).await);
    }
    assert_eq!(f.inner.calls(), 2);
}

#[tokio::test]
async fn a_disabled_cache_passes_everything_through() {
    let f = Fixture::new(CacheConfig::default().with_enabled(false));
    f.complete("news", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 2);
    assert_eq!(f.handle.stats().bypassed, 2);
}

#[tokio::test]
async fn input_required_and_task_responses_pass_through_uncached() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let inner = service_fn(move |_call: ToolCall| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, ErrorData>(CallToolResponse::InputRequired(
                InputRequiredResult::from_request_state("step-1"),
            ))
        }
    });
    let layer = CacheLayer::new(CacheConfig::default()).unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(inner);
    let resolver = Arc::new(CallResolver::new(policy_table()));
    for _ in 0..2 {
        let call = ToolCall::with_resolver("news", object!({}), Arc::clone(&resolver));
        let response = service.clone().oneshot(call).await.unwrap();
        assert!(matches!(response, CallToolResponse::InputRequired(_)));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(handle.stats().inserts, 0);
}

#[tokio::test]
async fn an_oversize_result_is_returned_but_not_cached() {
    let inner = ScriptedService::new();
    inner.push_for("news", Outcome::Result(big_result(2_000)));
    inner.push_for("news", Outcome::Result(big_result(2_000)));
    let f = Fixture::with_inner(CacheConfig::default().with_max_entry_bytes(2_048), inner);
    let first = f.complete("news", object!({})).await;
    assert_eq!(
        text(&first).len(),
        2_000,
        "the caller gets the whole result"
    );
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 2);
    let stats = f.handle.stats();
    assert_eq!((stats.skipped_too_large, stats.inserts), (2, 0));

    // A small result of the same tool is cached.
    f.complete("news", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_before_its_result_stores_nothing() {
    let f = Fixture::with_inner(CacheConfig::default(), ScriptedService::held());
    let pending = f.spawn(f.call("news", object!({})));
    f.inner.wait_for_calls(1).await;
    pending.abort();
    assert!(pending.await.unwrap_err().is_cancelled());
    assert_eq!(f.inner.dropped(), 1);
    f.inner.release_all();
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 2, "nothing was stored by the dropped call");
    assert_eq!(f.handle.stats().inserts, 1);
}

#[tokio::test]
async fn a_panicking_tool_stores_nothing() {
    let f = Fixture::new(CacheConfig::default());
    f.inner.push_for("news", Outcome::panic("tool bug"));
    let caught = std::panic::AssertUnwindSafe(f.run(f.call("news", object!({}))))
        .catch_unwind()
        .await;
    assert!(caught.is_err());
    f.complete("news", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 2);
    assert_eq!(f.handle.stats().inserts, 1);
}

// ---------------------------------------------------------------------------------------
// Size bound
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_size_bound_holds_after_ten_thousand_distinct_inserts() {
    const MAX: u64 = 256 * 1024;
    let store = MokaStore::new(MAX);
    let layer = CacheLayer::with_store(
        CacheConfig::default()
            .with_max_bytes(MAX)
            .with_max_entry_bytes(16 * 1024),
        store.clone(),
    )
    .unwrap();
    let f = Fixture::from_layer(layer, ScriptedService::new());
    for i in 0..10_000u32 {
        f.complete("news", object!({"page": i, "padding": "p".repeat(200)}))
            .await;
    }
    f.handle.run_pending_tasks();
    let stats = f.handle.stats();
    assert_eq!(stats.inserts, 10_000);
    assert!(stats.weighted_bytes <= MAX, "{stats:?}");
    assert!(stats.entries > 0 && stats.entries < 10_000, "{stats:?}");
    assert!(stats.evictions > 0, "{stats:?}");
    // The store's own accounting agrees with the entries it holds.
    let held: u64 = store
        .moka()
        .iter()
        .map(|(_, entry)| u64::from(entry.weight()))
        .sum();
    assert!(held <= MAX, "{held} bytes held");
    assert_eq!(held, stats.weighted_bytes);
    assert_eq!(stats.max_bytes, Some(MAX));
}

// ---------------------------------------------------------------------------------------
// Invalidation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn invalidate_tool_drops_only_that_tool() {
    let f = Fixture::new(CacheConfig::default());
    for city in ["Oslo", "Bergen"] {
        f.complete("weather", object!({"city": city})).await;
        f.complete("news", object!({"city": city})).await;
    }
    f.handle.invalidate("weather");
    for city in ["Oslo", "Bergen"] {
        f.complete("weather", object!({"city": city})).await;
        f.complete("news", object!({"city": city})).await;
    }
    assert_eq!(
        f.inner.calls_for_tool("weather"),
        4,
        "both weather entries were dropped"
    );
    assert_eq!(f.inner.calls_for_tool("news"), 2, "news entries were kept");
    // The refreshed weather results are cached again.
    f.complete("weather", object!({"city": "Oslo"})).await;
    assert_eq!(f.inner.calls_for_tool("weather"), 4);
    // Unknown names are harmless.
    f.handle.invalidate("no_such_tool");
    f.handle.run_pending_tasks();
    assert_eq!(f.handle.stats().entries, 4);
}

#[tokio::test]
async fn invalidate_all_drops_everything() {
    let f = Fixture::new(CacheConfig::default());
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    f.handle.invalidate_all();
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 4);
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_result_whose_call_straddles_an_invalidation_is_not_stored() {
    for invalidate_all in [false, true] {
        let f = Fixture::with_inner(CacheConfig::default(), ScriptedService::held());
        let running = f.spawn(f.call("news", object!({})));
        f.inner.wait_for_calls(1).await;
        if invalidate_all {
            f.handle.invalidate_all();
        } else {
            f.handle.invalidate("news");
        }
        f.inner.release_all();
        complete(running.await.unwrap());
        f.complete("news", object!({})).await;
        assert_eq!(f.inner.calls(), 2, "invalidate_all: {invalidate_all}");
        f.complete("news", object!({})).await;
        assert_eq!(f.inner.calls(), 2, "the next result is cached again");
    }
}

#[tokio::test]
async fn a_changed_tool_list_invalidates_the_tools_that_changed() {
    let f = Fixture::new(CacheConfig::default());
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    f.complete("notes", object!({})).await;

    // A new tool appears: nothing cached changes.
    assert!(f.resolver.policies().observe_tools(&[read_only("stocks")]));
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 3);

    // `news` is re-announced with other annotations (still read-only): its results go.
    let changed = Tool::new("news", "test tool", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(true));
    assert!(f.resolver.policies().observe_tools(&[changed]));
    f.complete("news", object!({})).await;
    f.complete("weather", object!({})).await;
    f.complete("notes", object!({})).await;
    assert_eq!(f.inner.calls_for_tool("news"), 2);
    assert_eq!(f.inner.calls_for_tool("weather"), 1);
    assert_eq!(f.inner.calls_for_tool("notes"), 1);

    // `news` stops being read-only: it is not served from the cache any more.
    let writable = Tool::new("news", "test tool", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(false));
    assert!(f.resolver.policies().observe_tools(&[writable]));
    f.complete("news", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls_for_tool("news"), 4);
    f.complete("notes", object!({})).await;
    assert_eq!(f.inner.calls_for_tool("notes"), 1, "notes did not change");
}

// ---------------------------------------------------------------------------------------
// Stale-if-error
// ---------------------------------------------------------------------------------------

fn upstream_down() -> ErrorData {
    UpstreamUnavailable {
        layer: Layer::Pool,
        upstream: "weather-api".into(),
        reason: "connection refused".into(),
    }
    .into()
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_an_expired_result_when_the_refresh_fails() {
    let f = Fixture::new(CacheConfig::default().with_stale_if_error(Duration::from_secs(30)));
    f.complete("weather", object!({})).await; // TTL 10 s, kept 40 s
    advance(Duration::from_secs(12)).await;

    f.inner.push_for("weather", Outcome::error(upstream_down()));
    let stale = f.complete("weather", object!({})).await;
    assert_eq!(execution(&stale), 1);
    assert_eq!(
        marker(&stale),
        Some(&json!({"hit": true, "ageMs": 12_000, "stale": true}))
    );

    // Exhausted retries of a transient failure are still a transient failure.
    let exhausted: ErrorData = RetriesExhausted {
        tool: "weather".into(),
        attempts: 3,
        stopped_by: "max_attempts",
        last: upstream_down(),
    }
    .into();
    f.inner.push_for("weather", Outcome::error(exhausted));
    let stale = f.complete("weather", object!({})).await;
    assert_eq!(execution(&stale), 1);
    assert_eq!(f.handle.stats().stale_served, 2);

    // A successful refresh replaces the entry.
    let fresh = f.complete("weather", object!({})).await;
    assert_eq!(execution(&fresh), 4);
    assert_eq!(marker(&fresh), None);
    advance(Duration::from_secs(1)).await;
    assert_eq!(execution(&f.complete("weather", object!({})).await), 4);

    // Beyond the window, the failure reaches the caller.
    advance(Duration::from_secs(41)).await;
    f.inner.push_for("weather", Outcome::error(upstream_down()));
    let err = f.run(f.call("weather", object!({}))).await.unwrap_err();
    assert_eq!(err.code, upstream_down().code);
}

/// Stale-if-error stands in for an upstream that could not answer, never for an answer:
/// an `isError` result (say "access denied" for a caller whose rights were just revoked),
/// an authorization error, a caller's mistake, a limit's rejection, a cancellation.
#[tokio::test(start_paused = true)]
async fn stale_is_never_served_after_an_answer_or_a_non_transient_error() {
    let f = Fixture::new(CacheConfig::default().with_stale_if_error(Duration::from_secs(30)));
    f.complete("weather", object!({})).await;
    advance(Duration::from_secs(12)).await;

    f.inner.push_for(
        "weather",
        Outcome::tool_error("access denied: token revoked"),
    );
    let answer = f.complete("weather", object!({})).await;
    assert_eq!(marker(&answer), None, "an isError result is never replaced");
    assert_eq!(answer.is_error, Some(true));

    let refused = [
        ErrorData::new(ErrorCode(-32001), "unauthorized: token revoked", None),
        ErrorData::invalid_params("bad city", None),
        Busy {
            layer: Layer::Concurrency,
            tool: Some("weather".into()),
            reason: BusyReason::QueueFull,
            in_flight: 1,
            queued: 1,
            retry_after: Duration::from_millis(100),
        }
        .into(),
        RetriesExhausted {
            tool: "weather".into(),
            attempts: 3,
            stopped_by: "max_attempts",
            last: ErrorData::new(ErrorCode(-32001), "unauthorized", None),
        }
        .into(),
    ];
    for error in refused {
        f.inner.push_for("weather", Outcome::error(error.clone()));
        let got = f.run(f.call("weather", object!({}))).await.unwrap_err();
        assert_eq!(
            got.code, error.code,
            "{error:?} was replaced by a stale result"
        );
    }
    assert_eq!(f.handle.stats().stale_served, 0);
}

#[tokio::test(start_paused = true)]
async fn without_stale_if_error_a_failed_refresh_fails() {
    let f = Fixture::new(CacheConfig::default());
    f.complete("weather", object!({})).await;
    advance(Duration::from_secs(11)).await;
    f.inner.push_for("weather", Outcome::error(upstream_down()));
    assert!(f.run(f.call("weather", object!({}))).await.is_err());
    assert_eq!(f.handle.stats().stale_served, 0);
}

#[tokio::test(start_paused = true)]
async fn an_invalidated_entry_is_never_served_stale() {
    let f = Fixture::new(CacheConfig::default().with_stale_if_error(Duration::from_secs(30)));
    f.complete("weather", object!({})).await;
    advance(Duration::from_secs(12)).await;
    f.handle.invalidate("weather");
    f.inner.push_for("weather", Outcome::error(upstream_down()));
    assert!(f.run(f.call("weather", object!({}))).await.is_err());
}

// ---------------------------------------------------------------------------------------
// Cancellation and principals (calls with a real rmcp request context)
// ---------------------------------------------------------------------------------------

/// A server handler with nothing in it: only here to give request contexts a peer.
struct NoTools;
impl ServerHandler for NoTools {}

/// Makes rmcp request contexts, as an rmcp server hands them to `call_tool`.
struct Contexts {
    running: RunningService<RoleServer, NoTools>,
    _client: tokio::io::DuplexStream,
    next_id: AtomicUsize,
}

impl Contexts {
    fn new() -> Self {
        let (server, client) = tokio::io::duplex(4096);
        let running = serve_directly::<RoleServer, _, _, _, _>(NoTools, server, None);
        Self {
            running,
            _client: client,
            next_id: AtomicUsize::new(1),
        }
    }

    /// A context for a request carrying `authorization` (as streamable HTTP would).
    fn context(&self, authorization: Option<&str>) -> RequestContext<RoleServer> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) as i64;
        let mut context = RequestContext::new(RequestId::Number(id), self.running.peer().clone());
        let mut request = http::Request::builder().uri("/mcp");
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        context
            .extensions
            .insert(request.body(()).unwrap().into_parts().0);
        context
    }
}

fn call_with(
    f: &Fixture,
    tool: &'static str,
    args: JsonObject,
    context: RequestContext<RoleServer>,
) -> ToolCall {
    let params = CallToolRequestParams::new(tool).with_arguments(args);
    ToolCall::from_request(params, Some(context), Arc::clone(&f.resolver))
}

#[tokio::test]
async fn a_result_that_comes_back_after_cancellation_is_not_stored() {
    let contexts = Contexts::new();
    let f = Fixture::with_inner(CacheConfig::default(), ScriptedService::held());
    let context = contexts.context(Some("Bearer t"));
    let token = context.ct.clone();
    let running = f.spawn(call_with(&f, "news", object!({}), context));
    f.inner.wait_for_calls(1).await;
    token.cancel();
    f.inner.release_all();
    // The scripted tool ignores cancellation and answers anyway: the caller gets it...
    complete(running.await.unwrap());
    // ...but it is not cached.
    let again = call_with(&f, "news", object!({}), contexts.context(Some("Bearer t")));
    complete(f.run(again).await);
    assert_eq!(f.inner.calls(), 2);
    assert_eq!(f.handle.stats().inserts, 1);
}

#[tokio::test]
async fn private_results_stay_with_their_principal_and_public_ones_are_shared() {
    let contexts = Contexts::new();
    let f = Fixture::new(CacheConfig::default());
    let alice = || contexts.context(Some("Bearer alice"));
    let bob = || contexts.context(Some("Bearer bob"));

    // `news` is private: Bob's identical call runs again and gets his own result.
    let a1 = complete(
        f.run(call_with(&f, "news", object!({"q": 1}), alice()))
            .await,
    );
    let b1 = complete(f.run(call_with(&f, "news", object!({"q": 1}), bob())).await);
    assert_eq!((execution(&a1), execution(&b1)), (1, 2));
    assert_eq!(marker(&b1), None, "Bob was not served Alice's entry");
    let a2 = complete(
        f.run(call_with(&f, "news", object!({"q": 1}), alice()))
            .await,
    );
    let b2 = complete(f.run(call_with(&f, "news", object!({"q": 1}), bob())).await);
    assert_eq!(
        (execution(&a2), execution(&b2)),
        (1, 2),
        "each is served their own"
    );

    // `weather` is public: Bob is served Alice's result.
    let a = complete(f.run(call_with(&f, "weather", object!({}), alice())).await);
    let b = complete(f.run(call_with(&f, "weather", object!({}), bob())).await);
    assert_eq!(execution(&b), execution(&a));
    assert!(marker(&b).is_some());
    assert_eq!(f.inner.calls(), 3);
}

// ---------------------------------------------------------------------------------------
// Tower semantics and stores
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hit_never_waits_for_the_inner_service_to_be_ready() {
    let (mock, mut handle) = tower_test::mock::pair::<ToolCall, CallToolResponse>();
    let inner = mock.map_err(|e| ErrorData::internal_error(e.to_string(), None));
    let layer = CacheLayer::new(CacheConfig::default()).unwrap();
    let service = ServiceBuilder::new().layer(layer).service(inner);
    let resolver = Arc::new(CallResolver::new(policy_table()));
    let call = || ToolCall::with_resolver("news", object!({}), Arc::clone(&resolver));

    handle.allow(1);
    let first = tokio::spawn(service.clone().oneshot(call()));
    let request = handle.next_request().await.unwrap();
    request
        .1
        .send_response(CallToolResult::success(vec![ContentBlock::text("n")]).into());
    complete(first.await.unwrap());

    // The inner service is now not ready (no more calls allowed): a hit still answers.
    handle.allow(0);
    let mut service = service.clone();
    let ready = service.ready().await.unwrap();
    let hit = complete(ready.call(call()).await);
    assert!(marker(&hit).is_some());

    // A miss waits for the inner service inside its future.
    let mut miss = Box::pin(service.clone().oneshot(ToolCall::with_resolver(
        "news",
        object!({"other": 1}),
        resolver.clone(),
    )));
    assert!(futures_util::poll!(&mut miss).is_pending());
    assert!(
        futures_util::poll!(&mut miss).is_pending(),
        "still waiting for readiness"
    );
    let miss = tokio::spawn(miss);
    handle.allow(1);
    let request = handle.next_request().await.unwrap();
    request
        .1
        .send_response(CallToolResult::success(vec![ContentBlock::text("m")]).into());
    complete(miss.await.unwrap());
}

/// A store whose lookups answer later, as a remote tier's would.
#[derive(Debug, Clone)]
struct RemoteLikeStore {
    local: MokaStore,
    lookups: Arc<AtomicUsize>,
}

impl CacheStore for RemoteLikeStore {
    fn get(&self, key: &CallKey) -> StoreLookup {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self.local.moka().get(key);
        StoreLookup::pending(async move {
            tokio::task::yield_now().await;
            found
        })
    }
    fn insert(&self, key: CallKey, entry: Arc<mcp_tower_cache::CacheEntry>) {
        self.local.insert(key, entry);
    }
    fn remove(&self, key: &CallKey) {
        self.local.remove(key);
    }
    fn invalidate_tool(&self, tool: &str) {
        self.local.invalidate_tool(tool);
    }
    fn invalidate_all(&self) {
        self.local.invalidate_all();
    }
    fn stats(&self) -> StoreStats {
        self.local.stats()
    }
}

#[tokio::test]
async fn a_store_that_answers_later_works_the_same() {
    let store = RemoteLikeStore {
        local: MokaStore::new(1 << 20),
        lookups: Arc::new(AtomicUsize::new(0)),
    };
    let layer = CacheLayer::with_store(CacheConfig::default(), store.clone()).unwrap();
    let f = Fixture::from_layer(layer, ScriptedService::new());
    let miss = f.complete("news", object!({})).await;
    let hit = f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 1);
    assert_eq!(execution(&hit), execution(&miss));
    assert!(marker(&hit).is_some());
    assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
    f.complete("delete_file", object!({})).await;
    assert_eq!(
        store.lookups.load(Ordering::SeqCst),
        2,
        "no lookup for uncached tools"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hits_from_many_tasks_share_one_execution() {
    let f = Arc::new(Fixture::new(CacheConfig::default()));
    f.complete("weather", object!({"city": "Oslo"})).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                for _ in 0..500 {
                    let hit = f.complete("weather", object!({"city": "Oslo"})).await;
                    assert_eq!(execution(&hit), 1);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(f.inner.calls(), 1);
    assert_eq!(f.handle.stats().hits, 4_000);
}

#[tokio::test]
async fn the_handle_reports_figures_and_a_snapshot() {
    let f = Fixture::new(CacheConfig::default());
    f.complete("news", object!({})).await;
    f.complete("news", object!({})).await;
    f.handle.run_pending_tasks();
    assert_eq!(f.handle.layer(), "cache");
    let mut figures = Vec::new();
    f.handle.figures(&mut figures);
    let value = |name: &str| {
        figures
            .iter()
            .find(|fig| fig.name == name)
            .map(|fig| fig.value)
            .unwrap_or_else(|| panic!("no {name} in {figures:?}"))
    };
    assert_eq!(value("mcp_cache_hits_total"), 1.0);
    assert_eq!(value("mcp_cache_misses_total"), 1.0);
    assert_eq!(value("mcp_cache_inserts_total"), 1.0);
    assert_eq!(value("mcp_cache_entries"), 1.0);
    assert!(value("mcp_cache_weighted_bytes") > 0.0);
    assert_eq!(
        value("mcp_cache_max_bytes"),
        CacheConfig::DEFAULT_MAX_BYTES as f64
    );
    let snapshot = f.handle.snapshot();
    assert_eq!(snapshot["hits"], 1);
    assert_eq!(snapshot["hit_ratio"], 0.5);
    assert_eq!(snapshot["entries"], 1);
}

#[test]
fn invalid_configurations_are_refused_at_build_time() {
    let err = CacheLayer::new(CacheConfig::default().with_max_bytes(0)).unwrap_err();
    assert_eq!(err.field, "max_bytes");
    let err = Cache::new(
        ScriptedService::new(),
        CacheConfig::default().with_max_entry_bytes(u64::MAX),
    )
    .unwrap_err();
    assert_eq!(err.field, "max_entry_bytes");
}

/// A store that never frees anything when asked to invalidate (as a remote tier might do
/// lazily): the layer alone must keep invalidated entries from being served.
#[derive(Debug, Clone)]
struct LazyStore(MokaStore);

impl CacheStore for LazyStore {
    fn get(&self, key: &CallKey) -> StoreLookup {
        self.0.get(key)
    }
    fn insert(&self, key: CallKey, entry: Arc<mcp_tower_cache::CacheEntry>) {
        self.0.insert(key, entry);
    }
    fn remove(&self, key: &CallKey) {
        self.0.remove(key);
    }
    fn invalidate_tool(&self, _tool: &str) {}
    fn invalidate_all(&self) {}
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

#[tokio::test]
async fn invalidation_holds_even_when_the_store_frees_nothing() {
    let store = LazyStore(MokaStore::new(1 << 20));
    let layer = CacheLayer::with_store(CacheConfig::default(), store.clone()).unwrap();
    let f = Fixture::from_layer(layer, ScriptedService::new());
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    f.handle.invalidate("weather");
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 3, "weather ran again, news was a hit");
    f.handle.invalidate_all();
    f.complete("weather", object!({})).await;
    f.complete("news", object!({})).await;
    assert_eq!(f.inner.calls(), 5);
    assert_eq!(
        store.0.moka().iter().count(),
        2,
        "the store kept (replaced) its entries"
    );
}
