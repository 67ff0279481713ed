//! Invites (`users.invited_at`): a user created by the calling service for someone who has
//! not signed up — unverified, without a password — and their invite link, whose use sets the
//! password and verifies the address. A pending invite (invited, not yet accepted) can be sent
//! again or revoked; one never accepted expires with the other unverified users
//! (`UNVERIFIED_EXPIRE_AFTER`), and is never sent a verification reminder.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::idempotency::{IdempotencyRecord, complete_key};
use super::outbox::enqueue;
use super::tokens::{TokenKind, TokenState, token_state};
use super::users::{NewUser, lock_holders, signup_answer};
use super::webhooks;
use crate::domain::TokenHash;
use crate::events::{Endpoints, InviteAccepted, UserInvited, UserVerified};
use crate::job::Job;

/// One invite to write: the new user (no password), its invite job, and the idempotency key
/// whose answer is stored with it.
#[derive(Clone)]
pub struct NewInvite {
    pub user: NewUser,
    pub job: Job,
    pub idempotency: Option<IdempotencyRecord>,
}

/// What became of an invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invited {
    Created {
        user_id: Uuid,
        job_id: Uuid,
    },
    /// A *verified* user holds the name or the address (each flag says which): 409.
    Taken {
        name: bool,
        email: bool,
    },
}

/// Writes an invite in one transaction: the user, the outbox row of its email, `user.invited`
/// and the idempotency answer. Under the locks signups take (address, then name): a verified
/// holder of either refuses it; an unverified one is replaced, as a signup replaces it, so an
/// address someone typed and never confirmed cannot block an invite.
pub async fn invite(
    pool: &PgPool,
    invite: &NewInvite,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<Invited, sqlx::Error> {
    let (user, job) = (&invite.user, &invite.job);
    let mut tx = pool.begin().await?;
    let holders = lock_holders(&mut tx, &user.email, &user.name).await?;
    let email = holders.iter().any(|h| h.1 && h.2);
    let name = holders.iter().any(|h| h.1 && h.3);
    if email || name {
        tx.rollback().await?;
        return Ok(Invited::Taken { name, email });
    }
    let unverified: Vec<Uuid> = holders.iter().map(|h| h.0).collect();
    sqlx::query("DELETE FROM users WHERE id = ANY($1) AND NOT email_verified")
        .bind(&unverified)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO users (id, name, email, hashed_password, locale, created_at, invited_at)
         VALUES ($1, $2, $3, NULL, $4, $5, $5)",
    )
    .bind(job.user_id)
    .bind(user.name.as_str())
    .bind(user.email.as_str())
    .bind(user.locale.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    enqueue(&mut tx, job).await?;
    let event = UserInvited {
        user_id: job.user_id,
        email: user.email.as_str().to_owned(),
    };
    webhooks::enqueue(&mut tx, hooks, &event, now).await?;
    if let Some(record) = &invite.idempotency {
        let answer = signup_answer(job.user_id, Some(job.job_id));
        complete_key(&mut tx, record, 202, &answer).await?;
    }
    tx.commit().await?;
    Ok(Invited::Created {
        user_id: job.user_id,
        job_id: job.job_id,
    })
}

/// A user created by an invite: their address, and whether they accepted (their address is
/// verified). None for no such user, or one who signed up by themselves.
pub async fn invitee(pool: &PgPool, user_id: Uuid) -> Result<Option<(String, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, email_verified FROM users WHERE id = $1 AND invited_at IS NOT NULL",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// Revokes a pending invite: the user is removed (their link with them). False when there is
/// no pending invite of that id (none, or accepted).
pub async fn revoke_invite(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM users WHERE id = $1 AND invited_at IS NOT NULL AND NOT email_verified",
    )
    .bind(user_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What became of an invite link used with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    Accepted { user_id: Uuid, email: String },
    Expired,
    Used,
    Unknown,
}

/// Accepts an invite: sets the password hash and verifies the address in one statement, on
/// the link's conditions (its job is the user's current invite, not yet accepted); every link
/// of the invite dies, and `invite.accepted` and `user.verified` go out with the commit. Of
/// two concurrent uses one succeeds: the second re-checks `NOT email_verified`.
pub async fn accept_invite(
    pool: &PgPool,
    hash: &TokenHash,
    password_hash: &str,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<Acceptance, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String, Uuid)> = sqlx::query_as(
        "UPDATE users u
            SET hashed_password = $2, email_verified = TRUE, verified_at = $3,
                verification_token_expiry = NULL
           FROM link_tokens t
          WHERE t.token_hash = $1 AND t.kind = 'invite' AND t.expires_at > $3
            AND t.used_at IS NULL
            AND u.id = t.user_id AND u.invite_job_id = t.job_id AND NOT u.email_verified
         RETURNING u.id, u.email, t.job_id",
    )
    .bind(hash.as_str())
    .bind(password_hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user_id, email, job_id)) = row else {
        tx.rollback().await?;
        return Ok(
            match token_state(pool, TokenKind::Invite, hash, now).await? {
                TokenState::Unknown => Acceptance::Unknown,
                TokenState::Used => Acceptance::Used,
                TokenState::Expired | TokenState::Valid => Acceptance::Expired,
            },
        );
    };
    sqlx::query("UPDATE link_tokens SET used_at = $2 WHERE job_id = $1 AND kind = 'invite'")
        .bind(job_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let accepted = InviteAccepted {
        user_id,
        email: email.clone(),
    };
    webhooks::enqueue(&mut tx, hooks, &accepted, now).await?;
    let verified = UserVerified {
        user_id,
        email: email.clone(),
    };
    webhooks::enqueue(&mut tx, hooks, &verified, now).await?;
    tx.commit().await?;
    Ok(Acceptance::Accepted { user_id, email })
}
