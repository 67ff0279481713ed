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
