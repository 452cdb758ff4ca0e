//! Relaying what an upstream sends its client (the gateway) during a request to the
//! downstream client whose request it is serving: server→client requests (sampling
//! `createMessage`, elicitation, `roots/list`) and log messages.
//!
//! A session is shared by many downstream requests (of many principals), so a message is
//! relayed only on **evidence** of the request it belongs to, never on a guess:
//!
//! - the stream it arrived on: streamable HTTP marks a server→client request with the id
//!   of the POST whose response stream it rode (SEP-2260);
//! - its `_meta` naming one of the gateway's upstream requests in flight:
//!   `relatedRequestId` (that request's JSON-RPC id; requests and logs) or `progressToken`
//!   (that request's progress token; logs only, since a request's own `progressToken` is
//!   its own, not the one of the request it serves).
//!
//! What cannot be attributed is not delivered to anyone: a server→client request is
//! refused (the upstream gets a JSON-RPC error saying so), a log message is dropped; both
//! are counted ([`RelayStats`]). This holds with one request in flight too: over stdio
//! nothing tells that a message belongs to it rather than to a request that just ended or
//! to none.
//!
//! Every upstream request made on behalf of a downstream request opens a route *before* it
//! is sent: the request carries a [`RouteMark`] (a non-serialized extension), and the
//! session's transport ([`Marked`]) binds the request's JSON-RPC id and progress token to
//! the route when it takes the message, before writing it. So nothing the upstream sends
//! about a request can arrive before its route exists.
//!
//! The relayed request is not sent from here: it is handed to the downstream request's own
//! future, which sends it on the caller's task, so rmcp associates it with the downstream
//! request (SEP-2260) and streamable HTTP delivers it on that request's response stream.

// Logging is deprecated by SEP-2577 but part of the protocol versions the gateway serves.
#![allow(deprecated)]

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use rmcp::{
    ErrorData, Peer, RoleClient, RoleServer,
    model::{
        ClientResult, GetExtensions, GetMeta, JsonRpcMessage, LoggingMessageNotificationParam,
        MetaObject, ProgressToken, RequestId, ServerNotification, ServerRequest,
    },
    service::{InboundStreamOrigin, RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio::sync::{mpsc, oneshot};

use mcp_tower_core::{Figure, LayerReport};

use crate::pool::lock;

/// The `_meta` key naming the JSON-RPC id of the gateway's request a message belongs to.
pub(crate) const RELATED_REQUEST_ID: &str = "relatedRequestId";

/// The `_meta` key of a progress token.
const PROGRESS_TOKEN: &str = "progressToken";

/// How the relays of an [`McpConnector`](super::McpConnector)'s sessions fared: the
/// server→client requests and log messages relayed to the client of the request they
/// belong to, and those that could not be attributed to one (so delivered to no one).
/// Counts since the connector was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RelayStats {
    /// Server→client requests (sampling, elicitation, roots) relayed to the client of the
    /// request they belong to.
    pub relay_requests_relayed: u64,
    /// Server→client requests refused because nothing tied them to one of the gateway's
    /// requests in flight (or the one they named had ended).
    pub relay_requests_refused: u64,
    /// Log messages delivered to the client of the request they belong to.
    pub relay_logs_relayed: u64,
    /// Log messages dropped because nothing tied them to one of the gateway's requests in
    /// flight.
    pub relay_logs_dropped: u64,
    /// Notifications about no request (list changes, resource updates) dropped for a
    /// client session that fell behind, by the [`PeerOutbox`](super::PeerOutbox)es made
    /// with [`McpConnector::outbox`](super::McpConnector::outbox).
    pub relay_notifications_dropped: u64,
}

/// A cloneable handle on an [`McpConnector`](super::McpConnector)'s [`RelayStats`], for the
/// metrics layer ([`LayerReport`], layer `relay`):
///
/// | figure | kind |
/// |---|---|
/// | `mcp_relay_requests_relayed_total` | counter |
/// | `mcp_relay_requests_refused_total` | counter |
/// | `mcp_relay_logs_relayed_total` | counter |
/// | `mcp_relay_logs_dropped_total` | counter |
/// | `mcp_relay_notifications_dropped_total` | counter |
#[derive(Debug, Clone)]
pub struct RelayReport {
    pub(crate) counters: Arc<RelayCounters>,
}

impl RelayReport {
    /// The figures now.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }
}

impl LayerReport for RelayReport {
    fn layer(&self) -> &'static str {
        "relay"
    }

    fn figures(&self, out: &mut Vec<Figure>) {
        let stats = self.stats();
        out.extend([
            Figure::counter(
                "mcp_relay_requests_relayed_total",
                "Upstream server-to-client requests relayed to the client of their request",
                stats.relay_requests_relayed,
            ),
            Figure::counter(
                "mcp_relay_requests_refused_total",
                "Upstream server-to-client requests refused: not attributable to a request",
                stats.relay_requests_refused,
            ),
            Figure::counter(
                "mcp_relay_logs_relayed_total",
                "Upstream log messages relayed to the client of their request",
                stats.relay_logs_relayed,
            ),
            Figure::counter(
                "mcp_relay_logs_dropped_total",
                "Upstream log messages dropped: not attributable to a request",
                stats.relay_logs_dropped,
            ),
            Figure::counter(
                "mcp_relay_notifications_dropped_total",
                "Upstream notifications dropped for a client session that fell behind",
                stats.relay_notifications_dropped,
            ),
        ]);
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or_default()
    }
}

