//! Relaying what an upstream sends its client (the gateway) during a request to the
//! downstream client whose request it is serving: server→client requests (sampling
//! `createMessage`, elicitation, `roots/list`) and log messages.
//!
//! A session is shared by many downstream requests, so each upstream request in flight
//! registers a [`Downstream`] under its upstream JSON-RPC id. A server→client request is
//! matched to it by the stream it arrived on (streamable HTTP marks it with the id of the
//! POST it rode, SEP-2260); without such a mark (stdio) it can only go to the one request
//! in flight, and is refused when there are several.
//!
//! The relayed request is not sent from here: it is handed to the downstream request's own
//! future, which sends it on the caller's task, so rmcp associates it with the downstream
//! request (SEP-2260) and streamable HTTP delivers it on that request's response stream.

// Logging is deprecated by SEP-2577 but part of the protocol versions the gateway serves.
#![allow(deprecated)]

use std::{collections::HashMap, sync::Mutex, time::Duration};

use rmcp::{
    ErrorData, Peer, RoleServer,
    model::{ClientResult, LoggingMessageNotificationParam, RequestId, ServerRequest},
};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::pool::lock;

/// How long a server→client request marked with an upstream request id waits for that
/// request's registration (which follows the send by a few instructions).
const REGISTRATION_GRACE: Duration = Duration::from_secs(2);

/// A server→client request handed to the downstream request's future, with where its
/// answer goes.
#[derive(Debug)]
pub(crate) struct Relayed {
    pub(crate) request: ServerRequest,
    pub(crate) reply: oneshot::Sender<Result<ClientResult, ErrorData>>,
}

/// The downstream side of one upstream request in flight.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    pub(crate) peer: Peer<RoleServer>,
    pub(crate) requests: mpsc::Sender<Relayed>,
}

/// A session's upstream requests in flight, by upstream request id.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    routes: Mutex<HashMap<RequestId, Downstream>>,
    registered: Notify,
}

impl Relays {
    pub(crate) fn register(&self, id: RequestId, downstream: Downstream) {
        lock(&self.routes).insert(id, downstream);
        self.registered.notify_waiters();
    }

    pub(crate) fn unregister(&self, id: &RequestId) {
        lock(&self.routes).remove(id);
    }

    /// The downstream of the request `origin` names, or of the only request in flight.
    async fn target(&self, origin: Option<&RequestId>) -> Option<Downstream> {
        let Some(origin) = origin else {
            let routes = lock(&self.routes);
            let mut all = routes.values();
            return match (all.next(), all.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            };
        };
        let deadline = tokio::time::Instant::now() + REGISTRATION_GRACE;
        loop {
            let registered = self.registered.notified();
            if let Some(downstream) = lock(&self.routes).get(origin) {
                return Some(downstream.clone());
            }
            if tokio::time::timeout_at(deadline, registered).await.is_err() {
                return None;
            }
        }
    }

    /// Relays a server→client request to the downstream client of the request it belongs
    /// to, and returns its answer.
    pub(crate) async fn relay(
        &self,
        request: ServerRequest,
        origin: Option<&RequestId>,
    ) -> Result<ClientResult, ErrorData> {
        let Some(downstream) = self.target(origin).await else {
            return Err(ErrorData::invalid_request(
                match origin {
                    Some(id) => format!(
                        "the gateway has no request {id} in flight to relay this request to"
                    ),
                    None => "the gateway cannot tell which of its requests in flight this \
                             request belongs to"
                        .to_owned(),
                },
                None,
            ));
        };
        let (reply, answer) = oneshot::channel();
        let ended = || ErrorData::invalid_request("the request it belongs to has ended", None);
        downstream
            .requests
            .send(Relayed { request, reply })
            .await
            .map_err(|_| ended())?;
        answer.await.map_err(|_| ended())?
    }

    /// Delivers a log message to the downstream client of the only request in flight;
    /// gives it back when there is none or several (it cannot be attributed).
    pub(crate) async fn log(
        &self,
        params: LoggingMessageNotificationParam,
    ) -> Option<LoggingMessageNotificationParam> {
        let Some(downstream) = self.target(None).await else {
            return Some(params);
        };
        if let Err(error) = downstream.peer.notify_logging_message(params).await {
            tracing::debug!(%error, "could not forward an upstream log message");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::ListRootsRequest;

    use super::*;

    fn roots() -> ServerRequest {
        ServerRequest::ListRootsRequest(ListRootsRequest::default())
    }

    #[tokio::test]
    async fn an_unattributable_request_is_refused_at_once() {
        let relays = Relays::default();
        let error = relays.relay(roots(), None).await.unwrap_err();
        assert!(error.message.contains("cannot tell"), "{}", error.message);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_for_an_unknown_upstream_request_waits_for_its_registration_then_fails() {
        let relays = Relays::default();
        let id = RequestId::Number(7);
        let started = tokio::time::Instant::now();
        let error = relays.relay(roots(), Some(&id)).await.unwrap_err();
        assert!(error.message.contains("no request 7"), "{}", error.message);
        assert_eq!(started.elapsed(), REGISTRATION_GRACE);
        relays.unregister(&id); // an id never registered is ignored
    }
}
