//! The single-flight machinery: the [`FlightTable`] of calls in progress, keyed by
//! [`CallKey`], and the [`Waiter`] through which each caller polls the [`Flight`] it is part
//! of.
//!
//! A *flight* is one execution of the inner service on behalf of every caller with the same
//! key that arrives while it runs. The flight, not the caller that started it, owns the inner
//! future (boxed, so that any of its waiters can poll it):
//!
//! - The inner future is polled on a waiter's own task, never spawned: rmcp's task-locals and
//!   the request task stay where rmcp put them.
//! - One waiter at a time is the *driver*: the one that polled the inner future last, whose
//!   waker the inner future holds. Only the driver polls it (unless nobody is driving), so a
//!   wake-up of the inner future costs one task poll, not one per waiter. When the driver
//!   leaves, every waiting waiter is woken and the first to run takes over.
//! - The outcome is published once, under the flight's lock, and the key is then removed from
//!   the table. A caller that finds a finished flight in the table (between the two steps)
//!   starts a new one instead of joining: nobody ever gets the answer of an execution that had
//!   finished before it arrived.
//! - When the last waiter leaves before the end, the inner future is dropped (the work is
//!   cancelled), the flight's cancellation token is cancelled and the key is freed.
//!
//! Lock order: a table shard, then a flight (only in [`FlightTable::join_or_lead`]). A flight's
//! lock is never held while taking a shard's, nor while polling or dropping the inner future,
//! nor while waking waiters.

use std::{
    fmt,
    future::Future,
    mem,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use dashmap::{DashMap, mapref::entry::Entry};
use mcp_tower_core::{
    CallKey, CallKeyBuildHasher, CallToolResponse, ToolCall,
    error::{Cancelled, Layer, Panicked},
};
use rmcp::ErrorData;
use slab::Slab;
use tokio_util::sync::CancellationToken;

/// What the inner service returns.
pub(crate) type Outcome = Result<CallToolResponse, ErrorData>;

/// The inner future, boxed so that it can move between the waiters that poll it.
pub(crate) type InnerFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The layer's counters, shared by every service a `DedupLayer` builds and by its handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) flights: AtomicU64,
    pub(crate) followers_served: AtomicU64,
    pub(crate) followers_rerun: AtomicU64,
    pub(crate) flights_cancelled: AtomicU64,
    pub(crate) flights_panicked: AtomicU64,
    pub(crate) waiters_cancelled: AtomicU64,
    /// Flights that have ended (finished or abandoned); `flights - flights_ended` run now.
    pub(crate) flights_ended: AtomicU64,
}

impl Stats {
    /// Flights running now.
    pub(crate) fn in_flight(&self) -> u64 {
        // Ended first: a flight ends after it starts, so this never underflows in practice,
        // and saturates if relaxed loads ever disagree.
        let ended = self.flights_ended.load(Ordering::Relaxed);
        self.flights.load(Ordering::Relaxed).saturating_sub(ended)
    }
}

/// The flights in progress of one `Dedup` service (shared by its clones).
pub(crate) struct FlightTable {
    flights: DashMap<CallKey, Arc<Flight>, CallKeyBuildHasher>,
    stats: Arc<Stats>,
}

impl fmt::Debug for FlightTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightTable")
            .field("keys", &self.flights.len())
            .finish_non_exhaustive()
    }
}

/// How a call entered a flight.
pub(crate) enum Joined {
    /// It started the flight: the caller must call the inner service with a call carrying
    /// `token` (when there is one) and hand the future to [`Flight::start`].
    Leader {
        waiter: Waiter,
        token: Option<CancellationToken>,
    },
    /// It joined a flight in progress.
    Follower(Waiter),
}

