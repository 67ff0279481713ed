//! The sweep's statements: deleting expired rows in batches ([`sweep_batch`], by the rules of
//! [`crate::policy::retention`]), reminding unverified users once, and expiring the ones that
//! never verified. Each batch is a statement (or a short transaction) of its own, so no lock
//! is held across batches; the leader lock ([`try_lead`]) keeps a second dispatcher from doing
//! the same work at the same time.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::webhooks;
use crate::domain::Locale;
use crate::events::{Endpoints, UserExpired};
use crate::job::{Job, JobKind};
use crate::policy::retention::Table;

/// The key of the sweep's leader lock: one sweeper per database, whatever the queue prefix
/// (the tables are the database's).
const LEADER_LOCK: &str = "mailroom-sweep";

/// Takes the leader lock on `conn` if nobody holds it: true when this connection leads. It is
/// held until [`stop_leading`] or until the connection ends (a crashed leader's lock goes with
/// its connection).
pub async fn try_lead(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(LEADER_LOCK)
        .fetch_one(conn)
        .await
}

pub async fn stop_leading(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(LEADER_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// The smallest UUIDv7 of the millisecond `at`: every job id made before `at` is below it.
fn uuid_v7_floor(at: DateTime<Utc>) -> Uuid {
    let ms = at.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// Deletes at most `limit` rows of `table` that expired before `cutoff`; the number deleted.
/// Rows are picked by the indexed condition and deleted by `ctid`, so the statement touches
/// only them.
pub async fn sweep_batch(
    conn: &mut PgConnection,
    table: &Table,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let (name, expired) = (table.name, table.expired);
    let sql = format!(
        "DELETE FROM {name} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {name} WHERE {expired} LIMIT $3))"
    );
    let r = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cutoff)
        .bind(uuid_v7_floor(cutoff))
        .bind(limit)
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}

/// Queues one reminder (a verification email with a fresh link) for at most `limit` users who
/// are still unverified and whose last verification email (or signup) is older than `before`,
/// once per user. The jobs and the mark are written in one transaction. The ids reminded.
pub async fn remind_unverified(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<(Uuid, String)> = sqlx::query_as(
        "WITH due AS (
             SELECT id FROM users
              WHERE NOT email_verified AND reminded_at IS NULL AND created_at < $1
                -- An invitee is not reminded to verify: their invite email says what to do.
                AND invited_at IS NULL
                AND COALESCE(verification_job_at, created_at) < $1
              ORDER BY created_at LIMIT $2
              FOR UPDATE SKIP LOCKED
         )
         UPDATE users u SET reminded_at = $3 FROM due WHERE u.id = due.id
         RETURNING u.id, u.locale",
    )
    .bind(before)
    .bind(limit)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let jobs: Vec<Job> = due
        .iter()
        .map(|(id, locale)| {
            let locale = Locale::parse(locale).unwrap_or_else(|_| Locale::default_locale());
            Job::new(JobKind::Verification, *id, locale, now)
        })
        .collect();
    super::outbox::enqueue_many(&mut tx, &jobs).await?;
    tx.commit().await?;
    Ok(due.into_iter().map(|(id, _)| id).collect())
}

/// Deletes at most `limit` users who never verified and signed up before `before`, freeing
/// their names and addresses, with a `user.expired` event each, in one transaction. The ids.
pub async fn expire_unverified(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let gone: Vec<(Uuid, String)> = sqlx::query_as(
        "DELETE FROM users WHERE id IN (
             SELECT id FROM users WHERE NOT email_verified AND created_at < $1
              ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, email",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let events: Vec<UserExpired> = gone
        .iter()
        .map(|(user_id, email)| UserExpired {
            user_id: *user_id,
            email: email.clone(),
        })
        .collect();
    webhooks::enqueue_many(&mut tx, hooks, &events, now).await?;
    tx.commit().await?;
    Ok(gone.into_iter().map(|(id, _)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_of_a_millisecond_is_below_every_id_made_in_it_and_after() {
        let at = Utc::now();
        let floor = uuid_v7_floor(at);
        let later = Uuid::now_v7();
        assert!(floor <= later);
        let earlier = uuid_v7_floor(at - chrono::Duration::milliseconds(1));
        assert!(earlier < floor);
    }
}
