//! Email changes: `POST /v1/users/{id}/email-changes` asks for one (the new address gets
//! "confirm your new address", the old one a notice naming it, masked, with a cancel link);
//! `/confirm-email-change` and `/cancel-email-change` are the links' pages — a GET (or HEAD)
//! only shows a button, so a mail scanner consumes nothing; the button's POST acts — and
//! `POST /v1/email-changes/{change_id}/confirm {code}` takes the code the person typed.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::{Code, CodePurpose, EmailAddress, Token};
use mailroom::store::{
    self, ChangeLink, ChangeRequest, ChangeRequested, ChangeRole, ChangeUse, CodeCheck,
};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::fields::{self, Fields};
use crate::idempotency::{self, Begin};
use crate::request::{Body, is_form, query_param, read_form, read_json};
use crate::response::{
    Page, Resp, continuing_page, form_page, html_response, json_response, page, raw_json,
};
use crate::routes::{caller_of, path_param};
use crate::state::AppState;

/// `POST /v1/users/{id}/email-changes` `{new_email, method?, return_to?}`: 202 `{change_id}`.
pub async fn request(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let user_id = uuid::Uuid::parse_str(path_param(&parts, 0))
        .map_err(|_| ApiError::BadRequest("the user id must be a UUID".into()))?;
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let route = "POST /v1/users/{id}/email-changes";
    let reservation = match idempotency::begin(state, &parts, route, &body).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Run(r) => r,
    };
    let mut f = Fields::new(body, &["new_email", "method", "return_to"]);
    let new_email = f.required("new_email", EmailAddress::parse);
    let method = f.optional("method", fields::method(state.settings.codes.key.is_some()));
    let return_to = f.optional("return_to", fields::return_to(&state.settings.return_to));
    f.finish()?;
    let (new_email, method, return_to) = (
        new_email.expect("checked"),
        method.flatten().unwrap_or_default(),
        return_to.flatten(),
    );
    let now = state.clock.now();
    let ttl = chrono::Duration::from_std(state.settings.email_change_ttl)
        .unwrap_or(chrono::Duration::hours(24));
    let caller = caller_of(&parts);
    let req = ChangeRequest {
        user_id,
        new_email: &new_email,
        confirm_old: state.settings.email_change_confirm_old,
        method,
        return_to: return_to.as_deref(),
        expires_at: now + ttl,
        api_key: caller.name(),
        idempotency: reservation.as_ref().map(|r| r.record()),
        limits: state.settings.address_limits,
    };
    match store::request_email_change(&state.pool, &req, now).await? {
        ChangeRequested::Queued { change_id } => {
            if let Some(r) = reservation {
                r.completed();
            }
            state.relay_wake.notify_one();
            let kind = mailroom::metrics::KindLabel {
                kind: mailroom::job::JobKind::EmailChangeConfirm.as_str(),
            };
            state.metrics.accepted.get_or_create(&kind).inc();
            tracing::info!(%user_id, %change_id, "email change requested");
            Ok(raw_json(
                StatusCode::ACCEPTED,
                store::change_answer(change_id),
            ))
        }
        ChangeRequested::NoSuchUser => Err(ApiError::NotFound {
            code: "user_not_found",
            message: "no user has that id".into(),
        }),
        ChangeRequested::Same => Err(ApiError::invalid(
            "new_email",
            "is the user's address already",
        )),
        ChangeRequested::Taken => Err(email_taken()),
        ChangeRequested::Limited => Err(ApiError::AddressLimited),
        ChangeRequested::Suppressed => Err(ApiError::invalid(
            "new_email",
            "is on the suppression list (it bounced or complained): ask for another address",
        )),
    }
}

fn email_taken() -> ApiError {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "new_email".to_owned(),
        "that email address is already registered".to_owned(),
    );
    ApiError::Conflict {
        fields,
        message: "email_taken: another account has that address".into(),
    }
}

