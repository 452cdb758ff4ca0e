//! The gateway: one MCP server in front of N upstream MCP servers (stdio child processes or
//! streamable HTTP), with the whole mcp-tower stack in front of their tools — what MCPO and
//! MCPStore do in Python, in one binary.
//!
//! - [`GatewayConfig`]: `gateway.toml` — `listen`, the `[stack]` (`StackConfig`), the
//!   `[pool]` (`PoolConfig`) and one `[upstreams.<name>]` section per upstream.
//! - [`Gateway`]: the aggregating `ServerHandler`, a transparent proxy for every other
//!   method: the upstreams' tools and prompts under namespaced names (`everything__echo`) or
//!   as they are (`namespace = false`), tool annotations kept so the stack's policies
//!   (cache, dedup, retry) apply; resources, templates, completion, logging and
//!   subscriptions forwarded to their owner; capabilities the union of the upstreams'. See
//!   `docs/gateway.md`.
//! - [`GatewayApp::build`]: the pool of upstream sessions ([`PoolService`]), the stack in
//!   front of it, and the layered server, ready for any rmcp transport.
//!
//! `tools/call` never reaches [`Gateway`]: the layered server sends it through the stack to
//! the `PoolService`, which forwards it upstream (cancellation, progress, and the upstream's
//! sampling, elicitation and roots requests relayed to the caller).

use std::{collections::BTreeMap, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use mcp_tower::{ENV_PREFIX, LayeredServer, McpStack, StackConfig, StackService};
use mcp_tower_pool::{PoolConfig, PoolService, UpstreamConfig};
use serde::{Deserialize, Serialize};

mod forwarding;
mod handler;
mod lists;

pub use forwarding::{FORWARDED_METHODS, ForwardConfig};
pub use handler::{CopyStats, Gateway, RefusedName, union_capabilities};

/// The address the gateway listens on when the configuration names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How long a copy of an upstream list is kept at least when the configuration says nothing.
pub const DEFAULT_MIN_LIST_INTERVAL: Duration = Duration::from_secs(1);

/// The prefix of the environment variables that override `[forward]`
/// (`MCP_GATEWAY_FORWARD_TIMEOUT=10s`).
pub const FORWARD_ENV_PREFIX: &str = "MCP_GATEWAY_FORWARD_";

/// `gateway.toml`.
///
/// ```toml
/// listen = "127.0.0.1:8080"
///
/// [stack.policy]              # the mcp-tower stack (StackConfig), MCP_TOWER_* env applies
/// timeout = "30s"
///
/// [stack.tools.everything__echo]
/// cache_ttl = "5m"
///
/// [pool]                      # the upstream session pool (PoolConfig)
/// idle_timeout = "5m"
/// health_interval = "60s"
///
/// [forward]                   # bounds on what the gateway forwards itself (ForwardConfig)
/// timeout = "30s"
/// max_in_flight = 64
///
/// [upstreams.everything]      # one section per upstream (UpstreamConfig)
/// command = "npx"
/// args = ["-y", "@modelcontextprotocol/server-everything"]
///
/// [upstreams.search]
/// url = "http://127.0.0.1:9000/mcp"
/// required = false
/// namespace = false           # its tools and prompts keep their own names
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where to serve streamable HTTP (MCP at `/mcp`). Default `127.0.0.1:8080`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The mcp-tower stack in front of the upstreams' tools.
    pub stack: StackConfig,
    /// The pool of upstream sessions.
    pub pool: PoolConfig,
    /// The upstream MCP servers, by name (their tools and prompts are exposed as
    /// `<name>__<tool>`, or as they are with `namespace = false`).
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// The least time the gateway keeps a copy of an upstream's list before it asks again,
    /// even when the upstream's `ttlMs` is shorter (or absent): a burst of `tools/list`
    /// calls makes at most one upstream request per interval (per principal for a private
    /// list). A list-changed notification from the upstream ends a copy at once. Default
    /// `1s`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub min_list_interval: Option<Duration>,
    /// The bounds on what the gateway forwards itself (every method but `tools/call`):
    /// per-method timeouts and a concurrency limit with a bounded queue.
    pub forward: ForwardConfig,
}

