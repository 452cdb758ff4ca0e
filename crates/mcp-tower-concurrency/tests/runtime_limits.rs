//! Changing limits while calls are in flight: no permit lost or leaked.

mod support;

use futures_util::future::join_all;
use mcp_tower_concurrency::{ConcurrencyLayer, MAX_LIMIT, Scope};
use mcp_tower_core::testing::ScriptedService;
use support::*;
use tower::{Layer, ServiceExt};

/// Shrink 4 → 2 with 4 running and 4 queued: the first two calls to finish retire their
/// permits, the third hands its permit to a waiter; growing 2 → 6 then admits every
/// waiter at once. Afterwards exactly 6 calls fit.
#[tokio::test(start_paused = true)]
async fn shrinking_and_growing_the_global_limit_while_calls_are_in_flight() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let layer = ConcurrencyLayer::new(config(4, 100)).unwrap();
        let (service, handle) = (layer.layer(inner.clone()), layer.handle());
        let tasks: Vec<_> = (0..8)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "free", n))))
            .collect();
        inner.wait_for_calls(4).await;
        until("4 queued", || handle.queued() == 4).await;

        handle.set_limit(Scope::Global, 2);
        assert_eq!(handle.limit(Scope::Global), Some(2));
        assert_eq!(handle.in_flight(), 4, "running calls are not interrupted");

        inner.release(1);
        until("one finished", || inner.completed() == 1).await;
        assert_eq!(handle.in_flight(), 3, "its permit was retired");
        assert_eq!(inner.calls(), 4, "and nobody was admitted");
        inner.release(1);
        until("two finished", || inner.completed() == 2).await;
        assert_eq!(handle.in_flight(), 2);
        assert_eq!(inner.calls(), 4);
        inner.release(1);
        inner.wait_for_calls(5).await;
        assert_eq!(inner.completed(), 3);
        assert_eq!(handle.in_flight(), 2, "under the new limit: one admitted");
        assert_eq!(handle.queued(), 3);

        handle.set_limit(Scope::Global, 6);
        inner.wait_for_calls(8).await;
        assert_eq!(handle.queued(), 0, "growing admitted every waiter at once");
        assert_eq!(handle.in_flight(), 5);
        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(handle.in_flight(), 0);

        // No permit lost or leaked: exactly 6 fit now (a second held service behind the same
        // layer, since the first one lets everything through after `release_all`).
        let probe = ScriptedService::held();
        let probed = layer.layer(probe.clone());
        let tasks: Vec<_> = (0..8)
            .map(|n| tokio::spawn(probed.clone().oneshot(call(&r, "free", 100 + n))))
            .collect();
        probe.wait_for_calls(6).await;
        until("the rest queued", || handle.queued() == 2).await;
        assert_eq!(probe.calls(), 6);
        assert_eq!(handle.in_flight(), 6);
        probe.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(handle.in_flight(), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shrinking_a_tool_limit_while_its_calls_are_in_flight() {
    within(async {
        let r = resolver(&[("t", 3)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(10, 100), &inner);
        let tasks: Vec<_> = (0..5)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "t", n))))
            .collect();
        inner.wait_for_calls(3).await;
        until("2 queued", || handle.queued() == 2).await;
        handle.set_limit(Scope::Tool("t"), 1);
        inner.release(2);
        until("two finished", || inner.completed() == 2).await;
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 1);
        assert_eq!(inner.calls(), 3, "both permits retired");
        inner.release(1);
        inner.wait_for_calls(4).await;
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 1);
        assert_eq!(handle.queued(), 1);
        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 0);
        assert_eq!(handle.in_flight(), 0);
    })
    .await;
}

/// A limit set through the handle before the tool's first call replaces its policy's.
#[tokio::test(start_paused = true)]
async fn a_tool_limit_set_before_the_first_call_applies() {
    within(async {
        let r = resolver(&[("t", 5)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(10, 100), &inner);
        handle.set_limit(Scope::Tool("t"), 1);
        handle.set_limit(Scope::Tool("free"), 2);
        let tasks: Vec<_> = (0..3)
            .flat_map(|n| [call(&r, "t", n), call(&r, "free", n)])
            .map(|c| tokio::spawn(service.clone().oneshot(c)))
            .collect();
        inner.wait_for_calls(3).await;
        until("the rest queued", || handle.queued() == 3).await;
        assert_eq!(inner.calls_for_tool("t"), 1);
        assert_eq!(inner.calls_for_tool("free"), 2);
        assert_eq!(handle.limit(Scope::Tool("t")), Some(1));
        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
    })
    .await;
}

/// Clearing a tool's limit admits its waiters at once (global limit permitting).
#[tokio::test(start_paused = true)]
async fn clearing_a_tool_limit_admits_its_waiters() {
    within(async {
        let r = resolver(&[("t", 1)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(3, 100), &inner);
        let tasks: Vec<_> = (0..5)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "t", n))))
            .collect();
        inner.wait_for_calls(1).await;
        until("4 queued", || handle.queued() == 4).await;
        handle.clear_tool_limit("t");
        assert_eq!(handle.limit(Scope::Tool("t")), None);
        inner.wait_for_calls(3).await;
        until("the rest wait globally", || {
            handle.global_stats().queued == 2
        })
        .await;
        assert_eq!(handle.in_flight(), 3);
        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(inner.max_in_flight(), 3);
    })
    .await;
}

/// A limit of 0 pauses admissions (calls queue); raising it resumes them.
#[tokio::test(start_paused = true)]
async fn a_zero_limit_pauses_and_raising_it_resumes() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::new();
        let (service, handle) = limited(config(4, 100), &inner);
        handle.set_limit(Scope::Global, 0);
        let tasks: Vec<_> = (0..3)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "free", n))))
            .collect();
        until("3 queued", || handle.queued() == 3).await;
        assert_eq!(inner.calls(), 0);
        handle.set_limit(Scope::Global, 4);
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        assert_eq!(inner.calls(), 3);
        handle.set_limit(Scope::Global, MAX_LIMIT + 1);
        assert_eq!(
            handle.limit(Scope::Global),
            None,
            "above MAX_LIMIT means none"
        );
    })
    .await;
}
