//! Erasing a person (`DELETE /v1/users/{id}`, GDPR art. 17), in one transaction: what names
//! them goes, what counts stays. Deleted: the user (its link tokens and codes by cascade), the
//! address's request history, login failures and missed code guesses, every webhook event about them (their bodies hold the
//! address; deliveries by cascade, so a queued delivery finds nothing to send). Kept without
//! the address: the send log's rows (recipient, error and detail erased) and SES events
//! (recipient and diagnostic erased), for the counts. Kept as a keyed hash: the suppression
//! entry (see the migration `erasure`), so an erased address that bounced is never mailed
//! again. Audit rows naming the address are blanked; one new row records the erasure.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::webhooks;
use crate::events::{Endpoints, UserDeleted};

/// Erases user `user_id`; false when there is no such user (already erased, or never was).
pub async fn erase_user(
    pool: &PgPool,
    user_id: Uuid,
    actor: &str,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(email) = email else {
        return Ok(false);
    };
    // Each statement names the address or the user; none needs another's result. The order
    // only matters for the last two: the jobs of the user are read before the user goes.
    let statements = [
        "UPDATE suppressions SET email = suppression_key(email), detail = ''
          WHERE lower(email) = lower($2)",
        "DELETE FROM email_requests WHERE lower(email) = lower($2)",
        "DELETE FROM login_failures WHERE lower(email) = lower($2)",
        "DELETE FROM code_misses WHERE address = lower($2)",
        "UPDATE sends SET recipient = NULL, last_error = NULL, detail = NULL
          WHERE user_id = $1 OR lower(recipient) = lower($2)",
        "UPDATE ses_events SET recipient = NULL, diagnostic = NULL
          WHERE lower(recipient) = lower($2)
             OR job_id IN (SELECT job_id FROM jobs WHERE user_id = $1)",
        "DELETE FROM webhook_events
          WHERE (body::jsonb -> 'data' ->> 'user_id') = $1::text
             OR lower(body::jsonb -> 'data' ->> 'email') = lower($2)",
        "UPDATE audit_log SET detail = '[erased]' WHERE strpos(lower(detail), lower($2)) > 0",
        "DELETE FROM users WHERE id = $1",
    ];
    for sql in statements {
        sqlx::query(sql)
            .bind(user_id)
            .bind(&email)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("INSERT INTO audit_log (actor, action, detail, count, created_at) VALUES ($1, 'erase_user', $2, 1, $3)")
        .bind(actor)
        .bind(user_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    webhooks::enqueue(&mut tx, hooks, &UserDeleted { user_id }, now).await?;
    tx.commit().await?;
    Ok(true)
}
