//! When failed logins lock an address. Counted twice over a sliding window: per address *and
//! client* (`client_ip`, as the calling service knows it), where `limit` failures lock that
//! client out of that address; and per address over every client, where a much higher
//! `address_limit` locks the address for everyone. So a guesser from one place locks out only
//! itself, and the person with the right password from elsewhere still gets in, while a
//! guesser spread over many addresses (a botnet) still meets a ceiling (OWASP's authentication
//! cheat sheet: lockout must not become a denial of service on the victim). A successful login
//! clears its client's failures for the address.
//!
//! Attempts in progress count, so concurrent attempts cannot all pass the check. A lock lasts
//! until the oldest of the deciding failures leaves the window. Locked answers are not
//! failures: a flood must not extend the lockout forever. An attempt still "in progress" after
//! [`LoginRules::RESERVATION_TTL`] was abandoned (its caller gave up, a timeout, a database
//! error before its outcome was written): it is no failure, so a person whose client gave up
//! a few times is not locked out with the right password.

use chrono::{DateTime, Duration, Utc};

/// The lockout rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRules {
    /// Failures of one client for one address within the window that lock that client out
    /// of it; at least 1.
    pub limit: i64,
    /// Failures for one address from every client within the window that lock the address
    /// for everyone; at least `limit`.
    pub address_limit: i64,
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

    /// How many of one client's newest attempts to read: the failures that decide, and room
    /// for abandoned reservations among them.
    pub fn attempts_to_read(&self) -> i64 {
        self.limit.max(1) * 4
    }

    /// How many of the address's newest attempts (every client) to read.
    pub fn address_attempts_to_read(&self) -> i64 {
        self.address_limit.max(self.limit).max(1) * 4
    }

    /// Failures older than this do not count.
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.window
    }
}

/// Until when this client may not log in to the address, given the client's own attempts for
/// it and the address's attempts from every client, each within the window and newest first.
/// None: the attempt may go ahead.
pub fn locked_until(
    client_newest_first: &[Attempt],
    address_newest_first: &[Attempt],
    rules: LoginRules,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let client = nth_failure(client_newest_first, rules.limit, rules.window, now);
    let address = nth_failure(
        address_newest_first,
        rules.address_limit.max(rules.limit),
        rules.window,
        now,
    );
    client.max(address)
}

/// When the `limit`-th newest failure (abandoned reservations left out) leaves the window.
fn nth_failure(
    newest_first: &[Attempt],
    limit: i64,
    window: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let nth = usize::try_from(limit.max(1) - 1).ok()?;
    newest_first
        .iter()
        .filter(|a| !a.in_progress || a.at > now - LoginRules::RESERVATION_TTL)
        .nth(nth)
        .map(|a| a.at + window)
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
            address_limit: 100,
            window: Duration::minutes(15),
        };
        let now = at(10);
        assert_eq!(locked_until(&[], &[], rules, now), None);
        assert_eq!(
            locked_until(&[failed(10), failed(9)], &[], rules, now),
            None
        );
        // Three failures: locked until the oldest of them is 15 minutes old.
        assert_eq!(
            locked_until(&[failed(10), failed(9), failed(5)], &[], rules, now),
            Some(at(20))
        );
        // More than the limit: the limit-th newest decides.
        assert_eq!(
            locked_until(
                &[failed(10), failed(9), failed(8), failed(1)],
                &[],
                rules,
                now
            ),
            Some(at(23))
        );
    }

    #[test]
    fn attempts_in_progress_count_until_they_are_abandoned() {
        let rules = LoginRules {
            limit: 3,
            address_limit: 100,
            window: Duration::minutes(15),
        };
        let now = at(10);
        // Concurrent attempts of this minute count: the third is refused.
        assert_eq!(
            locked_until(&[reserved(10), reserved(10), reserved(10)], &[], rules, now),
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
        assert_eq!(locked_until(&abandoned, &[], rules, now), None);
        // Real failures still lock, whatever abandoned reservations sit between them.
        let mixed = [failed(9), reserved(8), failed(7), reserved(6), failed(5)];
        assert_eq!(locked_until(&mixed, &[], rules, now), Some(at(20)));
    }

    #[test]
    fn a_limit_below_one_counts_as_one() {
        let rules = LoginRules {
            limit: 0,
            address_limit: 0,
            window: Duration::minutes(1),
        };
        assert_eq!(rules.attempts_to_read(), 4);
        assert_eq!(locked_until(&[failed(3)], &[], rules, at(3)), Some(at(4)));
    }

    #[test]
    fn other_clients_failures_lock_only_at_the_address_ceiling() {
        let rules = LoginRules {
            limit: 3,
            address_limit: 5,
            window: Duration::minutes(15),
        };
        let now = at(10);
        // This client has failed once; with four failures for the address in all, it is in.
        let all = [failed(9), failed(9), failed(8), failed(8), failed(7)];
        assert_eq!(locked_until(&[failed(7)], &all[..4], rules, now), None);
        // The fifth failure for the address locks it for every client, this one too.
        assert_eq!(locked_until(&[failed(7)], &all, rules, now), Some(at(22)));
        // Whichever lock lasts longer decides.
        let own = [failed(9), failed(9), failed(9)];
        assert_eq!(locked_until(&own, &all, rules, now), Some(at(24)));
        // An address ceiling below the per-client limit counts as the limit.
        let low = LoginRules {
            address_limit: 1,
            ..rules
        };
        assert_eq!(locked_until(&[], &all[..2], low, now), None);
    }
}
