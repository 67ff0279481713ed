//! `POST /v1/logins`: checks a password for the calling service. Every failure answers
//! alike after the same argon2 work; a locked address answers 429 before any hashing.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::{EmailAddress, Password, Verified};
use mailroom::store::{self, LoginSlot, LoginUser};
use serde_json::json;

use crate::error::ApiError;
use crate::fields::Fields;
use crate::hashing::HashError;
use crate::request::read_json;
use crate::response::{Resp, json_response};
use crate::state::AppState;

/// Checks a login for the calling service. Every failure (unknown address, no password, wrong
/// password) gets the same 401 body after the same argon2 work, and counts towards the
/// address's lockout; a locked address gets 429 before any hashing.
pub async fn check(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    // Taken and checked like on every API-key POST, but a login is never replayed: its answer
    // must be the password check of now, and a login changes nothing a retry could double.
    crate::idempotency::check_header(&parts)?;
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let mut f = Fields::new(body, &["email", "password", "client_ip"]);
    let email = f.required("email", EmailAddress::parse);
    // Over 128 characters: 422 here, never hashed.
    let password = f.required("password", Password::parse_presented);
    let client = f.optional("client_ip", parse_client_ip);
    f.finish()?;
    let (email, password) = (email.expect("checked"), password.expect("checked"));
    let client = client.flatten();
    let now = state.clock.now();
    let reserved = reserve(state, &email, client, now).await?;
    // From here until its outcome is written, an attempt that ends any other way (the
    // request times out, a database error) gives its reservation up instead of leaving it
    // to count as a failure.
    let mut reservation = Reservation {
        pool: state.pool.clone(),
        id: reserved,
        outcome_written: false,
    };
    let user = store::login_user(&state.pool, &email).await?;
    let checked = verify(state, reserved, user.as_ref(), password.clone()).await?;
    let user = match (user, checked) {
        (Some(u), Verified::Yes | Verified::YesButStale) => u,
        (u, _) => {
            let reason = match &u {
                None => "unknown_address",
                Some(u) if u.hashed_password.is_none() => "no_password",
                Some(_) => "wrong_password",
            };
            store::finish_login(&state.pool, reserved, Some(reason)).await?;
            reservation.outcome_written = true;
            mailroom::metrics::count(&state.metrics.logins, "invalid");
            return Err(ApiError::InvalidCredentials);
        }
    };
    store::finish_login(&state.pool, reserved, None).await?;
    reservation.outcome_written = true;
    store::clear_client_failures(&state.pool, &email, client).await?;
    if checked == Verified::YesButStale {
        upgrade_hash(state, &user, password).await;
    }
    mailroom::metrics::count(&state.metrics.logins, "ok");
    Ok(json_response(
        StatusCode::OK,
        &json!({"user_id": user.id, "email": user.email, "email_verified": user.email_verified}),
    ))
}

/// An attempt's reserved row until its outcome is written. Dropped before that, it deletes
/// the row in the background. What it cannot delete (the database is down) stops counting
/// after `LoginRules::RESERVATION_TTL` anyway.
pub(super) struct Reservation {
    pub(super) pool: sqlx::PgPool,
    pub(super) id: i64,
    pub(super) outcome_written: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.outcome_written {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (pool, id) = (self.pool.clone(), self.id);
            runtime.spawn(async move {
                let _ = store::finish_login(&pool, id, None).await;
            });
        }
    }
}

/// Reserves the attempt before hashing, so that concurrent guesses cannot all pass the
/// check; a locked address is 429 with the seconds until it is let in again.
pub(super) async fn reserve(
    state: &AppState,
    email: &EmailAddress,
    client: Option<IpAddr>,
    now: DateTime<Utc>,
) -> Result<i64, ApiError> {
    let rules = state.settings.logins.rules();
    match store::begin_login(&state.pool, email, client, rules, now).await? {
        LoginSlot::Reserved(id) => Ok(id),
        LoginSlot::Locked(until) => {
            mailroom::metrics::count(&state.metrics.logins, "locked");
            // Rounded up: a client that waits exactly this long is let in.
            let secs = (until - now).num_milliseconds().max(1000) as u64;
            Err(ApiError::TooManyAttempts(secs.div_ceil(1000)))
        }
    }
}

/// `client_ip`: an IPv4 or IPv6 address, as the calling service saw its user connect.
pub(super) fn parse_client_ip(s: &str) -> Result<IpAddr, mailroom::domain::Invalid> {
    s.parse().map_err(|_| {
        mailroom::domain::Invalid("must be an IPv4 or IPv6 address, like 203.0.113.7".to_owned())
    })
}

/// Checks the password against the user's hash, or does the same work against nothing when
/// there is none (timing must not tell a missing user). A check that could not run is not a
/// failure of the person's: its reservation goes.
async fn verify(
    state: &AppState,
    reserved: i64,
    user: Option<&LoginUser>,
    presented: Password,
) -> Result<Verified, ApiError> {
    let phc = user.and_then(|u| u.hashed_password.clone());
    let checked = state
        .hashes
        .run(move || {
            Ok::<_, std::convert::Infallible>(match &phc {
                Some(h) => presented.check(h),
                None => {
                    presented.check_against_nothing();
                    Verified::No
                }
            })
        })
        .await;
    match checked {
        Ok(v) => {
            mailroom::metrics::count(&state.metrics.password_hashes, "done");
            Ok(v)
        }
        Err(e) => {
            let _ = store::finish_login(&state.pool, reserved, None).await;
            if matches!(e, HashError::Busy(_)) {
                mailroom::metrics::count(&state.metrics.logins, "busy");
                mailroom::metrics::count(&state.metrics.password_hashes, "refused");
                return Err(ApiError::Busy);
            }
            Err(e.into())
        }
    }
}

/// Re-hashes a password whose hash was made with older parameters. Best effort: the login
/// succeeds whether or not the upgrade can run now, and the next one tries again.
async fn upgrade_hash(state: &AppState, user: &LoginUser, password: Password) {
    let Some(old) = &user.hashed_password else {
        return;
    };
    match state.hash_password(password).await {
        Ok(new) => match store::upgrade_password_hash(&state.pool, user.id, old, &new).await {
            Ok(true) => {
                tracing::info!(user_id = %user.id, "password re-hashed with today's parameters")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not store the re-hash"),
        },
        Err(e) => tracing::debug!(error = %e, "re-hash skipped; next login tries again"),
    }
}
