//! The `/metrics`, `/health` and `/stats` endpoints, as an axum [`Router`] (feature `http`).

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::MetricsHandle;

/// The path of the Prometheus text exposition.
pub const METRICS_PATH: &str = "/metrics";
/// The path of the health report.
pub const HEALTH_PATH: &str = "/health";
/// The path of the per-tool statistics.
pub const STATS_PATH: &str = "/stats";

/// The content type of the Prometheus text format, version 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl MetricsHandle {
    /// An axum router with `GET /metrics` (Prometheus text), `GET /health` (JSON; 503 when
    /// a layer reports itself unhealthy) and `GET /stats` (JSON), to merge beside the MCP
    /// endpoint: `mcp_router.merge(handle.router())`.
    ///
    /// The router has no state of its own, so it merges into a router with any state.
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let (metrics, health, stats) = (self.clone(), self.clone(), self.clone());
        Router::new()
            .route(
                METRICS_PATH,
                get(move || {
                    let body = metrics.render();
                    async move { text_response(body) }
                }),
            )
            .route(
                HEALTH_PATH,
                get(move || {
                    let report = health.health();
                    async move {
                        let status = if report.is_healthy() {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        json_response(status, &report)
                    }
                }),
            )
            .route(
                STATS_PATH,
                get(move || {
                    let snapshot = stats.stats();
                    async move { json_response(StatusCode::OK, &snapshot) }
                }),
            )
    }
}

fn text_response(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not serialize the response: {e}"),
        )
            .into_response(),
    }
}
