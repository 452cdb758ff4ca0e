//! The retry layer: which calls and failures it retries, when it stops, the budget, the
//! backoff bounds and cancellation. Every test counts what reached the inner service.

mod fixtures;

use std::{
    pin::pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use fixtures::*;
use futures_util::{future::join_all, poll};
use mcp_tower_core::{
    CallToolResponse, LayerReport, ToolCall,
    error::{Busy, BusyReason, ErrorKind, Layer, TimedOut, codes, is_transient, with_retry_after},
    testing::{Outcome, ScriptedService},
};
use mcp_tower_retry::{Backoff, BudgetConfig, Retry, RetryConfig, RetryLayer, RetryStats};
use rmcp::{
    ErrorData,
    model::{ErrorCode, InputRequiredResult},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Layer as _, ServiceExt};

/// Short waits, so that tests on the paused clock stay readable.
fn config() -> RetryConfig {
    RetryConfig::default()
        .with_base_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100))
}

fn retry(inner: &ScriptedService, config: RetryConfig) -> Retry<ScriptedService> {
    Retry::new(inner.clone(), config).expect("valid config")
}

fn data(error: &ErrorData) -> &serde_json::Value {
    error.data.as_ref().expect("our errors carry data")
}

#[tokio::test(start_paused = true)]
async fn transient_failure_then_success_returns_the_success() {
    let inner = ScriptedService::new();
    inner.push_for(READ, Outcome::error(upstream_down()));
    let service = retry(&inner, config());

    let response = service.clone().oneshot(call(READ)).await.unwrap();
    assert_eq!(execution(response), 2, "the second attempt's result");
    assert_eq!(inner.calls(), 2);
    assert_eq!(
        service.handle().stats(),
        RetryStats {
            calls: 1,
            attempts: 2,
            retries: 1,
            recovered: 1,
            ..RetryStats::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn every_transient_kind_is_retried() {
    let timed_out: ErrorData = TimedOut {
        layer: Layer::Timeout,
        tool: READ.into(),
        after: Duration::from_secs(30),
    }
    .into();
    for (name, error) in [
        ("upstream unavailable", upstream_down()),
        ("timed out", timed_out),
        ("transport closed", transport_closed()),
    ] {
        let inner = ScriptedService::new();
        inner.push_for(IDEMPOTENT, Outcome::error(error.clone()));
        inner.push_for(IDEMPOTENT, Outcome::error(error));
        let response = retry(&inner, config())
            .oneshot(call(IDEMPOTENT))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(execution(response), 3, "{name}");
        assert_eq!(inner.calls(), 3, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn destructive_unannotated_and_unknown_tools_are_called_exactly_once() {
    for tool in [DESTROY, PLAIN, "no_such_tool"] {
        let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
        let service = retry(&inner, config());
        let error = service.clone().oneshot(call(tool)).await.unwrap_err();
        assert_eq!(inner.calls(), 1, "{tool}");
        assert_eq!(error, upstream_down(), "{tool}: its own error, unchanged");
        assert_eq!(service.handle().stats(), RetryStats::default(), "{tool}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_override_makes_a_destructive_tool_retryable() {
    let inner = ScriptedService::new();
    inner.push_for(FORCED, Outcome::error(upstream_down()));
    let response = retry(&inner, config()).oneshot(call(FORCED)).await.unwrap();
    assert_eq!(execution(response), 2);
}

#[tokio::test(start_paused = true)]
async fn caller_mistakes_and_rejections_are_never_retried() {
    let busy: ErrorData = Busy {
        layer: Layer::Concurrency,
        tool: Some(READ.into()),
        reason: BusyReason::LimitReached,
        in_flight: 4,
        queued: 0,
        retry_after: Duration::from_millis(100),
    }
    .into();
    for error in [
        ErrorData::invalid_params("missing field `city`", None),
        ErrorData::new(ErrorCode::METHOD_NOT_FOUND, "tool not found: read2", None),
        ErrorData::internal_error("the tool's own bug", None),
        busy,
    ] {
        let inner = ScriptedService::new().with_default(Outcome::error(error.clone()));
        let service = retry(&inner, config());
        let got = service.clone().oneshot(call(READ)).await.unwrap_err();
        assert_eq!(inner.calls(), 1, "{error:?}");
        assert_eq!(got, error, "returned unchanged");
        let stats = service.handle().stats();
        assert_eq!((stats.calls, stats.retries, stats.gave_up), (1, 0, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn tool_errors_are_not_retried_unless_configured() {
    let inner = ScriptedService::new().with_default(Outcome::tool_error("city not found"));
    let result = complete(retry(&inner, config()).oneshot(call(READ)).await.unwrap());
    assert_eq!(result.is_error, Some(true));
    assert_eq!(inner.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn tool_errors_are_retried_when_configured() {
    let inner = ScriptedService::new();
    inner.push_for(FLAKY, Outcome::tool_error("try again"));
    inner.push_for(FLAKY, Outcome::tool_error("try again"));
    let service = retry(&inner, config());
    let response = service.clone().oneshot(call(FLAKY)).await.unwrap();
    assert_eq!(execution(response), 3);
    assert_eq!(service.handle().stats().recovered, 1);
}

#[tokio::test(start_paused = true)]
async fn exhausted_tool_errors_return_the_last_result() {
    let inner = ScriptedService::new().with_default(Outcome::tool_error("still broken"));
    let service = retry(&inner, config());
    let result = complete(service.clone().oneshot(call(FLAKY)).await.unwrap());
    assert_eq!(
        result.is_error,
        Some(true),
        "the model reads the tool's message"
    );
    assert_eq!(inner.calls(), 3);
    let stats = service.handle().stats();
    assert_eq!((stats.attempts, stats.gave_up, stats.recovered), (3, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded_and_the_last_error_is_wrapped() {
    let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let service = retry(&inner, config().with_max_attempts(4));
    let error = service.clone().oneshot(call(READ)).await.unwrap_err();
    assert_eq!(inner.calls(), 4);
    assert_eq!(error.code, codes::RETRIES_EXHAUSTED);
    assert_eq!(ErrorKind::of(&error), Some(ErrorKind::RetriesExhausted));
    let data = data(&error);
    assert_eq!(data["attempts"], 4);
    assert_eq!(data["stoppedBy"], "max_attempts");
    assert_eq!(data["tool"], READ);
    assert_eq!(data["lastError"]["code"], codes::UPSTREAM_UNAVAILABLE.0);
    assert!(
        error.message.contains("failed after 4 attempts"),
        "{}",
        error.message
    );
    assert!(
        !is_transient(&error),
        "a retry layer further out must not multiply the attempts"
    );
    let stats = service.handle().stats();
    assert_eq!((stats.attempts, stats.retries, stats.gave_up), (4, 3, 1));
}

#[tokio::test(start_paused = true)]
async fn one_attempt_or_disabled_makes_the_layer_transparent() {
    for config in [config().with_max_attempts(1), config().with_enabled(false)] {
        let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
        let service = retry(&inner, config.clone());
        let error = service.clone().oneshot(call(READ)).await.unwrap_err();
        assert_eq!(inner.calls(), 1, "{config:?}");
        assert_eq!(error, upstream_down(), "unchanged");
        assert_eq!(service.handle().stats(), RetryStats::default());
    }
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_after_the_deadline() {
    // Each attempt fails after 900 ms; the deadline is 1 s; waits are at most 50 ms.
    let inner = ScriptedService::new()
        .with_default(Outcome::error(upstream_down()).after(Duration::from_millis(900)));
    let service = retry(
        &inner,
        RetryConfig::default()
            .with_max_attempts(10)
            .with_base_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(50))
            .with_deadline(Duration::from_secs(1)),
    );
    let start = Instant::now();
    let error = service.clone().oneshot(call(READ)).await.unwrap_err();
    assert_eq!(
        inner.calls(),
        2,
        "the second attempt started before 1 s, no third"
    );
    assert_eq!(data(&error)["stoppedBy"], "deadline");
    assert_eq!(data(&error)["attempts"], 2);
    assert!(start.elapsed() <= Duration::from_millis(1851));
}

/// `inner`, recording the instant each attempt reaches it.
fn recording(
    inner: &ScriptedService,
) -> (
    impl tower::Service<ToolCall, Response = CallToolResponse, Error = ErrorData, Future = impl Send>
    + Clone
    + Send
    + 'static,
    Arc<Mutex<Vec<Instant>>>,
) {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let service = inner.clone().map_request(move |call: ToolCall| {
        seen.lock().expect("not poisoned").push(Instant::now());
        call
    });
    (service, attempts)
}

/// The upstream-unavailable error with the retry hint `after` (as the pool gives during its
/// `connect_backoff`).
fn upstream_backing_off(after: Duration) -> ErrorData {
    with_retry_after(upstream_down(), after)
}

#[tokio::test(start_paused = true)]
async fn a_retry_hint_delays_the_next_attempt_until_it() {
    let inner = ScriptedService::new();
    inner.push_for(
        READ,
        Outcome::error(upstream_backing_off(Duration::from_secs(1))),
    );
    let (recorded, attempts) = recording(&inner);
    // The default backoff waits at most 100 ms before the first retry: the hint is longer.
    let service = Retry::new(recorded, RetryConfig::default()).expect("valid config");

    let response = service.clone().oneshot(call(READ)).await.unwrap();
    assert_eq!(execution(response), 2, "the second attempt succeeded");
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    let waited = attempts[1] - attempts[0];
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert!(
        waited <= Duration::from_millis(1001),
        "the hint is the wait (the timer's 1 ms tick aside), not hint + backoff: {waited:?}"
    );
    let stats = service.handle().stats();
    assert_eq!((stats.retries, stats.recovered, stats.gave_up), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_retry_hint_past_the_deadline_or_max_delay_stops_at_once() {
    for (name, config, hint) in [
        (
            "past the deadline",
            RetryConfig::default().with_deadline(Duration::from_secs(1)),
            Duration::from_secs(2),
        ),
        (
            "longer than max_delay",
            config(), // max_delay 100 ms, deadline 60 s
            Duration::from_secs(1),
        ),
    ] {
        let inner = ScriptedService::new().with_default(Outcome::error(upstream_backing_off(hint)));
        let (recorded, attempts) = recording(&inner);
        let service = Retry::new(recorded, config).expect("valid config");
        let start = Instant::now();
        let error = service.clone().oneshot(call(READ)).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO, "{name}: no sleep at all");
        assert_eq!(attempts.lock().unwrap().len(), 1, "{name}");
        assert_eq!(inner.calls(), 1, "{name}");
        assert_eq!(error.code, codes::RETRIES_EXHAUSTED, "{name}");
        assert_eq!(data(&error)["stoppedBy"], "deadline", "{name}");
        assert_eq!(data(&error)["attempts"], 1, "{name}");
        assert_eq!(
            data(&error)["lastError"]["data"]["retryAfterMs"],
            u64::try_from(hint.as_millis()).unwrap(),
            "{name}: the hint stays readable in the last error"
        );
        let stats = service.handle().stats();
        assert_eq!((stats.retries, stats.gave_up), (0, 1), "{name}");
        assert_eq!(
            service.handle().budget_available(),
            100,
            "{name}: no budget spent"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hint_on_an_error_that_is_not_transient_is_no_reason_to_retry() {
    let refused = with_retry_after(
        ErrorData::internal_error("the tool's own bug", None),
        Duration::from_millis(10),
    );
    let inner = ScriptedService::new().with_default(Outcome::error(refused.clone()));
    let error = retry(&inner, config())
        .oneshot(call(READ))
        .await
        .unwrap_err();
    assert_eq!(inner.calls(), 1);
    assert_eq!(error, refused);
}

/// Runs 100 concurrent calls against an upstream that always fails; returns the inner calls.
async fn hundred_failing_calls(budget: BudgetConfig) -> (usize, RetryStats) {
    let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let layer = RetryLayer::new(config().with_budget(budget)).expect("valid config");
    let service = layer.layer(inner.clone());
    let resolver = resolver();
    let results =
        join_all((0..100).map(|_| service.clone().oneshot(call_with(&resolver, READ)))).await;
    assert!(results.iter().all(Result::is_err));
    (inner.calls(), layer.handle().stats())
}

#[tokio::test(start_paused = true)]
async fn a_full_outage_under_load_retries_only_within_the_budget() {
    // Without a binding budget, 100 calls × 3 attempts reach the dead upstream.
    let (unbounded, _) =
        hundred_failing_calls(BudgetConfig::default().with_min_per_sec(1000)).await;
    assert_eq!(unbounded, 300);

    // The budget: 1 retry/s over 10 s (10) plus one retry per five calls (20).
    let (calls, stats) = hundred_failing_calls(
        BudgetConfig::default()
            .with_window(Duration::from_secs(10))
            .with_min_per_sec(1)
            .with_ratio(0.2),
    )
    .await;
    assert_eq!(stats.retries, 30);
    assert_eq!(
        calls, 130,
        "100 first attempts and the 30 retries the budget allows"
    );
    assert_eq!(stats.attempts, 130);
    assert_eq!(stats.gave_up, 100);
    assert!(stats.budget_exhausted >= 70, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn the_budget_refills_as_the_window_moves_on() {
    let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let budget = BudgetConfig::default()
        .with_window(Duration::from_secs(1))
        .with_min_per_sec(2)
        .with_ratio(0.0);
    let service = retry(&inner, config().with_max_attempts(2).with_budget(budget));
    let resolver = resolver();
    for _ in 0..4 {
        let error = service
            .clone()
            .oneshot(call_with(&resolver, READ))
            .await
            .unwrap_err();
        assert_eq!(error.code, codes::RETRIES_EXHAUSTED);
    }
    let stats = service.handle().stats();
    assert_eq!((stats.retries, stats.budget_exhausted), (2, 2));
    let error = service
        .clone()
        .oneshot(call_with(&resolver, READ))
        .await
        .unwrap_err();
    assert_eq!(data(&error)["stoppedBy"], "budget");
    assert_eq!(data(&error)["attempts"], 1);

    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(service.handle().budget_available(), 2);
    service
        .clone()
        .oneshot(call_with(&resolver, READ))
        .await
        .unwrap_err();
    assert_eq!(service.handle().stats().retries, 3);
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_stay_within_the_jitter_bounds() {
    fastrand::seed(7);
    let backoff = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_millis(500));
    let config = RetryConfig::default()
        .with_max_attempts(5)
        .with_base_delay(Duration::from_millis(100))
        .with_multiplier(2.0)
        .with_max_delay(Duration::from_millis(500))
        .with_budget(BudgetConfig::default().with_min_per_sec(1000));
    let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let service = retry(&inner, config);
    let resolver = resolver();

    // The paused clock moves only when every task waits, straight to the next timer: the
    // time between two attempts is exactly the wait (rounded up to the timer's 1 ms tick).
    let mut waits: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    for round in 0..50 {
        let task = tokio::spawn(service.clone().oneshot(call_with(&resolver, READ)));
        let mut last = Instant::now();
        for retry in 1..=4 {
            inner.wait_for_calls(round * 5 + retry + 1).await;
            let now = Instant::now();
            waits[retry - 1].push(now - last);
            last = now;
        }
        task.await.unwrap().unwrap_err();
    }
    for (i, waits) in waits.iter().enumerate() {
        let ceiling = backoff.ceiling(i as u32 + 1);
        let tick = Duration::from_millis(1);
        assert!(
            waits.iter().all(|w| *w <= ceiling + tick),
            "retry {}: a wait above {ceiling:?}: {waits:?}",
            i + 1
        );
        // Full jitter: spread over the whole interval, not bunched at the ceiling.
        let below_half = waits.iter().filter(|w| **w < ceiling / 2).count();
        assert!(
            (10..=40).contains(&below_half),
            "retry {}: {below_half}/50 waits below half the ceiling: {waits:?}",
            i + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_during_backoff_stops_at_once() {
    let token = CancellationToken::new();
    let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let hour = Duration::from_secs(3600);
    let service = retry(
        &inner,
        config()
            .with_base_delay(hour)
            .with_max_delay(hour)
            .with_deadline(hour * 10),
    );
    let call = cancellable_call(&resolver(), READ, token.clone()).await;
    let start = Instant::now();
    let mut future = pin!(service.clone().oneshot(call));
    assert!(poll!(future.as_mut()).is_pending());
    assert_eq!(inner.calls(), 1);
    assert_eq!(service.handle().stats().backing_off, 1, "waiting to retry");

    token.cancel();
    let error = future.await.unwrap_err();
    assert_eq!(error.code, codes::CANCELLED);
    assert_eq!(data(&error)["layer"], "retry");
    assert_eq!(data(&error)["tool"], READ);
    assert!(
        start.elapsed() < Duration::from_millis(1),
        "not after the backoff"
    );
    assert_eq!(inner.calls(), 1, "no attempt after the cancellation");
    let stats = service.handle().stats();
    assert_eq!(
        (stats.cancelled, stats.backing_off, stats.retries),
        (1, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_cancelled_during_an_attempt_is_not_retried() {
    let token = CancellationToken::new();
    let inner = ScriptedService::new()
        .with_default(Outcome::error(upstream_down()).after(Duration::from_secs(1)));
    let service = retry(&inner, config());
    let call = cancellable_call(&resolver(), READ, token.clone()).await;
    let mut future = pin!(service.clone().oneshot(call));
    assert!(poll!(future.as_mut()).is_pending());
    token.cancel();
    // The attempt is not interrupted by this layer (the inner service has the token)...
    let error = future.await.unwrap_err();
    // ...but its failure is not retried.
    assert_eq!(error.code, codes::CANCELLED);
    assert_eq!(inner.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_backoff_ends_the_loop() {
    let inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let service = retry(&inner, config());
    let mut future = Box::pin(service.clone().oneshot(call(READ)));
    assert!(poll!(future.as_mut()).is_pending());
    assert_eq!(service.handle().stats().backing_off, 1);
    drop(future);
    assert_eq!(service.handle().stats().backing_off, 0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(inner.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn input_required_and_task_responses_pass_through() {
    let service = Retry::new(
        tower::service_fn(|_call: ToolCall| async {
            Ok::<_, ErrorData>(CallToolResponse::InputRequired(InputRequiredResult::new(
                None,
                Some("state".into()),
            )))
        }),
        config(),
    )
    .unwrap();
    let response = service.clone().oneshot(call(READ)).await.unwrap();
    assert!(matches!(response, CallToolResponse::InputRequired(_)));
    assert_eq!(service.handle().stats().attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_inner_service_to_be_ready() {
    let (mock, mut handle) = tower_test::mock::pair::<ToolCall, CallToolResponse>();
    let inner = mock.map_err(|error: Box<dyn std::error::Error + Send + Sync>| {
        match error.downcast::<ErrorData>() {
            Ok(error) => *error,
            Err(other) => ErrorData::internal_error(other.to_string(), None),
        }
    });
    let mut service = Retry::new(inner, config()).unwrap();

    // Back-pressure is the inner service's.
    handle.allow(0);
    {
        let mut ready = pin!(service.ready());
        assert!(poll!(ready.as_mut()).is_pending());
    }
    handle.allow(1);
    let mut future = pin!(service.clone().oneshot(call(READ)));
    assert!(poll!(future.as_mut()).is_pending());
    let (request, respond) = handle.next_request().await.expect("first attempt");
    assert_eq!(request.name(), READ);
    respond.send_error(upstream_down());

    // The retry waits until the inner service has room again.
    assert!(poll!(future.as_mut()).is_pending());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(poll!(future.as_mut()).is_pending());
    assert!(
        futures_util::FutureExt::now_or_never(handle.next_request()).is_none(),
        "no second attempt while the service is not ready"
    );
    handle.allow(1);
    assert!(poll!(future.as_mut()).is_pending());
    let (_, respond) = handle.next_request().await.expect("the retry");
    respond.send_response(rmcp::model::CallToolResult::success(vec![]).into());
    assert!(matches!(future.await, Ok(CallToolResponse::Complete(_))));
}

#[tokio::test(start_paused = true)]
async fn services_of_one_layer_share_the_budget_and_figures() {
    let layer = RetryLayer::new(
        config()
            .with_max_attempts(2)
            .with_budget(BudgetConfig::default().with_min_per_sec(1).with_ratio(0.0)),
    )
    .unwrap();
    let a_inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let b_inner = ScriptedService::new().with_default(Outcome::error(upstream_down()));
    let (a, b) = (layer.layer(a_inner.clone()), layer.layer(b_inner.clone()));
    let resolver = resolver();
    for _ in 0..10 {
        a.clone()
            .oneshot(call_with(&resolver, READ))
            .await
            .unwrap_err();
        b.clone()
            .oneshot(call_with(&resolver, READ))
            .await
            .unwrap_err();
    }
    assert_eq!(
        a_inner.calls() + b_inner.calls(),
        20 + 10,
        "one budget of 10 retries"
    );
    assert_eq!(layer.handle().stats().retries, 10);
}

#[tokio::test(start_paused = true)]
async fn the_handle_reports_its_figures() {
    let inner = ScriptedService::new();
    inner.push_for(READ, Outcome::error(upstream_down()));
    let layer = RetryLayer::new(config()).unwrap();
    let service = layer.layer(inner.clone());
    service.oneshot(call(READ)).await.unwrap();

    let handle = layer.handle();
    assert_eq!(handle.layer(), "retry");
    let mut figures = Vec::new();
    handle.figures(&mut figures);
    let value = |name: &str| {
        figures
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .value
    };
    assert_eq!(value("mcp_retry_calls_total"), 1.0);
    assert_eq!(value("mcp_retry_attempts_total"), 2.0);
    assert_eq!(value("mcp_retry_retries_total"), 1.0);
    assert_eq!(value("mcp_retry_recovered_total"), 1.0);
    assert_eq!(value("mcp_retry_budget_exhausted_total"), 0.0);
    assert_eq!(value("mcp_retry_gave_up_total"), 0.0);
    assert_eq!(value("mcp_retry_cancelled_total"), 0.0);
    assert_eq!(value("mcp_retry_backing_off"), 0.0);
    // The floor (10/s over 10 s = 100 retries), plus 1 call × 0.2, minus the retry made.
    assert_eq!(value("mcp_retry_budget_available"), 99.0);
    assert!(figures.iter().all(|f| f.name.starts_with("mcp_retry_")));

    let snapshot = handle.snapshot();
    assert_eq!(snapshot["retries"], 1);
    assert_eq!(snapshot["budget"]["available"], 99);
    assert_eq!(snapshot["config"]["max_attempts"], 3);
    assert_eq!(handle.healthy(), None);
}

#[test]
fn an_invalid_configuration_is_refused_at_build_time() {
    let error = RetryLayer::new(RetryConfig::default().with_max_attempts(0)).unwrap_err();
    assert_eq!(error.field, "max_attempts");
    let error = Retry::new(
        ScriptedService::new(),
        RetryConfig::default().with_budget(BudgetConfig::default().with_ratio(5000.0)),
    )
    .unwrap_err();
    assert_eq!(error.field, "budget.ratio");
}

#[test]
fn clones_share_state_and_the_call_is_not_copied() {
    let service = retry(&ScriptedService::new(), config());
    let clone = service.clone();
    assert_eq!(service.handle().config(), clone.handle().config());
    // A retry re-sends a clone of the same call: one reference count, shared params.
    let call = call(READ);
    let again = call.clone();
    assert!(std::ptr::eq(call.params(), again.params()));
}

#[test]
fn services_and_futures_are_send_and_sync_where_the_stack_needs_it() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Retry<ScriptedService>>();
    send_sync::<RetryLayer>();
    send::<mcp_tower_retry::retry::ResponseFuture<ScriptedService>>();
}
