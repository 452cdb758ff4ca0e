//! [`Limiter`]: one concurrency limit (the global one, or one tool's). A fair (FIFO),
//! resizable semaphore with a bounded wait queue, plus the [`Permit`] that holds one of its
//! permits and the [`QueueSlot`] that waits for one.
//!
//! # How it works
//!
//! The whole admission state is one `AtomicU64`: the number of permits held, the limit, and
//! a flag saying that calls are queued. With nobody queued, taking and returning a permit
//! is one compare-and-swap each, without a lock. Once a call queues, the flag sends every
//! acquirer and releaser through the queue's mutex: a returned permit passes straight to
//! the first waiter (so a newcomer can never overtake a queued call), and the flag is
//! cleared when the queue empties.
//!
//! The limit lives in the same word as the count, so resizing needs no bookkeeping of its
//! own. Growing hands the new permits to waiters at once. Shrinking below the number held
//! only stops new admissions: the surplus permits are retired one by one as their calls
//! finish (a release that leaves `held >= limit` wakes nobody), so no permit is ever lost
//! or leaked.
//!
//! Invariant, kept under the queue's mutex: when the flag is set the queue is non-empty
//! and no permit is free (`held >= limit`); every operation that could break it (a
//! release, a resize, a waiter leaving) runs under the mutex and restores it.

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
};

use crate::wait_queue::WaitQueue;

/// The largest limit; a limit this large (or larger) means "no limit".
pub(crate) const UNLIMITED: usize = (1 << 31) - 1;

/// Set while calls are queued.
const WAITERS: u64 = 1;
const HELD_SHIFT: u32 = 1;
const HELD_ONE: u64 = 1 << HELD_SHIFT;
const HELD_MASK: u64 = UNLIMITED as u64;
const LIMIT_SHIFT: u32 = 32;

fn held(state: u64) -> usize {
    ((state >> HELD_SHIFT) & HELD_MASK) as usize
}

fn limit_of(state: u64) -> usize {
    (state >> LIMIT_SHIFT) as usize
}

fn with_limit(state: u64, limit: usize) -> u64 {
    (state & ((1 << LIMIT_SHIFT) - 1)) | ((limit.min(UNLIMITED) as u64) << LIMIT_SHIFT)
}

/// What [`Limiter::acquire_or_enqueue`] did.
pub(crate) enum Admission {
    /// A permit was free and nobody was queued: the caller holds it now.
    Acquired(Permit),
    /// The caller joined the queue.
    Queued(QueueSlot),
    /// The queue is full (or queueing is off): the caller was turned away.
    Full(Pressure),
}

/// A limiter's load when a call was turned away, for the error and its retry hint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pressure {
    pub(crate) in_flight: usize,
    pub(crate) queued: usize,
    pub(crate) limit: usize,
}

/// One concurrency limit. See the module documentation.
///
/// Aligned to a cache line: the state word, written by every call on every core, shares
/// its line neither with the `Arc`'s reference counts nor with another limiter.
#[repr(align(64))]
pub(crate) struct Limiter {
    /// `limit << 32 | held << 1 | WAITERS`.
    state: AtomicU64,
    queue: Mutex<WaitQueue>,
    /// `None`: the global limit; else the tool's name.
    name: Option<Arc<str>>,
    peak: AtomicUsize,
    queued_peak: AtomicUsize,
    waited: AtomicU64,
    busy: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("Limiter")
            .field("name", &self.name)
            .field("limit", &limit_of(state))
            .field("held", &held(state))
            .field("waiters", &(state & WAITERS != 0))
            .finish_non_exhaustive()
    }
}

/// A limiter's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) limit: usize,
    pub(crate) in_flight: usize,
    pub(crate) peak: usize,
    pub(crate) queued: usize,
    pub(crate) queued_peak: usize,
    pub(crate) waited: u64,
    pub(crate) busy: u64,
    pub(crate) timed_out: u64,
    pub(crate) cancelled: u64,
}

