//! [`WaitQueue`]: the calls waiting for one limit's permits, first come first served.

use std::{collections::VecDeque, task::Waker};

/// Waiting calls in arrival order, each known by its ticket (a number that only grows).
///
/// A ring buffer rather than a map: joining and being served are O(1) with no allocation
/// once the buffer has grown. A waiter that leaves from the middle (cancelled, timed out)
/// is marked and skipped later; marks are dropped as they reach the front, and the buffer
/// is compacted when they outnumber the waiters, so it never holds more than about twice
/// the waiting calls.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    entries: VecDeque<Entry>,
    /// Waiters in `entries` that have not left.
    live: usize,
    next_ticket: u64,
}

#[derive(Debug)]
struct Entry {
    ticket: u64,
    waker: Option<Waker>,
    left: bool,
}

/// Above this capacity an empty queue gives its memory back.
const KEEP_CAPACITY: usize = 1024;

impl WaitQueue {
    /// Calls waiting.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// A new waiter joins at the back; returns its ticket.
    pub(crate) fn push(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.entries.push_back(Entry {
            ticket,
            waker: None,
            left: false,
        });
        self.live += 1;
        ticket
    }

    /// Serves the first waiter: removes it and returns its waker (`None` inside if it has
    /// not been polled yet).
    pub(crate) fn pop_first(&mut self) -> Option<Option<Waker>> {
        while let Some(entry) = self.entries.pop_front() {
            if !entry.left {
                self.live -= 1;
                self.tidy();
                return Some(entry.waker);
            }
        }
        None
    }

    fn position(&self, ticket: u64) -> Option<usize> {
        // Tickets grow along the buffer, marked entries included.
        let index = self
            .entries
            .binary_search_by_key(&ticket, |entry| entry.ticket)
            .ok()?;
        (!self.entries[index].left).then_some(index)
    }

    /// The waker slot of a waiter still in the queue; `None` once it was served (or left).
    pub(crate) fn waker_mut(&mut self, ticket: u64) -> Option<&mut Option<Waker>> {
        let index = self.position(ticket)?;
        Some(&mut self.entries[index].waker)
    }

    /// A waiter leaves. Returns whether it was still waiting (`false`: it was served).
    pub(crate) fn remove(&mut self, ticket: u64) -> bool {
        let Some(index) = self.position(ticket) else {
            return false;
        };
        let entry = &mut self.entries[index];
        entry.left = true;
        entry.waker = None;
        self.live -= 1;
        self.tidy();
        true
    }

    /// Drops the marks of departed waiters at the front, compacts when marks outnumber
    /// waiters, and gives back the memory of a flood once it is over.
    fn tidy(&mut self) {
        while self.entries.front().is_some_and(|entry| entry.left) {
            self.entries.pop_front();
        }
        if self.entries.len() > 2 * self.live + 16 {
            self.entries.retain(|entry| !entry.left);
        }
        if self.live == 0 && self.entries.capacity() > KEEP_CAPACITY {
            self.entries = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_in_order_and_skips_those_who_left() {
        let mut q = WaitQueue::default();
        let tickets: Vec<u64> = (0..5).map(|_| q.push()).collect();
        assert_eq!(q.len(), 5);
        assert!(q.remove(tickets[1]));
        assert!(!q.remove(tickets[1]), "only once");
        assert!(q.remove(tickets[3]));
        assert_eq!(q.len(), 3);
        assert!(q.pop_first().is_some());
        assert!(q.waker_mut(tickets[0]).is_none(), "served");
        assert!(q.waker_mut(tickets[2]).is_some());
        assert!(q.pop_first().is_some());
        assert!(q.waker_mut(tickets[2]).is_none(), "served, `1` was skipped");
        assert!(q.waker_mut(tickets[4]).is_some());
        assert!(q.pop_first().is_some());
        assert!(q.pop_first().is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn departures_never_let_the_buffer_grow_without_bound() {
        let mut q = WaitQueue::default();
        // One waiter stays at the front while a million join and leave behind it.
        let _front = q.push();
        for _ in 0..1_000_000 {
            let t = q.push();
            assert!(q.remove(t));
        }
        assert_eq!(q.len(), 1);
        assert!(q.entries.len() <= 2 * q.live + 17, "{}", q.entries.len());
    }

    #[test]
    fn an_emptied_flood_gives_its_memory_back() {
        let mut q = WaitQueue::default();
        for _ in 0..10_000 {
            q.push();
        }
        while q.pop_first().is_some() {}
        assert!(q.entries.capacity() <= KEEP_CAPACITY);
    }
}
