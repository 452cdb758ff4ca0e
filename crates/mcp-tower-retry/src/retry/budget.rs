//! [`RetryBudget`]: retries limited to a share of recent calls plus a floor.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use tokio::time::Instant;

use super::{
    config::BudgetConfig,
    striped::{Padded, STRIPES, stripe},
};

/// The number of slots the window is divided into (as tower's `TpsBudget`).
const SLOTS: usize = 10;

/// The tokens one call deposits when the ratio is not zero. Withdrawals cost
/// `DEPOSIT / ratio` tokens, so a ratio is honoured to within 1% of its value.
const DEPOSIT: i32 = 100;

/// A retry budget with the semantics of tower's `TpsBudget`: over any `window`, at most
/// `ratio` × (calls in the window) + `min_per_sec` × `window` retries.
///
/// Unlike `TpsBudget` it takes no lock and reads no clock on the hot path: a call deposits
/// at its arrival time (`ToolCall::received_at`, read once per call by the stack) with one
/// compare-and-swap on one of ten slots; each slot packs its epoch and its balance in one
/// `AtomicU64`, so a slot that comes round again is reset atomically with the first write.
/// Each thread writes its own stripe of slots (calls on two cores do not contend for a
/// cache line); a withdrawal sums every stripe. Two retries racing for the last token may
/// both get it (as with `TpsBudget`): the budget can be overdrawn by at most the number of
/// retries decided at the same instant.
pub(crate) struct RetryBudget {
    origin: Instant,
    slot_nanos: u64,
    /// Per stripe, per slot: `epoch << 32 | balance as u32`.
    stripes: [Padded<[AtomicU64; SLOTS]>; STRIPES],
    /// The floor, in tokens: `min_per_sec × window × withdraw`.
    reserve: i64,
    deposit: i32,
    withdraw: i32,
    config: BudgetConfig,
}

fn pack(epoch: u32, balance: i32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(balance as u32)
}

fn unpack(slot: u64) -> (u32, i32) {
    ((slot >> 32) as u32, slot as u32 as i32)
}

impl RetryBudget {
    /// A budget from a validated configuration, its window starting now.
    pub(crate) fn new(config: &BudgetConfig) -> Self {
        Self::starting_at(config, Instant::now())
    }

    pub(crate) fn starting_at(config: &BudgetConfig, origin: Instant) -> Self {
        let (deposit, withdraw) = if config.ratio > 0.0 {
            let withdraw = (f64::from(DEPOSIT) / config.ratio).round();
            (DEPOSIT, (withdraw as i32).max(1))
        } else {
            // No share of the calls: only the floor can be withdrawn.
            (0, 1)
        };
        let window_secs = config.window.as_secs_f64();
        let reserve =
            (f64::from(config.min_per_sec) * window_secs).round() as i64 * i64::from(withdraw);
        let slot_nanos = u64::try_from((config.window / SLOTS as u32).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            origin,
            slot_nanos,
            stripes: std::array::from_fn(|_| {
                Padded(std::array::from_fn(|_| AtomicU64::new(pack(0, 0))))
            }),
            reserve,
            deposit,
            withdraw,
            config: config.clone(),
        }
    }

    fn epoch(&self, at: Instant) -> u32 {
        let elapsed = at.saturating_duration_since(self.origin);
        let nanos = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        // Truncation wraps after 2³² slots (13 years with 100 ms slots); epochs are only
        // compared by their wrapping difference.
        (nanos / self.slot_nanos) as u32
    }

    /// Adds `amount` to the slot of `epoch` in the calling thread's stripe, resetting the
    /// slot if it held an older epoch.
    fn add(&self, epoch: u32, amount: i32) {
        let slot = &self.stripes[stripe()].0[epoch as usize % SLOTS];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_epoch, balance) = unpack(current);
            let next = if slot_epoch == epoch {
                pack(epoch, balance.saturating_add(amount))
            } else if (epoch.wrapping_sub(slot_epoch) as i32) > 0 {
                pack(epoch, amount)
            } else {
                // The slot already holds a newer epoch: this amount belongs to a slot
                // that has left the window (a call that arrived long ago).
                return;
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The tokens available at `epoch`: the floor plus every slot still in the window.
    fn balance_at(&self, epoch: u32) -> i64 {
        self.stripes
            .iter()
            .flat_map(|stripe| stripe.0.iter())
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(slot_epoch, _)| (epoch.wrapping_sub(*slot_epoch) as usize) < SLOTS)
            .map(|(_, balance)| i64::from(balance))
            .fold(self.reserve, i64::saturating_add)
    }

