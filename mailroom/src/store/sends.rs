//! The send log (`sends`): one row per job, and its status lifecycle. A job is claimed before
//! anything is sent (`sending`, with a lease), then recorded as `sent`, `skipped`,
//! `suppressed`, `retrying` or `dead`, or released as `waiting`. docs/architecture.md has the
//! state diagram and names the function that writes each transition.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::suppressions::Suppression;
use super::users::User;
use super::webhooks;
use crate::events::{EmailDead, EmailSent, Endpoints, EventType};
use crate::job::{Job, JobKind};

/// The state of a job in the send log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    Sending,
    Sent,
    Skipped,
    Retrying,
    Dead,
    /// Given back without an attempt (account stop, shutdown): see [`release_claim`].
    Waiting,
    /// Not sent: the recipient is on the suppression list.
    Suppressed,
}

impl SendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Sending => "sending",
            SendStatus::Sent => "sent",
            SendStatus::Skipped => "skipped",
            SendStatus::Retrying => "retrying",
            SendStatus::Dead => "dead",
            SendStatus::Waiting => "waiting",
            SendStatus::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Sending,
            Self::Sent,
            Self::Skipped,
            Self::Retrying,
            Self::Dead,
            Self::Waiting,
            Self::Suppressed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// A job in this state is finished: a redelivery of it must not send again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SendStatus::Sent | SendStatus::Skipped | SendStatus::Suppressed
        )
    }
}

/// What [`claim_jobs`] found for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The attempt is ours: the job's status before it (None for a job never seen), and the
    /// attempt number, which identifies our claim (see [`renew_claim`]).
    Claimed {
        previous: Option<SendStatus>,
        attempt: i32,
    },
    /// The job is finished (sent or skipped): a redelivery, not to be sent again.
    Finished(SendStatus),
    /// Another consumer claimed it within the lease and may be sending it right now.
    Busy,
}

