//! `/metrics`: after a known sequence of calls, the parsed exposition holds exactly the
//! calls made, by tool and outcome; made-up tool names do not create series; the other
//! layers' figures and the process figures are there.

mod common;

use std::{sync::Arc, time::Duration};

use common::{FakeCache, FakePool, call, calls, parse, resolver, samples, value};
use mcp_tower_core::{
    error::{
        Busy, BusyReason, Cancelled, Layer, QueueTimeout, RetriesExhausted, TimedOut,
        UpstreamUnavailable,
    },
    testing::{Outcome, ScriptedService},
};
use mcp_tower_metrics::{CACHE_META_KEY, CallOutcome, MetricsConfig, MetricsHandle};
use prometheus_parse::Value;
use rmcp::{
    ErrorData,
    model::{CallToolResult, ContentBlock, InputRequiredResult, MetaObject},
};
use serde_json::json;
use tower::{Layer as _, ServiceExt};

fn cache_hit() -> Outcome {
    let mut result = CallToolResult::success(vec![ContentBlock::text("cached")]);
    let mut meta = MetaObject::new();
    meta.0
        .insert(CACHE_META_KEY.into(), json!({"hit": true, "age_ms": 30}));
    result.meta = Some(meta);
    Outcome::Result(result)
}

fn timed_out(tool: &str) -> ErrorData {
    TimedOut {
        layer: Layer::Timeout,
        tool: tool.into(),
        after: Duration::from_secs(1),
    }
    .into()
}

#[tokio::test(start_paused = true)]
async fn counters_equal_the_calls_made_by_tool_and_outcome() {
    let resolver = resolver(&["weather", "search", "notes"]);
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let inner = ScriptedService::new();
    let service = handle.layer().layer(inner.clone());

    // (tool, scripted outcome, expected outcome label)
    let mut plan: Vec<(&str, Outcome, CallOutcome)> = Vec::new();
    for _ in 0..3 {
        plan.push(("weather", Outcome::Echo, CallOutcome::Ok));
    }
    for _ in 0..2 {
        plan.push(("weather", cache_hit(), CallOutcome::CacheHit));
    }
    plan.push((
        "weather",
        Outcome::delayed(Duration::from_millis(1_500)),
        CallOutcome::Ok,
    ));
    plan.push((
        "search",
        Outcome::tool_error("no results"),
        CallOutcome::ToolError,
    ));
    plan.push((
        "search",
        Outcome::error(ErrorData::invalid_params("missing field `q`", None)),
        CallOutcome::Error,
    ));
    plan.push((
        "search",
        Outcome::error(Busy {
            layer: Layer::Concurrency,
            tool: Some("search".into()),
            reason: BusyReason::QueueFull,
            in_flight: 4,
            queued: 8,
            retry_after: Duration::from_millis(100),
        }),
        CallOutcome::Rejected,
    ));
    plan.push((
        "search",
        Outcome::error(QueueTimeout {
            layer: Layer::Concurrency,
            tool: None,
            waited: Duration::from_secs(2),
            retry_after: Duration::from_millis(100),
        }),
        CallOutcome::Rejected,
    ));
    plan.push((
        "notes",
        Outcome::error(timed_out("notes")),
        CallOutcome::Timeout,
    ));
    plan.push((
        "notes",
        Outcome::error(RetriesExhausted {
            tool: "notes".into(),
            attempts: 3,
            stopped_by: "max_attempts",
            last: timed_out("notes"),
        }),
        CallOutcome::Timeout,
    ));
    plan.push((
        "notes",
        Outcome::error(RetriesExhausted {
            tool: "notes".into(),
            attempts: 2,
            stopped_by: "budget",
            last: UpstreamUnavailable {
                layer: Layer::Pool,
                upstream: "notes-server".into(),
                reason: "connection refused".into(),
            }
            .into(),
        }),
        CallOutcome::Error,
    ));
    plan.push((
        "notes",
        Outcome::error(Cancelled {
            layer: Layer::Retry,
            tool: "notes".into(),
        }),
        CallOutcome::Cancelled,
    ));
    plan.push((
        "notes",
        Outcome::Result(CallToolResult::success(vec![])),
        CallOutcome::Ok,
    ));
    plan.push(("not_a_tool", Outcome::Echo, CallOutcome::Ok));
    plan.push((
        "also_made_up",
        Outcome::tool_error("x"),
        CallOutcome::ToolError,
    ));

    let mut expected = std::collections::BTreeMap::<(String, CallOutcome), u64>::new();
    for (tool, outcome, label) in plan {
        inner.push_for(tool, outcome);
        let _ = service.clone().oneshot(call(&resolver, tool)).await;
        let tool = if ["weather", "search", "notes"].contains(&tool) {
            tool
        } else {
            "unknown"
        };
        *expected.entry((tool.to_owned(), label)).or_default() += 1;
    }
    // An InputRequired answer counts as `ok` (documented on CallOutcome).
    let mrtr = handle
        .layer()
        .layer(tower::service_fn(|_call: mcp_tower_core::ToolCall| async {
            Ok::<_, ErrorData>(InputRequiredResult::from_request_state("opaque").into())
        }));
    mrtr.oneshot(call(&resolver, "notes")).await.unwrap();
    *expected
        .entry(("notes".to_owned(), CallOutcome::Ok))
        .or_default() += 1;

    let scrape = parse(&handle.render());
    for tool in ["weather", "search", "notes", "unknown"] {
        for outcome in CallOutcome::ALL {
            let want = expected
                .get(&(tool.to_owned(), outcome))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                calls(&scrape, tool, outcome.as_str()),
                want as f64,
                "mcp_tool_calls_total{{tool={tool},outcome={outcome}}}"
            );
            // The histogram counted the same calls.
            let count = value(
                &scrape,
                "mcp_tool_call_duration_seconds_count",
                &[("tool", tool), ("outcome", outcome.as_str())],
            )
            .unwrap_or(0.0);
            assert_eq!(count, want as f64, "histogram count {tool}/{outcome}");
        }
        assert_eq!(
            value(&scrape, "mcp_tool_calls_in_flight", &[("tool", tool)]),
            Some(0.0),
            "{tool} in flight"
        );
    }
    let total: f64 = samples(&scrape, "mcp_tool_calls_total", &[])
        .iter()
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("not a counter"),
        })
        .sum();
    assert_eq!(total, expected.values().sum::<u64>() as f64);
    assert_eq!(inner.calls(), 17);

    // The 1.5 s call is in the 2.5 s bucket and not the 1 s one; the others took no time.
    let weather_ok = samples(
        &scrape,
        "mcp_tool_call_duration_seconds",
        &[("tool", "weather"), ("outcome", "ok")],
    );
    let Value::Histogram(buckets) = &weather_ok[0].value else {
        panic!("not a histogram: {weather_ok:?}")
    };
    let le = |bound: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == bound)
            .map(|b| b.count)
    };
    assert_eq!(le(0.001), Some(3.0));
    assert_eq!(le(1.0), Some(3.0));
    assert_eq!(le(2.5), Some(4.0));
    assert_eq!(le(60.0), Some(4.0));
    assert_eq!(le(f64::INFINITY), Some(4.0));
    assert_eq!(
        value(
            &scrape,
            "mcp_tool_call_duration_seconds_sum",
            &[("tool", "weather"), ("outcome", "ok")]
        ),
        Some(1.5)
    );
    assert!(
        scrape.docs.contains_key("mcp_tool_calls_total"),
        "HELP is present"
    );
}

