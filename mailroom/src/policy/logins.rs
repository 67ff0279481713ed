//! When failed logins lock an address. Within a sliding window, `limit` failures (attempts in
//! progress count, so concurrent attempts cannot all pass the check) lock the address until
//! the oldest of the last `limit` failures leaves the window. Locked answers are not failures:
//! a flood must not extend the lockout forever. An attempt still "in progress" after
//! [`LoginRules::RESERVATION_TTL`] was abandoned (its caller gave up, a timeout, a database
//! error before its outcome was written): it is no failure, so a person whose client gave up
//! a few times is not locked out with the right password.

use chrono::{DateTime, Duration, Utc};

/// The lockout rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRules {
    /// Failures within the window that lock the address; at least 1.
    pub limit: i64,
    pub window: Duration,
}

/// One recorded attempt: when, and whether its outcome is still unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub in_progress: bool,
}

impl LoginRules {
    /// How long an attempt in progress counts: far longer than any login takes (a request
    /// times out after `REQUEST_TIMEOUT`, 10 s by default).
    pub const RESERVATION_TTL: Duration = Duration::minutes(1);

    /// How many of the newest attempts to read: the failures that decide, and room for
    /// abandoned reservations among them.
    pub fn attempts_to_read(&self) -> i64 {
        self.failures_to_read() * 4
    }

    /// How many of the newest failures [`locked_until`] needs to see.
    pub fn failures_to_read(&self) -> i64 {
        self.limit.max(1)
    }

    /// Failures older than this do not count.
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.window
    }
}

/// Until when the address is locked, given its attempts within the window, newest first (at
/// most [`LoginRules::attempts_to_read`] of them are needed). None: the attempt may go ahead.
pub fn locked_until(
    newest_first: &[Attempt],
    rules: LoginRules,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let nth = usize::try_from(rules.failures_to_read() - 1).ok()?;
    newest_first
        .iter()
        .filter(|a| !a.in_progress || a.at > now - LoginRules::RESERVATION_TTL)
        .nth(nth)
        .map(|a| a.at + rules.window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::minutes(min)
    }

    fn failed(min: i64) -> Attempt {
        Attempt {
            at: at(min),
            in_progress: false,
        }
    }

    fn reserved(min: i64) -> Attempt {
        Attempt {
            at: at(min),
            in_progress: true,
        }
    }

    #[test]
    fn the_limit_th_failure_locks_until_it_leaves_the_window() {
        let rules = LoginRules {
            limit: 3,
            window: Duration::minutes(15),
        };
        let now = at(10);
        assert_eq!(locked_until(&[], rules, now), None);
        assert_eq!(locked_until(&[failed(10), failed(9)], rules, now), None);
        // Three failures: locked until the oldest of them is 15 minutes old.
        assert_eq!(
            locked_until(&[failed(10), failed(9), failed(5)], rules, now),
            Some(at(20))
        );
        // More than the limit: the limit-th newest decides.
        assert_eq!(
            locked_until(&[failed(10), failed(9), failed(8), failed(1)], rules, now),
            Some(at(23))
        );
    }

    #[test]
    fn attempts_in_progress_count_until_they_are_abandoned() {
        let rules = LoginRules {
            limit: 3,
            window: Duration::minutes(15),
        };
        let now = at(10);
        // Concurrent attempts of this minute count: the third is refused.
        assert_eq!(
            locked_until(&[reserved(10), reserved(10), reserved(10)], rules, now),
            Some(at(25))
        );
        // Reservations left minutes ago (a client that gave up) are no failures.
        let abandoned = [
            reserved(8),
            reserved(7),
            reserved(6),
            reserved(5),
            failed(4),
        ];
        assert_eq!(locked_until(&abandoned, rules, now), None);
        // Real failures still lock, whatever abandoned reservations sit between them.
        let mixed = [failed(9), reserved(8), failed(7), reserved(6), failed(5)];
        assert_eq!(locked_until(&mixed, rules, now), Some(at(20)));
    }

    #[test]
    fn a_limit_below_one_counts_as_one() {
        let rules = LoginRules {
            limit: 0,
            window: Duration::minutes(1),
        };
        assert_eq!(rules.failures_to_read(), 1);
        assert_eq!(locked_until(&[failed(3)], rules, at(3)), Some(at(4)));
    }
}
