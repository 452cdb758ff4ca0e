//! Opening and closing connections: the connect task, installing a connection, the
//! `max_total` reservation (and eviction), taking broken connections out of service,
//! draining and closing them, and shutdown.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    PoolInner,
    key::{Failure, KeyState, Slots},
    lock,
};
use crate::{Connector, PoolError, pooled::Slot};

/// A connection that may be closed to make room: its key, itself, when it was last active.
type EvictionCandidate<'a, C> = (
    &'a Arc<KeyState<C>>,
    Arc<Slot<<C as Connector>::Connection>>,
    Instant,
);

impl<C: Connector> PoolInner<C> {
    /// Reserves room for one connection under `max_total` (closing an idle connection of
    /// another key if needed), then spawns the connect. The caller has counted it in
    /// `connecting`.
    pub(super) fn launch_connect(self: &Arc<Self>, state: &Arc<KeyState<C>>) {
        if let Err(error) = self.reserve_total(state) {
            self.connect_ended(state, Err(error), false);
            return;
        }
        let inner = Arc::clone(self);
        let state = Arc::clone(state);
        self.tasks.spawn_on(
            async move {
                let timeout = inner.config.connect_timeout;
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout(timeout, inner.connector.connect(&state.key)) => outcome,
                    () = inner.shutdown.cancelled() => {
                        inner.open_total.fetch_sub(1, Ordering::AcqRel);
                        inner.connect_ended(&state, Err(PoolError::Shutdown), false);
                        return;
                    }
                };
                let result = match outcome {
                    Ok(Ok(conn)) => Ok(conn),
                    Ok(Err(error)) => Err(PoolError::Connect {
                        key: Arc::clone(&state.label),
                        source: Arc::new(error),
                    }),
                    Err(_elapsed) => Err(PoolError::ConnectTimeout {
                        key: Arc::clone(&state.label),
                        after: timeout,
                    }),
                };
                match result {
                    Ok(conn) => inner.install(&state, conn).await,
                    Err(error) => {
                        tracing::warn!(key = %state.label, %error, "pool connect failed");
                        inner.open_total.fetch_sub(1, Ordering::AcqRel);
                        inner.connect_ended(&state, Err(error), true);
                    }
                }
            },
            &self.runtime,
        );
    }

    /// Puts a new connection in service (or closes it if the pool shut down meanwhile).
    pub(super) async fn install(self: &Arc<Self>, state: &Arc<KeyState<C>>, conn: C::Connection) {
        let now = Instant::now();
        let id = self.next_slot_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new(conn, id, now, Arc::clone(&state.room)));
        state.counters.connects.fetch_add(1, Ordering::Relaxed);
        state.counters.open.fetch_add(1, Ordering::AcqRel);
        {
            let mut control = state.control();
            if !self.shutdown.is_cancelled() {
                let mut slots = Slots::clone(&state.slots.load());
                slots.push(Arc::clone(&slot));
                state.slots.store(Arc::new(slots));
            }
            control.connecting -= 1;
            control.generation += 1;
            control.last_failure = None;
            control.last_activity = now;
        }
        state.changed.notify_waiters();
        tracing::debug!(key = %state.label, connection = id, "pool connected");
        if self.shutdown.is_cancelled() {
            slot.retire();
            self.open_total.fetch_sub(1, Ordering::AcqRel);
            self.close(state, &slot, None).await;
        }
    }

    /// Records the end of a connect that produced no connection and wakes its waiters.
    pub(super) fn connect_ended(
        &self,
        state: &KeyState<C>,
        result: Result<(), PoolError>,
        counts: bool,
    ) {
        let now = Instant::now();
        {
            let mut control = state.control();
            control.connecting -= 1;
            control.generation += 1;
            if let Err(error) = result {
                if counts {
                    state.counters.failures.fetch_add(1, Ordering::Relaxed);
                }
                control.last_failure = Some(Failure {
                    at: now,
                    error,
                    generation: control.generation,
                });
            }
        }
        state.changed.notify_waiters();
    }

    /// Counts one more connection under `max_total`, closing an idle connection of another
    /// key when the pool is full.
    pub(super) fn reserve_total(self: &Arc<Self>, state: &KeyState<C>) -> Result<(), PoolError> {
        let limit = self.config.max_total;
        loop {
            let reserved = self
                .open_total
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                    (open < limit).then_some(open + 1)
                })
                .is_ok();
            if reserved {
                return Ok(());
            }
            if !self.evict_idle(state) {
                return Err(PoolError::LimitReached {
                    key: Arc::clone(&state.label),
                    limit,
                });
            }
        }
    }

    /// Closes the longest-idle connection of another key, preferring keys above their
    /// `min` (a key at its `min` would reconnect at once); whether there was one.
    pub(super) fn evict_idle(self: &Arc<Self>, except: &KeyState<C>) -> bool {
        let keys = self.keys.load();
        // (key, slot, last active) of the longest-idle connection so far, above `min`
        // first.
        let mut best: [Option<EvictionCandidate<'_, C>>; 2] = [None, None];
        for state in keys.values() {
            if std::ptr::eq(Arc::as_ptr(state), except) {
                continue;
            }
            let slots = state.slots.load();
            let rank = usize::from(slots.len() <= self.config.min);
            for slot in slots.iter() {
                if slot.in_flight() > 0 || slot.is_retired() {
                    continue;
                }
                let last_active = lock(&slot.watch).last_active;
                if best[rank].as_ref().is_none_or(|(_, _, t)| last_active < *t) {
                    best[rank] = Some((state, Arc::clone(slot), last_active));
                }
            }
        }
        let [above_min, at_min] = best;
        let Some((state, slot, _)) = above_min.or(at_min) else {
            return false;
        };
        let removed = {
            let _control = state.control();
            let current = state.slots.load_full();
            let before = current.len();
            let rest: Slots<C::Connection> = current
                .iter()
                .filter(|s| !Arc::ptr_eq(s, &slot))
                .cloned()
                .collect();
            let removed = rest.len() < before;
            if removed {
                state.slots.store(Arc::new(rest));
            }
            removed
        };
        if removed {
            tracing::debug!(key = %state.label, connection = slot.id, "evicted an idle connection to make room");
            state.counters.reaped.fetch_add(1, Ordering::Relaxed);
            self.retire(state, slot, Some(self.config.drain_timeout));
        }
        // Either this call evicted it or another did: room was made either way.
        true
    }

    /// Removes closed and broken connections from service (they are replaced by the next
    /// connect).
    pub(super) fn prune(self: &Arc<Self>, state: &Arc<KeyState<C>>) {
        if state.slots.load().iter().all(|s| self.usable(s)) {
            return;
        }
        let dead: Slots<C::Connection> = {
            let mut control = state.control();
            let current = state.slots.load_full();
            let (keep, dead): (Slots<C::Connection>, Slots<C::Connection>) =
                current.iter().cloned().partition(|s| self.usable(s));
            if dead.is_empty() {
                return;
            }
            state.slots.store(Arc::new(keep));
            control.last_activity = Instant::now();
            dead
        };
        for slot in dead {
            tracing::info!(key = %state.label, connection = slot.id, "replacing a closed or broken connection");
            state.counters.replaced.fetch_add(1, Ordering::Relaxed);
            // Broken: nothing useful will come from waiting for its requests.
            self.retire(state, slot, None);
        }
    }

    /// Takes `slot` (already removed from the key's list) out of service and closes it
    /// in a background task once its requests are done (up to `drain`; `None`: at once).
    pub(super) fn retire(
        self: &Arc<Self>,
        state: &Arc<KeyState<C>>,
        slot: Arc<Slot<C::Connection>>,
        drain: Option<Duration>,
    ) {
        slot.retire();
        self.open_total.fetch_sub(1, Ordering::AcqRel);
        let inner = Arc::clone(self);
        let state = Arc::clone(state);
        self.tasks.spawn_on(
            async move { inner.close(&state, &slot, drain).await },
            &self.runtime,
        );
    }

    /// Waits for `slot`'s requests (up to `drain`), then closes its connection.
    pub(super) async fn close(
        &self,
        state: &KeyState<C>,
        slot: &Slot<C::Connection>,
        drain: Option<Duration>,
    ) {
        if let Some(drain) = drain
            && tokio::time::timeout(drain, slot.drained()).await.is_err()
        {
            tracing::warn!(
                key = %state.label,
                connection = slot.id,
                in_flight = slot.in_flight(),
                "closing a connection with requests still in flight"
            );
        }
        self.connector.close(&slot.conn).await;
        state.counters.open.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!(key = %state.label, connection = slot.id, "pool connection closed");
    }

    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.shutdown.cancel();
        self.tasks.close();
        let keys = self.keys.load_full();
        for state in keys.values() {
            let slots = {
                let _control = state.control();
                let slots = state.slots.load_full();
                state.slots.store(Arc::new(Vec::new()));
                slots
            };
            for slot in slots.iter() {
                self.retire(state, Arc::clone(slot), Some(self.config.drain_timeout));
            }
            state.changed.notify_waiters();
        }
        self.tasks.wait().await;
    }
}
