//! [`UpstreamConfig`]: one upstream MCP server — a stdio child process or a streamable HTTP
//! endpoint — as a `[upstreams.<name>]` configuration section.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The separator between an upstream's name and a tool's name in a namespaced tool name
/// (`github__search`). Upstream names may not contain it.
pub const NAMESPACE_SEPARATOR: &str = "__";

/// Where a child process's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StderrMode {
    /// Each line is logged with `tracing` (target `mcp_tower_pool::upstream`, level info),
    /// with the upstream's name. The default.
    #[default]
    Log,
    /// Inherited: written to this process's stderr.
    Inherit,
    /// Discarded.
    Null,
}

/// The variables of the gateway's environment a stdio child inherits by default (when set):
/// what programs need to run (`PATH`, `HOME`, locale, time zone, temporary directory, user,
/// and on Windows the system's own). Nothing else: the gateway's secrets and credentials
/// stay with the gateway. [`UpstreamConfig::inherit_env`] names more.
pub const DEFAULT_INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    // Windows: without these, processes (node among them) fail to start or find nothing.
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
    "PROGRAMDATA",
    "PROGRAMFILES",
];

/// Whose sessions to an upstream serve a caller (`identity` in `[upstreams.<name>]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// `"shared"`, the default: one set of sessions shared by every caller; the upstream
    /// must not keep per-user state.
    #[default]
    Shared,
    /// `"per-principal"`: each principal (the stack's partitioner: the verified caller,
    /// else its `Authorization` digest or session) gets sessions of its own, opened on its
    /// first request and closed when idle; for upstreams that keep per-user state. The
    /// gateway's own requests (listing at start-up) use a session of their own.
    PerPrincipal,
}

/// One upstream MCP server: set `command` (stdio child process) **or** `url` (streamable
/// HTTP).
///
/// ```toml
/// [upstreams.everything]           # stdio: a child process per pooled session
/// command = "npx"
/// args = ["-y", "@modelcontextprotocol/server-everything"]
/// env = { LOG_LEVEL = "warn" }
/// inherit_env = ["NODE_OPTIONS"]  # besides PATH, HOME… (DEFAULT_INHERITED_ENV)
/// cwd = "/srv/mcp"
///
/// [upstreams.search]               # streamable HTTP
/// url = "https://search.example.com/mcp"
/// headers = { Authorization = "Bearer <token>" }
/// required = false                 # the gateway stays healthy without it
///
/// [upstreams.main]                 # exposed as is: `search`, not `main__search`
/// url = "http://127.0.0.1:9000/mcp"
/// namespace = false
/// ```
///
/// Values are used as written (no `${VAR}` interpolation). `Debug` output redacts
/// environment and header values (they often hold tokens).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Serve this upstream. Default `true`.
    pub enabled: bool,
    /// stdio: the program to run (looked up in `PATH`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// stdio: the child's own environment variables. The child starts from an empty
    /// environment: these, plus the inherited variables ([`DEFAULT_INHERITED_ENV`] and
    /// [`inherit_env`](Self::inherit_env)); a variable set here wins over an inherited one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// stdio: more variables of the gateway's environment the child inherits (when set),
    /// besides [`DEFAULT_INHERITED_ENV`]. Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// stdio: its working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// stdio: where its stderr goes. Default `log`.
    pub stderr: StderrMode,
    /// streamable HTTP: the MCP endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// streamable HTTP: headers sent with every request (`Authorization`…).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Whether the gateway reports unhealthy while this upstream cannot be reached.
    /// Default `true`.
    pub required: bool,
    /// Whether this upstream's tools and prompts are exposed under namespaced names
    /// (`<upstream>__<name>`, the default `true`) or under their own names (`false`: the
    /// gateway is then indistinguishable from the upstream for its names).
    pub namespace: bool,
    /// Whose sessions serve a caller: `"shared"` (the default) or `"per-principal"`.
    pub identity: Identity,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            inherit_env: Vec::new(),
            cwd: None,
            stderr: StderrMode::default(),
            url: None,
            headers: BTreeMap::new(),
            required: true,
            namespace: true,
            identity: Identity::Shared,
        }
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |m: &BTreeMap<String, String>| -> Vec<String> {
            m.keys().map(|k| format!("{k}=<redacted>")).collect()
        };
        f.debug_struct("UpstreamConfig")
            .field("enabled", &self.enabled)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &redacted(&self.env))
            .field("inherit_env", &self.inherit_env)
            .field("cwd", &self.cwd)
            .field("stderr", &self.stderr)
            .field("url", &self.url)
            .field("headers", &redacted(&self.headers))
            .field("required", &self.required)
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .finish()
    }
}

