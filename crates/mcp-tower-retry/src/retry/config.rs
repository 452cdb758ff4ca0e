//! [`RetryConfig`]: the `[retry]` section of the stack's configuration.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// How the retry layer retries: attempts, backoff, overall deadline and retry budget.
///
/// Which tools are retried is not configured here: it is each tool's
/// [`ToolPolicy::retry`](mcp_tower_core::ToolPolicy) (read-only or idempotent by annotation,
/// or a per-tool override), and `retry_on_tool_error` for `isError` results.
///
/// ```toml
/// [retry]
/// max_attempts = 3        # the first attempt included
/// base_delay = "100ms"    # the first retry waits up to this long
/// multiplier = 2.0        # each later retry's ceiling grows by this factor
/// max_delay = "5s"        # no wait is longer than this
/// deadline = "60s"        # no retry starts this long after the call arrived
///
/// [retry.budget]          # retries are limited to a share of recent calls
/// window = "10s"
/// min_per_sec = 10
/// ratio = 0.2
/// ```
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_retry::RetryConfig;
///
/// let config = RetryConfig::default()
///     .with_max_attempts(4)
///     .with_base_delay(Duration::from_millis(50));
/// assert!(config.validate().is_ok());
/// assert!(RetryConfig::default().with_max_attempts(0).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Whether the layer retries at all. Off: every call passes through untouched (the
    /// facade leaves the layer out). Default `true`.
    pub enabled: bool,
    /// Attempts per call, the first one included (1 = never retry). Default `3`.
    pub max_attempts: u32,
    /// The ceiling of the first retry's wait. Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// How much the ceiling grows per retry (≥ 1). Default `2.0`.
    pub multiplier: f64,
    /// The largest ceiling. Default `5s`.
    ///
    /// Also the longest retry hint waited for: a transient error whose
    /// `data.retryAfterMs` (the pool's `connect_backoff`, say) is longer than this stops the
    /// retries at once (`stoppedBy = "deadline"`).
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// No retry starts later than this after the call entered the stack
    /// (`ToolCall::received_at`); a retry whose wait (the backoff, or a longer retry hint)
    /// would end after it is not made: the call stops at once with `stoppedBy = "deadline"`.
    /// Attempts themselves are bounded by the per-attempt timeout. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// The retry budget, shared by every call through the layer.
    pub budget: BudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
            budget: BudgetConfig::default(),
        }
    }
}

impl RetryConfig {
    /// Turns the layer on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the attempts per call, the first one included.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the ceiling of the first retry's wait.
    pub fn with_base_delay(mut self, base_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self
    }

    /// Sets the growth of the ceiling per retry.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the largest ceiling.
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets the overall deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the retry budget.
    pub fn with_budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = budget;
        self
    }

    /// Checks every value; [`RetryLayer::new`](crate::RetryLayer::new) calls it.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_attempts == 0 {
            return Err(InvalidConfig::new(
                "max_attempts",
                "must be at least 1 (the first attempt)",
            ));
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(InvalidConfig::new(
                "multiplier",
                format!("must be a finite number ≥ 1, got {}", self.multiplier),
            ));
        }
        if self.base_delay > self.max_delay {
            return Err(InvalidConfig::new(
                "base_delay",
                format!(
                    "{:?} is longer than max_delay ({:?})",
                    self.base_delay, self.max_delay
                ),
            ));
        }
        if self.deadline.is_zero() {
            return Err(InvalidConfig::new("deadline", "must be longer than zero"));
        }
        self.budget.validate()
    }
}

/// The retry budget: over any `window`, retries may be at most `ratio` × the calls that
/// arrived in it, plus `min_per_sec` × `window` so that a quiet server can still retry.
///
/// This is the semantics of tower's `TpsBudget` (and finagle's `RetryBudget`): during an
/// outage, retries add at most `ratio` to the load instead of multiplying it by
/// `max_attempts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// How long a call counts towards the budget, between `1s` and `60s`. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Retries allowed per second of `window` whatever the traffic, at most 1000.
    /// Default `10`.
    pub min_per_sec: u32,
    /// Retries allowed per call, `0` or between `0.01` and `100`. Default `0.2` (one
    /// retry per five calls).
    pub ratio: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_per_sec: 10,
            ratio: 0.2,
        }
    }
}

