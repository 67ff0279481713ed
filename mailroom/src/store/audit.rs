//! The audit log (`audit_log`): who did what, for operator actions.

use sqlx::PgPool;

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
