//! Every SQL statement Mailroom runs, and the migrations. Owns the `users`, `outbox` and `sends`
//! tables. Functions take the current time as an argument (from [`crate::clock::Clock`]) rather
//! than calling `now()` in SQL, so that expiry is testable. Tokens arrive here only as
//! [`TokenHash`]es: this module never sees a token.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

use crate::domain::{EmailAddress, Locale, TokenHash, UserName};
use crate::job::{Job, JobKind};
use crate::webhook::{self, Endpoints, EventType};
use serde_json::json;

pub mod batch;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. `acquire_timeout` is short so that a database outage turns into a clear error
/// (and a 503 or a retry) quickly instead of a hung request.
///
/// No ping before each use (`test_before_acquire`): it is a round trip per query, about a fifth
/// of a signup's time. A connection that broke while idle (the database restarted) fails its
/// next query instead, with an error every caller already handles (503, or the job held), and
/// the pool replaces it.
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    connect_sized(url, DEFAULT_POOL_SIZE).await
}

/// The pool size of the one-off commands and the tests; services take `DATABASE_POOL_SIZE`.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// [`connect`] with at most `size` connections.
pub async fn connect_sized(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
}

/// Opens a pool without connecting; connections are made on first use. For processes that must
/// start (and report unreadiness) while the database is down. No ping before each use, as in
/// [`connect`].
pub fn connect_lazy(url: &str) -> Result<PgPool, sqlx::Error> {
    connect_lazy_sized(url, DEFAULT_POOL_SIZE)
}

/// [`connect_lazy`] with at most `size` connections.
pub fn connect_lazy_sized(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(opts))
}

/// The database cannot be reached or is going away (connection lost, pool exhausted or
/// closed, SQLSTATE class 08 connection exception or 57 operator intervention, e.g. `57P01`
/// when it restarts), as opposed to answering a statement with an error. Callers wait or answer
/// 503 for these.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("57") || c.starts_with("08"))
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub email_verified: bool,
    pub locale: String,
    pub created_at: DateTime<Utc>,
    pub verification_token_expiry: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct NewUser {
    pub name: UserName,
    pub email: EmailAddress,
    pub hashed_password: Option<String>,
    pub locale: Locale,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("that name is taken")]
    NameTaken,
    #[error("that email address is taken")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Writes the user and the outbox row for their verification job in one statement: either
/// both exist or neither does (a single statement is its own transaction), so an accepted
/// signup always has a job that will be published. One round trip instead of five (begin,
/// two inserts, commit, and the pool's ping): the signup's latency is mostly round trips.
pub async fn create_user_with_job(
    pool: &PgPool,
    user: &NewUser,
    job: &Job,
) -> Result<(), CreateUserError> {
    let inserted = sqlx::query(
        "WITH new_user AS (
             INSERT INTO users (id, name, email, hashed_password, locale, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id
         )
         INSERT INTO outbox (job_id, routing_key, payload, created_at)
         SELECT $7, $8, $9, $6 FROM new_user",
    )
    .bind(job.user_id)
    .bind(user.name.as_str())
    .bind(user.email.as_str())
    .bind(user.hashed_password.as_deref())
    .bind(user.locale.as_str())
    .bind(job.requested_at)
    .bind(job.job_id)
    .bind(job.kind.routing_key())
    .bind(sqlx::types::Json(job))
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.as_database_error().and_then(|d| d.constraint()) {
            Some("users_name_key") => CreateUserError::NameTaken,
            Some("users_email_key") => CreateUserError::EmailTaken,
            _ => CreateUserError::Db(e),
        }),
    }
}

/// Adds a job to the outbox inside the caller's transaction.
pub async fn enqueue(tx: &mut Transaction<'_, Postgres>, job: &Job) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (job_id, routing_key, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(job.job_id)
    .bind(job.kind.routing_key())
    .bind(sqlx::types::Json(job))
    .bind(job.requested_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const USER_COLUMNS: &str =
    "id, name, email, email_verified, locale, created_at, verification_token_expiry";

pub async fn find_user_by_email(
    pool: &PgPool,
    email: &EmailAddress,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)"
    )))
    .bind(email.as_str())
    .fetch_optional(pool)
    .await
}

