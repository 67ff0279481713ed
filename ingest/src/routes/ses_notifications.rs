//! `POST /v1/ses/notifications`: SES feedback delivered by SNS. Verifies SNS's signature
//! (see [`crate::sns`]) before anything else, and answers 2xx only once the events are
//! committed, so that SNS retries what was not stored.

use super::*;

impl App {
    /// SES feedback delivered by SNS: verify, then record (or confirm a subscription). 2xx only
    /// once the events are committed, so that SNS retries anything not stored.
    pub(super) async fn ses_notification(
        &self,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Resp, ApiError> {
        let Some(sns) = &self.sns else {
            return Err(ApiError::NotFound {
                code: "not_found",
                message: "SES feedback is not enabled here (set SNS_TOPIC_ARNS)".into(),
            });
        };
        // SNS messages reach 256 KiB; that limit, not the API's.
        let bytes = read_limited(parts, body, SNS_MAX_BYTES).await?;
        let env: crate::sns::Envelope = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not an SNS message: {e}")))?;
        match sns.verify(&env).await {
            Ok(()) => {}
            // Not the sender's fault, and SNS retries only what is not a 4xx.
            Err(e @ crate::sns::Refused::Unreachable(_)) => {
                tracing::warn!(error = %e, "cannot check an SNS message now; SNS will retry");
                return Err(ApiError::Unavailable(e.to_string()));
            }
            Err(refused) => {
                tracing::warn!(topic = %env.topic_arn, sns_message_id = %env.message_id, reason = %refused, "SNS message refused");
                return Err(ApiError::Forbidden(format!("refused: {refused}")));
            }
        }
        match env.kind.as_str() {
            "SubscriptionConfirmation" => {
                let url = env.subscribe_url.as_deref().unwrap_or_default();
                sns.allowed(&env.topic_arn, url)
                    .map_err(|e| ApiError::Forbidden(format!("refused: {e}")))?;
                sns.confirm(url).await.map_err(|e| {
                    tracing::warn!(topic = %env.topic_arn, error = %e, "could not confirm the SNS subscription");
                    ApiError::Unavailable(format!("could not confirm the subscription: {e}"))
                })?;
                tracing::info!(topic = %env.topic_arn, "SNS subscription confirmed");
            }
            "UnsubscribeConfirmation" => {
                tracing::warn!(topic = %env.topic_arn, "SNS says this endpoint was unsubscribed");
            }
            _ => {
                let events =
                    crate::feedback::events(&env.message_id, &env.message, self.clock.now());
                let outcome = store::record_feedback(
                    &self.pool,
                    &events,
                    self.feedback_rules,
                    &self.webhooks,
                    self.clock.now(),
                )
                .await?;
                // Counted after the commit, and only what is new (SNS redelivers).
                if outcome.recorded > 0 {
                    for e in &events {
                        self.metrics
                            .ses_events
                            .get_or_create(&crate::TypeLabel {
                                r#type: e.kind.as_str().to_owned(),
                            })
                            .inc();
                    }
                }
                if !outcome.suppressed.is_empty() {
                    self.relay_wake.notify_one(); // their email.suppressed events
                }
                for (address, reason) in &outcome.suppressed {
                    tracing::info!(%address, reason = reason.as_str(), "address suppressed by SES feedback");
                }
            }
        }
        Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
    }
}
