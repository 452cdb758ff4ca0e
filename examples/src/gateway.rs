//! The gateway: one MCP server in front of N upstream MCP servers (stdio child processes or
//! streamable HTTP), with the whole mcp-tower stack in front of their tools — what MCPO and
//! MCPStore do in Python, in one binary.
//!
//! - [`GatewayConfig`]: `gateway.toml` — `listen`, the `[stack]` (`StackConfig`), the
//!   `[pool]` (`PoolConfig`) and one `[upstreams.<name>]` section per upstream.
//! - [`Gateway`]: the aggregating `ServerHandler`: `tools/list` merges the upstreams' tools
//!   under namespaced names (`everything__echo`) with their annotations kept, so the stack's
//!   policies (cache, dedup, retry) apply to them; `get_tool` finds one; `get_info` presents
//!   the gateway.
//! - [`GatewayApp::build`]: the pool of upstream sessions ([`PoolService`]), the stack in
//!   front of it, and the layered server, ready for any rmcp transport.
//!
//! `tools/call` never reaches [`Gateway`]: the layered server sends it through the stack to
//! the `PoolService`, which forwards it upstream (cancellation and progress included).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use mcp_tower::{ENV_PREFIX, LayeredServer, McpStack, StackConfig, StackService};
use mcp_tower_pool::{PoolConfig, PoolHandle, PoolService, UpstreamConfig};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
        Tool,
    },
    service::RequestContext,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The address the gateway listens on when the configuration names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

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
/// [upstreams.everything]      # one section per upstream (UpstreamConfig)
/// command = "npx"
/// args = ["-y", "@modelcontextprotocol/server-everything"]
///
/// [upstreams.search]
/// url = "http://127.0.0.1:9000/mcp"
/// required = false
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
    /// The upstream MCP servers, by name (their tools are exposed as `<name>__<tool>`).
    pub upstreams: BTreeMap<String, UpstreamConfig>,
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
            .with_context(|| format!("reading {}", path.display()))?;
        config.stack = Figment::from(Serialized::defaults(&config.stack))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .context("applying MCP_TOWER_* environment overrides")?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (no environment overrides) and validates it.
    pub fn from_toml_str(toml: &str) -> anyhow::Result<Self> {
        let config: GatewayConfig = Figment::from(Serialized::defaults(Self::default()))
            .merge(Toml::string(toml))
            .extract()
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
        Ok(())
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

#[derive(Debug, Default)]
struct Catalog {
    tools: Arc<Vec<Tool>>,
    by_name: HashMap<String, Tool>,
    /// Upstreams whose tools could not be listed last time (listed again next time).
    missing: Vec<Arc<str>>,
}

/// The aggregating handler: presents the upstreams' tools as one server's.
///
/// Its tool list is built by [`Gateway::refresh_tools`] (at start-up) and rebuilt when it
/// is stale: an upstream opened a new session or sent `notifications/tools/list_changed`,
/// or an upstream could not be listed last time.
#[derive(Clone, Debug)]
pub struct Gateway {
    service: PoolService,
    catalog: Arc<Mutex<Catalog>>,
    changes: Arc<Mutex<watch::Receiver<u64>>>,
    list_timeout: Duration,
}

impl Gateway {
    /// A gateway for the upstreams of `service`.
    pub fn new(service: &PoolService) -> Self {
        let changes = service.pool().connector().tools_changed();
        Self {
            list_timeout: service.pool().config().connect_timeout,
            service: service.clone(),
            catalog: Arc::new(Mutex::new(Catalog::default())),
            changes: Arc::new(Mutex::new(changes)),
        }
    }

    /// Lists every upstream's tools (in parallel) and rebuilds the catalog: each tool named
    /// `<upstream>__<tool>` with its annotations, schemas and metadata kept. An upstream
    /// that cannot be reached is left out (and tried again by the next `tools/list`).
    pub async fn refresh_tools(&self) -> Arc<Vec<Tool>> {
        // Changes seen from here on make the new catalog stale again.
        let _seen = *lock(&self.changes).borrow_and_update();
        let pool = self.service.pool();
        let router = self.service.router();
        let upstreams = pool.connector().upstreams();
        let listings = futures_util::future::join_all(upstreams.iter().map(|name| async move {
            let listed = tokio::time::timeout(self.list_timeout, async {
                let session = pool.get(name).await?;
                let tools = session.peer().list_all_tools().await?;
                anyhow::Ok(tools)
            })
            .await;
            match listed {
                Ok(Ok(tools)) => Ok(tools),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.list_timeout)),
            }
        }))
        .await;
        let mut catalog = Catalog::default();
        let mut tools = Vec::new();
        for (name, listing) in upstreams.iter().zip(listings) {
            match listing {
                Ok(upstream_tools) => {
                    for tool in upstream_tools {
                        let Some(exposed) = router.exposed_name(name, &tool.name) else {
                            continue;
                        };
                        let mut tool = tool;
                        tool.name = exposed.into();
                        tools.push(tool);
                    }
                }
                Err(error) => {
                    tracing::warn!(upstream = %name, %error, "could not list the upstream's tools");
                    catalog.missing.push(Arc::clone(name));
                }
            }
        }
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        catalog.by_name = tools
            .iter()
            .map(|t| (t.name.to_string(), t.clone()))
            .collect();
        catalog.tools = Arc::new(tools);
        let tools = Arc::clone(&catalog.tools);
        *lock(&self.catalog) = catalog;
        tools
    }

    /// The current catalog (without refreshing it).
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        Arc::clone(&lock(&self.catalog).tools)
    }

    /// The pool's handle (for `/stats` and `/health`).
    pub fn pool_handle(&self) -> PoolHandle {
        self.service.handle()
    }

    fn is_stale(&self) -> bool {
        let changed = lock(&self.changes).has_changed().unwrap_or(false);
        changed || !lock(&self.catalog).missing.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        let upstreams = self.service.pool().connector().upstreams();
        let names: Vec<&str> = upstreams.iter().map(|u| u.as_ref()).collect();
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-tower-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(format!(
                "A gateway to the MCP servers {}: their tools are named `<server>__<tool>`.",
                names.join(", ")
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = if self.is_stale() {
            self.refresh_tools().await
        } else {
            self.tools()
        };
        Ok(ListToolsResult::with_all_items(Vec::clone(&tools)))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        lock(&self.catalog).by_name.get(name).cloned()
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
}

impl GatewayApp {
    /// Starts the pool (declared upstreams connect at once), lists the upstreams' tools,
    /// feeds them to the stack's policy table and builds the layered server. Must run
    /// inside a Tokio runtime.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let service = PoolService::from_config(&config.upstreams, config.pool.clone())
            .context("starting the upstream pool")?;
        let gateway = Gateway::new(&service);
        let tools = gateway.refresh_tools().await;
        tracing::info!(tools = tools.len(), "listed the upstreams' tools");
        let built = McpStack::from_config(config.stack)?.service(service.clone());
        built.resolver.policies().observe_tools(tools.iter());
        // The pool's figures and health join the stack's layers in /metrics, /stats and
        // /health (503 while a required upstream is down).
        if let Some(metrics) = &built.handles.metrics {
            metrics.add_report(Arc::new(service.handle()));
        }
        let server = built.serve(gateway.clone());
        Ok(Self {
            server,
            gateway,
            service,
        })
    }

    /// Shuts the pool down: calls in flight get the pool's `drain_timeout`, then every
    /// upstream session is closed (child processes reaped).
    pub async fn shutdown(&self) {
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
        let err =
            GatewayConfig::from_toml_str("[upstreams.a]\ncommand = \"x\"\n[stak]\n").unwrap_err();
        assert!(format!("{err:#}").contains("stak"), "{err:#}");
        let ok = GatewayConfig::from_toml_str(
            "listen = \"127.0.0.1:9999\"\n[upstreams.a]\ncommand = \"x\"\n[stack.policy]\ntimeout = \"5s\"",
        )
        .unwrap();
        assert_eq!(ok.listen().port(), 9999);
        assert_eq!(ok.stack.policy.timeout, Some(Duration::from_secs(5)));
    }
}
