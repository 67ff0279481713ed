//! Password resets as the person sees them: `GET /reset-password`, the page the reset email
//! links to (which only looks at the token), its form, and `POST /v1/password-resets/confirm`
//! (JSON, or the form's post, which answers pages), which checks the token before hashing and
//! consumes it atomically.

use http::request::Parts;
use http::{StatusCode, header};
use hyper::body::Incoming;
use mailroom::domain::{Code, CodePurpose, EmailAddress, Password, Token};
use mailroom::store::{self, CodeCheck, PasswordReset, TokenKind, TokenState};
use serde_json::{Value, json};

use crate::error::{ApiError, LinkRefused};
use crate::fields::Fields;
use crate::request::{Body, is_form, query_param, read_form, read_json};
use crate::response::{Page, Resp, continuing_page, form_page, json_response, page};
use crate::state::AppState;

/// `POST /v1/password-resets/confirm`: JSON answers JSON, the reset form's post answers pages.
pub async fn confirm(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let limit = state.settings.http.max_body_bytes;
    if is_form(&parts) {
        let form = read_form(&parts, body, limit).await?;
        Ok(confirm_form(state, form).await)
    } else {
        let body = read_json(&parts, body, limit).await?;
        confirm_json(state, &parts, body).await
    }
}

/// `GET /reset-password`: the page the reset email links to. It only looks at the token, never
/// consumes it: mail scanners open links, and a person must still be able to use theirs
/// afterwards.
pub async fn open_link(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    let token = query_param(&parts, "token").and_then(|t| Token::parse(&t).ok());
    let back = state
        .settings
        .return_to
        .allowed(query_param(&parts, "return_to").as_deref());
    let Some(token) = token else {
        return Ok(show(state, StatusCode::BAD_REQUEST, INCOMPLETE));
    };
    let now = state.clock.now();
    Ok(
        match store::token_state(&state.pool, TokenKind::Reset, &token.hash(), now).await {
            Ok(TokenState::Valid) => reset_form(state, StatusCode::OK, &token, back, None),
            Ok(TokenState::Used) => show(state, StatusCode::GONE, USED),
            Ok(TokenState::Expired) => show(state, StatusCode::GONE, EXPIRED),
            Ok(TokenState::Unknown) => show(state, StatusCode::NOT_FOUND, UNKNOWN),
            Err(e) => {
                tracing::warn!(error = %e, "reset page could not reach the database");
                show(state, StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN)
            }
        },
    )
}

async fn confirm_json(state: &AppState, parts: &Parts, body: Body) -> Result<Resp, ApiError> {
    if !body.contains_key("token") && (body.contains_key("code") || body.contains_key("email")) {
        // As for verification codes: only the calling service relays a code.
        state.settings.api_keys.authorize(parts)?;
        return confirm_code(state, body).await;
    }
    let mut f = Fields::new(body, &["token", "password"]);
    let token = f.required("token", Token::parse);
    let password = f.required("password", Password::parse);
    f.finish()?;
    match reset(state, &token.expect("checked"), password.expect("checked")).await? {
        PasswordReset::Changed { user_id, .. } => {
            Ok(json_response(StatusCode::OK, &json!({"user_id": user_id})))
        }
        PasswordReset::Expired => Err(ApiError::link("reset", LinkRefused::Expired)),
        PasswordReset::Used => Err(ApiError::link("reset", LinkRefused::Used)),
        PasswordReset::Unknown => Err(ApiError::link("reset", LinkRefused::Unknown)),
    }
}

/// `{email, code, password}`: the password's rules first (a weak one costs no attempt), then
/// the code (one attempt), and only a right code costs an argon2 hash.
async fn confirm_code(state: &AppState, body: Body) -> Result<Resp, ApiError> {
    let codes = &state.settings.codes;
    let mut f = Fields::new(body, &["email", "code", "password"]);
    let email = f.required("email", EmailAddress::parse);
    let code = f.required("code", |s| Code::parse(s, codes.digits));
    let password = f.required("password", Password::parse);
    f.finish()?;
    let (email, code, password) = (
        email.expect("checked"),
        code.expect("checked"),
        password.expect("checked"),
    );
    let Some(key) = &codes.key else {
        return Err(ApiError::codes_off("code"));
    };
    let guessing = store::Guessing {
        key,
        max_attempts: codes.max_attempts,
        window: codes.ttl,
    };
    let now = state.clock.now();
    let check = store::check_code(
        &state.pool,
        CodePurpose::Reset,
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
        CodeCheck::Refused(answer) => return Err(ApiError::code_refused(answer)),
    };
    let hash = state.hash_password(password).await?;
    // Consuming checks the code again, atomically: another use may have got there meanwhile.
    let r = store::reset_password_with_code(
        &state.pool,
        user_id,
        job_id,
        &hash,
        &state.settings.webhooks,
        state.clock.now(),
    )
    .await?;
    match r {
        PasswordReset::Changed { user_id, .. } => {
            state.relay_wake.notify_one();
            tracing::info!(%user_id, "password changed by code");
            Ok(json_response(StatusCode::OK, &json!({"user_id": user_id})))
        }
        _ => Err(ApiError::code_refused(
            mailroom::policy::codes::Answer::Used,
        )),
    }
}

