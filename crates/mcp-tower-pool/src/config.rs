//! [`PoolConfig`]: the pool's limits and timers, as the `[pool]` section of a configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a [`Pool`](crate::Pool) sizes, checks and reaps its connections. Validated once, when
/// the pool is built ([`PoolConfig::validate`]).
///
/// ```toml
/// [pool]
/// min = 1                  # connections kept open per key, even when idle
/// max = 4                  # connections per key at most
/// max_total = 256          # connections in the whole pool at most
/// target_in_flight = 32    # open another connection (up to max) when the least busy one has this many calls
/// idle_timeout = "5m"      # close connections above `min` unused this long
/// connect_timeout = "30s"
/// connect_backoff = "1s"   # after a failed connect, fail fast this long before trying again
/// health_interval = "60s"  # ping every open connection this often ("0s": no pings)
/// ping_timeout = "10s"
/// drain_timeout = "10s"    # on shutdown, wait this long for calls in flight
/// ```
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_pool::PoolConfig;
///
/// let cfg: PoolConfig = toml::from_str("max = 4\nidle_timeout = \"5m\"").unwrap();
/// assert_eq!(cfg.max, 4);
/// assert_eq!(cfg.idle_timeout, Duration::from_secs(300));
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool connections. `false`: every [`get`](crate::Pool::get) opens a fresh connection
    /// that is closed when its caller is done (the "no pool" baseline). Default `true`.
    pub enabled: bool,
    /// Connections kept open per key even when idle (reconnected in the background when
    /// one fails). Applies to keys declared with
    /// [`PoolBuilder::with_key`](crate::PoolBuilder::with_key) from the start, and to any
    /// other key once it has been used. Default `1`.
    pub min: usize,
    /// Connections per key at most. Default `1`: one multiplexed connection per key.
    pub max: usize,
    /// Connections in the whole pool at most (open or connecting). When it is reached, an
    /// idle connection of another key is closed to make room; if there is none, the `get`
    /// fails. Default `256`.
    pub max_total: usize,
    /// Calls in flight on the least busy connection of a key at which the pool opens one
    /// more connection to it (up to `max`). Below it, calls share the open connections
    /// (least in flight first). Default `32`.
    pub target_in_flight: usize,
    /// Close connections above `min` that nobody used for this long. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Give up a connect after this long. Default `30s` (a stdio upstream started with
    /// `npx` may download its package first).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// After a key's connect fails, `get`s for it fail at once with that error for this
    /// long rather than start another connect (no connect storm against a dead upstream).
    /// Default `1s`; `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub connect_backoff: Duration,
    /// Ping every open connection this often; a failed or timed-out ping marks it broken
    /// and the next `get` replaces it. Default `60s`; `0s` turns pings off.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// A ping that takes longer than this fails. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// On [`shutdown`](crate::Pool::shutdown), wait this long for calls in flight before
    /// closing their connections. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min: 1,
            max: 1,
            max_total: 256,
            target_in_flight: 32,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(30),
            connect_backoff: Duration::from_secs(1),
            health_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl PoolConfig {
    /// Opens up to `max` connections per key.
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Keeps `min` connections per key open.
    pub fn with_min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// Limits the whole pool to `max_total` connections.
    pub fn with_max_total(mut self, max_total: usize) -> Self {
        self.max_total = max_total;
        self
    }

    /// Opens another connection when the least busy one carries `target` calls.
    pub fn with_target_in_flight(mut self, target: usize) -> Self {
        self.target_in_flight = target;
        self
    }

    /// Closes connections above `min` idle for `timeout`.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Gives up a connect after `timeout`.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Fails fast for `backoff` after a failed connect.
    pub fn with_connect_backoff(mut self, backoff: Duration) -> Self {
        self.connect_backoff = backoff;
        self
    }

    /// Pings every connection every `interval` (`Duration::ZERO`: never).
    pub fn with_health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// Fails a ping after `timeout`.
    pub fn with_ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Waits `timeout` for calls in flight on shutdown.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Turns pooling on or off (off: a fresh connection per `get`).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Checks that the values make sense together. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max == 0 {
            return Err("pool.max: must be at least 1".into());
        }
        if self.min > self.max {
            return Err(format!(
                "pool.min ({}) must not exceed pool.max ({})",
                self.min, self.max
            ));
        }
        if self.max_total == 0 {
            return Err("pool.max_total: must be at least 1".into());
        }
        if self.target_in_flight == 0 {
            return Err("pool.target_in_flight: must be at least 1".into());
        }
        for (field, value) in [
            ("idle_timeout", self.idle_timeout),
            ("connect_timeout", self.connect_timeout),
            ("ping_timeout", self.ping_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("pool.{field}: must be greater than zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_issue_and_are_valid() {
        let cfg = PoolConfig::default();
        cfg.validate().unwrap();
        assert!(cfg.enabled);
        assert_eq!((cfg.min, cfg.max), (1, 1));
        assert_eq!(cfg.idle_timeout, Duration::from_secs(300));
        assert_eq!(cfg.health_interval, Duration::from_secs(60));
    }

    #[test]
    fn toml_with_durations() {
        let cfg: PoolConfig = toml::from_str(
            r#"
            enabled = true
            min = 2
            max = 10
            max_total = 50
            idle_timeout = "300s"
            connect_timeout = "5s"
            health_interval = "1m"
            ping_timeout = "1500ms"
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!((cfg.min, cfg.max, cfg.max_total), (2, 10, 50));
        assert_eq!(cfg.ping_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.health_interval, Duration::from_secs(60));
        let back: PoolConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = PoolConfig::default().with_min(3).with_max(2).validate();
        assert_eq!(
            err.unwrap_err(),
            "pool.min (3) must not exceed pool.max (2)"
        );
        assert!(
            PoolConfig::default()
                .with_max(0)
                .validate()
                .unwrap_err()
                .contains("pool.max")
        );
        assert!(
            PoolConfig::default()
                .with_connect_timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
                .contains("connect_timeout")
        );
        let no_pings: PoolConfig = toml::from_str("health_interval = \"0s\"").unwrap();
        assert_eq!(no_pings.health_interval, Duration::ZERO);
        no_pings.validate().unwrap();
        assert!(toml::from_str::<PoolConfig>("maxx = 3").is_err());
        assert!(toml::from_str::<PoolConfig>("idle_timeout = \"soon\"").is_err());
    }
}
