//! [`HttpConfig`]: the `[http]` section — how the HTTP edge serves the stack.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// The `[http]` section: where and how the HTTP edge serves MCP (`/mcp`) and the admin
/// endpoints (`/metrics`, `/health`, `/stats`). Every key is optional; environment
/// variables are `MCP_TOWER_HTTP__<KEY>` (`MCP_TOWER_HTTP__SESSIONS__MAX=64`).
///
/// ```toml
/// [http]
/// bind = "127.0.0.1:8080"
/// allowed_hosts = ["localhost", "127.0.0.1", "::1"]     # Host header (DNS rebinding)
/// allowed_origins = ["http://localhost:*"]               # a present, other Origin → 403
/// max_body_bytes = 4194304
/// max_body_bytes_in_flight = 67108864                    # beyond it: 503 + busy error
/// json_response = true
/// admin = "same"                                         # or "separate" (admin_bind), "off"
/// # admin_bind = "127.0.0.1:9090"
/// # tokens_file = "/etc/mcp/tokens"                      # `name:token` per line → bearer auth
/// # admin_tokens_file = "/etc/mcp/admin-tokens"
/// # allow_unauthenticated = false                        # needed to bind a public address without auth
///
/// [http.sessions]                                        # legacy (2025) sessions
/// enabled = true
/// idle_timeout = "5m"
/// max = 1024
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The address to listen on. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// `Host` values (`name` or `name:port`) accepted on every endpoint; others get 403 (a
    /// DNS-rebinding page cannot reach the server). Default: the loopback names and the
    /// bind address's host.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted when a request carries one (`scheme://host[:port]`, `:*` for
    /// any port, `"null"` for `Origin: null`); a present Origin not listed gets 403, as the
    /// streamable HTTP transport requires. A request without `Origin` (not a browser) passes.
    /// Default: `http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`.
    pub allowed_origins: Vec<String>,
    /// The largest request body accepted; larger ones get 413. Default 4 MiB.
    pub max_body_bytes: usize,
    /// The request bodies being handled at once, in bytes, at most: each request holds its
    /// declared `Content-Length` (or `max_body_bytes` when it declares none) from arrival
    /// until its answer is sent. One that does not fit gets 503 with `Retry-After` and the
    /// project's busy error, without its body being read. It bounds the memory many
    /// large requests at once can take (a body's bytes, its parsed arguments, the answer: a
    /// few times the body). Default 64 MiB (16 bodies of the maximum size).
    pub max_body_bytes_in_flight: usize,
    /// Answer a request whose only answer is its result as `application/json` instead of an
    /// SSE stream, where the transport allows it (stateless requests). Default `true`.
    pub json_response: bool,
    /// Legacy (2025 protocol) sessions.
    pub sessions: SessionsConfig,
    /// Where the admin endpoints are served: `same` (beside `/mcp`, the default),
    /// `separate` (on `admin_bind`), or `off`.
    pub admin: AdminMode,
    /// The admin listener's address with `admin = "separate"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_bind: Option<SocketAddr>,
    /// A file of `name:token` lines: when set, every request needs `Authorization: Bearer
    /// <token>` of one of them, and the token's *name* is the caller's principal. Only
    /// digests of the tokens are kept; the file is read again on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// A separate tokens file for the admin endpoints (default: `tokens_file`'s tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_tokens_file: Option<PathBuf>,
    /// Allow binding a non-loopback address without `tokens_file`. Off by default: such a
    /// server would hand its tools to anyone who can reach it, so it refuses to start.
    pub allow_unauthenticated: bool,
}

/// Where the admin endpoints are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AdminMode {
    /// Beside `/mcp`, on the same listener.
    #[default]
    Same,
    /// On their own listener (`admin_bind`).
    Separate,
    /// Not served.
    Off,
}

/// `[http.sessions]`: legacy (2025 protocol) sessions. 2026-07-28 requests are stateless
/// whatever this says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Serve legacy sessions (`initialize` opens one, `Mcp-Session-Id` names it). Default
    /// `true`; `false` answers 2025 clients statelessly.
    pub enabled: bool,
    /// A session unused this long is closed. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Live sessions at most; an `initialize` beyond it gets 503 with a `Retry-After` and
    /// the project's busy error. Default 1024.
    pub max: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout: Duration::from_secs(300),
            max: 1024,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_hosts: Vec::new(),
            allowed_origins: vec![
                "http://localhost:*".to_owned(),
                "http://127.0.0.1:*".to_owned(),
                "http://[::1]:*".to_owned(),
            ],
            max_body_bytes: 4 * 1024 * 1024,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            json_response: true,
            sessions: SessionsConfig::default(),
            admin: AdminMode::Same,
            admin_bind: None,
            tokens_file: None,
            admin_tokens_file: None,
            allow_unauthenticated: false,
        }
    }
}

/// The loopback host names every server accepts by default.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl HttpConfig {
    /// The `Host` values accepted: the configured ones, or the loopback names and the bind
    /// address's host.
    pub fn effective_allowed_hosts(&self) -> Vec<String> {
        if !self.allowed_hosts.is_empty() {
            return self.allowed_hosts.clone();
        }
        let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let ip = self.bind.ip();
        if !ip.is_unspecified() && !hosts.contains(&ip.to_string()) {
            hosts.push(ip.to_string());
        }
        hosts
    }

    /// Whether the bind address (or the admin one) is reachable from other machines.
    pub fn binds_beyond_loopback(&self) -> bool {
        let public = |ip: IpAddr| !ip.is_loopback();
        public(self.bind.ip()) || self.admin_bind.is_some_and(|a| public(a.ip()))
    }

    /// Checks the section: a field name and a reason for the first problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_body_bytes == 0 {
            return Err(("max_body_bytes", "must be at least 1".into()));
        }
        if self.max_body_bytes_in_flight < self.max_body_bytes {
            return Err((
                "max_body_bytes_in_flight",
                format!(
                    "must be at least max_body_bytes ({}), or no body of the largest size could ever be handled",
                    self.max_body_bytes
                ),
            ));
        }
        if self.sessions.max == 0 {
            return Err((
                "sessions.max",
                "must be at least 1 (or `enabled = false`)".into(),
            ));
        }
        if self.sessions.idle_timeout.is_zero() {
            return Err(("sessions.idle_timeout", "must be greater than zero".into()));
        }
        if self.admin == AdminMode::Separate && self.admin_bind.is_none() {
            return Err((
                "admin_bind",
                "is required with `admin = \"separate\"`".into(),
            ));
        }
        for origin in &self.allowed_origins {
            if origin != "null" && !origin.contains("://") {
                return Err((
                    "allowed_origins",
                    format!("`{origin}` has no scheme (write `https://{origin}`)"),
                ));
            }
        }
        if self.binds_beyond_loopback() && self.allowed_hosts.is_empty() {
            return Err((
                "allowed_hosts",
                format!(
                    "{} is reachable from other machines but `allowed_hosts` is not set: the \
                     default accepts only loopback names, so every remote request would get \
                     403. List the host names clients use (`allowed_hosts = [\"mcp.example.com\"]`)",
                    self.bind
                ),
            ));
        }
        if self.binds_beyond_loopback() && self.tokens_file.is_none() && !self.allow_unauthenticated
        {
            return Err((
                "bind",
                format!(
                    "{} is reachable from other machines and no `tokens_file` is set: anyone \
                     who can connect could call every tool. Set `tokens_file` (bearer auth), \
                     bind a loopback address, or set `allow_unauthenticated = true` if \
                     something in front of the server authenticates callers",
                    self.bind
                ),
            ));
        }
        Ok(())
    }
}
