//! Waiting: first come first served, the queue timeout, cancellation and dropped futures.

mod support;

use std::time::Duration;

use futures_util::{FutureExt, future::join_all};
use mcp_tower_concurrency::Scope;
use mcp_tower_core::{
    error::{ErrorKind, codes},
    testing::ScriptedService,
};
use support::*;
use tokio::time::Instant;
use tower::ServiceExt;

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 100), &inner);
        let first = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(1).await;
        // Queue 1..=20, in this order.
        let mut waiting = Vec::new();
        for n in 1..=20 {
            let mut fut = Box::pin(service.clone().oneshot(call(&r, "free", n)));
            assert!((&mut fut).now_or_never().is_none());
            waiting.push(tokio::spawn(fut));
        }
        assert_eq!(handle.queued(), 20);
        inner.release_all();
        first.await.unwrap().unwrap();
        let mut order = Vec::new();
        for w in waiting {
            order.push(echoed(&w.await.unwrap().unwrap()));
        }
        // The k-th queued call was the (k+1)-th execution.
        for (k, (n, execution)) in order.into_iter().enumerate() {
            assert_eq!(n, k as u64 + 1);
            assert_eq!(execution, k as u64 + 2, "call {n} overtaken");
        }
        assert_eq!(inner.max_in_flight(), 1);
    })
    .await;
}

/// A newcomer arriving while calls are queued queues behind them, even at the moment a
/// permit is free.
#[tokio::test(start_paused = true)]
async fn a_newcomer_never_overtakes_the_queue() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 100), &inner);
        let mut first = Box::pin(service.clone().oneshot(call(&r, "free", 0)));
        assert!((&mut first).now_or_never().is_none());
        let mut queued = Box::pin(service.clone().oneshot(call(&r, "free", 1)));
        assert!((&mut queued).now_or_never().is_none());
        // The first call completes: its permit goes to the queued call, not yet polled.
        inner.release(1);
        first.await.unwrap();
        assert_eq!(handle.in_flight(), 1, "the permit is the queued call's");
        let mut newcomer = Box::pin(service.clone().oneshot(call(&r, "free", 2)));
        assert!((&mut newcomer).now_or_never().is_none());
        assert_eq!(inner.calls(), 1, "the newcomer did not run");
        inner.release_all();
        assert_eq!(echoed(&queued.await.unwrap()), (1, 2));
        assert_eq!(echoed(&newcomer.await.unwrap()), (2, 3));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_times_out_after_queue_timeout_on_the_paused_clock() {
    within(async {
        let r = resolver(&[("slow", 1)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(
            config(8, 10)
                .with_queue_timeout(Duration::from_secs(5))
                .with_retry_after(Duration::from_millis(500)),
            &inner,
        );
        let running = tokio::spawn(service.clone().oneshot(call(&r, "slow", 0)));
        inner.wait_for_calls(1).await;
        let start = Instant::now();
        let mut queued = Box::pin(service.clone().oneshot(call(&r, "slow", 1)));
        assert!(
            tokio::time::timeout(Duration::from_millis(4999), &mut queued)
                .await
                .is_err(),
            "still waiting just before the timeout"
        );
        assert_eq!(handle.queued(), 1);
        let err = queued.await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(err.code, codes::QUEUE_TIMEOUT);
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::QueueTimeout));
        let d = data(&err);
        assert_eq!(d["tool"], "slow");
        assert_eq!(d["waitedMs"], 5000);
        assert_eq!(d["retryAfterMs"], 500);
        let stats = handle.stats(Scope::Tool("slow")).unwrap();
        assert_eq!((stats.timed_out, stats.queued, stats.in_flight), (1, 0, 1));
        assert_eq!(handle.rejected(), 1);
        assert_eq!(inner.calls(), 1, "the timed-out call never ran");

        inner.release_all();
        running.await.unwrap().unwrap();
        assert_eq!(handle.in_flight(), 0);
    })
    .await;
}

/// The queue timeout counts from the call's arrival in the stack (`ToolCall::received_at`,
/// the one clock read of a call), not from the moment it queued.
#[tokio::test(start_paused = true)]
async fn the_queue_timeout_counts_from_the_calls_arrival() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, _handle) = limited(
            config(1, 10).with_queue_timeout(Duration::from_secs(5)),
            &inner,
        );
        let blocker = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(1).await;
        let late = call(&r, "free", 1);
        tokio::time::advance(Duration::from_secs(3)).await;
        let queued_at = Instant::now();
        let err = service.clone().oneshot(late).await.unwrap_err();
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::QueueTimeout));
        assert_eq!(queued_at.elapsed(), Duration::from_secs(2));
        assert_eq!(data(&err)["waitedMs"], 5000);
        inner.release_all();
        blocker.await.unwrap().unwrap();
    })
    .await;
}

