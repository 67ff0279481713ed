//! Login attempts (`login_failures`): reserving an attempt before any hashing, and recording
//! how it ended. When an address is locked is [`crate::policy::logins`]'s decision.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::EmailAddress;
use crate::policy::logins as policy;

/// A login attempt's place: either the address is locked until then, or the attempt holds a
/// reserved failure row (see [`begin_login`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginSlot {
    Locked(DateTime<Utc>),
    Reserved(i64),
}

/// Starts a login attempt for `email`. Under a per-address advisory lock it counts the failures
/// within `window` (attempts in progress included) and, below `limit`, reserves a failure row
/// for this attempt before any hashing. So concurrent attempts cannot all pass the check: at
/// most `limit` are ever checked per window. The row is dropped on success ([`finish_login`]).
/// A locked address ends its lockout when the oldest of the last `limit` failures leaves the
/// window; locked answers are not failures (a flood must not extend the lockout forever).
pub async fn begin_login(
    pool: &PgPool,
    email: &EmailAddress,
    limit: i64,
    window: Duration,
    now: DateTime<Utc>,
) -> Result<LoginSlot, sqlx::Error> {
    let rules = policy::LoginRules {
        limit,
        window: chrono::Duration::from_std(window).unwrap_or(chrono::Duration::minutes(15)),
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailroom-login:' || lower($1)))")
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
    let newest: Vec<(DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT failed_at, reason = 'in_progress' FROM login_failures
          WHERE lower(email) = lower($1) AND failed_at > $2
          ORDER BY failed_at DESC LIMIT $3",
    )
    .bind(email.as_str())
    .bind(rules.window_start(now))
    .bind(rules.attempts_to_read())
    .fetch_all(&mut *tx)
    .await?;
    let attempts: Vec<policy::Attempt> = newest
        .into_iter()
        .map(|(at, in_progress)| policy::Attempt { at, in_progress })
        .collect();
    if let Some(until) = policy::locked_until(&attempts, rules, now) {
        tx.rollback().await?;
        return Ok(LoginSlot::Locked(until));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO login_failures (email, reason, failed_at) VALUES ($1, 'in_progress', $2)
         RETURNING id",
    )
    .bind(email.as_str())
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(LoginSlot::Reserved(id))
}

/// Ends a login attempt begun with [`begin_login`]: a success drops its reserved row, a failure
/// keeps it with the reason (unknown_address, no_password, wrong_password).
pub async fn finish_login(
    pool: &PgPool,
    reserved: i64,
    failure: Option<&str>,
) -> Result<(), sqlx::Error> {
    match failure {
        None => sqlx::query("DELETE FROM login_failures WHERE id = $1").bind(reserved),
        Some(reason) => sqlx::query("UPDATE login_failures SET reason = $2 WHERE id = $1")
            .bind(reserved)
            .bind(reason),
    }
    .execute(pool)
    .await?;
    Ok(())
}
