//! The transactional outbox: jobs are written here in the transaction of the change that
//! causes them, and the relay publishes them to RabbitMQ and deletes them once confirmed.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::job::Job;

/// Adds a job to the outbox inside the caller's transaction; an email job also gets its row in
/// `jobs` (what `GET /v1/jobs/{id}` reads), in the same statement.
pub async fn enqueue(tx: &mut Transaction<'_, Postgres>, job: &Job) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH j AS (
             INSERT INTO jobs (job_id, kind, user_id, api_key, reference, created_at)
             SELECT $1, $5, $6, $7, $8, $4 WHERE $9
         )
         INSERT INTO outbox (job_id, routing_key, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(job.job_id)
    .bind(job.kind.routing_key())
    .bind(sqlx::types::Json(job))
    .bind(job.requested_at)
    .bind(job.kind.as_str())
    .bind(job.user_id)
    .bind(job.api_key.as_deref())
    .bind(job.reference.as_deref())
    .bind(job.kind.is_email())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// [`enqueue`] for many email jobs, in one statement.
pub async fn enqueue_many(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[Job],
) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.job_id).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let users: Vec<Uuid> = jobs.iter().map(|j| j.user_id).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = jobs.iter().map(|j| j.requested_at).collect();
    let payloads: Vec<sqlx::types::Json<&Job>> = jobs.iter().map(sqlx::types::Json).collect();
    sqlx::query(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[],
                                  $5::jsonb[]) AS i(job_id, kind, user_id, created_at, payload)
         ),
         j AS (
             INSERT INTO jobs (job_id, kind, user_id, created_at)
             SELECT job_id, kind, user_id, created_at FROM input
         )
         INSERT INTO outbox (job_id, routing_key, payload, created_at)
         SELECT job_id, kind, payload, created_at FROM input",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&users)
    .bind(&at)
    .bind(&payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub job_id: Uuid,
    pub routing_key: String,
    pub payload: sqlx::types::Json<serde_json::Value>,
}

/// Locks up to `limit` unpublished rows, oldest first. `SKIP LOCKED` lets several ingest
/// instances relay at once without publishing a row twice: a row another relay holds is
/// simply not seen until that relay commits.
pub async fn claim_outbox(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, routing_key, payload FROM outbox
          WHERE published_at IS NULL
          ORDER BY id
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Removes rows the broker confirmed, in the relay's transaction. Deleting rather than marking
/// them: an UPDATE writes a new version of the row and of each of its index entries, which
/// cost a tenth of the signup rate; a delete writes none, and the outbox stays as small as
/// the backlog. Crash safety is the same: a crash before the commit leaves the rows, and they
/// are published again (a duplicate the send log absorbs), never lost.
pub async fn remove_published(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn note_publish_failure(
    pool: &PgPool,
    ids: &[i64],
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// The most [`outbox_backlog`] counts: past it, it answers this number.
pub const BACKLOG_COUNT_CAP: i64 = 100_000;

/// Rows accepted but not yet confirmed by the broker, counted up to [`BACKLOG_COUNT_CAP`].
/// Bounded, because `/readyz` and every scrape run it: during a long broker outage the outbox
/// grows by every signup, and an exact count would read all of it each time (the cap keeps it
/// to one short index scan, a few milliseconds).
pub async fn outbox_backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT $1) AS b",
    )
    .bind(BACKLOG_COUNT_CAP)
    .fetch_one(pool)
    .await?;
    Ok(n)
}
