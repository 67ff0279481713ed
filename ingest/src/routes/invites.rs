//! Invites: `POST /v1/invites` creates an unverified user without a password and queues "You're
//! invited"; `POST /v1/invites/{user_id}/resend` sends it again (within the address's limits);
//! `DELETE /v1/invites/{user_id}` revokes a pending one. The invitee accepts on
//! `GET /accept-invite?token=…` (a set-password form that only looks at the token) or through
//! `POST /v1/invites/accept` (JSON, or that form's post, answered with pages), which checks the
//! token before hashing and consumes it atomically.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::{EmailAddress, Locale, Password, Token, UserName};
use mailroom::job::{Job, JobKind};
use mailroom::store::{self, Acceptance, Invited, NewInvite, NewUser, TokenKind, TokenState};
use serde_json::{Value, json};

use crate::error::{ApiError, LinkRefused};
use crate::fields::{self, Fields};
use crate::idempotency::{self, Begin};
use crate::request::{Body, is_form, query_param, read_form, read_json};
use crate::response::{Page, Resp, continuing_page, form_page, json_response, page, raw_json};
use crate::routes::{caller_of, path_param};
use crate::state::AppState;

/// `POST /v1/invites` `{email, name?, locale?, return_to?, reference?}`.
pub async fn create(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let reservation = match idempotency::begin(state, &parts, "POST /v1/invites", &body).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Run(r) => r,
    };
    let mut f = Fields::new(body, &["email", "name", "locale", "return_to", "reference"]);
    let email = f.required("email", EmailAddress::parse);
    let name = f.optional("name", UserName::parse);
    let locale = f.optional("locale", Locale::parse);
    let return_to = f.optional("return_to", fields::return_to(&state.settings.return_to));
    let reference = f.optional("reference", fields::reference);
    f.finish()?;
    let email = email.expect("checked");
    // A name is the account's handle, unique like the address; an invitee who was given none
    // gets a placeholder they can change later (the invite email never shows it).
    let name = name.flatten().unwrap_or_else(placeholder_name);
    let locale = locale.flatten().unwrap_or_else(Locale::default_locale);
    let now = state.clock.now();
    let job = Job::new(JobKind::Invite, uuid::Uuid::now_v7(), locale.clone(), now)
        .from_caller(caller_of(&parts).name(), reference.flatten())
        .with_return_to(return_to.flatten());
    let invite = NewInvite {
        user: NewUser {
            name,
            email,
            hashed_password: None,
            locale,
        },
        job,
        idempotency: reservation.as_ref().map(|r| r.record().clone()),
    };
    match store::invite(&state.pool, &invite, &state.settings.webhooks, now).await? {
        Invited::Created { user_id, job_id } => {
            if let Some(r) = reservation {
                r.completed();
            }
            state.relay_wake.notify_one();
            let kind = mailroom::metrics::KindLabel {
                kind: JobKind::Invite.as_str(),
            };
            state.metrics.accepted.get_or_create(&kind).inc();
            tracing::info!(%user_id, %job_id, "invite queued");
            Ok(raw_json(
                StatusCode::ACCEPTED,
                store::signup_answer(user_id, Some(job_id)),
            ))
        }
        Invited::Taken { name, email } => Err(ApiError::taken(name, email)),
    }
}

fn placeholder_name() -> UserName {
    let id = uuid::Uuid::new_v4().simple().to_string();
    UserName::parse(&format!("invitee-{}", &id[..12])).expect("a valid name")
}

