//! One pooled connection ([`Slot`], internal) and the shared reference a caller gets
//! ([`Pooled`]).
//!
//! Callers share a connection the way hyper-util's pool shares an HTTP/2 connection
//! (`Reservation::Shared`): the pool keeps the connection, each caller holds a reference
//! that counts as one request in flight on it, and dropping the reference gives nothing
//! back but that count.

use std::{
    fmt,
    ops::Deref,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::{sync::Notify, time::Instant};

use crate::Connector;

/// The low 32 bits of [`Slot::counts`] are the requests in flight, the high 32 bits the
/// number of times the connection was handed out (wrapping). One atomic add per `get` and
/// one subtract per release keep both.
const ONE_USE: u64 = 1 << 32;
const IN_FLIGHT_MASK: u64 = ONE_USE - 1;

/// What the maintenance task remembers about a slot between two ticks.
#[derive(Debug)]
pub(crate) struct SlotWatch {
    /// The use count seen at the last tick.
    pub(crate) uses: u32,
    /// The last tick at which the slot was busy or had been used since the tick before.
    pub(crate) last_active: Instant,
    /// When it was last pinged (or opened).
    pub(crate) last_ping: Instant,
}

/// Wakes the callers of a key that wait for a connection with room (every connection at
/// its [`capacity`](Connector::capacity) and the key at `max`) when a request ends. Shared
/// by the key and its slots; a release costs one atomic load while nobody waits.
#[derive(Debug, Default)]
pub(crate) struct Room {
    waiting: AtomicUsize,
    notify: Notify,
}

impl Room {
    /// Counts a caller as waiting until the guard drops. Register (and enable the
    /// [`notified`](Room::notified) future) *before* looking for room again: either that
    /// look sees the release, or the release sees the waiter.
    pub(crate) fn wait(&self) -> RoomWaiter<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        RoomWaiter { room: self }
    }

    /// The notification of the next release.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    fn freed(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

/// A caller waiting for room (see [`Room::wait`]).
#[derive(Debug)]
pub(crate) struct RoomWaiter<'a> {
    room: &'a Room,
}

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        self.room.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open connection in the pool.
pub(crate) struct Slot<T> {
    pub(crate) conn: T,
    pub(crate) id: u64,
    counts: AtomicU64,
    retired: AtomicBool,
    broken: AtomicBool,
    pinging: AtomicBool,
    drained: Notify,
    room: Arc<Room>,
    pub(crate) watch: Mutex<SlotWatch>,
}

impl<T> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight())
            .field("retired", &self.is_retired())
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl<T> Slot<T> {
    pub(crate) fn new(conn: T, id: u64, now: Instant, room: Arc<Room>) -> Self {
        Self {
            conn,
            id,
            counts: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            pinging: AtomicBool::new(false),
            drained: Notify::new(),
            room,
            watch: Mutex::new(SlotWatch {
                uses: 0,
                last_active: now,
                last_ping: now,
            }),
        }
    }

    /// Requests in flight on the connection.
    pub(crate) fn in_flight(&self) -> usize {
        (self.counts.load(Ordering::Relaxed) & IN_FLIGHT_MASK) as usize
    }

    /// (in flight, uses) read together.
    pub(crate) fn counts(&self) -> (usize, u32) {
        let counts = self.counts.load(Ordering::Acquire);
        ((counts & IN_FLIGHT_MASK) as usize, (counts >> 32) as u32)
    }

    /// Counts one more request on the connection, unless it already carries `capacity`
    /// or has been retired (then the caller must pick another). Pairs with
    /// [`Slot::retire`]: either this sees the retirement, or the retiring side sees this
    /// request and waits for it.
    pub(crate) fn acquire(&self, capacity: usize) -> bool {
        if capacity >= IN_FLIGHT_MASK as usize {
            self.counts.fetch_add(ONE_USE + 1, Ordering::SeqCst);
        } else {
            let limit = capacity as u64;
            let counted = self
                .counts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |counts| {
                    ((counts & IN_FLIGHT_MASK) < limit).then(|| counts.wrapping_add(ONE_USE + 1))
                });
            if counted.is_err() {
                return false;
            }
        }
        if self.retired.load(Ordering::SeqCst) {
            self.release();
            return false;
        }
        true
    }

    /// Takes a request off the connection.
    pub(crate) fn release(&self) {
        let before = self.counts.fetch_sub(1, Ordering::SeqCst);
        if before & IN_FLIGHT_MASK == 1 && self.retired.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
        self.room.freed();
    }

    /// Takes the slot out of service: no `get` hands it out any more.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Claims the right to ping the slot; `false` if a ping is already running.
    pub(crate) fn start_ping(&self) -> bool {
        !self.pinging.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn end_ping(&self) {
        self.pinging.store(false, Ordering::Release);
    }

    /// Waits until no request is in flight (call after [`Slot::retire`]).
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.counts.load(Ordering::SeqCst) & IN_FLIGHT_MASK == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A connection handed out by [`Pool::get`](crate::Pool::get): a shared reference that
/// counts as one request in flight on the connection until it is dropped.
///
/// It dereferences to the connection. Several callers hold a `Pooled` to the same connection
/// at once (the connection is multiplexed); dropping it does not close anything.
pub struct Pooled<C: Connector> {
    slot: Arc<Slot<C::Connection>>,
}

impl<C: Connector> Pooled<C> {
    pub(crate) fn new(slot: Arc<Slot<C::Connection>>) -> Self {
        Self { slot }
    }

    /// The connection.
    pub fn connection(&self) -> &C::Connection {
        &self.slot.conn
    }

    /// A number identifying the connection within its pool (stable for its life), to tell
    /// whether two callers share one.
    pub fn connection_id(&self) -> u64 {
        self.slot.id
    }

    /// Requests in flight on the connection, this one included.
    pub fn in_flight(&self) -> usize {
        self.slot.in_flight()
    }

    /// Tells the pool the connection is unusable (a request on it failed with a transport
    /// error): the next `get` opens a replacement instead of handing it out again. It is
    /// closed once its requests in flight are done.
    pub fn mark_broken(&self) {
        self.slot.mark_broken();
    }
}

impl<C: Connector> Deref for Pooled<C> {
    type Target = C::Connection;

    fn deref(&self) -> &C::Connection {
        &self.slot.conn
    }
}

impl<C: Connector> Drop for Pooled<C> {
    fn drop(&mut self) {
        self.slot.release();
    }
}

impl<C: Connector> fmt::Debug for Pooled<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("connection_id", &self.slot.id)
            .field("in_flight", &self.slot.in_flight())
            .finish_non_exhaustive()
    }
}
