//! Retention: how long each table that grows keeps its rows, and by which time. The sweep
//! (the dispatcher's, under a leader lock) deletes what this says has expired, in batches;
//! what "expired" is per table is here, as data, so that the rules read in one place and a
//! test can check that no table that grows is left out.
//!
//! Tables that are never swept, and why: `users` (an unverified one expires by
//! `UNVERIFIED_EXPIRE_AFTER`; a verified one is erased only on request), `suppressions` (a
//! bounced address must never be mailed again, however old the bounce), `outbox` (a row lives
//! until its job is published), `erasure_key` (one row).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A retention or an age setting as clap reads it: a duration, or None for `off`. (A type of
/// its own: clap reads an `Option` field as "may be absent", not as a value that may be `off`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep(pub Option<Duration>);

/// [`parse`] for clap's `value_parser`.
pub fn parse_keep(s: &str) -> Result<Keep, String> {
    parse(s).map(Keep)
}

/// What the sweep does next to an unverified user, and from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Reminder(DateTime<Utc>),
    Expiry(DateTime<Utc>),
}

/// The next step for an unverified user who signed up at `created_at`, was last sent a
/// verification email at `last_email_at` (None: not yet) and was `reminded` already, under
/// `UNVERIFIED_REMINDER_AFTER` and `UNVERIFIED_EXPIRE_AFTER` (None: `off`). The sweep's own
/// conditions, as the dashboard shows them: a reminder counts from the last email, once; an
/// expiry from the signup, and it comes first when both are due.
pub fn next_step(
    created_at: DateTime<Utc>,
    last_email_at: Option<DateTime<Utc>>,
    reminded: bool,
    reminder_after: Option<Duration>,
    expire_after: Option<Duration>,
) -> Option<NextStep> {
    let plus = |t: DateTime<Utc>, d: Duration| {
        t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX / 2)
    };
    let expiry = expire_after.map(|d| plus(created_at, d));
    let reminder = reminder_after
        .filter(|_| !reminded)
        .map(|d| plus(last_email_at.unwrap_or(created_at).max(created_at), d));
    match (reminder, expiry) {
        (Some(r), Some(e)) if r < e => Some(NextStep::Reminder(r)),
        (Some(r), None) => Some(NextStep::Reminder(r)),
        (_, Some(e)) => Some(NextStep::Expiry(e)),
        (None, None) => None,
    }
}

/// A table the sweep keeps short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table, as in SQL.
    pub name: &'static str,
    /// Its setting, `RETENTION_<NAME>`.
    pub setting: &'static str,
    /// What a row must satisfy to go, given `$1` = now minus the retention: a condition on
    /// an indexed time column.
    pub expired: &'static str,
    /// The default retention, in the form the setting takes.
    pub default: &'static str,
    /// What the retention counts from, for the docs and `--help`.
    pub counts_from: &'static str,
}

