//! `POST /v1/signups`: validates the person, hashes the password (bounded pool) and stores
//! the user with the outbox row of their verification email, in one statement's transaction.
//! Never waits for RabbitMQ or SES. An address or name held by an *unverified* user is taken
//! over (`mailroom::policy::signups`); one held by a verified user is a 409 naming each one
//! taken. With an `Idempotency-Key`, a repeat gets the first answer and does nothing.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::domain::{EmailAddress, Locale, Password, UserName};
use mailroom::job::{Job, JobKind};
use mailroom::metrics::KindLabel;
use mailroom::store::{self, HeldSignup, NewUser, Signup, SignupOutcome};

use crate::error::ApiError;
use crate::fields::{self, Fields};
use crate::idempotency::{self, Begin};
use crate::request::read_json;
use crate::response::{Resp, raw_json};
use crate::routes::caller_of;
use crate::state::AppState;

pub async fn create(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let body = read_json(&parts, body, state.settings.http.max_body_bytes).await?;
    let reservation = match idempotency::begin(state, &parts, "POST /v1/signups", &body).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Run(r) => r,
    };
    let mut f = Fields::new(
        body,
        &[
            "name",
            "email",
            "password",
            "locale",
            "reference",
            "method",
            "return_to",
        ],
    );
    let name = f.required("name", UserName::parse);
    let email = f.required("email", EmailAddress::parse);
    let password = f.optional("password", Password::parse);
    let locale = f.optional("locale", Locale::parse);
    let reference = f.optional("reference", fields::reference);
    let codes_on = state.settings.codes.key.is_some();
    let method = f.optional("method", fields::method(codes_on));
    let return_to = f.optional("return_to", fields::return_to(&state.settings.return_to));
    f.finish()?;
    let method = method.flatten().unwrap_or_default();
    let return_to = return_to.flatten();
    let (name, email, password, locale, reference) = (
        name.expect("checked"),
        email.expect("checked"),
        password.flatten(),
        locale.flatten().unwrap_or_else(Locale::default_locale),
        reference.flatten(),
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
    )
    .from_caller(caller_of(&parts).name(), reference)
    .with_method(method)
    .with_return_to(return_to);
    let signup = Signup {
        user: NewUser {
            name,
            email,
            hashed_password,
            locale,
        },
        job,
        idempotency: reservation.as_ref().map(|r| r.record().clone()),
    };
    let (user_id, job_id) = store_signup(state, &signup).await?;
    // Stored with the work: the key keeps its answer.
    if let Some(r) = reservation {
        r.completed();
    }
    // Committed: the job is safe in the outbox whatever happens next. Wake the relay so it
    // goes out now rather than at the next poll.
    if job_id.is_some() {
        state.relay_wake.notify_one();
    }
    state
        .metrics
        .accepted
        .get_or_create(&KindLabel {
            kind: JobKind::Verification.as_str(),
        })
        .inc();
    // Debug, not info: one line per signup costs more than the rest of the request at load.
    tracing::debug!(%user_id, ?job_id, "signup accepted");
    Ok(raw_json(
        StatusCode::ACCEPTED,
        store::signup_answer(user_id, job_id),
    ))
}

/// Writes the user and its job, batched with the signups arriving at the same time
/// (`mailroom::batch`): still one statement per user and job, so both or neither are written.
/// A signup whose name or address is held goes the slow way, in a transaction of its own
/// (`store::sign_up_over_holders`). The user's id and the job's (None: a takeover over the
/// address's limits, nothing sent).
async fn store_signup(
    state: &AppState,
    signup: &Signup,
) -> Result<(uuid::Uuid, Option<uuid::Uuid>), ApiError> {
    match state.signups.call(signup.clone()).await {
        Ok(SignupOutcome::Created) => return Ok((signup.job.user_id, Some(signup.job.job_id))),
        Ok(SignupOutcome::Held) => {}
        Err(e) => return Err(e.into()),
    }
    let limits = state.settings.address_limits;
    // A holder that vanishes between the batch and the lock makes the slow path insert, which
    // a concurrent batch may beat: then look again (a unique violation means someone holds it
    // now).
    for _ in 0..3 {
        match store::sign_up_over_holders(&state.pool, signup, limits, state.clock.now()).await {
            Ok(HeldSignup::Created) => {
                return Ok((signup.job.user_id, Some(signup.job.job_id)));
            }
            Ok(HeldSignup::TakenOver { user_id, job_id }) => return Ok((user_id, job_id)),
            Ok(HeldSignup::Taken { name, email }) => return Err(ApiError::taken(name, email)),
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable(
        "the signup was not stored; try again".into(),
    ))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "23505")
}
