//! Sign-in by email: consuming a sign-in link's token or a matched code. Single use (every
//! link and code of the job dies with it), and it verifies the address, since the person has
//! just shown they read its inbox. Minting the links is [`super::tokens::set_link_tokens`]'s,
//! minting and checking codes [`super::codes`]'.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::tokens::{TokenKind, TokenState, token_state};
use super::webhooks;
use crate::domain::TokenHash;
use crate::events::{Endpoints, UserVerified};

/// What a sign-in by email (link or code) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    SignedIn { user_id: Uuid, email: String },
    Expired,
    Used,
    Unknown,
}

/// Consumes a sign-in link's token: single use (every link and code of its job dies with it),
/// and the address becomes verified, since the person has just shown they read its inbox
/// (`user.verified` goes out when it was not verified before). The rows are locked first, so
/// that of two concurrent uses the second waits and then finds the token used.
pub async fn sign_in_with_token(
    pool: &PgPool,
    hash: &TokenHash,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<SignIn, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let found: Option<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT t.user_id, t.job_id
           FROM link_tokens t JOIN users u ON u.id = t.user_id
          WHERE t.token_hash = $1 AND t.kind = 'sign_in' AND t.expires_at > $2
            AND t.used_at IS NULL AND u.sign_in_job_id = t.job_id
          FOR UPDATE OF t, u",
    )
    .bind(hash.as_str())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    match found {
        Some((user_id, job_id)) => signed_in(tx, user_id, job_id, hooks, now).await,
        None => {
            tx.rollback().await?;
            Ok(
                match token_state(pool, TokenKind::SignIn, hash, now).await? {
                    TokenState::Unknown => SignIn::Unknown,
                    TokenState::Used => SignIn::Used,
                    TokenState::Expired | TokenState::Valid => SignIn::Expired,
                },
            )
        }
    }
}

/// Consumes a sign-in code that [`super::check_code`] matched, as [`sign_in_with_token`]
/// consumes a link. Used when another use got there first.
pub async fn sign_in_with_code(
    pool: &PgPool,
    user_id: Uuid,
    job_id: Uuid,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<SignIn, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let found: Option<Uuid> = sqlx::query_scalar(
        "SELECT c.user_id
           FROM one_time_codes c JOIN users u ON u.id = c.user_id
          WHERE c.user_id = $1 AND c.purpose = 'sign_in' AND c.job_id = $2
            AND c.used_at IS NULL AND u.sign_in_job_id = c.job_id
          FOR UPDATE OF c, u",
    )
    .bind(user_id)
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    match found {
        Some(user_id) => signed_in(tx, user_id, job_id, hooks, now).await,
        None => {
            tx.rollback().await?;
            Ok(SignIn::Used)
        }
    }
}

/// The rest of a sign-in, rows locked: every link and code of the job is spent, the address
/// verified, and `user.verified` sent when it was not before (its verification links and codes
/// die then too: they answer "used").
async fn signed_in(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: Uuid,
    job_id: Uuid,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<SignIn, sqlx::Error> {
    sqlx::query("UPDATE link_tokens SET used_at = $2 WHERE job_id = $1 AND kind = 'sign_in'")
        .bind(job_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE one_time_codes SET used_at = $2
          WHERE user_id = $1 AND purpose = 'sign_in' AND used_at IS NULL",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let (email, was_verified): (String, bool) = sqlx::query_as(
        "WITH before AS (SELECT email_verified FROM users WHERE id = $1)
         UPDATE users SET email_verified = TRUE, verified_at = COALESCE(verified_at, $2),
                          verification_token_expiry = NULL
          WHERE id = $1
         RETURNING email, (SELECT email_verified FROM before)",
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if !was_verified {
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
    }
    tx.commit().await?;
    Ok(SignIn::SignedIn { user_id, email })
}
