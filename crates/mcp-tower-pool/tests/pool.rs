//! The generic pool, driven by a scripted connector on tokio's paused clock: single-flight
//! connect, parallel keys, replacement, idle reaping, health pings, limits, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::{Counts, TestConnector};
use mcp_tower_core::{
    CallResolver, CallToolResponse, Figure, LayerReport, PolicyDefaults, PolicyTable, ToolCall,
};
use mcp_tower_pool::{BuildError, Pool, PoolConfig, PoolError, Pooled};
use mcp_tower_retry::{Retry, RetryConfig};
use rmcp::{
    ErrorData,
    model::{CallToolResult, ContentBlock, Tool, ToolAnnotations},
    object,
};
use tokio::time::Instant;
use tower::ServiceExt;

fn key(k: &str) -> String {
    k.to_owned()
}

/// No pings, nothing kept warm, generous timeouts: each test turns on what it checks.
fn config() -> PoolConfig {
    PoolConfig::default()
        .with_min(0)
        .with_health_interval(Duration::ZERO)
        .with_connect_backoff(Duration::ZERO)
}

fn pool(connector: &TestConnector, config: PoolConfig) -> Pool<TestConnector> {
    Pool::builder(connector.clone())
        .with_config(config)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_first_calls_makes_exactly_one_connect() {
    let connector = TestConnector::new().with_delay(Duration::from_millis(50));
    let pool = pool(&connector, config());
    let gets: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get(&key("github")).await.unwrap() })
        })
        .collect();
    let mut held: Vec<Pooled<TestConnector>> = Vec::new();
    for get in gets {
        held.push(get.await.unwrap());
    }
    assert_eq!(connector.counts().connects_started, 1);
    assert_eq!(connector.counts().connects, 1);
    let ids: HashSet<u64> = held.iter().map(Pooled::connection_id).collect();
    assert_eq!(ids.len(), 1, "every caller shares the one connection");
    let stats = pool.stats();
    let github = stats.key("github").unwrap();
    assert_eq!(
        (github.connections, github.in_flight, github.connects),
        (1, 100, 1)
    );
    drop(held);
    assert_eq!(pool.stats().key("github").unwrap().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn different_keys_connect_in_parallel() {
    let connect = Duration::from_millis(50);
    let connector = TestConnector::new().with_delay(connect);
    let pool = pool(&connector, config());
    let start = Instant::now();
    let gets: Vec<_> = (0..10)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get(&format!("upstream-{i}")).await.map(drop) })
        })
        .collect();
    for get in gets {
        get.await.unwrap().unwrap();
    }
    assert_eq!(
        start.elapsed(),
        connect,
        "ten upstreams are ready after one connect time, not ten"
    );
    assert_eq!(connector.counts().connects, 10);
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_is_reported_to_every_waiter_then_backs_off() {
    let connector = TestConnector::new().with_delay(Duration::from_millis(20));
    connector.script_connects([false]);
    let pool = pool(
        &connector,
        config().with_connect_backoff(Duration::from_secs(1)),
    );
    let gets: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get(&key("flaky")).await.map(drop) })
        })
        .collect();
    for get in gets {
        let err = get.await.unwrap().unwrap_err();
        assert!(matches!(err, PoolError::Connect { .. }), "{err}");
        assert!(
            err.to_string().contains("flaky refused the connection"),
            "{err}"
        );
    }
    assert_eq!(connector.counts().connects_started, 1, "no connect storm");

    // Within the backoff: fail fast, no new connect.
    let err = pool.get(&key("flaky")).await.unwrap_err();
    assert!(matches!(err, PoolError::Backoff { .. }), "{err}");
    assert_eq!(connector.counts().connects_started, 1);
    let stats = pool.stats();
    let flaky = stats.key("flaky").unwrap();
    assert!(!flaky.up);
    assert_eq!(flaky.failures, 1);
    assert!(flaky.last_error.as_deref().unwrap().contains("refused"));

    // After it: a new connect, which succeeds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    pool.get(&key("flaky")).await.unwrap();
    assert_eq!(connector.counts().connects, 1);
    assert!(pool.stats().key("flaky").unwrap().up);
}