/// `POST /v1/email-changes/{change_id}/confirm` `{code}`: the new address's code, relayed by
/// the calling service; its attempts are as for every code.
pub async fn confirm_code(
    state: &AppState,
    parts: Parts,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let change_id = uuid::Uuid::parse_str(path_param(&parts, 0))
        .map_err(|_| ApiError::BadRequest("the change id must be a UUID".into()))?;
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let codes = &state.settings.codes;
    let mut f = Fields::new(body, &["code"]);
    let code = f.required("code", |s| Code::parse(s, codes.digits));
    f.finish()?;
    let code = code.expect("checked");
    let Some(key) = &codes.key else {
        return Err(ApiError::codes_off("code"));
    };
    let now = state.clock.now();
    let not_found = || ApiError::NotFound {
        code: "change_not_found",
        message: "no email change has that id".into(),
    };
    let change = store::find_email_change(&state.pool, change_id, now)
        .await?
        .ok_or_else(not_found)?;
    // The code is the user's: looked up by their address (the old one, until the change).
    let user_email =
        EmailAddress::parse(&change.old_email).map_err(|e| ApiError::Internal(e.into()))?;
    let guessing = store::Guessing {
        key,
        max_attempts: codes.max_attempts,
        window: codes.ttl,
    };
    let purpose = CodePurpose::EmailChange;
    let job_id =
        match store::check_code(&state.pool, purpose, &user_email, &code, guessing, now).await? {
            CodeCheck::Matched {
                user_id, job_id, ..
            } if user_id == change.user_id => job_id,
            CodeCheck::Matched { .. } => {
                return Err(ApiError::code_refused(
                    mailroom::policy::codes::Answer::Used,
                ));
            }
            CodeCheck::Refused(answer) => return Err(ApiError::code_refused(answer)),
        };
    let hooks = &state.settings.webhooks;
    let outcome = store::confirm_change_by_code(&state.pool, change_id, job_id, hooks, now).await?;
    state.relay_wake.notify_one();
    match outcome {
        ChangeUse::Committed { user_id, new_email } => Ok(json_response(
            StatusCode::OK,
            &json!({"change_id": change_id, "status": "changed", "user_id": user_id, "email": new_email}),
        )),
        ChangeUse::Waiting => Ok(json_response(
            StatusCode::OK,
            &json!({"change_id": change_id, "status": "waiting_for_old_address", "user_id": change.user_id}),
        )),
        ChangeUse::Taken => Err(email_taken()),
        _ => Err(ApiError::Gone {
            code: "change_gone",
            message: "this email change was cancelled, made or has expired".into(),
        }),
    }
}