/// How to reach an upstream, from a validated [`UpstreamConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamKind {
    /// A child process speaking MCP on stdin/stdout.
    Stdio,
    /// A streamable HTTP endpoint.
    Http,
}

impl UpstreamConfig {
    /// An upstream run as a child process: `command` with `args`.
    pub fn stdio(
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            command: Some(command.into()),
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// An upstream reached over streamable HTTP at `url`.
    pub fn http(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Adds an environment variable (stdio).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Lets the child inherit the gateway's variable `name` (when set), besides
    /// [`DEFAULT_INHERITED_ENV`] (stdio).
    pub fn with_inherited_env(mut self, name: impl Into<String>) -> Self {
        self.inherit_env.push(name.into());
        self
    }

    /// The child's environment (stdio): the inherited variables that are set in
    /// `gateway` (the gateway's environment), then [`env`](Self::env) over them.
    pub fn child_env(
        &self,
        gateway: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> BTreeMap<std::ffi::OsString, std::ffi::OsString> {
        let inherited = |name: &std::ffi::OsStr| {
            let Some(name) = name.to_str() else {
                return false;
            };
            let is = |wanted: &str| {
                // Windows variable names are case-insensitive.
                if cfg!(windows) {
                    wanted.eq_ignore_ascii_case(name)
                } else {
                    wanted == name
                }
            };
            DEFAULT_INHERITED_ENV.iter().any(|w| is(w)) || self.inherit_env.iter().any(|w| is(w))
        };
        let mut vars: BTreeMap<_, _> = gateway
            .into_iter()
            .filter(|(name, _)| inherited(name))
            .collect();
        for (name, value) in &self.env {
            vars.insert(name.into(), value.into());
        }
        vars
    }

    /// Runs the child in `cwd` (stdio).
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sends the child's stderr to `mode` (stdio).
    pub fn with_stderr(mut self, mode: StderrMode) -> Self {
        self.stderr = mode;
        self
    }

    /// Adds a header to every request (HTTP).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Whether the gateway is unhealthy without this upstream.
    pub fn with_required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Whether this upstream's names are namespaced (`<upstream>__<name>`, the default)
    /// or exposed as they are.
    pub fn with_namespace(mut self, namespace: bool) -> Self {
        self.namespace = namespace;
        self
    }

    /// Whose sessions serve a caller ([`Identity`]).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Whether to serve this upstream.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Checks the section of upstream `name`; the error names the field.
    pub fn validate(&self, name: &str) -> Result<UpstreamKind, String> {
        validate_name(name)?;
        let at = |field: &str| format!("upstreams.{name}.{field}");
        let kind = match (&self.command, &self.url) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "upstreams.{name}: set `command` (stdio) or `url` (streamable HTTP), not both"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "upstreams.{name}: set `command` (stdio) or `url` (streamable HTTP)"
                ));
            }
            (Some(command), None) => {
                if command.trim().is_empty() {
                    return Err(format!("{}: must not be empty", at("command")));
                }
                if !self.headers.is_empty() {
                    return Err(format!("{}: only for `url` upstreams", at("headers")));
                }
                for var in self.env.keys().chain(&self.inherit_env) {
                    if var.is_empty() || var.contains(['=', '\0']) {
                        return Err(format!(
                            "{}: `{var}` is not an environment variable name",
                            at(if self.env.contains_key(var) {
                                "env"
                            } else {
                                "inherit_env"
                            })
                        ));
                    }
                }
                UpstreamKind::Stdio
            }
            (None, Some(url)) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| format!("{}: `{url}` is not a URL: {e}", at("url")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(format!(
                        "{}: `{url}` must be an http:// or https:// URL with a host",
                        at("url")
                    ));
                }
                for (header, value) in &self.headers {
                    let parsed = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                        format!("{}: `{header}` is not a header name", at("headers"))
                    })?;
                    if [
                        "accept",
                        "mcp-session-id",
                        "last-event-id",
                        "mcp-protocol-version",
                    ]
                    .contains(&parsed.as_str())
                    {
                        return Err(format!(
                            "{}: `{header}` is set by the MCP transport itself",
                            at("headers")
                        ));
                    }
                    http::HeaderValue::from_str(value).map_err(|_| {
                        format!(
                            "{}: the value of `{header}` is not a valid header value",
                            at("headers")
                        )
                    })?;
                }
                if !self.args.is_empty()
                    || !self.env.is_empty()
                    || !self.inherit_env.is_empty()
                    || self.cwd.is_some()
                {
                    return Err(format!(
                        "upstreams.{name}: `args`, `env`, `inherit_env` and `cwd` are only for `command` upstreams"
                    ));
                }
                UpstreamKind::Http
            }
        };
        Ok(kind)
    }
}