impl FlightTable {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            flights: DashMap::with_hasher(CallKeyBuildHasher::default()),
            stats,
        }
    }

    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Keys with a flight in the table.
    pub(crate) fn len(&self) -> usize {
        self.flights.len()
    }

    /// Joins the flight of `call`'s key if one is in progress, else starts one.
    pub(crate) fn join_or_lead(self: &Arc<Self>, call: &ToolCall) -> Joined {
        let key = call.key();
        let (flight, token, replaced) = match self.flights.entry(key) {
            Entry::Occupied(mut occupied) => {
                if let Some(waiter) = Flight::join(occupied.get()) {
                    return Joined::Follower(waiter);
                }
                // The flight under this key has finished (its outcome is being handed out)
                // or was abandoned, and is about to leave the table: replace it.
                let (flight, token) = self.new_flight(key, call);
                let replaced = occupied.insert(Arc::clone(&flight));
                (flight, token, Some(replaced))
            }
            Entry::Vacant(vacant) => {
                let (flight, token) = self.new_flight(key, call);
                vacant.insert(Arc::clone(&flight));
                (flight, token, None)
            }
        };
        // Dropped outside the shard lock.
        drop(replaced);
        self.stats.flights.fetch_add(1, Ordering::Relaxed);
        Joined::Leader {
            waiter: Waiter {
                flight,
                place: Place::leader(),
            },
            token,
        }
    }

    fn new_flight(
        self: &Arc<Self>,
        key: CallKey,
        call: &ToolCall,
    ) -> (Arc<Flight>, Option<CancellationToken>) {
        // Only a call with a request context has a token to replace.
        let token = call.context().map(|_| CancellationToken::new());
        let tool = match &call.policy().tool {
            Some((_, name)) => Arc::clone(name),
            None => Arc::from(call.name()),
        };
        let flight = Arc::new(Flight {
            key,
            tool,
            token: token.clone(),
            table: Arc::clone(self),
            state: Mutex::new(FlightState {
                stage: Stage::Starting,
                waiters: 1,
                leader_attached: true,
                driver: None,
                wakers: Slab::new(),
                followers_served: 0,
                followers_rerun: 0,
                waiters_cancelled: 0,
            }),
        });
        (flight, token)
    }

    /// Removes `flight` from the table, unless its key already holds a newer flight.
    fn unregister(&self, flight: &Arc<Flight>) {
        // Bound to a local so the flight is dropped after the shard lock is released.
        let removed = self
            .flights
            .remove_if(&flight.key, |_, current| Arc::ptr_eq(current, flight));
        drop(removed);
    }
}

/// One execution of the inner service, shared by the calls waiting for it.
pub(crate) struct Flight {
    key: CallKey,
    /// The tool's name, for the errors the flight raises.
    tool: Arc<str>,
    /// The cancellation token of the call the flight runs (when it has a request context):
    /// cancelled when the last waiter leaves.
    token: Option<CancellationToken>,
    table: Arc<FlightTable>,
    state: Mutex<FlightState>,
}

impl fmt::Debug for Flight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Flight")
            .field("key", &self.key)
            .field("tool", &self.tool)
            .field("stage", &state.stage.name())
            .field("waiters", &state.waiters)
            .finish_non_exhaustive()
    }
}

struct FlightState {
    stage: Stage,
    /// Waiters attached to the flight (the leader included, while it is).
    waiters: usize,
    /// Whether the waiter that started the flight is still attached.
    leader_attached: bool,
    /// The slot of the waiter whose waker the inner future holds.
    driver: Option<usize>,
    /// The wakers of the waiters that are waiting, by slot.
    wakers: Slab<Waker>,
    // Counted under the lock, added to the layer's stats when the flight is dropped.
    followers_served: u64,
    followers_rerun: u64,
    waiters_cancelled: u64,
}

enum Stage {
    /// The leader is calling the inner service.
    Starting,
    /// The inner future, waiting to be polled.
    Idle(InnerFuture),
    /// A waiter has taken the inner future out and is polling it.
    Polling,
    /// Finished with an outcome every waiter gets: a result (an `isError` one too) or an
    /// error.
    Shared(Arc<Outcome>),
    /// Finished with a response that belongs to the leader's request alone (`InputRequired`,
    /// `Task`): the leader takes it (`Some` until then); followers run their own call.
    /// Boxed: rare, and it keeps every other stage (and so every flight) small.
    Owned(Option<Box<CallToolResponse>>),
    /// Every waiter has left.
    Closed,
}

impl Stage {
    fn is_running(&self) -> bool {
        matches!(self, Stage::Starting | Stage::Idle(_) | Stage::Polling)
    }