/// The counters behind [`RelayStats`], shared by a connector's sessions.
#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    requests_relayed: AtomicU64,
    requests_refused: AtomicU64,
    logs_relayed: AtomicU64,
    logs_dropped: AtomicU64,
    pub(crate) notifications_dropped: AtomicU64,
}

impl RelayCounters {
    pub(crate) fn snapshot(&self) -> RelayStats {
        RelayStats {
            relay_requests_relayed: self.requests_relayed.load(Ordering::Relaxed),
            relay_requests_refused: self.requests_refused.load(Ordering::Relaxed),
            relay_logs_relayed: self.logs_relayed.load(Ordering::Relaxed),
            relay_logs_dropped: self.logs_dropped.load(Ordering::Relaxed),
            relay_notifications_dropped: self.notifications_dropped.load(Ordering::Relaxed),
        }
    }
}

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
    /// Log messages attributed to the request and not yet handed to its client.
    pub(crate) logs: Arc<PendingLogs>,
}

/// The log messages of one request that were received (and attributed, in wire order, before
/// the request's answer) but not yet delivered: the request's future waits for them before
/// it answers its caller, so a log the upstream sent before its answer reaches the caller
/// before the answer too (on a legacy session, the request's stream closes with the answer).
#[derive(Debug, Default)]
pub(crate) struct PendingLogs {
    count: std::sync::atomic::AtomicUsize,
    delivered: tokio::sync::Notify,
}

impl PendingLogs {
    fn received(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn delivered(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.delivered.notify_waiters();
        }
    }

