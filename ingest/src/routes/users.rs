//! `GET /v1/users?email=`: what the calling service may know of a user, including whether
//! Mailroom can mail them (`email_status`); and `DELETE /v1/users/{id}`: erasing them.

use http::StatusCode;
use http::request::Parts;
use mailroom::domain::EmailAddress;
use mailroom::store;
use serde_json::json;

use crate::error::ApiError;
use crate::request::query_param;
use crate::response::{Resp, json_response};
use crate::state::AppState;

pub async fn find(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    let raw = query_param(&parts, "email")
        .ok_or_else(|| ApiError::BadRequest("the email query parameter is required".into()))?;
    let email = EmailAddress::parse(&raw).map_err(|e| ApiError::invalid("email", e.0))?;
    let user = store::find_user_by_email(&state.pool, &email)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            code: "user_not_found",
            message: "no user has that email address".into(),
        })?;
    // So the calling service can ask the person for another address.
    let suppression = store::suppression(&state.pool, &user.email).await?;
    let mut body = json!({
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "email_verified": user.email_verified,
        "created_at": user.created_at,
        "email_status": if suppression.is_some() { "suppressed" } else { "ok" },
    });
    if let Some(s) = suppression {
        body["suppression"] = json!({"reason": s.reason, "since": s.created_at});
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `DELETE /v1/users/{id}`: erases the person (see `mailroom::store::erasure`); 204, or 404
/// when there is no such user (a second call too).
pub async fn erase(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    let id = uuid::Uuid::parse_str(crate::routes::path_param(&parts, 0))
        .map_err(|_| ApiError::BadRequest("the user id must be a UUID".into()))?;
    let actor = format!("api:{}", crate::routes::caller_of(&parts).name());
    let erased = store::erase_user(
        &state.pool,
        id,
        &actor,
        &state.settings.webhooks,
        state.clock.now(),
    )
    .await?;
    if !erased {
        return Err(ApiError::NotFound {
            code: "user_not_found",
            message: "no user has that id".into(),
        });
    }
    state.relay_wake.notify_one();
    tracing::info!(user_id = %id, "user erased");
    Ok(http::Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("valid response"))
}

/// `PATCH /v1/users/{id}` `{email, reference?}`: corrects the address of an unverified user
/// (see `mailroom::store::correct_address`). 202 `{user_id, job_id}`; 404 unknown user; 409
/// `user_verified` (a verified address changes by an email change) or `email_taken`.
pub async fn correct(
    state: &AppState,
    parts: Parts,
    body: hyper::body::Incoming,
) -> Result<Resp, ApiError> {
    let id = uuid::Uuid::parse_str(crate::routes::path_param(&parts, 0))
        .map_err(|_| ApiError::BadRequest("the user id must be a UUID".into()))?;
    let body = crate::request::read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let mut f = crate::fields::Fields::new(body, &["email", "reference"]);
    let email = f.required("email", EmailAddress::parse);
    let reference = f.optional("reference", crate::fields::reference);
    f.finish()?;
    let (email, reference) = (email.expect("checked"), reference.flatten());
    let locale: Option<String> = sqlx::query_scalar("SELECT locale FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
    let locale = locale
        .and_then(|l| mailroom::domain::Locale::parse(&l).ok())
        .unwrap_or_else(mailroom::domain::Locale::default_locale);
    let job = mailroom::job::Job::new(
        mailroom::job::JobKind::Verification,
        id,
        locale,
        state.clock.now(),
    )
    .from_caller(crate::routes::caller_of(&parts).name(), reference);
    let limits = state.settings.address_limits;
    match store::correct_address(&state.pool, id, &email, limits, job, state.clock.now()).await? {
        store::Correction::Corrected { job_id } => {
            if job_id.is_some() {
                state.relay_wake.notify_one();
            }
            Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"user_id": id, "job_id": job_id}),
            ))
        }
        store::Correction::NoSuchUser => Err(ApiError::NotFound {
            code: "user_not_found",
            message: "no user has that id".into(),
        }),
        store::Correction::Verified => Err(ApiError::Conflict {
            fields: [(
                "email".to_owned(),
                "the user is verified: change a verified address with an email change".to_owned(),
            )]
            .into(),
            message: "only an unverified user's address can be corrected".into(),
        }),
        store::Correction::Taken => Err(ApiError::taken(false, true)),
    }
}
