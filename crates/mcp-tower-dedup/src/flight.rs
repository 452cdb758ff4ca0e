//! The single-flight machinery: the [`FlightTable`] of calls in progress, keyed by
//! [`CallKey`]; the [`Lead`] of the caller that started a call; and the [`Flight`] that
//! followers share.
//!
//! A call nobody joins costs a table entry and nothing more: its leader holds the inner
//! future (boxed) and polls it itself, with no lock and no shared state. The [`Flight`] (the
//! state followers share: who waits, who drives, the outcome) is created by the first
//! follower, under the table's shard lock, and found by the leader when it finishes.
//!
//! - The inner future is polled on a waiter's own task, never spawned: rmcp's task-locals and
//!   the request task stay where rmcp put them.
//! - While the leader is there, it alone polls the inner future (followers wait, their
//!   wakers registered with the flight). When the leader goes away before the end (cancelled
//!   or dropped), it hands the future to the flight, and from then on one follower at a time
//!   is the *driver*: the one that polled it last, whose waker the inner future holds. When
//!   the driver leaves, every waiting follower is woken and the first to run takes over.
//! - The leader frees the key, then publishes the outcome to the flight: a caller arriving
//!   after that starts a new execution, and nobody ever gets the answer of an execution that
//!   had finished before it arrived. A follower that drives to the end publishes first and
//!   frees the key after; a caller that finds a finished flight in the table (between the two
//!   steps) starts a new one instead of joining.
//! - When the last waiter leaves before the end, the inner future is dropped (the work is
//!   cancelled), the flight's cancellation token is cancelled and the key is freed.
//!
//! Lock order: a table shard, then a flight (only when a follower joins). A flight's lock is
//! never held while taking a shard's, nor while polling or dropping the inner future, nor
//! while waking waiters. Every table entry carries the number of the flight that made it, so
//! a finished flight never removes its successor's entry.

