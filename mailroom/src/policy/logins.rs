//! When failed logins lock an address. Within a sliding window, `limit` failures (attempts in
//! progress count, so concurrent attempts cannot all pass the check) lock the address until
//! the oldest of the last `limit` failures leaves the window. Locked answers are not failures:
//! a flood must not extend the lockout forever.

use chrono::{DateTime, Duration, Utc};

/// The lockout rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRules {
    /// Failures within the window that lock the address; at least 1.
    pub limit: i64,
    pub window: Duration,
}

impl LoginRules {
    /// How many of the newest failures [`locked_until`] needs to see.
    pub fn failures_to_read(&self) -> i64 {
        self.limit.max(1)
    }

    /// Failures older than this do not count.
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.window
    }
}

/// Until when the address is locked, given its failures within the window, newest first (at
/// most [`LoginRules::failures_to_read`] of them are needed). None: the attempt may go ahead.
pub fn locked_until(newest_first: &[DateTime<Utc>], rules: LoginRules) -> Option<DateTime<Utc>> {
    let nth = usize::try_from(rules.failures_to_read() - 1).ok()?;
    newest_first.get(nth).map(|t| *t + rules.window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::minutes(min)
    }

    #[test]
    fn the_limit_th_failure_locks_until_it_leaves_the_window() {
        let rules = LoginRules {
            limit: 3,
            window: Duration::minutes(15),
        };
        assert_eq!(locked_until(&[], rules), None);
        assert_eq!(locked_until(&[at(10), at(9)], rules), None);
        // Three failures: locked until the oldest of them is 15 minutes old.
        assert_eq!(locked_until(&[at(10), at(9), at(5)], rules), Some(at(20)));
        // More than the limit: the limit-th newest decides.
        assert_eq!(
            locked_until(&[at(10), at(9), at(8), at(1)], rules),
            Some(at(23))
        );
    }

    #[test]
    fn a_limit_below_one_counts_as_one() {
        let rules = LoginRules {
            limit: 0,
            window: Duration::minutes(1),
        };
        assert_eq!(rules.failures_to_read(), 1);
        assert_eq!(locked_until(&[at(3)], rules), Some(at(4)));
    }
}