#[tokio::test]
async fn ten_thousand_made_up_tool_names_do_not_create_series() {
    let resolver = resolver(&["weather", "search"]);
    let handle = MetricsHandle::new(MetricsConfig::default().with_process_metrics(false)).unwrap();
    let service = handle.layer().layer(ScriptedService::new());

    service
        .clone()
        .oneshot(call(&resolver, "weather"))
        .await
        .unwrap();
    service
        .clone()
        .oneshot(call(&resolver, "search"))
        .await
        .unwrap();
    service
        .clone()
        .oneshot(call(&resolver, "made_up_0"))
        .await
        .unwrap();
    let lines_before = handle.render().lines().count();

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        service
            .clone()
            .oneshot(call(&resolver, format!("tool_{seed:016x}")))
            .await
            .unwrap();
    }
    let text = handle.render();
    assert_eq!(text.lines().count(), lines_before, "no line was added");
    let scrape = parse(&text);
    let tools: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter_map(|s| s.labels.get("tool"))
        .collect();
    assert_eq!(
        tools.into_iter().collect::<Vec<_>>(),
        ["search", "unknown", "weather"]
    );
    assert_eq!(calls(&scrape, "unknown", "ok"), 10_001.0);
    assert_eq!(handle.tool_labels(), 3);
    let stats = handle.stats();
    assert_eq!(stats.tools.len(), 3);
    assert_eq!(stats.tools["unknown"].calls, 10_001);
}

