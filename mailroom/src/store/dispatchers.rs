//! The dispatchers that share one SES sending rate (`dispatchers`): each renews its row every
//! heartbeat and counts the live ones. Everything here uses the database's clock, not the
//! process's: the hosts must agree on who is live, whatever their clocks say.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One dispatcher as the table knows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    pub id: Uuid,
    pub host: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_age_ms: i64,
    pub share: f64,
    pub live: bool,
}

/// This dispatcher's identity in the table.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    pub id: Uuid,
    pub prefix: &'a str,
    pub host: &'a str,
    pub pid: i32,
}

/// Removes the rows of dispatchers of `prefix` not heard from for an hour (crashed ones).
pub async fn forget_long_gone(pool: &PgPool, prefix: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM dispatchers WHERE queue_prefix = $1 AND heartbeat_at < now() - interval '1 hour'",
    )
    .bind(prefix)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes this dispatcher's row (a clean stop), so the others take its share at once.
pub async fn leave(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM dispatchers WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Renews this dispatcher's row (with its current share) and counts the live ones, renewed
/// within `live_for`, in one statement. Returns the live count, this one included.
pub async fn renew(
    pool: &PgPool,
    me: &Registration<'_>,
    share: f64,
    live_for: Duration,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH me AS (
             INSERT INTO dispatchers (id, queue_prefix, host, pid, started_at, heartbeat_at, share)
             VALUES ($1, $2, $3, $4, now(), now(), $5)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), share = $5
             RETURNING id
         )
         SELECT 1 + count(*) FROM dispatchers
          WHERE queue_prefix = $2 AND id <> $1
            AND heartbeat_at > now() - make_interval(secs => $6)",
    )
    .bind(me.id)
    .bind(me.prefix)
    .bind(me.host)
    .bind(me.pid)
    .bind(share)
    .bind(live_for.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// The dispatchers of `prefix`, live ones first.
pub async fn members(
    pool: &PgPool,
    prefix: &str,
    live_for: Duration,
) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, host, pid, started_at,
                (extract(epoch FROM now() - heartbeat_at) * 1000)::int8 AS heartbeat_age_ms,
                share,
                heartbeat_at > now() - make_interval(secs => $2) AS live
           FROM dispatchers WHERE queue_prefix = $1
          ORDER BY live DESC, started_at",
    )
    .bind(prefix)
    .bind(live_for.as_secs_f64())
    .fetch_all(pool)
    .await
}