impl BudgetConfig {
    /// The largest `min_per_sec`.
    pub const MAX_MIN_PER_SEC: u32 = 1000;

    /// Sets the window.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets the floor of retries per second.
    pub fn with_min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// Sets the retries allowed per call.
    pub fn with_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(60) {
            return Err(InvalidConfig::new(
                "budget.window",
                format!("must be between 1s and 60s, got {:?}", self.window),
            ));
        }
        if self.min_per_sec > Self::MAX_MIN_PER_SEC {
            return Err(InvalidConfig::new(
                "budget.min_per_sec",
                format!(
                    "must be at most {}, got {}",
                    Self::MAX_MIN_PER_SEC,
                    self.min_per_sec
                ),
            ));
        }
        let ratio = self.ratio;
        if !ratio.is_finite() || !(ratio == 0.0 || (0.01..=100.0).contains(&ratio)) {
            return Err(InvalidConfig::new(
                "budget.ratio",
                format!("must be 0 or between 0.01 and 100, got {ratio}"),
            ));
        }
        Ok(())
    }
}

/// A configuration value out of range, found when a layer is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    /// The key, relative to the layer's section (`max_attempts`, `budget.ratio`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidConfig {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = RetryConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.enabled);
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.base_delay, Duration::from_millis(100));
        assert_eq!(c.max_delay, Duration::from_secs(5));
        assert_eq!(c.deadline, Duration::from_secs(60));
        assert_eq!(c.budget, BudgetConfig::default());
    }

    #[test]
    fn parses_from_toml_with_humantime_durations() {
        let c: RetryConfig = toml::from_str(
            r#"
            max_attempts = 5
            base_delay = "250ms"
            multiplier = 3.0
            max_delay = "2s"
            deadline = "30s"
            [budget]
            window = "20s"
            min_per_sec = 1
            ratio = 0.1
            "#,
        )
        .unwrap();
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.base_delay, Duration::from_millis(250));
        assert_eq!(c.max_delay, Duration::from_secs(2));
        assert_eq!(c.budget.window, Duration::from_secs(20));
        assert_eq!(c.budget.ratio, 0.1);
        assert!(c.validate().is_ok());
        // Missing keys take their defaults.
        let partial: RetryConfig = toml::from_str("max_attempts = 2").unwrap();
        assert_eq!(partial.base_delay, RetryConfig::default().base_delay);
        // Round trip.
        let back: RetryConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn misspelt_keys_are_errors() {
        assert!(toml::from_str::<RetryConfig>("max_attempt = 2").is_err());
        assert!(toml::from_str::<RetryConfig>("[budget]\nratoi = 0.5").is_err());
        assert!(toml::from_str::<RetryConfig>("base_delay = \"soon\"").is_err());
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            (RetryConfig::default().with_max_attempts(0), "max_attempts"),
            (RetryConfig::default().with_multiplier(0.5), "multiplier"),
            (
                RetryConfig::default().with_multiplier(f64::NAN),
                "multiplier",
            ),
            (
                RetryConfig::default().with_base_delay(Duration::from_secs(10)),
                "base_delay",
            ),
            (
                RetryConfig::default().with_deadline(Duration::ZERO),
                "deadline",
            ),
            (
                RetryConfig::default()
                    .with_budget(BudgetConfig::default().with_window(Duration::from_millis(10))),
                "budget.window",
            ),
            (
                RetryConfig::default()
                    .with_budget(BudgetConfig::default().with_window(Duration::from_secs(61))),
                "budget.window",
            ),
            (
                RetryConfig::default()
                    .with_budget(BudgetConfig::default().with_min_per_sec(1_000_000)),
                "budget.min_per_sec",
            ),
            (
                RetryConfig::default().with_budget(BudgetConfig::default().with_ratio(-1.0)),
                "budget.ratio",
            ),
            (
                RetryConfig::default().with_budget(BudgetConfig::default().with_ratio(0.001)),
                "budget.ratio",
            ),
            (
                RetryConfig::default()
                    .with_budget(BudgetConfig::default().with_ratio(f64::INFINITY)),
                "budget.ratio",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field, "{config:?}");
            assert!(err.to_string().starts_with(field));
        }
        let zero_ratio = BudgetConfig::default().with_ratio(0.0);
        assert!(zero_ratio.validate().is_ok(), "0 means: the floor only");
    }
}