#[tokio::test]
async fn layer_reports_and_process_figures_are_exported() {
    let cache = Arc::new(FakeCache::default());
    cache.hits.store(7, std::sync::atomic::Ordering::SeqCst);
    let pool = Arc::new(FakePool::new(true));
    let handle = MetricsHandle::new(MetricsConfig::default())
        .unwrap()
        .with_report(cache.clone())
        .with_report(pool.clone());
    let scrape = parse(&handle.render());

    let counter =
        |name: &str, labels: &[(&str, &str)]| match samples(&scrape, name, labels).as_slice() {
            [one] => match one.value {
                Value::Counter(v) => v,
                ref other => panic!("{name} is {other:?}, not a counter"),
            },
            other => panic!("{name}: {other:?}"),
        };
    let gauge =
        |name: &str, labels: &[(&str, &str)]| match samples(&scrape, name, labels).as_slice() {
            [one] => match one.value {
                Value::Gauge(v) => v,
                ref other => panic!("{name} is {other:?}, not a gauge"),
            },
            other => panic!("{name}: {other:?}"),
        };
    assert_eq!(counter("mcp_cache_hits_total", &[("tool", "weather")]), 7.0);
    assert_eq!(counter("mcp_cache_misses_total", &[]), 2.0);
    assert_eq!(gauge("mcp_cache_weighted_bytes", &[]), 1024.0);
    assert_eq!(
        gauge("mcp_pool_upstream_up", &[("upstream", "github")]),
        1.0
    );
    assert_eq!(
        counter("mcp_pool_connects_total", &[("upstream", "github")]),
        3.0
    );
    assert_eq!(
        scrape.docs["mcp_cache_weighted_bytes"],
        "Bytes held by the cache."
    );

    // Read at scrape time: a change shows on the next scrape.
    cache.hits.store(9, std::sync::atomic::Ordering::SeqCst);
    pool.up.store(false, std::sync::atomic::Ordering::SeqCst);
    let scrape = parse(&handle.render());
    assert_eq!(
        value(&scrape, "mcp_cache_hits_total", &[("tool", "weather")]),
        Some(9.0)
    );
    assert_eq!(
        value(&scrape, "mcp_pool_upstream_up", &[("upstream", "github")]),
        Some(0.0)
    );

    #[cfg(all(feature = "process", target_os = "linux"))]
    {
        assert!(gauge("process_resident_memory_bytes", &[]) > 0.0);
        assert!(gauge("process_open_fds", &[]) > 0.0);
        assert!(gauge("process_threads", &[]) >= 1.0);
        assert!(counter("process_cpu_seconds_total", &[]) >= 0.0);
    }
}

#[tokio::test]
async fn process_figures_can_be_turned_off() {
    let handle = MetricsHandle::new(MetricsConfig::default().with_process_metrics(false)).unwrap();
    assert!(!handle.render().contains("process_"));
}

#[tokio::test]
async fn configured_buckets_are_used() {
    let resolver = resolver(&["weather"]);
    let handle =
        MetricsHandle::new(MetricsConfig::default().with_duration_buckets(vec![0.5, 2.0])).unwrap();
    let service = handle.layer().layer(ScriptedService::new());
    service.oneshot(call(&resolver, "weather")).await.unwrap();
    let scrape = parse(&handle.render());
    let histogram = samples(
        &scrape,
        "mcp_tool_call_duration_seconds",
        &[("tool", "weather"), ("outcome", "ok")],
    );
    let Value::Histogram(buckets) = &histogram[0].value else {
        panic!("not a histogram")
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds, [0.5, 2.0, f64::INFINITY]);
}

#[test]
fn an_invalid_config_is_refused() {
    let err = MetricsHandle::new(MetricsConfig::default().with_duration_buckets(vec![2.0, 1.0]))
        .unwrap_err();
    assert_eq!(err.field, "duration_buckets");
}

#[tokio::test]
async fn two_handles_do_not_share_figures() {
    let resolver = resolver(&["weather"]);
    let a = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let b = MetricsHandle::new(MetricsConfig::default()).unwrap();
    a.layer()
        .layer(ScriptedService::new())
        .oneshot(call(&resolver, "weather"))
        .await
        .unwrap();
    assert_eq!(calls(&parse(&a.render()), "weather", "ok"), 1.0);
    assert_eq!(calls(&parse(&b.render()), "weather", "ok"), 0.0);
}

#[tokio::test]
async fn stacks_with_different_policy_tables_keep_their_tools_apart() {
    // Both tables give id 0 to their first tool; the handle must not mix them up.
    let first = resolver(&["alpha"]);
    let second = resolver(&["beta"]);
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let service = handle.layer().layer(ScriptedService::new());
    for _ in 0..2 {
        service
            .clone()
            .oneshot(call(&first, "alpha"))
            .await
            .unwrap();
        service
            .clone()
            .oneshot(call(&second, "beta"))
            .await
            .unwrap();
    }
    let scrape = parse(&handle.render());
    assert_eq!(calls(&scrape, "alpha", "ok"), 2.0);
    assert_eq!(calls(&scrape, "beta", "ok"), 2.0);
}