/// `POST /v1/invites/{user_id}/resend`: a new invite email (older links die), within the
/// address's per-minute and per-hour limits (`job_id` null over them, or when the address is
/// suppressed). 404 when there is no pending invite of that id; 409 once it was accepted.
pub async fn resend(state: &AppState, parts: Parts, _body: Incoming) -> Result<Resp, ApiError> {
    let user_id = user_id_of(&parts)?;
    let (email, accepted) = store::invitee(&state.pool, user_id)
        .await?
        .ok_or_else(not_found)?;
    if accepted {
        return Err(ApiError::Conflict {
            fields: Default::default(),
            message: "this invite was accepted already".into(),
        });
    }
    let email = EmailAddress::parse(&email).map_err(|e| ApiError::Internal(e.into()))?;
    let caller = caller_of(&parts);
    let by = store::RequestedBy {
        api_key: Some(caller.name()),
        ..Default::default()
    };
    let limits = state.settings.address_limits;
    let (outcome, job) = store::request_email(
        &state.pool,
        &email,
        JobKind::Invite,
        limits,
        by,
        state.clock.now(),
    )
    .await?;
    if job.is_some() {
        state.relay_wake.notify_one();
    }
    tracing::info!(%user_id, outcome = outcome.as_str(), ?job, "invite resend");
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"user_id": user_id, "job_id": job}),
    ))
}

/// `DELETE /v1/invites/{user_id}`: the pending user is removed; 204, or 404.
pub async fn revoke(state: &AppState, parts: Parts, _body: Incoming) -> Result<Resp, ApiError> {
    let user_id = user_id_of(&parts)?;
    if !store::revoke_invite(&state.pool, user_id).await? {
        return Err(not_found());
    }
    tracing::info!(%user_id, "invite revoked");
    Ok(http::Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("valid response"))
}

fn user_id_of(parts: &Parts) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(path_param(parts, 0))
        .map_err(|_| ApiError::BadRequest("the user id must be a UUID".into()))
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "invite_not_found",
        message: "no pending invite has that user id".into(),
    }
}

/// `GET /accept-invite?token=…`: the form, when the link still works. Looking never consumes
/// it (mail scanners open links).
pub async fn open_link(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    let back = (state.settings.return_to).allowed(query_param(&parts, "return_to").as_deref());
    let Some(token) = query_param(&parts, "token").and_then(|t| Token::parse(&t).ok()) else {
        return Ok(page(&state.templates, StatusCode::BAD_REQUEST, INCOMPLETE));
    };
    let now = state.clock.now();
    Ok(
        match store::token_state(&state.pool, TokenKind::Invite, &token.hash(), now).await {
            Ok(TokenState::Valid) => accept_form(state, StatusCode::OK, &token, back, None),
            Ok(TokenState::Used) => {
                continuing_page(&state.templates, StatusCode::GONE, USED, back.as_deref())
            }
            Ok(TokenState::Expired) => page(&state.templates, StatusCode::GONE, EXPIRED),
            Ok(TokenState::Unknown) => page(&state.templates, StatusCode::NOT_FOUND, UNKNOWN),
            Err(e) => {
                tracing::warn!(error = %e, "invite page could not reach the database");
                page(&state.templates, StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN)
            }
        },
    )
}

/// `POST /v1/invites/accept`: JSON `{token, password}` answers JSON; the form's post pages.
pub async fn accept(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let limit = state.settings.http.max_body_bytes;
    if is_form(&parts) {
        let form = read_form(&parts, body, limit).await?;
        return Ok(accept_form_post(state, form).await);
    }
    let body = read_json(&parts, body, limit).await?;
    let mut f = Fields::new(body, &["token", "password"]);
    let token = f.required("token", Token::parse);
    let password = f.required("password", Password::parse);
    f.finish()?;
    match use_invite(state, &token.expect("checked"), password.expect("checked")).await? {
        Acceptance::Accepted { user_id, email } => Ok(json_response(
            StatusCode::OK,
            &json!({"user_id": user_id, "email": email}),
        )),
        Acceptance::Expired => Err(ApiError::link("invite", LinkRefused::Expired)),
        Acceptance::Used => Err(ApiError::link("invite", LinkRefused::Used)),
        Acceptance::Unknown => Err(ApiError::link("invite", LinkRefused::Unknown)),
    }
}

