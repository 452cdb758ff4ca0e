//! The `ssh_tools` MCP server: commands and files on an allowlist of SSH hosts, through a
//! pool of verified, multiplexed russh connections ([`mcp_tower_ssh::SshPool`]) and behind the
//! full `McpStack`.
//!
//! | tool | annotations | what the stack does with it by default |
//! |---|---|---|
//! | `ssh_exec(host, command)` | not read-only, destructive, not idempotent, open world | never cached, never deduplicated, never retried |
//! | `ssh_read_file(host, path)` | read-only | cached (per caller), deduplicated, retried on transient failures |
//! | `sftp_upload(host, path, content, encoding?)` | not read-only, destructive, idempotent | deduplicated and retried, never cached |
//! | `sftp_download(host, path)` | read-only | cached, deduplicated, retried |
//!
//! A file comes back **once**: `ssh_read_file` answers one text block when the file is UTF-8
//! and one embedded blob resource (base64) otherwise; `sftp_download` always answers the
//! blob. Neither adds structured content (it would repeat the bytes). Reads are capped at
//! `max_file_bytes` (8 MiB by default: a larger file is a tool error naming the cap) and
//! limited to `max_concurrent_downloads` at once with `download_queue` waiting; beyond that
//! the call fails at once with the busy error (`-31050`), so 64 concurrent reads of a large
//! file cost at most a few times the cap in memory, not 64 times the file.
//!
//! Hosts come from a TOML allowlist of profiles ([`SshConfig`]); any other host is a tool
//! error naming the allowed ones. Host keys are checked against known_hosts. Passwords,
//! passphrases and keys never reach a log line, an error or a metric label (metrics are
//! labelled by profile name).
//!
//! Failures an MCP client sees: a tool result with `isError: true` for the request's own
//! problems (unknown host, no such file, file too large, command refused); a JSON-RPC error
//! `-31053` (upstream unavailable, transient) when the host cannot be reached, its host key
//! is rejected, the login fails or the connection drops mid-call; `-31052` (timed out) when a
//! command outlives `exec_timeout` (its channel is then closed); `-31050` (busy) when too
//! many reads run. Every message is `<code>: <short reason>` ([`SshError::client_message`],
//! the code also in `data.sshError` of a JSON-RPC error): it names the host by its profile
//! name, never by address, and carries no user name, known_hosts or key path, nor a
//! server's own message. The full error goes to the log.

use std::path::Path;

use anyhow::Context as _;
use data_encoding::BASE64;
use mcp_tower_ssh::{SshConfig, SshError, SshPool};
use rmcp::{
    ErrorData, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        CallToolResult, ContentBlock, Implementation, ResourceContents, ServerCapabilities,
        ServerConfig,
    },
    schemars::{self, JsonSchema},
    tool, tool_handler, tool_router,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Reads the `ssh_tools` configuration: a TOML file whose top level is an
/// [`SshConfig`] (known_hosts, limits, `[pool]`, `[hosts.<name>]`).
pub fn load_config(path: &Path) -> anyhow::Result<SshConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the SSH hosts file {}", path.display()))?;
    // The parser's own message quotes the offending line, which may hold a password: only
    // its reason and position are shown.
    let config: SshConfig = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        anyhow::anyhow!(
            "parsing the SSH hosts file {}{}: {}",
            path.display(),
            line.map(|l| format!(", line {l}")).unwrap_or_default(),
            e.message()
        )
    })?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
}

/// Arguments of `ssh_exec`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecArgs {
    /// The host's profile name (see the server's allowlist).
    pub host: String,
    /// The command line, run by the remote user's shell.
    pub command: String,
}

/// What `ssh_exec` returns.
#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ExecResult {
    /// The host's profile name.
    pub host: String,
    /// The exit status (absent if the command was killed, or cut off at the output cap).
    pub exit_status: Option<u32>,
    /// The signal that killed it, if any.
    pub exit_signal: Option<String>,
    /// Standard output (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Whether the output was cut at the server's cap (the command was then stopped).
    pub truncated: bool,
}

/// Arguments of `ssh_read_file` and `sftp_download`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FileArgs {
    /// The host's profile name.
    pub host: String,
    /// The remote path.
    pub path: String,
}

/// How `sftp_upload`'s `content` is written.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The content is the file's text (UTF-8).
    #[default]
    Text,
    /// The content is base64 of the file's bytes.
    Base64,
}

/// Arguments of `sftp_upload`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UploadArgs {
    /// The host's profile name.
    pub host: String,
    /// The remote path (created or replaced).
    pub path: String,
    /// The file's contents.
    pub content: String,
    /// `text` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// The `ssh_tools` handler.
#[derive(Debug, Clone)]
pub struct SshTools {
    tool_router: ToolRouter<Self>,
    ssh: SshPool,
}

/// A failure as the client should see it: the request's own problem → a tool error it can
/// read and act on; anything about the host or the connection → the core's errors.
fn failure(tool: &str, error: SshError) -> Result<CallToolResult, ErrorData> {
    if error.is_tool_failure() {
        tracing::info!(tool, code = error.code(), "SSH tool error: {error}");
        Ok(CallToolResult::error(vec![ContentBlock::text(
            error.client_message(),
        )]))
    } else {
        Err(error.to_error_data(tool))
    }
}

