//! Retry delays after a failed heartbeat: exponential from one second up to a cap, with jitter
//! so a fleet that lost its console does not come back in lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// By default delays start at 1 s and never exceed 30 s.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt: a random point in the upper half of
    /// `min(cap, base × 2^failures)`.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.failures.min(16));
        let ceiling = exp.min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[3] >= Duration::from_secs(4) && delays[3] <= Duration::from_secs(8));
        for d in &delays[5..] {
            assert!(
                *d >= Duration::from_secs(15) && *d <= Duration::from_secs(30),
                "{d:?}"
            );
        }
        assert_eq!(b.failures(), 10);
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
