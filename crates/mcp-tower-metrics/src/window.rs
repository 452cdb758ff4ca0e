//! Sliding windows for `/stats`: call rates over 1 s and 10 s, and latency quantiles over
//! the configured window, kept per tool in rings of time slots.
//!
//! Writers are lock-free on the common path (one atomic load to check the slot is current,
//! then `fetch_add`s); the first writer of a new slot takes a per-ring mutex to clear it.
//! Time is tokio's clock, counted in slots since the handle's epoch, so tests on a paused
//! clock see exact figures.

use std::sync::{
    Mutex,
    atomic::{AtomicU32, AtomicU64, Ordering},
};

/// The width of a rate slot.
pub(crate) const RATE_SLOT_MS: u64 = 100;
/// Rate slots in 1 s and in 10 s.
const RATE_SLOTS_1S: u64 = 1_000 / RATE_SLOT_MS;
const RATE_SLOTS_10S: u64 = 10_000 / RATE_SLOT_MS;
/// 10 s of complete slots plus the current one, rounded up to a power of two.
const RATE_RING: usize = 128;

/// The latency window is kept in this many slots (the oldest drops out whole).
pub(crate) const LATENCY_SLOTS: u64 = 12;

/// Something a slot holds, cleared when the slot is reused for a newer time.
trait SlotData {
    fn clear(&self);
}

struct Slot<T> {
    /// The tick this slot holds, plus one (0: never used).
    tag: AtomicU64,
    data: T,
}

/// A ring of time slots; slot `tick % len` holds tick `tick` until a newer tick reuses it.
struct Ring<T> {
    slots: Box<[Slot<T>]>,
    clearing: Mutex<()>,
}

impl<T: SlotData> Ring<T> {
    fn new(len: usize, make: impl Fn() -> T) -> Self {
        Self {
            slots: (0..len)
                .map(|_| Slot {
                    tag: AtomicU64::new(0),
                    data: make(),
                })
                .collect(),
            clearing: Mutex::new(()),
        }
    }

    fn index(&self, tick: u64) -> usize {
        (tick % self.slots.len() as u64) as usize
    }

    /// The slot to record `tick` into, cleared first if it held an older tick. `None`
    /// when a newer tick already owns it (a sample that arrives more than a whole ring
    /// late is dropped rather than written into the wrong time).
    fn writable(&self, tick: u64) -> Option<&T> {
        let slot = &self.slots[self.index(tick)];
        let tag = tick + 1;
        let current = slot.tag.load(Ordering::Acquire);
        if current == tag {
            return Some(&slot.data);
        }
        if current > tag {
            return None;
        }
        let _clearing = self
            .clearing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = slot.tag.load(Ordering::Acquire);
        if current > tag {
            return None;
        }
        if current < tag {
            slot.data.clear();
            slot.tag.store(tag, Ordering::Release);
        }
        Some(&slot.data)
    }

    /// The slot holding `tick`, if it still does.
    fn readable(&self, tick: u64) -> Option<&T> {
        let slot = &self.slots[self.index(tick)];
        (slot.tag.load(Ordering::Acquire) == tick + 1).then_some(&slot.data)
    }
}

#[derive(Default)]
struct Arrivals(AtomicU64);

impl SlotData for Arrivals {
    fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// Calls received per 100 ms slot, for `qps_1s` and `qps_10s`.
pub(crate) struct RateWindow {
    ring: Ring<Arrivals>,
}

impl RateWindow {
    pub(crate) fn new() -> Self {
        Self {
            ring: Ring::new(RATE_RING, Arrivals::default),
        }
    }

