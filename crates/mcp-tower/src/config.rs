//! [`StackConfig`]: the whole stack's configuration, from a TOML file and `MCP_TOWER_*`
//! environment variables.

use std::{collections::BTreeMap, fmt, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use mcp_tower_cache::CacheConfig;
use mcp_tower_concurrency::ConcurrencyConfig;
use mcp_tower_core::{Anonymous, KeySecret, KeySecretTooShort, PolicyDefaults, ToolOverride};
use mcp_tower_dedup::DedupConfig;
use mcp_tower_metrics::MetricsConfig;
use mcp_tower_retry::{RetryConfig, TimeoutConfig};
use serde::{Deserialize, Serialize};

use crate::HttpConfig;

/// The prefix of environment variables that override the configuration.
pub const ENV_PREFIX: &str = "MCP_TOWER_";

/// Everything `McpStack` needs, as one serde structure.
///
/// Sources are layered: the defaults, then a TOML file, then environment variables named
/// `MCP_TOWER_<SECTION>__<KEY>` (a double underscore separates levels; names are
/// lower-cased). Durations are written like `30s`, `5m`, `1500ms`.
///
/// ```toml
/// # key_secret = "at least 16 bytes, shared by every replica"
/// # anonymous = "shared"   # every caller without a verified identity is one principal
///
/// [policy]           # defaults for every tool
/// cache_ttl = "60s"
/// scope = "private"
/// timeout = "30s"
///
/// [tools.weather]    # per-tool overrides
/// cache_ttl = "5m"
/// scope = "public"
///
/// [tools.append_note]
/// max_concurrency = 1
///
/// [metrics]          # one section per layer; `enabled = false` removes the layer
/// stats_window = "60s"
/// [cache]
/// max_bytes = 67108864
/// max_entry_bytes = 1048576
/// [dedup]
/// enabled = true
/// [concurrency]
/// max_in_flight = 64
/// max_queued = 256
/// queue_timeout = "5s"
/// [retry]
/// max_attempts = 3
/// base_delay = "100ms"
/// [timeout]          # the duration itself is per tool: `policy.timeout`, `tools.<name>.timeout`
/// enabled = true
/// ```
///
/// ```
/// use mcp_tower::StackConfig;
/// use std::time::Duration;
///
/// let cfg = StackConfig::from_toml_str(r#"
///     [tools.weather]
///     cache_ttl = "5m"
/// "#).unwrap();
/// assert_eq!(cfg.tools["weather"].cache_ttl, Some(Duration::from_secs(300)));
/// ```
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackConfig {
    /// The secret keying call keys and principal digests. Unset: random per process.
    /// Set it (≥ 16 bytes) when several processes must compute the same keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
    /// How callers without a verified identity (an HTTP request with no authenticated
    /// name, no `Authorization` and no live legacy session) use *private* tools: `"bypass"`
    /// (the default: not cached, not deduplicated, counted as `bypassed_anonymous`) or
    /// `"shared"` (every anonymous caller is one principal). Public tools are unaffected;
    /// on stdio the one client is always identified.
    pub anonymous: Anonymous,
    /// Defaults applied to every tool.
    pub policy: PolicyDefaults,
    /// Per-tool overrides, by tool name.
    pub tools: BTreeMap<String, ToolOverride>,
    /// The metrics layer (outermost) and the `/metrics`, `/health`, `/stats` endpoints.
    pub metrics: MetricsConfig,
    /// The tool-result cache.
    pub cache: CacheConfig,
    /// Single-flight deduplication of identical concurrent calls.
    pub dedup: DedupConfig,
    /// Global and per-tool concurrency limits with bounded queueing.
    pub concurrency: ConcurrencyConfig,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// The per-attempt timeout (its duration is per tool, from the policy).
    pub timeout: TimeoutConfig,
    /// The HTTP edge (`[http]`): bind address, Host/Origin checks, auth, sessions, admin
    /// endpoints. Used by [`crate::http`] (feature `http`); ignored on stdio.
    pub http: HttpConfig,
}

impl fmt::Debug for StackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackConfig")
            .field(
                "key_secret",
                &self.key_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("anonymous", &self.anonymous)
            .field("policy", &self.policy)
            .field("tools", &self.tools)
            .field("metrics", &self.metrics)
            .field("cache", &self.cache)
            .field("dedup", &self.dedup)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("http", &self.http)
            .finish()
    }
}

