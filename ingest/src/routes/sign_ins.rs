//! Sign-in by email (passwordless): `POST /v1/sign-ins` takes the token of a sign-in link (the
//! app's `SIGN_IN_URL` page relays it) or the email and code the person typed, with the API
//! key. Single use; using it verifies the address, since it proves the inbox. Code guesses
//! count as failed logins (`LOGIN_FAILURE_LIMIT`…), so the lockout of passwords applies to them
//! too. The request side, `POST /v1/sign-in-emails`, is a request like a reset
//! (see [`super::requests`]). Both answer 404 while `SIGN_IN_URL` is unset.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::{Code, CodePurpose, EmailAddress, Token};
use mailroom::policy::codes::Answer;
use mailroom::store::{self, CodeCheck, SignIn};
use serde_json::json;

use super::logins::{Reservation, parse_client_ip, reserve};
use crate::error::{ApiError, LinkRefused};
use crate::fields::Fields;
use crate::request::{Body, read_json};
use crate::response::{Resp, json_response};
use crate::state::AppState;

/// The answer while sign-in by email is off.
pub(super) fn off() -> ApiError {
    ApiError::NotFound {
        code: "sign_in_disabled",
        message: "sign-in by email is off on this service (its SIGN_IN_URL is not set)".into(),
    }
}

/// `POST /v1/sign-ins` `{token}` or `{email, code, client_ip?}`.
pub async fn sign_in(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    if state.settings.sign_in_url.is_none() {
        return Err(off());
    }
    // As a login: never replayed, since its answer is the check of now.
    crate::idempotency::check_header(&parts)?;
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let signed_in = if body.contains_key("token") {
        with_token(state, body).await?
    } else {
        with_code(state, body).await?
    };
    state.relay_wake.notify_one(); // user.verified, when the address was not verified yet
    mailroom::metrics::count(&state.metrics.logins, "ok");
    Ok(json_response(
        StatusCode::OK,
        &json!({"user_id": signed_in.0, "email": signed_in.1, "email_verified": true}),
    ))
}

async fn with_token(state: &AppState, body: Body) -> Result<(uuid::Uuid, String), ApiError> {
    let mut f = Fields::new(body, &["token"]);
    let token = f.required("token", Token::parse);
    f.finish()?;
    let hash = token.expect("checked").hash();
    let hooks = &state.settings.webhooks;
    match store::sign_in_with_token(&state.pool, &hash, hooks, state.clock.now()).await? {
        SignIn::SignedIn { user_id, email } => Ok((user_id, email)),
        SignIn::Expired => Err(ApiError::link("sign-in", LinkRefused::Expired)),
        SignIn::Used => Err(ApiError::link("sign-in", LinkRefused::Used)),
        SignIn::Unknown => Err(ApiError::link("sign-in", LinkRefused::Unknown)),
    }
}

/// A code: the login lockout first (429 before anything is read), then one of the code's
/// attempts; a wrong code is a failed login of that client.
async fn with_code(state: &AppState, body: Body) -> Result<(uuid::Uuid, String), ApiError> {
    let codes = &state.settings.codes;
    let mut f = Fields::new(body, &["email", "code", "client_ip"]);
    let email = f.required("email", EmailAddress::parse);
    let code = f.required("code", |s| Code::parse(s, codes.digits));
    let client = f.optional("client_ip", parse_client_ip);
    f.finish()?;
    let (email, code, client) = (
        email.expect("checked"),
        code.expect("checked"),
        client.flatten(),
    );
    let Some(key) = &codes.key else {
        return Err(ApiError::codes_off("code"));
    };
    let now = state.clock.now();
    let reserved = reserve(state, &email, client, now).await?;
    let mut reservation = Reservation {
        pool: state.pool.clone(),
        id: reserved,
        outcome_written: false,
    };
    let guessing = store::Guessing {
        key,
        max_attempts: codes.max_attempts,
        window: codes.ttl,
    };
    let check = store::check_code(
        &state.pool,
        CodePurpose::SignIn,
        &email,
        &code,
        guessing,
        now,
    )
    .await?;
    let (user_id, job_id) = match check {
        CodeCheck::Matched {
            user_id, job_id, ..
        } => (user_id, job_id),
        CodeCheck::Refused(answer) => {
            store::finish_login(&state.pool, reserved, Some("wrong_code")).await?;
            reservation.outcome_written = true;
            mailroom::metrics::count(&state.metrics.logins, "invalid");
            return Err(ApiError::code_refused(answer));
        }
    };
    let hooks = &state.settings.webhooks;
    let outcome = store::sign_in_with_code(&state.pool, user_id, job_id, hooks, now).await?;
    store::finish_login(&state.pool, reserved, None).await?;
    reservation.outcome_written = true;
    match outcome {
        SignIn::SignedIn { user_id, email: e } => {
            store::clear_client_failures(&state.pool, &email, client).await?;
            Ok((user_id, e))
        }
        _ => Err(ApiError::code_refused(Answer::Used)),
    }
}
