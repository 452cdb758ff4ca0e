//! Per-thread stripes for the figures every call updates, so that calls on different
//! cores do not fight over one cache line.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
};

/// The number of stripes (a power of two). Threads beyond it share stripes, which stays
/// correct (every update is atomic), only less spread out.
pub(crate) const STRIPES: usize = 8;

/// Aligns its content to its own pair of cache lines (adjacent-line prefetching pulls
/// lines in pairs on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// The calling thread's stripe, assigned round-robin on the thread's first call.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        let mut index = stripe.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(index);
        }
        index
    })
}

/// A counter that every call increments: one stripe per thread, summed when read.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    stripes: [Padded<AtomicU64>; STRIPES],
}

impl StripedCounter {
    pub(crate) fn increment(&self) {
        self.stripes[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn increments_from_many_threads_all_count() {
        let counter = Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.increment();
                    }
                    stripe()
                })
            })
            .collect();
        let stripes: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(counter.sum(), 12_000);
        assert!(stripes.iter().all(|s| *s < STRIPES));
        assert!(
            stripes.iter().any(|s| *s != stripes[0]),
            "threads are spread"
        );
        assert_eq!(stripe(), stripe(), "a thread keeps its stripe");
    }
}
