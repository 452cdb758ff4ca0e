//! Handing out connections: the warm path (no lock), the cold path (single-flight
//! connect), and the unpooled path.

use std::{
    cell::Cell,
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, atomic::Ordering},
};

use tokio::time::Instant;

use super::{
    PoolInner,
    key::{Control, KeyState},
    lock,
};
use crate::{Connector, PoolError, Pooled, pooled::Slot};

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// A cheap random index below `n` (xorshift per thread) for the power of two choices.
fn random_below(n: usize) -> usize {
    RNG.with(|rng| {
        let mut x = rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rng.set(x);
        ((x >> 32) as usize * n) >> 32
    })
}

impl<C: Connector> PoolInner<C> {
    pub(super) fn declare(&self, key: C::Key, required: bool) {
        let state = self.key_state(&key);
        state.declared.store(true, Ordering::Relaxed);
        if required {
            state.required.store(true, Ordering::Relaxed);
        }
    }

    /// The key's state, created if it is new.
    pub(super) fn key_state(&self, key: &C::Key) -> Arc<KeyState<C>> {
        if let Some(state) = self.keys.load().get(key) {
            return Arc::clone(state);
        }
        let _writer = lock(&self.keys_write);
        let current = self.keys.load_full();
        if let Some(state) = current.get(key) {
            return Arc::clone(state);
        }
        let state = Arc::new(KeyState::new(key.clone(), Instant::now()));
        let mut next = HashMap::clone(&current);
        next.insert(key.clone(), Arc::clone(&state));
        self.keys.store(Arc::new(next));
        state
    }

    pub(super) fn usable(&self, slot: &Slot<C::Connection>) -> bool {
        !slot.is_broken() && !slot.is_retired() && !self.connector.is_closed(&slot.conn)
    }

    /// Requests `slot` may carry at once (the connector's [`capacity`](Connector::capacity),
    /// at least 1).
    pub(super) fn capacity(&self, slot: &Slot<C::Connection>) -> usize {
        self.connector.capacity(&slot.conn).max(1)
    }

    /// The warm path: the least busy usable connection with room, without a lock.
    pub(super) fn try_pick(self: &Arc<Self>, state: &Arc<KeyState<C>>) -> Option<Pooled<C>> {
        let slots = state.slots.load();
        let chosen = match slots.len() {
            0 => return None,
            1 => &slots[0],
            2 => {
                let (a, b) = (&slots[0], &slots[1]);
                match (self.usable(a), self.usable(b)) {
                    (true, true) if b.in_flight() < a.in_flight() => b,
                    (true, _) => a,
                    (false, true) => b,
                    (false, false) => return None,
                }
            }
            n => {
                let i = random_below(n);
                let j = (i + 1 + random_below(n - 1)) % n;
                let (a, b) = (&slots[i], &slots[j]);
                if self.usable(a) && self.usable(b) {
                    if b.in_flight() < a.in_flight() { b } else { a }
                } else {
                    slots
                        .iter()
                        .filter(|s| self.usable(s))
                        .min_by_key(|s| s.in_flight())?
                }
            }
        };
        let chosen = if self.usable(chosen) && chosen.acquire(self.capacity(chosen)) {
            chosen
        } else {
            // Full (at its capacity) or gone meanwhile: the least busy other one with room.
            let other = slots
                .iter()
                .filter(|s| self.usable(s) && s.in_flight() < self.capacity(s))
                .min_by_key(|s| s.in_flight())?;
            if !other.acquire(self.capacity(other)) {
                return None;
            }
            other
        };
        // Grow when even the least busy connection is loaded (rare: one comparison here).
        if chosen.in_flight() > self.config.target_in_flight && slots.len() < self.config.max {
            self.grow(state);
        }
        Some(Pooled::new(Arc::clone(chosen)))
    }

    /// Starts one more connect for `state` if it is below `max` and none is in progress.
    pub(super) fn grow(self: &Arc<Self>, state: &Arc<KeyState<C>>) {
        let now = Instant::now();
        {
            let mut control = state.control();
            if control.connecting > 0
                || state.slots.load().len() + control.connecting >= self.config.max
                || self.in_backoff(&control, now).is_some()
            {
                return;
            }
            control.connecting += 1;
        }
        self.launch_connect(state);
    }

