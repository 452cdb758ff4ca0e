//! [`Backoff`]: exponential backoff with full jitter.

use std::time::Duration;

/// How long to wait before a retry: exponential backoff with *full jitter*.
///
/// The wait before retry `n` (1 for the first retry) is drawn uniformly from
/// `[0, ceiling(n)]`, where `ceiling(n) = min(max, base × multiplierⁿ⁻¹)`. Full jitter
/// spreads the retries of many callers that failed together over the whole interval, so
/// a recovering upstream is not hit by synchronized waves (see "Exponential Backoff And
/// Jitter", AWS Architecture Blog).
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1));
/// assert_eq!(backoff.ceiling(1), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
/// assert_eq!(backoff.ceiling(10), Duration::from_secs(1));
/// assert!(backoff.delay(2) <= Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    multiplier: f64,
    max: Duration,
}

impl Backoff {
    /// A backoff starting at `base`, growing by `multiplier` per retry, capped at `max`.
    ///
    /// A `multiplier` below 1 (or not a number) is taken as 1; a `base` above `max` as `max`.
    pub fn new(base: Duration, multiplier: f64, max: Duration) -> Self {
        let multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        Self {
            base: base.min(max),
            multiplier,
            max,
        }
    }

    /// The longest wait before retry `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        if retry <= 1 {
            return self.base;
        }
        let exponent = i32::try_from(retry - 1).unwrap_or(i32::MAX);
        // In nanoseconds, so that round figures stay exact (100 ms × 4 is 400 ms).
        let nanos = self.base.as_nanos() as f64 * self.multiplier.powi(exponent);
        // `powi` may overflow to infinity; anything at or past `max` is `max`.
        if nanos.is_nan() || nanos >= self.max.as_nanos() as f64 {
            return self.max;
        }
        // `as` saturates; the result is below `max`.
        Duration::from_nanos(nanos as u64).min(self.max)
    }

    /// A wait before retry `retry`, drawn uniformly from `[0, ceiling(retry)]` with a
    /// thread-local generator (`fastrand`).
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_at(retry, fastrand::f64())
    }

    /// The wait before retry `retry` for a given draw `unit` in `[0, 1]` (clamped): the
    /// deterministic part of [`Backoff::delay`].
    pub fn delay_at(&self, retry: u32, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let ceiling = self.ceiling(retry);
        // `as` saturates, and `min` keeps float rounding from exceeding the ceiling.
        Duration::from_nanos((ceiling.as_nanos() as f64 * unit) as u64).min(ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceilings_grow_then_cap() {
        let b = Backoff::new(ms(100), 2.0, ms(1000));
        let ceilings: Vec<_> = (1..=6).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(b.ceiling(0), ms(100), "retry 0 is read as the first");
        assert_eq!(b.ceiling(u32::MAX), ms(1000), "no overflow");
    }

    #[test]
    fn bad_parameters_are_tamed() {
        let b = Backoff::new(ms(500), f64::NAN, ms(100));
        assert_eq!(b.ceiling(1), ms(100));
        assert_eq!(b.ceiling(5), ms(100));
        let huge = Backoff::new(Duration::MAX, 10.0, Duration::MAX);
        assert_eq!(huge.ceiling(3), Duration::MAX);
    }

    #[test]
    fn draws_cover_the_interval() {
        let b = Backoff::new(ms(100), 2.0, ms(10_000));
        assert_eq!(b.delay_at(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay_at(3, 1.0), ms(400));
        assert_eq!(b.delay_at(3, 0.5), ms(200));
        assert_eq!(b.delay_at(3, 7.0), ms(400), "clamped");
        assert_eq!(b.delay_at(3, f64::NAN), Duration::ZERO);
        // Real draws are spread out, not all at the ceiling (that would be no jitter).
        let draws: Vec<_> = (0..200).map(|_| b.delay(1)).collect();
        assert!(draws.iter().all(|d| *d <= ms(100)));
        assert!(draws.iter().any(|d| *d < ms(50)));
        assert!(draws.iter().any(|d| *d > ms(50)));
    }

    proptest! {
        #[test]
        fn delays_stay_within_the_ceiling(
            base_ms in 0u64..10_000,
            multiplier in 1.0f64..10.0,
            max_ms in 0u64..100_000,
            retry in 0u32..100,
            unit in 0.0f64..=1.0,
        ) {
            let b = Backoff::new(ms(base_ms), multiplier, ms(max_ms));
            let ceiling = b.ceiling(retry);
            prop_assert!(ceiling <= ms(max_ms));
            prop_assert!(ceiling >= ms(base_ms.min(max_ms)));
            prop_assert!(b.ceiling(retry + 1) >= ceiling, "ceilings never shrink");
            prop_assert!(b.delay_at(retry, unit) <= ceiling);
        }
    }
}