use std::{
    any::Any,
    fmt,
    future::Future,
    mem,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
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

/// The inner future, boxed so that it can move from the leader to the flight.
pub(crate) type InnerFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A panic's payload, as `catch_unwind` returns it.
type Payload = Box<dyn Any + Send>;

/// The layer's counters, shared by every service a `DedupLayer` builds and by its handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) flights: AtomicU64,
    pub(crate) followers_served: AtomicU64,
    pub(crate) followers_rerun: AtomicU64,
    pub(crate) flights_cancelled: AtomicU64,
    pub(crate) flights_panicked: AtomicU64,
    pub(crate) waiters_cancelled: AtomicU64,
    pub(crate) bypassed_anonymous: AtomicU64,
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

    fn count_end(&self, cancelled: bool) {
        self.flights_ended.fetch_add(1, Ordering::Relaxed);
        if cancelled {
            self.flights_cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The calls in progress of one `Dedup` service (shared by its clones).
pub(crate) struct FlightTable {
    entries: DashMap<CallKey, Slot, CallKeyBuildHasher>,
    stats: Arc<Stats>,
    /// A clone of the inner service, kept when the first follower arrives, for the rare
    /// follower that must run its own call (the flight's response was the leader's alone):
    /// cloning it once here spares every follower a clone of its own. Type-erased so that
    /// the table stays independent of the service's type; only `Dedup<S>` sets and reads it,
    /// always with its own `S`.
    prototype: OnceLock<Mutex<Box<dyn Any + Send>>>,
}

/// A key's entry in the table: the call in progress under it.
struct Slot {
    /// The flight's number (from the layer's flight counter): unique per table.
    id: u64,
    /// The tool's name, for the errors the flight raises.
    tool: Arc<str>,
    /// The cancellation token of the call the flight runs (when it has a request context):
    /// cancelled when the last waiter leaves.
    token: Option<CancellationToken>,
    /// The state followers share; created by the first follower.
    flight: Option<Arc<Flight>>,
}

impl fmt::Debug for FlightTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightTable")
            .field("keys", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// How a call entered a flight.
pub(crate) enum Joined {
    /// It started the flight: the caller must call the inner service with a call carrying
    /// `token` (when there is one) and hand the future to [`Lead::start`].
    Leader {
        lead: Lead,
        token: Option<CancellationToken>,
    },
    /// It joined a flight in progress.
    Follower(Waiter),
}

impl FlightTable {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            entries: DashMap::with_hasher(CallKeyBuildHasher::default()),
            stats,
            prototype: OnceLock::new(),
        }
    }

    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Keys with a call in progress in the table.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Keeps a clone of `inner` for followers that must run their own call (once).
    pub(crate) fn keep_prototype<S: Clone + Send + 'static>(&self, inner: &S) {
        self.prototype
            .get_or_init(|| Mutex::new(Box::new(inner.clone())));
    }

    /// A clone of the kept inner service, if there is one of type `S`.
    fn prototype<S: Clone + 'static>(&self) -> Option<S> {
        let kept = self.prototype.get()?;
        let kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.downcast_ref::<S>().cloned()
    }

    /// Joins the call in progress under `call`'s key, if there is one, else starts one.
    pub(crate) fn join_or_lead(self: &Arc<Self>, call: &ToolCall) -> Joined {
        let key = call.key();
        let replaced = match self.entries.entry(key) {
            Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                match &slot.flight {
                    None => {
                        // The first follower: the shared state starts now, with the leader
                        // (still running the call) and this follower attached.
                        let flight = Arc::new(Flight::new(key, slot, Arc::clone(self)));
                        slot.flight = Some(Arc::clone(&flight));
                        return Joined::Follower(Waiter::new(flight));
                    }
                    Some(flight) => {
                        if let Some(waiter) = Flight::join(flight) {
                            return Joined::Follower(waiter);
                        }
                    }
                }
                // The flight under this key has finished (its outcome is being handed out)
                // or was abandoned, and is about to leave the table: replace it.
                let (slot, joined) = self.lead(key, call);
                (Some(occupied.insert(slot)), joined)
            }
            Entry::Vacant(vacant) => {
                let (slot, joined) = self.lead(key, call);
                vacant.insert(slot);
                (None, joined)
            }
        };
        // Dropped outside the shard lock.
        let (replaced, joined) = replaced;
        drop(replaced);
        joined
    }

    /// A new entry for `key` and its leader.
    fn lead(self: &Arc<Self>, key: CallKey, call: &ToolCall) -> (Slot, Joined) {
        let id = self.stats.flights.fetch_add(1, Ordering::Relaxed);
        // Only a call with a request context has a token to replace.
        let token = call.context().map(|_| CancellationToken::new());
        let tool = match &call.policy().tool {
            Some((_, name)) => Arc::clone(name),
            None => Arc::from(call.name()),
        };
        let slot = Slot {
            id,
            tool,
            token: token.clone(),
            flight: None,
        };
        let lead = Lead {
            table: Arc::clone(self),
            key,
            id,
            future: Some(Box::pin(NotStarted)),
        };
        (slot, Joined::Leader { lead, token })
    }

    /// Removes flight `id`'s entry, unless its key already holds a newer flight's.
    fn remove(&self, key: &CallKey, id: u64) -> Option<Slot> {
        self.entries
            .remove_if(key, |_, slot| slot.id == id)
            .map(|(_, slot)| slot)
    }

    /// The tool's name in flight `id`'s entry (for an error message).
    fn tool(&self, key: &CallKey, id: u64) -> Option<Arc<str>> {
        let slot = self.entries.get(key)?;
        (slot.id == id).then(|| Arc::clone(&slot.tool))
    }

    fn panicked(&self, tool: &str, payload: Payload) -> ErrorData {
        self.stats.flights_panicked.fetch_add(1, Ordering::Relaxed);
        let error = Panicked::from_payload(Layer::Dedup, tool, payload.as_ref());
        drop_quietly(payload);
        error.into()
    }
}

/// The place of the caller that started a flight: it holds the inner future and polls it
/// itself until it has the outcome, or until it goes away (then the followers, if any, take
/// the future over). Dropping it leaves the flight.
///
/// 48 bytes, so that the leader's `ResponseFuture` (this and the caller's cancellation
/// future) stays within the 128 bytes that the compiler moves without a `memcpy` call:
/// every layer above moves it at least once.
pub(crate) struct Lead {
    table: Arc<FlightTable>,
    key: CallKey,
    id: u64,
    /// The inner future ([`NotStarted`] until [`Lead::start`]); `None` once the leader has
    /// had its outcome or has left.
    future: Option<InnerFuture>,
}

/// The inner future of a flight whose leader has not called the inner service yet. A
/// zero-sized type: boxing it allocates nothing. Should it ever be polled (a leader that
/// left before starting, its followers taking over), it ends the flight with an error.
struct NotStarted;

