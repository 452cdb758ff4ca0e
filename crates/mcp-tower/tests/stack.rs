//! The layers as `McpStack` composes them (DESIGN §1): each property here depends on the
//! order, and would break if two layers were swapped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use mcp_tower::{McpStack, StackConfig, ToolCall, error};
use mcp_tower_core::testing::{Outcome, ScriptedService};
use rmcp::{
    model::{CallToolResponse, CallToolResult, Tool, ToolAnnotations},
    object,
};
use tower::ServiceExt;

fn tools() -> Vec<Tool> {
    let tool = |name: &'static str, annotations: ToolAnnotations| {
        Tool::new(name, "test tool", object!({"type": "object"})).with_annotations(annotations)
    };
    vec![
        tool("weather", ToolAnnotations::new().read_only(true)),
        tool("other", ToolAnnotations::new().read_only(true)),
        tool(
            "set_flag",
            ToolAnnotations::new().read_only(false).idempotent(true),
        ),
        tool(
            "append_note",
            ToolAnnotations::new().read_only(false).destructive(true),
        ),
    ]
}

fn stack(toml: &str, inner: &ScriptedService) -> mcp_tower::BuiltStack {
    McpStack::builder()
        .config(StackConfig::from_toml_str(toml).unwrap())
        .tools(tools())
        .build()
        .unwrap()
        .service(inner.clone())
}

fn call(built: &mcp_tower::BuiltStack, tool: &'static str, city: &str) -> ToolCall {
    ToolCall::with_resolver(tool, object!({"city": city}), Arc::clone(&built.resolver))
}

fn complete(response: CallToolResponse) -> CallToolResult {
    match response {
        CallToolResponse::Complete(result) => result,
        other => panic!("expected a complete result, got {other:?}"),
    }
}

