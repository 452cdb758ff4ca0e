//! [`Connector`]: how a [`Pool`](crate::Pool) opens, checks and closes one kind of
//! multiplexed connection.

use std::{fmt, future::Future, hash::Hash};

/// Opens, checks and closes the connections of a [`Pool`](crate::Pool).
///
/// The pool is written for **multiplexed** connections: one connection carries many
/// concurrent requests (an MCP session, an SSH connection with its channels, an HTTP/2
/// connection). Callers therefore *share* a connection — [`Pool::get`](crate::Pool::get)
/// hands out a [`Pooled`](crate::Pooled) reference and counts it as one request in flight on
/// that connection — rather than check it out exclusively as deadpool and bb8 do. A
/// connection that can carry only one request at a time is better served by those crates.
///
/// Implementations say three things about their connections, and optionally two more:
///
/// - [`connect`](Connector::connect): open a new connection to `key` (spawn the child
///   process and run the MCP handshake, dial and authenticate an SSH host…). The pool runs
///   at most one connect per key at a time, in a task of its own, under its
///   `connect_timeout`; it never holds a lock while this future runs.
/// - [`is_closed`](Connector::is_closed): whether a connection is known to be unusable
///   (its transport closed, its child process exited). Called on every
///   [`get`](crate::Pool::get) for the connection about to be handed out, so it must be cheap
///   and must not block: read a flag, do not talk to the peer.
/// - [`ping`](Connector::ping): an application-level round trip (MCP `ping`, an SSH
///   keep-alive), run by the pool's maintenance task every `health_interval` on each open
///   connection. An error or a timeout marks the connection broken; the next `get`
///   replaces it.
/// - [`close`](Connector::close) (optional): shut a connection down gracefully, once no
///   request is using it any more (after idle reaping, replacement or
///   [`Pool::shutdown`](crate::Pool::shutdown)). The default does nothing and lets the
///   connection's `Drop` clean up; override it when closing needs an `.await` (to reap a
///   child process, send a disconnect message).
/// - [`capacity`](Connector::capacity) (optional): how many requests a connection may
///   carry at once (an SSH server's `MaxSessions` caps the channels of one connection).
///   The pool never hands out a connection already carrying that many; when every
///   connection of a key is full it opens another (up to `max`), or the `get` waits for
///   a request to finish. The default is unlimited.
///
/// ```
/// use std::{convert::Infallible, sync::{Arc, atomic::{AtomicBool, Ordering}}};
/// use mcp_tower_pool::Connector;
///
/// /// A "connection" that is a shared flag; a real one would hold a session.
/// #[derive(Debug)]
/// struct Loopback;
///
/// impl Connector for Loopback {
///     type Key = String;
///     type Connection = Arc<AtomicBool>;
///     type Error = Infallible;
///
///     async fn connect(&self, _key: &String) -> Result<Self::Connection, Infallible> {
///         Ok(Arc::new(AtomicBool::new(false)))
///     }
///     fn is_closed(&self, conn: &Self::Connection) -> bool {
///         conn.load(Ordering::Relaxed)
///     }
///     async fn ping(&self, _conn: &Self::Connection) -> Result<(), Infallible> {
///         Ok(())
///     }
/// }
/// ```
pub trait Connector: Send + Sync + 'static {
    /// What a connection is opened to: an upstream's name, a `user@host:port`… Its
    /// `Display` form labels the key in [`PoolStats`](crate::PoolStats) and metrics, so it
    /// must not contain secrets.
    type Key: Clone + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static;
    /// One multiplexed connection. Shared by every caller that [`get`](crate::Pool::get)s
    /// it at the same time, hence `Sync`.
    type Connection: Send + Sync + 'static;
    /// Why a connect or a ping failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection to `key`.
    fn connect(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Whether `conn` is known to be unusable. Cheap and non-blocking: called on every
    /// [`get`](crate::Pool::get).
    fn is_closed(&self, conn: &Self::Connection) -> bool;

    /// Checks `conn` with a round trip to its peer.
    fn ping(&self, conn: &Self::Connection)
    -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Requests `conn` may carry at once; [`Pool::get`](crate::Pool::get) hands out a
    /// connection only while it carries fewer. Called on every `get` like
    /// [`is_closed`](Connector::is_closed), so it must be cheap. It may change over a
    /// connection's life (a connection that learns its peer's real limit lowers it). The
    /// default is [`usize::MAX`]: no limit.
    fn capacity(&self, conn: &Self::Connection) -> usize {
        let _ = conn;
        usize::MAX
    }

    /// Shuts `conn` down once nothing uses it any more. The default does nothing (the
    /// connection's `Drop` cleans up).
    fn close(&self, conn: &Self::Connection) -> impl Future<Output = ()> + Send {
        let _ = conn;
        std::future::ready(())
    }
}
