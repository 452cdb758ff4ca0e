//! [`MetricsConfig`]: the `[metrics]` section of the stack's configuration.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// The default buckets of `mcp_tool_call_duration_seconds`, from 1 ms to 60 s.
pub const DEFAULT_DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How the metrics layer records and reports tool calls.
///
/// ```toml
/// [metrics]
/// enabled = true
/// duration_buckets = [0.005, 0.05, 0.5, 5.0, 60.0]   # seconds
/// stats_window = "60s"       # p50/p95/p99 in /stats cover this much history
/// process_metrics = true     # RSS, CPU, open fds in /metrics
/// upkeep_interval = "5s"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether the stack records tool calls at all. Default `true`. (The handle's
    /// endpoints still answer when it is off: `/health` reports the other layers.)
    pub enabled: bool,
    /// The upper bounds, in seconds, of the `mcp_tool_call_duration_seconds` buckets
    /// (`+Inf` is implied). Default: 1 ms to 60 s, 15 buckets.
    pub duration_buckets: Vec<f64>,
    /// How much history the latency quantiles and the windowed success rate of `/stats`
    /// cover (kept in 12 slots; the oldest drops out whole). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub stats_window: Duration,
    /// Whether `/metrics` includes the process figures (resident and virtual memory, CPU
    /// seconds, open and max file descriptors, threads, start time; read at scrape time,
    /// with the crate's `process` feature). Default `true`.
    pub process_metrics: bool,
    /// How often recorded durations are folded into the histograms when nobody scrapes
    /// (a scrape does it too). Bounds the memory held by unscraped samples. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub upkeep_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            duration_buckets: DEFAULT_DURATION_BUCKETS.to_vec(),
            stats_window: Duration::from_secs(60),
            process_metrics: true,
            upkeep_interval: Duration::from_secs(5),
        }
    }
}

/// A [`MetricsConfig`] value that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMetricsConfig {
    /// The offending key, like `duration_buckets`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InvalidMetricsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metrics.{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidMetricsConfig {}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidMetricsConfig {
    InvalidMetricsConfig {
        field,
        reason: reason.into(),
    }
}

impl MetricsConfig {
    /// Turns recording on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the duration buckets (seconds, increasing).
    pub fn with_duration_buckets(mut self, buckets: impl Into<Vec<f64>>) -> Self {
        self.duration_buckets = buckets.into();
        self
    }

    /// Sets the window of the `/stats` latency quantiles.
    pub fn with_stats_window(mut self, window: Duration) -> Self {
        self.stats_window = window;
        self
    }

    /// Includes the process figures in `/metrics` or not.
    pub fn with_process_metrics(mut self, on: bool) -> Self {
        self.process_metrics = on;
        self
    }

    /// Sets how often unscraped durations are folded into the histograms.
    pub fn with_upkeep_interval(mut self, interval: Duration) -> Self {
        self.upkeep_interval = interval;
        self
    }

    /// Checks every value; `MetricsHandle::new` calls it.
    pub fn validate(&self) -> Result<(), InvalidMetricsConfig> {
        let buckets = &self.duration_buckets;
        if buckets.is_empty() || buckets.len() > 64 {
            return Err(invalid(
                "duration_buckets",
                format!("needs 1 to 64 bucket bounds, got {}", buckets.len()),
            ));
        }
        if let Some(bad) = buckets.iter().find(|b| !b.is_finite() || **b <= 0.0) {
            return Err(invalid(
                "duration_buckets",
                format!("bounds are seconds greater than zero (+Inf is implied), got {bad}"),
            ));
        }
        if let Some(pair) = buckets.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(invalid(
                "duration_buckets",
                format!(
                    "bounds must increase strictly, got {} then {}",
                    pair[0], pair[1]
                ),
            ));
        }
        if self.stats_window < Duration::from_secs(1)
            || self.stats_window > Duration::from_secs(86_400)
        {
            return Err(invalid(
                "stats_window",
                format!(
                    "must be between 1s and 24h, got {}",
                    humantime_serde::re::humantime::format_duration(self.stats_window)
                ),
            ));
        }
        if self.upkeep_interval < Duration::from_millis(100) {
            return Err(invalid(
                "upkeep_interval",
                format!(
                    "must be at least 100ms, got {}",
                    humantime_serde::re::humantime::format_duration(self.upkeep_interval)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_toml() {
        MetricsConfig::default().validate().unwrap();
        let cfg: MetricsConfig = toml::from_str(
            r#"
            duration_buckets = [0.01, 0.1, 1.0]
            stats_window = "5m"
            process_metrics = false
            "#,
        )
        .unwrap();
        assert_eq!(cfg.duration_buckets, vec![0.01, 0.1, 1.0]);
        assert_eq!(cfg.stats_window, Duration::from_secs(300));
        assert!(cfg.enabled && !cfg.process_metrics);
        assert_eq!(cfg.upkeep_interval, Duration::from_secs(5));
        cfg.validate().unwrap();
        let round_trip: MetricsConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(round_trip, cfg);
    }

    #[test]
    fn misspelt_keys_are_errors() {
        assert!(toml::from_str::<MetricsConfig>("stats_windw = \"1m\"").is_err());
    }

    #[test]
    fn bad_values_are_rejected_with_the_field() {
        let cases = [
            (
                MetricsConfig::default().with_duration_buckets(vec![]),
                "duration_buckets",
            ),
            (
                MetricsConfig::default().with_duration_buckets(vec![0.1, 0.1]),
                "duration_buckets",
            ),
            (
                MetricsConfig::default().with_duration_buckets(vec![0.5, 0.1]),
                "duration_buckets",
            ),
            (
                MetricsConfig::default().with_duration_buckets(vec![0.0, 1.0]),
                "duration_buckets",
            ),
            (
                MetricsConfig::default().with_duration_buckets(vec![1.0, f64::INFINITY]),
                "duration_buckets",
            ),
            (
                MetricsConfig::default().with_stats_window(Duration::from_millis(500)),
                "stats_window",
            ),
            (
                MetricsConfig::default().with_stats_window(Duration::from_secs(90_000)),
                "stats_window",
            ),
            (
                MetricsConfig::default().with_upkeep_interval(Duration::ZERO),
                "upkeep_interval",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.field, field, "{cfg:?}");
            assert!(err.to_string().starts_with(&format!("metrics.{field}: ")));
        }
    }
}
