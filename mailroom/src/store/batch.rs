//! The dispatcher's hot path as set-based statements: claim many jobs (and load their users and
//! suppression entries) in one statement, store many link tokens in one, record many sends in
//! one. Each function takes a slice and answers one result per element, in order.
//!
//! Why: per email the dispatcher used to run six statements, four of them commits. On a small
//! machine PostgreSQL's per-statement and per-commit work, not SES, bounded the send rate; one
//! statement per batch pays that once for all the jobs in flight.
//!
//! Callers must not put the same key twice in one call (the same job in a claim, the same user
//! in a token batch, the same job in a record): PostgreSQL updates a row once per statement, so
//! a second element for it would silently see no effect. A batch of one is the single-job case;
//! there is no separate single-row version to keep in step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Claim, SendStatus, Suppression, TokenKind, User};
use crate::domain::TokenHash;
use crate::job::Job;

/// What [`claim_jobs`] found for one job: the claim, and for a claimed email its user (None
/// when the user is gone) and the user's suppression entry.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub claim: Claim,
    pub user: Option<User>,
    pub suppression: Option<Suppression>,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    attempts: Option<i32>,
    prev_status: Option<String>,
    user_id: Option<Uuid>,
    name: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
    locale: Option<String>,
    created_at: Option<DateTime<Utc>>,
    verification_token_expiry: Option<DateTime<Utc>>,
    sup_email: Option<String>,
    sup_reason: Option<String>,
    sup_detail: Option<String>,
    sup_created_at: Option<DateTime<Utc>>,
}

/// Claims an attempt at each job, before anything is sent: a job never seen or no longer
/// claimed is ours (its attempt counted); a finished job is `Finished` (a redelivery); a job
/// another consumer claimed less than its lease ago (`email_lease`, or `webhook_lease` for
/// webhook jobs) is `Busy` (a second copy, e.g. redelivered while the first consumer still
/// waits for SES). A claim older than its lease is taken over: its consumer died or hung. For each claimed email, the user and its suppression entry come
/// back in the same statement. Job ids must be distinct.
pub async fn claim_jobs(
    pool: &PgPool,
    jobs: &[Job],
    now: DateTime<Utc>,
    email_lease: Duration,
    webhook_lease: Duration,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.job_id).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let users: Vec<Uuid> = jobs.iter().map(|j| j.user_id).collect();
    let requested: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.requested_at).collect();
    // `prev` reads the rows as they were before this statement, so each job's old status
    // comes back together with the upsert. A row the upsert's WHERE refused keeps that status:
    // finished, or claimed by another consumer within its lease. A row inserted by a concurrent
    // statement after our snapshot is in neither: it is that consumer's, so `Busy`.
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])
                      WITH ORDINALITY AS i(job_id, kind, user_id, requested_at, n)
         ),
         prev AS (SELECT s.job_id, s.status FROM sends s JOIN input USING (job_id)),
         claimed AS (
             INSERT INTO sends (job_id, kind, user_id, status, attempts, requested_at,
                                first_attempt_at, updated_at)
             SELECT job_id, kind, user_id, 'sending', 1, requested_at, $5, $5 FROM input
             ON CONFLICT (job_id) DO UPDATE
                SET status = 'sending', attempts = sends.attempts + 1, updated_at = $5
              WHERE sends.status NOT IN ('sent', 'skipped', 'suppressed')
                AND NOT (sends.status = 'sending'
                         AND sends.updated_at > $5 - make_interval(secs =>
                             CASE WHEN sends.kind = 'webhook' THEN $7 ELSE $6 END))
             RETURNING sends.job_id, sends.attempts
         )
         SELECT c.attempts, p.status AS prev_status,
                u.id AS user_id, u.name, u.email, u.email_verified, u.locale, u.created_at,
                u.verification_token_expiry,
                sp.email AS sup_email, sp.reason AS sup_reason, sp.detail AS sup_detail,
                sp.created_at AS sup_created_at
           FROM input i
           LEFT JOIN claimed c ON c.job_id = i.job_id
           LEFT JOIN prev p ON p.job_id = i.job_id
           LEFT JOIN users u ON u.id = i.user_id AND c.job_id IS NOT NULL AND i.kind <> 'webhook'
           LEFT JOIN suppressions sp ON lower(sp.email) = lower(u.email)
          ORDER BY i.n",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&users)
    .bind(&requested)
    .bind(now)
    .bind(email_lease.as_secs_f64())
    .bind(webhook_lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    if rows.len() != jobs.len() {
        return Err(sqlx::Error::Protocol(format!(
            "claimed {} jobs but got {} rows back",
            jobs.len(),
            rows.len()
        )));
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let previous = r.prev_status.as_deref().and_then(SendStatus::parse);
            let claim = match (r.attempts, previous) {
                (Some(attempt), previous) => Claim::Claimed { previous, attempt },
                (None, Some(s)) if s.is_final() => Claim::Finished(s),
                (None, _) => Claim::Busy,
            };
            let user = match (
                r.user_id,
                r.name,
                r.email,
                r.email_verified,
                r.locale,
                r.created_at,
            ) {
                (
                    Some(id),
                    Some(name),
                    Some(email),
                    Some(email_verified),
                    Some(locale),
                    Some(created_at),
                ) => Some(User {
                    id,
                    name,
                    email,
                    email_verified,
                    locale,
                    created_at,
                    verification_token_expiry: r.verification_token_expiry,
                }),
                _ => None,
            };
            let suppression = match (r.sup_email, r.sup_reason, r.sup_created_at) {
                (Some(email), Some(reason), Some(created_at)) => Some(Suppression {
                    email,
                    reason,
                    detail: r.sup_detail.unwrap_or_default(),
                    created_at,
                }),
                _ => None,
            };
            ClaimedJob {
                claim,
                user,
                suppression,
            }
        })
        .collect())
}

