//! The `users` table: creating users (one or many signups, each with its verification job in
//! the outbox, in one statement), finding them, and what a login reads and writes of them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{EmailAddress, Locale, UserName};
use crate::job::Job;

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
/// [`create_user_with_job`] does for one: one statement, so each user that is written
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
    signups: &[(NewUser, Job)],
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