    fn name(&self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Idle(_) => "idle",
            Stage::Polling => "polling",
            Stage::Shared(_) => "shared",
            Stage::Owned(_) => "owned",
            Stage::Closed => "closed",
        }
    }
}

impl FlightState {
    /// Stores `waker` in the waiter's slot (taking one on first use); returns the slot.
    fn register(&mut self, slot: &mut Option<usize>, waker: &Waker) -> usize {
        if let Some(index) = *slot
            && let Some(current) = self.wakers.get_mut(index)
        {
            if !current.will_wake(waker) {
                *current = waker.clone();
            }
            return index;
        }
        let index = self.wakers.insert(waker.clone());
        *slot = Some(index);
        index
    }

    /// Takes a waiter off the flight.
    fn detach(&mut self, slot: &mut Option<usize>, leader: bool) {
        if let Some(index) = slot.take() {
            self.wakers.try_remove(index);
            if self.driver == Some(index) {
                self.driver = None;
            }
        }
        self.waiters -= 1;
        if leader {
            self.leader_attached = false;
        }
    }

    /// Ends the flight with `outcome`. Returns what nobody may have: the response of a
    /// leader that is gone.
    fn set_outcome(&mut self, outcome: Outcome) -> Option<Outcome> {
        self.driver = None;
        if is_shareable(&outcome) {
            self.stage = Stage::Shared(Arc::new(outcome));
            None
        } else if self.leader_attached {
            self.stage = Stage::Owned(outcome.ok().map(Box::new));
            None
        } else {
            // The response belongs to a request that is gone; followers run their own.
            self.stage = Stage::Owned(None);
            Some(outcome)
        }
    }

