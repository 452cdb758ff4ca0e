//! The deduplicator against the scripted inner service: counts of executions, never
//! timings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use mcp_tower_core::{
    CacheScope, CallResolver, Partitioner, PolicyDefaults, PolicyTable, Principal, ToolCall,
    ToolOverride,
    error::ErrorKind,
    testing::{CapturedLogs, Outcome, ScriptedService},
};
use mcp_tower_dedup::{Dedup, DedupConfig, DedupHandle, DedupLayer};
use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
        InputRequiredResult, Tool, ToolAnnotations,
    },
    object,
    service::RequestContext,
};
use tokio::sync::watch;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

type Response = Result<CallToolResponse, ErrorData>;
type BoxedCall = Pin<Box<dyn Future<Output = Response> + Send>>;

fn tool(name: &'static str, annotations: Option<ToolAnnotations>) -> Tool {
    let t = Tool::new(name, "test tool", object!({"type": "object"}));
    match annotations {
        Some(a) => t.with_annotations(a),
        None => t,
    }
}

fn table() -> PolicyTable {
    PolicyTable::new(PolicyDefaults::default())
        .with_tools([
            tool("read", Some(ToolAnnotations::new().read_only(true))),
            tool(
                "idem",
                Some(ToolAnnotations::new().read_only(false).idempotent(true)),
            ),
            tool(
                "destroy",
                Some(ToolAnnotations::new().read_only(false).destructive(true)),
            ),
            tool("plain", None),
            tool("public", Some(ToolAnnotations::new().read_only(true))),
            tool("off", Some(ToolAnnotations::new().read_only(true))),
        ])
        .with_override(
            "public",
            ToolOverride::default().with_scope(CacheScope::Public),
        )
        .with_override("off", ToolOverride::default().with_dedup(false))
}

fn resolver() -> Arc<CallResolver> {
    static RESOLVER: std::sync::OnceLock<Arc<CallResolver>> = std::sync::OnceLock::new();
    Arc::clone(RESOLVER.get_or_init(|| Arc::new(CallResolver::new(table()))))
}

fn call(tool: &'static str, args: rmcp::model::JsonObject) -> ToolCall {
    ToolCall::with_resolver(tool, args, resolver())
}

fn dedup(inner: ScriptedService) -> (Dedup<ScriptedService>, DedupHandle) {
    let layer = DedupLayer::default();
    let handle = layer.handle();
    (layer.layer(inner), handle)
}

/// Starts `call` and polls it once, so that it has joined or started its flight.
fn start<S>(service: &S, call: ToolCall) -> BoxedCall
where
    S: Service<ToolCall, Response = CallToolResponse, Error = ErrorData> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut fut: BoxedCall = Box::pin(service.clone().oneshot(call));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(
        fut.as_mut().poll(&mut cx).is_pending(),
        "the call finished at once; these tests hold the inner service"
    );
    fut
}

fn complete(response: &Response) -> &CallToolResult {
    match response {
        Ok(CallToolResponse::Complete(result)) => result,
        other => panic!("expected a complete result, got {other:?}"),
    }
}

fn execution(response: &Response) -> u64 {
    complete(response).structured_content.as_ref().unwrap()["execution"]
        .as_u64()
        .unwrap()
}

/// Waits for `future` on tokio's (paused) clock; a hang fails the test instead of wedging it.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), future)
        .await
        .expect("the call hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_identical_calls_run_the_tool_once() {
    const CALLERS: usize = 1000;
    let inner = ScriptedService::held();
    let (service, handle) = dedup(inner.clone());
    let (joined_tx, mut joined) = watch::channel(0usize);
    let joined_tx = Arc::new(joined_tx);

    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let service = service.clone();
            let joined_tx = Arc::clone(&joined_tx);
            tokio::spawn(async move {
                let mut fut = Box::pin(service.oneshot(call("read", object!({"city": "Oslo"}))));
                // One poll: the call has joined (or started) the flight.
                let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
                assert!(first.is_pending(), "the tool is held");
                joined_tx.send_modify(|n| *n += 1);
                fut.await
            })
        })
        .collect();

    joined.wait_for(|n| *n == CALLERS).await.unwrap();
    assert_eq!(inner.calls(), 1, "one execution for {CALLERS} callers");
    assert_eq!(handle.stats().in_flight_keys, 1);
    inner.release(1);

    let mut results = Vec::with_capacity(CALLERS);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(inner.calls(), 1);
    assert_eq!(inner.completed(), 1);
    let first = complete(&results[0]).clone();
    assert_eq!(execution(&results[0]), 1);
    for result in &results {
        assert_eq!(
            complete(result),
            &first,
            "every caller gets the same result"
        );
    }
    let stats = handle.stats();
    assert_eq!(stats.flights, 1);
    assert_eq!(stats.followers_served, CALLERS as u64 - 1);
    assert_eq!(stats.in_flight_keys, 0);
    assert_eq!(service.in_flight_keys(), 0, "the key is freed");
}

