//! Isolation of relayed messages between the downstream callers sharing one upstream
//! session: a stub upstream on an in-memory stdio-like pipe (no stream marks), two
//! downstream callers (two sessions, two principals), jittered scheduling.
#![allow(clippy::unwrap_used, clippy::expect_used, deprecated)]

use std::sync::Arc;

use rmcp::{
    ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
        ContentBlock, CreateMessageRequestParams, CreateMessageResult, Implementation,
        LoggingLevel, LoggingMessageNotificationParam, NotificationMetaObject, RequestMetaObject,
        SamplingMessage, ServerCapabilities, ServerConfig,
    },
    service::{NotificationContext, RequestContext, RunningService},
    transport::async_rw::AsyncRwTransport,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{McpConnector, McpSession, UpstreamConfig};

/// A seeded generator of yield counts (splitmix64).
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn yields(&mut self) -> u64 {
        self.next() % 8
    }
}

async fn yield_times(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

fn jitter_of(args: &serde_json::Map<String, Value>, i: usize) -> u64 {
    args.get("jitter")
        .and_then(|j| j.get(i))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// The upstream: tool `ask` (argument `tag`) sends, while serving the call, a log naming
/// the call by its progress token, a log naming nothing, a sampling request naming the
/// call by its id, and a sampling request naming nothing; it answers with who answered
/// the first sampling request and what became of the second.
struct Stub;

impl ServerHandler for Stub {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let tag = args["tag"].as_str().unwrap().to_owned();
        let log = |data: String, meta: Option<Value>| {
            let mut log = LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(data));
            log.meta = meta.map(|m| NotificationMetaObject(serde_json::from_value(m).unwrap()));
            log
        };
        let token = cx.meta.get_progress_token().expect("the gateway sets one");

        yield_times(jitter_of(&args, 0)).await;
        cx.peer
            .notify_logging_message(log(
                format!("log:{tag}"),
                Some(json!({ "progressToken": token })),
            ))
            .await
            .unwrap();
        yield_times(jitter_of(&args, 1)).await;
        cx.peer
            .notify_logging_message(log(format!("stray:{tag}"), None))
            .await
            .unwrap();

        let sampling = |meta: Option<Value>| {
            let mut params =
                CreateMessageRequestParams::new(vec![SamplingMessage::user_text(&tag)], 10);
            params.meta = meta.map(|m| RequestMetaObject(serde_json::from_value(m).unwrap()));
            params
        };
        yield_times(jitter_of(&args, 2)).await;
        let answered = cx
            .peer
            .create_message(sampling(Some(json!({ "relatedRequestId": cx.id }))))
            .await
            .map(|r| r.model)
            .unwrap_or_else(|e| format!("error: {e}"));
        yield_times(jitter_of(&args, 3)).await;
        let stray = match cx.peer.create_message(sampling(None)).await {
            Ok(r) => format!("answered by {}", r.model),
            Err(e) if e.to_string().contains("nothing tells") => "refused".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(format!("{answered}|{stray}")),
        ])))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
    }
}

/// The gateway's front for one downstream session: every call goes to the shared session.
struct Front {
    session: Arc<McpSession>,
}

impl ServerHandler for Front {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.session
            .call_tool(request, Some(&cx))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// A downstream caller: answers sampling with its name, records the logs it hears.
struct Caller {
    name: &'static str,
    logs: mpsc::UnboundedSender<String>,
}

impl ClientHandler for Caller {
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let asked = params.messages[0]
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone());
        let asked = asked.unwrap_or_default();
        assert!(
            asked.starts_with(self.name),
            "{} was asked for {asked}",
            self.name
        );
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text("ok"),
            self.name.to_owned(),
        ))
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.logs
            .send(params.data.as_str().unwrap_or_default().to_owned())
            .ok();
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities: ClientCapabilities =
            serde_json::from_value(json!({ "sampling": {} })).unwrap();
        ClientConfig::new(capabilities, Implementation::new(self.name, "0"))
    }
}

