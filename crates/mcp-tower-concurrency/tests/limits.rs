//! The limits themselves: global, per tool, unknown tools, floods of calls.

mod support;

use std::{collections::HashMap, future::Future, pin::Pin, time::Duration};

use futures_util::{FutureExt, future::join_all};
use mcp_tower_concurrency::Scope;
use mcp_tower_core::{
    error::{ErrorKind, codes},
    testing::{Outcome, ScriptedService},
};
use rmcp::{ErrorData, model::CallToolResponse};
use support::*;
use tower::ServiceExt;

type CallFuture = Pin<Box<dyn Future<Output = Result<CallToolResponse, ErrorData>> + Send>>;

/// 10,000 calls at once on two worker threads, global limit 8: the inner service never
/// sees more than 8, every call ends as a success or one of our two rejections, none
/// hangs, and the queue never holds more than `max_queued`.
#[test]
fn ten_thousand_concurrent_calls_on_two_threads_never_exceed_the_limit() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = resolver(&[]);
        // Each call takes a little while, so calls really overlap and the queue fills.
        let inner = ScriptedService::new().with_default(Outcome::delayed(Duration::from_millis(1)));
        let (service, handle) = limited(config(8, 256), &inner);
        let tasks: Vec<_> = (0..10_000)
            .map(|n| {
                let service = service.clone();
                let call = call(&r, "free", n);
                tokio::spawn(async move { service.oneshot(call).await })
            })
            .collect();
        let results = tokio::time::timeout(Duration::from_secs(120), join_all(tasks))
            .await
            .expect("no call hangs");

        let mut by_kind: HashMap<Option<ErrorKind>, usize> = HashMap::new();
        for result in &results {
            let result = result.as_ref().expect("no task panicked");
            *by_kind.entry(kind(result)).or_default() += 1;
            if let Err(e) = result {
                assert!(
                    matches!(
                        ErrorKind::of(e),
                        Some(ErrorKind::Busy | ErrorKind::QueueTimeout)
                    ),
                    "unexpected error: {e:?}"
                );
            }
        }
        let ok = by_kind.get(&None).copied().unwrap_or(0);
        assert_eq!(by_kind.values().sum::<usize>(), 10_000);
        assert!(
            inner.max_in_flight() <= 8,
            "inner saw {}",
            inner.max_in_flight()
        );
        assert_eq!(
            inner.completed(),
            ok,
            "every admitted call ran to completion"
        );
        assert!(ok >= 8, "calls got through: {by_kind:?}");
        let stats = handle.global_stats();
        assert!(stats.peak <= 8);
        assert!(stats.queued_peak <= 256, "memory stays bounded: {stats:?}");
        assert_eq!(handle.rejected() as usize, 10_000 - ok);
        assert_eq!(handle.in_flight(), 0, "every permit came back");
        assert_eq!(handle.queued(), 0);
    });
}

/// 10,000 calls on two threads through a queue deep enough for all of them: every call
/// waits its turn and completes, in at most 8 at a time, and every permit comes back.
#[test]
fn ten_thousand_calls_through_a_deep_queue_all_complete() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = resolver(&[("t", 3)]);
        let inner = ScriptedService::new();
        let (service, handle) = limited(
            config(8, 10_000).with_queue_timeout(Duration::from_secs(120)),
            &inner,
        );
        let tasks: Vec<_> = (0..10_000)
            .map(|n| {
                let service = service.clone();
                // A third of the calls also need one of `t`'s 3 permits.
                let call = call(&r, if n % 3 == 0 { "t" } else { "free" }, n);
                tokio::spawn(async move { service.oneshot(call).await })
            })
            .collect();
        let results = tokio::time::timeout(Duration::from_secs(120), join_all(tasks))
            .await
            .expect("no call hangs");
        for result in results {
            result
                .expect("no task panicked")
                .expect("every call completes");
        }
        assert_eq!(inner.calls(), 10_000);
        assert!(
            inner.max_in_flight() <= 8,
            "inner saw {}",
            inner.max_in_flight()
        );
        assert!(handle.stats(Scope::Tool("t")).unwrap().peak <= 3);
        assert_eq!(handle.rejected(), 0);
        assert_eq!(handle.in_flight(), 0, "every permit came back");
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 0);
        assert_eq!(handle.queued(), 0);
    });
}