    /// Records a call that arrived at `at` (the first attempt; retries do not deposit).
    pub(crate) fn deposit(&self, at: Instant) {
        if self.deposit != 0 {
            self.add(self.epoch(at), self.deposit);
        }
    }

    /// Takes one retry from the budget at `now`; `false` when it is exhausted.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let epoch = self.epoch(now);
        if self.balance_at(epoch) < i64::from(self.withdraw) {
            return false;
        }
        self.add(epoch, -self.withdraw);
        true
    }

    /// How many retries the budget would allow at `now`.
    pub(crate) fn available(&self, now: Instant) -> u64 {
        let balance = self.balance_at(self.epoch(now)).max(0);
        u64::try_from(balance / i64::from(self.withdraw)).unwrap_or(0)
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// One slot's length.
    #[cfg(test)]
    fn slot(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.slot_nanos)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config)
            .field("available", &self.available(Instant::now()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(window_secs: u64, min_per_sec: u32, ratio: f64) -> RetryBudget {
        RetryBudget::new(&BudgetConfig {
            window: Duration::from_secs(window_secs),
            min_per_sec,
            ratio,
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // The four tests of tower's `TpsBudget`, on our budget.

    #[tokio::test(start_paused = true)]
    async fn empty() {
        let b = budget(1, 0, 1.0);
        assert!(!b.withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_leak_out_of_the_window() {
        let b = budget(1, 0, 1.0);
        b.deposit(Instant::now());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!b.withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn slots() {
        let b = budget(1, 0, 0.5);
        b.deposit(Instant::now());
        b.deposit(Instant::now());
        tokio::time::advance(ms(901)).await;
        // 900 ms later, the deposits are still valid.
        assert!(b.withdraw(Instant::now()));

        // A blank slate.
        tokio::time::advance(ms(2001)).await;
        b.deposit(Instant::now());
        tokio::time::advance(ms(301)).await;
        b.deposit(Instant::now());
        tokio::time::advance(ms(801)).await;
        b.deposit(Instant::now());
        // The first deposit has expired; the 2nd and 3rd pay for one retry.
        assert!(b.withdraw(Instant::now()));
        assert!(!b.withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn reserve() {
        let b = budget(1, 5, 1.0);
        for _ in 0..5 {
            assert!(b.withdraw(Instant::now()));
        }
        assert!(!b.withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_calls_plus_floor() {
        let b = budget(10, 1, 0.2);
        assert_eq!(b.available(Instant::now()), 10, "1/s over 10 s");
        for _ in 0..100 {
            b.deposit(Instant::now());
        }
        assert_eq!(b.available(Instant::now()), 30, "+ 100 calls × 0.2");
        let granted = (0..100).filter(|_| b.withdraw(Instant::now())).count();
        assert_eq!(granted, 30);
        assert_eq!(b.available(Instant::now()), 0);
        // Withdrawals expire with the window too: the floor comes back.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.available(Instant::now()), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ratio_is_the_floor_only() {
        let b = budget(2, 3, 0.0);
        for _ in 0..1000 {
            b.deposit(Instant::now());
        }
        assert_eq!(b.available(Instant::now()), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn ratios_are_honoured_closely() {
        for (ratio, calls, expected) in [(0.3, 1000, 300), (0.15, 1000, 150), (2.5, 10, 25)] {
            let b = budget(10, 0, ratio);
            for _ in 0..calls {
                b.deposit(Instant::now());
            }
            let available = b.available(Instant::now()) as i64;
            assert!(
                (available - expected).abs() <= expected / 100 + 1,
                "ratio {ratio}: {available} retries for {calls} calls"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_deposit_for_an_expired_slot_is_dropped() {
        let b = budget(1, 0, 1.0);
        let long_ago = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        b.deposit(Instant::now());
        assert_eq!(b.available(Instant::now()), 1);
        // A call that arrived 5 s ago (50 slots) deposits only now, into the same slot.
        assert_eq!(
            b.epoch(long_ago) as usize % SLOTS,
            b.epoch(Instant::now()) as usize % SLOTS
        );
        b.deposit(long_ago);
        assert_eq!(
            b.available(Instant::now()),
            1,
            "the expired deposit does not count"
        );
        assert_eq!(b.slot(), ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_deposits_are_all_counted() {
        let b = std::sync::Arc::new(budget(60, 0, 1.0));
        let now = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        b.deposit(now);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.available(now), 40_000);
        let granted = (0..50_000).filter(|_| b.withdraw(now)).count();
        assert_eq!(granted, 40_000, "withdrawals see every stripe");
    }
}