impl Future for NotStarted {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
        Poll::Ready(Err(ErrorData::internal_error(
            "dedup: the flight's call never started",
            None,
        )))
    }
}

impl fmt::Debug for Lead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lead")
            .field("key", &self.key)
            .field("flight", &self.id)
            .field("done", &self.future.is_none())
            .finish()
    }
}

impl Lead {
    /// Hands the leader the inner future.
    pub(crate) fn start(&mut self, inner: InnerFuture) {
        if self.future.is_some() {
            self.future = Some(inner);
        }
    }

    /// The leader's call to the inner service panicked: every waiter gets the error.
    pub(crate) fn fail_to_start(&mut self, payload: Payload) -> Outcome {
        self.finish_panicked(payload)
    }

    /// Polls the inner future; ready with the leader's outcome (once: a later poll answers
    /// an error and changes nothing).
    ///
    /// The outcome goes from the inner future to the caller with as few moves as the
    /// compiler allows: it is 192 bytes, and each function that hands it on by value may
    /// copy it (the pass-through cost of a call nobody joins is mostly such copies).
    #[inline]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let Some(inner) = self.future.as_mut() else {
            return Poll::Ready(Err(ErrorData::internal_error(
                "dedup: the flight's leader was polled after its answer",
                None,
            )));
        };
        let outcome = match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(outcome)) => outcome,
            Err(payload) => return Poll::Ready(self.finish_panicked(payload)),
        };
        if let Some(inner) = self.future.take() {
            drop_quietly(inner);
        }
        match self.end() {
            // Nobody joined: the outcome is the leader's alone.
            None => Poll::Ready(outcome),
            Some(flight) => Poll::Ready(flight.finish_by_leader(outcome)),
        }
    }

    /// Frees the key; returns the flight's shared state if followers joined, else counts
    /// the flight's end.
    #[inline]
    fn end(&mut self) -> Option<Arc<Flight>> {
        let flight = self
            .table
            .remove(&self.key, self.id)
            .and_then(|slot| slot.flight);
        if flight.is_none() {
            self.table.stats.count_end(false);
        }
        flight
    }

    /// Ends the flight with the panic of the leader's call: every waiter gets the error.
    #[cold]
    fn finish_panicked(&mut self, payload: Payload) -> Outcome {
        if let Some(inner) = self.future.take() {
            drop_quietly(inner);
        }
        let tool = self.table.tool(&self.key, self.id);
        let error = Err(self.table.panicked(tool.as_deref().unwrap_or("?"), payload));
        match self.end() {
            None => error,
            Some(flight) => flight.finish_by_leader(error),
        }
    }

    /// The error of a leader whose caller cancelled; leaves the flight.
    pub(crate) fn cancel(&mut self) -> ErrorData {
        let tool = self.table.tool(&self.key, self.id);
        self.leave();
        Cancelled {
            layer: Layer::Dedup,
            tool: tool.as_deref().unwrap_or("?").to_string(),
        }
        .into()
    }

    /// Leaves the flight before its end (the caller cancelled or went away): hands the inner
    /// future to the followers, or drops it (cancelling the work) if there are none.
    fn leave(&mut self) {
        let Some(inner) = self.future.take() else {
            // Answered, or left already.
            return;
        };
        let stats = &self.table.stats;
        stats.waiters_cancelled.fetch_add(1, Ordering::Relaxed);
        let next = match self.table.entries.entry(self.key) {
            Entry::Occupied(occupied) if occupied.get().id == self.id => {
                match &occupied.get().flight {
                    Some(flight) => Err(Arc::clone(flight)),
                    // Nobody joined: the work is nobody's any more.
                    None => Ok(Some(occupied.remove())),
                }
            }
            // Unreachable: only the leader removes its entry while it is there.
            _ => Ok(None),
        };
        match next {
            Err(flight) => flight.hand_over(inner),
            Ok(abandoned) => {
                if let Some(slot) = &abandoned {
                    if let Some(token) = &slot.token {
                        token.cancel();
                    }
                    stats.count_end(true);
                }
                drop_quietly(inner);
            }
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.leave();
    }
}