/// What happened to a token presented for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified {
        user_id: Uuid,
        email: String,
    },
    /// The token matched but its time is up.
    Expired,
    /// The token matched a link that was already used.
    Used,
    /// No such token (never issued, or replaced by a newer one).
    Unknown,
}

/// Consumes a verification token. The single `UPDATE … RETURNING` is the atomic step: of two
/// concurrent clicks (even on two emails of the same job) exactly one verifies, because the
/// second re-checks `NOT email_verified` on the row the first updated.
///
/// A `user.verified` webhook event is enqueued in the same transaction: the service hears of
/// exactly the verifications that happened.
pub async fn consume_verification_token(
    pool: &PgPool,
    hash: &TokenHash,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<Verification, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "UPDATE users u
            SET email_verified = TRUE, verified_at = $2, verification_token_expiry = NULL
           FROM link_tokens t
          WHERE t.token_hash = $1 AND t.kind = 'verification' AND t.expires_at > $2
            AND u.id = t.user_id AND u.verification_job_id = t.job_id AND NOT u.email_verified
         RETURNING u.id, u.email",
    )
    .bind(hash.as_str())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((user_id, email)) = row {
        webhook::enqueue(
            &mut tx,
            hooks,
            EventType::UserVerified,
            Some(user_id),
            json!({"user_id": user_id, "email": email}),
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(Verification::Verified { user_id, email });
    }
    tx.rollback().await?;
    Ok(
        match token_state(pool, TokenKind::Verification, hash, now).await? {
            TokenState::Unknown => Verification::Unknown,
            TokenState::Used => Verification::Used,
            // Valid here means it expired between the UPDATE and this read: same answer.
            TokenState::Expired | TokenState::Valid => Verification::Expired,
        },
    )
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub job_id: Uuid,
    pub routing_key: String,
    pub payload: sqlx::types::Json<serde_json::Value>,
}

