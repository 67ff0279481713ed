//! Read models: the queries of the dashboard and of health checks. They only read, and each is
//! bounded (a `LIMIT`, a time range, or a capped count), so a refresh costs the same at a
//! million rows as at a thousand.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One row of the recent sends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentSend {
    pub updated_at: DateTime<Utc>,
    pub kind: String,
    pub recipient: Option<String>,
    pub status: String,
    pub latency_ms: Option<i32>,
    pub last_error: Option<String>,
    pub detail: Option<String>,
    /// The name of the API key whose request raised the job (None: Mailroom's own).
    pub api_key: Option<String>,
}

/// The newest `limit` rows of the send log, newest first.
pub async fn recent_sends(pool: &PgPool, limit: i64) -> Result<Vec<RecentSend>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.updated_at, s.kind, s.recipient, s.status, s.latency_ms, s.last_error,
                s.detail, j.api_key
           FROM (SELECT * FROM sends ORDER BY updated_at DESC LIMIT $1) s
           LEFT JOIN jobs j USING (job_id)
          ORDER BY s.updated_at DESC",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Today's (UTC) counts of the send log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TodayCounts {
    pub sent: i64,
    pub failed: i64,
    pub dead: i64,
    pub skipped: i64,
}

pub async fn today_counts(pool: &PgPool) -> Result<TodayCounts, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
                count(*) FILTER (WHERE status IN ('retrying', 'sending') AND error_class IS NOT NULL) AS failed,
                count(*) FILTER (WHERE status = 'dead') AS dead,
                count(*) FILTER (WHERE status = 'skipped') AS skipped
           FROM sends WHERE updated_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    )
    .fetch_one(pool)
    .await
}

/// Sends per minute over the last hour: (minutes ago, count), minutes without sends left out.
pub async fn sends_per_minute(pool: &PgPool) -> Result<Vec<(i32, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT (extract(epoch FROM now() - sent_at) / 60)::int AS ago, count(*)
           FROM sends WHERE sent_at > now() - interval '1 hour'
          GROUP BY 1",
    )
    .fetch_all(pool)
    .await
}

/// The figures of SES's bounce and complaint rates: emails sent, hard bounces and complaints,
/// over the last day and the last 7 days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackCounts {
    pub sent_24h: i64,
    pub sent_7d: i64,
    pub bounces_24h: i64,
    pub complaints_24h: i64,
    pub bounces_7d: i64,
    pub complaints_7d: i64,
}

pub async fn feedback_counts(pool: &PgPool) -> Result<FeedbackCounts, sqlx::Error> {
    let (sent_24h, sent_7d): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE sent_at > now() - interval '1 day'), count(*)
           FROM sends WHERE sent_at > now() - interval '7 days'",
    )
    .fetch_one(pool)
    .await?;
    let (bounces_24h, complaints_24h, bounces_7d, complaints_7d): (i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE hard AND occurred_at > now() - interval '1 day'),
                    count(*) FILTER (WHERE type = 'complaint'
                                       AND occurred_at > now() - interval '1 day'),
                    count(*) FILTER (WHERE hard),
                    count(*) FILTER (WHERE type = 'complaint')
               FROM (SELECT type, occurred_at,
                            type = 'bounce' AND subtype LIKE 'Permanent%' AS hard
                       FROM ses_events WHERE occurred_at > now() - interval '7 days') e",
        )
        .fetch_one(pool)
        .await?;
    Ok(FeedbackCounts {
        sent_24h,
        sent_7d,
        bounces_24h,
        complaints_24h,
        bounces_7d,
        complaints_7d,
    })
}

/// Unverified users counted up to `cap + 1`: past the cap an exact figure would cost a scan of
/// every unverified row on each refresh (130 ms at 500,000).
pub async fn count_unverified(pool: &PgPool, cap: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM users WHERE NOT email_verified LIMIT $1) s",
    )
    .bind(cap + 1)
    .fetch_one(pool)
    .await
}

/// One unverified user, with whether their link has expired (None: no link minted yet).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnverifiedUser {
    pub name: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub link_expired: Option<bool>,
    /// When their current verification email was requested (None: not sent yet).
    pub last_email_at: Option<DateTime<Utc>>,
    /// Reminded already, or never to be (an invitee): no reminder comes next.
    pub reminded: bool,
}

/// The oldest `limit` unverified users. Whether a link exists and until when is the user's
/// `verification_token_expiry`, set by the statement that stores the link token.
pub async fn oldest_unverified(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<UnverifiedUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, email, created_at,
                CASE WHEN verification_token_expiry IS NULL THEN NULL
                     ELSE verification_token_expiry < now() END AS link_expired,
                verification_job_at AS last_email_at,
                -- An invitee is never reminded (the sweep skips them): as good as reminded.
                reminded_at IS NOT NULL OR invited_at IS NOT NULL AS reminded
           FROM users WHERE NOT email_verified ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One round trip to the database: the readiness check.
/// The database's clock now (`clock_timestamp()`, not the transaction's `now()`): what every
/// process's [`crate::clock::Clock`] is corrected to.
pub async fn database_time(pool: &PgPool) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}