    /// Waits until every log received so far is delivered, for at most `bound`.
    pub(crate) async fn settle(&self, bound: std::time::Duration) {
        let _ = tokio::time::timeout(bound, async {
            loop {
                let notified = self.delivered.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

/// Which of the gateway's requests a server→client request or log message belongs to, as
/// found when it was received (an extension of the message, then of its handler's
/// context).
#[derive(Debug, Clone)]
pub(crate) struct Attribution {
    /// The upstream request id the message named, if any.
    named: Option<RequestId>,
    /// The downstream client of that request, when it is in flight on a client's behalf.
    downstream: Option<Downstream>,
}

/// The extension an upstream request carries to its route (never on the wire): the
/// session's transport binds the request's id and progress token to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteMark(u64);

#[derive(Debug, Default)]
struct Table {
    routes: HashMap<u64, Downstream>,
    /// Upstream request id → route, bound when the request is sent.
    ids: HashMap<RequestId, u64>,
    /// Upstream progress token → route, bound when the request is sent.
    tokens: HashMap<ProgressToken, u64>,
    /// What each route's request was bound to, to unbind it.
    bound: HashMap<u64, (RequestId, Option<ProgressToken>)>,
}

/// A session's upstream requests in flight that relay to a downstream client.
#[derive(Debug)]
pub(crate) struct Relays {
    table: Mutex<Table>,
    next: AtomicU64,
    counters: Arc<RelayCounters>,
}

impl Relays {
    pub(crate) fn new(counters: Arc<RelayCounters>) -> Self {
        Self {
            table: Mutex::default(),
            next: AtomicU64::new(0),
            counters,
        }
    }

    /// Opens the route of a request about to be sent on behalf of `downstream`; the request
    /// must carry the returned mark. Close it with [`close`](Self::close).
    pub(crate) fn open(&self, downstream: Downstream) -> RouteMark {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.table).routes.insert(key, downstream);
        RouteMark(key)
    }

    /// Closes a route: messages naming its request are no longer relayed.
    pub(crate) fn close(&self, mark: RouteMark) {
        let mut table = lock(&self.table);
        table.routes.remove(&mark.0);
        if let Some((id, token)) = table.bound.remove(&mark.0) {
            table.ids.remove(&id);
            if let Some(token) = token {
                table.tokens.remove(&token);
            }
        }
    }

    /// Binds an outgoing request's id and progress token to the route it is marked with
    /// (called by the transport, before the request is written).
    fn bind(&self, mark: RouteMark, id: RequestId, token: Option<ProgressToken>) {
        let mut table = lock(&self.table);
        // A route closed before its request went out (the caller went away) stays closed.
        if !table.routes.contains_key(&mark.0) {
            return;
        }
        table.ids.insert(id.clone(), mark.0);
        if let Some(token) = &token {
            table.tokens.insert(token.clone(), mark.0);
        }
        table.bound.insert(mark.0, (id, token));
    }

    fn by_id(&self, id: &RequestId) -> Option<Downstream> {
        let table = lock(&self.table);
        let key = table.ids.get(id).or_else(|| {
            // A string id that spells a number names the same request (as rmcp matches
            // responses).
            match id {
                RequestId::String(s) => s.parse().ok().map(RequestId::Number),
                RequestId::Number(_) => None,
            }
            .and_then(|n| table.ids.get(&n))
        })?;
        table.routes.get(key).cloned()
    }

    fn by_token(&self, token: &ProgressToken) -> Option<Downstream> {
        let table = lock(&self.table);
        let key = table.tokens.get(token)?;
        table.routes.get(key).cloned()
    }

    /// Attributes a message from the upstream as it is received, in order: before the
    /// answer of the request it belongs to (which follows it on the wire) can close that
    /// request's route. Server→client requests and log messages get an [`Attribution`].
    fn attribute(&self, message: &mut RxJsonRpcMessage<RoleClient>) {
        let attribution = match message {
            JsonRpcMessage::Request(request) => {
                let origin = match request.request.extensions().get::<InboundStreamOrigin>() {
                    Some(InboundStreamOrigin::OutboundRequest(id)) => Some(id.clone()),
                    _ => None,
                };
                let named = origin.or_else(|| related_request(&request.request.get_meta().0));
                let downstream = named.as_ref().and_then(|id| self.by_id(id));
                Attribution { named, downstream }
            }
            JsonRpcMessage::Notification(notification) => {
                let ServerNotification::LoggingMessageNotification(log) =
                    &notification.notification
                else {
                    return;
                };
                let metas = [
                    log.params.meta.as_ref(),
                    Some(notification.notification.get_meta()),
                ];
                let downstream = metas.into_iter().flatten().find_map(|meta| {
                    related_request(&meta.0)
                        .and_then(|id| self.by_id(&id))
                        .or_else(|| progress_token(&meta.0).and_then(|t| self.by_token(&t)))
                });
                if let Some(downstream) = &downstream {
                    downstream.logs.received();
                }
                Attribution {
                    named: None,
                    downstream,
                }
            }
            _ => return,
        };
        match message {
            JsonRpcMessage::Request(request) => {
                request.request.extensions_mut().insert(attribution);
            }
            JsonRpcMessage::Notification(notification) => {
                notification
                    .notification
                    .extensions_mut()
                    .insert(attribution);
            }
            _ => {}
        }
    }

    /// Relays a server→client request to the downstream client of the request it belongs
    /// to, and returns its answer; refuses it when it could not be attributed.
    pub(crate) async fn relay(
        &self,
        request: ServerRequest,
        attribution: Option<&Attribution>,
    ) -> Result<ClientResult, ErrorData> {
        let Some(downstream) = attribution.and_then(|a| a.downstream.clone()) else {
            self.counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            let message = match attribution.and_then(|a| a.named.as_ref()) {
                Some(id) => format!(
                    "the gateway has no request {id} in flight on behalf of a client to relay \
                     this request to"
                ),
                None => format!(
                    "the gateway relays a server-to-client request only to the client of the \
                     request it belongs to, and nothing tells which one this is: send it on \
                     that request's response stream, or name the request in \
                     `_meta.{RELATED_REQUEST_ID}`"
                ),
            };
            return Err(ErrorData::invalid_request(message, None));
        };
        self.counters
            .requests_relayed
            .fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let ended = || ErrorData::invalid_request("the request it belongs to has ended", None);
        downstream
            .requests
            .send(Relayed { request, reply })
            .await
            .map_err(|_| ended())?;
        answer.await.map_err(|_| ended())?
    }

    /// Delivers a log message to the downstream client of the request it belongs to; drops
    /// and counts it when it could not be attributed.
    pub(crate) async fn log(
        &self,
        mut params: LoggingMessageNotificationParam,
        attribution: Option<&Attribution>,
    ) {
        let Some(downstream) = attribution.and_then(|a| a.downstream.clone()) else {
            self.counters.logs_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                "dropped an upstream log message that names no request of the gateway's in flight"
            );
            return;
        };
        self.counters.logs_relayed.fetch_add(1, Ordering::Relaxed);
        // The upstream hop's keys mean nothing to the downstream client.
        if let Some(meta) = &mut params.meta {
            meta.0.0.remove(RELATED_REQUEST_ID);
            meta.0.0.remove(PROGRESS_TOKEN);
            if meta.0.0.is_empty() {
                params.meta = None;
            }
        }
        if let Err(error) = downstream.peer.notify_logging_message(params).await {
            tracing::debug!(%error, "could not forward an upstream log message");
        }
        downstream.logs.delivered();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize, usize) {
        let table = lock(&self.table);
        (table.routes.len(), table.ids.len(), table.tokens.len())
    }
}

fn related_request(meta: &MetaObject) -> Option<RequestId> {
    meta.0
        .get(RELATED_REQUEST_ID)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

fn progress_token(meta: &MetaObject) -> Option<ProgressToken> {
    meta.0
        .get(PROGRESS_TOKEN)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// A session's transport: binds each outgoing request marked with a [`RouteMark`] to its
/// route before handing it to `inner`, and attributes each incoming server→client request
/// and log message as it comes.
pub(crate) struct Marked<T> {
    inner: T,
    relays: Arc<Relays>,
}

impl<T> Marked<T> {
    pub(crate) fn new(inner: T, relays: Arc<Relays>) -> Self {
        Self { inner, relays }
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Marked<T> {
    type Error = T::Error;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let JsonRpcMessage::Request(request) = &item
            && let Some(mark) = request.request.extensions().get::<RouteMark>()
        {
            let token = request.request.get_meta().get_progress_token();
            self.relays.bind(*mark, request.id.clone(), token);
        }
        self.inner.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        let relays = Arc::clone(&self.relays);
        let next = self.inner.receive();
        async move {
            let mut message = next.await?;
            relays.attribute(&mut message);
            Some(message)
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ListRootsRequest, NumberOrString};

    use super::*;

    fn roots() -> ServerRequest {
        ServerRequest::ListRootsRequest(ListRootsRequest::default())
    }

    fn attributed(relays: &Relays, message: serde_json::Value) -> Option<Attribution> {
        let mut message: RxJsonRpcMessage<RoleClient> = serde_json::from_value(message).unwrap();
        relays.attribute(&mut message);
        match message {
            JsonRpcMessage::Request(r) => r.request.extensions().get::<Attribution>().cloned(),
            JsonRpcMessage::Notification(n) => {
                n.notification.extensions().get::<Attribution>().cloned()
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_unattributable_request_is_refused_and_counted() {
        let counters = Arc::new(RelayCounters::default());
        let relays = Relays::new(Arc::clone(&counters));
        let error = relays.relay(roots(), None).await.unwrap_err();
        assert!(error.message.contains("nothing tells"), "{}", error.message);
        let named = attributed(
            &relays,
            serde_json::json!({
                "jsonrpc": "2.0", "id": 1, "method": "roots/list",
                "params": { "_meta": { "relatedRequestId": 8 } }
            }),
        );
        let error = relays.relay(roots(), named.as_ref()).await.unwrap_err();
        assert!(error.message.contains("no request 8"), "{}", error.message);
        assert_eq!(counters.snapshot().relay_requests_refused, 2);
        assert_eq!(counters.snapshot().relay_requests_relayed, 0);
    }

    #[tokio::test]
    async fn an_unattributable_log_is_dropped_and_counted() {
        let counters = Arc::new(RelayCounters::default());
        let relays = Relays::new(Arc::clone(&counters));
        let log = || {
            LoggingMessageNotificationParam::new(
                rmcp::model::LoggingLevel::Info,
                serde_json::json!("x"),
            )
        };
        relays.log(log(), None).await;
        let named = attributed(
            &relays,
            serde_json::json!({
                "jsonrpc": "2.0", "method": "notifications/message",
                "params": { "level": "info", "data": "x", "_meta": { "progressToken": 3 } }
            }),
        );
        assert!(named.as_ref().is_some_and(|a| a.downstream.is_none()));
        relays.log(log(), named.as_ref()).await;
        assert_eq!(counters.snapshot().relay_logs_dropped, 2);
    }

    struct Nothing;
    impl rmcp::ServerHandler for Nothing {}

    /// A log attributed on receipt holds its request's answer until it is delivered (or
    /// the bound passes): on a legacy session the request's stream closes with the answer.
    #[tokio::test(start_paused = true)]
    async fn an_attributed_log_holds_the_answer_until_it_is_delivered() {
        let logs = Arc::new(PendingLogs::default());
        logs.settle(std::time::Duration::from_secs(60)).await; // nothing pending: at once
        assert_eq!(
            tokio::time::Instant::now().elapsed(),
            std::time::Duration::ZERO
        );
        logs.received();
        logs.received();
        let waiting = tokio::spawn({
            let logs = Arc::clone(&logs);
            async move { logs.settle(std::time::Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        logs.delivered();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one log is still on its way");
        let started = tokio::time::Instant::now();
        logs.delivered();
        waiting.await.unwrap();
        assert_eq!(
            started.elapsed(),
            std::time::Duration::ZERO,
            "released at delivery"
        );
        // A log that never comes holds the answer for the bound only.
        logs.received();
        let started = tokio::time::Instant::now();
        logs.settle(std::time::Duration::from_millis(500)).await;
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_closed_route_stays_unbound_and_closing_unbinds() {
        let relays = Relays::new(Arc::default());
        let token = ProgressToken(NumberOrString::Number(1));
        let (requests, _rx) = mpsc::channel(1);
        let (io, _other) = tokio::io::duplex(64);
        let running = rmcp::service::serve_directly(Nothing, io, None);
        let downstream = Downstream {
            peer: running.peer().clone(),
            requests,
            logs: Arc::default(),
        };
        let open = relays.open(downstream.clone());
        relays.bind(open, RequestId::Number(1), Some(token.clone()));
        assert_eq!(relays.len(), (1, 1, 1));
        relays.close(open);
        assert_eq!(relays.len(), (0, 0, 0));
        let closed = relays.open(downstream);
        relays.close(closed);
        relays.bind(closed, RequestId::Number(2), Some(token));
        assert_eq!(relays.len(), (0, 0, 0), "a late bind is ignored");
    }
}
