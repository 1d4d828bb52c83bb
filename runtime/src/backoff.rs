//! A handler's retry delays: the backoff schedule, its jitter, and the cap
//! on a delay the guest asks for.

use std::time::Duration;

/// The retry delays of one handler.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Delay after a failure on attempt n is `steps[n - 1]`; the last entry repeats.
    steps: Vec<Duration>,
    /// Fraction of random spread added on top of each delay.
    jitter: f64,
    /// The longest delay a guest may ask for.
    pub(crate) max_guest_delay: Duration,
}

impl Backoff {
    pub fn new(steps: Vec<Duration>, jitter: f64, max_guest_delay: Duration) -> Backoff {
        assert!(!steps.is_empty(), "config validation guarantees one step");
        Backoff {
            steps,
            jitter,
            max_guest_delay,
        }
    }

    /// The schedule's delay after a failure on `attempt` (1-based), without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) as usize - 1).min(self.steps.len() - 1);
        self.steps[i]
    }

    /// The delay to use after a failure on `attempt`, with jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 + self.jitter * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_repeats_its_last_step() {
        let b = Backoff::new(vec![secs(1), secs(2)], 0.0, secs(3600));
        assert_eq!(b.delay(1), secs(1));
        assert_eq!(b.delay(2), secs(2));
        assert_eq!(b.delay(9), secs(2));
        assert_eq!(b.delay(0), secs(1));
    }

    #[test]
    fn jitter_only_adds_within_its_fraction() {
        let b = Backoff::new(vec![secs(10)], 0.5, secs(3600));
        for _ in 0..100 {
            let d = b.delay(1);
            assert!(d >= secs(10) && d <= secs(15), "{d:?}");
        }
    }
}