    /// Counts one call received `ms` after the epoch.
    pub(crate) fn record(&self, ms: u64) {
        if let Some(slot) = self.ring.writable(ms / RATE_SLOT_MS) {
            slot.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls per second over the last 1 s and the last 10 s of *complete* slots before
    /// `now_ms` (so a rate reads 100 at a steady 100 calls/s, not 90–100 depending on how
    /// far into the current slot we are; a call shows up within 100 ms).
    pub(crate) fn qps(&self, now_ms: u64) -> (f64, f64) {
        let current = now_ms / RATE_SLOT_MS;
        let sum = |slots: u64| -> u64 {
            (1..=slots.min(current))
                .filter_map(|back| self.ring.readable(current - back))
                .map(|slot| slot.0.load(Ordering::Relaxed))
                .sum()
        };
        let per_second =
            |calls: u64, slots: u64| calls as f64 * 1_000.0 / (slots * RATE_SLOT_MS) as f64;
        (
            per_second(sum(RATE_SLOTS_1S), RATE_SLOTS_1S),
            per_second(sum(RATE_SLOTS_10S), RATE_SLOTS_10S),
        )
    }
}

/// A log-linear histogram of microseconds: exact below 16 µs, then 16 buckets per power of
/// two up to 2^32 µs (about 71 minutes; longer values land in the last bucket). A value is
/// reported as its bucket's highest value, so a quantile reads at most 6.25 % high and never
/// low.
pub(crate) mod buckets {
    const SUB_BITS: u32 = 4;
    const SUB: u64 = 1 << SUB_BITS;
    const MAX_MSB: u32 = 31;
    /// The number of buckets.
    pub(crate) const COUNT: usize = (SUB as usize) * (MAX_MSB - SUB_BITS + 2) as usize;

    /// The bucket of `micros`.
    pub(crate) fn index(micros: u64) -> usize {
        if micros < SUB {
            return micros as usize;
        }
        let micros = micros.min((1 << (MAX_MSB + 1)) - 1);
        let msb = 63 - micros.leading_zeros();
        let shift = msb - SUB_BITS;
        ((shift as u64 + 1) * SUB + ((micros >> shift) & (SUB - 1))) as usize
    }

    /// The highest value of bucket `index`.
    pub(crate) fn highest(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let shift = index / SUB - 1;
        let sub = index % SUB;
        ((SUB + sub + 1) << shift) - 1
    }
}

struct LatencySlot {
    /// Calls that finished (cancelled ones are not counted: they have no answer).
    answered: AtomicU64,
    succeeded: AtomicU64,
    histogram: Box<[AtomicU32]>,
}

impl LatencySlot {
    fn new() -> Self {
        Self {
            answered: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            histogram: (0..buckets::COUNT).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl SlotData for LatencySlot {
    fn clear(&self) {
        self.answered.store(0, Ordering::Relaxed);
        self.succeeded.store(0, Ordering::Relaxed);
        for bucket in self.histogram.iter() {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

/// What a [`LatencyWindow`] holds for its window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LatencySummary {
    pub(crate) answered: u64,
    pub(crate) succeeded: u64,
    /// p50, p95, p99 in milliseconds (`None` without calls).
    pub(crate) quantiles_ms: Option<[f64; 3]>,
}

/// Latencies and successes of answered calls over the window, in [`LATENCY_SLOTS`] slots.
pub(crate) struct LatencyWindow {
    ring: Ring<LatencySlot>,
    slot_ms: u64,
}

impl LatencyWindow {
    /// A window of `LATENCY_SLOTS` slots of `slot_ms` each.
    pub(crate) fn new(slot_ms: u64) -> Self {
        Self {
            // One spare slot, so the slot a writer is clearing is never one a reader reads.
            ring: Ring::new(LATENCY_SLOTS as usize + 1, LatencySlot::new),
            slot_ms: slot_ms.max(1),
        }
    }

    /// Records a call answered at `now_ms` after `micros`.
    pub(crate) fn record(&self, now_ms: u64, micros: u64, success: bool) {
        if let Some(slot) = self.ring.writable(now_ms / self.slot_ms) {
            slot.answered.fetch_add(1, Ordering::Relaxed);
            if success {
                slot.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            slot.histogram[buckets::index(micros)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current slot and the `LATENCY_SLOTS - 1` before it: between
    /// `window - window/12` and `window` of history.
    pub(crate) fn summary(&self, now_ms: u64) -> LatencySummary {
        let current = now_ms / self.slot_ms;
        let slots: Vec<&LatencySlot> = (0..LATENCY_SLOTS.min(current + 1))
            .filter_map(|back| self.ring.readable(current - back))
            .collect();
        let answered = slots
            .iter()
            .map(|s| s.answered.load(Ordering::Relaxed))
            .sum();
        let succeeded = slots
            .iter()
            .map(|s| s.succeeded.load(Ordering::Relaxed))
            .sum();
        let mut merged = vec![0u64; buckets::COUNT];
        for slot in &slots {
            for (total, bucket) in merged.iter_mut().zip(slot.histogram.iter()) {
                *total += u64::from(bucket.load(Ordering::Relaxed));
            }
        }
        LatencySummary {
            answered,
            succeeded,
            quantiles_ms: quantiles(&merged, [0.50, 0.95, 0.99]),
        }
    }
}

/// The quantiles `qs` (each in `0..=1`) of a bucketed histogram, in milliseconds.
fn quantiles(histogram: &[u64], qs: [f64; 3]) -> Option<[f64; 3]> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    Some(qs.map(|q| {
        // The smallest value with at least `q` of the calls at or below it.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let index = histogram
            .iter()
            .position(|&count| {
                seen += count;
                seen >= rank
            })
            .unwrap_or(histogram.len() - 1);
        buckets::highest(index) as f64 / 1_000.0
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_with_bounded_error() {
        let mut last = 0;
        for micros in 0..100_000u64 {
            let index = buckets::index(micros);
            assert!(index >= last, "buckets are monotonic");
            last = index;
        }
        for micros in (0..100_000u64).chain((0..64).map(|s| 1u64 << s)) {
            let index = buckets::index(micros);
            assert!(index < buckets::COUNT, "{micros} -> {index}");
            let highest = buckets::highest(index);
            if micros < 1 << 32 {
                assert!(highest >= micros, "{micros}: {highest}");
                assert!(
                    (highest - micros) as f64 <= micros as f64 / 16.0,
                    "{micros}: {highest} is more than 6.25% high"
                );
            }
        }
        assert_eq!(buckets::index(u64::MAX), buckets::COUNT - 1);
        for index in 1..buckets::COUNT {
            assert_eq!(buckets::index(buckets::highest(index)), index);
            assert_eq!(buckets::index(buckets::highest(index - 1) + 1), index);
        }
    }

    #[test]
    fn rates_count_complete_slots() {
        let w = RateWindow::new();
        for _ in 0..5 {
            w.record(50); // slot 0
        }
        assert_eq!(w.qps(99), (0.0, 0.0), "slot 0 is not complete yet");
        assert_eq!(w.qps(100), (5.0, 0.5));
        assert_eq!(w.qps(1_099), (5.0, 0.5));
        assert_eq!(w.qps(1_100), (0.0, 0.5));
        assert_eq!(w.qps(10_099), (0.0, 0.5));
        assert_eq!(w.qps(10_100), (0.0, 0.0));
        // A whole ring later the slot is reused and the old count is gone.
        w.record(12_850);
        assert_eq!(w.qps(12_900), (1.0, 0.1));
        // A sample older than the slot's current time is dropped, not misfiled.
        w.record(50);
        assert_eq!(w.qps(12_900), (1.0, 0.1));
    }

    #[test]
    fn latency_quantiles_over_the_window() {
        let w = LatencyWindow::new(5_000);
        for ms in 1..=100u64 {
            w.record(1_000, ms * 1_000, ms % 10 != 0);
        }
        let s = w.summary(1_000);
        assert_eq!((s.answered, s.succeeded), (100, 90));
        let [p50, p95, p99] = s.quantiles_ms.unwrap();
        assert!((50.0..=50.0 * 1.0625).contains(&p50), "{p50}");
        assert!((95.0..=95.0 * 1.0625).contains(&p95), "{p95}");
        assert!((99.0..=99.0 * 1.0625).contains(&p99), "{p99}");
        // Still in the window 55 s later (slot 11 back), gone after 60 s.
        assert_eq!(w.summary(59_999).answered, 100);
        let gone = w.summary(60_000);
        assert_eq!(gone.answered, 0);
        assert_eq!(gone.quantiles_ms, None);
    }
}
