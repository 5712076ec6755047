//! Exponential backoff with jitter for re-dialing relays and peers.

use std::time::Duration;

use rand::Rng;

/// Backoff state: each failure doubles the delay up to `max`; success resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
            attempts: 0,
        }
    }

    /// The delay before the next attempt (with up to 20% jitter), advancing the state.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let jitter = rand::thread_rng().gen_range(0.0..0.2);
        base.mul_f64(1.0 + jitter).min(self.max)
    }

    /// Forget past failures.
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.attempts = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] < Duration::from_millis(121));
        assert!(d[1] >= Duration::from_millis(200) && d[1] < Duration::from_millis(241));
        assert!(d.iter().all(|x| *x <= Duration::from_millis(1000)));
        assert_eq!(d[5], Duration::from_millis(1000));
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(121));
    }
}