impl GatewayConfig {
    /// Reads `path` (it must exist); `MCP_TOWER_*` environment variables then override the
    /// `[stack]` section, as they do for any mcp-tower server. Validates everything.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            anyhow::bail!(
                "the gateway configuration {} does not exist",
                path.display()
            );
        }
        let mut config: GatewayConfig = Figment::from(Serialized::defaults(Self::default()))
            .merge(Toml::file_exact(path))
            .extract()
            .map_err(mcp_tower::redact_figment_error)
            .with_context(|| format!("reading {}", path.display()))?;
        config.stack = Figment::from(Serialized::defaults(&config.stack))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(mcp_tower::redact_figment_error)
            .context("applying MCP_TOWER_* environment overrides")?;
        config.forward = Figment::from(Serialized::defaults(&config.forward))
            .merge(Env::prefixed(FORWARD_ENV_PREFIX))
            .extract()
            .map_err(mcp_tower::redact_figment_error)
            .with_context(|| format!("applying {FORWARD_ENV_PREFIX}* environment overrides"))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (no environment overrides) and validates it.
    pub fn from_toml_str(toml: &str) -> anyhow::Result<Self> {
        let config: GatewayConfig = Figment::from(Serialized::defaults(Self::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(mcp_tower::redact_figment_error)
            .context("reading the gateway configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.stack.validate()?;
        self.pool
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid gateway configuration: {e}"))?;
        if self.upstreams.values().all(|u| !u.enabled) {
            anyhow::bail!("invalid gateway configuration: no enabled `[upstreams.<name>]` section");
        }
        for (name, upstream) in &self.upstreams {
            upstream
                .validate(name)
                .map_err(|e| anyhow::anyhow!("invalid gateway configuration: {e}"))?;
        }
        self.check_namespaces()?;
        self.forward
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid gateway configuration: {e}"))?;
        Ok(())
    }

    /// Refuses two namespaced upstreams whose names clash statically: `a` and `a_` (the
    /// names `a___x` of `a_`'s tool `x` and of `a`'s tool `_x` are one name). Clashes an
    /// unprefixed upstream's list makes are refused when it is listed (see
    /// [`Gateway::refused_names`]).
    fn check_namespaces(&self) -> anyhow::Result<()> {
        use mcp_tower_pool::NAMESPACE_SEPARATOR;
        let namespaced: Vec<&str> = self
            .upstreams
            .iter()
            .filter(|(_, u)| u.enabled && u.namespace)
            .map(|(name, _)| name.as_str())
            .collect();
        for a in &namespaced {
            for b in &namespaced {
                if a != b
                    && format!("{b}{NAMESPACE_SEPARATOR}")
                        .starts_with(&format!("{a}{NAMESPACE_SEPARATOR}"))
                {
                    anyhow::bail!(
                        "invalid gateway configuration: upstreams `{a}` and `{b}` are both namespaced, and `{b}{NAMESPACE_SEPARATOR}<tool>` is also `{a}{NAMESPACE_SEPARATOR}_<tool>`: rename one, or set `namespace = false` on one"
                    );
                }
            }
        }
        Ok(())
    }

    /// The least time a copy of an upstream list is kept (`min_list_interval`, default 1 s).
    pub fn min_list_interval(&self) -> Duration {
        self.min_list_interval.unwrap_or(DEFAULT_MIN_LIST_INTERVAL)
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
        })
    }
}

/// A gateway ready to serve: the layered server (stack + pool + aggregating handler) and
/// the pieces behind it.
#[derive(Debug, Clone)]
pub struct GatewayApp {
    /// The rmcp server to serve on any transport (`serve::mcp_router` for HTTP).
    pub server: LayeredServer<Gateway, StackService>,
    /// The aggregating handler.
    pub gateway: Gateway,
    /// The innermost service and its pool (shut it down on exit: child processes are
    /// reaped).
    pub service: PoolService,
    /// The task relaying upstream notifications to downstream sessions.
    relay: tokio::task::AbortHandle,
}

