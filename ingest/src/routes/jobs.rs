//! `GET /v1/jobs/{job_id}` and `GET /v1/users/{id}/emails`: what became of each email the
//! calling service asked for — queued, sending, sent (and then delivered, bounced, complained
//! or delayed, from SES feedback), retrying, dead, skipped or suppressed.

use http::StatusCode;
use http::request::Parts;
use mailroom::store::{self, JobStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::request::query_param;
use crate::response::{Resp, json_response};
use crate::routes::path_param;
use crate::state::AppState;

/// The most jobs one page of `GET /v1/users/{id}/emails` holds, and its default.
const MAX_PAGE: i64 = 100;
const DEFAULT_PAGE: i64 = 20;

/// A job's status as the API shows it.
pub fn status_body(j: &JobStatus) -> Value {
    json!({
        "job_id": j.job_id,
        "kind": j.kind,
        "user_id": j.user_id,
        "reference": j.reference,
        "api_key": j.api_key,
        "status": j.status(),
        "attempts": j.attempts.unwrap_or(0),
        "created_at": j.created_at,
        "sent_at": j.sent_at,
        "ses_message_id": j.ses_message_id,
        "delivery": j.delivery,
        "last_error": j.last_error,
    })
}

fn uuid_param(parts: &Parts, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(path_param(parts, 0))
        .map_err(|_| ApiError::BadRequest(format!("{what} must be a UUID")))
}

/// `GET /v1/jobs/{job_id}`.
pub async fn show(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    let job_id = uuid_param(&parts, "the job id")?;
    let job = store::job_status(&state.pool, job_id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            code: "job_not_found",
            message: "no such job (it may have passed its retention)".into(),
        })?;
    Ok(json_response(StatusCode::OK, &status_body(&job)))
}

/// `GET /v1/users/{id}/emails?limit=&cursor=`: newest first; `next_cursor` is the `cursor` of
/// the next page, null on the last one.
pub async fn of_user(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    let user_id = uuid_param(&parts, "the user id")?;
    let limit = match query_param(&parts, "limit") {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            })?,
    };
    let cursor = match query_param(&parts, "cursor") {
        None => None,
        Some(c) => Some(
            Uuid::parse_str(&c)
                .map_err(|_| ApiError::BadRequest("cursor must be a next_cursor given".into()))?,
        ),
    };
    if !store::user_exists(&state.pool, user_id).await? {
        return Err(ApiError::NotFound {
            code: "user_not_found",
            message: "no user has that id".into(),
        });
    }
    // One more than the page: whether there is a next page, without counting.
    let mut jobs = store::user_jobs(&state.pool, user_id, cursor, limit + 1).await?;
    let more = jobs.len() as i64 > limit;
    jobs.truncate(limit as usize);
    let next_cursor = more.then(|| jobs.last().map(|j| j.job_id)).flatten();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "emails": jobs.iter().map(status_body).collect::<Vec<_>>(),
            "next_cursor": next_cursor,
        }),
    ))
}