/// What followers of one execution share (created by the first follower).
pub(crate) struct Flight {
    key: CallKey,
    id: u64,
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
    /// Waiters attached to the flight: the followers, and the leader while it is there.
    waiters: usize,
    /// The slot of the follower whose waker the inner future holds (after the leader left).
    driver: Option<usize>,
    /// The wakers of the followers that are waiting, by slot.
    wakers: Wakers,
    // Counted under the lock, added to the layer's stats when the flight is dropped.
    followers_served: u64,
    followers_rerun: u64,
    waiters_cancelled: u64,
}

enum Stage {
    /// The leader holds the inner future and polls it.
    Leading,
    /// The leader has left: the inner future, waiting for a follower to poll it.
    Idle(InnerFuture),
    /// A follower has taken the inner future out and is polling it.
    Polling,
    /// Finished with an outcome every waiter gets: a result (an `isError` one too) or an
    /// error.
    Shared(Arc<Outcome>),
    /// Finished with a response that belongs to the leader's request alone (`InputRequired`,
    /// `Task`): followers run their own call.
    LeaderOnly,
    /// Every waiter has left.
    Closed,
}

impl Stage {
    fn is_running(&self) -> bool {
        matches!(self, Stage::Leading | Stage::Idle(_) | Stage::Polling)
    }

    fn name(&self) -> &'static str {
        match self {
            Stage::Leading => "leading",
            Stage::Idle(_) => "idle",
            Stage::Polling => "polling",
            Stage::Shared(_) => "shared",
            Stage::LeaderOnly => "leader only",
            Stage::Closed => "closed",
        }
    }
}

impl FlightState {
    /// Stores `waker` in the follower's slot (taking one on first use); returns the slot.
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

    /// Nobody drives the inner future now: wakes every waiting follower (outside the lock,
    /// which it releases) so that the first to run takes it over. The wakers stay
    /// registered: those that do not win keep waiting.
    fn wake_a_new_driver(mut state: MutexGuard<'_, FlightState>) {
        state.driver = None;
        let wakers: Vec<Waker> = state.wakers.iter().cloned().collect();
        drop(state);
        for waker in wakers {
            waker.wake();
        }
    }

    /// Takes a follower off the flight; the last one out of a finished flight closes it.
    fn detach(&mut self, slot: &mut Option<usize>) {
        if let Some(index) = slot.take() {
            self.wakers.remove(index);
            if self.driver == Some(index) {
                self.driver = None;
            }
        }
        self.waiters -= 1;
        if self.waiters == 0 && !self.stage.is_running() {
            self.stage = Stage::Closed;
        }
    }

