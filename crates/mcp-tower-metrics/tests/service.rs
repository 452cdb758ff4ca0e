//! The service's behaviour and the `/stats` figures: exact rate windows and latency
//! quantiles on tokio's paused clock, in-flight and peak, cancelled and panicking calls,
//! readiness.

mod common;

use std::{sync::Arc, task::Poll, time::Duration};

use common::{call, calls, parse, resolver};
use futures_util::FutureExt;
use mcp_tower_core::{
    ToolCall,
    testing::{Outcome, ScriptedService},
};
use mcp_tower_metrics::{Metrics, MetricsConfig, MetricsHandle};
use rmcp::{ErrorData, model::CallToolResponse};
use tokio::time::advance;
use tower::{Layer as _, ServiceExt};

#[tokio::test(start_paused = true)]
async fn qps_windows_are_exact_on_a_paused_clock() {
    let resolver = resolver(&["weather", "search"]);
    // Created on the paused clock: its windows count from now (t = 0).
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let service = handle.layer().layer(ScriptedService::new());
    let qps = |tool: &str| {
        let stats = handle.tool_stats(tool).unwrap();
        (stats.qps_1s, stats.qps_10s)
    };

    // Five calls received at t = 0, in the first 100 ms slot.
    for _ in 0..5 {
        service
            .clone()
            .oneshot(call(&resolver, "weather"))
            .await
            .unwrap();
    }
    assert_eq!(qps("weather"), (0.0, 0.0), "the slot is not complete yet");
    advance(Duration::from_millis(100)).await;
    assert_eq!(qps("weather"), (5.0, 0.5));
    advance(Duration::from_millis(950)).await; // t = 1.05 s
    assert_eq!(qps("weather"), (5.0, 0.5), "still within the last second");
    advance(Duration::from_millis(50)).await; // t = 1.1 s
    assert_eq!(qps("weather"), (0.0, 0.5), "out of the last second");

    // Twenty more at t = 1.1 s, and three calls of another tool.
    for _ in 0..20 {
        service
            .clone()
            .oneshot(call(&resolver, "weather"))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        service
            .clone()
            .oneshot(call(&resolver, "search"))
            .await
            .unwrap();
    }
    advance(Duration::from_millis(100)).await; // t = 1.2 s
    assert_eq!(qps("weather"), (20.0, 2.5));
    assert_eq!(qps("search"), (3.0, 0.3));
    let totals = handle.stats().totals;
    assert_eq!((totals.qps_1s, totals.qps_10s), (23.0, 2.8));
    assert_eq!(totals.calls, 28);

    advance(Duration::from_millis(8_900)).await; // t = 10.1 s: the first five are out
    assert_eq!(qps("weather"), (0.0, 2.0));
    advance(Duration::from_millis(1_000)).await; // t = 11.1 s
    assert_eq!(qps("weather"), (0.0, 2.0));
    advance(Duration::from_millis(100)).await; // t = 11.2 s: the twenty are out too
    assert_eq!(qps("weather"), (0.0, 0.0));
    // The lifetime count does not slide.
    assert_eq!(handle.tool_stats("weather").unwrap().calls, 25);
}

