//! Verification links: `POST /v1/verifications` (JSON, for services), and `/verify-email` —
//! GET verifies (`VERIFY_LINK_MODE=open`) or shows a confirm button (`click`), POST is that
//! button, HEAD never consumes. The pages never answer JSON or a 500.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::{Code, CodePurpose, EmailAddress, Token};
use mailroom::store::{self, CodeCheck, TokenKind, TokenState, Verification};
use serde_json::{Value, json};

use crate::config::VerifyLinkMode;
use crate::error::{ApiError, LinkRefused};
use crate::fields::Fields;
use crate::request::{Body, is_form, query_param, read_form, read_json};
use crate::response::{Page, Resp, continuing_page, form_page, html_response, json_response};
use crate::state::AppState;

/// `POST /v1/verifications`: consumes the token, or checks the `email` and `code` the person
/// typed; answers JSON.
pub async fn verify(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    if !body.contains_key("token") && (body.contains_key("code") || body.contains_key("email")) {
        // A link's token is its own proof; a code is six digits, guessed at by anyone who may
        // ask: only the calling service (with its API key) relays what a person typed.
        state.settings.api_keys.authorize(&parts)?;
        return verify_code(state, body).await;
    }
    let mut f = Fields::new(body, &["token"]);
    let token = f.required("token", Token::parse);
    f.finish()?;
    let token = token.expect("checked");
    let verification = consume(state, &token).await?;
    answer(verification, |why| ApiError::link("verification", why))
}

/// `POST /v1/verifications` with `{email, code}`: the code is checked (taking one of its
/// attempts) and, when right, consumed with the verification in one statement.
async fn verify_code(state: &AppState, body: Body) -> Result<Resp, ApiError> {
    let codes = &state.settings.codes;
    let mut f = Fields::new(body, &["email", "code"]);
    let email = f.required("email", EmailAddress::parse);
    let code = f.required("code", |s| Code::parse(s, codes.digits));
    f.finish()?;
    let (email, code) = (email.expect("checked"), code.expect("checked"));
    let Some(key) = &codes.key else {
        return Err(ApiError::codes_off("code"));
    };
    let guessing = store::Guessing {
        key,
        max_attempts: codes.max_attempts,
        window: codes.ttl,
    };
    let now = state.clock.now();
    let purpose = CodePurpose::Verification;
    let check = store::check_code(&state.pool, purpose, &email, &code, guessing, now).await?;
    let (user_id, job_id) = match check {
        CodeCheck::Matched {
            user_id, job_id, ..
        } => (user_id, job_id),
        CodeCheck::Refused(answer) => return Err(ApiError::code_refused(answer)),
    };
    let hooks = &state.settings.webhooks;
    let verification = store::verify_with_code(&state.pool, user_id, job_id, hooks, now).await?;
    if matches!(verification, Verification::Verified { .. }) {
        state.relay_wake.notify_one(); // the user.verified event
    }
    answer(verification, |_| {
        ApiError::code_refused(mailroom::policy::codes::Answer::Used)
    })
}

/// The JSON answer to a verification, by link or code; `refused` says how a refusal reads.
fn answer(
    verification: Verification,
    refused: impl FnOnce(LinkRefused) -> ApiError,
) -> Result<Resp, ApiError> {
    match verification {
        Verification::Verified { user_id, email } => {
            tracing::info!(%user_id, "email verified");
            Ok(json_response(
                StatusCode::OK,
                &json!({"user_id": user_id, "email": email}),
            ))
        }
        Verification::Expired => Err(refused(LinkRefused::Expired)),
        Verification::Used => Err(refused(LinkRefused::Used)),
        Verification::Unknown => Err(refused(LinkRefused::Unknown)),
    }
}

/// `GET` (and `HEAD`) of the link in the email.
pub async fn open_link(state: &AppState, parts: Parts) -> Result<Resp, ApiError> {
    // HEAD never consumes: link scanners and previews send it, people do not.
    if parts.method == http::Method::HEAD {
        return Ok(head(state, &parts).await);
    }
    let token = query_param(&parts, "token");
    // Checked again here: a link can be edited, and only an allowed address gets a button.
    let back = state
        .settings
        .return_to
        .allowed(query_param(&parts, "return_to").as_deref());
    Ok(match state.settings.verify_link_mode {
        VerifyLinkMode::Click => confirm_page(state, token, back).await,
        VerifyLinkMode::Open => result_page(state, token, back).await,
    })
}