/// Locks up to `limit` unpublished rows, oldest first. `SKIP LOCKED` lets several ingest
/// instances relay at once without publishing a row twice: a row another relay holds is
/// simply not seen until that relay commits.
pub async fn claim_outbox(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, routing_key, payload FROM outbox
          WHERE published_at IS NULL
          ORDER BY id
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Removes rows the broker confirmed, in the relay's transaction. Deleting rather than marking
/// them: an UPDATE writes a new version of the row and of each of its index entries, which
/// cost a tenth of the signup rate; a delete writes none, and the outbox stays as small as
/// the backlog. Crash safety is the same: a crash before the commit leaves the rows, and they
/// are published again (a duplicate the send log absorbs), never lost.
pub async fn remove_published(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn note_publish_failure(
    pool: &PgPool,
    ids: &[i64],
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Rows accepted but not yet confirmed by the broker.
pub async fn outbox_backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(n)
}

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

/// What [`batch::claim_jobs`] found for a job.
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
    let row: Option<(String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "UPDATE sends SET status = 'dead', error_class = $2, last_error = $3, updated_at = $4
          WHERE job_id = $1
         RETURNING kind, user_id, recipient",
    )
    .bind(job_id)
    .bind(error_class)
    .bind(last_error)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((kind, user_id, recipient)) = row
        && JobKind::parse(&kind).is_some_and(JobKind::is_email)
    {
        webhook::enqueue(
            &mut tx,
            hooks,
            EventType::EmailDead,
            user_id,
            json!({
                "user_id": user_id,
                "email": recipient,
                "email_kind": kind,
                "job_id": job_id,
                "error_class": error_class,
                "error": last_error,
            }),
            now,
        )
        .await?;
    }
    tx.commit().await
}

/// Marks replayed dead jobs as `waiting` in the send log: they are back in the work queue, and
/// listings of dead letters (the dashboard's) must not show them any more. Each job comes with
/// the replay count it went out with; a job whose send log already shows that count died again
/// during the replay and stays dead. Ids that are not UUIDs (malformed messages) are ignored.
pub async fn mark_replayed(
    pool: &PgPool,
    replayed: &[(String, i64)],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let (ids, counts): (Vec<Uuid>, Vec<i32>) = replayed
        .iter()
        .filter_map(|(j, n)| {
            Some((
                j.parse::<Uuid>().ok()?,
                (*n).clamp(0, i32::MAX as i64) as i32,
            ))
        })
        .unzip();
    let r = sqlx::query(
        "UPDATE sends SET status = 'waiting', detail = 'replayed from the dead letters',
                updated_at = $3
           FROM unnest($1::uuid[], $2::int4[]) AS r(job_id, replays)
          WHERE sends.job_id = r.job_id AND sends.status = 'dead' AND sends.replays < r.replays",
    )
    .bind(&ids)
    .bind(&counts)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Notes how often a job that just died had been replayed before (its replay header).
pub async fn record_replays(pool: &PgPool, job_id: Uuid, replays: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sends SET replays = $2 WHERE job_id = $1")
        .bind(job_id)
        .bind(replays.clamp(0, i32::MAX as i64) as i32)
        .execute(pool)
        .await?;
    Ok(())
}

/// The dead letters as the send log knows them (class, error, attempts, time), the newest
/// `limit`, oldest first. Reading them here holds nothing in the dead queue, so a replay
/// running at the same time sees every message.
pub async fn dead_letters(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<crate::dead::DeadLetter>, sqlx::Error> {
    let rows: Vec<DeadRow> = sqlx::query_as(
        "SELECT job_id, kind, recipient, attempts, error_class, last_error, updated_at, replays
           FROM sends WHERE status = 'dead'
          ORDER BY updated_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|r| crate::dead::DeadLetter {
            job_id: Some(r.job_id.to_string()),
            kind: (r.kind != "unknown").then_some(r.kind),
            recipient: r.recipient,
            attempts: i64::from(r.attempts),
            error_class: r.error_class.unwrap_or_else(|| "unknown".into()),
            last_error: r.last_error.unwrap_or_default(),
            died_at: Some(
                r.updated_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            replays: i64::from(r.replays),
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct DeadRow {
    job_id: Uuid,
    kind: String,
    recipient: Option<String>,
    attempts: i32,
    error_class: Option<String>,
    last_error: Option<String>,
    updated_at: DateTime<Utc>,
    replays: i32,
}

/// Records a message that could not even be read as a job. It gets a row of its own (under the
/// message id when it had a usable one) so that the operator sees it in the send log.
pub async fn record_malformed(
    pool: &PgPool,
    job_id: Uuid,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sends (job_id, kind, status, attempts, error_class, last_error,
                            first_attempt_at, updated_at)
         VALUES ($1, 'unknown', 'dead', 1, 'malformed', $2, $3, $3)
         ON CONFLICT (job_id) DO UPDATE
            SET status = 'dead', error_class = 'malformed', last_error = $2, updated_at = $3",
    )
    .bind(job_id)
    .bind(error)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
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

/// What became of a reset or resend request. The caller always gets the same answer; this is
/// recorded in `email_requests` for operators.
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

/// Handles a password-reset or resend-verification request for `email`: decides, records and
/// (when it is to be sent) enqueues the job, all in one transaction. An advisory lock per address
/// serialises concurrent requests for it, so that the limit holds under bursts.
pub async fn request_email(
    pool: &PgPool,
    email: &EmailAddress,
    kind: crate::job::JobKind,
    limits: AddressLimits,
    now: DateTime<Utc>,
) -> Result<(RequestOutcome, Option<Uuid>), sqlx::Error> {
    use crate::job::JobKind;
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
        "SELECT EXISTS (SELECT 1 FROM suppressions WHERE lower(email) = lower($1))",
    )
    .bind(email.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let (outcome, job) = match user {
        None => (RequestOutcome::UnknownAddress, None),
        // Mailing it again would bounce (or annoy) again, and count against the account.
        Some(_) if listed => (RequestOutcome::AddressSuppressed, None),
        Some((_, true, _)) if kind == JobKind::Verification => {
            (RequestOutcome::AlreadyVerified, None)
        }
        Some((user_id, _, locale)) => {
            let (minute, hour): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE requested_at > $3 - interval '1 minute'),
                        count(*)
                   FROM email_requests
                  WHERE lower(email) = lower($1) AND kind = $2 AND outcome = 'queued'
                    AND requested_at > $3 - interval '1 hour'",
            )
            .bind(email.as_str())
            .bind(kind.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if minute >= limits.per_minute || hour >= limits.per_hour {
                (RequestOutcome::Suppressed, None)
            } else {
                let locale = Locale::parse(&locale).unwrap_or_else(|_| Locale::default_locale());
                let job = Job::new(kind, user_id, locale, now);
                enqueue(&mut tx, &job).await?;
                (RequestOutcome::Queued, Some(job.job_id))
            }
        }
    };
    sqlx::query(
        "INSERT INTO email_requests (email, kind, outcome, job_id, requested_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(email.as_str())
    .bind(kind.as_str())
    .bind(outcome.as_str())
    .bind(job)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((outcome, job))
}

/// What happened to a reset token presented with a new password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordReset {
    Changed { user_id: Uuid, job_id: Uuid },
    Expired,
    Used,
    Unknown,
}

/// Consumes a reset token and sets the new password hash in one statement, marks every token
/// of that job used, and enqueues the "your password was changed" notice in the same
/// transaction. Of two concurrent uses (even of two emails of the same job) exactly one
/// succeeds: the second re-checks `reset_token_expiry IS NOT NULL` on the row the first
/// updated, and finds it cleared.
pub async fn reset_password(
    pool: &PgPool,
    hash: &TokenHash,
    new_password_hash: &str,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<PasswordReset, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String, Uuid, String)> = sqlx::query_as(
        "UPDATE users u SET hashed_password = $2, reset_token_expiry = NULL
           FROM link_tokens t
          WHERE t.token_hash = $1 AND t.kind = 'reset' AND t.expires_at > $3
            AND t.used_at IS NULL
            AND u.id = t.user_id AND u.reset_job_id = t.job_id
            AND u.reset_token_expiry IS NOT NULL
         RETURNING u.id, u.locale, t.job_id, u.email",
    )
    .bind(hash.as_str())
    .bind(new_password_hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((user_id, locale, token_job, email)) = row {
        sqlx::query("UPDATE link_tokens SET used_at = $2 WHERE job_id = $1 AND kind = 'reset'")
            .bind(token_job)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let locale = Locale::parse(&locale).unwrap_or_else(|_| Locale::default_locale());
        let job = Job::new(crate::job::JobKind::PasswordChanged, user_id, locale, now);
        enqueue(&mut tx, &job).await?;
        webhook::enqueue(
            &mut tx,
            hooks,
            EventType::PasswordChanged,
            Some(user_id),
            json!({"user_id": user_id, "email": email}),
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(PasswordReset::Changed {
            user_id,
            job_id: job.job_id,
        });
    }
    tx.rollback().await?;
    Ok(
        match token_state(pool, TokenKind::Reset, hash, now).await? {
            // Valid here means it expired between the UPDATE and this read: same answer.
            TokenState::Valid | TokenState::Expired => PasswordReset::Expired,
            TokenState::Used => PasswordReset::Used,
            TokenState::Unknown => PasswordReset::Unknown,
        },
    )
}

/// The state of a token, read without consuming it (the reset page only looks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Valid,
    Expired,
    /// Matched a link that was already used (its expiry is cleared on use).
    Used,
    /// Never issued, or replaced by a newer one.
    Unknown,
}

/// Which token column to look in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Verification,
    Reset,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Verification => "verification",
            TokenKind::Reset => "reset",
        }
    }
}

pub async fn token_state(
    pool: &PgPool,
    kind: TokenKind,
    hash: &TokenHash,
    now: DateTime<Utc>,
) -> Result<TokenState, sqlx::Error> {
    // current: the token's job is still the user's newest of its kind. used: a reset token of
    // that job was used, or the address it verifies is verified.
    let seen: Option<(DateTime<Utc>, bool, bool)> = sqlx::query_as(
        "SELECT t.expires_at,
                t.job_id = CASE t.kind WHEN 'verification' THEN u.verification_job_id
                                       ELSE u.reset_job_id END,
                CASE t.kind WHEN 'verification' THEN u.email_verified
                            ELSE t.used_at IS NOT NULL END
           FROM link_tokens t JOIN users u ON u.id = t.user_id
          WHERE t.token_hash = $1 AND t.kind = $2",
    )
    .bind(hash.as_str())
    .bind(kind.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(match seen {
        None | Some((_, false, _)) => TokenState::Unknown,
        Some((_, true, true)) => TokenState::Used,
        Some((t, true, false)) if t <= now => TokenState::Expired,
        Some(_) => TokenState::Valid,
    })
}

/// Why an address is on the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// A permanent (hard) bounce.
    Bounce,
    /// The person marked an email as spam.
    Complaint,
    /// Repeated transient bounces.
    SoftBounce,
    /// An operator added it.
    Manual,
    /// Imported from SES's account-level suppression list.
    Ses,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::Bounce,
        SuppressionReason::Complaint,
        SuppressionReason::SoftBounce,
        SuppressionReason::Manual,
        SuppressionReason::Ses,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounce => "bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::SoftBounce => "soft_bounce",
            SuppressionReason::Manual => "manual",
            SuppressionReason::Ses => "ses",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One entry of the suppression list.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Suppression {
    pub email: String,
    pub reason: String,
    pub detail: String,
    pub created_at: DateTime<Utc>,
}

/// Puts `email` on the suppression list. Returns false when it was there already (the first
/// reason is kept: it is the one that explains why mail stopped).
pub async fn suppress(
    pool: &PgPool,
    email: &EmailAddress,
    reason: SuppressionReason,
    detail: &str,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let r = sqlx::query(
        "INSERT INTO suppressions (email, reason, detail, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (lower(email)) DO NOTHING",
    )
    .bind(email.as_str())
    .bind(reason.as_str())
    .bind(detail)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let added = r.rows_affected() == 1;
    if added {
        suppressed_event(&mut tx, hooks, email.as_str(), reason, now).await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Enqueues `email.suppressed` for an address that just joined the list, naming the user who
/// has that address, if any.
async fn suppressed_event(
    tx: &mut Transaction<'_, Postgres>,
    hooks: &Endpoints,
    email: &str,
    reason: SuppressionReason,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if hooks.is_empty() {
        return Ok(());
    }
    let user_id: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_optional(&mut **tx)
            .await?;
    webhook::enqueue(
        tx,
        hooks,
        EventType::EmailSuppressed,
        user_id,
        json!({"user_id": user_id, "email": email, "reason": reason.as_str()}),
        now,
    )
    .await?;
    Ok(())
}

/// Imports SES's account-level suppression list (reason `ses`, SES's reason in the detail).
/// Addresses already listed keep their entry. Returns how many were new.
pub async fn import_ses_suppressions(
    pool: &PgPool,
    list: &[crate::ses::SuppressedAddress],
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut new = 0;
    let mut tx = pool.begin().await?;
    for entry in list {
        // Stored like users' emails where it parses; as SES has it otherwise.
        let email = EmailAddress::parse(&entry.email)
            .map(|e| e.as_str().to_owned())
            .unwrap_or_else(|_| entry.email.trim().to_owned());
        let r = sqlx::query(
            "INSERT INTO suppressions (email, reason, detail, created_at) VALUES ($1, 'ses', $2, $3)
             ON CONFLICT (lower(email)) DO NOTHING",
        )
        .bind(&email)
        .bind(format!("SES account-level list: {}", entry.reason))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            new += 1;
            suppressed_event(&mut tx, hooks, &email, SuppressionReason::Ses, now).await?;
        }
    }
    tx.commit().await?;
    Ok(new)
}

/// Takes `email` off the list; mail flows to it again. Returns false when it was not listed.
pub async fn unsuppress(pool: &PgPool, email: &EmailAddress) -> Result<bool, sqlx::Error> {
    unsuppress_entry(pool, email.as_str()).await
}

/// [`unsuppress`] by the address as the list stores it (an entry SES reported in a form that
/// does not parse as an address can still be removed).
pub async fn unsuppress_entry(pool: &PgPool, stored: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM suppressions WHERE lower(email) = lower($1)")
        .bind(stored)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The entry for `email`, if it is on the list. Compares like users' emails (case-insensitive,
/// domains in punycode).
pub async fn suppression(pool: &PgPool, email: &str) -> Result<Option<Suppression>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, reason, detail, created_at FROM suppressions
          WHERE lower(email) = lower($1)",
    )
    .bind(email)
    .fetch_optional(pool)
    .await
}

/// The list, newest first, optionally of one reason.
pub async fn list_suppressions(
    pool: &PgPool,
    reason: Option<SuppressionReason>,
    limit: i64,
) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, reason, detail, created_at FROM suppressions
          WHERE $1::text IS NULL OR reason = $1
          ORDER BY created_at DESC LIMIT $2",
    )
    .bind(reason.map(SuppressionReason::as_str))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One SES event about one recipient, as the feedback endpoint read it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSesEvent {
    pub sns_message_id: String,
    /// Lower case: bounce, complaint, delivery, send, reject, delivery_delay, …
    pub kind: String,
    pub subtype: Option<String>,
    pub recipient: Option<String>,
    pub ses_message_id: Option<String>,
    pub diagnostic: Option<String>,
    pub feedback_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// What recording one notification did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedbackOutcome {
    /// Events stored now (0 for a notification SNS delivered before).
    pub recorded: usize,
    /// Addresses that joined the suppression list, with the reason.
    pub suppressed: Vec<(String, SuppressionReason)>,
}

/// Records the events of one SNS notification and acts on them, in one transaction, so that
/// SNS gets its 2xx only for what is durably stored (it retries otherwise), and a redelivery
/// changes nothing:
/// - each event is stored once (SNS message id and recipient are unique together) with the job
///   whose send SES accepted under that message id;
/// - the send log's `delivery` says delivered, bounced or complained (never downgraded);
/// - a permanent bounce, or a complaint other than `not-spam`, suppresses the address at once;
///   `soft_bounce_limit` transient bounces within 7 days suppress it too.
pub async fn record_feedback(
    pool: &PgPool,
    events: &[NewSesEvent],
    soft_bounce_limit: i64,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<FeedbackOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut out = FeedbackOutcome::default();
    for e in events {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO ses_events (sns_message_id, type, subtype, recipient, ses_message_id,
                                     job_id, diagnostic, feedback_id, occurred_at, received_at)
             VALUES ($1, $2, $3, $4, $5,
                     (SELECT job_id FROM sends WHERE ses_message_id = $5 LIMIT 1),
                     $6, $7, $8, $9)
             ON CONFLICT (sns_message_id, COALESCE(recipient, '')) DO NOTHING
             RETURNING id",
        )
        .bind(&e.sns_message_id)
        .bind(&e.kind)
        .bind(&e.subtype)
        .bind(&e.recipient)
        .bind(&e.ses_message_id)
        .bind(&e.diagnostic)
        .bind(&e.feedback_id)
        .bind(e.occurred_at)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            continue; // delivered before: already acted on
        };
        out.recorded += 1;
        let permanent = e
            .subtype
            .as_deref()
            .is_some_and(|s| s.starts_with("Permanent"));
        let delivery = match e.kind.as_str() {
            "delivery" => Some("delivered"),
            "bounce" if permanent => Some("bounced"),
            "complaint" => Some("complained"),
            _ => None,
        };
        if let (Some(d), Some(m)) = (delivery, &e.ses_message_id) {
            // complained > bounced > delivered: a later, weaker event never hides a worse one.
            sqlx::query(
                "UPDATE sends SET delivery = $2
                  WHERE ses_message_id = $1
                    AND (delivery IS NULL
                         OR (delivery = 'delivered' AND $2 <> 'delivered')
                         OR (delivery = 'bounced' AND $2 = 'complained'))",
            )
            .bind(m)
            .bind(d)
            .execute(&mut *tx)
            .await?;
        }
        let Some(recipient) = &e.recipient else {
            continue;
        };
        let reason = match e.kind.as_str() {
            "bounce" if permanent => Some(SuppressionReason::Bounce),
            "bounce"
                if e.subtype
                    .as_deref()
                    .is_some_and(|s| s.starts_with("Transient")) =>
            {
                let (recent,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM ses_events
                      WHERE lower(recipient) = lower($1) AND type = 'bounce'
                        AND subtype LIKE 'Transient%' AND occurred_at > $2 - interval '7 days'",
                )
                .bind(recipient)
                .bind(e.occurred_at)
                .fetch_one(&mut *tx)
                .await?;
                (recent >= soft_bounce_limit).then_some(SuppressionReason::SoftBounce)
            }
            // `not-spam`: the person said the mail was wanted; anything else is a complaint.
            "complaint" if e.subtype.as_deref() != Some("not-spam") => {
                Some(SuppressionReason::Complaint)
            }
            _ => None,
        };
        if let Some(reason) = reason {
            let detail = e
                .diagnostic
                .clone()
                .or_else(|| e.subtype.clone())
                .unwrap_or_default();
            let added = sqlx::query(
                "INSERT INTO suppressions (email, reason, detail, event_id, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (lower(email)) DO NOTHING",
            )
            .bind(recipient)
            .bind(reason.as_str())
            .bind(detail)
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if added.rows_affected() == 1 {
                suppressed_event(&mut tx, hooks, recipient, reason, now).await?;
                out.suppressed.push((recipient.clone(), reason));
            }
        }
    }
    tx.commit().await?;
    Ok(out)
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

/// What a login needs of a user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginUser {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub hashed_password: Option<String>,
}

pub async fn login_user(
    pool: &PgPool,
    email: &EmailAddress,
) -> Result<Option<LoginUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, email_verified, hashed_password FROM users
          WHERE lower(email) = lower($1)",
    )
    .bind(email.as_str())
    .fetch_optional(pool)
    .await
}

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
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::minutes(15));
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailroom-login:' || lower($1)))")
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
    let nth: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT failed_at FROM login_failures
          WHERE lower(email) = lower($1) AND failed_at > $2
          ORDER BY failed_at DESC OFFSET $3 LIMIT 1",
    )
    .bind(email.as_str())
    .bind(now - window)
    .bind(limit.max(1) - 1)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(t) = nth {
        tx.rollback().await?;
        return Ok(LoginSlot::Locked(t + window));
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

/// Replaces a password hash made with older parameters, unless it changed meanwhile (a reset
/// in between wins).
pub async fn upgrade_password_hash(
    pool: &PgPool,
    user_id: Uuid,
    old: &str,
    new: &str,
) -> Result<bool, sqlx::Error> {
    let r =
        sqlx::query("UPDATE users SET hashed_password = $3 WHERE id = $1 AND hashed_password = $2")
            .bind(user_id)
            .bind(old)
            .bind(new)
            .execute(pool)
            .await?;
    Ok(r.rows_affected() == 1)
}

/// Records an operator action.
pub async fn audit(
    pool: &PgPool,
    actor: &str,
    action: &str,
    detail: &str,
    count: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_log (actor, action, detail, count) VALUES ($1, $2, $3, $4)")
        .bind(actor)
        .bind(action)
        .bind(detail)
        .bind(count as i32)
        .execute(pool)
        .await?;
    Ok(())
}