/// The same flood, frozen at its peak: with the inner service holding its calls, exactly
/// `limit` run, exactly `max_queued` wait, and every other call is turned away at once.
#[tokio::test(start_paused = true)]
async fn a_flood_beyond_the_queue_is_shed_at_once_and_the_rest_complete() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(8, 100), &inner);
        let mut pending: Vec<CallFuture> = Vec::new();
        let mut busy = 0;
        for n in 0..10_000 {
            let mut fut: CallFuture = Box::pin(service.clone().oneshot(call(&r, "free", n)));
            match (&mut fut).now_or_never() {
                None => pending.push(fut),
                Some(Err(e)) => {
                    assert_eq!(ErrorKind::of(&e), Some(ErrorKind::Busy), "{e:?}");
                    assert_eq!(e.code, codes::BUSY);
                    busy += 1;
                }
                Some(Ok(r)) => panic!("nothing can complete while held: {r:?}"),
            }
        }
        assert_eq!(pending.len(), 108);
        assert_eq!(busy, 10_000 - 108);
        assert_eq!(inner.calls(), 8);
        assert_eq!(handle.in_flight(), 8);
        assert_eq!(handle.queued(), 100);
        assert_eq!(handle.global_stats().busy, 10_000 - 108);

        inner.release_all();
        let results = join_all(pending).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(inner.calls(), 108);
        assert_eq!(inner.max_in_flight(), 8);
        assert_eq!(handle.in_flight(), 0);
        assert_eq!(handle.queued(), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn per_tool_limits_are_independent_of_each_other() {
    within(async {
        let r = resolver(&[("a", 2), ("b", 3)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(10, 100), &inner);
        let tasks: Vec<_> = (0..5)
            .flat_map(|n| [call(&r, "a", n), call(&r, "b", n)])
            .map(|c| tokio::spawn(service.clone().oneshot(c)))
            .collect();
        inner.wait_for_calls(5).await;
        until("the rest queued", || handle.queued() == 5).await;
        assert_eq!(inner.calls_for_tool("a"), 2);
        assert_eq!(inner.calls_for_tool("b"), 3);
        let a = handle.stats(Scope::Tool("a")).unwrap();
        let b = handle.stats(Scope::Tool("b")).unwrap();
        assert_eq!((a.limit, a.in_flight, a.queued), (Some(2), 2, 3));
        assert_eq!((b.limit, b.in_flight, b.queued), (Some(3), 3, 2));
        assert_eq!(handle.in_flight(), 5, "5 global permits in use");
        assert_eq!(
            handle.global_stats().queued,
            0,
            "nobody waits for the global limit"
        );

        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(handle.stats(Scope::Tool("a")).unwrap().peak, 2);
        assert_eq!(handle.stats(Scope::Tool("b")).unwrap().peak, 3);
        assert_eq!(handle.in_flight(), 0);
    })
    .await;
}

/// A tool saturated by its own limit holds no global permit for its queued calls: other
/// tools keep running.
#[tokio::test(start_paused = true)]
async fn a_saturated_tool_does_not_starve_the_others() {
    within(async {
        let r = resolver(&[("slow", 1)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(2, 100), &inner);
        let slow: Vec<_> = (0..5)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "slow", n))))
            .collect();
        inner.wait_for_calls(1).await;
        until("slow calls queued", || handle.queued() == 4).await;
        assert_eq!(
            handle.in_flight(),
            1,
            "queued slow calls hold no global permit"
        );

        let fast = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(2).await;
        assert_eq!(
            inner.calls_for_tool("free"),
            1,
            "the other tool runs at once"
        );
        assert_eq!(inner.calls_for_tool("slow"), 1);

        inner.release_all();
        fast.await.unwrap().unwrap();
        for t in join_all(slow).await {
            t.unwrap().unwrap();
        }
        assert_eq!(handle.stats(Scope::Tool("slow")).unwrap().peak, 1);
    })
    .await;
}

/// A call needs both permits: a tool under its own limit still waits for the global one.
#[tokio::test(start_paused = true)]
async fn a_call_needs_the_global_permit_too() {
    within(async {
        let r = resolver(&[("a", 5)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(2, 100), &inner);
        let tasks: Vec<_> = (0..4)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "a", n))))
            .collect();
        inner.wait_for_calls(2).await;
        until("two wait for the global limit", || {
            handle.global_stats().queued == 2
        })
        .await;
        let a = handle.stats(Scope::Tool("a")).unwrap();
        assert_eq!(
            a.in_flight, 4,
            "they hold the tool's permits while waiting globally"
        );
        assert_eq!(a.queued, 0);
        assert_eq!(inner.calls(), 2);
        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(inner.max_in_flight(), 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn unknown_tools_share_only_the_global_limit_and_leave_no_state() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(3, 100), &inner);
        let names = ["made_up_1", "made_up_2", "made_up_3", "made_up_4"];
        let tasks: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(n, name)| tokio::spawn(service.clone().oneshot(call(&r, name, n as u64))))
            .collect();
        inner.wait_for_calls(3).await;
        until("the fourth queued", || handle.queued() == 1).await;
        assert_eq!(handle.global_stats().queued, 1);
        assert!(
            handle.tool_stats().is_empty(),
            "no per-tool state for unknown names"
        );
        assert_eq!(handle.stats(Scope::Tool("made_up_1")), None);
        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(inner.max_in_flight(), 3);
        assert!(handle.tool_stats().is_empty());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn known_tools_without_a_limit_are_tracked_but_not_limited() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(4, 100), &inner);
        let tasks: Vec<_> = (0..4)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "free", n))))
            .collect();
        inner.wait_for_calls(4).await;
        let free = handle.stats(Scope::Tool("free")).unwrap();
        assert_eq!((free.limit, free.in_flight, free.queued), (None, 4, 0));
        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(handle.stats(Scope::Tool("free")).unwrap().peak, 4);
    })
    .await;
}

