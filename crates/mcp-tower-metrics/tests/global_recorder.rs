//! `install_global_recorder`: the application's own `metrics` calls appear in `/metrics`.
//! (Its own test binary: a global recorder is process-wide.)

mod common;

use common::{parse, value};
use mcp_tower_metrics::{GlobalRecorderAlreadySet, MetricsConfig, MetricsHandle};

#[test]
fn the_applications_own_metrics_appear_beside_ours() {
    let handle = MetricsHandle::new(MetricsConfig::default()).unwrap();
    handle.install_global_recorder().unwrap();
    metrics::counter!("app_jobs_total", "queue" => "mail").increment(3);
    metrics::gauge!("app_queue_depth").set(12.0);

    let scrape = parse(&handle.render());
    assert_eq!(
        value(&scrape, "app_jobs_total", &[("queue", "mail")]),
        Some(3.0)
    );
    assert_eq!(value(&scrape, "app_queue_depth", &[]), Some(12.0));

    let other = MetricsHandle::new(MetricsConfig::default()).unwrap();
    assert_eq!(
        other.install_global_recorder(),
        Err(GlobalRecorderAlreadySet)
    );
    assert_eq!(
        value(
            &parse(&other.render()),
            "app_jobs_total",
            &[("queue", "mail")]
        ),
        None
    );
}