/// One link token to store: the job it was minted for, its hash, and when it expires.
#[derive(Debug, Clone)]
pub struct NewLinkToken {
    pub job: Job,
    pub hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

/// Stores the hashes of link tokens of one kind, each making its job the user's current one of
/// that kind. Earlier tokens of the *same* job keep working (a retried send may have reached
/// the person twice); tokens of earlier jobs stop working. True for each token stored; false
/// when nothing may be sent for that job: the user is gone, a newer request of the same kind
/// superseded it, or (verification) the address is verified already. Users must be distinct.
pub async fn set_link_tokens(
    pool: &PgPool,
    kind: TokenKind,
    tokens: &[NewLinkToken],
    now: DateTime<Utc>,
) -> Result<Vec<bool>, sqlx::Error> {
    let users: Vec<Uuid> = tokens.iter().map(|t| t.job.user_id).collect();
    let jobs: Vec<Uuid> = tokens.iter().map(|t| t.job.job_id).collect();
    let hashes: Vec<&str> = tokens.iter().map(|t| t.hash.as_str()).collect();
    let expiries: Vec<DateTime<Utc>> = tokens.iter().map(|t| t.expires_at).collect();
    let requested: Vec<DateTime<Utc>> = tokens.iter().map(|t| t.job.requested_at).collect();
    // The same conditions as the single-row statement, row by row: the order check, and (reset)
    // a job whose link was already used mails no fresh one.
    let sql = match kind {
        TokenKind::Verification => {
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],
                                      $5::timestamptz[])
                          AS i(user_id, job_id, hash, expires_at, requested_at)
             ),
             cur AS (
                 UPDATE users u SET verification_token = i.hash,
                                    verification_token_expiry = i.expires_at,
                                    verification_job_id = i.job_id,
                                    verification_job_at = i.requested_at
                   FROM input i
                  WHERE u.id = i.user_id AND NOT u.email_verified
                    AND (u.verification_job_at IS NULL OR u.verification_job_at <= i.requested_at)
                 RETURNING u.id, i.job_id, i.hash, i.expires_at
             )
             INSERT INTO link_tokens (token_hash, user_id, kind, job_id, expires_at, created_at)
             SELECT hash, id, $6, job_id, expires_at, $7 FROM cur
             RETURNING job_id"
        }
        TokenKind::Reset => {
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],
                                      $5::timestamptz[])
                          AS i(user_id, job_id, hash, expires_at, requested_at)
             ),
             cur AS (
                 UPDATE users u SET reset_token = i.hash, reset_token_expiry = i.expires_at,
                                    reset_job_id = i.job_id, reset_job_at = i.requested_at
                   FROM input i
                  WHERE u.id = i.user_id
                    AND (u.reset_job_at IS NULL OR u.reset_job_at <= i.requested_at)
                    AND NOT EXISTS (SELECT 1 FROM link_tokens lt
                                     WHERE lt.user_id = i.user_id AND lt.job_id = i.job_id
                                       AND lt.used_at IS NOT NULL)
                 RETURNING u.id, i.job_id, i.hash, i.expires_at
             )
             INSERT INTO link_tokens (token_hash, user_id, kind, job_id, expires_at, created_at)
             SELECT hash, id, $6, job_id, expires_at, $7 FROM cur
             RETURNING job_id"
        }
    };
    let stored: Vec<Uuid> = sqlx::query_scalar(sql)
        .bind(&users)
        .bind(&jobs)
        .bind(&hashes)
        .bind(&expiries)
        .bind(&requested)
        .bind(kind.as_str())
        .bind(now)
        .fetch_all(pool)
        .await?;
    Ok(jobs.iter().map(|j| stored.contains(j)).collect())
}

