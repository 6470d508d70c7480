//! When the daemon polls next: the poll interval with jitter (so replicas and daemons started
//! together do not fetch in lockstep) and exponential backoff after failed fetches.
//!
//! Pure: the randomness is a seeded [`SplitMix64`] the caller owns, so tests pin every delay.

use std::time::Duration;

/// Default share of the interval added as jitter: up to +10 %, enough to spread daemons that
/// start together over a few seconds of a one-minute interval.
pub const DEFAULT_JITTER: f64 = 0.1;

/// First delay after a failed fetch: short, as most failures (a restarting Git server, a DNS
/// hiccup) are over in seconds.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);

/// Longest delay between fetch attempts while the remote keeps failing: a Git host that was
/// down is noticed back within this long.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// `interval` plus up to `fraction` of it, `unit` (in `[0, 1)`) choosing where in that range.
/// `fraction` is clamped to `[0, 1]`.
pub fn jittered(interval: Duration, fraction: f64, unit: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 1.0);
    let unit = unit.clamp(0.0, 1.0);
    interval + interval.mul_f64(fraction * unit)
}

/// The delay before the next attempt after `failures` consecutive failures (≥ 1): `base`
/// doubled per further failure, at most `max`. Zero failures: no delay.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(32);
    base.saturating_mul(1u32 << doublings.min(31)).min(max)
}

/// When to poll next: on success the jittered interval; after failures the backoff, never
/// longer than the jittered interval (a failing remote is not polled less often than a healthy
/// one).
pub fn next_poll(interval: Duration, failures: u32, rng: &mut SplitMix64) -> Duration {
    let regular = jittered(interval, DEFAULT_JITTER, rng.next_unit());
    if failures == 0 {
        regular
    } else {
        backoff(failures, BACKOFF_BASE, BACKOFF_MAX).min(regular)
    }
}

/// A small seeded generator (SplitMix64): enough for jitter, deterministic for tests.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Seeded from the clock and the process id: different for every daemon start.
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn jitter_stays_within_the_fraction() {
        assert_eq!(jittered(S(60), 0.1, 0.0), S(60));
        assert_eq!(jittered(S(60), 0.1, 0.5), S(63));
        assert!(jittered(S(60), 0.1, 0.999_999) < S(66));
        assert_eq!(jittered(S(60), 5.0, 1.0), S(120), "fraction clamped to 1");
        let mut rng = SplitMix64::new(7);
        for _ in 0..1000 {
            let d = jittered(S(60), 0.1, rng.next_unit());
            assert!(d >= S(60) && d < S(66), "{d:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = |n| backoff(n, S(5), S(300));
        assert_eq!(b(0), S(0));
        assert_eq!(b(1), S(5));
        assert_eq!(b(2), S(10));
        assert_eq!(b(3), S(20));
        assert_eq!(b(7), S(300));
        assert_eq!(b(u32::MAX), S(300));
    }

    #[test]
    fn next_poll_backs_off_but_never_beyond_the_interval() {
        let mut rng = SplitMix64::new(1);
        assert!(next_poll(S(60), 0, &mut rng) >= S(60));
        assert_eq!(next_poll(S(60), 1, &mut rng), S(5));
        assert!(next_poll(S(60), 10, &mut rng) >= S(60));
        assert!(next_poll(S(60), 10, &mut rng) < S(66));
    }

    #[test]
    fn the_generator_is_deterministic_per_seed() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix64::new(42), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix64::new(42), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }
}
