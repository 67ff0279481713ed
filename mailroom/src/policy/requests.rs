//! Whether a password-reset or resend-verification request for an address is sent. The caller
//! always gets the same answer (so the endpoint tells nobody whether an address has an
//! account); the outcome is recorded for operators.

use crate::job::JobKind;

/// What became of a reset or resend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Queued,
    /// Over the per-address rate limit.
    Suppressed,
    UnknownAddress,
    AlreadyVerified,
    /// The address is on the suppression list (it bounced or complained).
    AddressSuppressed,
}

impl RequestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Queued => "queued",
            RequestOutcome::Suppressed => "suppressed",
            RequestOutcome::UnknownAddress => "unknown_address",
            RequestOutcome::AlreadyVerified => "already_verified",
            RequestOutcome::AddressSuppressed => "address_suppressed",
        }
    }
}

/// Per-address limits on emails a caller can trigger.
#[derive(Debug, Clone, Copy)]
pub struct AddressLimits {
    pub per_minute: i64,
    pub per_hour: i64,
}

/// What is known of the address before counting its recent requests.
#[derive(Debug, Clone, Copy)]
pub struct AddressFacts {
    /// The user with this address: None when there is none; else whether it is verified.
    pub user_verified: Option<bool>,
    /// The address is on the suppression list.
    pub suppressed: bool,
}

/// The first step: an outcome that needs no counting, or `None` to count the address's
/// queued requests of this kind in the last minute and hour and ask [`within_limits`].
pub fn precheck(kind: JobKind, facts: AddressFacts) -> Option<RequestOutcome> {
    match facts.user_verified {
        None => Some(RequestOutcome::UnknownAddress),
        // Mailing it again would bounce (or annoy) again, and count against the account.
        Some(_) if facts.suppressed => Some(RequestOutcome::AddressSuppressed),
        // A verified address needs no verification, and an accepted invite no other.
        Some(true) if matches!(kind, JobKind::Verification | JobKind::Invite) => {
            Some(RequestOutcome::AlreadyVerified)
        }
        Some(_) => None,
    }
}

/// The second step: queued if the requests already queued in the last minute and hour leave
/// room under the limits.
pub fn within_limits(last_minute: i64, last_hour: i64, limits: AddressLimits) -> RequestOutcome {
    if last_minute >= limits.per_minute || last_hour >= limits.per_hour {
        RequestOutcome::Suppressed
    } else {
        RequestOutcome::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestOutcome::*;

    #[test]
    fn the_precheck_decides_what_needs_no_count() {
        let f = |user_verified, suppressed| AddressFacts {
            user_verified,
            suppressed,
        };
        let table = [
            (JobKind::Verification, f(None, false), Some(UnknownAddress)),
            (JobKind::Verification, f(None, true), Some(UnknownAddress)),
            (
                JobKind::Verification,
                f(Some(false), true),
                Some(AddressSuppressed),
            ),
            (
                JobKind::Verification,
                f(Some(true), true),
                Some(AddressSuppressed),
            ),
            (
                JobKind::Verification,
                f(Some(true), false),
                Some(AlreadyVerified),
            ),
            (JobKind::Verification, f(Some(false), false), None),
            (JobKind::PasswordReset, f(Some(true), false), None),
            (JobKind::Invite, f(Some(true), false), Some(AlreadyVerified)),
            (JobKind::Invite, f(Some(false), false), None),
            (JobKind::SignIn, f(Some(true), false), None),
            (JobKind::SignIn, f(Some(false), false), None),
            (
                JobKind::SignIn,
                f(Some(false), true),
                Some(AddressSuppressed),
            ),
            (JobKind::PasswordReset, f(Some(false), false), None),
            (
                JobKind::PasswordReset,
                f(Some(true), true),
                Some(AddressSuppressed),
            ),
        ];
        for (kind, facts, want) in table {
            assert_eq!(precheck(kind, facts), want, "{kind:?} {facts:?}");
        }
    }

    #[test]
    fn limits_hold_per_minute_and_per_hour() {
        let limits = AddressLimits {
            per_minute: 1,
            per_hour: 5,
        };
        assert_eq!(within_limits(0, 0, limits), Queued);
        assert_eq!(within_limits(0, 4, limits), Queued);
        assert_eq!(within_limits(1, 1, limits), Suppressed);
        assert_eq!(within_limits(0, 5, limits), Suppressed);
        // Whatever the counts, never more than the limits are queued.
        for minute in 0..4 {
            for hour in minute..8 {
                let queued = within_limits(minute, hour, limits) == Queued;
                assert_eq!(queued, minute < 1 && hour < 5, "{minute} {hour}");
            }
        }
    }
}