/// Upstream names become tool-name prefixes and metric labels: short, plain, no separator.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("upstreams: an upstream's name must not be empty".into());
    }
    if name.contains(NAMESPACE_SEPARATOR) {
        return Err(format!(
            "upstreams.{name}: the name must not contain `{NAMESPACE_SEPARATOR}` (it separates upstream and tool in `upstream{NAMESPACE_SEPARATOR}tool`)"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "upstreams.{name}: the name may use only ASCII letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_and_http_sections_parse_and_validate() {
        let stdio: UpstreamConfig = toml::from_str(
            r#"
            command = "npx"
            args = ["-y", "@modelcontextprotocol/server-everything"]
            env = { TOKEN = "s3cret" }
            stderr = "null"
            "#,
        )
        .unwrap();
        assert_eq!(stdio.validate("everything"), Ok(UpstreamKind::Stdio));
        assert_eq!(stdio.stderr, StderrMode::Null);
        assert!(stdio.required && stdio.enabled);
        assert!(
            !format!("{stdio:?}").contains("s3cret"),
            "env values are redacted"
        );

        let http: UpstreamConfig = toml::from_str(
            r#"
            url = "https://mcp.example.com/mcp"
            headers = { Authorization = "Bearer t0ken" }
            required = false
            "#,
        )
        .unwrap();
        assert_eq!(http.validate("remote"), Ok(UpstreamKind::Http));
        assert!(
            !format!("{http:?}").contains("t0ken"),
            "header values are redacted"
        );
    }

    #[test]
    fn a_child_gets_the_allowlist_and_its_own_env_only() {
        let config: UpstreamConfig = toml::from_str(
            r#"
            command = "node"
            env = { TOKEN = "mine", HOME = "/srv/child" }
            inherit_env = ["NODE_OPTIONS"]
            "#,
        )
        .unwrap();
        assert_eq!(config.validate("a"), Ok(UpstreamKind::Stdio));
        let gateway = [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("NODE_OPTIONS", "--max-old-space-size=64"),
            ("MCP_TOWER_KEY_SECRET", "s3cret"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let env = config.child_env(gateway);
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            env,
            [
                ("HOME", "/srv/child"),
                ("NODE_OPTIONS", "--max-old-space-size=64"),
                ("PATH", "/usr/bin"),
                ("TOKEN", "mine"),
            ]
        );
    }

    #[test]
    fn bad_sections_are_rejected_with_the_field() {
        let both = UpstreamConfig {
            url: Some("http://x/mcp".into()),
            ..UpstreamConfig::stdio("server", ["--stdio"])
        };
        assert!(both.validate("a").unwrap_err().contains("not both"));
        assert!(
            UpstreamConfig::default()
                .validate("a")
                .unwrap_err()
                .contains("set `command`")
        );
        assert!(
            UpstreamConfig::http("ftp://x/mcp")
                .validate("a")
                .unwrap_err()
                .contains("upstreams.a.url")
        );
        assert!(
            UpstreamConfig::http("not a url")
                .validate("a")
                .unwrap_err()
                .contains("is not a URL")
        );
        assert!(
            UpstreamConfig::http("http://x/mcp")
                .with_header("Mcp-Session-Id", "1")
                .validate("a")
                .unwrap_err()
                .contains("set by the MCP transport")
        );
        assert!(
            UpstreamConfig::http("http://x/mcp")
                .with_header("bad header", "1")
                .validate("a")
                .unwrap_err()
                .contains("not a header name")
        );
        assert!(
            UpstreamConfig::stdio("s", ["x"])
                .validate("git__hub")
                .unwrap_err()
                .contains("must not contain `__`")
        );
        assert!(
            UpstreamConfig::stdio("s", ["x"])
                .validate("git hub")
                .unwrap_err()
                .contains("only ASCII")
        );
        assert!(
            UpstreamConfig::stdio(" ", ["x"])
                .validate("a")
                .unwrap_err()
                .contains("upstreams.a.command")
        );
        assert!(
            UpstreamConfig::stdio("s", ["x"])
                .with_inherited_env("A=B")
                .validate("a")
                .unwrap_err()
                .contains("upstreams.a.inherit_env")
        );
        assert!(toml::from_str::<UpstreamConfig>("comand = \"x\"").is_err());
    }
}
