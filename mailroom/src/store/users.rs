//! The `users` table: creating users (one or many signups, each with its verification job in
//! the outbox, in one statement), finding them, and what a login reads and writes of them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::idempotency::{self, IdempotencyRecord};
use super::outbox;
use crate::domain::{EmailAddress, Locale, UserName};
use crate::job::{Job, JobKind};
use crate::policy::requests::{self as request_policy, AddressLimits, RequestOutcome};
use crate::policy::signups as policy;

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
         ),
         job AS (
             INSERT INTO jobs (job_id, kind, user_id, api_key, reference, created_at)
             SELECT $7, $8, id, $10, $11, $6 FROM new_user
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
    .bind(job.api_key.as_deref())
    .bind(job.reference.as_deref())
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

/// One signup to write: the user, its verification job, and the idempotency key whose answer
/// is stored with it (when the request had one).
#[derive(Clone)]
pub struct Signup {
    pub user: NewUser,
    pub job: Job,
    pub idempotency: Option<IdempotencyRecord>,
}

/// The body of a signup's 202: written by ingest, and stored with the idempotency key in the
/// signup's own statement, so both must come from here. `job_id` is null when a takeover was
/// over the address's limits and sent nothing.
pub fn signup_answer(user_id: Uuid, job_id: Option<Uuid>) -> String {
    serde_json::json!({"user_id": user_id, "job_id": job_id}).to_string()
}

/// What became of one signup of [`create_users_with_jobs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupOutcome {
    Created,
    /// Not written: its name or address is held (by an existing user, a concurrent signup, or
    /// an earlier one in the same batch). [`sign_up_over_holders`] decides what it does.
    Held,
}

/// Writes many signups, each user with the outbox row of its verification job, its `jobs` row
/// and its idempotency answer, as [`create_user_with_job`] does for one: one statement, so each
/// user that is written has all of them, and a user whose name or address is held is written
/// with none. The answer says which, per signup, in order.
///
/// `ON CONFLICT DO NOTHING` skips a held row instead of failing the whole statement; the
/// skipped ones go the slow way, one transaction each ([`sign_up_over_holders`]).
pub async fn create_users_with_jobs(
    pool: &PgPool,
    signups: &[Signup],
) -> Result<Vec<SignupOutcome>, sqlx::Error> {
    let col = |f: fn(&Signup) -> Option<&str>| signups.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = signups.iter().map(|s| s.job.user_id).collect();
    let names = col(|s| Some(s.user.name.as_str()));
    let emails = col(|s| Some(s.user.email.as_str()));
    let hashes = col(|s| s.user.hashed_password.as_deref());
    let locales = col(|s| Some(s.user.locale.as_str()));
    let at: Vec<DateTime<Utc>> = signups.iter().map(|s| s.job.requested_at).collect();
    let jobs: Vec<Uuid> = signups.iter().map(|s| s.job.job_id).collect();
    let keys = col(|s| Some(s.job.kind.routing_key()));
    let payloads: Vec<sqlx::types::Json<&Job>> =
        signups.iter().map(|s| sqlx::types::Json(&s.job)).collect();
    let api_keys = col(|s| s.job.api_key.as_deref());
    let references = col(|s| s.job.reference.as_deref());
    fn idem(s: &Signup) -> Option<&IdempotencyRecord> {
        s.idempotency.as_ref()
    }
    let idem_keys = col(|s| idem(s).map(|r| r.key.as_str()));
    let idem_api_keys = col(|s| idem(s).map(|r| r.api_key.as_str()));
    let idem_routes = col(|s| idem(s).map(|r| r.route.as_str()));
    let idem_prints: Vec<Option<Vec<u8>>> = signups
        .iter()
        .map(|s| idem(s).map(|r| r.fingerprint.clone()))
        .collect();
    let idem_expiry: Vec<Option<DateTime<Utc>>> = signups
        .iter()
        .map(|s| idem(s).map(|r| r.expires_at))
        .collect();
    let answers: Vec<String> = signups
        .iter()
        .map(|s| signup_answer(s.job.user_id, Some(s.job.job_id)))
        .collect();
    let created: Vec<Uuid> = sqlx::query_scalar(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::uuid[], $8::text[], $9::jsonb[],
                                  $10::text[], $11::text[], $12::text[], $13::text[],
                                  $14::text[], $15::bytea[], $16::timestamptz[], $17::text[])
                      WITH ORDINALITY
                      AS i(id, name, email, hashed_password, locale, created_at, job_id,
                           routing_key, payload, api_key, reference, idem_key, idem_api_key,
                           idem_route, idem_print, idem_expiry, answer, n)
         ),
         new_users AS (
             INSERT INTO users (id, name, email, hashed_password, locale, created_at)
             SELECT id, name, email, hashed_password, locale, created_at FROM input ORDER BY n
             ON CONFLICT DO NOTHING
             RETURNING id
         ),
         outbox_rows AS (
             INSERT INTO outbox (job_id, routing_key, payload, created_at)
             SELECT i.job_id, i.routing_key, i.payload, i.created_at
               FROM input i JOIN new_users u ON u.id = i.id ORDER BY i.n
         ),
         job_rows AS (
             INSERT INTO jobs (job_id, kind, user_id, api_key, reference, created_at)
             SELECT i.job_id, i.routing_key, i.id, i.api_key, i.reference, i.created_at
               FROM input i JOIN new_users u ON u.id = i.id
         ),
         answered AS (
             INSERT INTO idempotency_keys (api_key, key, route, fingerprint, created_at,
                                           expires_at, status, body)
             SELECT i.idem_api_key, i.idem_key, i.idem_route, i.idem_print, i.created_at,
                    i.idem_expiry, 202, i.answer
               FROM input i JOIN new_users u ON u.id = i.id
              WHERE i.idem_key IS NOT NULL
             ON CONFLICT (api_key, key) DO UPDATE SET status = EXCLUDED.status,
                                                      body = EXCLUDED.body
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
    .bind(&api_keys)
    .bind(&references)
    .bind(&idem_keys)
    .bind(&idem_api_keys)
    .bind(&idem_routes)
    .bind(&idem_prints)
    .bind(&idem_expiry)
    .bind(&answers)
    .fetch_all(pool)
    .await?;
    Ok(ids
        .iter()
        .map(|id| {
            if created.contains(id) {
                SignupOutcome::Created
            } else {
                SignupOutcome::Held
            }
        })
        .collect())
}