/// `GET /confirm-email-change` and `GET /cancel-email-change`: a button, never an action.
pub async fn open_link(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    let now = state.clock.now();
    let token = query_param(&parts, "token").and_then(|t| Token::parse(&t).ok());
    let looked = match &token {
        Some(t) => store::change_link(&state.pool, &t.hash(), now)
            .await
            .map(Some),
        None => Ok(None),
    };
    // HEAD: the status the link would get, consuming nothing.
    let status = match &looked {
        Ok(None) => StatusCode::BAD_REQUEST,
        Ok(Some(ChangeLink::Valid(_))) => StatusCode::OK,
        Ok(Some(ChangeLink::Spent | ChangeLink::Expired)) => StatusCode::GONE,
        Ok(Some(ChangeLink::Unknown)) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    if parts.method == http::Method::HEAD {
        return Ok(html_response(status, String::new()));
    }
    let back = (state.settings.return_to).allowed(query_param(&parts, "return_to").as_deref());
    let t = &state.templates;
    Ok(match (looked, token) {
        (Ok(Some(ChangeLink::Valid(role))), Some(token)) => {
            let (action, title, button, note) = match role {
                ChangeRole::Cancel => (
                    "/cancel-email-change",
                    "Cancel the change of your email address",
                    "Cancel the change",
                    "Your account keeps its address.",
                ),
                _ => (
                    "/confirm-email-change",
                    "Confirm the change of your email address",
                    "Confirm the change",
                    "Until the change is confirmed, your account keeps its old address.",
                ),
            };
            form_page(
                t,
                StatusCode::OK,
                "change_form",
                &json!({"action": action, "token": token.expose(), "return_to": back,
                        "title": title, "button": button, "note": note}),
            )
        }
        (Ok(None), _) => page(t, StatusCode::BAD_REQUEST, INCOMPLETE),
        (Ok(Some(ChangeLink::Unknown)), _) => page(t, StatusCode::NOT_FOUND, UNKNOWN),
        (Ok(Some(_)), _) => page(t, StatusCode::GONE, GONE),
        (Err(e), _) => {
            tracing::warn!(error = %e, "email change page could not reach the database");
            page(t, StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN)
        }
    })
}

/// `POST /confirm-email-change` and `POST /cancel-email-change`: the button. The token's own
/// role decides what it does (a cancel token posted to the confirm page still only cancels).
pub async fn use_link(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let form = if is_form(&parts) {
        read_form(&parts, body, state.settings.http.max_body_bytes).await?
    } else {
        Body::new()
    };
    let get = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let back = state.settings.return_to.allowed(Some(&get("return_to")));
    let t = &state.templates;
    let Ok(token) = Token::parse(&get("token")) else {
        return Ok(page(t, StatusCode::BAD_REQUEST, INCOMPLETE));
    };
    let hooks = &state.settings.webhooks;
    let used = store::use_change_link(&state.pool, &token.hash(), hooks, state.clock.now()).await;
    state.relay_wake.notify_one();
    Ok(match used {
        Ok(ChangeUse::Committed { user_id, .. }) => {
            tracing::info!(%user_id, "email changed");
            continuing_page(t, StatusCode::OK, CHANGED, back.as_deref())
        }
        Ok(ChangeUse::Waiting) => continuing_page(t, StatusCode::OK, WAITING, back.as_deref()),
        Ok(ChangeUse::Cancelled) => continuing_page(t, StatusCode::OK, CANCELLED, back.as_deref()),
        Ok(ChangeUse::Taken) => page(t, StatusCode::CONFLICT, TAKEN),
        Ok(ChangeUse::Spent | ChangeUse::Expired) => page(t, StatusCode::GONE, GONE),
        Ok(ChangeUse::Unknown) => page(t, StatusCode::NOT_FOUND, UNKNOWN),
        Err(e) => {
            tracing::warn!(error = %e, "email change could not be applied");
            page(t, StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN)
        }
    })
}

const INCOMPLETE: Page = Page {
    title: "This link is incomplete",
    message: "The link is missing its token or was cut off.",
    next_step: "Copy the whole link from the email into your browser.",
};

const CHANGED: Page = Page {
    title: "Your email address was changed",
    message: "Your account now uses the new address, and it is confirmed.",
    next_step: "Sign in with the new address from now on.",
};

const WAITING: Page = Page {
    title: "Thank you: one more confirmation",
    message: "This address is confirmed. The other address must confirm the change too.",
    next_step: "Open the link in the email we sent to the other address.",
};

const CANCELLED: Page = Page {
    title: "The change was cancelled",
    message: "Your account keeps its address.",
    next_step: "If you did not ask for the change, change your password now.",
};

const TAKEN: Page = Page {
    title: "That address is taken",
    message: "Another account confirmed this address after the change was asked for, so it cannot be yours.",
    next_step: "Your account keeps its address. Ask for a change to another address.",
};

const GONE: Page = Page {
    title: "This link no longer works",
    message: "The change was already confirmed or cancelled, or it has expired.",
    next_step: "Ask for a new change if you still need one.",
};

const UNKNOWN: Page = Page {
    title: "This link is not valid",
    message: "We do not know this link. Only the newest change request's links work.",
    next_step: "Use the link in the most recent email.",
};

const TRY_AGAIN: Page = Page {
    title: "Please try again in a moment",
    message: "We could not check your link just now.",
    next_step: "Reload this page in a minute; the link still works.",
};