/// A configuration that could not be loaded or does not make sense.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A source could not be read or parsed; the message names the key and the source.
    #[error("invalid mcp-tower configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// The key secret is too short.
    #[error("invalid mcp-tower configuration: key_secret: {0}")]
    KeySecret(#[from] KeySecretTooShort),
    /// A value is out of range.
    #[error("invalid mcp-tower configuration: {field}: {reason}")]
    Invalid {
        /// The offending key, like `tools.weather.max_concurrency`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StackConfig {
    /// Loads the defaults, then `path` (if given; it must exist), then `MCP_TOWER_*`
    /// environment variables, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(StackConfig::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    field: "config file".into(),
                    reason: format!("{} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::extract(figment.merge(Self::env()))
    }

    /// Parses a TOML document (without environment overrides) and validates it.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(StackConfig::default())).merge(Toml::string(toml)),
        )
    }

    /// The defaults with `MCP_TOWER_*` environment overrides.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(StackConfig::default())).merge(Self::env()),
        )
    }

    fn env() -> Env {
        Env::prefixed(ENV_PREFIX).split("__")
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let cfg: StackConfig = figment.extract().map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; called by every constructor.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.key_secret()?;
        if self.policy.cache_ttl.is_zero() {
            return Err(invalid("policy.cache_ttl", "must be greater than zero"));
        }
        if self.policy.timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid(
                "policy.timeout",
                "must be greater than zero (set `[timeout] enabled = false` for none)",
            ));
        }
        for (name, o) in &self.tools {
            if o.cache_ttl.is_some_and(|t| t.is_zero()) {
                return Err(invalid(
                    &format!("tools.{name}.cache_ttl"),
                    "must be greater than zero (set `cache = false` to turn caching off)",
                ));
            }
            if o.max_concurrency == Some(0) {
                return Err(invalid(
                    &format!("tools.{name}.max_concurrency"),
                    "must be at least 1",
                ));
            }
            if o.timeout.is_some_and(|t| t.is_zero()) {
                return Err(invalid(
                    &format!("tools.{name}.timeout"),
                    "must be greater than zero",
                ));
            }
        }
        let section = |name: &str, field: &str, reason: String| ConfigError::Invalid {
            field: format!("{name}.{field}"),
            reason,
        };
        self.metrics
            .validate()
            .map_err(|e| section("metrics", e.field, e.reason))?;
        self.cache
            .validate()
            .map_err(|e| section("cache", e.field, e.reason))?;
        self.concurrency
            .validate()
            .map_err(|e| section("concurrency", e.field, e.reason))?;
        self.retry
            .validate()
            .map_err(|e| section("retry", e.field, e.reason))?;
        self.timeout
            .validate()
            .map_err(|e| section("timeout", e.field, e.reason))?;
        self.http
            .validate()
            .map_err(|(field, reason)| section("http", field, reason))?;
        Ok(())
    }

    /// The configured key secret, or `None` for the process's random one.
    pub fn key_secret(&self) -> Result<Option<KeySecret>, ConfigError> {
        match &self.key_secret {
            Some(s) => Ok(Some(KeySecret::from_bytes(s.as_bytes())?)),
            None => Ok(None),
        }
    }
}

fn invalid(field: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_tower_core::CacheScope;
    use std::time::Duration;

    #[test]
    fn defaults_are_valid() {
        let cfg = StackConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.policy.cache_ttl, Duration::from_secs(60));
        assert_eq!(cfg.policy.timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn toml_sections_and_durations() {
        let cfg = StackConfig::from_toml_str(
            r#"
            key_secret = "0123456789abcdef0123"
            [policy]
            cache_ttl = "2m"
            scope = "public"
            [tools.weather]
            cache_ttl = "5m"
            [tools.append_note]
            max_concurrency = 1
            timeout = "1500ms"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.policy.cache_ttl, Duration::from_secs(120));
        assert_eq!(cfg.policy.scope, CacheScope::Public);
        assert_eq!(
            cfg.tools["weather"].cache_ttl,
            Some(Duration::from_secs(300))
        );
        assert_eq!(cfg.tools["append_note"].max_concurrency, Some(1));
        assert_eq!(
            cfg.tools["append_note"].timeout,
            Some(Duration::from_millis(1500))
        );
        assert!(cfg.key_secret().unwrap().is_some());
        assert!(
            !format!("{cfg:?}").contains("0123456789"),
            "the secret is redacted"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = StackConfig::from_toml_str("[policy]\ncache_ttl = \"soon\"").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cache_ttl"), "{msg}");

        let err = StackConfig::from_toml_str("[tools.x]\nmax_concurrency = 0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid mcp-tower configuration: tools.x.max_concurrency: must be at least 1"
        );

        let err = StackConfig::from_toml_str("[polcy]\ncache_ttl = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("polcy"), "{err}");

        let err = StackConfig::from_toml_str("key_secret = \"short\"").unwrap_err();
        assert!(err.to_string().contains("at least 16 bytes"), "{err}");

        let err = StackConfig::load(Some(Path::new("/no/such/mcp-tower.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "tower.toml",
                r#"
                [policy]
                cache_ttl = "2m"
                [tools.weather]
                cache_ttl = "5m"
                "#,
            )?;
            jail.set_env("MCP_TOWER_POLICY__CACHE_TTL", "10s");
            jail.set_env("MCP_TOWER_TOOLS__WEATHER__SCOPE", "public");
            jail.set_env("MCP_TOWER_TOOLS__ECHO__CACHE", "false");
            let cfg =
                StackConfig::load(Some(Path::new("tower.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.policy.cache_ttl, Duration::from_secs(10));
            assert_eq!(
                cfg.tools["weather"].cache_ttl,
                Some(Duration::from_secs(300))
            );
            assert_eq!(cfg.tools["weather"].scope, Some(CacheScope::Public));
            assert_eq!(cfg.tools["echo"].cache, Some(false));
            Ok(())
        });
    }
}
