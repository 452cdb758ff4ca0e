//! [`StackConfig`]: the whole stack's configuration, from a TOML file and `MCP_TOWER_*`
//! environment variables.

use std::{collections::BTreeMap, fmt, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use mcp_tower_cache::CacheConfig;
use mcp_tower_concurrency::ConcurrencyConfig;
use mcp_tower_core::{
    Anonymous, KeySecret, KeySecretTooShort, PolicyDefaults, ToolOverride, ToolPattern,
};
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
/// [tools."github__*"] # a glob: `*` any run of characters, `?` one character
/// cache_ttl = "10m"
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
///
/// A key of `[tools]` may be a glob ([`ToolPattern`]); each field of a tool's policy comes
/// from the most specific override that sets it, an exact name first (see
/// [`PolicyTable`](mcp_tower_core::PolicyTable)). Invalid keys are rejected:
///
/// ```
/// use mcp_tower::StackConfig;
///
/// let err = StackConfig::from_toml_str("[tools.\"github__**\"]\ncache = true").unwrap_err();
/// assert!(err.to_string().starts_with(
///     "invalid mcp-tower configuration: tools.\"github__**\": `**` is not supported"
/// ));
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
    /// Per-tool overrides, by tool name or glob ([`ToolPattern`]: `*` matches any run of
    /// characters, `?` one; `github__*`). When several match a tool, each field comes from
    /// the most specific that sets it: the exact name, then the glob with the most literal
    /// characters, the most `?`, the fewest `*`, then the lexicographically smaller.
    /// Globs apply only to tools the stack knows (listed, looked up, or named exactly);
    /// they make no tool known. Environment variable names cannot hold `*` or `?`: write
    /// globs in the file or in code (`McpStackBuilder::tool_override`).
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
///
/// No error prints the value of a secret (`key_secret`, a token, an upstream's `env` or
/// `headers` values; see [`is_secret_key`]): it names the key and what is wrong, such as
/// "found a string of 12 characters, expected …". TOML syntax errors give the line and
/// column and the problem, without the source line they would otherwise quote.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A source could not be read or parsed; the message names the key and the source.
    /// The error is redacted ([`redact_figment_error`]) however it is built, `From`
    /// included.
    #[error("invalid mcp-tower configuration: {0}")]
    Load(Box<figment::Error>),
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

impl From<Box<figment::Error>> for ConfigError {
    fn from(error: Box<figment::Error>) -> Self {
        ConfigError::Load(Box::new(redact_figment_error(*error)))
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        ConfigError::Load(Box::new(redact_figment_error(error)))
    }
}

/// Whether the configuration key at `path` (its segments, like `["upstreams", "github",
/// "headers", "Authorization"]`) holds a secret, whose value no error may print.
///
/// A key is secret when one of its segments names a secret (`key_secret`, or a name
/// containing `secret`, `token`, `password`, `passphrase`, `credential`, `api_key`,
/// `apikey` or `private_key`, unless it ends in `_file` or `_path`: those hold where a
/// secret is, not the secret), or is `env` or `headers` (an upstream's environment and
/// HTTP headers, which often carry tokens). Erring towards secret costs only a less
/// specific message.
pub fn is_secret_key<S: AsRef<str>>(path: &[S]) -> bool {
    const SECRET_WORDS: [&str; 8] = [
        "secret",
        "token",
        "password",
        "passphrase",
        "credential",
        "api_key",
        "apikey",
        "private_key",
    ];
    path.iter().any(|segment| {
        let segment = segment.as_ref().to_ascii_lowercase();
        if segment == "env" || segment == "headers" {
            return true;
        }
        if segment.ends_with("_file") || segment.ends_with("_path") {
            return false;
        }
        SECRET_WORDS.iter().any(|word| segment.contains(word))
    })
}

/// `error` without any configured value that could be a secret:
///
/// - at a secret key ([`is_secret_key`]), the value a deserializer found is replaced by what
///   it was (`a string of 12 characters`, `an integer`), and a free-form message by
///   `invalid value (not shown: the key holds a secret)`;
/// - everywhere, the quoted source lines of a TOML syntax error are dropped (the error
///   keeps its line, column and reason): a syntax error has no key, and the line it quotes
///   could be a secret's.
///
/// The key, the source (file name, environment variable) and the expected type stay.
/// [`StackConfig`]'s loaders apply it to every error; use it for any other figment-loaded
/// configuration that holds secrets.
pub fn redact_figment_error(error: figment::Error) -> figment::Error {
    use figment::error::Kind;

    let redacted: Vec<figment::Error> = error
        .into_iter()
        .map(|mut e| {
            let secret = is_secret_key(&e.path);
            e.kind = match e.kind {
                Kind::Message(_) if secret => Kind::Message(SECRET_NOT_SHOWN.into()),
                Kind::Message(message) => Kind::Message(without_quoted_source(&message)),
                Kind::InvalidType(actual, expected) if secret => {
                    Kind::InvalidType(described(actual), expected)
                }
                Kind::InvalidValue(actual, expected) if secret => {
                    Kind::InvalidValue(described(actual), expected)
                }
                Kind::UnknownVariant(_, expected) if secret => Kind::Message(format!(
                    "unknown variant (not shown: the key holds a secret), expected one of {}",
                    expected.join(", ")
                )),
                Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) if secret => {
                    Kind::Message("integer out of range".into())
                }
                Kind::Unsupported(actual) if secret => Kind::Unsupported(described(actual)),
                Kind::UnsupportedKey(actual, expected) if secret => {
                    Kind::UnsupportedKey(described(actual), expected)
                }
                other => other,
            };
            e
        })
        .collect();
    // `into_iter` yields the newest error first; `chain` puts its receiver behind.
    redacted
        .into_iter()
        .rev()
        .reduce(|older, newer| older.chain(newer))
        .unwrap_or_else(|| figment::Error::from("invalid configuration"))
}

