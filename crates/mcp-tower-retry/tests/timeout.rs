//! The per-attempt timeout, alone and under the retry layer.

mod fixtures;

use std::{pin::pin, sync::Arc, time::Duration};

use fixtures::*;
use futures_util::poll;
use mcp_tower_core::{
    CallResolver, PolicyDefaults, ToolCall,
    error::{ErrorKind, codes, is_transient},
    testing::{Outcome, ScriptedService},
};
use mcp_tower_retry::{RetryConfig, RetryLayer, Timeout, TimeoutConfig, TimeoutLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn timeout(inner: &ScriptedService) -> Timeout<ScriptedService> {
    TimeoutLayer::default().layer(inner.clone())
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_at_the_default_and_is_dropped() {
    let inner = ScriptedService::new().with_default(Outcome::delayed(Duration::from_secs(60)));
    let start = Instant::now();
    let error = timeout(&inner).oneshot(call(READ)).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30) && elapsed <= Duration::from_millis(30_001),
        "{elapsed:?}"
    );
    assert_eq!(error.code, codes::TIMED_OUT);
    assert_eq!(ErrorKind::of(&error), Some(ErrorKind::TimedOut));
    assert!(
        error.message.contains("tool `read` timed out after 30s"),
        "{}",
        error.message
    );
    let data = error.data.as_ref().unwrap();
    assert_eq!(data["layer"], "timeout");
    assert_eq!(data["timeoutMs"], 30_000);
    assert!(is_transient(&error), "so the retry layer may retry it");
    assert_eq!(inner.dropped(), 1, "the attempt was cancelled");
    assert_eq!(inner.completed(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_is_dropped_when_it_times_out_not_when_the_future_is() {
    let inner = ScriptedService::new().with_default(Outcome::Pending);
    let mut service = timeout(&inner);
    let mut future = pin!(service.call(call(SLOW)));
    let error = future.as_mut().await.unwrap_err();
    assert_eq!(error.code, codes::TIMED_OUT);
    assert_eq!(
        inner.dropped(),
        1,
        "dropped while our future is still alive"
    );
    assert_eq!(inner.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_fast_attempt_is_untouched() {
    let inner = ScriptedService::new().with_default(Outcome::delayed(Duration::from_secs(29)));
    let response = timeout(&inner).oneshot(call(READ)).await.unwrap();
    assert_eq!(execution(response), 1);
    let inner = ScriptedService::new();
    inner.push(Outcome::tool_error("no such city"));
    let result = complete(timeout(&inner).oneshot(call(READ)).await.unwrap());
    assert_eq!(result.is_error, Some(true), "tool errors pass through");
    assert_eq!(inner.dropped(), 0);
}

#[tokio::test(start_paused = true)]
async fn each_tool_has_its_own_timeout() {
    let inner = ScriptedService::new().with_default(Outcome::delayed(Duration::from_secs(5)));
    let resolver = resolver();
    let start = Instant::now();
    let error = timeout(&inner)
        .oneshot(call_with(&resolver, SLOW))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2), "`slow` has 2 s");
    assert_eq!(error.data.unwrap()["timeoutMs"], 2000);
    timeout(&inner)
        .oneshot(call_with(&resolver, READ))
        .await
        .expect("`read` has the default 30 s");
}

#[tokio::test(start_paused = true)]
async fn unknown_and_destructive_tools_are_timed_out_too() {
    for tool in ["no_such_tool", DESTROY] {
        let inner = ScriptedService::new().with_default(Outcome::Pending);
        let error = timeout(&inner).oneshot(call(tool)).await.unwrap_err();
        assert_eq!(error.code, codes::TIMED_OUT, "{tool}");
        assert_eq!(error.data.unwrap()["tool"], tool);
    }
}

#[tokio::test(start_paused = true)]
async fn no_timeout_in_the_policy_or_a_disabled_layer_means_none() {
    let hour = Duration::from_secs(3600);
    let untimed = Arc::new(CallResolver::new(table(PolicyDefaults {
        timeout: None,
        ..PolicyDefaults::default()
    })));
    let inner = ScriptedService::new().with_default(Outcome::delayed(hour));
    timeout(&inner)
        .oneshot(call_with(&untimed, READ))
        .await
        .expect("no timeout");

    let disabled = TimeoutLayer::new(TimeoutConfig::default().with_enabled(false));
    disabled
        .layer(inner.clone())
        .oneshot(call(READ))
        .await
        .expect("layer off");
    assert_eq!(inner.dropped(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_timer_starts_only_when_the_attempt_waits() {
    let inner = ScriptedService::new().with_default(Outcome::delayed(Duration::from_secs(60)));
    let mut service = timeout(&inner);
    let future = service.call(call(READ));
    assert!(format!("{future:?}").contains("\"timed\""), "{future:?}");
    let mut future = pin!(future);
    assert!(poll!(future.as_mut()).is_pending());
    assert!(format!("{future:?}").contains("\"armed\""), "{future:?}");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_then_a_successful_retry() {
    let inner = ScriptedService::new();
    inner.push_for(READ, Outcome::delayed(Duration::from_secs(60)));
    let retry = RetryLayer::default();
    let handle = retry.handle();
    let service = ServiceBuilder::new()
        .layer(retry)
        .layer(TimeoutLayer::default())
        .service(inner.clone());
    let start = Instant::now();
    let response = service.oneshot(call(READ)).await.unwrap();
    assert_eq!(execution(response), 2);
    assert_eq!(inner.calls(), 2);
    assert_eq!(inner.dropped(), 1, "the timed-out attempt was cancelled");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30) && elapsed <= Duration::from_millis(30_101),
        "30 s timeout plus at most 100 ms of backoff: {elapsed:?}"
    );
    let stats = handle.stats();
    assert_eq!((stats.retries, stats.recovered), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_timing_out_gives_up_with_the_timeout_as_last_error() {
    let inner = ScriptedService::new().with_default(Outcome::Pending);
    let service = ServiceBuilder::new()
        .layer(
            RetryLayer::new(RetryConfig::default().with_deadline(Duration::from_secs(600)))
                .unwrap(),
        )
        .layer(TimeoutLayer::default())
        .service(inner.clone());
    let error = service.oneshot(call(SLOW)).await.unwrap_err();
    assert_eq!(error.code, codes::RETRIES_EXHAUSTED);
    let data = error.data.unwrap();
    assert_eq!(data["attempts"], 3);
    assert_eq!(data["lastError"]["code"], codes::TIMED_OUT.0);
    assert_eq!(inner.calls(), 3);
    assert_eq!(inner.dropped(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_destructive_tool_that_times_out_is_not_retried() {
    let inner = ScriptedService::new().with_default(Outcome::Pending);
    let service = ServiceBuilder::new()
        .layer(RetryLayer::default())
        .layer(TimeoutLayer::default())
        .service(inner.clone());
    let error = service.oneshot(call(DESTROY)).await.unwrap_err();
    assert_eq!(error.code, codes::TIMED_OUT, "its own error, unchanged");
    assert_eq!(inner.calls(), 1);
}

#[test]
fn futures_are_send() {
    fn send<T: Send>() {}
    send::<mcp_tower_retry::timeout::ResponseFuture<<ScriptedService as Service<ToolCall>>::Future>>(
    );
}
