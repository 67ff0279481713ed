//! `POST /v1/verifications/resend` and `POST /v1/password-resets`: the same 202 whatever
//! became of the request (known, unknown, verified, over the limit, suppressed), recorded in
//! `email_requests`. Never reveals whether an address exists.

use super::*;

impl App {
    /// Resend-verification and password-reset requests. The answer is the same 202 whether the
    /// address is known, unknown, verified or over its limit, so it reveals nothing; what
    /// really happened is recorded in `email_requests`.
    pub(super) async fn request_email(
        &self,
        body: Map<String, Value>,
        kind: JobKind,
    ) -> Result<Resp, ApiError> {
        let mut f = Fields::new(body, &["email"]);
        let email = f.required("email", EmailAddress::parse);
        f.finish()?;
        let email = email.expect("checked");
        let (outcome, job) =
            store::request_email(&self.pool, &email, kind, self.limits, self.clock.now()).await?;
        if job.is_some() {
            self.relay_wake.notify_one();
        }
        self.metrics
            .accepted
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
        self.metrics
            .requests_by_outcome
            .get_or_create(&crate::KindOutcomeLabels {
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
        Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"status": "accepted"}),
        ))
    }
}
