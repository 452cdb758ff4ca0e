//! The pool's background task: reaps idle connections, pings open ones, opens the `min`
//! connections of each key, and forgets unused undeclared keys.
//!
//! It holds only a weak reference to the pool (dropping the last `Pool` stops it), takes
//! each key's lock only to swap its connection list, and runs pings and connects in tasks
//! of their own, so a slow upstream never delays a tick and nothing here blocks `get`.

use std::{
    collections::HashMap,
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

use tokio::time::{Instant, MissedTickBehavior};

use super::{
    PoolInner,
    key::{KeyState, Slots},
    lock,
};
use crate::{Connector, pooled::Slot};

/// Spawns the maintenance task of `pool`. Its first tick runs at once (opening declared
/// keys' connections).
pub(super) fn start<C: Connector>(pool: &Arc<PoolInner<C>>) {
    let weak: Weak<PoolInner<C>> = Arc::downgrade(pool);
    let shutdown = pool.shutdown.clone();
    let tick = pool.maintenance_tick();
    pool.runtime.spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let Some(pool) = weak.upgrade() else { return };
            pool.maintain(Instant::now());
        }
    });
}

impl<C: Connector> PoolInner<C> {
    pub(super) fn maintenance_tick(&self) -> Duration {
        let mut tick = (self.config.idle_timeout / 4).min(Duration::from_secs(1));
        if !self.config.health_interval.is_zero() {
            tick = tick.min(self.config.health_interval / 2);
        }
        tick.max(Duration::from_millis(5))
    }

    /// One pass of the maintenance task (see `maintenance.rs`).
    pub(super) fn maintain(self: &Arc<Self>, now: Instant) {
        let keys = self.keys.load_full();
        let mut forget = Vec::new();
        for state in keys.values() {
            self.prune(state);
            self.reap_and_ping(state, now);
            self.top_up(state, now);
            let control = state.control();
            if !state.declared.load(Ordering::Relaxed)
                && control.connecting == 0
                && state.slots.load().is_empty()
                && state.counters.open.load(Ordering::Acquire) == 0
                && now.saturating_duration_since(control.last_activity) >= self.config.idle_timeout
            {
                forget.push(state.key.clone());
            }
        }
        if !forget.is_empty() {
            let _writer = lock(&self.keys_write);
            let mut next = HashMap::clone(&self.keys.load());
            for key in forget {
                next.remove(&key);
            }
            self.keys.store(Arc::new(next));
        }
    }

    pub(super) fn reap_and_ping(self: &Arc<Self>, state: &Arc<KeyState<C>>, now: Instant) {
        let slots = state.slots.load_full();
        let mut idle = Vec::new();
        for slot in slots.iter() {
            let mut watch = lock(&slot.watch);
            let (in_flight, uses) = slot.counts();
            if in_flight > 0 || uses != watch.uses {
                watch.uses = uses;
                watch.last_active = now;
            } else if now.saturating_duration_since(watch.last_active) >= self.config.idle_timeout {
                idle.push(Arc::clone(slot));
            }
            let every = self.config.health_interval;
            if !every.is_zero()
                && now.saturating_duration_since(watch.last_ping) >= every
                && slot.start_ping()
            {
                watch.last_ping = now;
                self.spawn_ping(state, slot);
            }
        }
        if idle.is_empty() || slots.len() <= self.config.min {
            return;
        }
        let reaped: Slots<C::Connection> = {
            let _control = state.control();
            let current = state.slots.load_full();
            let mut room = current.len().saturating_sub(self.config.min);
            let mut keep = Vec::with_capacity(current.len());
            let mut reaped = Vec::new();
            for slot in current.iter() {
                let is_idle = idle.iter().any(|s| Arc::ptr_eq(s, slot)) && slot.in_flight() == 0;
                if is_idle && room > 0 {
                    room -= 1;
                    reaped.push(Arc::clone(slot));
                } else {
                    keep.push(Arc::clone(slot));
                }
            }
            if !reaped.is_empty() {
                state.slots.store(Arc::new(keep));
            }
            reaped
        };
        for slot in reaped {
            tracing::debug!(key = %state.label, connection = slot.id, "reaping an idle connection");
            state.counters.reaped.fetch_add(1, Ordering::Relaxed);
            self.retire(state, slot, Some(self.config.drain_timeout));
        }
    }

    pub(super) fn spawn_ping(
        self: &Arc<Self>,
        state: &Arc<KeyState<C>>,
        slot: &Arc<Slot<C::Connection>>,
    ) {
        let inner = Arc::clone(self);
        let state = Arc::clone(state);
        let slot = Arc::clone(slot);
        self.tasks.spawn_on(
            async move {
                let timeout = inner.config.ping_timeout;
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout(timeout, inner.connector.ping(&slot.conn)) => outcome,
                    () = inner.shutdown.cancelled() => {
                        slot.end_ping();
                        return;
                    }
                };
                let failure = match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error.to_string()),
                    Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
                };
                if let Some(reason) = failure
                    && !slot.is_retired()
                {
                    tracing::warn!(key = %state.label, connection = slot.id, %reason, "ping failed; the connection will be replaced");
                    state.counters.ping_failures.fetch_add(1, Ordering::Relaxed);
                    slot.mark_broken();
                }
                slot.end_ping();
            },
            &self.runtime,
        );
    }

    /// Opens connections for a key below `min` (declared keys, or keys used before).
    pub(super) fn top_up(self: &Arc<Self>, state: &Arc<KeyState<C>>, now: Instant) {
        let min = self.config.min;
        if min == 0 || !self.config.enabled || self.shutdown.is_cancelled() {
            return;
        }
        let missing = {
            let mut control = state.control();
            if !(state.declared.load(Ordering::Relaxed) || control.used)
                || self.in_backoff(&control, now).is_some()
            {
                return;
            }
            let have = state.slots.load().len() + control.connecting;
            let missing = min.saturating_sub(have);
            control.connecting += missing;
            missing
        };
        for _ in 0..missing {
            self.launch_connect(state);
        }
    }
}
