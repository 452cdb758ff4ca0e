//! The deduplicator with real rmcp request contexts: each caller's own cancellation token,
//! the flight's token, and a real client sending `notifications/cancelled`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use mcp_tower_core::{
    CallResolver, HandlerService, PolicyDefaults, PolicyTable, ToolCall, error::ErrorKind,
    testing::ScriptedService,
};
use mcp_tower_dedup::{Dedup, DedupHandle, DedupLayer};
use rmcp::{
    ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt as _,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest,
        ContentBlock, ProgressNotificationParam, ProgressToken, RequestId, ServerCapabilities,
        ServerConfig, ServerResult, Tool, ToolAnnotations,
    },
    object,
    service::{NotificationContext, PeerRequestOptions, RequestContext},
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceBuilder, ServiceExt};

type Response = Result<CallToolResponse, ErrorData>;
type BoxedCall = Pin<Box<dyn Future<Output = Response> + Send>>;

fn resolver() -> Arc<CallResolver> {
    let report = Tool::new("report", "A slow report", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true));
    Arc::new(CallResolver::new(
        PolicyTable::new(PolicyDefaults::default()).with_tools([report]),
    ))
}

fn info() -> ServerConfig {
    ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
}

/// Hands out the context of the one request it serves.
#[derive(Clone, Default)]
struct ContextCatcher(Arc<Mutex<Option<RequestContext<RoleServer>>>>);

impl ServerHandler for ContextCatcher {
    fn get_info(&self) -> ServerConfig {
        info()
    }

    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        *self.0.lock().unwrap() = Some(context);
        Ok(CallToolResult::success(vec![]).into())
    }
}

/// A real request context (from a real session over an in-memory pipe), to build calls that
/// carry cancellation tokens of our choosing.
async fn real_context() -> RequestContext<RoleServer> {
    let catcher = ContextCatcher::default();
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn({
        let catcher = catcher.clone();
        async move { catcher.serve(server_io).await.unwrap().waiting().await }
    });
    let client = ().serve(client_io).await.unwrap();
    client
        .call_tool(CallToolRequestParams::new("any"))
        .await
        .unwrap();
    client.cancel().await.unwrap();
    server.await.unwrap().unwrap();
    catcher.0.lock().unwrap().take().unwrap()
}

/// A call to `report` whose request has `token` and id `id`.
fn call_with(context: &RequestContext<RoleServer>, token: &CancellationToken, id: i64) -> ToolCall {
    let mut context = context.clone();
    context.ct = token.clone();
    context.id = RequestId::Number(id);
    let params = CallToolRequestParams::new("report").with_arguments(object!({"month": "May"}));
    ToolCall::from_request(params, Some(context), resolver())
}

/// The cancellation token and request id of a call that reached the inner service.
type SeenCall = (Option<CancellationToken>, Option<RequestId>);

/// What the inner service saw of each call it ran.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SeenCall>>>);

impl Seen {
    fn token(&self, i: usize) -> CancellationToken {
        self.0.lock().unwrap()[i]
            .0
            .clone()
            .expect("the inner call has a token")
    }

    fn id(&self, i: usize) -> Option<RequestId> {
        self.0.lock().unwrap()[i].1.clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The deduplicator over `inner`, with a probe recording what reaches `inner`.
fn observed(
    inner: ScriptedService,
) -> (
    impl tower::Service<ToolCall, Response = CallToolResponse, Error = ErrorData, Future: Send>
    + Clone
    + Send
    + 'static,
    Seen,
    DedupHandle,
) {
    let seen = Seen::default();
    let probe = ServiceBuilder::new()
        .map_request({
            let seen = seen.clone();
            move |call: ToolCall| {
                seen.0.lock().unwrap().push((
                    call.cancellation().cloned(),
                    call.context().map(|cx| cx.id.clone()),
                ));
                call
            }
        })
        .service(inner);
    let layer = DedupLayer::default();
    let handle = layer.handle();
    (layer.layer(probe), seen, handle)
}

fn start<S>(service: &S, call: ToolCall) -> BoxedCall
where
    S: tower::Service<ToolCall, Response = CallToolResponse, Error = ErrorData>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut fut: BoxedCall = Box::pin(service.clone().oneshot(call));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    fut
}

fn kind(response: &Response) -> Option<ErrorKind> {
    response.as_ref().err().and_then(ErrorKind::of)
}

/// Waits for `future`, failing the test rather than hanging it (real clock: these tests run
/// real rmcp sessions; the bound is a sanity bound, not a timing).
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("hung for 30 s")
}

