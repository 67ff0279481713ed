//! Per-address requests (`email_requests`): password resets and resends, each recorded with
//! its outcome. Whether one may be sent is [`crate::policy::requests`]'s decision; this module
//! reads what it needs, under a per-address lock, and carries the decision out.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::idempotency::{IdempotencyRecord, complete_key};
use super::outbox::enqueue;
use crate::domain::{EmailAddress, Locale};
use crate::job::{Job, JobKind, Method};
use crate::policy::requests::{self as policy, AddressLimits, RequestOutcome};

/// Who asked for an email, as the request told it: the name of its API key, its reference for
/// the job, and its idempotency key (completed with `answer` in the request's transaction).
#[derive(Debug, Clone, Default)]
pub struct RequestedBy<'a> {
    pub api_key: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub idempotency: Option<(&'a IdempotencyRecord, u16, &'a str)>,
    /// What the email is to carry (a link, a code, or both).
    pub method: Method,
    /// Where its link returns to (already checked against the allow-list).
    pub return_to: Option<&'a str>,
}

/// Handles a password-reset or resend-verification request for `email`: decides, records and
/// (when it is to be sent) enqueues the job, all in one transaction. An advisory lock per address
/// serialises concurrent requests for it, so that the limit holds under bursts.
pub async fn request_email(
    pool: &PgPool,
    email: &EmailAddress,
    kind: JobKind,
    limits: AddressLimits,
    by: RequestedBy<'_>,
    now: DateTime<Utc>,
) -> Result<(RequestOutcome, Option<Uuid>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailroom-request:' || lower($1)))")
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
    let user: Option<(Uuid, bool, String)> = sqlx::query_as(
        "SELECT id, email_verified, locale FROM users WHERE lower(email) = lower($1)",
    )
    .bind(email.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let listed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM suppressions
                        WHERE lower(email) IN (lower($1), suppression_key($1)))",
    )
    .bind(email.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let facts = policy::AddressFacts {
        user_verified: user.as_ref().map(|(_, verified, _)| *verified),
        suppressed: listed,
    };
    let outcome = match policy::precheck(kind, facts) {
        Some(outcome) => outcome,
        None => {
            let (minute, hour) = recent_queued(&mut tx, email, kind, now).await?;
            policy::within_limits(minute, hour, limits)
        }
    };
    let job = match (outcome, user) {
        (RequestOutcome::Queued, Some((user_id, _, locale))) => {
            let locale = Locale::parse(&locale).unwrap_or_else(|_| Locale::default_locale());
            let mut job = Job::new(kind, user_id, locale, now);
            job.api_key = by.api_key.map(str::to_owned);
            job.reference = by.reference.map(str::to_owned);
            job.method = by.method;
            job.return_to = by.return_to.map(str::to_owned);
            enqueue(&mut tx, &job).await?;
            Some(job.job_id)
        }
        _ => None,
    };
    record_request(&mut tx, email, kind, outcome, job, by.api_key, now).await?;
    if let Some((record, status, body)) = by.idempotency {
        complete_key(&mut tx, record, status, body).await?;
    }
    tx.commit().await?;
    Ok((outcome, job))
}

/// The address's requests of `kind` queued within the last minute and the last hour.
pub(crate) async fn recent_queued(
    tx: &mut Transaction<'_, Postgres>,
    email: &EmailAddress,
    kind: JobKind,
    now: DateTime<Utc>,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE requested_at > $3 - interval '1 minute'),
                count(*)
           FROM email_requests
          WHERE lower(email) = lower($1) AND kind = $2 AND outcome = 'queued'
            AND requested_at > $3 - interval '1 hour'",
    )
    .bind(email.as_str())
    .bind(kind.as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await
}

/// Records one request and what became of it.
pub(crate) async fn record_request(
    tx: &mut Transaction<'_, Postgres>,
    email: &EmailAddress,
    kind: JobKind,
    outcome: RequestOutcome,
    job: Option<Uuid>,
    api_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_requests (email, kind, outcome, job_id, requested_at, api_key)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(email.as_str())
    .bind(kind.as_str())
    .bind(outcome.as_str())
    .bind(job)
    .bind(now)
    .bind(api_key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