impl Limiter {
    /// A limiter allowing `limit` permits at once (`UNLIMITED` or more: no limit).
    pub(crate) fn new(name: Option<Arc<str>>, limit: usize) -> Self {
        Self {
            state: AtomicU64::new(with_limit(0, limit)),
            queue: Mutex::new(WaitQueue::default()),
            name,
            peak: AtomicUsize::new(0),
            queued_peak: AtomicUsize::new(0),
            waited: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }

    /// The tool's name, or `None` for the global limit.
    pub(crate) fn name(&self) -> Option<&Arc<str>> {
        self.name.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, WaitQueue> {
        // Nothing panics while holding the lock, but a poisoned queue must not take the
        // server down with it.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record_peak(&self, held: usize) {
        // A plain load first: the peak rarely moves, and a read keeps the line shared.
        if held > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(held, Ordering::Relaxed);
        }
    }

    /// Takes a permit if one is free and nobody is queued, as a [`Permit`].
    #[cfg(test)]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.try_take().then(|| Permit::assume(Arc::clone(self)))
    }

    /// Takes a permit if one is free and nobody is queued: the lock-free fast path. The
    /// caller owes a [`release`](Self::release).
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & WAITERS != 0 || held(state) >= limit_of(state) {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + HELD_ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.record_peak(held(state) + 1);
                    return true;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Takes a permit if one is free and nobody is queued; else joins the back of the queue
    /// if it holds fewer than `max_queued` calls; else turns the caller away.
    pub(crate) fn acquire_or_enqueue(self: &Arc<Self>, max_queued: usize) -> Admission {
        let mut queue = self.lock();
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & WAITERS == 0 {
                if held(state) < limit_of(state) {
                    match self.state.compare_exchange(
                        state,
                        state + HELD_ONE,
                        Ordering::Acquire,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            drop(queue);
                            self.record_peak(held(state) + 1);
                            return Admission::Acquired(Permit::assume(Arc::clone(self)));
                        }
                        Err(actual) => {
                            state = actual;
                            continue;
                        }
                    }
                }
                if queue.len() >= max_queued {
                    break;
                }
                // No permit is free: raise the flag so that from now on every release
                // comes through the queue. If the state moved meanwhile (a release), look
                // again rather than queue behind a free permit.
                match self.state.compare_exchange(
                    state,
                    state | WAITERS,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return self.enqueue(&mut queue),
                    Err(actual) => state = actual,
                }
            } else if queue.len() >= max_queued {
                break;
            } else {
                return self.enqueue(&mut queue);
            }
        }
        let pressure = Pressure {
            in_flight: held(state),
            queued: queue.len(),
            limit: limit_of(state),
        };
        drop(queue);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Admission::Full(pressure)
    }

    fn enqueue(self: &Arc<Self>, queue: &mut WaitQueue) -> Admission {
        let ticket = queue.push();
        self.queued_peak.fetch_max(queue.len(), Ordering::Relaxed);
        self.waited.fetch_add(1, Ordering::Relaxed);
        Admission::Queued(QueueSlot {
            limiter: Some(Arc::clone(self)),
            ticket,
        })
    }

    /// Returns a permit: lock-free when nobody is queued, else hands it to the first waiter
    /// (or retires it, when the limit was lowered below the permits held).
    #[inline]
    pub(crate) fn release(&self) {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & WAITERS != 0 {
                return self.release_to_queue();
            }
            match self.state.compare_exchange_weak(
                state,
                state - HELD_ONE,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn release_to_queue(&self) {
        let waker = self.release_locked(&mut self.lock());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// [`release`](Self::release) with the queue locked; returns the waker of the waiter
    /// that got the permit, to wake once the lock is dropped.
    fn release_locked(&self, queue: &mut WaitQueue) -> Option<Waker> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            // `held <= limit`: after this release there would be a free permit.
            if state & WAITERS != 0
                && held(state) <= limit_of(state)
                && let Some(waker) = queue.pop_first()
            {
                // The permit passes to the waiter: `held` does not change.
                if queue.is_empty() {
                    self.clear_waiters();
                }
                return waker;
            }
            let mut next = state - HELD_ONE;
            if queue.is_empty() {
                next &= !WAITERS;
            }
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return None,
                Err(actual) => state = actual,
            }
        }
    }

    /// Clears the queued flag (the queue is empty and locked).
    fn clear_waiters(&self) {
        self.state.fetch_and(!WAITERS, Ordering::AcqRel);
    }

    /// Hands free permits to waiters, first come first served (the queue is locked).
    fn grant_locked(&self, queue: &mut WaitQueue, wakers: &mut Vec<Waker>) {
        let mut state = self.state.load(Ordering::Acquire);
        while state & WAITERS != 0 && held(state) < limit_of(state) {
            if queue.is_empty() {
                self.clear_waiters();
                return;
            }
            let mut next = state + HELD_ONE;
            if queue.len() == 1 {
                next &= !WAITERS;
            }
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.record_peak(held(next));
                    if let Some(Some(waker)) = queue.pop_first() {
                        wakers.push(waker);
                    }
                    state = next;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Changes the limit. Growing wakes as many waiters as there are new permits; shrinking
    /// below the permits held retires the surplus as their calls finish.
    pub(crate) fn set_limit(&self, limit: usize) {
        let mut wakers = Vec::new();
        {
            let mut queue = self.lock();
            let mut state = self.state.load(Ordering::Acquire);
            loop {
                match self.state.compare_exchange(
                    state,
                    with_limit(state, limit),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => state = actual,
                }
            }
            self.grant_locked(&mut queue, &mut wakers);
        }
        for waker in wakers {
            waker.wake();
        }
    }

    /// The current limit (`UNLIMITED`: none).
    pub(crate) fn limit(&self) -> usize {
        limit_of(self.state.load(Ordering::Acquire))
    }

    /// Permits held now.
    pub(crate) fn in_flight(&self) -> usize {
        held(self.state.load(Ordering::Acquire))
    }

    /// Calls queued now.
    pub(crate) fn queued(&self) -> usize {
        self.lock().len()
    }

    /// The load now, for a retry hint.
    pub(crate) fn pressure(&self) -> Pressure {
        let queue = self.lock();
        let state = self.state.load(Ordering::Acquire);
        Pressure {
            in_flight: held(state),
            queued: queue.len(),
            limit: limit_of(state),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let queued = self.queued();
        let state = self.state.load(Ordering::Acquire);
        Snapshot {
            limit: limit_of(state),
            in_flight: held(state),
            peak: self.peak.load(Ordering::Relaxed),
            queued,
            queued_peak: self.queued_peak.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_timeout(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }
}

/// One permit of a [`Limiter`]; returned when dropped.
pub(crate) struct Permit {
    /// `None` once handed over with [`Permit::into_limiter`].
    limiter: Option<Arc<Limiter>>,
}

impl Permit {
    /// Wraps a permit already taken from `limiter` (with [`Limiter::try_take`]).
    pub(crate) fn assume(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter: Some(limiter),
        }
    }

    /// Hands the permit over: the caller now owes the limiter a
    /// [`release`](Limiter::release).
    pub(crate) fn into_limiter(mut self) -> Option<Arc<Limiter>> {
        self.limiter.take()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.release();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("limit", &self.limiter.as_ref().map(|l| &l.name))
            .finish()
    }
}

/// A place in a [`Limiter`]'s queue. Dropping it leaves the queue; a permit granted to it
/// in the meantime is passed on, never lost.
pub(crate) struct QueueSlot {
    /// `None` once the permit was taken out.
    limiter: Option<Arc<Limiter>>,
    ticket: u64,
}

impl fmt::Debug for QueueSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueSlot")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl QueueSlot {
    /// The limiter whose queue this is.
    pub(crate) fn limiter(&self) -> Option<&Arc<Limiter>> {
        self.limiter.as_ref()
    }

    /// Ready with the permit once it is this slot's turn; else registers `cx`'s waker.
    pub(crate) fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<Permit> {
        let Some(limiter) = self.limiter.as_ref() else {
            // Only reachable if polled again after returning the permit; never granted
            // twice.
            return Poll::Pending;
        };
        {
            let mut queue = limiter.lock();
            if let Some(slot) = queue.waker_mut(self.ticket) {
                match slot {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        }
        // Our entry is gone and we did not remove it: a permit was granted to us.
        match self.limiter.take() {
            Some(limiter) => Poll::Ready(Permit::assume(limiter)),
            None => Poll::Pending,
        }
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        let Some(limiter) = self.limiter.take() else {
            return;
        };
        let waker = {
            let mut queue = limiter.lock();
            if queue.remove(self.ticket) {
                // Still waiting: no permit was ours. Leaving never frees a permit, so
                // nobody else needs waking.
                if queue.is_empty() {
                    limiter.clear_waiters();
                }
                None
            } else {
                // Granted but never claimed: pass the permit on.
                limiter.release_locked(&mut queue)
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::atomic::AtomicUsize, task::Wake};

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (Arc::clone(&counter), Waker::from(counter))
    }

    fn queued(admission: Admission) -> QueueSlot {
        match admission {
            Admission::Queued(slot) => slot,
            Admission::Acquired(_) => panic!("expected to queue, acquired"),
            Admission::Full(p) => panic!("expected to queue, full: {p:?}"),
        }
    }

    #[test]
    fn state_packing_round_trips() {
        let s = with_limit(0, 8) + 3 * HELD_ONE + WAITERS;
        assert_eq!(limit_of(s), 8);
        assert_eq!(held(s), 3);
        assert_eq!(limit_of(with_limit(s, usize::MAX)), UNLIMITED);
        assert_eq!(held(with_limit(s, 2)), 3, "resizing keeps the count");
        assert_eq!(with_limit(s, 2) & WAITERS, WAITERS, "and the flag");
    }

    #[test]
    fn fast_path_respects_the_limit_and_counts_peak() {
        let l = Arc::new(Limiter::new(None, 2));
        let a = l.try_acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        assert_eq!(l.in_flight(), 2);
        drop(a);
        assert_eq!(l.in_flight(), 1);
        let c = l.try_acquire().unwrap();
        drop((b, c));
        assert_eq!(l.snapshot().peak, 2);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn waiters_are_served_in_order_and_newcomers_cannot_overtake() {
        let l = Arc::new(Limiter::new(None, 1));
        let held = l.try_acquire().unwrap();
        let (_, w) = waker();
        let mut first = queued(l.acquire_or_enqueue(10));
        let mut second = queued(l.acquire_or_enqueue(10));
        let mut cx = Context::from_waker(&w);
        assert!(first.poll_permit(&mut cx).is_pending());
        assert!(second.poll_permit(&mut cx).is_pending());
        drop(held);
        // The permit went to `first`, not to a fast-path newcomer.
        assert!(l.try_acquire().is_none());
        assert!(second.poll_permit(&mut cx).is_pending());
        let p1 = match first.poll_permit(&mut cx) {
            Poll::Ready(p) => p,
            Poll::Pending => panic!("first in line gets the permit"),
        };
        drop(p1);
        assert!(matches!(second.poll_permit(&mut cx), Poll::Ready(_)));
        assert_eq!(l.in_flight(), 0);
        assert_eq!(l.queued(), 0);
        assert!(
            l.try_acquire().is_some(),
            "fast path back once the queue is empty"
        );
    }

    #[test]
    fn a_full_queue_turns_callers_away() {
        let l = Arc::new(Limiter::new(None, 1));
        let _held = l.try_acquire().unwrap();
        let _a = queued(l.acquire_or_enqueue(2));
        let _b = queued(l.acquire_or_enqueue(2));
        match l.acquire_or_enqueue(2) {
            Admission::Full(p) => {
                assert_eq!((p.in_flight, p.queued, p.limit), (1, 2, 1));
            }
            _ => panic!("the third waiter does not fit"),
        }
        assert!(matches!(l.acquire_or_enqueue(0), Admission::Full(_)));
        assert_eq!(l.snapshot().busy, 2);
        assert_eq!(l.snapshot().waited, 2);
    }

    #[test]
    fn a_granted_slot_dropped_unclaimed_passes_its_permit_on() {
        let l = Arc::new(Limiter::new(None, 1));
        let held = l.try_acquire().unwrap();
        let granted = queued(l.acquire_or_enqueue(10));
        let (counter, w) = waker();
        let mut next = queued(l.acquire_or_enqueue(10));
        let mut cx = Context::from_waker(&w);
        assert!(next.poll_permit(&mut cx).is_pending());
        drop(held); // to `granted`
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        drop(granted); // never claimed: on to `next`, which is woken
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        let permit = match next.poll_permit(&mut cx) {
            Poll::Ready(p) => p,
            Poll::Pending => panic!("the permit was passed on"),
        };
        assert_eq!(l.in_flight(), 1);
        drop(permit);
        assert_eq!(l.in_flight(), 0);
        assert_eq!(l.state.load(Ordering::SeqCst) & WAITERS, 0);
    }

    #[test]
    fn leaving_the_queue_frees_the_place() {
        let l = Arc::new(Limiter::new(None, 1));
        let held = l.try_acquire().unwrap();
        let a = queued(l.acquire_or_enqueue(1));
        assert!(matches!(l.acquire_or_enqueue(1), Admission::Full(_)));
        drop(a);
        assert_eq!(l.queued(), 0);
        assert_eq!(l.state.load(Ordering::SeqCst) & WAITERS, 0);
        let _b = queued(l.acquire_or_enqueue(1));
        drop(held);
        assert_eq!(l.in_flight(), 1, "the permit went to the waiter");
    }

    #[test]
    fn growing_wakes_waiters_and_shrinking_retires_permits() {
        let l = Arc::new(Limiter::new(None, 1));
        let p = l.try_acquire().unwrap();
        let (counter, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut slots: Vec<_> = (0..3).map(|_| queued(l.acquire_or_enqueue(10))).collect();
        for s in &mut slots {
            assert!(s.poll_permit(&mut cx).is_pending());
        }
        l.set_limit(3);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            2,
            "two new permits, two wakes"
        );
        let mut permits = vec![p];
        for s in &mut slots[..2] {
            match s.poll_permit(&mut cx) {
                Poll::Ready(p) => permits.push(p),
                Poll::Pending => panic!("granted on growth"),
            }
        }
        assert!(slots[2].poll_permit(&mut cx).is_pending());
        assert_eq!(l.in_flight(), 3);

        // Shrink to 1 with 3 held and one waiting: two releases retire permits, the third
        // goes to the waiter.
        l.set_limit(1);
        permits.pop();
        assert!(slots[2].poll_permit(&mut cx).is_pending());
        assert_eq!(l.in_flight(), 2);
        permits.pop();
        assert!(slots[2].poll_permit(&mut cx).is_pending());
        assert_eq!(l.in_flight(), 1);
        permits.pop();
        let last = match slots[2].poll_permit(&mut cx) {
            Poll::Ready(p) => p,
            Poll::Pending => panic!("under the new limit now"),
        };
        assert_eq!(l.in_flight(), 1);
        assert!(l.try_acquire().is_none(), "the new limit holds");
        drop(last);
        assert_eq!(l.in_flight(), 0);
        let again = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        drop(again);
    }

    #[test]
    fn a_zero_limit_pauses_admissions() {
        let l = Arc::new(Limiter::new(None, 0));
        assert!(l.try_acquire().is_none());
        let mut slot = queued(l.acquire_or_enqueue(1));
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(slot.poll_permit(&mut cx).is_pending());
        l.set_limit(1);
        assert!(matches!(slot.poll_permit(&mut cx), Poll::Ready(_)));
    }

    #[test]
    fn threads_hammering_one_limiter_never_exceed_it_nor_leak() {
        let l = Arc::new(Limiter::new(None, 3));
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let stuck = move || assert!(std::time::Instant::now() < give_up, "a waiter is stuck");
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (l, inside, max) = (Arc::clone(&l), Arc::clone(&inside), Arc::clone(&max));
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let permit = match l.try_acquire() {
                            Some(p) => p,
                            None => match l.acquire_or_enqueue(usize::MAX) {
                                Admission::Acquired(p) => p,
                                Admission::Queued(mut slot) => {
                                    let (_, w) = waker();
                                    let mut cx = Context::from_waker(&w);
                                    loop {
                                        if let Poll::Ready(p) = slot.poll_permit(&mut cx) {
                                            break p;
                                        }
                                        if i % 7 == 0 {
                                            // Give up now and then: leaving must not leak.
                                            drop(slot);
                                            break match l.acquire_or_enqueue(usize::MAX) {
                                                Admission::Acquired(p) => p,
                                                Admission::Queued(mut s) => loop {
                                                    if let Poll::Ready(p) = s.poll_permit(&mut cx) {
                                                        break p;
                                                    }
                                                    stuck();
                                                    std::thread::yield_now();
                                                },
                                                Admission::Full(_) => unreachable!(),
                                            };
                                        }
                                        stuck();
                                        std::thread::yield_now();
                                    }
                                }
                                Admission::Full(_) => unreachable!(),
                            },
                        };
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        if i % 1000 == 0 {
                            l.set_limit(if i % 2000 == 0 { 2 } else { 3 });
                        }
                        drop(permit);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(max.load(Ordering::SeqCst) <= 3);
        assert_eq!(l.in_flight(), 0, "every permit came back");
        assert_eq!(l.queued(), 0);
        assert_eq!(l.state.load(Ordering::SeqCst) & WAITERS, 0);
        l.set_limit(3);
        let all: Vec<_> = (0..3).map(|_| l.try_acquire().unwrap()).collect();
        assert!(
            l.try_acquire().is_none(),
            "exactly the limit, no leaked extras"
        );
        drop(all);
    }
}