/// Renews our claim on a job just before the SES call, so that the lease covers the call
/// itself however long the rate limiter made us wait. False when the claim is no longer ours
/// (another consumer took the job over after the lease ran out): then we must not send.
pub async fn renew_claim(
    pool: &PgPool,
    job_id: Uuid,
    attempt: i32,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE sends SET updated_at = $3 WHERE job_id = $1 AND attempts = $2 AND status = 'sending'",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Gives up a claim without an outcome (an account stop returned the job, or shutdown): the
/// next copy of the job may be sent at once instead of waiting out the lease.
pub async fn release_claim(
    pool: &PgPool,
    job_id: Uuid,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sends SET status = 'waiting', detail = $2, updated_at = $3
          WHERE job_id = $1 AND status = 'sending'",
    )
    .bind(job_id)
    .bind(why)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn record_skipped(
    pool: &PgPool,
    job_id: Uuid,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sends SET status = 'skipped', detail = $2, updated_at = $3 WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(why)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed attempt: `retrying` (it will come back) or `dead`.
pub async fn record_failure(
    pool: &PgPool,
    job_id: Uuid,
    status: SendStatus,
    recipient: Option<&str>,
    error_class: &str,
    last_error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sends SET status = $2, recipient = COALESCE($3, recipient), error_class = $4,
                last_error = $5, updated_at = $6
          WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(status.as_str())
    .bind(recipient)
    .bind(error_class)
    .bind(last_error)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a job's death in the send log and, for an email, enqueues `email.dead` in the same
/// transaction: the service can tell the person. A dead webhook raises no event of its own.
pub async fn record_dead(
    pool: &PgPool,
    job_id: Uuid,
    error_class: &str,
    last_error: &str,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    type DeadRow = (String, Option<Uuid>, Option<String>, Option<String>);
    let row: Option<DeadRow> = sqlx::query_as(
        "UPDATE sends SET status = 'dead', error_class = $2, last_error = $3, updated_at = $4
          WHERE job_id = $1
         RETURNING kind, user_id, recipient,
                   (SELECT reference FROM jobs j WHERE j.job_id = sends.job_id)",
    )
    .bind(job_id)
    .bind(error_class)
    .bind(last_error)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((kind, user_id, recipient, reference)) = row
        && JobKind::parse(&kind).is_some_and(JobKind::is_email)
    {
        let event = EmailDead {
            user_id,
            email: recipient,
            email_kind: kind,
            job_id,
            reference,
            error_class: error_class.to_owned(),
            error: last_error.to_owned(),
        };
        webhooks::enqueue(&mut tx, hooks, &event, now).await?;
    }
    tx.commit().await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SendRecord {
    pub job_id: Uuid,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub recipient: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub ses_message_id: Option<String>,
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    pub detail: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub latency_ms: Option<i32>,
}

pub async fn find_send(pool: &PgPool, job_id: Uuid) -> Result<Option<SendRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_id, kind, user_id, recipient, status, attempts, ses_message_id, error_class,
                last_error, detail, sent_at, updated_at, latency_ms
           FROM sends WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

/// Records that a job was not sent because its recipient is suppressed.
pub async fn record_suppressed(
    pool: &PgPool,
    job_id: Uuid,
    recipient: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sends SET status = 'suppressed', recipient = $2, detail = $3, updated_at = $4
          WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(recipient)
    .bind(why)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

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

impl ClaimRow {
    /// The claim, and for a claimed email its user and suppression entry (the LEFT JOINs'
    /// columns are all there or all null).
    fn into_claimed(self) -> ClaimedJob {
        let previous = self.prev_status.as_deref().and_then(SendStatus::parse);
        let claim = match (self.attempts, previous) {
            (Some(attempt), previous) => Claim::Claimed { previous, attempt },
            (None, Some(s)) if s.is_final() => Claim::Finished(s),
            (None, _) => Claim::Busy,
        };
        let user = match (
            self.user_id,
            self.name,
            self.email,
            self.email_verified,
            self.locale,
            self.created_at,
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
                verification_token_expiry: self.verification_token_expiry,
            }),
            _ => None,
        };
        let suppression = match (self.sup_email, self.sup_reason, self.sup_created_at) {
            (Some(email), Some(reason), Some(created_at)) => Some(Suppression {
                email,
                reason,
                detail: self.sup_detail.unwrap_or_default(),
                created_at,
            }),
            _ => None,
        };
        ClaimedJob {
            claim,
            user,
            suppression,
        }
    }
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
           LEFT JOIN suppressions sp
                  ON lower(sp.email) IN (lower(u.email), suppression_key(u.email))
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
    Ok(rows.into_iter().map(ClaimRow::into_claimed).collect())
}

/// One successful send to record.
#[derive(Debug, Clone)]
pub struct SentRecord {
    pub job_id: Uuid,
    /// The job's kind, user and reference: what its `email.sent` event says.
    pub kind: JobKind,
    pub user_id: Uuid,
    pub reference: Option<String>,
    pub recipient: String,
    pub ses_message_id: String,
    pub at: DateTime<Utc>,
    pub latency_ms: i32,
}

/// Records successful sends: once a row says `sent`, a redelivery of its job is not sent
/// again. Each is announced as `email.sent` to the endpoints that subscribe to it, in the same
/// transaction. Job ids must be distinct.
pub async fn record_sent(
    pool: &PgPool,
    sent: &[SentRecord],
    hooks: &Endpoints,
) -> Result<(), sqlx::Error> {
    let announce = hooks.urls_for(EventType::EmailSent).next().is_some();
    let mut tx = pool.begin().await?;
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
    .execute(&mut *tx)
    .await?;
    if announce {
        let events: Vec<EmailSent> = sent
            .iter()
            .filter(|s| s.kind.is_email())
            .map(|s| EmailSent {
                job_id: s.job_id,
                user_id: s.user_id,
                email_kind: s.kind.as_str().to_owned(),
                reference: s.reference.clone(),
                ses_message_id: s.ses_message_id.clone(),
            })
            .collect();
        let now = sent.iter().map(|s| s.at).max().unwrap_or_else(Utc::now);
        webhooks::enqueue_many(&mut tx, hooks, &events, now).await?;
    }
    tx.commit().await
}