    /// The inner future, if it is waiting to be polled and `slot` may poll it (it drives,
    /// or nobody does).
    fn take_inner(&mut self, slot: Option<usize>) -> Option<InnerFuture> {
        if self.driver.is_some() && self.driver != slot {
            return None;
        }
        match mem::replace(&mut self.stage, Stage::Polling) {
            Stage::Idle(inner) => Some(inner),
            other => {
                self.stage = other;
                None
            }
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let stats = &self.table.stats;
        for (counter, value) in [
            (&stats.followers_served, state.followers_served),
            (&stats.followers_rerun, state.followers_rerun),
            (&stats.waiters_cancelled, state.waiters_cancelled),
        ] {
            if value > 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        }
    }
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, FlightState> {
        // Nothing that can panic runs under the lock; recover anyway rather than wedge a key.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a follower, if the flight is still running.
    fn join(this: &Arc<Flight>) -> Option<Waiter> {
        let mut state = this.lock();
        if !state.stage.is_running() {
            return None;
        }
        state.waiters += 1;
        Some(Waiter {
            flight: Arc::clone(this),
            place: Place::follower(),
        })
    }

    /// Hands the flight the leader's inner future.
    pub(crate) fn start(&self, inner: InnerFuture) {
        let mut state = self.lock();
        if matches!(state.stage, Stage::Starting) {
            state.stage = Stage::Idle(inner);
        } else {
            // Unreachable: the leader stays attached until `start` returns, so the flight
            // cannot have been abandoned. Never poll a future nobody waits for.
            drop(state);
            drop_quietly(inner);
        }
    }

    /// The leader's call to the inner service panicked: every waiter gets the error.
    pub(crate) fn fail_to_start(self: &Arc<Self>, payload: Box<dyn std::any::Any + Send>) {
        let error = self.panicked(payload);
        self.publish(Err(error));
    }

    fn panicked(&self, payload: Box<dyn std::any::Any + Send>) -> ErrorData {
        self.table
            .stats
            .flights_panicked
            .fetch_add(1, Ordering::Relaxed);
        let error = Panicked::from_payload(Layer::Dedup, &self.tool, payload.as_ref());
        drop_quietly(payload);
        error.into()
    }

    /// Publishes the outcome of a flight nobody is polling (its start failed): wakes every
    /// waiter and frees the key.
    fn publish(self: &Arc<Self>, outcome: Outcome) {
        let mut state = self.lock();
        let discarded = state.set_outcome(outcome);
        let wakers = mem::take(&mut state.wakers);
        drop(state);
        self.ended(wakers, discarded);
    }

    /// After the outcome is set: wakes the waiters and frees the key (outside the lock).
    fn ended(self: &Arc<Self>, wakers: Slab<Waker>, discarded: Option<Outcome>) {
        self.table
            .stats
            .flights_ended
            .fetch_add(1, Ordering::Relaxed);
        for (_, waker) in wakers {
            waker.wake();
        }
        self.table.unregister(self);
        drop(discarded);
    }

    /// The error of a waiter whose caller cancelled.
    pub(crate) fn cancelled(&self) -> ErrorData {
        Cancelled {
            layer: Layer::Dedup,
            tool: self.tool.to_string(),
        }
        .into()
    }
}

/// What a waiter gets from its flight.
pub(crate) enum Delivery {
    /// The shared outcome: the last waiter to let go of it moves it, the others clone it
    /// (outside the flight's lock, straight into their own answer).
    Shared(Arc<Outcome>),
    /// An outcome that is this waiter's alone (it ran the flight by itself, or the response
    /// was the leader's own).
    Own(Outcome),
    /// The flight's response belongs to the leader's request alone: run your own call.
    RunOwnCall,
}

/// Whether every waiter may have `outcome`: a complete result (an `isError` one too) or an
/// error. `InputRequired` and `Task` responses belong to the request that produced them.
fn is_shareable(outcome: &Outcome) -> bool {
    matches!(outcome, Ok(CallToolResponse::Complete(_)) | Err(_))
}

/// One caller's place in a flight. Dropping it leaves the flight.
pub(crate) struct Waiter {
    flight: Arc<Flight>,
    place: Place,
}

/// A waiter's standing in its flight (apart from the flight, so that it can change while
/// the flight is locked).
#[derive(Debug)]
struct Place {
    /// The waiter's slot in the flight's wakers, taken when it first waits.
    slot: Option<usize>,
    /// Whether it started the flight.
    leader: bool,
    /// Whether it is still counted among the flight's waiters.
    attached: bool,
}

impl Place {
    fn leader() -> Self {
        Self {
            slot: None,
            leader: true,
            attached: true,
        }
    }

    fn follower() -> Self {
        Self {
            slot: None,
            leader: false,
            attached: true,
        }
    }

    /// Takes the waiter off the flight; the last one out of a finished flight closes it.
    fn detach(&mut self, state: &mut FlightState) {
        state.detach(&mut self.slot, self.leader);
        self.attached = false;
        if state.waiters == 0 && !state.stage.is_running() {
            state.stage = Stage::Closed;
        }
    }

    /// The waiter's share of a finished flight (and takes it off the flight), or `None`
    /// while the flight runs.
    fn take_share(&mut self, state: &mut FlightState, flight: &Flight) -> Option<Delivery> {
        let share = match &mut state.stage {
            Stage::Starting | Stage::Idle(_) | Stage::Polling => return None,
            Stage::Shared(outcome) => {
                if !self.leader {
                    state.followers_served += 1;
                }
                Delivery::Shared(Arc::clone(outcome))
            }
            Stage::Owned(response) => {
                if self.leader {
                    Delivery::Own(response.take().map(|r| *r).ok_or_else(|| {
                        ErrorData::internal_error(
                            "dedup: the flight's response was already taken",
                            None,
                        )
                    }))
                } else {
                    state.followers_rerun += 1;
                    Delivery::RunOwnCall
                }
            }
            // Unreachable while attached; never leave a caller hanging.
            Stage::Closed => Delivery::Own(Err(flight.cancelled())),
        };
        self.detach(state);
        Some(share)
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("flight", &self.flight)
            .field("place", &self.place)
            .finish()
    }
}

impl Waiter {
    pub(crate) fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// Drives the flight if it is this waiter's turn, else waits for it.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Delivery> {
        let flight = &*self.flight;
        let mut state = flight.lock();
        if let Some(inner) = state.take_inner(self.place.slot) {
            drop(state);
            return self.drive(inner, cx);
        }
        match self.place.take_share(&mut state, flight) {
            Some(delivery) => {
                drop(state);
                Poll::Ready(delivery)
            }
            None => {
                state.register(&mut self.place.slot, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Polls the inner future (taken out of the flight) on this waiter's task.
    fn drive(&mut self, mut inner: InnerFuture, cx: &mut Context<'_>) -> Poll<Delivery> {
        let outcome = match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => {
                let mut state = self.flight.lock();
                state.stage = Stage::Idle(inner);
                let slot = state.register(&mut self.place.slot, cx.waker());
                state.driver = Some(slot);
                return Poll::Pending;
            }
            Ok(Poll::Ready(outcome)) => {
                drop_quietly(inner);
                outcome
            }
            Err(payload) => {
                drop_quietly(inner);
                Err(self.flight.panicked(payload))
            }
        };
        Poll::Ready(self.finish(outcome))
    }

    /// Ends the flight with the outcome this waiter polled out of it, and takes its share.
    fn finish(&mut self, outcome: Outcome) -> Delivery {
        let flight = &*self.flight;
        let mut state = flight.lock();
        let (delivery, discarded) = if state.waiters == 1 && is_shareable(&outcome) {
            // Nobody joined: nothing to share, nobody to wake.
            state.stage = Stage::Closed;
            state.driver = None;
            if !self.place.leader {
                state.followers_served += 1;
            }
            self.place.detach(&mut state);
            (Delivery::Own(outcome), None)
        } else {
            let discarded = state.set_outcome(outcome);
            match self.place.take_share(&mut state, flight) {
                Some(share) => (share, discarded),
                // Unreachable: the outcome was just set.
                None => (Delivery::Own(Err(flight.cancelled())), discarded),
            }
        };
        // This waiter's waker left with it: the others are woken, not it.
        let wakers = mem::take(&mut state.wakers);
        drop(state);
        self.flight.ended(wakers, discarded);
        delivery
    }

    /// Leaves the flight before getting its outcome (the caller cancelled or went away).
    pub(crate) fn leave(&mut self) {
        if !self.place.attached {
            return;
        }
        let flight = &*self.flight;
        let mut state = flight.lock();
        let was_driver = self.place.slot.is_some() && state.driver == self.place.slot;
        let leader = self.place.leader;
        // A response that belonged to this waiter alone (the leader's own) goes with it.
        let mut leftover = None;
        if leader && let Stage::Owned(response) = &mut state.stage {
            leftover = response.take();
        }
        let running = state.stage.is_running();
        // Closes a finished flight if this was the last waiter (the outcome goes with it).
        let closed =
            (!running && state.waiters == 1).then(|| mem::replace(&mut state.stage, Stage::Closed));
        self.place.detach(&mut state);
        state.waiters_cancelled += 1;
        if !running {
            drop(state);
            drop(leftover);
            drop(closed);
            return;
        }
        if state.waiters == 0 {
            // Nobody is left to want the outcome: cancel the work and free the key.
            let stage = mem::replace(&mut state.stage, Stage::Closed);
            drop(state);
            let stats = &flight.table.stats;
            stats.flights_ended.fetch_add(1, Ordering::Relaxed);
            stats.flights_cancelled.fetch_add(1, Ordering::Relaxed);
            if let Some(token) = &flight.token {
                token.cancel();
            }
            if let Stage::Idle(inner) = stage {
                drop_quietly(inner);
            }
            flight.table.unregister(&self.flight);
            return;
        }
        if matches!(state.stage, Stage::Idle(_)) && (was_driver || state.driver.is_none()) {
            // The inner future may hold this waiter's waker: wake the others, and the first
            // to run takes over. Rare (a driver leaving), so waking all is cheap insurance
            // against a waiter whose task is slow to run.
            state.driver = None;
            let wakers: Vec<Waker> = state.wakers.iter().map(|(_, w)| w.clone()).collect();
            drop(state);
            for waker in wakers {
                waker.wake();
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Drops `value`, containing a panic of its destructor (a panicking tool's future may panic
/// again while it is dropped): it must not escape into a waiter that only wanted a result.
fn drop_quietly<T>(value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        // A payload whose own destructor panics would start over; leak it instead.
        mem::forget(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::Arc,
        task::{Context, Poll},
    };

    use mcp_tower_core::{CallResolver, PolicyDefaults, PolicyTable};
    use rmcp::{
        model::{CallToolResult, ContentBlock, Tool, ToolAnnotations},
        object,
    };

    fn resolver() -> Arc<CallResolver> {
        let tool = Tool::new("read", "", object!({"type": "object"}))
            .with_annotations(ToolAnnotations::new().read_only(true));
        Arc::new(CallResolver::new(
            PolicyTable::new(PolicyDefaults::default()).with_tools([tool]),
        ))
    }

    fn table() -> Arc<FlightTable> {
        Arc::new(FlightTable::new(Arc::new(Stats::default())))
    }

    fn result(text: &str) -> Outcome {
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }

    fn text(delivery: Poll<Delivery>) -> String {
        match delivery {
            Poll::Ready(Delivery::Own(Ok(CallToolResponse::Complete(r)))) => {
                r.content[0].as_text().unwrap().text.clone()
            }
            Poll::Ready(Delivery::Shared(outcome)) => {
                let Ok(CallToolResponse::Complete(r)) = &*outcome else {
                    panic!("expected a complete result")
                };
                r.content[0].as_text().unwrap().text.clone()
            }
            _ => panic!("expected a complete result"),
        }
    }

    fn lead(table: &Arc<FlightTable>, call: &ToolCall) -> Waiter {
        match table.join_or_lead(call) {
            Joined::Leader { waiter, .. } => waiter,
            Joined::Follower(_) => panic!("expected to lead"),
        }
    }

    #[test]
    fn a_finished_flight_still_in_the_table_is_never_joined() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 1}), resolver());
        let mut leader = lead(&table, &call);
        let first = Arc::clone(leader.flight());
        first.start(Box::pin(std::future::ready(result("first"))));

        // Publish without unregistering: the window between the two steps of `publish`.
        {
            let mut state = first.lock();
            state.stage = Stage::Shared(Arc::new(result("first")));
        }
        assert_eq!(table.len(), 1, "the finished flight is still in the table");

        let mut late = lead(&table, &call);
        assert!(
            !Arc::ptr_eq(late.flight(), &first),
            "a late caller starts a new flight"
        );
        late.flight()
            .start(Box::pin(std::future::ready(result("second"))));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(text(late.poll(&mut cx)), "second");
        assert_eq!(text(leader.poll(&mut cx)), "first");
        // The old flight's unregistering must not remove the new one.
        table.unregister(&first);
        assert_eq!(table.len(), 0, "the second flight freed its key");
    }

    #[test]
    fn followers_joining_while_the_leader_starts_wait_for_it() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 2}), resolver());
        let mut leader = lead(&table, &call);
        let Joined::Follower(mut follower) = table.join_or_lead(&call) else {
            panic!("expected to follow");
        };
        let mut cx = Context::from_waker(Waker::noop());
        assert!(follower.poll(&mut cx).is_pending(), "nothing to poll yet");
        leader
            .flight()
            .start(Box::pin(std::future::ready(result("shared"))));
        assert_eq!(text(follower.poll(&mut cx)), "shared");
        assert_eq!(text(leader.poll(&mut cx)), "shared");
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn the_last_waiter_out_abandons_the_flight() {
        let stats = Arc::new(Stats::default());
        let table = Arc::new(FlightTable::new(Arc::clone(&stats)));
        let call = ToolCall::with_resolver("read", object!({"q": 3}), resolver());
        let leader = lead(&table, &call);
        let Joined::Follower(follower) = table.join_or_lead(&call) else {
            panic!("expected to follow");
        };
        leader.flight().start(Box::pin(std::future::pending()));
        drop(leader);
        assert_eq!(table.len(), 1, "the follower keeps the flight");
        drop(follower);
        assert_eq!(table.len(), 0);
        assert_eq!(stats.flights_cancelled.load(Ordering::Relaxed), 1);
        assert_eq!(stats.waiters_cancelled.load(Ordering::Relaxed), 2);
        assert_eq!(stats.in_flight(), 0);
    }
}
