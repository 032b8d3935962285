//! GCRA (generic cell rate algorithm): a limit of `count` per `period` with bursts of
//! `burst`, kept as one number per key: the theoretical arrival time (TAT) of the next
//! request. Smooth, exact at the boundary, and cheap to store anywhere.

/// A limit in the units GCRA works with (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time one request "costs": period / count.
    pub interval: u64,
    /// How far ahead of now the TAT may run: interval * burst.
    pub tolerance: u64,
}

impl Rate {
    pub fn new(count: u64, period: std::time::Duration, burst: u64) -> Rate {
        let interval = (period.as_nanos() / u128::from(count.max(1))).max(1) as u64;
        Rate {
            interval,
            tolerance: interval.saturating_mul(burst.max(1)),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left right now.
    pub remaining: u64,
    /// Nanoseconds until the next request would be allowed (0 when allowed).
    pub retry_after: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset_after: u64,
}

/// One GCRA step at time `now`: the decision and the new TAT (unchanged when refused).
pub fn check(tat: Option<u64>, now: u64, rate: Rate) -> (Decision, u64) {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(rate.interval);
    let ahead = new_tat - now;
    if ahead > rate.tolerance {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            retry_after: ahead - rate.tolerance,
            reset_after: tat - now,
        };
        return (decision, tat);
    }
    let decision = Decision {
        allowed: true,
        remaining: (rate.tolerance - ahead) / rate.interval,
        retry_after: 0,
        reset_after: ahead,
    };
    (decision, new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_over_the_limit_lets_exactly_the_limit_through() {
        let rate = Rate::new(10, Duration::from_secs(60), 10);
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..25 {
            let (d, t) = check(tat, 1000 * SEC, rate);
            tat = Some(t);
            allowed += u32::from(d.allowed);
        }
        assert_eq!(allowed, 10);
        // One interval (6 s) later exactly one more fits; a full period refills all ten.
        let (d, _) = check(tat, 1006 * SEC, rate);
        assert!(d.allowed);
        let (d, t) = check(tat, 1006 * SEC, rate);
        assert!(d.allowed);
        let (d2, _) = check(Some(t), 1006 * SEC, rate);
        assert!(!d2.allowed, "only one cell refilled in 6 s");
        let mut tat2 = tat;
        let mut again = 0;
        for _ in 0..20 {
            let (d, t) = check(tat2, 1060 * SEC, rate);
            tat2 = Some(t);
            again += u32::from(d.allowed);
        }
        assert_eq!(again, 10);
    }

    #[test]
    fn remaining_and_retry_after() {
        let rate = Rate::new(2, Duration::from_secs(1), 2);
        let (d1, t) = check(None, 0, rate);
        assert_eq!((d1.allowed, d1.remaining), (true, 1));
        let (d2, t) = check(Some(t), 0, rate);
        assert_eq!((d2.allowed, d2.remaining), (true, 0));
        let (d3, t3) = check(Some(t), 0, rate);
        assert!(!d3.allowed);
        assert_eq!(d3.retry_after, SEC / 2);
        assert_eq!(t3, t, "a refusal does not consume");
    }

    #[test]
    fn burst_smaller_than_count_smooths() {
        let rate = Rate::new(100, Duration::from_secs(1), 1);
        let (a, t) = check(None, 0, rate);
        let (b, _) = check(Some(t), 0, rate);
        assert!(a.allowed && !b.allowed);
        let (c, _) = check(Some(t), 10_000_000, rate);
        assert!(c.allowed, "10 ms later the next cell is there");
    }
}