    /// Ends the flight with `outcome`. Returns what nobody may have: a response that
    /// belonged to the leader's request.
    fn set_outcome(&mut self, outcome: Outcome) -> Option<Outcome> {
        self.driver = None;
        if is_shareable(&outcome) {
            self.stage = Stage::Shared(Arc::new(outcome));
            None
        } else {
            self.stage = Stage::LeaderOnly;
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

    /// A follower's share of a finished flight (and takes it off the flight), or `None`
    /// while the flight runs.
    fn take_share(&mut self, slot: &mut Option<usize>) -> Option<Share> {
        let share = match &self.stage {
            Stage::Leading | Stage::Idle(_) | Stage::Polling => return None,
            Stage::Shared(outcome) => {
                self.followers_served += 1;
                Share::Shared(Arc::clone(outcome))
            }
            Stage::LeaderOnly => {
                self.followers_rerun += 1;
                Share::RunOwnCall
            }
            // Unreachable while attached; never leave a caller hanging.
            Stage::Closed => Share::Closed,
        };
        self.detach(slot);
        Some(share)
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
    /// The shared state of `slot`'s call, as its first follower joins.
    fn new(key: CallKey, slot: &Slot, table: Arc<FlightTable>) -> Self {
        Self {
            key,
            id: slot.id,
            tool: Arc::clone(&slot.tool),
            token: slot.token.clone(),
            table,
            state: Mutex::new(FlightState {
                stage: Stage::Leading,
                waiters: 2,
                driver: None,
                wakers: Wakers::default(),
                followers_served: 0,
                followers_rerun: 0,
                waiters_cancelled: 0,
            }),
        }
    }

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
        drop(state);
        Some(Waiter::new(Arc::clone(this)))
    }

    /// The leader has its outcome (the key is already free): gives the followers theirs.
    /// Returns the leader's.
    fn finish_by_leader(&self, outcome: Outcome) -> Outcome {
        let mut state = self.lock();
        state.waiters -= 1;
        if state.waiters == 0 || !is_shareable(&outcome) {
            // Every follower left meanwhile; or the response is the leader's own, and the
            // followers run their own call.
            let (stage, wakers) = if state.waiters == 0 {
                (Stage::Closed, Wakers::default())
            } else {
                (Stage::LeaderOnly, mem::take(&mut state.wakers))
            };
            state.stage = stage;
            drop(state);
            self.table.stats.count_end(false);
            wakers.wake_all();
            return outcome;
        }
        let shared = Arc::new(outcome);
        state.stage = Stage::Shared(Arc::clone(&shared));
        let wakers = mem::take(&mut state.wakers);
        drop(state);
        self.table.stats.count_end(false);
        wakers.wake_all();
        Arc::unwrap_or_clone(shared)
    }

    /// The leader has left before the end: the followers take over `inner`, or it is
    /// dropped if they have all left too.
    fn hand_over(self: &Arc<Self>, inner: InnerFuture) {
        let mut state = self.lock();
        state.waiters -= 1;
        if !matches!(state.stage, Stage::Leading) {
            // Unreachable: only the leader moves the flight on from `Leading`.
            drop(state);
            drop_quietly(inner);
            return;
        }
        if state.waiters == 0 {
            // Nobody left to want the outcome: end the flight.
            state.stage = Stage::Closed;
            drop(state);
            if let Some(token) = &self.token {
                token.cancel();
            }
            drop_quietly(inner);
            self.ended(Wakers::default(), None, true);
            return;
        }
        state.stage = Stage::Idle(inner);
        // The first follower to run takes over; every waiting one is woken so that a slow
        // task does not hold the others up.
        FlightState::wake_a_new_driver(state);
    }

    /// After the outcome is set (outside the lock): wakes the waiters and frees the key.
    fn ended(&self, wakers: Wakers, discarded: Option<Outcome>, cancelled: bool) {
        self.table.stats.count_end(cancelled);
        wakers.wake_all();
        let removed = self.table.remove(&self.key, self.id);
        drop(removed);
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

/// The wakers of a flight's waiting followers, by slot. The first two live inline: most
/// flights that have followers at all have one or two, and need no allocation for them.
#[derive(Default)]
struct Wakers {
    inline: [Option<Waker>; Wakers::INLINE],
    more: Slab<Waker>,
}

impl Wakers {
    const INLINE: usize = 2;

    fn insert(&mut self, waker: Waker) -> usize {
        if let Some(index) = self.inline.iter().position(Option::is_none) {
            self.inline[index] = Some(waker);
            return index;
        }
        Self::INLINE + self.more.insert(waker)
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Waker> {
        match index.checked_sub(Self::INLINE) {
            None => self.inline[index].as_mut(),
            Some(index) => self.more.get_mut(index),
        }
    }

    fn remove(&mut self, index: usize) {
        match index.checked_sub(Self::INLINE) {
            None => self.inline[index] = None,
            Some(index) => drop(self.more.try_remove(index)),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Waker> {
        self.inline
            .iter()
            .flatten()
            .chain(self.more.iter().map(|(_, waker)| waker))
    }

    fn wake_all(self) {
        for waker in self.inline.into_iter().flatten() {
            waker.wake();
        }
        for (_, waker) in self.more {
            waker.wake();
        }
    }
}

/// What a follower takes from a finished flight. Small (no outcome by value): the outcome
/// itself is made once, by the caller's future, straight into its answer (a 192-byte
/// outcome handed up through each function on the way would be copied at every step).
pub(crate) enum Share {
    /// The shared outcome: the last waiter to let go of it moves it, the others clone it.
    Shared(Arc<Outcome>),
    /// The flight's response belongs to the leader's request alone: run your own call.
    RunOwnCall,
    /// The flight was closed under an attached waiter (unreachable).
    Closed,
}

/// Whether every waiter may have `outcome`: a complete result (an `isError` one too) or an
/// error. `InputRequired` and `Task` responses belong to the request that produced them.
fn is_shareable(outcome: &Outcome) -> bool {
    matches!(outcome, Ok(CallToolResponse::Complete(_)) | Err(_))
}

/// A follower's place in a flight. Dropping it leaves the flight.
pub(crate) struct Waiter {
    flight: Arc<Flight>,
    /// The follower's slot in the flight's wakers, taken when it first waits.
    slot: Option<usize>,
    /// Whether it is still counted among the flight's waiters.
    attached: bool,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("flight", &self.flight)
            .field("slot", &self.slot)
            .field("attached", &self.attached)
            .finish()
    }
}

impl Waiter {
    fn new(flight: Arc<Flight>) -> Self {
        Self {
            flight,
            slot: None,
            attached: true,
        }
    }

    pub(crate) fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// A clone of the inner service the flight's table kept, for a follower that must run
    /// its own call.
    pub(crate) fn own_service<S: Clone + 'static>(&self) -> Option<S> {
        self.flight.table.prototype()
    }

    /// Drives the flight if it is this follower's turn, else waits for it. Ready with the
    /// follower's share of the outcome (once: it has left the flight then, and a later poll
    /// answers [`Share::Closed`]).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Share> {
        if !self.attached {
            return Poll::Ready(Share::Closed);
        }
        let flight = &*self.flight;
        let mut state = flight.lock();
        if let Some(inner) = state.take_inner(self.slot) {
            drop(state);
            return self.drive(inner, cx);
        }
        match state.take_share(&mut self.slot) {
            Some(share) => {
                self.attached = false;
                drop(state);
                Poll::Ready(share)
            }
            None => {
                state.register(&mut self.slot, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Polls the inner future (taken out of the flight) on this follower's task.
    fn drive(&mut self, mut inner: InnerFuture, cx: &mut Context<'_>) -> Poll<Share> {
        let outcome = match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => {
                let mut state = self.flight.lock();
                state.stage = Stage::Idle(inner);
                let slot = state.register(&mut self.slot, cx.waker());
                state.driver = Some(slot);
                return Poll::Pending;
            }
            Ok(Poll::Ready(outcome)) => {
                drop_quietly(inner);
                outcome
            }
            Err(payload) => {
                drop_quietly(inner);
                Err(self.flight.table.panicked(&self.flight.tool, payload))
            }
        };
        Poll::Ready(self.finish(outcome))
    }

    /// Ends the flight with the outcome this follower polled out of it, and takes its share.
    fn finish(&mut self, outcome: Outcome) -> Share {
        let flight = &*self.flight;
        let mut state = flight.lock();
        let discarded = state.set_outcome(outcome);
        // `None` is unreachable: the outcome was just set.
        let share = state.take_share(&mut self.slot).unwrap_or(Share::Closed);
        self.attached = false;
        // This follower's waker left with it: the others are woken, not it.
        let wakers = mem::take(&mut state.wakers);
        drop(state);
        flight.ended(wakers, discarded, false);
        share
    }

    /// Leaves the flight before getting its outcome (the caller cancelled or went away).
    pub(crate) fn leave(&mut self) {
        if !mem::replace(&mut self.attached, false) {
            return;
        }
        let flight = &*self.flight;
        let mut state = flight.lock();
        let was_driver = self.slot.is_some() && state.driver == self.slot;
        let running = state.stage.is_running();
        // Closes a finished flight if this was the last waiter (the outcome goes with it).
        let closed =
            (!running && state.waiters == 1).then(|| mem::replace(&mut state.stage, Stage::Closed));
        state.detach(&mut self.slot);
        state.waiters_cancelled += 1;
        if !running {
            drop(state);
            drop(closed);
            return;
        }
        if state.waiters == 0 {
            // Nobody is left to want the outcome (the leader has gone too, or the flight
            // would be `Leading` with the leader counted): cancel the work, free the key.
            let stage = mem::replace(&mut state.stage, Stage::Closed);
            drop(state);
            if let Some(token) = &flight.token {
                token.cancel();
            }
            if let Stage::Idle(inner) = stage {
                drop_quietly(inner);
            }
            flight.ended(Wakers::default(), None, true);
            return;
        }
        if matches!(state.stage, Stage::Idle(_)) && (was_driver || state.driver.is_none()) {
            // The inner future may hold this follower's waker: wake the others, and the
            // first to run takes over. Rare (a driver leaving), so waking all is cheap
            // insurance against a follower whose task is slow to run.
            FlightState::wake_a_new_driver(state);
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

    fn text(answer: Poll<Outcome>) -> String {
        match answer {
            Poll::Ready(Ok(CallToolResponse::Complete(r))) => {
                r.content[0].as_text().unwrap().text.clone()
            }
            other => panic!("expected a complete result, got {other:?}"),
        }
    }

    fn follower_text(answer: Poll<Share>) -> String {
        match answer {
            Poll::Ready(Share::Shared(outcome)) => text(Poll::Ready(Arc::unwrap_or_clone(outcome))),
            _ => panic!("expected the follower's answer"),
        }
    }

    fn lead(table: &Arc<FlightTable>, call: &ToolCall) -> Lead {
        match table.join_or_lead(call) {
            Joined::Leader { lead, .. } => lead,
            Joined::Follower(_) => panic!("expected to lead"),
        }
    }

    fn follow(table: &Arc<FlightTable>, call: &ToolCall) -> Waiter {
        match table.join_or_lead(call) {
            Joined::Follower(waiter) => waiter,
            Joined::Leader { .. } => panic!("expected to follow"),
        }
    }

    /// A future that counts its drops.
    struct Tracked(Arc<AtomicU64>);

    impl Future for Tracked {
        type Output = Outcome;
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
            Poll::Pending
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakers_past_the_inline_ones_go_to_the_slab_and_slots_are_reused() {
        let mut wakers = Wakers::default();
        let slots: Vec<usize> = (0..5)
            .map(|_| wakers.insert(Waker::noop().clone()))
            .collect();
        assert_eq!(slots, [0, 1, 2, 3, 4]);
        wakers.remove(1);
        wakers.remove(3);
        assert!(wakers.get_mut(1).is_none());
        assert!(wakers.get_mut(3).is_none());
        assert!(wakers.get_mut(4).is_some());
        assert_eq!(wakers.iter().count(), 3);
        assert_eq!(
            wakers.insert(Waker::noop().clone()),
            1,
            "an inline slot first"
        );
        assert_eq!(wakers.insert(Waker::noop().clone()), 3);
        assert_eq!(wakers.iter().count(), 5);
        wakers.wake_all();
    }

    #[test]
    fn a_call_nobody_joins_shares_nothing() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 0}), resolver());
        let mut leader = lead(&table, &call);
        leader.start(Box::pin(std::future::ready(result("alone"))));
        assert!(
            table.entries.get(&call.key()).unwrap().flight.is_none(),
            "no shared state until a follower arrives"
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(text(leader.poll(&mut cx)), "alone");
        assert_eq!(table.len(), 0, "the key is free");
        assert_eq!(table.stats.in_flight(), 0);
    }

    #[test]
    fn polled_again_after_the_answer_a_leader_and_a_follower_answer_an_error_and_change_nothing() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 6}), resolver());
        let mut leader = lead(&table, &call);
        let mut follower = follow(&table, &call);
        leader.start(Box::pin(std::future::ready(result("once"))));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(text(leader.poll(&mut cx)), "once");
        assert_eq!(follower_text(follower.poll(&mut cx)), "once");
        let ended = table.stats.flights_ended.load(Ordering::Relaxed);

        assert!(matches!(leader.poll(&mut cx), Poll::Ready(Err(_))));
        assert!(matches!(follower.poll(&mut cx), Poll::Ready(Share::Closed)));
        drop((leader, follower));
        assert_eq!(table.stats.flights_ended.load(Ordering::Relaxed), ended);
        assert_eq!(table.stats.waiters_cancelled.load(Ordering::Relaxed), 0);
        assert_eq!(table.stats.followers_served.load(Ordering::Relaxed), 1);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_leader_that_leaves_before_starting_gives_its_followers_an_error() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 7}), resolver());
        let leader = lead(&table, &call);
        let mut follower = follow(&table, &call);
        drop(leader);
        let mut cx = Context::from_waker(Waker::noop());
        match follower.poll(&mut cx) {
            Poll::Ready(Share::Shared(outcome)) => {
                let error = Arc::unwrap_or_clone(outcome).unwrap_err();
                assert!(error.message.contains("never started"), "{error:?}");
            }
            _ => panic!("expected the flight's error"),
        }
        assert_eq!(table.len(), 0);
        assert_eq!(table.stats.in_flight(), 0);
    }