/// The timeout covers the whole wait: time spent waiting for the tool's permit counts
/// against the wait for the global one.
#[tokio::test(start_paused = true)]
async fn the_queue_timeout_covers_both_queues() {
    within(async {
        let r = resolver(&[("t", 1)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(
            config(1, 10).with_queue_timeout(Duration::from_secs(5)),
            &inner,
        );
        // `free` holds the only global permit; `t#0` holds `t`'s permit while waiting for it.
        let blocker = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(1).await;
        let start = Instant::now();
        let t0 = tokio::spawn(service.clone().oneshot(call(&r, "t", 1)));
        until("t#0 waits globally", || handle.global_stats().queued == 1).await;
        // `t#1` (from 1 s) waits for `t`'s permit; at 5 s `t#0` times out and hands it over;
        // `t#1` then waits globally and times out at 6 s (5 s after its own start), not 10.
        tokio::time::advance(Duration::from_secs(1)).await;
        let t1 = tokio::spawn(service.clone().oneshot(call(&r, "t", 2)));
        let e0 = t0.await.unwrap().unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(
            data(&e0).get("tool").is_none(),
            "timed out on the global queue"
        );
        let e1 = t1.await.unwrap().unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        assert_eq!(ErrorKind::of(&e1), Some(ErrorKind::QueueTimeout));
        assert_eq!(handle.global_stats().timed_out, 2);
        inner.release_all();
        blocker.await.unwrap().unwrap();
        assert_eq!(handle.in_flight(), 0);
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 0);
    })
    .await;
}

/// rmcp cancels the request's token on `notifications/cancelled` without dropping the
/// future: the queued call must notice, leave the queue and free its place.
#[tokio::test(start_paused = true)]
async fn a_call_cancelled_while_queued_leaves_and_frees_its_place() {
    within(async {
        let server = Server::start();
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 1), &inner);
        let running = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(1).await;

        let (queued_call, token) = server.call_with_token(&r, "free", 1);
        let queued = tokio::spawn(service.clone().oneshot(queued_call));
        until("queued", || handle.queued() == 1).await;
        let full = service
            .clone()
            .oneshot(call(&r, "free", 2))
            .await
            .unwrap_err();
        assert_eq!(
            ErrorKind::of(&full),
            Some(ErrorKind::Busy),
            "the queue is full"
        );

        token.cancel();
        let err = queued.await.unwrap().unwrap_err();
        assert_eq!(err.code, codes::CANCELLED);
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::Cancelled));
        assert_eq!(data(&err)["tool"], "free");
        assert_eq!(handle.queued(), 0);
        assert_eq!(handle.global_stats().cancelled, 1);

        // Its place is free again, and it never ran.
        let next = tokio::spawn(service.clone().oneshot(call(&r, "free", 3)));
        until("next queued", || handle.queued() == 1).await;
        inner.release_all();
        running.await.unwrap().unwrap();
        assert_eq!(echoed(&next.await.unwrap().unwrap()).0, 3);
        assert_eq!(inner.calls(), 2);
        assert_eq!(handle.in_flight(), 0);
    })
    .await;
}

/// A call cancelled while it holds its tool's permit and waits for the global one returns
/// the tool's permit too.
#[tokio::test(start_paused = true)]
async fn cancelling_a_globally_queued_call_returns_its_tool_permit() {
    within(async {
        let server = Server::start();
        let r = resolver(&[("t", 1)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 10), &inner);
        let blocker = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(1).await;
        let (c, token) = server.call_with_token(&r, "t", 1);
        let cancelled = tokio::spawn(service.clone().oneshot(c));
        until("waits globally", || handle.global_stats().queued == 1).await;
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 1);
        token.cancel();
        assert_eq!(
            ErrorKind::of(&cancelled.await.unwrap().unwrap_err()),
            Some(ErrorKind::Cancelled)
        );
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 0);
        inner.release_all();
        blocker.await.unwrap().unwrap();
        service.clone().oneshot(call(&r, "t", 2)).await.unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_already_cancelled_call_never_queues() {
    within(async {
        let server = Server::start();
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 10), &inner);
        let running = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(1).await;
        let (c, token) = server.call_with_token(&r, "free", 1);
        token.cancel();
        let err = service.clone().oneshot(c).await.unwrap_err();
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::Cancelled));
        let stats = handle.global_stats();
        assert_eq!(
            (stats.waited, stats.queued_peak, stats.cancelled),
            (0, 0, 1)
        );
        inner.release_all();
        running.await.unwrap().unwrap();
    })
    .await;
}