#[tokio::test(start_paused = true)]
async fn latency_quantiles_and_success_rate_over_the_window() {
    let resolver = resolver(&["slow"]);
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let inner = ScriptedService::new();
    let service = handle.layer().layer(inner.clone());

    // 100 calls taking 1.5 ms, 2.5 ms, … 100.5 ms; every tenth an `isError` result.
    for i in 1..=100u64 {
        let delay = Duration::from_micros(i * 1_000 + 500);
        let outcome = if i % 10 == 0 {
            Outcome::tool_error("failed").after(delay)
        } else {
            Outcome::delayed(delay)
        };
        inner.push_for("slow", outcome);
        service
            .clone()
            .oneshot(call(&resolver, "slow"))
            .await
            .unwrap();
    }
    let stats = handle.tool_stats("slow").unwrap();
    assert_eq!(stats.calls, 100);
    assert_eq!(stats.outcomes.ok, 90);
    assert_eq!(stats.outcomes.tool_error, 10);
    assert_eq!(stats.success_rate, Some(0.9));
    assert_eq!(stats.cache_hit_rate, Some(0.0));
    assert_eq!(stats.window.calls, 100);
    assert_eq!(stats.window.success_rate, Some(0.9));
    // Quantiles read at most 6.25 % high, never low.
    let within = |q: Option<f64>, exact: f64| {
        let q = q.unwrap();
        assert!((exact..=exact * 1.0625).contains(&q), "{q} vs {exact}");
    };
    within(stats.window.p50_ms, 50.5);
    within(stats.window.p95_ms, 95.5);
    within(stats.window.p99_ms, 99.5);

    // The histogram agrees. The 90 `ok` calls are those with i % 10 != 0, taking i + 0.5 ms.
    let scrape = parse(&handle.render());
    let histogram = common::samples(
        &scrape,
        "mcp_tool_call_duration_seconds",
        &[("tool", "slow"), ("outcome", "ok")],
    );
    let prometheus_parse::Value::Histogram(buckets) = &histogram[0].value else {
        panic!("not a histogram")
    };
    let le = |bound: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == bound)
            .map(|b| b.count)
    };
    assert_eq!(le(0.025), Some(22.0)); // i = 1..=24 but 10 and 20
    assert_eq!(le(0.05), Some(45.0)); // i = 1..=49 but 10, 20, 30, 40
    assert_eq!(le(0.1), Some(90.0));
    assert_eq!(
        common::value(
            &scrape,
            "mcp_tool_call_duration_seconds_count",
            &[("tool", "slow"), ("outcome", "tool_error")]
        ),
        Some(10.0)
    );
    // The window slides: a minute later the quantiles are gone, the lifetime figures stay.
    advance(Duration::from_secs(60)).await;
    let later = handle.tool_stats("slow").unwrap();
    assert_eq!(later.window.calls, 0);
    assert_eq!(later.window.p50_ms, None);
    assert_eq!(later.window.success_rate, None);
    assert_eq!(later.calls, 100);
}

