//! `GET /metrics`, `/health` and `/stats` through the axum router: in-process with
//! `oneshot`, and over a real listener on 127.0.0.1:0.
#![cfg(feature = "http")]

mod common;

use std::sync::{Arc, atomic::Ordering};

use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use common::{FakeCache, FakePool, call, calls, parse, resolver};
use mcp_tower_core::testing::{Outcome, ScriptedService};
use mcp_tower_metrics::{MetricsConfig, MetricsHandle, PROMETHEUS_CONTENT_TYPE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer as _, ServiceExt};

async fn get(router: &axum::Router, path: &str) -> (StatusCode, String, Vec<u8>) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("a request"))
        .await
        .expect("the router answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("an ASCII content type").to_owned())
        .unwrap_or_default();
    let body = to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    (status, content_type, body.to_vec())
}

async fn get_json(router: &axum::Router, path: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = get(router, path).await;
    assert_eq!(content_type, "application/json");
    (status, serde_json::from_slice(&body).expect("a JSON body"))
}

#[tokio::test]
async fn health_turns_503_when_a_required_upstream_is_down() {
    let pool = Arc::new(FakePool::new(true));
    let cache = Arc::new(FakeCache::default());
    cache.hits.store(4, Ordering::SeqCst);
    let handle = MetricsHandle::new(MetricsConfig::default())
        .unwrap()
        .with_report(pool.clone())
        .with_report(cache);
    let router: axum::Router = handle.router();

    let (status, body) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["layers"]["pool"]["healthy"], true);
    assert_eq!(
        body["layers"]["pool"]["snapshot"]["upstreams"]["github"]["up"],
        true
    );
    assert_eq!(body["layers"]["cache"]["healthy"], Value::Null);
    assert_eq!(body["layers"]["cache"]["snapshot"]["hits"], 4);

    pool.up.store(false, Ordering::SeqCst);
    let (status, body) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["layers"]["pool"]["healthy"], false);
    assert_eq!(
        body["layers"]["pool"]["snapshot"]["upstreams"]["github"]["up"],
        false
    );

    pool.up.store(true, Ordering::SeqCst);
    assert_eq!(get(&router, "/health").await.0, StatusCode::OK, "and back");
}

#[tokio::test]
async fn health_without_reports_is_ok() {
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let (status, body) = get_json(&handle.router(), "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["layers"], serde_json::json!({}));
}

#[tokio::test]
async fn two_reports_of_one_layer_are_both_shown() {
    let handle = MetricsHandle::new(MetricsConfig::default())
        .unwrap()
        .with_report(Arc::new(FakePool::new(true)))
        .with_report(Arc::new(FakePool::new(false)));
    let (status, body) = get_json(&handle.router(), "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["layers"]["pool"]["healthy"], true);
    assert_eq!(body["layers"]["pool#2"]["healthy"], false);
}

#[tokio::test]
async fn stats_reports_per_tool_figures_and_layer_snapshots() {
    let resolver = resolver(&["weather", "search"]);
    let cache = Arc::new(FakeCache::default());
    let handle = MetricsHandle::new(MetricsConfig::default())
        .unwrap()
        .with_report(cache);
    let inner = ScriptedService::new();
    let service = handle.layer().layer(inner.clone());
    for _ in 0..3 {
        service
            .clone()
            .oneshot(call(&resolver, "weather"))
            .await
            .unwrap();
    }
    inner.push_for("search", Outcome::tool_error("nothing found"));
    service
        .clone()
        .oneshot(call(&resolver, "search"))
        .await
        .unwrap();
    service
        .clone()
        .oneshot(call(&resolver, "search"))
        .await
        .unwrap();
    service
        .clone()
        .oneshot(call(&resolver, "invented"))
        .await
        .unwrap();

    let (status, body) = get_json(&handle.router(), "/stats").await;
    assert_eq!(status, StatusCode::OK);
    let weather = &body["tools"]["weather"];
    assert_eq!(weather["calls"], 3);
    assert_eq!(weather["outcomes"]["ok"], 3);
    assert_eq!(weather["success_rate"], 1.0);
    assert_eq!(weather["cache_hit_rate"], 0.0);
    assert_eq!(weather["in_flight"], 0);
    assert_eq!(weather["peak_in_flight"], 1);
    assert_eq!(weather["window"]["calls"], 3);
    assert_eq!(weather["window"]["seconds"], 60.0);
    assert!(weather["window"]["p99_ms"].is_number());
    for key in ["qps_1s", "qps_10s"] {
        assert!(weather[key].is_number(), "{key}");
    }
    let search = &body["tools"]["search"];
    assert_eq!(search["outcomes"]["tool_error"], 1);
    assert_eq!(search["success_rate"], 0.5);
    assert_eq!(body["tools"]["unknown"]["calls"], 1);
    assert_eq!(body["totals"]["calls"], 6);
    assert_eq!(body["totals"]["outcomes"]["ok"], 5);
    assert_eq!(body["layers"]["cache"]["misses"], 2);
    assert!(body["uptime_seconds"].is_number());
}

#[tokio::test]
async fn metrics_over_a_real_listener() {
    let resolver = resolver(&["weather"]);
    let handle = MetricsHandle::new(MetricsConfig::default())
        .unwrap()
        .with_report(Arc::new(FakeCache::default()));
    let service = handle.layer().layer(ScriptedService::new());
    for _ in 0..2 {
        service
            .clone()
            .oneshot(call(&resolver, "weather"))
            .await
            .unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let server = tokio::spawn({
        let router: axum::Router = handle.router();
        let stop = shutdown.clone();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
        }
    });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-type: {PROMETHEUS_CONTENT_TYPE}")),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let scrape = parse(&body);
    assert_eq!(calls(&scrape, "weather", "ok"), 2.0);
    assert_eq!(
        common::value(&scrape, "mcp_cache_misses_total", &[]),
        Some(2.0)
    );

    shutdown.notify_one();
    server.await.unwrap().unwrap();
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[tokio::test]
async fn other_methods_and_paths_are_refused() {
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let router: axum::Router = handle.router();
    let response = router
        .clone()
        .oneshot(Request::post("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get(&router, "/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_router_merges_into_a_router_with_state() {
    #[derive(Clone)]
    struct AppState;
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    let app: axum::Router = axum::Router::new()
        .route("/mcp", axum::routing::get(|| async { "mcp" }))
        .merge(handle.router::<AppState>())
        .with_state(AppState);
    let (status, content_type, _) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, PROMETHEUS_CONTENT_TYPE);
    assert_eq!(get(&app, "/mcp").await.0, StatusCode::OK);
}
