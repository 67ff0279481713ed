//! One-time codes (`one_time_codes`, `code_misses`): storing the keyed hash of a code minted
//! at send time, and taking a guess at one. What a guess gets is
//! [`crate::policy::codes`]'s decision; this module reads the facts it needs, in the order that
//! makes attempts safe under concurrency, and consuming a matched code is the purpose's own
//! statement ([`super::tokens::verify_with_code`], [`super::tokens::reset_password_with_code`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Code, CodeKey, CodePurpose, EmailAddress};
use crate::job::Job;
use crate::policy::codes::{self as policy, Answer, DeadCode};

/// One code to store: the job it was minted for, its keyed hash, when it expires, and the
/// attempts it allows.
#[derive(Debug, Clone)]
pub struct NewCode {
    pub job: Job,
    pub hash: String,
    pub expires_at: DateTime<Utc>,
    pub attempts: i32,
}

/// The users column that names the current job of a purpose.
fn job_column(purpose: CodePurpose) -> &'static str {
    match purpose {
        CodePurpose::Verification => "verification_job",
        CodePurpose::Reset => "reset_job",
        CodePurpose::SignIn => "sign_in_job",
        CodePurpose::EmailChange => "email_change_job",
    }
}

/// Stores a code, making its job the user's current one of the purpose (as a link token does),
/// and replacing any older code of that purpose. False when nothing may be sent for the job:
/// the user is gone, a newer request superseded it, its code or link was already used, or
/// (verification) the address is verified. Safe to run again with the same code (a statement
/// retried after a lost connection): the row is simply written again.
pub async fn set_code(
    pool: &PgPool,
    purpose: CodePurpose,
    code: &NewCode,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let col = job_column(purpose);
    // The conditions of `set_link_tokens`: the order check, and a job whose link or code was
    // used mails no fresh one.
    let extra = match purpose {
        CodePurpose::Verification => "AND NOT u.email_verified",
        CodePurpose::Reset | CodePurpose::SignIn | CodePurpose::EmailChange => {
            "AND NOT EXISTS (SELECT 1 FROM link_tokens lt
                              WHERE lt.user_id = u.id AND lt.job_id = $2 AND lt.used_at IS NOT NULL)"
        }
    };
    let sql = format!(
        "WITH cur AS (
             UPDATE users u SET {col}_id = $2, {col}_at = $5
              WHERE u.id = $1 {extra}
                AND (u.{col}_at IS NULL OR u.{col}_at <= $5)
                AND NOT EXISTS (SELECT 1 FROM one_time_codes c
                                 WHERE c.user_id = u.id AND c.job_id = $2
                                   AND c.used_at IS NOT NULL)
             RETURNING u.id
         )
         INSERT INTO one_time_codes (user_id, purpose, job_id, code_hash, expires_at,
                                     attempts_left, created_at)
         SELECT id, $6, $2, $3, $4, $7, $8 FROM cur
         ON CONFLICT (user_id, purpose) DO UPDATE
            SET job_id = EXCLUDED.job_id, code_hash = EXCLUDED.code_hash,
                expires_at = EXCLUDED.expires_at, attempts_left = EXCLUDED.attempts_left,
                created_at = EXCLUDED.created_at, used_at = NULL
         RETURNING job_id"
    );
    let stored: Option<Uuid> = // Safe: `col` and `extra` are constants of this module, never input.
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(code.job.user_id)
        .bind(code.job.job_id)
        .bind(&code.hash)
        .bind(code.expires_at)
        .bind(code.job.requested_at)
        .bind(purpose.as_str())
        .bind(code.attempts)
        .bind(now)
        .fetch_optional(pool)
        .await?;
    Ok(stored.is_some())
}

/// What a guess found: a matched code (to be consumed by the purpose's statement), or the
/// answer to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    Matched {
        user_id: Uuid,
        job_id: Uuid,
        email: String,
    },
    Refused(Answer),
}

/// How a guess is judged: the key, the attempts a code allows, and the window of an unknown
/// address's misses (`CODE_TTL`).
#[derive(Debug, Clone, Copy)]
pub struct Guessing<'a> {
    pub key: &'a CodeKey,
    pub max_attempts: i32,
    pub window: Duration,
}

/// Takes a guess at the live code of `purpose` for `email`. The attempt is taken in the same
/// statement that reads the hash, before it is compared: of many concurrent guesses each
/// spends one, and none sees a code another has killed.
pub async fn check_code(
    pool: &PgPool,
    purpose: CodePurpose,
    email: &EmailAddress,
    code: &Code,
    g: Guessing<'_>,
    now: DateTime<Utc>,
) -> Result<CodeCheck, sqlx::Error> {
    let col = job_column(purpose);
    let live: Option<(Uuid, String, Uuid, String, i32)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE one_time_codes c SET attempts_left = c.attempts_left - 1
           FROM users u
          WHERE lower(u.email) = lower($1) AND c.user_id = u.id AND c.purpose = $2
            AND c.job_id = u.{col}_id AND c.used_at IS NULL AND c.expires_at > $3
            AND c.attempts_left > 0
         RETURNING u.id, u.email, c.job_id, c.code_hash, c.attempts_left"
        )))
        .bind(email.as_str())
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(pool)
        .await?;
    if let Some((user_id, email, job_id, hash, left)) = live {
        let matched = g.key.matches(purpose, user_id, code, &hash);
        return Ok(match policy::guess(matched, left) {
            Answer::Matched => CodeCheck::Matched {
                user_id,
                job_id,
                email,
            },
            other => CodeCheck::Refused(other),
        });
    }
    let seen: Option<(bool, bool, i32, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT c.used_at IS NOT NULL, c.expires_at <= $3, c.attempts_left,
                c.job_id IS NOT DISTINCT FROM u.{col}_id
           FROM users u JOIN one_time_codes c ON c.user_id = u.id AND c.purpose = $2
          WHERE lower(u.email) = lower($1)"
    )))
    .bind(email.as_str())
    .bind(purpose.as_str())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    let decided = seen.and_then(|(used, expired, attempts_left, current)| {
        policy::dead(DeadCode {
            used,
            expired,
            attempts_left,
            current,
        })
    });
    if let Some(answer) = decided {
        return Ok(CodeCheck::Refused(answer));
    }
    // No live code: count the miss, so that this address answers as a real code would.
    let window = chrono::Duration::from_std(g.window).unwrap_or(chrono::Duration::minutes(15));
    let misses: i32 = sqlx::query_scalar(
        "INSERT INTO code_misses (address, purpose, misses, first_at)
         VALUES (lower($1), $2, 1, $3)
         ON CONFLICT (address, purpose) DO UPDATE
            SET misses = CASE WHEN code_misses.first_at <= $4 THEN 1
                              ELSE code_misses.misses + 1 END,
                first_at = CASE WHEN code_misses.first_at <= $4 THEN $3
                                ELSE code_misses.first_at END
         RETURNING misses",
    )
    .bind(email.as_str())
    .bind(purpose.as_str())
    .bind(now)
    .bind(now - window)
    .fetch_one(pool)
    .await?;
    Ok(CodeCheck::Refused(policy::miss(misses, g.max_attempts)))
}
