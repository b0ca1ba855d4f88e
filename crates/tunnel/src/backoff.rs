//! Exponential backoff with jitter for reconnecting: the first retry after
//! about a second, doubling up to a cap, each delay spread by ±20 % so that
//! many agents cut off at once do not come back at once.

use std::time::Duration;

use rand::RngExt;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, factor: f64, jitter: f64) -> Backoff {
        Backoff {
            initial,
            max,
            factor,
            jitter: jitter.clamp(0.0, 1.0),
            next: initial,
        }
    }

    /// agentk's reconnect policy: 1 s, doubling, at most 30 s, ±20 %.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 2.0, 0.2)
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.mul_f64(self.factor).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        let spread = rand::rng().random_range(-self.jitter..=self.jitter);
        base.mul_f64(1.0 + spread).min(self.max)
    }

    /// Back to the first delay, after a connection that worked.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 2.0, 0.0);
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut backoff = Backoff::reconnect();
        let first = backoff.next_delay();
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }
}
