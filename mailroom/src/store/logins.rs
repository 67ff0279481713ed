//! Login attempts (`login_failures`): reserving an attempt before any hashing, and recording
//! how it ended. When an address is locked is [`crate::policy::logins`]'s decision.

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

/// Starts a login attempt for `email` from `client` (the address the calling service says its
/// user connected from; None: not said, and all such attempts count as one client). Under a
/// per-address advisory lock it reads the client's and the address's attempts within the
/// window (attempts in progress included) and, unless [`policy::locked_until`] says locked,
/// reserves a failure row for this attempt before any hashing. So concurrent attempts cannot
/// all pass the check. The row is dropped on success ([`finish_login`]).
pub async fn begin_login(
    pool: &PgPool,
    email: &EmailAddress,
    client: Option<std::net::IpAddr>,
    rules: policy::LoginRules,
    now: DateTime<Utc>,
) -> Result<LoginSlot, sqlx::Error> {
    let client = client.map(|ip| ip.to_string());
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailroom-login:' || lower($1)))")
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
    let attempts = |rows: Vec<(DateTime<Utc>, bool)>| -> Vec<policy::Attempt> {
        rows.into_iter()
            .map(|(at, in_progress)| policy::Attempt { at, in_progress })
            .collect()
    };
    let own = attempts(
        sqlx::query_as(
            "SELECT failed_at, reason = 'in_progress' FROM login_failures
              WHERE lower(email) = lower($1) AND client_ip IS NOT DISTINCT FROM $2::inet
                AND failed_at > $3
              ORDER BY failed_at DESC LIMIT $4",
        )
        .bind(email.as_str())
        .bind(&client)
        .bind(rules.window_start(now))
        .bind(rules.attempts_to_read())
        .fetch_all(&mut *tx)
        .await?,
    );
    let everyone = attempts(
        sqlx::query_as(
            "SELECT failed_at, reason = 'in_progress' FROM login_failures
              WHERE lower(email) = lower($1) AND failed_at > $2
              ORDER BY failed_at DESC LIMIT $3",
        )
        .bind(email.as_str())
        .bind(rules.window_start(now))
        .bind(rules.address_attempts_to_read())
        .fetch_all(&mut *tx)
        .await?,
    );
    if let Some(until) = policy::locked_until(&own, &everyone, rules, now) {
        tx.rollback().await?;
        return Ok(LoginSlot::Locked(until));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO login_failures (email, reason, failed_at, client_ip)
         VALUES ($1, 'in_progress', $2, $3::inet)
         RETURNING id",
    )
    .bind(email.as_str())
    .bind(now)
    .bind(&client)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(LoginSlot::Reserved(id))
}

/// After a successful login: the failures of that client for that address are forgiven
/// (OWASP: the count is of *consecutive* failures), so a person who mistyped a few times is
/// not one typo from a lockout for the rest of the window. Other clients' failures stay.
pub async fn clear_client_failures(
    pool: &PgPool,
    email: &EmailAddress,
    client: Option<std::net::IpAddr>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM login_failures
          WHERE lower(email) = lower($1) AND client_ip IS NOT DISTINCT FROM $2::inet
            AND reason <> 'in_progress'",
    )
    .bind(email.as_str())
    .bind(client.map(|ip| ip.to_string()))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
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