/// What [`sign_up_over_holders`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldSignup {
    /// The holders were gone by then: created as a new user.
    Created,
    /// An unverified user was taken over; `job_id` is None when the address was over its
    /// verification limits (nothing sent; the answer is still 202).
    TakenOver { user_id: Uuid, job_id: Option<Uuid> },
    /// 409: verified users hold the name, the address or both.
    Taken { name: bool, email: bool },
}

/// The users holding an address or a name, locked for this transaction: each as (id,
/// verified, holds the address, holds the name). The advisory locks come first: the address
/// lock is the one resend and reset requests take (their limits are shared), and always the
/// address before the name, so two writers cannot wait for each other.
pub(crate) async fn lock_holders(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    email: &EmailAddress,
    name: &UserName,
) -> Result<Vec<(Uuid, bool, bool, bool)>, sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('mailroom-request:' || lower($1))),
                pg_advisory_xact_lock(hashtext('mailroom-name:' || $2))",
    )
    .bind(email.as_str())
    .bind(name.as_str())
    .execute(&mut **tx)
    .await?;
    sqlx::query_as(
        "SELECT id, email_verified, lower(email) = lower($1), name = $2 FROM users
          WHERE lower(email) = lower($1) OR name = $2
          FOR UPDATE",
    )
    .bind(email.as_str())
    .bind(name.as_str())
    .fetch_all(&mut **tx)
    .await
}

/// A signup whose name or address is held, in a transaction of its own: reads the holders
/// under per-address and per-name locks, asks [`policy::decide`], and carries it out. A
/// takeover replaces the unverified user's name, address, password and locale, kills every
/// older link (its tokens are deleted, and its pending verification and reset jobs are
/// superseded, so none of them mints a link when it is sent), and queues a fresh verification
/// job within the address's limits (`email_requests`, kind `verification`, like a resend).
/// The idempotency answer is stored in the same transaction.
pub async fn sign_up_over_holders(
    pool: &PgPool,
    signup: &Signup,
    limits: AddressLimits,
    now: DateTime<Utc>,
) -> Result<HeldSignup, sqlx::Error> {
    let user = &signup.user;
    let mut tx = pool.begin().await?;
    let rows = lock_holders(&mut tx, &user.email, &user.name).await?;
    let holder = |want: fn(&(Uuid, bool, bool, bool)) -> bool| {
        rows.iter().find(|r| want(r)).map(|r| policy::Holder {
            id: r.0,
            verified: r.1,
        })
    };
    let decision = policy::decide(holder(|r| r.2), holder(|r| r.3));
    let out = match decision {
        policy::Signup::Taken { name, email } => {
            tx.rollback().await?;
            return Ok(HeldSignup::Taken { name, email });
        }
        policy::Signup::Create => {
            // The holders went away meanwhile (an expiry, an erasure): an ordinary signup.
            insert_user(&mut tx, user, &signup.job).await?;
            outbox::enqueue(&mut tx, &signup.job).await?;
            if let Some(r) = &signup.idempotency {
                let body = signup_answer(signup.job.user_id, Some(signup.job.job_id));
                idempotency::complete_key(&mut tx, r, 202, &body).await?;
            }
            HeldSignup::Created
        }
        policy::Signup::TakeOver {
            user: user_id,
            remove,
        } => {
            if let Some(other) = remove {
                sqlx::query("DELETE FROM users WHERE id = $1 AND NOT email_verified")
                    .bind(other)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE users SET name = $2, email = $3, hashed_password = $4, locale = $5
                  WHERE id = $1",
            )
            .bind(user_id)
            .bind(user.name.as_str())
            .bind(user.email.as_str())
            .bind(user.hashed_password.as_deref())
            .bind(user.locale.as_str())
            .execute(&mut *tx)
            .await?;
            let job_id =
                restart_verification(&mut tx, user_id, &user.email, limits, &signup.job, now)
                    .await?;
            if let Some(r) = &signup.idempotency {
                idempotency::complete_key(&mut tx, r, 202, &signup_answer(user_id, job_id)).await?;
            }
            HeldSignup::TakenOver { user_id, job_id }
        }
    };
    tx.commit().await?;
    Ok(out)
}

