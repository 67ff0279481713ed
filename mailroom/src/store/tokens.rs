//! Link tokens (`link_tokens`) and what consuming them does to a user: verifying an address,
//! resetting a password. Tokens arrive here only as [`TokenHash`]es: this module never sees a
//! token. `link_tokens` is the one source of truth for "the current link": a user's
//! `verification_job_id` / `reset_job_id` name the job whose tokens are current, and the
//! `*_token_expiry` columns only say that such a link exists and until when (they are cleared
//! on use, which is how a second use is refused in the same statement).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::outbox::enqueue;
use super::webhooks;
use crate::domain::{Locale, TokenHash};
use crate::events::{Endpoints, PasswordChanged, UserVerified};
use crate::job::{Job, JobKind};

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
        return verified(tx, user_id, email, hooks, now).await;
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

/// Consumes a verification code that [`super::check_code`] matched: the code is marked used
/// and the address verified in one statement, on the conditions of the link (the code's job is
/// still the current one, the address not yet verified). Used when another guess or a link got
/// there first.
pub async fn verify_with_code(
    pool: &PgPool,
    user_id: Uuid,
    job_id: Uuid,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<Verification, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "WITH c AS (
             UPDATE one_time_codes SET used_at = $3
              WHERE user_id = $1 AND purpose = 'verification' AND job_id = $2
                AND used_at IS NULL
             RETURNING user_id
         )
         UPDATE users u
            SET email_verified = TRUE, verified_at = $3, verification_token_expiry = NULL
           FROM c
          WHERE u.id = c.user_id AND u.verification_job_id = $2 AND NOT u.email_verified
         RETURNING u.id, u.email",
    )
    .bind(user_id)
    .bind(job_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some((user_id, email)) => verified(tx, user_id, email, hooks, now).await,
        None => {
            tx.rollback().await?;
            Ok(Verification::Used)
        }
    }
}

/// The rest of a verification, by link or code: every code of it dies (a verified address
/// needs none), and `user.verified` goes out with the commit.
async fn verified(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: Uuid,
    email: String,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<Verification, sqlx::Error> {
    sqlx::query(
        "UPDATE one_time_codes SET used_at = $2
          WHERE user_id = $1 AND purpose = 'verification' AND used_at IS NULL",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let event = UserVerified {
        user_id,
        email: email.clone(),
    };
    webhooks::enqueue(&mut tx, hooks, &event, now).await?;
    tx.commit().await?;
    Ok(Verification::Verified { user_id, email })
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
        return password_changed(tx, user_id, &locale, token_job, email, hooks, now).await;
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

/// Consumes a reset code that [`super::check_code`] matched and sets the new password hash,
/// on the conditions of the link (the code's job is the current one, its link unused); then as
/// [`reset_password`]. Used when another use got there first.
pub async fn reset_password_with_code(
    pool: &PgPool,
    user_id: Uuid,
    job_id: Uuid,
    new_password_hash: &str,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<PasswordReset, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String, String)> = sqlx::query_as(
        "WITH c AS (
             UPDATE one_time_codes SET used_at = $4
              WHERE user_id = $1 AND purpose = 'reset' AND job_id = $2 AND used_at IS NULL
             RETURNING user_id
         )
         UPDATE users u SET hashed_password = $3, reset_token_expiry = NULL
           FROM c
          WHERE u.id = c.user_id AND u.reset_job_id = $2
            AND NOT EXISTS (SELECT 1 FROM link_tokens lt
                             WHERE lt.job_id = $2 AND lt.kind = 'reset' AND lt.used_at IS NOT NULL)
         RETURNING u.id, u.locale, u.email",
    )
    .bind(user_id)
    .bind(job_id)
    .bind(new_password_hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some((user_id, locale, email)) => {
            password_changed(tx, user_id, &locale, job_id, email, hooks, now).await
        }
        None => {
            tx.rollback().await?;
            Ok(PasswordReset::Used)
        }
    }
}

