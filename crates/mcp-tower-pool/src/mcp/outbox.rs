//! [`PeerOutbox`]: notifications to one downstream client, sent from a task of its own
//! through a bounded queue, so that a client that does not read cannot hold up the
//! others.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use rmcp::{Peer, RoleServer, model::ServerNotification};
use tokio::sync::mpsc;

use super::relay::RelayCounters;

/// A downstream client's queue of notifications, with the task that sends them.
///
/// Fanning a notification out to many clients by awaiting each send in turn lets one
/// client that never reads its stream (its transport's buffer full, so the send never
/// completes) stall every client after it. With an outbox per client the fan-out only
/// enqueues ([`push`](Self::push) never waits): each client's task sends its own
/// notifications, in order, and a client that falls `capacity` notifications behind loses
/// the newer ones (counted in [`dropped`](Self::dropped)) instead of holding up the
/// others, and instead of the gateway buffering for it without bound. A task per
/// notification with a timeout would keep neither the order nor a bound on memory, and
/// would hold the others up by time rather than not at all.
///
/// The task ends when the outbox is dropped (after sending what is queued) or when the
/// client's transport closes.
///
/// ```no_run
/// # use mcp_tower_pool::PeerOutbox;
/// # use rmcp::model::{ServerNotification, ToolListChangedNotification};
/// # fn fan_out(peers: Vec<rmcp::Peer<rmcp::RoleServer>>) {
/// let outboxes: Vec<PeerOutbox> = peers.into_iter().map(|p| PeerOutbox::spawn(p, 64)).collect();
/// let changed =
///     ServerNotification::ToolListChangedNotification(ToolListChangedNotification::default());
/// for outbox in &outboxes {
///     outbox.push(changed.clone());
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct PeerOutbox {
    queue: mpsc::Sender<ServerNotification>,
    dropped: AtomicU64,
    /// The connector's counters, for an outbox made by [`McpConnector::outbox`].
    ///
    /// [`McpConnector::outbox`]: super::McpConnector::outbox
    counters: Option<Arc<RelayCounters>>,
}

impl PeerOutbox {
    /// An outbox for `peer` holding at most `capacity` (at least 1) notifications not yet
    /// sent; spawns its task on the current Tokio runtime.
    pub fn spawn(peer: Peer<RoleServer>, capacity: usize) -> Self {
        Self::spawn_counted(peer, capacity, None)
    }

    pub(crate) fn spawn_counted(
        peer: Peer<RoleServer>,
        capacity: usize,
        counters: Option<Arc<RelayCounters>>,
    ) -> Self {
        let (queue, mut queued) = mpsc::channel::<ServerNotification>(capacity.max(1));
        tokio::spawn(async move {
            while let Some(notification) = queued.recv().await {
                if let Err(error) = peer.send_notification(notification).await {
                    if peer.is_transport_closed() {
                        return;
                    }
                    tracing::debug!(%error, "could not send a notification to a client");
                }
            }
        });
        Self {
            queue,
            dropped: AtomicU64::new(0),
            counters,
        }
    }

    /// Queues `notification` for the client, without waiting. `false` when it was dropped
    /// (and counted) instead: the client is `capacity` notifications behind, or gone.
    pub fn push(&self, notification: ServerNotification) -> bool {
        match self.queue.try_send(notification) {
            Ok(()) => true,
            Err(error) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(counters) = &self.counters {
                    counters
                        .notifications_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                if matches!(error, mpsc::error::TrySendError::Full(_)) {
                    tracing::debug!(dropped, "a client is not reading its notifications");
                }
                false
            }
        }
    }

    /// How many notifications this outbox dropped (an outbox made by
    /// [`McpConnector::outbox`](super::McpConnector::outbox) also counts them in the
    /// connector's [`RelayStats`](super::RelayStats)).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether its task has ended (the client's transport closed).
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rmcp::{
        ServerHandler,
        model::{ServerNotification, ToolListChangedNotification},
        service::{RunningService, serve_directly},
    };
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

    use super::*;

    struct Nothing;
    impl ServerHandler for Nothing {}

    /// A downstream session over a pipe, with no handshake; the other end of the pipe.
    fn session() -> (RunningService<RoleServer, Nothing>, DuplexStream) {
        // A small pipe: a client that does not read blocks the second notification.
        let (ours, theirs) = tokio::io::duplex(64);
        (serve_directly(Nothing, ours, None), theirs)
    }

    fn changed() -> ServerNotification {
        ServerNotification::ToolListChangedNotification(ToolListChangedNotification::default())
    }

    const CAPACITY: usize = 8;
    const SENT: usize = 500;

    #[tokio::test]
    async fn a_client_that_never_reads_holds_up_no_one_else() {
        // Never read: its sends never complete once the pipe is full.
        let (stuck, _unread) = session();
        let connector =
            super::super::McpConnector::new(Vec::<(String, super::super::UpstreamConfig)>::new())
                .unwrap();
        let stuck = connector.outbox(stuck.peer().clone(), CAPACITY);
        let mut readers = Vec::new();
        let mut outboxes = Vec::new();
        let mut services = Vec::new();
        for _ in 0..2 {
            let (running, theirs) = session();
            outboxes.push(PeerOutbox::spawn(running.peer().clone(), CAPACITY));
            services.push(running);
            readers.push(BufReader::new(theirs).lines());
        }
        // The bound only turns a hang (a client held up) into a failure.
        let hang = std::time::Duration::from_secs(20);
        for n in 0..SENT {
            // The stuck client first, as the one a sequential fan-out would wait on.
            stuck.push(changed());
            for outbox in &outboxes {
                assert!(outbox.push(changed()), "notification {n} dropped");
            }
            for reader in &mut readers {
                let line = tokio::time::timeout(hang, reader.next_line())
                    .await
                    .expect("a reading client was held up")
                    .unwrap()
                    .unwrap();
                assert!(line.contains("notifications/tools/list_changed"), "{line}");
            }
        }
        assert_eq!(outboxes.iter().map(PeerOutbox::dropped).sum::<u64>(), 0);
        assert!(
            stuck.dropped() >= (SENT - CAPACITY - 2) as u64,
            "the stuck client's excess is dropped and counted: {}",
            stuck.dropped()
        );
        assert!(!stuck.is_closed(), "still connected, just not reading");
        assert_eq!(
            connector.relay_stats().relay_notifications_dropped,
            stuck.dropped(),
            "counted in the connector's stats"
        );
        let mut figures = Vec::new();
        mcp_tower_core::LayerReport::figures(&connector.relay_report(), &mut figures);
        let dropped = figures
            .iter()
            .find(|f| f.name == "mcp_relay_notifications_dropped_total")
            .unwrap();
        assert_eq!(dropped.value, stuck.dropped() as f64);
    }
}
