//! Rate limiters that pace sends: cells spaced 1/rate apart, with at most a small burst saved
//! up. How the account's rate is divided among dispatchers is the `rate` module's, which uses
//! this one; this module only builds the limiter for a given share.

use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A rate limiter that lets through at most `per_second` sends in any one-second window:
/// cells are spaced 1/rate apart with no burst, so no second ever sees more than its share.
pub fn limiter(per_second: f64) -> DefaultDirectRateLimiter {
    paced(per_second, 1)
}

/// Cells spaced 1/rate apart, of which up to `burst` may be saved up. A burst of one loses a
/// cell whenever no send is ready at its moment, and a waiting send is always a little late
/// (timers have millisecond resolution, which is the whole spacing at 1,000 a second): the
/// rate actually reached falls short of the limit. A small burst lets the late sends catch
/// up. Any one second then sees at most `per_second + burst - 1` sends, which the caller keeps
/// under the account's rate (see the `rate` module).
pub fn paced(per_second: f64, burst: u32) -> DefaultDirectRateLimiter {
    let per_second = if per_second.is_finite() && per_second > 0.0 {
        per_second
    } else {
        1.0
    };
    let period = Duration::from_secs_f64(1.0 / per_second);
    let burst = std::num::NonZeroU32::new(burst.max(1)).expect("at least one");
    RateLimiter::direct(
        Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(burst),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_limiter_saves_up_at_most_its_burst() {
        // Fresh, a limiter holds its whole burst and nothing more: at 10 a second (one cell
        // per 100 ms), three at once and then none.
        let l = paced(10.0, 3);
        assert!((0..3).all(|_| l.check().is_ok()));
        assert!(l.check().is_err());
        let one = limiter(10.0);
        assert!(one.check().is_ok());
        assert!(one.check().is_err());
    }
}
