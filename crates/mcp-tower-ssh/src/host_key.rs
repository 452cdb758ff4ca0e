//! The host-key check of every connect: russh's client callback ([`ClientHandler`]) judging
//! the presented key against known_hosts ([`HostKeyCheck`]), and leaving the reason for a
//! rejection where the connector can report it.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use russh::{client, keys::PublicKeyOrCertificate};

use crate::{HostKeyVerdict, KnownHosts, SshError, known_hosts::fingerprint};

/// How the handler judges the host key.
pub(crate) enum HostKeyCheck {
    AcceptAny,
    Against {
        hosts: KnownHosts,
        /// `host` or `[host]:port`.
        name: String,
        path: PathBuf,
    },
}

/// russh's client callbacks: the host key check. The reason for a rejection is left in
/// `rejection`, for the connector's error.
pub(crate) struct ClientHandler {
    pub(crate) host: Arc<str>,
    pub(crate) check: HostKeyCheck,
    pub(crate) rejection: Arc<Mutex<Option<SshError>>>,
}

impl ClientHandler {
    fn reject(&self, error: SshError) -> Result<bool, russh::Error> {
        tracing::error!(host = %self.host, "{error}");
        *self
            .rejection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
        Ok(false)
    }
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                if matches!(self.check, HostKeyCheck::AcceptAny) {
                    return Ok(true);
                }
                return self.reject(SshError::HostCertificate {
                    host: self.host.to_string(),
                });
            }
        };
        let (hosts, name, path) = match &self.check {
            HostKeyCheck::AcceptAny => return Ok(true),
            HostKeyCheck::Against { hosts, name, path } => (hosts, name, path),
        };
        match hosts.verify(name, key) {
            HostKeyVerdict::Trusted { .. } => Ok(true),
            verdict => {
                let error = SshError::HostKey {
                    host: self.host.to_string(),
                    presented: fingerprint(key),
                    verdict,
                    known_hosts: path.clone(),
                };
                self.reject(error)
            }
        }
    }
}
