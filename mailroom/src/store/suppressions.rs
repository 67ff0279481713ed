//! The suppression list (`suppressions`): addresses Mailroom must not email, each with the
//! reason it joined. Every new entry raises `email.suppressed` in the same transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::webhooks;
use crate::domain::{EmailAddress, SuppressedAddress, SuppressionReason};
use crate::events::{EmailSuppressed, Endpoints};

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
pub(super) async fn suppressed_event(
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
    let event = EmailSuppressed {
        user_id,
        email: email.to_owned(),
        reason,
    };
    webhooks::enqueue(tx, hooks, &event, now).await?;
    Ok(())
}

/// Imports SES's account-level suppression list (reason `ses`, SES's reason in the detail).
/// Addresses already listed keep their entry. Returns how many were new.
pub async fn import_ses_suppressions(
    pool: &PgPool,
    list: &[SuppressedAddress],
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
          WHERE lower(email) IN (lower($1), suppression_key($1))",
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