/// One successful send to record.
#[derive(Debug, Clone)]
pub struct SentRecord {
    pub job_id: Uuid,
    pub recipient: String,
    pub ses_message_id: String,
    pub at: DateTime<Utc>,
    pub latency_ms: i32,
}

/// Records successful sends: once a row says `sent`, a redelivery of its job is not sent
/// again. Job ids must be distinct.
pub async fn record_sent(pool: &PgPool, sent: &[SentRecord]) -> Result<(), sqlx::Error> {
    let jobs: Vec<Uuid> = sent.iter().map(|s| s.job_id).collect();
    let recipients: Vec<&str> = sent.iter().map(|s| s.recipient.as_str()).collect();
    let ids: Vec<&str> = sent.iter().map(|s| s.ses_message_id.as_str()).collect();
    let at: Vec<DateTime<Utc>> = sent.iter().map(|s| s.at).collect();
    let latency: Vec<i32> = sent.iter().map(|s| s.latency_ms).collect();
    sqlx::query(
        "UPDATE sends s SET status = 'sent', recipient = i.recipient, ses_message_id = i.message_id,
                sent_at = i.at, updated_at = i.at, latency_ms = i.latency_ms,
                error_class = NULL, last_error = NULL
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[])
                AS i(job_id, recipient, message_id, at, latency_ms)
          WHERE s.job_id = i.job_id",
    )
    .bind(&jobs)
    .bind(&recipients)
    .bind(&ids)
    .bind(&at)
    .bind(&latency)
    .execute(pool)
    .await?;
    Ok(())
}

/// What became of one signup of [`create_users_with_jobs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupOutcome {
    Created,
    NameTaken,
    EmailTaken,
    /// Not written, and which of the two was taken could not be read (the connection failed
    /// after the insert): the caller may try again and learn it.
    NotWritten,
}

