//! Running a command: [`SshConnection::exec`] on a channel of its own, with an output cap
//! and a timeout, and its result, [`ExecOutput`].

use std::time::Duration;

use russh::{Channel, ChannelMsg, Sig, client::Msg};
use serde::Serialize;

use crate::{SshConnection, SshError};

/// What one exec may take: time and output (from the host's profile, or given per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    /// Abandon the exec (close its channel) after this long.
    pub timeout: Duration,
    /// Keep at most this many bytes of stdout and stderr together.
    pub max_output_bytes: usize,
}

impl ExecLimits {
    /// Limits with this timeout and output cap.
    pub fn new(timeout: Duration, max_output_bytes: usize) -> Self {
        Self {
            timeout,
            max_output_bytes,
        }
    }

    /// The same with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same with another output cap.
    pub fn with_max_output_bytes(mut self, max: usize) -> Self {
        self.max_output_bytes = max;
        self
    }
}

/// What a command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ExecOutput {
    /// The exit status, if the command exited (none if it was killed by a signal, or its
    /// channel was closed first because the output cap was reached).
    pub exit_status: Option<u32>,
    /// The signal that ended the command (`TERM`, `KILL`…), if one did.
    pub exit_signal: Option<String>,
    /// Standard output, up to the cap.
    pub stdout: Vec<u8>,
    /// Standard error, up to the cap (shared with stdout).
    pub stderr: Vec<u8>,
    /// Whether output was cut at the cap (the channel was then closed, so the command
    /// cannot block writing to a full pipe).
    pub truncated: bool,
}

impl ExecOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// `SshError::Disconnected::during` when the connection was found dead before the command
/// was sent: nothing ran, so the call may safely go to a fresh connection.
pub(crate) const CHANNEL_OPEN: &str = "channel open";

impl SshConnection {
    /// Maps a failed channel open: the server refused it ([`SshError::ChannelRefused`]:
    /// its `MaxSessions`), or the connection is gone (nothing was sent).
    pub(crate) fn channel_open_failed(&self, error: russh::Error) -> SshError {
        match error {
            russh::Error::ChannelOpenFailure(reason) => {
                tracing::debug!(host = %self.host(), ?reason, "the server refused a channel");
                SshError::ChannelRefused {
                    host: self.host().to_owned(),
                    open: 0,
                }
            }
            _ => SshError::Disconnected {
                host: self.host().to_owned(),
                during: CHANNEL_OPEN,
            },
        }
    }
}

/// A channel whose command is stopped (signal, then close) if the exec using it is abandoned
/// (timeout, or the caller's future dropped), so the remote command does not run on
/// unattended.
struct OpenChannel {
    channel: Option<Channel<Msg>>,
}

impl Drop for OpenChannel {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Only a CHANNEL_CLOSE message is sent from this task; the caller's work is
            // over.
            runtime.spawn(async move {
                stop(&channel).await;
            });
        }
    }
}

impl SshConnection {
    /// Runs `command` on a new channel of this connection, with the profile's limits.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        self.exec_with(command, self.limits()).await
    }

    /// Runs `command` with these limits. Many execs run at once on one connection.
    ///
    /// - Output beyond `max_output_bytes` (stdout and stderr together) is dropped,
    ///   `truncated` is set and the channel is closed (sshd then closes the command's pipes).
    /// - After `timeout` the channel is closed and [`SshError::Timeout`] returned.
    /// - If the connection closes under the command: [`SshError::Disconnected`].
    /// - Dropping the future closes the channel.
    pub async fn exec_with(
        &self,
        command: &str,
        limits: ExecLimits,
    ) -> Result<ExecOutput, SshError> {
        let mut open = OpenChannel { channel: None };
        match tokio::time::timeout(limits.timeout, self.run(command, limits, &mut open)).await {
            Ok(result) => {
                if result.is_ok() {
                    // The channel finished (closed by the server, or by us at the cap).
                    open.channel = None;
                }
                result
            }
            Err(_) => Err(SshError::Timeout {
                host: self.host().to_owned(),
                during: "exec",
                after: limits.timeout,
            }),
        }
        // `open` drops here: a channel still open is closed.
    }

    async fn run(
        &self,
        command: &str,
        limits: ExecLimits,
        open: &mut OpenChannel,
    ) -> Result<ExecOutput, SshError> {
        let disconnected = || SshError::Disconnected {
            host: self.host().to_owned(),
            during: "exec",
        };
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_open_failed(e))?;
        let channel = open.channel.insert(channel);
        channel
            .exec(true, command)
            .await
            .map_err(|_| disconnected())?;
        let mut output = ExecOutput::default();
        let mut budget = limits.max_output_bytes;
        let mut accepted = false;
        loop {
            let Some(message) = channel.wait().await else {
                // The session dropped the channel without a CHANNEL_CLOSE: the connection
                // is gone.
                return Err(disconnected());
            };
            match message {
                ChannelMsg::Data { data } => keep(
                    &mut output.stdout,
                    &data,
                    &mut budget,
                    &mut output.truncated,
                ),
                ChannelMsg::ExtendedData { data, ext: 1 } => keep(
                    &mut output.stderr,
                    &data,
                    &mut budget,
                    &mut output.truncated,
                ),
                ChannelMsg::ExitStatus { exit_status } => output.exit_status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    output.exit_signal = Some(format!("{signal_name:?}"))
                }
                ChannelMsg::Success => accepted = true,
                ChannelMsg::Failure if !accepted => {
                    return Err(SshError::Refused {
                        host: self.host().to_owned(),
                        request: "exec",
                    });
                }
                ChannelMsg::Close => return Ok(output),
                _ => {}
            }
            if output.truncated {
                // Stop the command and the flow: it cannot block on a full pipe, and its
                // remaining output is not sent. russh forgets
                // a channel once it sent CHANNEL_CLOSE, so there is nothing more to wait
                // for (the exit status, if not seen yet, is lost with the rest).
                if !stop(channel).await {
                    return Err(disconnected());
                }
                open.channel = None;
                return Ok(output);
            }
        }
    }
}

/// Stops the command on `channel`: a `TERM` signal (OpenSSH ≥ 7.9 delivers it to the
/// command's process group; without it a command that prints nothing, like `sleep`, would
/// run on after its channel is closed), then CHANNEL_CLOSE (sshd then closes the command's
/// pipes). `false` if the connection is gone.
async fn stop(channel: &Channel<Msg>) -> bool {
    let _ = channel.signal(Sig::TERM).await;
    channel.close().await.is_ok()
}

/// Appends what fits of `data` to `out`, within `budget`.
fn keep(out: &mut Vec<u8>, data: &[u8], budget: &mut usize, truncated: &mut bool) {
    let take = data.len().min(*budget);
    out.extend_from_slice(&data[..take]);
    *budget -= take;
    if take < data.len() {
        *truncated = true;
    }
}