/// The reset form's post: answers pages, never JSON. A weak password gets the form again,
/// with what is wrong (422).
async fn confirm_form(state: &AppState, form: Body) -> Resp {
    let get = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let back = state.settings.return_to.allowed(Some(&get("return_to")));
    let Ok(token) = Token::parse(&get("token")) else {
        return show(state, StatusCode::BAD_REQUEST, INCOMPLETE);
    };
    let password = match Password::parse(&get("password")) {
        Ok(p) => p,
        Err(e) => {
            let error = format!("The password {e}.");
            return reset_form(
                state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &token,
                back,
                Some(&error),
            );
        }
    };
    match reset(state, &token, password).await {
        Ok(PasswordReset::Changed { .. }) => {
            continuing_page(&state.templates, StatusCode::OK, CHANGED, back.as_deref())
        }
        Ok(PasswordReset::Used) => show(state, StatusCode::GONE, USED),
        Ok(PasswordReset::Expired) => show(state, StatusCode::GONE, EXPIRED),
        Ok(PasswordReset::Unknown) => show(state, StatusCode::NOT_FOUND, UNKNOWN),
        Err(e) => {
            tracing::warn!(error = %e, "reset form failed");
            let mut resp = show(state, e.status(), NOT_CHANGED);
            if matches!(e, ApiError::Busy) {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, "1".parse().expect("static"));
            }
            resp
        }
    }
}

/// Checks the token, hashes the new password and consumes the token. Returns what happened,
/// for the JSON and the HTML form alike.
async fn reset(
    state: &AppState,
    token: &Token,
    password: Password,
) -> Result<PasswordReset, ApiError> {
    // The token first: it is one indexed read, and a made-up, used or expired token must not
    // cost an argon2 hash (anyone can post here, without an API key).
    let now = state.clock.now();
    match store::token_state(&state.pool, TokenKind::Reset, &token.hash(), now).await? {
        TokenState::Valid => {}
        TokenState::Expired => return Ok(PasswordReset::Expired),
        TokenState::Used => return Ok(PasswordReset::Used),
        TokenState::Unknown => return Ok(PasswordReset::Unknown),
    }
    // One confirmation per token at a time: only one of several can succeed, so only one
    // costs an argon2 hash; the others are told to try again (and then find it used).
    let key = token.hash();
    let Some(_admitted) = state.resets_in_flight.admit(key.as_str()) else {
        return Err(ApiError::Unavailable(
            "this reset link is being used right now; try again in a moment".into(),
        ));
    };
    let hash = state.hash_password(password).await?;
    // Consuming checks the token again, atomically: it may have been used meanwhile.
    let r = store::reset_password(
        &state.pool,
        &token.hash(),
        &hash,
        &state.settings.webhooks,
        state.clock.now(),
    )
    .await?;
    if let PasswordReset::Changed { user_id, .. } = &r {
        state.relay_wake.notify_one();
        tracing::info!(%user_id, "password changed");
    }
    Ok(r)
}

/// The form that sets a new password, with what was wrong with the last one, if anything.
fn reset_form(
    state: &AppState,
    status: StatusCode,
    token: &Token,
    back: Option<String>,
    error: Option<&str>,
) -> Resp {
    form_page(
        &state.templates,
        status,
        "reset_form",
        &json!({
            "action": "/v1/password-resets/confirm",
            "token": token.expose(),
            "min_length": 8,
            "max_length": 128,
            "error": error.unwrap_or(""),
            "return_to": back,
        }),
    )
}

fn show(state: &AppState, status: StatusCode, words: Page) -> Resp {
    page(&state.templates, status, words)
}

const INCOMPLETE: Page = Page {
    title: "This link is incomplete",
    message: "The reset link is missing its token or was cut off.",
    next_step: "Copy the whole link from the email into your browser, or ask for a new email.",
};

const CHANGED: Page = Page {
    title: "Your password was changed",
    message: "You can now sign in with your new password.",
    next_step: "We also sent you an email about the change.",
};

const USED: Page = Page {
    title: "This link was already used",
    message: "Your password was changed with this link before.",
    next_step: "If you need to change it again, ask for a new reset email.",
};

const EXPIRED: Page = Page {
    title: "This link has expired",
    message: "Reset links work for a limited time.",
    next_step: "Ask for a new reset email.",
};

const UNKNOWN: Page = Page {
    title: "This link is not valid",
    message: "We do not know this link. If you asked for several emails, only the newest link works.",
    next_step: "Use the link in the most recent email, or ask for a new one.",
};

const TRY_AGAIN: Page = Page {
    title: "Please try again in a moment",
    message: "We could not check your link just now.",
    next_step: "Reload this page in a minute; the link still works.",
};

const NOT_CHANGED: Page = Page {
    title: "Please try again in a moment",
    message: "We could not change your password just now.",
    next_step: "Go back and submit the form again in a minute; the link still works.",
};