/// The rest of a reset, by link or code: every link and code of the job dies, and the "your
/// password was changed" notice and `password.changed` go out with the commit.
async fn password_changed(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: Uuid,
    locale: &str,
    reset_job: Uuid,
    email: String,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<PasswordReset, sqlx::Error> {
    sqlx::query("UPDATE link_tokens SET used_at = $2 WHERE job_id = $1 AND kind = 'reset'")
        .bind(reset_job)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE one_time_codes SET used_at = $2
          WHERE user_id = $1 AND purpose = 'reset' AND used_at IS NULL",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let locale = Locale::parse(locale).unwrap_or_else(|_| Locale::default_locale());
    let job = Job::new(JobKind::PasswordChanged, user_id, locale, now);
    enqueue(&mut tx, &job).await?;
    webhooks::enqueue(&mut tx, hooks, &PasswordChanged { user_id, email }, now).await?;
    tx.commit().await?;
    Ok(PasswordReset::Changed {
        user_id,
        job_id: job.job_id,
    })
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
    SignIn,
    Invite,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Verification => "verification",
            TokenKind::Reset => "reset",
            TokenKind::SignIn => "sign_in",
            TokenKind::Invite => "invite",
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
                                       WHEN 'sign_in' THEN u.sign_in_job_id
                                       WHEN 'invite' THEN u.invite_job_id
                                       ELSE u.reset_job_id END,
                CASE t.kind WHEN 'verification' THEN u.email_verified
                            WHEN 'invite' THEN t.used_at IS NOT NULL OR u.email_verified
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
///
/// Safe to run again with the same tokens: a statement that committed while its connection was
/// lost (a failover, a restart) is retried by the caller with the very same hashes, and a hash
/// already stored is answered as stored (`ON CONFLICT … DO UPDATE` returns the row) instead of
/// failing with a unique violation forever. A hash is the SHA-256 of 32 random bytes, so a
/// conflict is that earlier attempt; were it another job's, its `job_id` would not match and
/// nothing would be sent.
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
    let sql = set_tokens_sql(kind);
    // Safe: built from this module's constants only.
    let stored: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
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

/// The statement of [`set_link_tokens`] for `kind`. Every kind makes the token's job the
/// user's current one of that kind, row by row, only when it is not older than the current one
/// (the order check); what else must hold differs:
/// - verification: the address is not verified yet;
/// - reset and sign-in: no link (sign-in: nor code) of that job was used, so a redelivered job
///   mails no fresh one;
/// - invite: the user is a pending invitee (invited, not yet accepted).
///
/// The two older kinds also set their `*_token_expiry` column, which says that a link exists.
fn set_tokens_sql(kind: TokenKind) -> String {
    const LINK_UNUSED: &str = "AND NOT EXISTS (SELECT 1 FROM link_tokens lt
                                WHERE lt.user_id = i.user_id AND lt.job_id = i.job_id
                                  AND lt.used_at IS NOT NULL)";
    const CODE_UNUSED: &str = "AND NOT EXISTS (SELECT 1 FROM one_time_codes c
                                WHERE c.user_id = i.user_id AND c.job_id = i.job_id
                                  AND c.used_at IS NOT NULL)";
    let (job, expiry, only) = match kind {
        TokenKind::Verification => (
            "verification_job",
            "verification_token_expiry = i.expires_at,",
            "AND NOT u.email_verified".to_owned(),
        ),
        TokenKind::Reset => (
            "reset_job",
            "reset_token_expiry = i.expires_at,",
            LINK_UNUSED.to_owned(),
        ),
        TokenKind::SignIn => ("sign_in_job", "", format!("{LINK_UNUSED} {CODE_UNUSED}")),
        TokenKind::Invite => (
            "invite_job",
            "",
            "AND u.invited_at IS NOT NULL AND NOT u.email_verified".to_owned(),
        ),
    };
    format!(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],
                                  $5::timestamptz[])
                      AS i(user_id, job_id, hash, expires_at, requested_at)
         ),
         cur AS (
             UPDATE users u SET {expiry} {job}_id = i.job_id, {job}_at = i.requested_at
               FROM input i
              WHERE u.id = i.user_id {only}
                AND (u.{job}_at IS NULL OR u.{job}_at <= i.requested_at)
             RETURNING u.id, i.job_id, i.hash, i.expires_at
         )
         INSERT INTO link_tokens (token_hash, user_id, kind, job_id, expires_at, created_at)
         SELECT hash, id, $6, job_id, expires_at, $7 FROM cur
         ON CONFLICT (token_hash) DO UPDATE SET token_hash = EXCLUDED.token_hash
         RETURNING job_id"
    )
}