#[tokio::test]
async fn the_first_caller_cancelling_its_request_leaves_and_the_work_goes_on() {
    let context = real_context().await;
    let inner = ScriptedService::held();
    let (service, seen, handle) = observed(inner.clone());
    let (first_token, second_token) = (CancellationToken::new(), CancellationToken::new());
    let first = start(&service, call_with(&context, &first_token, 1));
    let second = start(&service, call_with(&context, &second_token, 2));
    assert_eq!(seen.len(), 1, "one execution");
    assert_eq!(
        seen.id(0),
        Some(RequestId::Number(1)),
        "the flight runs with the first caller's context"
    );

    // `notifications/cancelled` for the first request: rmcp cancels its token only.
    first_token.cancel();
    let first = within(first).await;
    assert_eq!(kind(&first), Some(ErrorKind::Cancelled));
    assert_eq!(first.unwrap_err().data.unwrap()["layer"], "dedup");
    assert!(
        !seen.token(0).is_cancelled(),
        "the flight's own token is not the first caller's"
    );
    assert_eq!(inner.dropped(), 0);

    inner.release_all();
    let second = within(second).await;
    assert!(
        matches!(second, Ok(CallToolResponse::Complete(_))),
        "{second:?}"
    );
    assert_eq!(inner.calls(), 1);
    assert_eq!(handle.stats().waiters_cancelled, 1);
    assert_eq!(handle.stats().followers_served, 1);
    assert!(!seen.token(0).is_cancelled());
}

#[tokio::test]
async fn a_leader_whose_call_is_shared_elsewhere_still_gets_a_token_of_its_own() {
    // A layer above kept a clone of the call: the flight runs a copy, with its own token.
    let context = real_context().await;
    let inner = ScriptedService::held();
    let (service, seen, _handle) = observed(inner.clone());
    let (leader_token, follower_token) = (CancellationToken::new(), CancellationToken::new());
    let call = call_with(&context, &leader_token, 7);
    let kept = call.clone();
    let leader = start(&service, call);
    let follower = start(&service, call_with(&context, &follower_token, 8));
    let flight_token = seen.token(0);
    assert_eq!(seen.id(0), Some(RequestId::Number(7)));

    leader_token.cancel();
    assert_eq!(kind(&within(leader).await), Some(ErrorKind::Cancelled));
    assert!(kept.is_cancelled(), "the kept call is the caller's own");
    assert!(!flight_token.is_cancelled(), "the flight's call is not");
    follower_token.cancel();
    assert_eq!(kind(&within(follower).await), Some(ErrorKind::Cancelled));
    assert!(flight_token.is_cancelled());
    assert_eq!(inner.dropped(), 1);
}

#[tokio::test]
async fn every_caller_cancelling_cancels_the_flights_token_and_drops_the_work() {
    let context = real_context().await;
    let inner = ScriptedService::held();
    let (service, seen, handle) = observed(inner.clone());
    let tokens: Vec<_> = (0..3).map(|_| CancellationToken::new()).collect();
    let waiters: Vec<_> = tokens
        .iter()
        .zip(1..)
        .map(|(token, id)| start(&service, call_with(&context, token, id)))
        .collect();
    let flight_token = seen.token(0);
    for token in &tokens {
        assert!(!flight_token.is_cancelled(), "someone still waits");
        token.cancel();
    }
    for waiter in waiters {
        assert_eq!(kind(&within(waiter).await), Some(ErrorKind::Cancelled));
    }
    assert!(
        flight_token.is_cancelled(),
        "the last one out cancels the work"
    );
    assert_eq!(inner.dropped(), 1, "and drops it");
    let stats = handle.stats();
    assert_eq!(stats.flights_cancelled, 1);
    assert_eq!(stats.waiters_cancelled, 3);
    assert_eq!(stats.in_flight_keys, 0);
}