/// The file as one embedded blob resource (base64), its bytes dropped as soon as encoded.
fn blob(host: &str, path: &str, bytes: Vec<u8>) -> CallToolResult {
    let encoded = BASE64.encode(&bytes);
    drop(bytes);
    let uri = format!("sftp://{host}/{}", path.trim_start_matches('/'));
    CallToolResult::success(vec![ContentBlock::resource(
        ResourceContents::blob(encoded, uri).with_mime_type("application/octet-stream"),
    )])
}

fn structured(value: impl Serialize) -> Result<CallToolResult, ErrorData> {
    serde_json::to_value(value)
        .map(CallToolResult::structured)
        .map_err(|e| ErrorData::internal_error(format!("encoding the result: {e}"), None))
}

#[tool_router]
impl SshTools {
    /// A handler over `ssh` (its allowlist is the set of hosts the tools may reach).
    pub fn new(ssh: SshPool) -> Self {
        Self {
            tool_router: Self::tool_router(),
            ssh,
        }
    }

    /// The pool (its `handle()` goes into the stack's metrics).
    pub fn pool(&self) -> &SshPool {
        &self.ssh
    }

    #[tool(
        description = "Run a command on an allowlisted SSH host and return its exit status, stdout and stderr (output is capped; long-running commands time out).",
        annotations(
            title = "Run a command over SSH",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn ssh_exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if args.command.trim().is_empty() {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "`command` must not be empty",
            )]));
        }
        match self.ssh.exec(&args.host, &args.command).await {
            Ok(out) => structured(ExecResult {
                host: args.host,
                exit_status: out.exit_status,
                exit_signal: out.exit_signal.clone(),
                stdout: out.stdout_lossy(),
                stderr: out.stderr_lossy(),
                truncated: out.truncated,
            }),
            Err(e) => failure("ssh_exec", e),
        }
    }

    #[tool(
        description = "Read a file on an allowlisted SSH host (over SFTP): its text if it is UTF-8, else one base64 blob. Files over the server's cap (max_file_bytes) are refused.",
        annotations(
            title = "Read a remote file",
            read_only_hint = true,
            open_world_hint = true
        )
    )]
    async fn ssh_read_file(
        &self,
        Parameters(args): Parameters<FileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.ssh.download(&args.host, &args.path).await {
            // One representation of the bytes, never copied: the text, or the blob.
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(CallToolResult::success(vec![ContentBlock::text(text)])),
                Err(e) => Ok(blob(&args.host, &args.path, e.into_bytes())),
            },
            Err(e) => failure("ssh_read_file", e),
        }
    }

    #[tool(
        description = "Write a file on an allowlisted SSH host over SFTP (created or replaced). `encoding`: `text` (default) or `base64`.",
        annotations(
            title = "Upload a file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn sftp_upload(
        &self,
        Parameters(args): Parameters<UploadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let bytes = match args.encoding {
            Encoding::Text => args.content.into_bytes(),
            Encoding::Base64 => match BASE64.decode(args.content.trim().as_bytes()) {
                Ok(bytes) => bytes,
                Err(e) => {
                    return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                        "`content` is not valid base64: {e}"
                    ))]));
                }
            },
        };
        match self.ssh.upload(&args.host, &args.path, &bytes).await {
            Ok(()) => structured(json!({
                "host": args.host,
                "path": args.path,
                "size": bytes.len(),
            })),
            Err(e) => failure("sftp_upload", e),
        }
    }

    #[tool(
        description = "Download a file from an allowlisted SSH host over SFTP, as one base64 blob resource. Files over the server's cap (max_file_bytes) are refused.",
        annotations(
            title = "Download a file",
            read_only_hint = true,
            open_world_hint = true
        )
    )]
    async fn sftp_download(
        &self,
        Parameters(args): Parameters<FileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.ssh.download(&args.host, &args.path).await {
            Ok(bytes) => Ok(blob(&args.host, &args.path, bytes)),
            Err(e) => failure("sftp_download", e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SshTools {
    fn get_info(&self) -> ServerConfig {
        let hosts = self.ssh.hosts().join(", ");
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-tower-ssh-tools",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(format!(
                "Run commands and move files on these SSH hosts (by name): {hosts}. \
                 ssh_exec runs a command (never cached or retried); ssh_read_file and \
                 sftp_download read files; sftp_upload writes one."
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A malformed hosts file is named with its line and reason; no credential in it is
    /// printed, neither a mistyped password nor the line of a syntax error.
    #[test]
    fn a_bad_hosts_file_never_prints_a_credential() {
        let dir = std::env::temp_dir().join(format!("ssh-tools-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            "[hosts.box]\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword = 424242424242\n",
            "[hosts.box]\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword = \"hunter2-424242424242\n",
        ];
        for (n, text) in cases.iter().enumerate() {
            let path = dir.join(format!("hosts-{n}.toml"));
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", load_config(&path).unwrap_err());
            assert!(err.contains("hosts-"), "the file is named: {err}");
            assert!(err.contains("line 4"), "the line is named: {err}");
            assert!(
                !err.contains("424242424242"),
                "a credential is printed: {err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