/// What a found value was, without the value.
fn described(actual: figment::error::Actual) -> figment::error::Actual {
    use figment::error::Actual;

    let what = match actual {
        Actual::Str(s) => format!("a string of {} characters", s.chars().count()),
        Actual::Bytes(b) => format!("{} bytes", b.len()),
        Actual::Bool(_) => "a boolean".to_owned(),
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer".to_owned(),
        Actual::Float(_) => "a float".to_owned(),
        Actual::Char(_) => "a character".to_owned(),
        Actual::Other(_) => "a value (not shown: the key holds a secret)".to_owned(),
        // The rest name a kind of value (a map, a sequence…), not a value.
        other => return other,
    };
    Actual::Other(what)
}

/// The message of a free-form error at a secret key.
const SECRET_NOT_SHOWN: &str = "invalid value (not shown: the key holds a secret)";

/// A TOML syntax error's message without the source lines it quotes: toml prints them as
/// `N | text` lines under `  |`, with a `^` marker line.
fn without_quoted_source(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .map(str::trim_end)
        .filter(|line| {
            let trimmed = line.trim_start();
            let gutter = trimmed.trim_start_matches(|c: char| c.is_ascii_digit());
            !(trimmed.is_empty() || gutter.trim_start().starts_with('|'))
        })
        .collect();
    kept.join(": ")
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
        Self::extract(Self::with_env(figment)?)
    }

    /// Parses a TOML document (without environment overrides) and validates it.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(StackConfig::default())).merge(Toml::string(toml)),
        )
    }

    /// The defaults with `MCP_TOWER_*` environment overrides.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::extract(Self::with_env(Figment::from(Serialized::defaults(
            StackConfig::default(),
        )))?)
    }

    /// `figment` with the `MCP_TOWER_*` environment overrides merged in.
    ///
    /// `MCP_TOWER_KEY_SECRET` is read as it is written: figment parses other variables'
    /// values (`123` is an integer, `true` a boolean, `{…}` a map), which would turn a
    /// secret made of digits into an integer and fail to load.
    fn with_env(figment: Figment) -> Result<Figment, ConfigError> {
        let figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                .ignore(&["key_secret"]),
        );
        let name = format!("{ENV_PREFIX}KEY_SECRET");
        let Some((_, value)) = std::env::vars_os().find(|(key, _)| {
            key.to_str()
                .is_some_and(|key| key.trim().eq_ignore_ascii_case(&name))
        }) else {
            return Ok(figment);
        };
        let value = value.into_string().map_err(|_| ConfigError::Invalid {
            field: name,
            reason: "is not valid UTF-8".into(),
        })?;
        Ok(figment.merge(Serialized::default("key_secret", value)))
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let cfg: StackConfig = figment.extract().map_err(ConfigError::from)?;
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
            let key = tool_key(name);
            if let Err(e) = ToolPattern::parse(name) {
                return Err(invalid(&key, &e.to_string()));
            }
            if o.cache_ttl.is_some_and(|t| t.is_zero()) {
                return Err(invalid(
                    &format!("{key}.cache_ttl"),
                    "must be greater than zero (set `cache = false` to turn caching off)",
                ));
            }
            if o.max_concurrency == Some(0) {
                return Err(invalid(
                    &format!("{key}.max_concurrency"),
                    "must be at least 1",
                ));
            }
            if o.timeout.is_some_and(|t| t.is_zero()) {
                return Err(invalid(
                    &format!("{key}.timeout"),
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

/// The TOML path of the override `name`: `tools.weather`, or `tools."github__*"` when the
/// name is not a bare TOML key.
fn tool_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        format!("tools.{name}")
    } else {
        format!("tools.{name:?}")
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
    fn glob_keys_parse_from_toml() {
        let cfg = StackConfig::from_toml_str(
            r#"
            [tools."*"]
            retry = false
            [tools."github__*"]
            cache_ttl = "5m"
            [tools."fs.read_*"]
            scope = "public"
            [tools."get_?"]
            max_concurrency = 2
            [tools."fs.read"]
            timeout = "2s"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.tools["*"].retry, Some(false));
        assert_eq!(
            cfg.tools["github__*"].cache_ttl,
            Some(Duration::from_secs(300))
        );
        // A dot inside a quoted key is part of the name, not a level.
        assert_eq!(cfg.tools["fs.read_*"].scope, Some(CacheScope::Public));
        assert_eq!(cfg.tools["fs.read"].timeout, Some(Duration::from_secs(2)));
        assert_eq!(cfg.tools["get_?"].max_concurrency, Some(2));
        assert_eq!(cfg.tools.len(), 5);
    }

    #[test]
    fn invalid_tool_keys_are_rejected_with_the_key_named() {
        let cases = [
            (
                "[tools.\"github__**\"]\ncache = true",
                "tools.\"github__**\": `**` is not supported: one `*` already matches any \
                 run of characters (`__` included)",
            ),
            (
                "[tools.\"\"]\ncache = true",
                "tools.\"\": a tool name or pattern must not be empty",
            ),
            (
                "[tools.\"tool[0-9]\"]\ncache = true",
                "tools.\"tool[0-9]\": `[` is reserved: patterns have only `*` (any run of \
                 characters) and `?` (one character), no character classes, alternatives or \
                 escapes",
            ),
            (
                "[tools.\"{a,b}\"]\ncache = true",
                "tools.\"{a,b}\": `{` is reserved",
            ),
            // A valid glob's fields are checked like an exact name's.
            (
                "[tools.\"github__*\"]\nmax_concurrency = 0",
                "tools.\"github__*\".max_concurrency: must be at least 1",
            ),
            (
                "[tools.\"fs.read\"]\ncache_ttl = \"0s\"",
                "tools.\"fs.read\".cache_ttl: must be greater than zero",
            ),
        ];
        for (toml, expected) in cases {
            let err = StackConfig::from_toml_str(toml).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid mcp-tower configuration: {expected}")),
                "{toml:?}: {msg}"
            );
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn globs_come_from_the_file_and_exact_names_also_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "tower.toml",
                r#"
                [tools."github__*"]
                cache_ttl = "5m"
                [tools."weath?r"]
                timeout = "2s"
                "#,
            )?;
            jail.set_env("MCP_TOWER_TOOLS__WEATHER__SCOPE", "public");
            let cfg =
                StackConfig::load(Some(Path::new("tower.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                cfg.tools["github__*"].cache_ttl,
                Some(Duration::from_secs(300))
            );
            assert_eq!(cfg.tools["weath?r"].timeout, Some(Duration::from_secs(2)));
            assert_eq!(cfg.tools["weather"].scope, Some(CacheScope::Public));
            // `__` separates levels: a gateway's `github__search` cannot be named in a
            // variable, and the attempt is an error naming the key, not a silent no-op.
            jail.set_env("MCP_TOWER_TOOLS__GITHUB__SEARCH__CACHE_TTL", "1m");
            let err = StackConfig::load(Some(Path::new("tower.toml")))
                .err()
                .ok_or("a nested tools key was accepted")?
                .to_string();
            if !err.contains("unknown field: found `search`")
                || !err.contains("TOOLS.GITHUB.SEARCH")
            {
                return Err(format!("the key is not named: {err}").into());
            }
            Ok(())
        });
    }

    /// A secret-looking value: no error may contain it.
    const SECRET: &str = "sk-live-7c1e9a";

    #[test]
    fn a_malformed_key_secret_in_toml_is_named_not_printed() {
        let cases = [
            // The wrong type: serde would print the value.
            (
                format!("key_secret = {}", "1234567"),
                "1234567",
                "an integer",
            ),
            (
                format!("key_secret = 1.5e{}", 7),
                "15000000",
                "found a float, expected a string",
            ),
            // Too short: the length, not the bytes.
            (
                format!("key_secret = \"{SECRET}\""),
                SECRET,
                "key_secret: a key secret must be at least 16 bytes long, got 14",
            ),
            // A TOML syntax error on the secret's line: toml would quote the line.
            (
                format!("key_secret = \"{SECRET}"),
                SECRET,
                "TOML parse error at line 1",
            ),
            (
                format!("[policy]\nscope = \"public\"\nkey_secret = '{SECRET}' x"),
                SECRET,
                "line 3",
            ),
        ];
        for (toml, value, expected) in cases {
            let err = StackConfig::from_toml_str(&toml).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains(value),
                "{toml:?} printed its value: {shown}"
            );
            assert!(err.to_string().contains(expected), "{toml:?}: {err}");
        }
        let err = StackConfig::from_toml_str(&format!("key_secret = {}", 1234567)).unwrap_err();
        assert!(
            err.to_string().contains("key_secret\""),
            "names the key: {err}"
        );
        // A value that is not a secret is still shown: it helps and hides nothing.
        let err = StackConfig::from_toml_str("[policy]\nscope = \"everyone\"").unwrap_err();
        assert!(err.to_string().contains("everyone"), "{err}");
    }

    #[test]
    fn secret_keys() {
        for secret in [
            &["key_secret"][..],
            &["upstreams", "github", "headers", "Authorization"],
            &["upstreams", "local", "env", "LOG_LEVEL"],
            &["http", "admin_token"],
            &["hosts", "db", "password"],
            &["hosts", "db", "identity_passphrase"],
            &["API_KEY"],
        ] {
            assert!(is_secret_key(secret), "{secret:?}");
        }
        for plain in [
            &["policy", "cache_ttl"][..],
            &["http", "tokens_file"],
            &["hosts", "db", "private_key_path"],
            &["tools", "weather", "scope"],
            &[],
        ] {
            assert!(!is_secret_key(plain), "{plain:?}");
        }
    }

    #[test]
    fn quoted_toml_source_lines_are_dropped() {
        let message = "TOML parse error at line 12, column 3\n   |\n12 | token = \"abc\n   |   ^\ninvalid basic string\n";
        assert_eq!(
            without_quoted_source(message),
            "TOML parse error at line 12, column 3: invalid basic string"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn a_malformed_key_secret_in_the_environment_is_named_not_printed() {
        figment::Jail::expect_with(|jail| {
            // figment would parse `true`, `1234567` and `{…}` (and print them in its
            // error); the secret is read as written, and only its length is reported.
            for value in [SECRET, "[sk-live-7c1e9a", "{sk=1}", "true", "1234567"] {
                jail.set_env("MCP_TOWER_KEY_SECRET", value);
                let err = match StackConfig::from_env() {
                    Ok(cfg) => return Err(format!("{value:?} was accepted: {cfg:?}").into()),
                    Err(err) => err,
                };
                let shown = format!("{err} {err:?}");
                if shown.contains(value) {
                    return Err(format!("{value:?} was printed: {shown}").into());
                }
                let expected = format!(
                    "key_secret: a key secret must be at least 16 bytes long, got {}",
                    value.len()
                );
                if !err.to_string().contains(&expected) {
                    return Err(format!("{value:?}: {err} (expected {expected:?})").into());
                }
            }
            // A long enough secret made only of digits is a secret like any other.
            jail.set_env("MCP_TOWER_KEY_SECRET", "12345678901234567890");
            let cfg = StackConfig::from_env().map_err(|e| e.to_string())?;
            assert!(cfg.key_secret().map_err(|e| e.to_string())?.is_some());
            // In a file, the same secret overridden by the environment.
            jail.create_file("tower.toml", "key_secret = \"from-the-file-0123456789\"")?;
            let cfg =
                StackConfig::load(Some(Path::new("tower.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.key_secret.as_deref(), Some("12345678901234567890"));
            Ok(())
        });
    }

    /// Any figment-loaded configuration with secrets (a gateway's upstreams) gets the same
    /// redaction, from TOML and from the environment.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn redaction_covers_upstream_env_and_headers() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // read through Debug only
        struct Upstream {
            env: BTreeMap<String, String>,
            headers: BTreeMap<String, String>,
            timeout: Option<u64>,
        }
        figment::Jail::expect_with(|jail| {
            // (TOML, an environment variable, the value that must not show, what must)
            let cases = [
                ("env = { TOKEN = 90909090 }", None, "90909090", "env.TOKEN"),
                (
                    "",
                    Some(("GW_HEADERS__AUTHORIZATION", "4242424242")),
                    "4242424242",
                    "HEADERS.AUTHORIZATION",
                ),
                ("timeout = \"soon\"", None, "(nothing secret)", "soon"),
            ];
            for (toml, env, leak, named) in cases {
                jail.clear_env();
                if let Some((name, value)) = env {
                    jail.set_env(name, value);
                }
                let err = Figment::new()
                    .merge(Toml::string(toml))
                    .merge(Env::prefixed("GW_").split("__"))
                    .extract::<Upstream>()
                    .map_err(|e| redact_figment_error(e).to_string())
                    .err()
                    .ok_or("the configuration is invalid")?;
                if err.contains(leak) {
                    return Err(format!("{leak} was printed: {err}").into());
                }
                if !err.contains(named) {
                    return Err(format!("{named} is not named: {err}").into());
                }
            }
            Ok(())
        });
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