/// A call that holds its permits runs to the end under cancellation: the token is the
/// tool's business then, and this layer does not watch it.
#[tokio::test(start_paused = true)]
async fn a_running_call_is_not_cancelled_by_this_layer() {
    within(async {
        let server = Server::start();
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 10), &inner);
        let (c, token) = server.call_with_token(&r, "free", 0);
        let running = tokio::spawn(service.clone().oneshot(c));
        inner.wait_for_calls(1).await;
        token.cancel();
        inner.release_all();
        running.await.unwrap().unwrap();
        assert_eq!(handle.global_stats().cancelled, 0);
    })
    .await;
}

/// Dropping a queued call's future (tower's way to cancel) leaves the queue at once.
#[tokio::test(start_paused = true)]
async fn a_dropped_queued_future_leaves_the_queue() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 1), &inner);
        let running = tokio::spawn(service.clone().oneshot(call(&r, "free", 0)));
        inner.wait_for_calls(1).await;
        let queued = tokio::spawn(service.clone().oneshot(call(&r, "free", 1)));
        until("queued", || handle.queued() == 1).await;
        queued.abort();
        assert!(queued.await.unwrap_err().is_cancelled());
        assert_eq!(handle.queued(), 0);
        let next = tokio::spawn(service.clone().oneshot(call(&r, "free", 2)));
        until("next queued", || handle.queued() == 1).await;
        inner.release_all();
        running.await.unwrap().unwrap();
        assert_eq!(echoed(&next.await.unwrap().unwrap()).0, 2);
        assert_eq!(inner.calls(), 2);
        assert_eq!(inner.dropped(), 0);
    })
    .await;
}

/// A queued call granted its permit but dropped before it could use it passes the permit
/// on to the next waiter: nothing is lost.
#[tokio::test(start_paused = true)]
async fn a_permit_granted_to_a_dropped_call_goes_to_the_next() {
    within(async {
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 10), &inner);
        let mut first = Box::pin(service.clone().oneshot(call(&r, "free", 0)));
        assert!((&mut first).now_or_never().is_none());
        let mut granted = Box::pin(service.clone().oneshot(call(&r, "free", 1)));
        assert!((&mut granted).now_or_never().is_none());
        let next = tokio::spawn(service.clone().oneshot(call(&r, "free", 2)));
        until("two queued", || handle.queued() == 2).await;
        inner.release(1);
        first.await.unwrap();
        assert_eq!(handle.queued(), 1, "the permit went to `granted`");
        drop(granted);
        inner.release_all();
        assert_eq!(echoed(&next.await.unwrap().unwrap()).0, 2);
        assert_eq!(handle.in_flight(), 0);
        assert_eq!(inner.calls(), 2);
    })
    .await;
}

/// Dropping a running call's future returns its permits.
#[tokio::test(start_paused = true)]
async fn a_dropped_running_future_returns_its_permits() {
    within(async {
        let r = resolver(&[("t", 1)]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(1, 10), &inner);
        let running = tokio::spawn(service.clone().oneshot(call(&r, "t", 0)));
        inner.wait_for_calls(1).await;
        running.abort();
        let _ = running.await;
        assert_eq!(inner.dropped(), 1);
        assert_eq!(handle.in_flight(), 0);
        assert_eq!(handle.stats(Scope::Tool("t")).unwrap().in_flight, 0);
        inner.release_all();
        service.clone().oneshot(call(&r, "t", 1)).await.unwrap();
    })
    .await;
}

/// Many queued calls all cancelled at once: the queue empties, and what still waits is
/// served.
#[tokio::test(start_paused = true)]
async fn mass_cancellation_empties_the_queue() {
    within(async {
        let server = Server::start();
        let r = resolver(&[]);
        let inner = ScriptedService::held();
        let (service, handle) = limited(config(2, 1000), &inner);
        let running: Vec<_> = (0..2)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "free", n))))
            .collect();
        inner.wait_for_calls(2).await;
        let mut tokens = Vec::new();
        let mut cancelled = Vec::new();
        for n in 0..500 {
            let (c, token) = server.call_with_token(&r, "free", 100 + n);
            tokens.push(token);
            cancelled.push(tokio::spawn(service.clone().oneshot(c)));
        }
        let survivor = tokio::spawn(service.clone().oneshot(call(&r, "free", 9)));
        until("all queued", || handle.queued() == 501).await;
        for t in &tokens {
            t.cancel();
        }
        for c in join_all(cancelled).await {
            assert_eq!(
                ErrorKind::of(&c.unwrap().unwrap_err()),
                Some(ErrorKind::Cancelled)
            );
        }
        assert_eq!(handle.queued(), 1);
        inner.release_all();
        for t in join_all(running).await {
            t.unwrap().unwrap();
        }
        assert_eq!(echoed(&survivor.await.unwrap().unwrap()).0, 9);
        assert_eq!(inner.calls(), 3);
        assert_eq!(handle.global_stats().cancelled, 500);
    })
    .await;
}