/// The Prometheus counter `mcp_tool_calls_total{tool,outcome}` from the stack's metrics.
fn counted(built: &mcp_tower::BuiltStack, tool: &str, outcome: &str) -> f64 {
    let text = built.handles.metrics.as_ref().unwrap().render();
    let needle = format!("mcp_tool_calls_total{{tool=\"{tool}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_sees_cache_hits_because_it_is_outermost() {
    let inner = ScriptedService::new();
    let built = stack("", &inner);
    let first = complete(
        built
            .service
            .clone()
            .oneshot(call(&built, "weather", "Oslo"))
            .await
            .unwrap(),
    );
    let second = complete(
        built
            .service
            .clone()
            .oneshot(call(&built, "weather", "Oslo"))
            .await
            .unwrap(),
    );
    assert_eq!(inner.calls(), 1, "the second call is served by the cache");
    assert_eq!(first.structured_content, second.structured_content);
    let marker = &second.meta.as_ref().unwrap().0["io.github.mcp-tower/cache"];
    assert_eq!(marker["hit"], true);
    assert_eq!(counted(&built, "weather", "ok"), 1.0);
    assert_eq!(counted(&built, "weather", "cache_hit"), 1.0);
    let stats = built.handles.cache.as_ref().unwrap().stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_followers_take_no_concurrency_permit() {
    // One permit and no queue: any second call that reached the limiter would be rejected.
    let inner = ScriptedService::held();
    let built = stack("[concurrency]\nmax_in_flight = 1\nmax_queued = 0\n", &inner);
    // Each call is polled once here, before any is released, so all ten are inside the stack
    // (the first running, nine waiting on its flight) when the inner call completes. Spawning
    // them instead would let a late one arrive after the flight ended but before the cache
    // insert, and run again: legitimate behaviour, but not what this test is about.
    let mut calls: Vec<_> = (0..10)
        .map(|_| {
            Box::pin(
                built
                    .service
                    .clone()
                    .oneshot(call(&built, "weather", "Oslo")),
            )
        })
        .collect();
    for c in &mut calls {
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(c.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the inner call is held");
    }
    let calls: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    inner.wait_for_calls(1).await;
    // A different call does reach the limiter, and is refused: the limit is real.
    let refused = built
        .service
        .clone()
        .oneshot(call(&built, "weather", "Bergen"))
        .await
        .unwrap_err();
    assert_eq!(error::ErrorKind::of(&refused), Some(error::ErrorKind::Busy));
    inner.release_all();
    for c in calls {
        complete(c.await.unwrap().unwrap());
    }
    assert_eq!(inner.calls(), 1, "ten identical calls, one execution");
    assert_eq!(
        built.handles.concurrency.as_ref().unwrap().rejected(),
        1,
        "only the different call was refused"
    );
    assert_eq!(
        built
            .handles
            .dedup
            .as_ref()
            .unwrap()
            .stats()
            .followers_served,
        9
    );
}

#[tokio::test(start_paused = true)]
async fn each_attempt_has_its_own_timeout_and_the_retry_recovers() {
    let inner = ScriptedService::new();
    inner.push_for("set_flag", Outcome::Pending);
    let built = stack("[tools.set_flag]\ntimeout = \"2s\"\n", &inner);
    let start = tokio::time::Instant::now();
    let result = complete(
        built
            .service
            .clone()
            .oneshot(call(&built, "set_flag", "x"))
            .await
            .unwrap(),
    );
    assert_ne!(result.is_error, Some(true));
    assert_eq!(inner.calls(), 2, "the timed-out attempt was retried");
    assert_eq!(inner.dropped(), 1, "the timed-out attempt was dropped");
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!(built.handles.retry.as_ref().unwrap().stats().retries, 1);
    assert_eq!(counted(&built, "set_flag", "ok"), 1.0);
}

#[tokio::test]
async fn retries_stay_inside_the_callers_permit() {
    let inner = ScriptedService::new();
    for _ in 0..5 {
        inner.push_for(
            "set_flag",
            Outcome::error(error::UpstreamUnavailable {
                layer: error::Layer::Pool,
                upstream: "up".into(),
                reason: "flaky".into(),
            }),
        );
    }
    let built = stack(
        "[concurrency]\nmax_in_flight = 1\n[retry]\nmax_attempts = 10\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\n",
        &inner,
    );
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let c =
                ToolCall::with_resolver("set_flag", object!({"n": i}), Arc::clone(&built.resolver));
            tokio::spawn(built.service.clone().oneshot(c))
        })
        .collect();
    for c in calls {
        complete(c.await.unwrap().unwrap());
    }
    assert_eq!(inner.max_in_flight(), 1, "a retry never exceeds the limit");
    // Five failures and five successes, however the calls interleave.
    assert_eq!(inner.calls(), 10);
}

#[tokio::test]
async fn a_destructive_tool_runs_every_time_and_is_never_retried() {
    let inner = ScriptedService::new();
    let built = stack("", &inner);
    for _ in 0..2 {
        complete(
            built
                .service
                .clone()
                .oneshot(call(&built, "append_note", "a"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(inner.calls(), 2);
    let transient = error::TimedOut {
        layer: error::Layer::Timeout,
        tool: "append_note".into(),
        after: Duration::from_secs(1),
    };
    inner.push_for("append_note", Outcome::error(transient.clone()));
    let err = built
        .service
        .clone()
        .oneshot(call(&built, "append_note", "a"))
        .await
        .unwrap_err();
    assert_eq!(err, transient.into(), "the error comes back unchanged");
    assert_eq!(inner.calls(), 3, "exactly one attempt");
}

#[tokio::test]
async fn disabled_layers_are_left_out() {
    let inner = ScriptedService::new();
    let built = stack(
        "[cache]\nenabled = false\n[dedup]\nenabled = false\n[concurrency]\nenabled = false\n[retry]\nenabled = false\n",
        &inner,
    );
    for _ in 0..2 {
        complete(
            built
                .service
                .clone()
                .oneshot(call(&built, "weather", "Oslo"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(inner.calls(), 2, "nothing cached");
    let h = &built.handles;
    assert!(h.cache.is_none() && h.dedup.is_none() && h.concurrency.is_none() && h.retry.is_none());
    assert!(h.metrics.is_some(), "/health and /stats still answer");
    assert_eq!(counted(&built, "weather", "ok"), 2.0);
}

#[tokio::test]
async fn every_layer_reports_to_metrics() {
    let inner = ScriptedService::new();
    let built = stack("", &inner);
    complete(
        built
            .service
            .clone()
            .oneshot(call(&built, "weather", "Oslo"))
            .await
            .unwrap(),
    );
    let text = built.handles.metrics.as_ref().unwrap().render();
    for figure in [
        "mcp_cache_hits_total",
        "mcp_dedup_flights_total",
        "mcp_concurrency_in_flight",
        "mcp_retry_attempts_total",
    ] {
        assert!(text.contains(figure), "{figure} missing from /metrics");
    }
    let snapshot = built.handles.metrics.as_ref().unwrap().stats();
    let json = serde_json::to_value(&snapshot).unwrap();
    for layer in ["cache", "dedup", "concurrency", "retry"] {
        assert!(
            json.to_string().contains(layer),
            "{layer} missing from /stats"
        );
    }
}

#[test]
fn invalid_sections_name_their_key() {
    for (toml, key) in [
        (
            "[concurrency]\nmax_in_flight = 0",
            "concurrency.max_in_flight",
        ),
        ("[cache]\nmax_entry_bytes = 0", "cache.max_entry_bytes"),
        ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
        (
            "[metrics]\nduration_buckets = []",
            "metrics.duration_buckets",
        ),
    ] {
        let err = StackConfig::from_toml_str(toml).unwrap_err().to_string();
        assert!(err.contains(key), "{toml:?} gave {err:?}");
    }
    let err = StackConfig::from_toml_str("[cache]\nmax_byts = 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_byts"), "{err}");
}