/// `POST /verify-email`: the confirm page's button (and any form post with a token).
pub async fn confirm_link(
    state: &AppState,
    parts: Parts,
    body: Incoming,
) -> Result<Resp, ApiError> {
    let form = if is_form(&parts) {
        read_form(&parts, body, state.settings.http.max_body_bytes).await?
    } else {
        Body::new()
    };
    let token = form.get("token").and_then(Value::as_str).map(str::to_owned);
    let back = (state.settings.return_to).allowed(form.get("return_to").and_then(Value::as_str));
    Ok(result_page(state, token, back).await)
}

/// Consumes a verification token; a verified address has its webhook event in the outbox,
/// which the relay is woken for.
async fn consume(state: &AppState, token: &Token) -> Result<Verification, sqlx::Error> {
    let verification = store::consume_verification_token(
        &state.pool,
        &token.hash(),
        &state.settings.webhooks,
        state.clock.now(),
    )
    .await?;
    if matches!(verification, Verification::Verified { .. }) {
        state.relay_wake.notify_one(); // the user.verified event
    }
    Ok(verification)
}

/// What the token is now, without consuming it.
async fn peek(state: &AppState, token: &Token) -> Result<TokenState, sqlx::Error> {
    store::token_state(
        &state.pool,
        TokenKind::Verification,
        &token.hash(),
        state.clock.now(),
    )
    .await
}

/// HEAD of a verification link: the status the link would get, without consuming it.
async fn head(state: &AppState, parts: &Parts) -> Resp {
    let status = match query_param(parts, "token").map(|t| Token::parse(&t)) {
        None | Some(Err(_)) => StatusCode::BAD_REQUEST,
        Some(Ok(t)) => match peek(state, &t).await {
            Ok(TokenState::Valid) => StatusCode::OK,
            Ok(TokenState::Used | TokenState::Expired) => StatusCode::GONE,
            Ok(TokenState::Unknown) => StatusCode::NOT_FOUND,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
    };
    html_response(status, String::new())
}

/// `VERIFY_LINK_MODE=click`: the link opens a page with a button; only its POST verifies.
/// Reading the token here never consumes it.
async fn confirm_page(state: &AppState, token: Option<String>, back: Option<String>) -> Resp {
    let Some(token) = token.and_then(|t| Token::parse(&t).ok()) else {
        return result_page(state, None, back).await;
    };
    match peek(state, &token).await {
        Ok(TokenState::Valid) => form_page(
            &state.templates,
            StatusCode::OK,
            "verify_form",
            &json!({"action": "/verify-email", "token": token.expose(), "return_to": back}),
        ),
        // Anything else: the same page a click would give, which consumes nothing here.
        _ => result_page(state, Some(token.expose().to_owned()), back).await,
    }
}

/// The page a person sees after following (or, in click mode, confirming) the link in the
/// email. Always a page, never a JSON error or a 500: a database problem gets a "try again"
/// page. `back`: an allowed `return_to`, offered as "Continue" once the address is confirmed.
async fn result_page(state: &AppState, token: Option<String>, back: Option<String>) -> Resp {
    let (status, words) = match token.as_deref().map(Token::parse) {
        None | Some(Err(_)) => (StatusCode::BAD_REQUEST, INCOMPLETE),
        Some(Ok(t)) => match consume(state, &t).await {
            Ok(Verification::Verified { .. }) => (StatusCode::OK, VERIFIED),
            Ok(Verification::Used) => (StatusCode::GONE, USED),
            Ok(Verification::Expired) => (StatusCode::GONE, EXPIRED),
            Ok(Verification::Unknown) => (StatusCode::NOT_FOUND, UNKNOWN),
            Err(e) => {
                tracing::warn!(error = %e, "verification page could not reach the database");
                (StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN)
            }
        },
    };
    // Onwards only when there is somewhere to go on to: confirmed now, or before.
    let back = back.filter(|_| matches!(status, StatusCode::OK | StatusCode::GONE));
    continuing_page(&state.templates, status, words, back.as_deref())
}

const INCOMPLETE: Page = Page {
    title: "This link is incomplete",
    message: "The verification link is missing its token or was cut off.",
    next_step: "Copy the whole link from the email into your browser, or ask for a new email.",
};

const VERIFIED: Page = Page {
    title: "Your email address is confirmed",
    message: "Thank you: your address is verified.",
    next_step: "You can close this page and sign in.",
};

const USED: Page = Page {
    title: "This link was already used",
    message: "Your address was confirmed with this link before.",
    next_step: "Nothing else to do: you can sign in.",
};

const EXPIRED: Page = Page {
    title: "This link has expired",
    message: "Verification links work for a limited time.",
    next_step: "Sign in or use the app to ask for a new verification email.",
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