impl GatewayApp {
    /// Starts the pool (declared upstreams connect at once), lists the upstreams' tools,
    /// feeds them to the stack's policy table and builds the layered server. Must run
    /// inside a Tokio runtime.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let service = PoolService::from_config(&config.upstreams, config.pool.clone())
            .context("starting the upstream pool")?;
        let min_list_interval = config.min_list_interval();
        let built = McpStack::from_config(config.stack)?.service(service.clone());
        let gateway = Gateway::new(&service, Arc::clone(&built.resolver), min_list_interval)
            .with_forwarding(config.forward);
        let tools = gateway.refresh_tools().await;
        tracing::info!(tools = tools.len(), "listed the upstreams' tools");
        built.resolver.policies().observe_tools(tools.iter());
        // The pool's figures and health join the stack's layers in /metrics, /stats and
        // /health (503 while a required upstream is down).
        if let Some(metrics) = &built.handles.metrics {
            metrics.add_report(Arc::new(service.handle()));
            // What the relays could not attribute (refused, dropped) and what a client
            // session that fell behind lost: `mcp_relay_*`.
            metrics.add_report(Arc::new(service.pool().connector().relay_report()));
        }
        let server = built.serve(gateway.clone());
        let relay = tokio::spawn(gateway.clone().relay_notifications()).abort_handle();
        Ok(Self {
            server,
            gateway,
            service,
            relay,
        })
    }

    /// Shuts the pool down: calls in flight get the pool's `drain_timeout`, then every
    /// upstream session is closed (child processes reaped).
    pub async fn shutdown(&self) {
        self.relay.abort();
        self.service.pool().shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_valid() {
        let config =
            GatewayConfig::from_toml_str(include_str!("../gateway.toml")).expect("gateway.toml");
        assert!(config.upstreams.contains_key("everything"));
        assert!(config.upstreams.contains_key("demo"));
        assert_eq!(
            config.forward.timeout_of("resources/read"),
            Duration::from_secs(60)
        );
        assert_eq!(
            config.forward.timeout_of("prompts/get"),
            Duration::from_secs(30)
        );
        let per_principal = GatewayConfig::from_toml_str(
            "[upstreams.mailbox]\nurl = \"http://127.0.0.1:1/mcp\"\nidentity = \"per-principal\"",
        )
        .unwrap();
        assert_eq!(
            per_principal.upstreams["mailbox"].identity,
            mcp_tower_pool::Identity::PerPrincipal
        );
        let err =
            GatewayConfig::from_toml_str("[upstreams.a]\ncommand = \"x\"\nidentity = \"per-user\"")
                .unwrap_err();
        assert!(format!("{err:#}").contains("per-principal"), "{err:#}");
        let err = GatewayConfig::from_toml_str(
            "[upstreams.a]\ncommand = \"x\"\n[forward.timeouts]\n\"tools/call\" = \"1s\"",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("forward.timeouts"), "{err:#}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn forward_environment_variables_override_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gateway.toml",
                "[upstreams.a]\ncommand = \"x\"\n[forward]\ntimeout = \"20s\"\nmax_queued = 8",
            )?;
            jail.set_env("MCP_GATEWAY_FORWARD_TIMEOUT", "10s");
            jail.set_env("MCP_GATEWAY_FORWARD_MAX_IN_FLIGHT", "3");
            let config =
                GatewayConfig::load(Path::new("gateway.toml")).map_err(|e| format!("{e:#}"))?;
            assert_eq!(config.forward.timeout, Duration::from_secs(10));
            assert_eq!(config.forward.max_in_flight, 3);
            assert_eq!(config.forward.max_queued, 8, "the file's, not overridden");
            jail.set_env("MCP_GATEWAY_FORWARD_MAX_IN_FLIGHT", "0");
            let err = GatewayConfig::load(Path::new("gateway.toml")).unwrap_err();
            assert!(
                format!("{err:#}").contains("forward.max_in_flight"),
                "{err:#}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(deprecated)] // logging: deprecated by SEP-2577, still a capability to forward
    fn capabilities_are_the_union_of_the_upstreams() {
        use rmcp::model::ServerCapabilities;
        let tools = ServerCapabilities::builder().enable_tools().build();
        let prompts = ServerCapabilities::builder()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_logging()
            .build();
        let merged = union_capabilities([&tools, &prompts]);
        assert!(merged.tools.is_some() && merged.prompts.is_some() && merged.logging.is_some());
        assert_eq!(
            merged.prompts.and_then(|p| p.list_changed),
            Some(true),
            "a sub-capability one upstream declares is kept"
        );
        assert!(merged.resources.is_none(), "nothing no upstream declares");
        assert!(merged.completions.is_none());
        assert_eq!(union_capabilities([]), ServerCapabilities::default());
    }

    /// An upstream's `env` and `headers` hold credentials: a malformed one is named, its
    /// value never printed (from a string or from a file).
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn a_malformed_secret_is_named_but_never_printed() {
        for (toml, key) in [
            (
                "[upstreams.a]\ncommand = \"x\"\nenv = { API_TOKEN = 98765432123 }",
                "API_TOKEN",
            ),
            (
                "[upstreams.a]\nurl = \"http://127.0.0.1:1/mcp\"\nheaders = { Authorization = 98765432123 }",
                "Authorization",
            ),
        ] {
            let err = format!("{:#}", GatewayConfig::from_toml_str(toml).unwrap_err());
            assert!(err.contains(key), "the key is named: {err}");
            assert!(!err.contains("98765432123"), "the value is printed: {err}");
            figment::Jail::expect_with(|jail| {
                jail.create_file("gateway.toml", toml)?;
                let err = format!(
                    "{:#}",
                    GatewayConfig::load(Path::new("gateway.toml")).unwrap_err()
                );
                assert!(!err.contains("98765432123"), "the value is printed: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn bad_configurations_name_the_problem() {
        let err = GatewayConfig::from_toml_str("").unwrap_err();
        assert!(format!("{err:#}").contains("no enabled"), "{err:#}");
        let err = GatewayConfig::from_toml_str("[upstreams.a]\nurl = \"ftp://x\"").unwrap_err();
        assert!(format!("{err:#}").contains("upstreams.a.url"), "{err:#}");
        let err = GatewayConfig::from_toml_str("[upstreams.a]\ncommand = \"x\"\n[pool]\nmax = 0")
            .unwrap_err();
        assert!(format!("{err:#}").contains("pool.max"), "{err:#}");
        let err = GatewayConfig::from_toml_str(
            "[upstreams.beta]\ncommand = \"x\"\n[upstreams.beta_]\ncommand = \"y\"",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("upstreams `beta` and `beta_`"),
            "{err:#}"
        );
        GatewayConfig::from_toml_str(
            "[upstreams.beta]\ncommand = \"x\"\n[upstreams.beta_]\ncommand = \"y\"\nnamespace = false",
        )
        .expect("one of them unprefixed: no static clash");
        let err =
            GatewayConfig::from_toml_str("[upstreams.a]\ncommand = \"x\"\n[stak]\n").unwrap_err();
        assert!(format!("{err:#}").contains("stak"), "{err:#}");
        let ok = GatewayConfig::from_toml_str(
            "listen = \"127.0.0.1:9999\"\n[upstreams.a]\ncommand = \"x\"\n[stack.policy]\ntimeout = \"5s\"",
        )
        .unwrap();
        assert_eq!(ok.listen().port(), 9999);
        assert_eq!(
            ok.stack.policy.timeout,
            Some(std::time::Duration::from_secs(5))
        );
    }
}