#[tokio::test(start_paused = true)]
async fn different_arguments_run_separately() {
    let inner = ScriptedService::held();
    let (service, handle) = dedup(inner.clone());
    let a1 = start(&service, call("read", object!({"city": "Oslo"})));
    let b = start(&service, call("read", object!({"city": "Bergen"})));
    // Same arguments in another key order: the same call.
    let a2 = start(
        &service,
        call("read", object!({"units": "metric", "city": "Oslo"})),
    );
    let a3 = start(
        &service,
        call("read", object!({"city": "Oslo", "units": "metric"})),
    );
    assert_eq!(inner.calls(), 3);
    assert_eq!(service.in_flight_keys(), 3);
    inner.release_all();
    let (a1, b, a2, a3) = within(async { (a1.await, b.await, a2.await, a3.await) }).await;
    assert_ne!(execution(&a1), execution(&b));
    assert_ne!(execution(&a1), execution(&a2));
    assert_eq!(execution(&a2), execution(&a3));
    assert_eq!(handle.stats().flights, 3);
    assert_eq!(handle.stats().followers_served, 1);
}

#[tokio::test(start_paused = true)]
async fn the_first_caller_going_away_does_not_stop_the_others() {
    let inner = ScriptedService::held();
    let (service, handle) = dedup(inner.clone());
    // The leader is polled first: it drives the inner call, which holds its waker.
    let leader = start(&service, call("read", object!({"q": 1})));
    let followers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(call("read", object!({"q": 1})))))
        .collect();
    inner.wait_for_calls(1).await;
    tokio::task::yield_now().await; // the followers join
    drop(leader);
    assert_eq!(inner.dropped(), 0, "the work goes on");
    assert_eq!(service.in_flight_keys(), 1);

    // The release wakes whoever polls the inner call now: a follower took over.
    inner.release(1);
    for follower in followers {
        let result = within(follower).await.unwrap();
        assert_eq!(execution(&result), 1);
    }
    assert_eq!(inner.calls(), 1);
    assert_eq!(inner.completed(), 1);
    let stats = handle.stats();
    assert_eq!(stats.followers_served, 3);
    assert_eq!(stats.waiters_cancelled, 1);
    assert_eq!(stats.flights_cancelled, 0);
    assert_eq!(stats.in_flight_keys, 0);
}

/// A future that counts how often it is polled.
struct Polls<F> {
    inner: Pin<Box<F>>,
    count: Arc<AtomicUsize>,
}

