//! `POST /v1/signups`: validates the person, hashes the password (bounded pool) and
//! stores the user with the outbox row of their verification email, in one statement's
//! transaction. Never waits for RabbitMQ or SES.

use super::*;
use mailroom::store::CreateUserError;
use mailroom::store::SignupOutcome;

impl App {
    pub(super) async fn signup(&self, body: Map<String, Value>) -> Result<Resp, ApiError> {
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
        // argon2 takes tens of milliseconds of CPU and ~19 MiB: through the bounded pool, never
        // on the async workers.
        let hashed_password = match password {
            Some(p) => Some(self.hash_password(p).await?),
            None => None,
        };
        let job = Job::new(
            JobKind::Verification,
            // Time-ordered (UUIDv7), like job ids: appends to the primary key's index. It
            // reveals the signup's millisecond, which `GET /v1/users` shows anyway.
            uuid::Uuid::now_v7(),
            locale.clone(),
            self.clock.now(),
        );
        let user = NewUser {
            name,
            email,
            hashed_password,
            locale,
        };
        // Batched with the signups arriving at the same time (mailroom::batch): still one
        // statement per user and job, so both or neither are written.
        match self.signups.call((user, job.clone())).await {
            Ok(SignupOutcome::Created) => {}
            Ok(SignupOutcome::NameTaken) => return Err(CreateUserError::NameTaken.into()),
            Ok(SignupOutcome::EmailTaken) => return Err(CreateUserError::EmailTaken.into()),
            Ok(SignupOutcome::NotWritten) => {
                return Err(ApiError::Unavailable(
                    "the signup was not stored; try again".into(),
                ));
            }
            Err(e) => return Err(CreateUserError::Db(e).into()),
        }
        // Committed: the job is safe in the outbox whatever happens next. Wake the relay so it
        // goes out now rather than at the next poll.
        self.relay_wake.notify_one();
        self.metrics
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
}