#[tokio::test]
async fn a_request_cancelled_before_it_arrives_runs_nothing() {
    let context = real_context().await;
    let inner = ScriptedService::held();
    let (service, _seen, handle) = observed(inner.clone());
    let token = CancellationToken::new();
    token.cancel();
    let result = within(service.clone().oneshot(call_with(&context, &token, 1))).await;
    assert_eq!(kind(&result), Some(ErrorKind::Cancelled));
    assert_eq!(inner.calls(), 0, "the inner call was never polled");
    assert_eq!(handle.stats().flights_cancelled, 1);
    assert_eq!(handle.stats().in_flight_keys, 0);
}

/// The tool behind the deduplicator: counts executions, waits to be released, and reports
/// whether its future was dropped and its token cancelled.
#[derive(Clone, Default)]
struct Backend {
    executions: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    release: Arc<Notify>,
    tokens: Arc<Mutex<Vec<CancellationToken>>>,
}

struct CountDrop {
    dropped: Arc<AtomicUsize>,
    completed: bool,
}

impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.completed {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl ServerHandler for Backend {
    fn get_info(&self) -> ServerConfig {
        info()
    }

    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        self.tokens.lock().unwrap().push(context.ct.clone());
        let mut guard = CountDrop {
            dropped: Arc::clone(&self.dropped),
            completed: false,
        };
        // Progress goes to the request whose context the tool has.
        if let Some(progress) = context.meta.get_progress_token() {
            let _ = context
                .peer
                .notify_progress(ProgressNotificationParam::new(progress, 0.5))
                .await;
        }
        self.release.notified().await;
        guard.completed = true;
        Ok(CallToolResult::success(vec![ContentBlock::text("May: 42 sales")]).into())
    }
}

/// The server the client talks to: its `tools/call` goes through the deduplicator to the
/// backend, with the request's own context.
#[derive(Clone)]
struct Front {
    service: Dedup<HandlerService<Backend>>,
    resolver: Arc<CallResolver>,
    /// Calls that have joined or started their flight.
    joined: Arc<watch::Sender<usize>>,
    /// What each call returned, in order.
    answered: Arc<watch::Sender<Vec<Response>>>,
}

impl ServerHandler for Front {
    fn get_info(&self) -> ServerConfig {
        info()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = ToolCall::from_request(request, Some(context), Arc::clone(&self.resolver));
        let mut fut = pin!(self.service.clone().oneshot(call));
        let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        self.joined.send_modify(|n| *n += 1);
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => fut.await,
        };
        self.answered.send_modify(|all| all.push(result.clone()));
        result
    }
}

/// The client: records the progress notifications it receives.
#[derive(Clone, Default)]
struct Client {
    progress: Arc<watch::Sender<Vec<ProgressToken>>>,
}

impl ClientHandler for Client {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress
            .send_modify(|all| all.push(params.progress_token));
    }
}

struct Session {
    client: rmcp::service::RunningService<RoleClient, Client>,
    progress: watch::Receiver<Vec<ProgressToken>>,
    backend: Backend,
    handle: DedupHandle,
    joined: watch::Receiver<usize>,
    answered: watch::Receiver<Vec<Response>>,
}

async fn session() -> Session {
    let backend = Backend::default();
    let layer = DedupLayer::default();
    let handle = layer.handle();
    let (joined, joined_rx) = watch::channel(0);
    let (answered, answered_rx) = watch::channel(Vec::new());
    let front = Front {
        service: layer.layer(HandlerService::new(Arc::new(backend.clone()))),
        resolver: resolver(),
        joined: Arc::new(joined),
        answered: Arc::new(answered),
    };
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(server) = front.serve(server_io).await {
            let _ = server.waiting().await;
        }
    });
    let recorder = Client::default();
    let progress = recorder.progress.subscribe();
    let client = recorder.serve(client_io).await.unwrap();
    Session {
        client,
        progress,
        backend,
        handle,
        joined: joined_rx,
        answered: answered_rx,
    }
}

fn report_request() -> ClientRequest {
    ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("report").with_arguments(object!({"month": "May"})),
    ))
}