impl<F: Future> Future for Polls<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_followers_sleep_until_the_outcome_instead_of_polling_themselves() {
    let inner = ScriptedService::held();
    let (service, _handle) = dedup(inner.clone());
    let polls: Vec<Arc<AtomicUsize>> = (0..17).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let callers: Vec<_> = polls
        .iter()
        .map(|count| {
            tokio::spawn(Polls {
                inner: Box::pin(service.clone().oneshot(call("read", object!({"q": 9})))),
                count: Arc::clone(count),
            })
        })
        .collect();
    inner.wait_for_calls(1).await;
    // Give the scheduler many turns while the tool is held: a caller that woke itself to
    // check again (as tower-resilience's coalesce does) would be polled on every one.
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    for count in &polls {
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "one poll to join, then asleep"
        );
    }
    inner.release(1);
    for caller in callers {
        assert_eq!(execution(&within(caller).await.unwrap()), 1);
    }
    for count in &polls {
        assert!(
            count.load(Ordering::SeqCst) <= 2,
            "woken once for the outcome"
        );
    }
    assert_eq!(inner.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn when_every_caller_goes_away_the_inner_call_is_dropped() {
    let inner = ScriptedService::held();
    let (service, handle) = dedup(inner.clone());
    let waiters: Vec<_> = (0..3)
        .map(|_| start(&service, call("read", object!({"q": 2}))))
        .collect();
    assert_eq!(inner.calls(), 1);
    let mut waiters = waiters.into_iter();
    drop(waiters.next());
    drop(waiters.next());
    assert_eq!(inner.dropped(), 0, "one caller still waits");
    drop(waiters.next());
    assert_eq!(
        inner.dropped(),
        1,
        "the inner future is dropped with the last caller"
    );
    assert_eq!(inner.in_flight(), 0);
    let stats = handle.stats();
    assert_eq!(stats.flights_cancelled, 1);
    assert_eq!(stats.waiters_cancelled, 3);
    assert_eq!(stats.in_flight_keys, 0);
    assert_eq!(service.in_flight_keys(), 0, "the key is freed");

    // The next call runs afresh.
    inner.release_all();
    let again = within(service.clone().oneshot(call("read", object!({"q": 2})))).await;
    assert_eq!(execution(&again), 2);
    assert_eq!(inner.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_error_reaches_every_waiter_and_is_not_remembered() {
    let inner = ScriptedService::held();
    inner.push(Outcome::error(ErrorData::internal_error(
        "database down",
        None,
    )));
    let (service, handle) = dedup(inner.clone());
    let waiters: Vec<_> = (0..3)
        .map(|_| start(&service, call("idem", object!({"id": 7}))))
        .collect();
    inner.release_all();
    for waiter in waiters {
        let error = within(waiter).await.expect_err("the shared error");
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(error.message, "database down");
    }
    assert_eq!(inner.calls(), 1);
    assert_eq!(service.in_flight_keys(), 0);

    let next = within(service.clone().oneshot(call("idem", object!({"id": 7})))).await;
    assert_eq!(execution(&next), 2, "the next call runs fresh");
    assert_eq!(handle.stats().flights, 2);
}

#[tokio::test(start_paused = true)]
async fn a_tool_error_reaches_every_waiter_and_is_not_remembered() {
    let inner = ScriptedService::held();
    inner.push(Outcome::tool_error("rate limited"));
    let (service, _handle) = dedup(inner.clone());
    let waiters: Vec<_> = (0..3)
        .map(|_| start(&service, call("read", object!({"id": 8}))))
        .collect();
    inner.release_all();
    for waiter in waiters {
        let result = within(waiter).await;
        let result = complete(&result);
        assert_eq!(result.is_error, Some(true));
        assert_eq!(result.content[0].as_text().unwrap().text, "rate limited");
    }
    let next = within(service.clone().oneshot(call("read", object!({"id": 8})))).await;
    assert_eq!(complete(&next).is_error, Some(false));
    assert_eq!(inner.calls(), 2);
}

/// A panic message that must reach the log and no client.
const PANIC_SECRET: &str = "index out of bounds; api_key=sk-live-4f9a2c7e1b";

/// Asserts that `error` is the short "the tool panicked" error, with nothing of the panic's
/// message in what a client would read.
fn assert_short_panic_error(error: &ErrorData) {
    assert_eq!(ErrorKind::of(error), Some(ErrorKind::Panicked));
    assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
    assert_eq!(
        error.message,
        "tool `read` failed with an internal error: the tool panicked"
    );
    let sent = serde_json::to_string(error).unwrap();
    for leak in ["sk-live", "api_key", "index out of bounds", "in call"] {
        assert!(!sent.contains(leak), "{leak:?} reached a client: {sent}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_gives_every_waiter_an_internal_error_and_frees_the_key() {
    let (logs, _guard) = CapturedLogs::start();
    let inner = ScriptedService::held();
    inner.push(Outcome::panic(PANIC_SECRET));
    let (service, handle) = dedup(inner.clone());
    let waiters: Vec<_> = (0..3)
        .map(|_| start(&service, call("read", object!({"id": 9}))))
        .collect();
    inner.release_all();
    // The leader and both followers get the same short error.
    for waiter in waiters {
        let error = within(waiter).await.unwrap_err();
        assert_short_panic_error(&error);
        assert_eq!(error.data.as_ref().unwrap()["layer"], "dedup");
        assert_eq!(error.data.as_ref().unwrap()["tool"], "read");
    }
    assert_eq!(service.in_flight_keys(), 0, "no stuck key");
    assert_eq!(handle.stats().flights_panicked, 1);
    // The message is in the log, once, at error level, with the tool's name.
    let logged: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line.contains(PANIC_SECRET))
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].starts_with("ERROR ") && logged[0].contains("tool=read"),
        "{logged:?}"
    );
    let next = within(service.clone().oneshot(call("read", object!({"id": 9})))).await;
    assert_eq!(execution(&next), 2);
}

/// The leader leaves before the tool panics: a follower polls the panic out of the flight
/// itself, and gets the same short error.
#[tokio::test(start_paused = true)]
async fn a_follower_that_drives_a_panicking_flight_gets_the_short_error_too() {
    let (logs, _guard) = CapturedLogs::start();
    let inner = ScriptedService::held();
    inner.push(Outcome::panic(PANIC_SECRET));
    let (service, handle) = dedup(inner.clone());
    let leader = start(&service, call("read", object!({"id": 11})));
    let follower = start(&service, call("read", object!({"id": 11})));
    drop(leader);
    inner.release_all();
    let error = within(follower).await.unwrap_err();
    assert_short_panic_error(&error);
    assert_eq!(handle.stats().flights_panicked, 1);
    assert!(logs.contains(PANIC_SECRET), "{:?}", logs.lines());
}

fn panicking_call(_call: ToolCall) -> std::future::Ready<Response> {
    panic!("the service panicked in call; {PANIC_SECRET}");
}

#[tokio::test]
async fn a_panic_in_the_inner_call_itself_is_contained_too() {
    let (logs, _guard) = CapturedLogs::start();
    let layer = DedupLayer::default();
    let handle = layer.handle();
    let service = layer.layer(tower::service_fn(panicking_call));
    let result = service
        .clone()
        .oneshot(call("read", object!({"id": 10})))
        .await;
    assert_short_panic_error(&result.unwrap_err());
    assert!(
        logs.contains("the service panicked in call"),
        "{:?}",
        logs.lines()
    );
    assert_eq!(service.in_flight_keys(), 0);
    assert_eq!(handle.stats().flights_panicked, 1);
    assert_eq!(handle.stats().in_flight_keys, 0);
}

#[tokio::test(start_paused = true)]
async fn tools_without_dedup_are_never_shared() {
    // Destructive, unannotated, unknown, and read-only with `dedup = false`.
    for tool in ["destroy", "plain", "no_such_tool", "off"] {
        let inner = ScriptedService::held();
        let (service, handle) = dedup(inner.clone());
        let a = start(&service, call(tool, object!({"path": "/tmp/x"})));
        let b = start(&service, call(tool, object!({"path": "/tmp/x"})));
        assert_eq!(inner.calls(), 2, "{tool}: each call runs");
        assert_eq!(inner.max_in_flight(), 2);
        inner.release_all();
        let (a, b) = within(async { (a.await, b.await) }).await;
        assert_ne!(execution(&a), execution(&b), "{tool}");
        assert_eq!(handle.stats().flights, 0, "{tool}: no flight");
        assert_eq!(service.in_flight_keys(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn continuations_are_never_shared() {
    let inner = ScriptedService::held();
    let (service, _handle) = dedup(inner.clone());
    let continuation = || {
        let mut params = CallToolRequestParams::new("read").with_arguments(object!({"q": 1}));
        params.request_state = Some("opaque".into());
        ToolCall::from_request(params, None, resolver())
    };
    let a = start(&service, continuation());
    let b = start(&service, continuation());
    assert_eq!(inner.calls(), 2);
    inner.release_all();
    let (a, b) = within(async { (a.await, b.await) }).await;
    assert_ne!(execution(&a), execution(&b));
}

/// A partitioner that puts every call in one fixed principal.
#[derive(Debug)]
struct Fixed(Principal);

impl Partitioner for Fixed {
    fn principal(&self, _context: Option<&RequestContext<RoleServer>>) -> Principal {
        self.0
    }
}

fn as_principal(n: u128) -> Arc<CallResolver> {
    Arc::new(CallResolver::new(table()).with_partitioner(Fixed(Principal::from_u128(n))))
}

#[tokio::test(start_paused = true)]
async fn private_tools_never_share_a_flight_between_principals() {
    let inner = ScriptedService::held();
    let (service, _handle) = dedup(inner.clone());
    let (alice, bob) = (as_principal(1), as_principal(2));
    let args = || object!({"account": "main"});
    let a1 = start(
        &service,
        ToolCall::with_resolver("read", args(), Arc::clone(&alice)),
    );
    let b1 = start(
        &service,
        ToolCall::with_resolver("read", args(), Arc::clone(&bob)),
    );
    let a2 = start(
        &service,
        ToolCall::with_resolver("read", args(), Arc::clone(&alice)),
    );
    assert_eq!(inner.calls(), 2, "one execution per principal");
    // A public tool is shared by both.
    let p1 = start(
        &service,
        ToolCall::with_resolver("public", args(), Arc::clone(&alice)),
    );
    let p2 = start(
        &service,
        ToolCall::with_resolver("public", args(), Arc::clone(&bob)),
    );
    assert_eq!(inner.calls(), 3);
    inner.release_all();
    let (a1, b1, a2, p1, p2) =
        within(async { (a1.await, b1.await, a2.await, p1.await, p2.await) }).await;
    assert_eq!(execution(&a1), execution(&a2));
    assert_ne!(execution(&a1), execution(&b1));
    assert_eq!(execution(&p1), execution(&p2));
}

#[tokio::test(start_paused = true)]
async fn an_input_required_response_is_the_leaders_and_followers_run_their_own_call() {
    let inner = ScriptedService::held();
    let first = Arc::new(AtomicBool::new(true));
    // The first execution asks its caller for input; later ones complete.
    let asking = ServiceBuilder::new()
        .map_response(move |response: CallToolResponse| {
            if first.swap(false, Ordering::SeqCst) {
                InputRequiredResult::from_request_state("leader's state").into()
            } else {
                response
            }
        })
        .service(inner.clone());
    let layer = DedupLayer::default();
    let handle = layer.handle();
    let service = layer.layer(asking);
    let leader = start(&service, call("read", object!({"q": "mrtr"})));
    let followers: Vec<_> = (0..2)
        .map(|_| start(&service, call("read", object!({"q": "mrtr"}))))
        .collect();
    assert_eq!(inner.calls(), 1);
    inner.release_all();

    match within(leader).await {
        Ok(CallToolResponse::InputRequired(asked)) => {
            assert_eq!(asked.request_state.as_deref(), Some("leader's state"));
        }
        other => panic!("the leader gets its InputRequired, got {other:?}"),
    }
    for follower in followers {
        let result = within(follower).await;
        assert!(
            execution(&result) >= 2,
            "each follower ran its own call: {result:?}"
        );
    }
    assert_eq!(inner.calls(), 3);
    assert_eq!(handle.stats().followers_rerun, 2);
    assert_eq!(handle.stats().followers_served, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_never_joins_a_flight_that_finished_before_it_arrived() {
    // Tasks hammer one key. Each task's next call starts after its previous one returned,
    // so it must never get the same execution: that would be a finished flight joined late.
    const TASKS: usize = 4;
    const CALLS: usize = 2_000;
    let executions = Arc::new(AtomicUsize::new(0));
    let inner = tower::service_fn({
        let executions = Arc::clone(&executions);
        move |_call: ToolCall| {
            let n = executions.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(Ok::<_, ErrorData>(
                CallToolResult::success(vec![ContentBlock::text(n.to_string())]).into(),
            ))
        }
    });
    let layer = DedupLayer::default();
    let handle = layer.handle();
    let service = layer.layer(inner);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let mut previous = String::new();
                for _ in 0..CALLS {
                    let result = service
                        .clone()
                        .oneshot(call("read", object!({"hot": "key"})))
                        .await;
                    let text = complete(&result).content[0].as_text().unwrap().text.clone();
                    assert_ne!(text, previous, "joined a flight that had already finished");
                    previous = text;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = handle.stats();
    assert_eq!(
        stats.flights + stats.followers_served,
        (TASKS * CALLS) as u64,
        "every call was either a flight or served by one"
    );
    assert_eq!(stats.flights, executions.load(Ordering::SeqCst) as u64);
    assert_eq!(stats.in_flight_keys, 0);
    assert_eq!(service.in_flight_keys(), 0);
}

/// A future that yields to the scheduler `n` times, then succeeds: an inner call that is
/// woken several times, on whichever task drives it.
struct Yields {
    left: usize,
    execution: usize,
}

impl Future for Yields {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Response> {
        if self.left == 0 {
            let text = self.execution.to_string();
            return Poll::Ready(Ok(
                CallToolResult::success(vec![ContentBlock::text(text)]).into()
            ));
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_leaving_at_random_never_strand_the_others() {
    // Rounds of callers on two threads; once all have joined, a different third of them is
    // aborted mid-flight, the one driving the inner call often among them. Whoever stays
    // gets an answer (a driver that leaves hands the inner call over), and nothing is left.
    const ROUNDS: usize = 200;
    const CALLERS: usize = 9;
    let executions = Arc::new(AtomicUsize::new(0));
    let inner = tower::service_fn({
        let executions = Arc::clone(&executions);
        move |_call: ToolCall| Yields {
            left: 500,
            execution: executions.fetch_add(1, Ordering::SeqCst),
        }
    });
    let layer = DedupLayer::default();
    let handle = layer.handle();
    let service = layer.layer(inner);
    let (joined_tx, mut joined) = watch::channel(0usize);
    let joined_tx = Arc::new(joined_tx);
    let mut answered = 0;
    for round in 0..ROUNDS {
        joined_tx.send_replace(0);
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let service = service.clone();
                let joined_tx = Arc::clone(&joined_tx);
                tokio::spawn(async move {
                    let mut fut =
                        Box::pin(service.oneshot(call("read", object!({"round": round}))));
                    let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
                    joined_tx.send_modify(|n| *n += 1);
                    match first {
                        Poll::Ready(result) => result,
                        Poll::Pending => fut.await,
                    }
                })
            })
            .collect();
        joined.wait_for(|n| *n == CALLERS).await.unwrap();
        for (i, task) in tasks.iter().enumerate() {
            if (i + round) % 3 == 0 {
                task.abort();
            }
        }
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(result)) => {
                    complete(&result);
                    answered += 1;
                }
                Ok(Err(aborted)) => assert!(aborted.is_cancelled()),
                Err(_) => panic!("round {round}: a caller was stranded"),
            }
        }
    }
    let stats = handle.stats();
    assert!(
        answered >= ROUNDS * CALLERS / 2,
        "{answered} answers, {stats:?}"
    );
    assert!(
        stats.waiters_cancelled > 0,
        "callers left mid-flight: {stats:?}"
    );
    assert_eq!(stats.in_flight_keys, 0);
    assert_eq!(service.in_flight_keys(), 0, "no key left behind");
    assert_eq!(executions.load(Ordering::SeqCst) as u64, stats.flights);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_layer_passes_everything_through() {
    let config: DedupConfig = toml::from_str("enabled = false").unwrap();
    assert_eq!(config, DedupConfig::default().with_enabled(false));
    config.validate().unwrap();
    let layer = DedupLayer::new(config);
    assert!(!layer.handle().is_enabled());
    let inner = ScriptedService::held();
    let service = layer.layer(inner.clone());
    let a = start(&service, call("read", object!({"q": 1})));
    let b = start(&service, call("read", object!({"q": 1})));
    assert_eq!(inner.calls(), 2);
    inner.release_all();
    let (a, b) = within(async { (a.await, b.await) }).await;
    assert_ne!(execution(&a), execution(&b));
    assert_eq!(layer.handle().stats().flights, 0);
}

#[test]
fn config_parses_from_toml_and_rejects_unknown_keys() {
    let default: DedupConfig = toml::from_str("").unwrap();
    assert_eq!(default, DedupConfig::default());
    assert!(default.enabled);
    let misspelt = toml::from_str::<DedupConfig>("enable = false");
    assert!(misspelt.is_err(), "a misspelt key is an error, not ignored");
    let round_trip: DedupConfig =
        toml::from_str(&toml::to_string(&DedupConfig::default().with_enabled(false)).unwrap())
            .unwrap();
    assert!(!round_trip.enabled);
}

#[tokio::test(start_paused = true)]
async fn readiness_is_the_inner_services() {
    // An inner service with room for one call at a time: back-pressure shows through.
    let inner = ScriptedService::held();
    let service =
        DedupLayer::default().layer(tower::limit::ConcurrencyLimit::new(inner.clone(), 1));
    let running = start(&service, call("destroy", object!({"n": 1})));
    let mut other = service.clone();
    let ready = poll_fn(|cx| Poll::Ready(other.poll_ready(cx))).await;
    assert!(ready.is_pending(), "the inner service has no room");
    inner.release_all();
    within(running).await.unwrap();
    within(poll_fn(|cx| other.poll_ready(cx))).await.unwrap();
}