async fn insert_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user: &NewUser,
    job: &Job,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, name, email, hashed_password, locale, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job.user_id)
    .bind(user.name.as_str())
    .bind(user.email.as_str())
    .bind(user.hashed_password.as_deref())
    .bind(user.locale.as_str())
    .bind(job.requested_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What [`correct_address`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    /// The address was replaced; `job_id` is the fresh verification email's (None: the new
    /// address was over its limits, nothing sent).
    Corrected {
        job_id: Option<Uuid>,
    },
    NoSuchUser,
    /// The user is verified: their address changes by an email change, not a correction.
    Verified,
    /// Another user has the new address.
    Taken,
}

/// `PATCH /v1/users/{id}` `{email}`: corrects the address of an unverified user (the typo at
/// signup). The old address's links die (its tokens are deleted, its pending emails
/// superseded) and a fresh verification email goes to the new one, within the new address's
/// limits, all in one transaction.
pub async fn correct_address(
    pool: &PgPool,
    user_id: Uuid,
    email: &EmailAddress,
    limits: AddressLimits,
    job: Job,
    now: DateTime<Utc>,
) -> Result<Correction, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailroom-request:' || lower($1)))")
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
    let user: Option<(bool,)> =
        sqlx::query_as("SELECT email_verified FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    match user {
        None => return Ok(Correction::NoSuchUser),
        Some((true,)) => return Ok(Correction::Verified),
        Some((false,)) => {}
    }
    let other: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1) AND id <> $2")
            .bind(email.as_str())
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    if other.is_some() {
        return Ok(Correction::Taken);
    }
    sqlx::query("UPDATE users SET email = $2 WHERE id = $1")
        .bind(user_id)
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
    let job_id = restart_verification(&mut tx, user_id, email, limits, &job, now).await?;
    tx.commit().await?;
    Ok(Correction::Corrected { job_id })
}

/// What a takeover and an address correction share, once the user's row holds its new
/// details: every older link dies (the tokens are deleted, and pending verification and reset
/// jobs are superseded, so none of them mints a link when it is sent), and a fresh
/// verification job (`job` with the user's id) is queued if `email` is within its limits
/// (recorded in `email_requests`, like a resend). The job's id; None over the limits.
async fn restart_verification(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: Uuid,
    email: &EmailAddress,
    limits: AddressLimits,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let (minute, hour) =
        super::requests::recent_queued(tx, email, JobKind::Verification, now).await?;
    let outcome = request_policy::within_limits(minute, hour, limits);
    // The request is the caller's whether or not it is sent.
    let api_key = job.api_key.clone();
    let job = (outcome == RequestOutcome::Queued).then(|| Job {
        user_id,
        ..job.clone()
    });
    let at = job.as_ref().map_or(now, |j| j.requested_at);
    sqlx::query(
        "UPDATE users SET verification_job_id = $2, verification_job_at = $3,
                verification_token_expiry = NULL,
                reset_job_id = NULL, reset_job_at = $3, reset_token_expiry = NULL
          WHERE id = $1",
    )
    .bind(user_id)
    .bind(job.as_ref().map(|j| j.job_id))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM link_tokens WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    if let Some(job) = &job {
        outbox::enqueue(tx, job).await?;
    }
    let job_id = job.as_ref().map(|j| j.job_id);
    super::requests::record_request(
        tx,
        email,
        JobKind::Verification,
        outcome,
        job_id,
        api_key.as_deref(),
        now,
    )
    .await?;
    Ok(job_id)
}
