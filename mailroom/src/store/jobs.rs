//! The calling service's view of its jobs (`jobs`, joined with the send log): what became of
//! each email, for `GET /v1/jobs/{id}` and `GET /v1/users/{id}/emails`. A job has its `jobs`
//! row from the moment it is accepted (written with its outbox row), so a job the dispatcher
//! has not seen yet is `queued`, not unknown.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One job as the calling service sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobStatus {
    pub job_id: Uuid,
    pub kind: String,
    pub user_id: Uuid,
    pub api_key: Option<String>,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The send log's status; None before the dispatcher first claimed the job.
    pub send_status: Option<String>,
    pub attempts: Option<i32>,
    pub sent_at: Option<DateTime<Utc>>,
    pub ses_message_id: Option<String>,
    pub delivery: Option<String>,
    pub last_error: Option<String>,
}

impl JobStatus {
    /// The status the API shows: `queued` (accepted, not yet taken by a dispatcher, or given
    /// back without an attempt), `sending`, `sent`, `retrying`, `dead`, `skipped` or
    /// `suppressed`.
    pub fn status(&self) -> &'static str {
        match self.send_status.as_deref() {
            None | Some("waiting") => "queued",
            Some("sending") => "sending",
            Some("sent") => "sent",
            Some("retrying") => "retrying",
            Some("dead") => "dead",
            Some("suppressed") => "suppressed",
            // `skipped`, and anything a newer dispatcher might write.
            Some(_) => "skipped",
        }
    }
}

const SELECT: &str = "SELECT j.job_id, j.kind, j.user_id, j.api_key, j.reference, j.created_at,
                             s.status AS send_status, s.attempts, s.sent_at, s.ses_message_id,
                             s.delivery, s.last_error
                        FROM jobs j LEFT JOIN sends s USING (job_id)";

pub async fn job_status(pool: &PgPool, job_id: Uuid) -> Result<Option<JobStatus>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE j.job_id = $1")))
        .bind(job_id)
        .fetch_optional(pool)
        .await
}

/// A user's jobs, newest first: at most `limit`, older than the job `before` when given (the
/// cursor of the page before).
pub async fn user_jobs(
    pool: &PgPool,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<JobStatus>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE j.user_id = $1 AND ($2::uuid IS NULL OR j.job_id < $2)
          ORDER BY j.job_id DESC LIMIT $3"
    )))
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn user_exists(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(pool)
        .await
}
