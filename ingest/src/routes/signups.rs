//! `POST /v1/signups`: validates the person, hashes the password (bounded pool) and stores
//! the user with the outbox row of their verification email, in one statement's transaction.
//! Never waits for RabbitMQ or SES. A taken name or address is a 409 naming each one taken.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::{EmailAddress, Locale, Password, UserName};
use mailroom::job::{Job, JobKind};
use mailroom::metrics::KindLabel;
use mailroom::store::{self, CreateUserError, NewUser, SignupOutcome};
use serde_json::json;

use crate::error::ApiError;
use crate::fields::Fields;
use crate::request::read_json;
use crate::response::{Resp, json_response};
use crate::state::AppState;

pub async fn create(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let mut f = Fields::new(body, &["name", "email", "password", "locale"]);
    let name = f.required("name", UserName::parse);
    let email = f.required("email", EmailAddress::parse);
    let password = f.optional("password", Password::parse);
    let locale = f.optional("locale", Locale::parse);
    f.finish()?;
    let (name, email, password, locale) = (
        name.expect("checked"),
        email.expect("checked"),
        password.flatten(),
        locale.flatten().unwrap_or_else(Locale::default_locale),
    );
    // argon2 takes tens of milliseconds of CPU and ~19 MiB: through the bounded pool, never on
    // the async workers.
    let hashed_password = match password {
        Some(p) => Some(state.hash_password(p).await?),
        None => None,
    };
    let job = Job::new(
        JobKind::Verification,
        // Time-ordered (UUIDv7), like job ids: appends to the primary key's index. It reveals
        // the signup's millisecond, which `GET /v1/users` shows anyway.
        uuid::Uuid::now_v7(),
        locale.clone(),
        state.clock.now(),
    );
    let user = NewUser {
        name,
        email,
        hashed_password,
        locale,
    };
    store_signup(state, user, job.clone()).await?;
    // Committed: the job is safe in the outbox whatever happens next. Wake the relay so it
    // goes out now rather than at the next poll.
    state.relay_wake.notify_one();
    state
        .metrics
        .accepted
        .get_or_create(&KindLabel {
            kind: JobKind::Verification.as_str(),
        })
        .inc();
    // Debug, not info: one line per signup costs more than the rest of the request at load.
    tracing::debug!(user_id = %job.user_id, job_id = %job.job_id, "signup accepted");
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"user_id": job.user_id, "job_id": job.job_id}),
    ))
}

/// Writes the user and its job, batched with the signups arriving at the same time
/// (`mailroom::batch`): still one statement per user and job, so both or neither are written.
async fn store_signup(state: &AppState, user: NewUser, job: Job) -> Result<(), ApiError> {
    let email = user.email.clone();
    match state.signups.call((user, job)).await {
        Ok(SignupOutcome::Created) => Ok(()),
        // The store reports a taken name before a taken address: look the address up too, so
        // that the answer names both when both are taken.
        Ok(SignupOutcome::NameTaken) => {
            Err(ApiError::taken(true, address_taken(state, &email).await))
        }
        Ok(SignupOutcome::EmailTaken) => Err(CreateUserError::EmailTaken.into()),
        Ok(SignupOutcome::NotWritten) => Err(ApiError::Unavailable(
            "the signup was not stored; try again".into(),
        )),
        Err(e) => Err(CreateUserError::Db(e).into()),
    }
}

/// Whether a user has `email`. Only refines a 409 already decided: if the database cannot say
/// now, the answer names the name alone, as it would have.
async fn address_taken(state: &AppState, email: &EmailAddress) -> bool {
    match store::find_user_by_email(&state.pool, email).await {
        Ok(user) => user.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "could not check whether the address is taken too");
            false
        }
    }
}
