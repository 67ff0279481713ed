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
use crate::job::Job;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. `acquire_timeout` is short so that a database outage turns into a clear error
/// (and a 503 or a retry) quickly instead of a hung request.
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
}

/// Opens a pool without connecting; connections are made on first use. For processes that must
/// start (and report unreadiness) while the database is down.
pub fn connect_lazy(url: &str) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(opts))
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

/// Writes the user and the outbox row for their verification job in one transaction: either
/// both exist or neither does, so an accepted signup always has a job that will be published.
pub async fn create_user_with_job(
    pool: &PgPool,
    user: &NewUser,
    job: &Job,
) -> Result<(), CreateUserError> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, name, email, hashed_password, locale, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job.user_id)
    .bind(user.name.as_str())
    .bind(user.email.as_str())
    .bind(user.hashed_password.as_deref())
    .bind(user.locale.as_str())
    .bind(job.requested_at)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        return Err(match e.as_database_error().and_then(|d| d.constraint()) {
            Some("users_name_key") => CreateUserError::NameTaken,
            Some("users_email_key") => CreateUserError::EmailTaken,
            _ => CreateUserError::Db(e),
        });
    }
    enqueue(&mut tx, job).await?;
    tx.commit().await?;
    Ok(())
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

pub async fn find_user(pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Stores the hash of a freshly minted verification token; it replaces any earlier one, so only
/// the newest link works. Returns false when the user is gone or already verified (then no
/// email must be sent).
pub async fn set_verification_token(
    pool: &PgPool,
    user_id: Uuid,
    hash: &TokenHash,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE users SET verification_token = $2, verification_token_expiry = $3
         WHERE id = $1 AND NOT email_verified",
    )
    .bind(user_id)
    .bind(hash.as_str())
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
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
/// concurrent clicks exactly one verifies. The hash stays in the row with its expiry cleared, so
/// that a second click can be told "already used" rather than "unknown".
pub async fn consume_verification_token(
    pool: &PgPool,
    hash: &TokenHash,
    now: DateTime<Utc>,
) -> Result<Verification, sqlx::Error> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "UPDATE users
            SET email_verified = TRUE, verified_at = $2, verification_token_expiry = NULL
          WHERE verification_token = $1 AND verification_token_expiry > $2
         RETURNING id, email",
    )
    .bind(hash.as_str())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    if let Some((user_id, email)) = row {
        return Ok(Verification::Verified { user_id, email });
    }
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

pub async fn mark_published(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET published_at = $2, attempts = attempts + 1 WHERE id = ANY($1)")
        .bind(ids)
        .bind(now)
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
}

impl SendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Sending => "sending",
            SendStatus::Sent => "sent",
            SendStatus::Skipped => "skipped",
            SendStatus::Retrying => "retrying",
            SendStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Sending,
            Self::Sent,
            Self::Skipped,
            Self::Retrying,
            Self::Dead,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// A job in this state is finished: a redelivery of it must not send again.
    pub fn is_final(self) -> bool {
        matches!(self, SendStatus::Sent | SendStatus::Skipped)
    }
}

/// Records that an attempt at `job` starts now, and returns the status the job had before (None
/// for a job never seen). Called before anything is sent: a job whose previous status is final
/// is acknowledged without sending again.
pub async fn begin_attempt(
    pool: &PgPool,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Option<SendStatus>, sqlx::Error> {
    // The CTE reads the row as it was before this statement, so the old status comes back
    // together with the upsert in one round trip. A finished job is left as it is.
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "WITH prev AS (SELECT status FROM sends WHERE job_id = $1)
         INSERT INTO sends (job_id, kind, user_id, status, attempts, requested_at,
                            first_attempt_at, updated_at)
         VALUES ($1, $2, $3, 'sending', 1, $4, $5, $5)
         ON CONFLICT (job_id) DO UPDATE
            SET status = 'sending', attempts = sends.attempts + 1, updated_at = $5
          WHERE sends.status NOT IN ('sent', 'skipped')
         RETURNING (SELECT status FROM prev)",
    )
    .bind(job.job_id)
    .bind(job.kind.as_str())
    .bind(job.user_id)
    .bind(job.requested_at)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    match row {
        Some((prev,)) => Ok(prev.as_deref().and_then(SendStatus::parse)),
        // The conflict branch's WHERE refused: the job is already final.
        None => {
            let (status,): (String,) = sqlx::query_as("SELECT status FROM sends WHERE job_id = $1")
                .bind(job.job_id)
                .fetch_one(pool)
                .await?;
            Ok(SendStatus::parse(&status))
        }
    }
}

pub async fn record_sent(
    pool: &PgPool,
    job_id: Uuid,
    recipient: &str,
    ses_message_id: &str,
    now: DateTime<Utc>,
    latency_ms: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sends SET status = 'sent', recipient = $2, ses_message_id = $3, sent_at = $4,
                updated_at = $4, latency_ms = $5, error_class = NULL, last_error = NULL
          WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(recipient)
    .bind(ses_message_id)
    .bind(now)
    .bind(latency_ms)
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

/// Stores the hash of a freshly minted reset token, replacing any earlier one. Returns false
/// when the user is gone.
pub async fn set_reset_token(
    pool: &PgPool,
    user_id: Uuid,
    hash: &TokenHash,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE users SET reset_token = $2, reset_token_expiry = $3 WHERE id = $1")
        .bind(user_id)
        .bind(hash.as_str())
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// What became of a reset or resend request. The caller always gets the same answer; this is
/// recorded in `email_requests` for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Queued,
    Suppressed,
    UnknownAddress,
    AlreadyVerified,
}

impl RequestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Queued => "queued",
            RequestOutcome::Suppressed => "suppressed",
            RequestOutcome::UnknownAddress => "unknown_address",
            RequestOutcome::AlreadyVerified => "already_verified",
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
    let (outcome, job) = match user {
        None => (RequestOutcome::UnknownAddress, None),
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

/// Consumes a reset token and sets the new password hash in one `UPDATE … RETURNING`, and
/// enqueues the "your password was changed" notice in the same transaction.
pub async fn reset_password(
    pool: &PgPool,
    hash: &TokenHash,
    new_password_hash: &str,
    now: DateTime<Utc>,
) -> Result<PasswordReset, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "UPDATE users SET hashed_password = $2, reset_token_expiry = NULL
          WHERE reset_token = $1 AND reset_token_expiry > $3
         RETURNING id, locale",
    )
    .bind(hash.as_str())
    .bind(new_password_hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((user_id, locale)) = row {
        let locale = Locale::parse(&locale).unwrap_or_else(|_| Locale::default_locale());
        let job = Job::new(crate::job::JobKind::PasswordChanged, user_id, locale, now);
        enqueue(&mut tx, &job).await?;
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

pub async fn token_state(
    pool: &PgPool,
    kind: TokenKind,
    hash: &TokenHash,
    now: DateTime<Utc>,
) -> Result<TokenState, sqlx::Error> {
    let sql = match kind {
        TokenKind::Verification => {
            "SELECT verification_token_expiry FROM users WHERE verification_token = $1"
        }
        TokenKind::Reset => "SELECT reset_token_expiry FROM users WHERE reset_token = $1",
    };
    let seen: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(sql)
        .bind(hash.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(match seen {
        None => TokenState::Unknown,
        Some((None,)) => TokenState::Used,
        Some((Some(t),)) if t <= now => TokenState::Expired,
        Some(_) => TokenState::Valid,
    })
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