#[tokio::test(start_paused = true)]
async fn in_flight_and_peak_follow_the_calls() {
    let resolver = resolver(&["held"]);
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let inner = ScriptedService::held();
    let service = handle.layer().layer(inner.clone());

    let calls_in_flight: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(call(&resolver, "held"))))
        .collect();
    inner.wait_for_calls(3).await;
    assert_eq!(handle.in_flight(), 3);
    let stats = handle.tool_stats("held").unwrap();
    assert_eq!(
        (stats.in_flight, stats.peak_in_flight, stats.calls),
        (3, 3, 0)
    );
    let gauge = |handle: &MetricsHandle| {
        common::value(
            &parse(&handle.render()),
            "mcp_tool_calls_in_flight",
            &[("tool", "held")],
        )
    };
    assert_eq!(gauge(&handle), Some(3.0));

    inner.release_all();
    for call in calls_in_flight {
        call.await.unwrap().unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.peak_in_flight(), 3);
    let stats = handle.tool_stats("held").unwrap();
    assert_eq!(
        (stats.in_flight, stats.peak_in_flight, stats.calls),
        (0, 3, 3)
    );
    assert_eq!(gauge(&handle), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_counts_as_cancelled_and_leaves_the_gauges() {
    let resolver = resolver(&["slow"]);
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let inner = ScriptedService::new().with_default(Outcome::Pending);
    let service = handle.layer().layer(inner.clone());

    let mut pending = Box::pin(service.clone().oneshot(call(&resolver, "slow")));
    assert!(futures_util::poll!(&mut pending).is_pending());
    assert_eq!(handle.in_flight(), 1);
    advance(Duration::from_millis(250)).await;
    drop(pending);

    assert_eq!(inner.dropped(), 1);
    assert_eq!(handle.in_flight(), 0);
    let stats = handle.tool_stats("slow").unwrap();
    assert_eq!(stats.outcomes.cancelled, 1);
    assert_eq!(stats.calls, 1);
    // Cancelled calls are neither successes nor failures, and have no latency.
    assert_eq!(stats.success_rate, None);
    assert_eq!(stats.window.calls, 0);
    let scrape = parse(&handle.render());
    assert_eq!(calls(&scrape, "slow", "cancelled"), 1.0);
    assert_eq!(
        common::value(
            &scrape,
            "mcp_tool_call_duration_seconds_sum",
            &[("tool", "slow"), ("outcome", "cancelled")]
        ),
        Some(0.25)
    );
}

#[tokio::test]
async fn a_panicking_call_counts_as_an_error_and_the_panic_goes_on() {
    let resolver = resolver(&["boom"]);
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let inner = ScriptedService::new();
    inner.push(Outcome::panic("tool exploded"));
    let service = handle.layer().layer(inner.clone());

    let result = std::panic::AssertUnwindSafe(service.clone().oneshot(call(&resolver, "boom")))
        .catch_unwind()
        .await;
    assert!(result.is_err(), "the panic reaches the caller");
    assert_eq!(handle.in_flight(), 0);
    let stats = handle.tool_stats("boom").unwrap();
    assert_eq!(stats.outcomes.error, 1);
    assert_eq!(stats.outcomes.cancelled, 0);
    // A panic in a spawned task: tokio catches it and drops the task's future afterwards.
    inner.push(Outcome::panic("again"));
    let task = tokio::spawn(service.clone().oneshot(call(&resolver, "boom")));
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(handle.tool_stats("boom").unwrap().outcomes.error, 2);
    assert_eq!(handle.in_flight(), 0);
    // The service keeps working.
    service.oneshot(call(&resolver, "boom")).await.unwrap();
    assert_eq!(handle.tool_stats("boom").unwrap().outcomes.ok, 1);
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let (mock, mut control) = tower_test::mock::pair::<ToolCall, CallToolResponse>();
    let mock = mock.map_err(|e| ErrorData::internal_error(e.to_string(), None));
    let mut service = tower_test::mock::Spawn::new(Metrics::new(mock, handle.clone()));

    control.allow(0);
    assert!(
        service.poll_ready().is_pending(),
        "no back-pressure is hidden"
    );
    control.allow(1);
    assert!(matches!(service.poll_ready(), Poll::Ready(Ok(()))));

    let response = service.call(ToolCall::new("anything", None));
    let (request, reply) = control.next_request().await.unwrap();
    assert_eq!(request.name(), "anything");
    reply.send_error(std::io::Error::other("upstream reset"));
    let error = response.await.unwrap_err();
    assert!(error.message.contains("upstream reset"), "{error:?}");
    assert_eq!(handle.tool_stats("unknown").unwrap().outcomes.error, 1);
}

#[tokio::test]
async fn a_disabled_config_still_builds_a_working_handle() {
    // `enabled = false` tells the stack builder to leave the layer out; the handle (and so
    // /health) still works.
    let handle = MetricsHandle::new(MetricsConfig::default().with_enabled(false)).unwrap();
    assert!(!handle.config().enabled);
    assert!(handle.health().is_healthy());
    assert!(handle.stats().tools.is_empty());
}

#[tokio::test]
async fn clones_share_the_handle() {
    let resolver = resolver(&["weather"]);
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let service = Arc::new(handle.layer().layer(ScriptedService::new()));
    let a = Metrics::clone(&service);
    let b = Metrics::clone(&service);
    a.oneshot(call(&resolver, "weather")).await.unwrap();
    b.oneshot(call(&resolver, "weather")).await.unwrap();
    assert_eq!(service.handle().tool_stats("weather").unwrap().calls, 2);
}