/// With `max_queued = 0`, a call that cannot run at once is turned away at once, with the
/// "limit reached" wording and a retry hint.
#[tokio::test(start_paused = true)]
async fn without_a_queue_a_busy_limit_rejects_at_once_with_a_hint() {
    within(async {
        let r = resolver(&[("search", 1)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(
            config(8, 0).with_retry_after(Duration::from_millis(250)),
            &inner,
        );
        let first = tokio::spawn(service.clone().oneshot(call(&r, "search", 0)));
        inner.wait_for_calls(1).await;
        let err = service
            .clone()
            .oneshot(call(&r, "search", 1))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::BUSY);
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::Busy));
        let d = data(&err);
        assert_eq!(d["layer"], "concurrency");
        assert_eq!(d["tool"], "search");
        assert_eq!(d["retryAfterMs"], 250);
        assert_eq!(d["inFlight"], 1);
        assert_eq!(d["transient"], false);
        assert_eq!(
            err.message,
            "tool `search` is busy: 1 call in flight; retry in 250 ms"
        );
        let stats = handle.stats(Scope::Tool("search")).unwrap();
        assert_eq!((stats.busy, stats.waited, stats.queued_peak), (1, 0, 0));
        inner.release_all();
        first.await.unwrap().unwrap();
    })
    .await;
}

/// A full global queue names no tool, and the hint grows with the backlog.
#[tokio::test(start_paused = true)]
async fn a_full_global_queue_is_busy_with_a_backlog_hint() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, _handle) = limited(
            config(2, 4)
                .with_retry_after(Duration::from_millis(100))
                .with_retry_after_max(Duration::from_secs(10)),
            &inner,
        );
        let mut held = Vec::new();
        for n in 0..6 {
            let mut fut: CallFuture = Box::pin(service.clone().oneshot(call(&r, "free", n)));
            assert!((&mut fut).now_or_never().is_none());
            held.push(fut);
        }
        let err = service
            .clone()
            .oneshot(call(&r, "free", 6))
            .await
            .unwrap_err();
        let d = data(&err);
        assert_eq!(d["kind"], "busy");
        assert!(d.get("tool").is_none(), "the global limit names no tool");
        assert_eq!(d["queued"], 4);
        // ceil((4 + 1) / 2) = 3 waves of 100 ms.
        assert_eq!(d["retryAfterMs"], 300);
        assert!(
            err.message
                .starts_with("the server is busy: 2 calls in flight and 4 queued")
        );
        inner.release_all();
        for r in join_all(held).await {
            r.unwrap();
        }
    })
    .await;
}

/// The inner service's failures (an rmcp error, an `isError` result, a panic) reach the
/// caller untouched, and the permits come back every time.
#[tokio::test]
async fn inner_failures_pass_through_and_return_the_permits() {
    let r = resolver(&[("t", 1)]);
    let inner = ScriptedService::new();
    let (service, handle) = limited(config(1, 10), &inner);

    inner.push(Outcome::error(ErrorData::invalid_params(
        "missing `city`",
        None,
    )));
    let err = service.clone().oneshot(call(&r, "t", 0)).await.unwrap_err();
    assert_eq!(err.message, "missing `city`");
    assert_eq!(ErrorKind::of(&err), None, "not ours");

    inner.push(Outcome::tool_error("no such city"));
    let CallToolResponse::Complete(result) =
        service.clone().oneshot(call(&r, "t", 1)).await.unwrap()
    else {
        panic!("a complete result");
    };
    assert_eq!(result.is_error, Some(true));

    inner.push(Outcome::panic("tool bug"));
    let panicked = std::panic::AssertUnwindSafe(service.clone().oneshot(call(&r, "t", 2)))
        .catch_unwind()
        .await;
    assert!(panicked.is_err());

    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 0);
    // Still exactly one permit each: the next call runs.
    service.clone().oneshot(call(&r, "t", 3)).await.unwrap();
}

/// Calls of one tool admitted from two policy tables (two resolvers whose ids collide)
/// still get their own tool's limiter.
#[tokio::test(start_paused = true)]
async fn tool_ids_from_different_tables_do_not_mix() {
    within(async {
        let r1 = resolver(&[("alpha", 1)]);
        let r2 = resolver(&[("beta", 1)]);
        assert_eq!(
            r1.policies().resolve("alpha").tool_id(),
            r2.policies().resolve("beta").tool_id(),
            "the test needs colliding ids"
        );
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(8, 10), &inner);
        let a = tokio::spawn(service.clone().oneshot(call(&r1, "alpha", 0)));
        let b = tokio::spawn(service.clone().oneshot(call(&r2, "beta", 0)));
        inner.wait_for_calls(2).await;
        assert_eq!(handle.stats(Scope::Tool("alpha")).unwrap().in_flight, 1);
        assert_eq!(handle.stats(Scope::Tool("beta")).unwrap().in_flight, 1);
        inner.release_all();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    })
    .await;
}