/// The gateway's session to the stub, over a pipe (like stdio: nothing marks streams).
async fn stub_session(connector: &McpConnector) -> Arc<McpSession> {
    let (gateway_io, upstream_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = Stub.serve(upstream_io).await.unwrap();
        running.waiting().await.ok();
    });
    let (read, write) = tokio::io::split(gateway_io);
    let transport = AsyncRwTransport::<RoleClient, _, _>::new_client(read, write);
    Arc::new(connector.serve_for_test("stub", transport).await.unwrap())
}

async fn caller(
    session: &Arc<McpSession>,
    name: &'static str,
) -> (
    RunningService<RoleClient, Caller>,
    mpsc::UnboundedReceiver<String>,
) {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let front = Front {
        session: Arc::clone(session),
    };
    tokio::spawn(async move {
        let running = front.serve(server_io).await.unwrap();
        running.waiting().await.ok();
    });
    let (logs, heard) = mpsc::unbounded_channel();
    let client = Caller { name, logs }.serve(client_io).await.unwrap();
    (client, heard)
}

const RUNS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_only_its_own_relayed_requests_and_logs() {
    let connector = McpConnector::new(Vec::<(String, UpstreamConfig)>::new()).unwrap();
    let session = stub_session(&connector).await;
    let (alice, mut alice_heard) = caller(&session, "alice").await;
    let (bob, mut bob_heard) = caller(&session, "bob").await;
    let mut jitter = Jitter(0x5EED);

    for run in 0..RUNS {
        let mut call = |who: &'static str| {
            let args = json!({
                "tag": format!("{who}-{run}"),
                "jitter": [jitter.yields(), jitter.yields(), jitter.yields(), jitter.yields()],
            });
            let Value::Object(args) = args else {
                unreachable!()
            };
            (
                jitter.yields(),
                CallToolRequestParams::new("ask").with_arguments(args),
            )
        };
        let ((a_wait, a), (b_wait, b)) = (call("alice"), call("bob"));
        let (a, b) = tokio::join!(
            async {
                yield_times(a_wait).await;
                alice.call_tool(a).await
            },
            async {
                yield_times(b_wait).await;
                bob.call_tool(b).await
            },
        );
        for (who, result) in [("alice", a), ("bob", b)] {
            let result = result.unwrap();
            let text = result.content[0].as_text().unwrap().text.clone();
            assert_eq!(text, format!("{who}|refused"), "run {run}");
        }
    }

    // Every log is accounted for once: relayed (to whom is checked below) or dropped.
    for (who, heard) in [("alice", &mut alice_heard), ("bob", &mut bob_heard)] {
        for _ in 0..RUNS {
            let log = heard.recv().await.unwrap();
            assert!(log.starts_with(&format!("log:{who}-")), "{who} heard {log}");
        }
    }
    let stats = loop {
        let stats = connector.relay_stats();
        if stats.relay_logs_dropped + stats.relay_logs_relayed == 4 * RUNS as u64 {
            break stats;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(stats.relay_logs_relayed, 2 * RUNS as u64);
    assert_eq!(stats.relay_logs_dropped, 2 * RUNS as u64, "every stray log");
    assert_eq!(stats.relay_requests_relayed, 2 * RUNS as u64);
    assert_eq!(stats.relay_requests_refused, 2 * RUNS as u64);
    assert!(alice_heard.try_recv().is_err() && bob_heard.try_recv().is_err());
    assert_eq!(session.relays.len(), (0, 0, 0), "every route closed");
}

#[tokio::test]
async fn with_one_request_in_flight_an_unattributable_request_is_still_refused() {
    let connector = McpConnector::new(Vec::<(String, UpstreamConfig)>::new()).unwrap();
    let session = stub_session(&connector).await;
    let (alice, mut heard) = caller(&session, "alice").await;
    let Value::Object(args) = json!({ "tag": "alice-1" }) else {
        unreachable!()
    };
    let result = alice
        .call_tool(CallToolRequestParams::new("ask").with_arguments(args))
        .await
        .unwrap();
    let text = result.content[0].as_text().unwrap().text.clone();
    assert_eq!(text, "alice|refused");
    assert_eq!(heard.recv().await.unwrap(), "log:alice-1");
    let stats = connector.relay_stats();
    assert_eq!(stats.relay_requests_refused, 1);
}
