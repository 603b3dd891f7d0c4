//! Capped exponential back-off between connection attempts.

use std::time::Duration;

/// Delays between reconnection attempts: `min`, doubling on each failure up to `max`, each
/// one shortened at random by up to half (so that gateways that lost the same broker do not
/// all come back in the same instant), and never below `min`. A successful connection resets
/// it.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self::with_seed(min, max, seed)
    }

    fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The undisturbed delay after the current number of failures.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        // xorshift64: no need for a cryptographic generator to spread reconnections.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let shortened = ceiling.as_secs_f64() * (1.0 - 0.5 * fraction);
        Duration::try_from_secs_f64(shortened)
            .map_or(ceiling, |d| d.min(ceiling))
            .max(self.min)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for seed in [1, 42, 0xdead_beef, u64::MAX] {
            let mut b = Backoff::with_seed(min, max, seed);
            let ceilings = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
            for ceiling in ceilings {
                assert_eq!(b.ceiling(), Duration::from_millis(ceiling));
                let d = b.next_delay();
                let lower = Duration::from_millis(ceiling / 2).max(min);
                assert!(
                    d >= lower && d <= Duration::from_millis(ceiling),
                    "{d:?} for {ceiling}"
                );
            }
            b.reset();
            let d = b.next_delay();
            assert!(
                d >= min && d <= Duration::from_millis(100),
                "{d:?} after reset"
            );
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(60), 7);
        for _ in 0..10 {
            b.next_delay();
        }
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(
            delays.len() > 10,
            "delays at the cap should differ: {delays:?}"
        );
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(30)));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::with_seed(Duration::from_secs(3600), Duration::MAX, 3);
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= Duration::from_secs(3600));
        }
        // max below min is treated as min.
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }
}
