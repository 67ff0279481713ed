//! Dead letters as the send log knows them: listing them, marking them replayed, and the row
//! of a message that could not even be read as a job. The messages themselves are in the
//! broker's dead queue ([`crate::dead`] reads and replays those).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Marks replayed dead jobs as `waiting` in the send log: they are back in the work queue, and
/// listings of dead letters (the dashboard's) must not show them any more. Each job comes with
/// the replay count it went out with; a job whose send log already shows that count died again
/// during the replay and stays dead. Ids that are not UUIDs (malformed messages) are ignored.
pub async fn mark_replayed(
    pool: &PgPool,
    replayed: &[(String, i64)],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let (ids, counts): (Vec<Uuid>, Vec<i32>) = replayed
        .iter()
        .filter_map(|(j, n)| {
            Some((
                j.parse::<Uuid>().ok()?,
                (*n).clamp(0, i32::MAX as i64) as i32,
            ))
        })
        .unzip();
    let r = sqlx::query(
        "UPDATE sends SET status = 'waiting', detail = 'replayed from the dead letters',
                updated_at = $3
           FROM unnest($1::uuid[], $2::int4[]) AS r(job_id, replays)
          WHERE sends.job_id = r.job_id AND sends.status = 'dead' AND sends.replays < r.replays",
    )
    .bind(&ids)
    .bind(&counts)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Notes how often a job that just died had been replayed before (its replay header).
pub async fn record_replays(pool: &PgPool, job_id: Uuid, replays: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sends SET replays = $2 WHERE job_id = $1")
        .bind(job_id)
        .bind(replays.clamp(0, i32::MAX as i64) as i32)
        .execute(pool)
        .await?;
    Ok(())
}

/// The dead letters as the send log knows them (class, error, attempts, time), the newest
/// `limit`, oldest first. Reading them here holds nothing in the dead queue, so a replay
/// running at the same time sees every message.
pub async fn dead_letters(pool: &PgPool, limit: i64) -> Result<Vec<DeadSend>, sqlx::Error> {
    let mut rows: Vec<DeadSend> = sqlx::query_as(
        "SELECT job_id, kind, recipient, attempts, error_class, last_error, updated_at, replays
           FROM sends WHERE status = 'dead'
          ORDER BY updated_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// One dead job in the send log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadSend {
    pub job_id: Uuid,
    /// `unknown` for a message that could not be read as a job.
    pub kind: String,
    pub recipient: Option<String>,
    pub attempts: i32,
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    /// When it died.
    pub updated_at: DateTime<Utc>,
    pub replays: i32,
}

/// Records a message that could not even be read as a job. It gets a row of its own (under the
/// message id when it had a usable one) so that the operator sees it in the send log.
pub async fn record_malformed(
    pool: &PgPool,
    job_id: Uuid,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sends (job_id, kind, status, attempts, error_class, last_error,
                            first_attempt_at, updated_at)
         VALUES ($1, 'unknown', 'dead', 1, 'malformed', $2, $3, $3)
         ON CONFLICT (job_id) DO UPDATE
            SET status = 'dead', error_class = 'malformed', last_error = $2, updated_at = $3",
    )
    .bind(job_id)
    .bind(error)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}