/// Every table swept, in the order the sweep visits them (webhook deliveries go with their
/// events, by cascade).
pub const TABLES: [Table; 13] = [
    Table {
        name: "sends",
        setting: "RETENTION_SENDS",
        // A job still in flight is never swept, however old its row.
        expired: "updated_at < $1 AND status NOT IN ('sending', 'retrying', 'waiting')",
        default: "90d",
        counts_from: "the send's last change",
    },
    Table {
        name: "ses_events",
        setting: "RETENTION_SES_EVENTS",
        expired: "occurred_at < $1",
        default: "90d",
        counts_from: "the event",
    },
    Table {
        name: "jobs",
        setting: "RETENTION_JOBS",
        // Job ids are UUIDv7: `$2` is the smallest id of the cutoff's millisecond.
        expired: "job_id < $2",
        default: "90d",
        counts_from: "the job's creation",
    },
    Table {
        name: "email_requests",
        setting: "RETENTION_EMAIL_REQUESTS",
        expired: "requested_at < $1",
        // The per-address limits look back an hour; a day more for operators.
        default: "25h",
        counts_from: "the request (its limit window is an hour)",
    },
    Table {
        name: "login_failures",
        setting: "RETENTION_LOGIN_FAILURES",
        expired: "failed_at < $1",
        // LOGIN_FAILURE_WINDOW is 15 minutes by default; a day more for operators.
        default: "2d",
        counts_from: "the failure (keep it above LOGIN_FAILURE_WINDOW)",
    },
    Table {
        name: "webhook_events",
        setting: "RETENTION_WEBHOOK_EVENTS",
        // Their deliveries go with them (ON DELETE CASCADE); the retry ladder ends long before.
        expired: "created_at < $1",
        default: "30d",
        counts_from: "the event (its deliveries go with it)",
    },
    Table {
        name: "link_tokens",
        setting: "RETENTION_LINK_TOKENS",
        // A day past expiry, so a late click still hears "expired" (410), not "unknown".
        expired: "expires_at < $1",
        default: "1d",
        counts_from: "the link's expiry",
    },
    Table {
        name: "one_time_codes",
        setting: "RETENTION_ONE_TIME_CODES",
        // As link tokens: a late guess still hears "expired" (410).
        expired: "expires_at < $1",
        default: "1d",
        counts_from: "the code's expiry",
    },
    Table {
        name: "code_misses",
        setting: "RETENTION_CODE_MISSES",
        // A window restarts CODE_TTL (15 minutes) after its first miss; older rows count for
        // nothing.
        expired: "first_at < $1",
        default: "1d",
        counts_from: "the window's first miss (keep it above CODE_TTL)",
    },
    Table {
        name: "email_changes",
        setting: "RETENTION_EMAIL_CHANGES",
        // Their links go with them (ON DELETE CASCADE); a change lives EMAIL_CHANGE_TTL.
        expired: "created_at < $1",
        default: "30d",
        counts_from: "the request (its links go with it)",
    },
    Table {
        name: "idempotency_keys",
        setting: "RETENTION_IDEMPOTENCY_KEYS",
        expired: "expires_at < $1",
        default: "0s",
        counts_from: "the key's expiry (IDEMPOTENCY_TTL after its request)",
    },
    Table {
        name: "audit_log",
        setting: "RETENTION_AUDIT_LOG",
        expired: "created_at < $1",
        default: "365d",
        counts_from: "the action",
    },
    Table {
        name: "dispatchers",
        setting: "RETENTION_DISPATCHERS",
        expired: "heartbeat_at < $1",
        default: "7d",
        counts_from: "the dispatcher's last heartbeat",
    },
];

/// The tables that grow but are never swept (see the module documentation).
pub const NEVER_SWEPT: [&str; 4] = ["users", "suppressions", "outbox", "erasure_key"];

/// Rows one statement of the sweep deletes at most: small enough that each statement holds its
/// row locks for milliseconds, so signups and sends never wait behind it.
pub const BATCH: i64 = 2_000;

/// Parses a retention setting: a duration (`90d`), or `off` (never swept).
pub fn parse(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    crate::config::parse_duration(s).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_and_each_table_is_named_once() {
        let mut names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        names.extend(NEVER_SWEPT);
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a table is listed twice");
        for t in TABLES {
            assert!(parse(t.default).unwrap().is_some(), "{}", t.name);
            assert_eq!(t.setting, format!("RETENTION_{}", t.name.to_uppercase()));
        }
        assert_eq!(parse("off").unwrap(), None);
        assert!(parse("soon").is_err());
    }

    #[test]
    fn the_next_step_is_the_reminder_once_then_the_expiry() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = |n: i64| t + chrono::Duration::hours(n);
        let (day, month) = (
            Some(Duration::from_secs(86_400)),
            Some(Duration::from_secs(30 * 86_400)),
        );
        assert_eq!(
            next_step(t, None, false, day, month),
            Some(NextStep::Reminder(h(24)))
        );
        // From the last email: a resend moves the reminder.
        assert_eq!(
            next_step(t, Some(h(10)), false, day, month),
            Some(NextStep::Reminder(h(34)))
        );
        assert_eq!(
            next_step(t, None, true, day, month),
            Some(NextStep::Expiry(h(720)))
        );
        assert_eq!(
            next_step(t, None, false, None, month),
            Some(NextStep::Expiry(h(720)))
        );
        assert_eq!(
            next_step(t, None, false, day, None),
            Some(NextStep::Reminder(h(24)))
        );
        assert_eq!(next_step(t, None, true, day, None), None);
        // A reminder that would come after the expiry never comes.
        let late = Some(Duration::from_secs(40 * 86_400));
        assert_eq!(
            next_step(t, None, false, late, month),
            Some(NextStep::Expiry(h(720)))
        );
    }
}