    /// Whether the key's last connect failed recently: the error to report if so.
    pub(super) fn in_backoff(&self, control: &Control, now: Instant) -> Option<PoolError> {
        let failure = control.last_failure.as_ref()?;
        let until = failure.at + self.config.connect_backoff;
        (now < until).then(|| PoolError::Backoff {
            key: Arc::from(failure.error.key().unwrap_or_default()),
            last: Box::new(failure.error.clone()),
            retry_in: until - now,
        })
    }

    /// The cold path: waits for the key's connect (single flight), starting it if needed,
    /// or — every connection at its capacity and the key at `max` (or its connects backing
    /// off) — for a request on one of them to end.
    pub(super) async fn get_slow(
        self: &Arc<Self>,
        state: &Arc<KeyState<C>>,
    ) -> Result<Pooled<C>, PoolError> {
        let mut waited_since: Option<u64> = None;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(PoolError::Shutdown);
            }
            self.prune(state);
            if let Some(pooled) = self.try_pick(state) {
                return Ok(pooled);
            }
            let notified = state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let room = state.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let _waiter = state.room.wait();
            let (lead, connecting, open) = {
                let mut control = state.control();
                let now = Instant::now();
                control.used = true;
                control.last_activity = now;
                // A usable connection that is only full: wait for room on it rather than
                // fail with a connect's error.
                let open = state.slots.load().iter().any(|s| self.usable(s));
                if !open
                    && let Some(since) = waited_since
                    && let Some(failure) = &control.last_failure
                    && failure.generation > since
                {
                    // The connect this caller waited for failed: report it, as every
                    // other waiter does, rather than start another.
                    return Err(failure.error.clone());
                }
                let mut lead =
                    control.connecting == 0 && state.slots.load().len() < self.config.max;
                if lead {
                    match self.in_backoff(&control, now) {
                        Some(backoff) if !open => return Err(backoff),
                        Some(_) => lead = false,
                        None => control.connecting += 1,
                    }
                }
                waited_since.get_or_insert(control.generation);
                (lead, control.connecting, open)
            };
            if lead {
                self.launch_connect(state);
            }
            if let Some(pooled) = self.try_pick(state) {
                return Ok(pooled);
            }
            if connecting == 0 && !open {
                // Nothing to wait for: the key is at `max` and a connection changed under
                // this caller (retired or closed). Look again.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut room => {}
                () = self.shutdown.cancelled() => return Err(PoolError::Shutdown),
            }
        }
    }

    /// `enabled = false`: a fresh connection for this caller alone, closed when it is done.
    pub(super) async fn get_unpooled(
        self: &Arc<Self>,
        key: &C::Key,
    ) -> Result<Pooled<C>, PoolError> {
        if self.shutdown.is_cancelled() {
            return Err(PoolError::Shutdown);
        }
        let state = self.key_state(key);
        self.reserve_total(&state)?;
        let timeout = self.config.connect_timeout;
        let conn = match tokio::time::timeout(timeout, self.connector.connect(key)).await {
            Ok(Ok(conn)) => conn,
            failed => {
                self.open_total.fetch_sub(1, Ordering::AcqRel);
                state.counters.failures.fetch_add(1, Ordering::Relaxed);
                return Err(match failed {
                    Ok(Err(error)) => PoolError::Connect {
                        key: Arc::clone(&state.label),
                        source: Arc::new(error),
                    },
                    _ => PoolError::ConnectTimeout {
                        key: Arc::clone(&state.label),
                        after: timeout,
                    },
                });
            }
        };
        state.counters.connects.fetch_add(1, Ordering::Relaxed);
        state.counters.open.fetch_add(1, Ordering::AcqRel);
        let id = self.next_slot_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new(conn, id, Instant::now(), Arc::clone(&state.room)));
        // Acquired before it is retired, so the closer waits for this caller.
        slot.acquire(usize::MAX);
        slot.retire();
        let pooled = Pooled::new(Arc::clone(&slot));
        let inner = Arc::clone(self);
        self.tasks.spawn_on(
            async move {
                slot.drained().await;
                inner.connector.close(&slot.conn).await;
                state.counters.open.fetch_sub(1, Ordering::AcqRel);
                inner.open_total.fetch_sub(1, Ordering::AcqRel);
            },
            &self.runtime,
        );
        Ok(pooled)
    }
}