/// A read-only tool's call (the retry layer retries it), served by `pool`'s key `flaky`:
/// the pool's error as a tool call through the pool gets it, or the connection's id.
fn flaky_tool(
    pool: &Pool<TestConnector>,
) -> (
    ToolCall,
    impl tower::Service<ToolCall, Response = CallToolResponse, Error = ErrorData, Future = impl Send>
    + Clone,
) {
    let tool = Tool::new("search", "test tool", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true));
    let resolver = Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default()).with_tools([tool]),
    ));
    let call = ToolCall::with_resolver("search", object!({}), resolver);
    let pool = pool.clone();
    let service = tower::service_fn(move |_call: ToolCall| {
        let pool = pool.clone();
        async move {
            let conn = pool.get(&key("flaky")).await.map_err(ErrorData::from)?;
            let id = conn.connection_id().to_string();
            Ok(CallToolResponse::from(CallToolResult::success(vec![
                ContentBlock::text(id),
            ])))
        }
    });
    (call, service)
}

#[tokio::test(start_paused = true)]
async fn behind_the_retry_layer_a_call_waits_out_the_connect_backoff() {
    let connector = TestConnector::new().with_delay(Duration::from_millis(20));
    connector.script_connects([false, true]);
    let backoff = Duration::from_secs(1);
    let pool = pool(&connector, config().with_connect_backoff(backoff));
    let (call, service) = flaky_tool(&pool);
    // The defaults: 3 attempts, the first retry within 100 ms and the second within 200 ms
    // of the failure before it — all inside the pool's 1 s backoff, were it not for the
    // hint.
    let retry = Retry::new(service, RetryConfig::default()).unwrap();

    let start = Instant::now();
    let response = retry.clone().oneshot(call).await.unwrap();
    assert!(
        matches!(response, CallToolResponse::Complete(ref r) if r.is_error != Some(true)),
        "{response:?}"
    );
    let counts = connector.counts();
    assert_eq!(
        (
            counts.connects_started,
            counts.connect_failures,
            counts.connects
        ),
        (2, 1, 1),
        "one failed connect, then one that succeeded after the backoff"
    );
    let stats = retry.handle().stats();
    assert_eq!(
        (
            stats.attempts,
            stats.retries,
            stats.recovered,
            stats.gave_up
        ),
        (3, 2, 1, 0),
        "connect failed, backing off (with the hint), connected"
    );
    assert!(
        start.elapsed() >= backoff,
        "the last attempt waited out the backoff: {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_connect_times_out() {
    let connector = TestConnector::new().with_delay(Duration::from_secs(3600));
    let pool = pool(
        &connector,
        config().with_connect_timeout(Duration::from_secs(2)),
    );
    let start = Instant::now();
    let err = pool.get(&key("slow")).await.unwrap_err();
    assert!(matches!(err, PoolError::ConnectTimeout { .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(err.to_string().contains("timed out after 2s"), "{err}");
    assert_eq!(pool.stats().open_total, 0, "the reservation is released");
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_does_not_abort_the_connect() {
    let connector = TestConnector::new().with_delay(Duration::from_millis(100));
    let pool = pool(&connector, config());
    let impatient = tokio::time::timeout(Duration::from_millis(10), pool.get(&key("k"))).await;
    assert!(impatient.is_err());
    // The connect continues in its own task; the next caller gets its connection.
    let conn = pool.get(&key("k")).await.unwrap();
    assert_eq!(connector.counts().connects_started, 1);
    assert_eq!(conn.connection_id(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_is_replaced_on_the_next_get() {
    let connector = TestConnector::new();
    let pool = pool(&connector, config());
    let first = pool.get(&key("k")).await.unwrap();
    let first_id = first.connection_id();
    first.close_now();
    let second = pool.get(&key("k")).await.unwrap();
    assert_ne!(second.connection_id(), first_id);
    assert_eq!(connector.counts().connects, 2);
    let stats = pool.stats();
    assert_eq!(stats.key("k").unwrap().replaced, 1);
    drop(first);
    connector.wait_for(|c| c.closes == 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_marked_broken_is_replaced() {
    let connector = TestConnector::new();
    let pool = pool(&connector, config());
    let first = pool.get(&key("k")).await.unwrap();
    first.mark_broken();
    let second = pool.get(&key("k")).await.unwrap();
    assert_ne!(second.connection_id(), first.connection_id());
    assert_eq!(pool.stats().key("k").unwrap().replaced, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_ping_marks_the_connection_for_replacement() {
    let connector = TestConnector::new();
    let pool = pool(
        &connector,
        config().with_health_interval(Duration::from_secs(10)),
    );
    let id = pool.get(&key("k")).await.unwrap().connection_id();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(connector.counts().pings >= 1, "{:?}", connector.counts());
    assert_eq!(
        pool.get(&key("k")).await.unwrap().connection_id(),
        id,
        "a good ping keeps it"
    );

    connector.fail_pings(true);
    let pings = connector.counts().pings;
    connector.wait_for(|c| c.pings > pings).await;
    tokio::task::yield_now().await;
    let replacement = pool.get(&key("k")).await.unwrap();
    assert_ne!(replacement.connection_id(), id);
    let stats = pool.stats();
    let k = stats.key("k").unwrap();
    assert!(k.ping_failures >= 1);
    assert_eq!(k.replaced, 1);
}

#[tokio::test(start_paused = true)]
async fn a_ping_that_hangs_counts_as_failed() {
    let connector = TestConnector::new();
    connector.hang_pings(true);
    let pool = pool(
        &connector,
        config()
            .with_health_interval(Duration::from_secs(10))
            .with_ping_timeout(Duration::from_secs(1)),
    );
    let id = pool.get(&key("k")).await.unwrap().connection_id();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(pool.stats().key("k").unwrap().ping_failures, 1);
    assert_ne!(pool.get(&key("k")).await.unwrap().connection_id(), id);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_reaped_on_the_paused_clock() {
    let connector = TestConnector::new();
    let idle = Duration::from_secs(60);
    let pool = pool(&connector, config().with_idle_timeout(idle));
    drop(pool.get(&key("k")).await.unwrap());

    tokio::time::sleep(idle / 2).await;
    assert_eq!(connector.counts().closes, 0, "not idle long enough yet");
    // A use resets the idle clock.
    drop(pool.get(&key("k")).await.unwrap());
    tokio::time::sleep(idle / 2 + Duration::from_secs(1)).await;
    assert_eq!(connector.counts().closes, 0);

    tokio::time::sleep(idle).await;
    assert_eq!(connector.counts().closes, 1);
    let stats = pool.stats();
    let k = stats.key("k").map(|k| (k.connections, k.reaped));
    assert!(matches!(k, Some((0, 1)) | None), "{stats:?}");
    // The next get connects again.
    pool.get(&key("k")).await.unwrap();
    assert_eq!(connector.counts().connects, 2);
}

#[tokio::test(start_paused = true)]
async fn a_connection_in_use_is_never_reaped() {
    let connector = TestConnector::new();
    let pool = pool(
        &connector,
        config().with_idle_timeout(Duration::from_secs(10)),
    );
    let long_call = pool.get(&key("k")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(connector.counts().closes, 0);
    drop(long_call);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        connector.counts().closes,
        0,
        "idle is measured from the end of the call"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(connector.counts().closes, 1);
}

#[tokio::test(start_paused = true)]
async fn reaping_keeps_min_connections() {
    let connector = TestConnector::new();
    let pool = pool(
        &connector,
        config()
            .with_min(1)
            .with_max(3)
            .with_target_in_flight(1)
            .with_idle_timeout(Duration::from_secs(10)),
    );
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(pool.get(&key("k")).await.unwrap());
        tokio::task::yield_now().await;
    }
    connector.wait_for(|c| c.connects == 3).await;
    held.push(pool.get(&key("k")).await.unwrap());
    assert_eq!(
        pool.stats().key("k").unwrap().in_service,
        3,
        "grown to max under load"
    );
    drop(held);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let stats = pool.stats();
    let k = stats.key("k").unwrap();
    assert_eq!((k.connections, k.reaped), (1, 2), "{k:?}");
    assert_eq!(
        connector.counts().connects,
        3,
        "min is kept, not reconnected"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_go_to_the_least_busy_connection() {
    let connector = TestConnector::new();
    let pool = Pool::builder(connector.clone())
        .with_config(config().with_min(2).with_max(2))
        .with_key(key("k"))
        .build()
        .unwrap();
    connector.wait_for(|c| c.connects == 2).await;
    let a = pool.get(&key("k")).await.unwrap();
    let b = pool.get(&key("k")).await.unwrap();
    assert_ne!(a.connection_id(), b.connection_id());
    // A tie goes to the first; then a's connection carries two calls and b's one.
    let c = pool.get(&key("k")).await.unwrap();
    assert_eq!(c.connection_id(), a.connection_id());
    let d = pool.get(&key("k")).await.unwrap();
    assert_eq!(
        d.connection_id(),
        b.connection_id(),
        "d avoids the busier connection"
    );
    let first = a.connection_id();
    drop((a, c));
    let e = pool.get(&key("k")).await.unwrap();
    assert_eq!(e.connection_id(), first, "now the first is the idle one");
    assert_eq!(e.in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_spreads_load_over_many_connections() {
    let connector = TestConnector::new();
    let pool = Pool::builder(connector.clone())
        .with_config(config().with_min(4).with_max(4))
        .with_key(key("k"))
        .build()
        .unwrap();
    connector.wait_for(|c| c.connects == 4).await;
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(pool.get(&key("k")).await.unwrap());
    }
    let mut per_connection = std::collections::HashMap::new();
    for p in &held {
        *per_connection.entry(p.connection_id()).or_insert(0) += 1;
    }
    assert_eq!(per_connection.len(), 4);
    for (id, n) in per_connection {
        assert!((10..=30).contains(&n), "connection {id} carries {n} of 80");
    }
}

#[tokio::test(start_paused = true)]
async fn the_total_limit_evicts_idle_connections_of_other_keys() {
    let connector = TestConnector::new();
    let pool = pool(&connector, config().with_max_total(1));
    let a = pool.get(&key("a")).await.unwrap();
    let err = pool.get(&key("b")).await.unwrap_err();
    assert!(
        matches!(err, PoolError::LimitReached { limit: 1, .. }),
        "{err}"
    );
    drop(a);
    let b = pool.get(&key("b")).await.unwrap();
    assert_eq!(b.key, "b");
    connector.wait_for(|c| c.closes == 1).await;
    let stats = pool.stats();
    assert_eq!(stats.open_total, 1);
    assert_eq!(stats.key("a").unwrap().reaped, 1);
}

#[tokio::test(start_paused = true)]
async fn the_per_key_limit_caps_growth() {
    let connector = TestConnector::new();
    let pool = pool(&connector, config().with_max(2).with_target_in_flight(1));
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(pool.get(&key("k")).await.unwrap());
        tokio::task::yield_now().await;
    }
    assert_eq!(connector.counts().connects, 2);
    assert_eq!(pool.stats().key("k").unwrap().in_flight, 50);
}

#[tokio::test(start_paused = true)]
async fn a_full_connection_makes_the_pool_open_another() {
    // Ten requests per connection (an SSH server's MaxSessions): the eleventh opens a second
    // connection, and the next ten ride it.
    let connector = TestConnector::new().with_capacity(10);
    let pool = pool(&connector, config().with_max(3));
    let mut held = Vec::new();
    for _ in 0..11 {
        held.push(pool.get(&key("k")).await.unwrap());
    }
    assert_eq!(connector.counts().connects, 2);
    let mut per_connection = std::collections::HashMap::<u64, usize>::new();
    for pooled in &held {
        *per_connection.entry(pooled.connection_id()).or_default() += 1;
    }
    let mut loads: Vec<usize> = per_connection.into_values().collect();
    loads.sort_unstable();
    assert_eq!(loads, [1, 10]);
    for _ in 0..9 {
        held.push(pool.get(&key("k")).await.unwrap());
    }
    assert_eq!(
        connector.counts().connects,
        2,
        "the second has room for nine more"
    );
    assert!(held.iter().all(|p| p.in_flight() <= 10));
}

#[tokio::test(start_paused = true)]
async fn at_max_with_every_connection_full_a_get_waits_for_room() {
    let connector = TestConnector::new().with_capacity(2);
    let pool = pool(&connector, config().with_max(1));
    let first = pool.get(&key("k")).await.unwrap();
    let _second = pool.get(&key("k")).await.unwrap();
    assert!(pool.try_get(&key("k")).is_none(), "full");
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&key("k")).await.unwrap().connection_id() }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !waiting.is_finished(),
        "no room, and no second connection allowed"
    );
    let id = first.connection_id();
    drop(first);
    assert_eq!(waiting.await.unwrap(), id);
    assert_eq!(connector.counts().connects, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_extra_connect_leaves_callers_waiting_for_room() {
    // The first connection is full; the second connect fails: callers wait for room on the
    // first rather than fail with the connect's error (and no connect is tried while the
    // key backs off).
    let connector = TestConnector::new().with_capacity(1);
    let pool = pool(
        &connector,
        config()
            .with_max(2)
            .with_connect_backoff(Duration::from_secs(60)),
    );
    let first = pool.get(&key("k")).await.unwrap();
    connector.script_connects([false]);
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&key("k")).await.map(|p| p.connection_id()) }
    });
    connector.wait_for(|c| c.connect_failures == 1).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());
    let id = first.connection_id();
    drop(first);
    assert_eq!(waiting.await.unwrap().unwrap(), id);
    assert_eq!(connector.counts().connects, 1);
}

#[tokio::test(start_paused = true)]
async fn declared_keys_are_connected_at_start_and_reconnected() {
    let connector = TestConnector::new();
    let pool = Pool::builder(connector.clone())
        .with_config(config().with_min(1))
        .with_required_key(key("db"))
        .build()
        .unwrap();
    connector.wait_for(|c| c.connects == 1).await;
    let held = pool.get(&key("db")).await.unwrap();
    assert_eq!(
        connector.counts().connects,
        1,
        "the warm connection is used"
    );
    held.close_now();
    drop(held);
    // The maintenance task replaces it without waiting for a caller.
    connector.wait_for(|c| c.connects == 2).await;
    assert!(pool.handle().is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_required_key_that_cannot_connect_makes_the_pool_unhealthy() {
    let connector = TestConnector::new();
    let pool = Pool::builder(connector.clone())
        .with_config(
            config()
                .with_min(1)
                .with_connect_backoff(Duration::from_secs(5)),
        )
        .with_required_key(key("down-db"))
        .with_key(key("down-optional"))
        .with_key(key("up"))
        .build()
        .unwrap();
    connector
        .wait_for(|c| c.connect_failures == 2 && c.connects == 1)
        .await;
    tokio::task::yield_now().await;
    let handle = pool.handle();
    assert_eq!(handle.healthy(), Some(false));
    assert!(!handle.is_healthy());
    let mut figures = Vec::new();
    handle.figures(&mut figures);
    let up = |upstream: &str| -> f64 {
        figures
            .iter()
            .find(|f: &&Figure| {
                f.name == "mcp_pool_up" && f.labels == vec![("upstream", upstream.to_owned())]
            })
            .map(|f| f.value)
            .unwrap()
    };
    assert_eq!(up("down-db"), 0.0);
    assert_eq!(up("up"), 1.0);
    assert!(
        figures
            .iter()
            .any(|f| f.name == "mcp_pool_connect_failures_total" && f.value == 1.0)
    );
    let snapshot = handle.snapshot();
    assert_eq!(snapshot["keys"][0]["key"], "down-db");
    assert_eq!(snapshot["keys"][0]["up"], false);
    assert_eq!(handle.layer(), "pool");

    // Only the optional key down: healthy.
    let optional_only = Pool::builder(TestConnector::new())
        .with_config(config().with_min(1))
        .with_key(key("down-x"))
        .build()
        .unwrap();
    assert_eq!(optional_only.handle().healthy(), None);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_then_closes_everything() {
    let connector = TestConnector::new();
    let pool = pool(
        &connector,
        config().with_drain_timeout(Duration::from_secs(30)),
    );
    let in_flight = pool.get(&key("a")).await.unwrap();
    drop(pool.get(&key("b")).await.unwrap());
    let shutdown = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.shutdown().await })
    };
    // The idle connection closes at once; the busy one waits for its call.
    connector.wait_for(|c| c.closes == 1).await;
    assert!(!shutdown.is_finished());
    assert!(matches!(
        pool.get(&key("a")).await,
        Err(PoolError::Shutdown)
    ));
    drop(in_flight);
    shutdown.await.unwrap();
    assert_eq!(connector.counts().closes, 2);
    assert!(pool.stats().shut_down);
    assert_eq!(pool.handle().healthy(), Some(false));
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_forever_for_a_stuck_call() {
    let connector = TestConnector::new();
    let pool = pool(
        &connector,
        config().with_drain_timeout(Duration::from_secs(5)),
    );
    let _stuck = pool.get(&key("a")).await.unwrap();
    let start = Instant::now();
    pool.shutdown().await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(connector.counts().closes, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_wakes_callers_waiting_for_a_connect() {
    let connector = TestConnector::new().with_delay(Duration::from_secs(60));
    let pool = pool(&connector, config());
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get(&key("a")).await.map(drop) })
    };
    connector.wait_for(|c| c.connects_started == 1).await;
    pool.shutdown().await;
    assert!(matches!(waiting.await.unwrap(), Err(PoolError::Shutdown)));
    assert_eq!(connector.counts().connects, 0);
}

#[tokio::test(start_paused = true)]
async fn without_pooling_every_get_connects_and_closes_after() {
    let connector = TestConnector::new();
    let pool = pool(&connector, config().with_enabled(false));
    let a = pool.get(&key("k")).await.unwrap();
    let b = pool.get(&key("k")).await.unwrap();
    assert_ne!(a.connection_id(), b.connection_id());
    assert_eq!(connector.counts().connects, 2);
    assert!(pool.try_get(&key("k")).is_none());
    drop(a);
    connector.wait_for(|c| c.closes == 1).await;
    drop(b);
    connector.wait_for(|c| c.closes == 2).await;
    assert_eq!(pool.stats().open_total, 0);
}

#[tokio::test(start_paused = true)]
async fn unused_keys_are_forgotten() {
    let connector = TestConnector::new();
    let pool = pool(
        &connector,
        config().with_idle_timeout(Duration::from_secs(10)),
    );
    drop(pool.get(&key("made-up")).await.unwrap());
    assert!(pool.stats().key("made-up").is_some());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(pool.stats().key("made-up").is_none(), "{:?}", pool.stats());
}

#[tokio::test(start_paused = true)]
async fn try_get_never_connects() {
    let connector = TestConnector::new();
    let pool = pool(&connector, config());
    assert!(pool.try_get(&key("k")).is_none());
    assert_eq!(connector.counts(), Counts::default());
    let held = pool.get(&key("k")).await.unwrap();
    assert_eq!(
        pool.try_get(&key("k")).unwrap().connection_id(),
        held.connection_id()
    );
}

#[test]
fn building_needs_a_valid_config_and_a_runtime() {
    let err = Pool::new(TestConnector::new(), PoolConfig::default()).unwrap_err();
    assert_eq!(err, BuildError::NoRuntime);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let err = Pool::new(TestConnector::new(), PoolConfig::default().with_max(0)).unwrap_err();
    assert!(err.to_string().contains("pool.max"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_and_drops_keep_the_counts_right() {
    let connector = TestConnector::new();
    let pool = pool(&connector, config().with_max(3).with_target_in_flight(4));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..2000 {
                    let k = key(if (t + i) % 2 == 0 { "a" } else { "b" });
                    let conn = pool.get(&k).await.unwrap();
                    assert_eq!(conn.key, k);
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = pool.stats();
    assert!(stats.keys.iter().all(|k| k.in_flight == 0), "{stats:?}");
    assert!(connector.counts().connects <= 6);
    assert_eq!(
        stats.open_total,
        connector.counts().connects - connector.counts().closes
    );
    let _ = Arc::new(());
}

#[tokio::test(start_paused = true)]
async fn without_pooling_declared_keys_are_not_kept_warm() {
    let connector = TestConnector::new();
    let _pool = Pool::builder(connector.clone())
        .with_config(config().with_enabled(false).with_min(1))
        .with_key(key("k"))
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(connector.counts().connects_started, 0);
}

#[tokio::test(start_paused = true)]
async fn eviction_prefers_keys_above_their_min() {
    let connector = TestConnector::new();
    let pool = pool(
        &connector,
        config()
            .with_min(1)
            .with_max(2)
            .with_target_in_flight(1)
            .with_max_total(3),
    );
    // `a` grows to two connections under load, `b` has one (its min).
    let a1 = pool.get(&key("a")).await.unwrap();
    let a2 = pool.get(&key("a")).await.unwrap();
    connector.wait_for(|c| c.connects == 2).await;
    drop((a1, a2));
    drop(pool.get(&key("b")).await.unwrap());
    assert_eq!(pool.stats().open_total, 3);
    // The pool is full: `c` takes the room of one of `a`'s idle connections, not `b`'s.
    pool.get(&key("c")).await.unwrap();
    let stats = pool.stats();
    assert_eq!(stats.key("a").unwrap().reaped, 1, "{stats:?}");
    assert_eq!(stats.key("b").unwrap().reaped, 0, "{stats:?}");
    assert_eq!(stats.key("b").unwrap().in_service, 1);
}
