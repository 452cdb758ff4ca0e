//! What a failure shows a client through the whole stack (metrics, cache, dedup,
//! concurrency, retry, timeout): a short, fixed reason and the configured names, never the
//! failure's own text (a panic message, an address, a user name), which goes to the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Waker},
};

use mcp_tower::{McpStack, StackConfig, ToolCall, error};
use mcp_tower_core::testing::{CapturedLogs, Outcome, ScriptedService};
use rmcp::{
    ErrorData,
    model::{CallToolResponse, ErrorCode, Tool, ToolAnnotations},
    object,
};
use tower::ServiceExt;

type Answer = Result<CallToolResponse, ErrorData>;

fn stack(toml: &str, inner: &ScriptedService) -> mcp_tower::BuiltStack {
    let tool = Tool::new("weather", "test tool", object!({"type": "object"}))
        .with_annotations(ToolAnnotations::new().read_only(true));
    McpStack::builder()
        .config(StackConfig::from_toml_str(toml).unwrap())
        .tools(vec![tool])
        .build()
        .unwrap()
        .service(inner.clone())
}

fn call(built: &mcp_tower::BuiltStack) -> ToolCall {
    ToolCall::with_resolver(
        "weather",
        object!({"city": "Oslo"}),
        Arc::clone(&built.resolver),
    )
}

/// Everything a client reads of `error`, as it goes on the wire.
fn sent(error: &ErrorData) -> String {
    serde_json::to_string(error).unwrap()
}

#[tokio::test]
async fn a_panic_shows_every_caller_a_short_error_and_logs_its_message_once() {
    const SECRET: &str = "password=hunter2 at /home/deploy/.ssh/known_hosts";
    let (logs, _guard) = CapturedLogs::start();
    let inner = ScriptedService::held();
    inner.push_for("weather", Outcome::panic(format!("tool bug: {SECRET}")));
    let built = stack("", &inner);
    // Three identical calls: the first leads the flight, the others join it.
    let mut calls: Vec<Pin<Box<dyn Future<Output = Answer> + Send>>> = (0..3)
        .map(|_| Box::pin(built.service.clone().oneshot(call(&built))) as _)
        .collect();
    let mut cx = Context::from_waker(Waker::noop());
    for c in &mut calls {
        assert!(c.as_mut().poll(&mut cx).is_pending(), "held at the tool");
    }
    inner.release_all();
    for c in calls {
        let error = c.await.unwrap_err();
        assert_eq!(
            error::ErrorKind::of(&error),
            Some(error::ErrorKind::Panicked)
        );
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(
            error.message,
            "tool `weather` failed with an internal error: the tool panicked"
        );
        let sent = sent(&error);
        for leak in ["hunter2", "known_hosts", "deploy", "tool bug"] {
            assert!(!sent.contains(leak), "{leak:?} reached a client: {sent}");
        }
    }
    assert_eq!(inner.calls(), 1, "one execution, not retried");
    let dedup = built.handles.dedup.as_ref().unwrap().stats();
    assert_eq!(dedup.flights_panicked, 1);
    let logged: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains(SECRET))
        .collect();
    assert_eq!(logged.len(), 1, "{:?}", logs.lines());
    assert!(
        logged[0].starts_with("ERROR ") && logged[0].contains("tool=weather"),
        "{logged:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_failure_names_the_upstream_not_its_address_even_after_retries() {
    const DETAIL: &str = "connect to 10.7.7.7:2222 as deploy: connection refused";
    let (logs, _guard) = CapturedLogs::start();
    let inner = ScriptedService::new();
    for _ in 0..3 {
        // As a connector that formats its error into the reason would build it.
        inner.push_for(
            "weather",
            Outcome::error(error::UpstreamUnavailable {
                layer: error::Layer::Pool,
                upstream: "db".into(),
                reason: DETAIL.to_owned().into(),
            }),
        );
    }
    let built = stack(
        "[cache]\nenabled = false\n[retry]\nmax_attempts = 3\n",
        &inner,
    );
    let error = built
        .service
        .clone()
        .oneshot(call(&built))
        .await
        .unwrap_err();
    assert_eq!(inner.calls(), 3, "retried: it is transient");
    assert_eq!(
        error::ErrorKind::of(&error),
        Some(error::ErrorKind::RetriesExhausted)
    );
    let sent = sent(&error);
    assert!(
        sent.contains("upstream `db` is unavailable: the upstream could not be reached"),
        "{sent}"
    );
    for leak in ["10.7.7.7", "2222", "deploy"] {
        assert!(!sent.contains(leak), "{leak:?} reached a client: {sent}");
    }
    assert!(logs.contains(DETAIL), "{:?}", logs.lines());
}
