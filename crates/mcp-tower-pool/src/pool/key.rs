//! What the pool knows about one key: its connections, its connect state, its counters.

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize},
    },
};

use arc_swap::ArcSwap;
use tokio::{sync::Notify, time::Instant};

use super::lock;
use crate::{
    Connector, PoolError,
    pooled::{Room, Slot},
};

pub(super) type Slots<T> = Vec<Arc<Slot<T>>>;

/// A failed connect, remembered for `connect_backoff` and reported to the callers that
/// waited for it.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) at: Instant,
    pub(super) error: PoolError,
    /// The connect generation that failed.
    pub(super) generation: u64,
}

/// The part of a key's state changed only under its lock (rarely: connects, prunes,
/// reaping).
#[derive(Debug)]
pub(super) struct Control {
    /// Connects in progress.
    pub(super) connecting: usize,
    /// Incremented when a connect ends, either way.
    pub(super) generation: u64,
    /// The last connect's failure, cleared by a successful connect.
    pub(super) last_failure: Option<Failure>,
    /// Whether a `get` ever asked for the key (then `min` connections are kept).
    pub(super) used: bool,
    /// The last time the key had a connection or a caller, for forgetting unused keys.
    pub(super) last_activity: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connects: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) reaped: AtomicU64,
    pub(super) replaced: AtomicU64,
    pub(super) ping_failures: AtomicU64,
    /// Open connections, including the ones draining before close.
    pub(super) open: AtomicUsize,
}

/// Everything the pool knows about one key.
pub(crate) struct KeyState<C: Connector> {
    pub(super) key: C::Key,
    pub(super) label: Arc<str>,
    /// The connections to hand out, read without a lock on every `get`. Written only under
    /// `control`.
    pub(super) slots: ArcSwap<Slots<C::Connection>>,
    pub(super) control: Mutex<Control>,
    /// Woken when a connect ends.
    pub(super) changed: Notify,
    /// Woken when a request ends while callers wait for a connection with room.
    pub(super) room: Arc<Room>,
    pub(super) declared: AtomicBool,
    pub(super) required: AtomicBool,
    pub(super) counters: Counters,
}

impl<C: Connector> fmt::Debug for KeyState<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyState")
            .field("key", &self.key)
            .field("slots", &self.slots.load().len())
            .finish_non_exhaustive()
    }
}

impl<C: Connector> KeyState<C> {
    pub(super) fn new(key: C::Key, now: Instant) -> Self {
        Self {
            label: Arc::from(key.to_string()),
            key,
            slots: ArcSwap::from_pointee(Vec::new()),
            control: Mutex::new(Control {
                connecting: 0,
                generation: 0,
                last_failure: None,
                used: false,
                last_activity: now,
            }),
            changed: Notify::new(),
            room: Arc::default(),
            declared: AtomicBool::new(false),
            required: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    pub(super) fn control(&self) -> MutexGuard<'_, Control> {
        lock(&self.control)
    }
}
