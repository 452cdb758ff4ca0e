//! What the handle reports to metrics and `/stats`.

mod support;

use futures_util::future::join_all;
use mcp_tower_concurrency::{ConcurrencyLayer, Scope};
use mcp_tower_core::{FigureKind, LayerReport, testing::ScriptedService};
use support::*;
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn figures_and_snapshot_show_global_and_per_tool_state() {
    within(async {
        let r = resolver(&[("search", 1)]);
        let inner = ScriptedService::held();
        let layer = ConcurrencyLayer::new(config(4, 1)).unwrap();
        let handle = layer.handle();
        let service = layer.layer(inner.clone());
        let tasks: Vec<_> = (0..2)
            .map(|n| tokio::spawn(service.clone().oneshot(call(&r, "search", n))))
            .collect();
        inner.wait_for_calls(1).await;
        until("one queued", || handle.queued() == 1).await;
        let busy = service.clone().oneshot(call(&r, "search", 2)).await;
        assert!(busy.is_err());

        assert_eq!(handle.layer(), "concurrency");
        assert_eq!(handle.healthy(), None);
        let mut figures = Vec::new();
        handle.figures(&mut figures);
        let find = |name: &str, labels: &[(&str, &str)]| {
            figures
                .iter()
                .find(|f| {
                    f.name == name
                        && labels
                            .iter()
                            .all(|(k, v)| f.labels.iter().any(|(fk, fv)| fk == k && fv == v))
                })
                .unwrap_or_else(|| panic!("no {name} {labels:?} in {figures:#?}"))
        };
        assert_eq!(find("mcp_concurrency_limit", &[]).value, 4.0);
        assert_eq!(find("mcp_concurrency_in_flight", &[]).value, 1.0);
        assert_eq!(
            find("mcp_concurrency_in_flight", &[]).kind,
            FigureKind::Gauge
        );
        assert_eq!(
            find("mcp_concurrency_tool_limit", &[("tool", "search")]).value,
            1.0
        );
        assert_eq!(
            find("mcp_concurrency_tool_queued", &[("tool", "search")]).value,
            1.0
        );
        let rejected = find(
            "mcp_concurrency_tool_rejected_total",
            &[("tool", "search"), ("reason", "busy")],
        );
        assert_eq!(rejected.value, 1.0);
        assert_eq!(rejected.kind, FigureKind::Counter);
        assert_eq!(
            find("mcp_concurrency_rejected_total", &[("reason", "busy")]).value,
            0.0,
            "the tool's queue turned it away, not the global one"
        );
        for f in &figures {
            assert!(f.name.starts_with("mcp_concurrency_"), "{}", f.name);
            assert!(!f.help.is_empty());
            assert_eq!(
                f.kind == FigureKind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }

        let snapshot = handle.snapshot();
        assert_eq!(snapshot["global"]["limit"], 4);
        assert_eq!(snapshot["global"]["in_flight"], 1);
        assert_eq!(snapshot["tools"]["search"]["queued"], 1);
        assert_eq!(snapshot["tools"]["search"]["busy"], 1);
        assert_eq!(snapshot["config"]["max_queued"], 1);
        assert_eq!(snapshot["config"]["queue_timeout"], "5s");

        inner.release_all();
        for t in join_all(tasks).await {
            t.unwrap().unwrap();
        }
        let stats = handle.stats(Scope::Tool("search")).unwrap();
        assert_eq!((stats.peak, stats.queued_peak, stats.waited), (1, 1, 1));
        assert_eq!(stats.rejected(), 1);
        assert_eq!(handle.rejected(), 1);
        assert_eq!(handle.peak(), 1);
    })
    .await;
}

#[test]
fn an_invalid_config_is_refused_at_build_time() {
    let err = ConcurrencyLayer::new(config(0, 10)).unwrap_err();
    assert_eq!(err.field, "max_in_flight");
}

#[test]
fn handle_debug_is_readable() {
    let layer = ConcurrencyLayer::new(config(3, 10)).unwrap();
    let text = format!("{:?}", layer.handle());
    assert!(text.contains("ConcurrencyHandle"), "{text}");
    assert!(text.contains("limit: Some(3)"), "{text}");
}

/// What `McpStack` needs: a `Send + Sync + Clone` service with a `Send` future, and handles
/// it can share.
#[test]
fn the_service_its_future_and_the_handle_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<mcp_tower_concurrency::ConcurrencyLimit<ScriptedService>>();
    send::<mcp_tower_concurrency::ResponseFuture<ScriptedService>>();
    send_sync::<mcp_tower_concurrency::ConcurrencyHandle>();
    send_sync::<ConcurrencyLayer>();
    let _: Box<dyn LayerReport> = Box::new(ConcurrencyLayer::new(config(1, 1)).unwrap().handle());
}