/// Writes many signups, each user with the outbox row of its verification job, as
/// [`super::create_user_with_job`] does for one: one statement, so each user that is written
/// has its job, and a user whose name or address is taken (by an existing user, a concurrent
/// signup, or an earlier one in the same batch) is written with neither. The answer says which,
/// per signup, in order.
///
/// `ON CONFLICT DO NOTHING` skips a taken row instead of failing the whole statement; which
/// constraint it hit is read afterwards, from the rows as committed (the statement's own
/// snapshot cannot see a concurrent signup or an earlier row of the same batch). Like the
/// unique checks themselves, a taken name is reported before a taken address. Once the insert
/// has committed, nothing fails the signups it wrote: the reading is on the same connection,
/// and if it fails anyway only the skipped signups are answered [`SignupOutcome::NotWritten`].
pub async fn create_users_with_jobs(
    pool: &PgPool,
    signups: &[(super::NewUser, Job)],
) -> Result<Vec<SignupOutcome>, sqlx::Error> {
    let ids: Vec<Uuid> = signups.iter().map(|(_, j)| j.user_id).collect();
    let names: Vec<&str> = signups.iter().map(|(u, _)| u.name.as_str()).collect();
    let emails: Vec<&str> = signups.iter().map(|(u, _)| u.email.as_str()).collect();
    let hashes: Vec<Option<&str>> = signups
        .iter()
        .map(|(u, _)| u.hashed_password.as_deref())
        .collect();
    let locales: Vec<&str> = signups.iter().map(|(u, _)| u.locale.as_str()).collect();
    let at: Vec<DateTime<Utc>> = signups.iter().map(|(_, j)| j.requested_at).collect();
    let jobs: Vec<Uuid> = signups.iter().map(|(_, j)| j.job_id).collect();
    let keys: Vec<&str> = signups.iter().map(|(_, j)| j.kind.routing_key()).collect();
    let payloads: Vec<sqlx::types::Json<&Job>> =
        signups.iter().map(|(_, j)| sqlx::types::Json(j)).collect();
    let mut conn = pool.acquire().await?;
    let created: Vec<Uuid> = sqlx::query_scalar(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::uuid[], $8::text[], $9::jsonb[])
                      WITH ORDINALITY
                      AS i(id, name, email, hashed_password, locale, created_at, job_id,
                           routing_key, payload, n)
         ),
         new_users AS (
             INSERT INTO users (id, name, email, hashed_password, locale, created_at)
             SELECT id, name, email, hashed_password, locale, created_at FROM input ORDER BY n
             ON CONFLICT DO NOTHING
             RETURNING id
         ),
         jobs AS (
             INSERT INTO outbox (job_id, routing_key, payload, created_at)
             SELECT i.job_id, i.routing_key, i.payload, i.created_at
               FROM input i JOIN new_users u ON u.id = i.id ORDER BY i.n
         )
         SELECT id FROM new_users",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&emails)
    .bind(&hashes)
    .bind(&locales)
    .bind(&at)
    .bind(&jobs)
    .bind(&keys)
    .bind(&payloads)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<SignupOutcome> = ids
        .iter()
        .map(|id| {
            if created.contains(id) {
                SignupOutcome::Created
            } else {
                SignupOutcome::EmailTaken
            }
        })
        .collect();
    let skipped: Vec<usize> = (0..ids.len())
        .filter(|i| out[*i] != SignupOutcome::Created)
        .collect();
    if !skipped.is_empty() {
        let taken: Vec<&str> = skipped.iter().map(|i| names[*i]).collect();
        let names_taken: Result<Vec<String>, _> =
            sqlx::query_scalar("SELECT name FROM users WHERE name = ANY($1)")
                .bind(&taken)
                .fetch_all(&mut *conn)
                .await;
        for i in skipped {
            out[i] = match &names_taken {
                Ok(n) if n.iter().any(|n| n == names[i]) => SignupOutcome::NameTaken,
                Ok(_) => SignupOutcome::EmailTaken,
                Err(_) => SignupOutcome::NotWritten,
            };
        }
    }
    Ok(out)
}