    #[test]
    fn a_finished_flight_still_in_the_table_is_never_joined() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 1}), resolver());
        let leader = lead(&table, &call);
        let mut follower = follow(&table, &call);
        let first = Arc::clone(follower.flight());

        // A follower-driven flight publishes before it frees the key: stand in that window.
        first.lock().stage = Stage::Shared(Arc::new(result("first")));
        assert_eq!(table.len(), 1, "the finished flight is still in the table");

        let mut late = lead(&table, &call);
        assert_ne!(late.id, first.id, "a late caller starts a new flight");
        late.start(Box::pin(std::future::ready(result("second"))));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(text(late.poll(&mut cx)), "second");
        assert_eq!(follower_text(follower.poll(&mut cx)), "first");
        // The old flight freeing its key must not remove a newer flight's entry.
        let mut again = lead(&table, &call);
        assert!(table.remove(&call.key(), first.id).is_none());
        assert_eq!(table.len(), 1);
        again.start(Box::pin(std::future::ready(result("third"))));
        assert_eq!(text(again.poll(&mut cx)), "third");
        // The first leader, replaced while it never ran, leaves without touching the table.
        drop(leader);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn followers_joining_while_the_leader_starts_wait_for_it() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 2}), resolver());
        let mut leader = lead(&table, &call);
        let mut follower = follow(&table, &call);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            follower.poll(&mut cx).is_pending(),
            "the leader runs the call"
        );
        leader.start(Box::pin(std::future::ready(result("shared"))));
        assert_eq!(text(leader.poll(&mut cx)), "shared");
        assert_eq!(follower_text(follower.poll(&mut cx)), "shared");
        assert_eq!(table.len(), 0);
        drop(follower);
        assert_eq!(table.stats.followers_served.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_leader_that_leaves_hands_the_call_to_its_followers() {
        let table = table();
        let call = ToolCall::with_resolver("read", object!({"q": 4}), resolver());
        let mut leader = lead(&table, &call);
        let mut follower = follow(&table, &call);
        let mut cx = Context::from_waker(Waker::noop());
        let (tx, rx) = tokio::sync::oneshot::channel::<Outcome>();
        leader.start(Box::pin(async move { rx.await.unwrap() }));
        assert!(leader.poll(&mut cx).is_pending());
        assert!(follower.poll(&mut cx).is_pending());
        drop(leader);
        assert_eq!(table.len(), 1, "the follower keeps the flight");
        assert!(
            follower.poll(&mut cx).is_pending(),
            "the follower drives now"
        );
        tx.send(result("handed over")).unwrap();
        assert_eq!(follower_text(follower.poll(&mut cx)), "handed over");
        assert_eq!(table.len(), 0);
        assert_eq!(table.stats.in_flight(), 0);
        assert_eq!(table.stats.waiters_cancelled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_last_waiter_out_abandons_the_flight() {
        let stats = Arc::new(Stats::default());
        let table = Arc::new(FlightTable::new(Arc::clone(&stats)));
        let call = ToolCall::with_resolver("read", object!({"q": 3}), resolver());
        let mut leader = lead(&table, &call);
        let follower = follow(&table, &call);
        let drops = Arc::new(AtomicU64::new(0));
        leader.start(Box::pin(Tracked(Arc::clone(&drops))));
        drop(leader);
        assert_eq!(table.len(), 1, "the follower keeps the flight");
        assert_eq!(drops.load(Ordering::SeqCst), 0, "the call goes on");
        drop(follower);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the call is dropped");
        assert_eq!(table.len(), 0);
        assert_eq!(stats.flights_cancelled.load(Ordering::Relaxed), 1);
        assert_eq!(stats.waiters_cancelled.load(Ordering::Relaxed), 2);
        assert_eq!(stats.in_flight(), 0);
    }

    #[test]
    fn a_lone_leader_that_leaves_cancels_the_call() {
        let stats = Arc::new(Stats::default());
        let table = Arc::new(FlightTable::new(Arc::clone(&stats)));
        let call = ToolCall::with_resolver("read", object!({"q": 5}), resolver());
        let mut leader = lead(&table, &call);
        let drops = Arc::new(AtomicU64::new(0));
        leader.start(Box::pin(Tracked(Arc::clone(&drops))));
        let error = leader.cancel();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(error.message.contains("read"), "{error:?}");
        drop(leader);
        assert_eq!(table.len(), 0);
        assert_eq!(stats.flights_cancelled.load(Ordering::Relaxed), 1);
        assert_eq!(stats.waiters_cancelled.load(Ordering::Relaxed), 1);
        assert_eq!(stats.in_flight(), 0);
    }
}