async fn accept_form_post(state: &AppState, form: Body) -> Resp {
    let get = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let back = state.settings.return_to.allowed(Some(&get("return_to")));
    let Ok(token) = Token::parse(&get("token")) else {
        return page(&state.templates, StatusCode::BAD_REQUEST, INCOMPLETE);
    };
    let password = match Password::parse(&get("password")) {
        Ok(p) => p,
        Err(e) => {
            let error = format!("The password {e}.");
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return accept_form(state, status, &token, back, Some(&error));
        }
    };
    let t = &state.templates;
    match use_invite(state, &token, password).await {
        Ok(Acceptance::Accepted { .. }) => {
            continuing_page(t, StatusCode::OK, ACCEPTED, back.as_deref())
        }
        Ok(Acceptance::Used) => continuing_page(t, StatusCode::GONE, USED, back.as_deref()),
        Ok(Acceptance::Expired) => page(t, StatusCode::GONE, EXPIRED),
        Ok(Acceptance::Unknown) => page(t, StatusCode::NOT_FOUND, UNKNOWN),
        Err(e) => {
            tracing::warn!(error = %e, "invite form failed");
            let mut resp = page(t, e.status(), TRY_AGAIN);
            if matches!(e, ApiError::Busy) {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, "1".parse().expect("static"));
            }
            resp
        }
    }
}

/// Checks the token (one indexed read: a made-up one costs no hash), hashes the password
/// (one use of a token at a time) and accepts, which checks the token again atomically.
async fn use_invite(
    state: &AppState,
    token: &Token,
    password: Password,
) -> Result<Acceptance, ApiError> {
    let hash = token.hash();
    let now = state.clock.now();
    match store::token_state(&state.pool, TokenKind::Invite, &hash, now).await? {
        TokenState::Valid => {}
        TokenState::Expired => return Ok(Acceptance::Expired),
        TokenState::Used => return Ok(Acceptance::Used),
        TokenState::Unknown => return Ok(Acceptance::Unknown),
    }
    let Some(_admitted) = state.resets_in_flight.admit(hash.as_str()) else {
        return Err(ApiError::Unavailable(
            "this invite link is being used right now; try again in a moment".into(),
        ));
    };
    let password_hash = state.hash_password(password).await?;
    let hooks = &state.settings.webhooks;
    let r =
        store::accept_invite(&state.pool, &hash, &password_hash, hooks, state.clock.now()).await?;
    if let Acceptance::Accepted { user_id, .. } = &r {
        state.relay_wake.notify_one();
        tracing::info!(%user_id, "invite accepted");
    }
    Ok(r)
}

fn accept_form(
    state: &AppState,
    status: StatusCode,
    token: &Token,
    back: Option<String>,
    error: Option<&str>,
) -> Resp {
    form_page(
        &state.templates,
        status,
        "invite_form",
        &json!({
            "action": "/v1/invites/accept",
            "token": token.expose(),
            "min_length": 8,
            "max_length": 128,
            "error": error.unwrap_or(""),
            "return_to": back,
        }),
    )
}

const INCOMPLETE: Page = Page {
    title: "This link is incomplete",
    message: "The invite link is missing its token or was cut off.",
    next_step: "Copy the whole link from the email into your browser.",
};

const ACCEPTED: Page = Page {
    title: "Your account is ready",
    message: "Your password is set and your address is confirmed.",
    next_step: "You can now sign in.",
};

const USED: Page = Page {
    title: "This invite was already accepted",
    message: "Your account was set up with this link before.",
    next_step: "Sign in with your password, or ask for a password reset if you forgot it.",
};

const EXPIRED: Page = Page {
    title: "This invite has expired",
    message: "Invite links work for a limited time.",
    next_step: "Ask whoever invited you to send a new invite.",
};

const UNKNOWN: Page = Page {
    title: "This invite is not valid",
    message: "We do not know this link. If you were invited several times, only the newest invite works.",
    next_step: "Use the link in the most recent invite email.",
};

const TRY_AGAIN: Page = Page {
    title: "Please try again in a moment",
    message: "We could not check your invite just now.",
    next_step: "Reload this page in a minute; the link still works.",
};