#[tokio::test]
async fn a_client_cancelling_the_first_request_does_not_cancel_the_second() {
    let mut s = session().await;
    let peer = s.client.peer().clone();
    let first = peer
        .send_cancellable_request(report_request(), PeerRequestOptions::no_options())
        .await
        .unwrap();
    let second = peer
        .send_cancellable_request(report_request(), PeerRequestOptions::no_options())
        .await
        .unwrap();
    within(s.joined.wait_for(|n| *n == 2)).await.unwrap();
    assert_eq!(s.backend.executions.load(Ordering::SeqCst), 1);

    // The client gives up on the first request: `notifications/cancelled`.
    first
        .cancel(Some("user pressed stop".into()))
        .await
        .unwrap();
    let answered = within(s.answered.wait_for(|all| all.len() == 1))
        .await
        .unwrap()
        .clone();
    assert_eq!(kind(&answered[0]), Some(ErrorKind::Cancelled));

    s.backend.release.notify_one();
    match within(second.await_response()).await.unwrap() {
        ServerResult::CallToolResult(result) => {
            assert_eq!(result.content[0].as_text().unwrap().text, "May: 42 sales");
        }
        other => panic!("expected the tool's result, got {other:?}"),
    }
    assert_eq!(s.backend.executions.load(Ordering::SeqCst), 1);
    assert_eq!(s.backend.dropped.load(Ordering::SeqCst), 0);
    let tool_token = s.backend.tokens.lock().unwrap()[0].clone();
    assert!(
        !tool_token.is_cancelled(),
        "the tool was never told to stop"
    );
    let stats = s.handle.stats();
    assert_eq!(stats.followers_served, 1);
    assert_eq!(stats.waiters_cancelled, 1);
    s.client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_client_cancelling_every_request_stops_the_tool() {
    let mut s = session().await;
    let peer = s.client.peer().clone();
    let mut requests = Vec::new();
    for _ in 0..2 {
        requests.push(
            peer.send_cancellable_request(report_request(), PeerRequestOptions::no_options())
                .await
                .unwrap(),
        );
    }
    within(s.joined.wait_for(|n| *n == 2)).await.unwrap();
    let tool_token = s.backend.tokens.lock().unwrap()[0].clone();
    for request in requests {
        request.cancel(None).await.unwrap();
    }
    within(s.answered.wait_for(|all| all.len() == 2))
        .await
        .unwrap();
    within(tool_token.cancelled()).await;
    assert_eq!(
        s.backend.dropped.load(Ordering::SeqCst),
        1,
        "the tool's future was dropped"
    );
    assert_eq!(s.backend.executions.load(Ordering::SeqCst), 1);
    assert_eq!(s.handle.stats().flights_cancelled, 1);
    assert_eq!(s.handle.stats().in_flight_keys, 0);

    // The key is free: a new request runs the tool again.
    s.backend.release.notify_one();
    let again = s
        .client
        .call_tool(CallToolRequestParams::new("report").with_arguments(object!({"month": "May"})))
        .await
        .unwrap();
    assert_eq!(again.content[0].as_text().unwrap().text, "May: 42 sales");
    assert_eq!(s.backend.executions.load(Ordering::SeqCst), 2);
    s.client.cancel().await.unwrap();
}

#[tokio::test]
async fn progress_reaches_only_the_first_caller() {
    let mut s = session().await;
    let peer = s.client.peer().clone();
    let first = peer
        .send_cancellable_request(report_request(), PeerRequestOptions::no_options())
        .await
        .unwrap();
    within(s.joined.wait_for(|n| *n == 1)).await.unwrap();
    let second = peer
        .send_cancellable_request(report_request(), PeerRequestOptions::no_options())
        .await
        .unwrap();
    within(s.joined.wait_for(|n| *n == 2)).await.unwrap();
    let (first_token, second_token) = (first.progress_token.clone(), second.progress_token.clone());
    assert_ne!(first_token, second_token);

    s.backend.release.notify_one();
    within(first.await_response()).await.unwrap();
    within(second.await_response()).await.unwrap();
    assert_eq!(s.backend.executions.load(Ordering::SeqCst), 1);
    // The one execution sent one progress notification, with the first request's token:
    // the second caller saw none (documented).
    let progress = within(s.progress.wait_for(|all| !all.is_empty()))
        .await
        .unwrap()
        .clone();
    assert_eq!(progress, vec![first_token]);
    s.client.cancel().await.unwrap();
}
