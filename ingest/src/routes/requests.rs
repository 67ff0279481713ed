//! `POST /v1/verifications/resend` and `POST /v1/password-resets`: the same 202 whatever
//! became of the request (known, unknown, verified, over the limit, suppressed), recorded in
//! `email_requests`. Never reveals whether an address exists.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::EmailAddress;
use mailroom::job::JobKind;
use mailroom::metrics::KindLabel;
use mailroom::store;
use serde_json::json;

use crate::error::ApiError;
use crate::fields::{self, Fields};
use crate::idempotency::{self, Begin};
use crate::metrics::KindOutcomeLabels;
use crate::request::read_json;
use crate::response::{Resp, raw_json};
use crate::routes::caller_of;
use crate::state::AppState;

/// `POST /v1/verifications/resend`.
pub async fn resend_verification(
    state: &AppState,
    parts: Parts,
    body: Incoming,
) -> Result<Resp, ApiError> {
    request_email(state, parts, body, JobKind::Verification).await
}

/// `POST /v1/password-resets`.
pub async fn request_reset(
    state: &AppState,
    parts: Parts,
    body: Incoming,
) -> Result<Resp, ApiError> {
    request_email(state, parts, body, JobKind::PasswordReset).await
}

/// `POST /v1/sign-in-emails`: a sign-in link (to `SIGN_IN_URL`) and/or code. Off (404) until
/// `SIGN_IN_URL` is set.
pub async fn request_sign_in(
    state: &AppState,
    parts: Parts,
    body: Incoming,
) -> Result<Resp, ApiError> {
    if state.settings.sign_in_url.is_none() {
        return Err(super::sign_ins::off());
    }
    request_email(state, parts, body, JobKind::SignIn).await
}

/// Resend-verification, password-reset and sign-in requests. The answer is the same 202 whether the
/// address is known, unknown, verified or over its limit, so it reveals nothing; what really
/// happened is recorded in `email_requests`.
async fn request_email(
    state: &AppState,
    parts: Parts,
    body: Incoming,
    kind: JobKind,
) -> Result<Resp, ApiError> {
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let route = match kind {
        JobKind::Verification => "POST /v1/verifications/resend",
        JobKind::SignIn => "POST /v1/sign-in-emails",
        _ => "POST /v1/password-resets",
    };
    let reservation = match idempotency::begin(state, &parts, route, &body).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Run(r) => r,
    };
    let mut f = Fields::new(body, &["email", "reference", "method", "return_to"]);
    let email = f.required("email", EmailAddress::parse);
    let reference = f.optional("reference", fields::reference);
    let method = f.optional("method", fields::method(state.settings.codes.key.is_some()));
    let return_to = f.optional("return_to", fields::return_to(&state.settings.return_to));
    f.finish()?;
    let method = method.flatten().unwrap_or_default();
    let return_to = return_to.flatten();
    let email = email.expect("checked");
    let reference = reference.flatten();
    let limits = state.settings.address_limits;
    let caller = caller_of(&parts);
    let answer = json!({"status": "accepted"}).to_string();
    let by = store::RequestedBy {
        api_key: Some(caller.name()),
        reference: reference.as_deref(),
        idempotency: reservation
            .as_ref()
            .map(|r| (r.record(), StatusCode::ACCEPTED.as_u16(), answer.as_str())),
        method,
        return_to: return_to.as_deref(),
    };
    let (outcome, job) =
        store::request_email(&state.pool, &email, kind, limits, by, state.clock.now()).await?;
    if let Some(r) = reservation {
        r.completed();
    }
    if job.is_some() {
        state.relay_wake.notify_one();
    }
    state
        .metrics
        .accepted
        .get_or_create(&KindLabel {
            kind: kind.as_str(),
        })
        .inc();
    state
        .metrics
        .requests_by_outcome
        .get_or_create(&KindOutcomeLabels {
            kind: kind.as_str(),
            outcome: outcome.as_str(),
        })
        .inc();
    tracing::info!(
        kind = kind.as_str(),
        outcome = outcome.as_str(),
        ?job,
        "email request"
    );
    Ok(raw_json(StatusCode::ACCEPTED, answer))
}
