//! `POST /v1/ses/notifications`: SES feedback delivered by SNS. Authenticated by SNS's
//! signature (see [`crate::sns`]), not an API key, and checked before anything else; answers
//! 2xx only once the events are committed, so that SNS retries what was not stored. SNS sends
//! text/plain, so the JSON content-type rule of the API does not apply.

use http::StatusCode;
use http::request::Parts;
use hyper::body::Incoming;
use mailroom::store;
use serde_json::json;

use crate::error::ApiError;
use crate::metrics::TypeLabel;
use crate::request::read_limited;
use crate::response::{Resp, json_response};
use crate::sns::{Envelope, Refused, Sns};
use crate::state::AppState;

/// Largest SNS message (SNS's own limit is 256 KiB), plus room for the envelope.
const SNS_MAX_BYTES: usize = 300 * 1024;

/// Verifies the message, then confirms a subscription or records the feedback.
pub async fn receive(state: &AppState, parts: Parts, body: Incoming) -> Result<Resp, ApiError> {
    let Some(sns) = &state.sns else {
        return Err(ApiError::NotFound {
            code: "not_found",
            message: "SES feedback is not enabled here (set SNS_TOPIC_ARNS)".into(),
        });
    };
    // SNS names the topic and the message type in headers: checked before a byte of the body
    // is read, so that an anonymous caller cannot make ingest buffer 300 KiB for nothing.
    let (topic, kind) = sns_headers(&parts, sns)?;
    // SNS messages reach 256 KiB; that limit, not the API's.
    let bytes = read_limited(&parts, body, SNS_MAX_BYTES).await?;
    let env: Envelope = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not an SNS message: {e}")))?;
    if env.topic_arn != topic || env.kind != kind {
        return Err(ApiError::Forbidden(
            "refused: the message's TopicArn and Type are not those of its x-amz-sns headers"
                .into(),
        ));
    }
    match sns.verify(&env, state.clock.now()).await {
        Ok(()) => {}
        // Not the sender's fault, and SNS retries only what is not a 4xx.
        Err(e @ Refused::Unreachable(_)) => {
            tracing::warn!(error = %e, "cannot check an SNS message now; SNS will retry");
            return Err(ApiError::Unavailable(e.to_string()));
        }
        Err(refused) => {
            tracing::warn!(topic = %env.topic_arn, sns_message_id = %env.message_id, reason = %refused, "SNS message refused");
            return Err(ApiError::Forbidden(format!("refused: {refused}")));
        }
    }
    match env.kind.as_str() {
        "SubscriptionConfirmation" => confirm_subscription(sns, &env).await?,
        "UnsubscribeConfirmation" => {
            tracing::warn!(topic = %env.topic_arn, "SNS says this endpoint was unsubscribed");
        }
        _ => record(state, &env).await?,
    }
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

/// The message types SNS posts.
const SNS_TYPES: [&str; 3] = [
    "Notification",
    "SubscriptionConfirmation",
    "UnsubscribeConfirmation",
];

/// `x-amz-sns-topic-arn` (one of `SNS_TOPIC_ARNS`) and `x-amz-sns-message-type` (a type SNS
/// sends), or 403.
fn sns_headers(parts: &Parts, sns: &Sns) -> Result<(String, String), ApiError> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (topic, kind) = (
        header("x-amz-sns-topic-arn"),
        header("x-amz-sns-message-type"),
    );
    if !sns.listed(&topic) {
        return Err(ApiError::Forbidden(format!(
            "refused: x-amz-sns-topic-arn '{topic}' is not one of SNS_TOPIC_ARNS"
        )));
    }
    if !SNS_TYPES.contains(&kind.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "refused: x-amz-sns-message-type '{kind}' is not one SNS sends"
        )));
    }
    Ok((topic, kind))
}

/// Fetches the SubscribeURL, if it is one this service may fetch from.
async fn confirm_subscription(sns: &Sns, env: &Envelope) -> Result<(), ApiError> {
    let url = env.subscribe_url.as_deref().unwrap_or_default();
    sns.allowed(&env.topic_arn, url)
        .map_err(|e| ApiError::Forbidden(format!("refused: {e}")))?;
    sns.confirm(url).await.map_err(|e| {
        tracing::warn!(topic = %env.topic_arn, error = %e, "could not confirm the SNS subscription");
        ApiError::Unavailable(format!("could not confirm the subscription: {e}"))
    })?;
    tracing::info!(topic = %env.topic_arn, "SNS subscription confirmed");
    Ok(())
}

/// Records the SES events of a notification, and what they suppress, in one transaction.
async fn record(state: &AppState, env: &Envelope) -> Result<(), ApiError> {
    let events = crate::feedback::events(&env.message_id, &env.message, state.clock.now());
    let outcome = store::record_feedback(
        &state.pool,
        &events,
        state.settings.feedback_rules,
        &state.settings.webhooks,
        state.clock.now(),
    )
    .await?;
    // Counted after the commit, and only what is new (SNS redelivers).
    if outcome.recorded > 0 {
        for e in &events {
            state
                .metrics
                .ses_events
                .get_or_create(&TypeLabel {
                    r#type: e.kind.as_str().to_owned(),
                })
                .inc();
        }
    }
    if !outcome.suppressed.is_empty() {
        state.relay_wake.notify_one(); // their email.suppressed events
    }
    for (address, reason) in &outcome.suppressed {
        tracing::info!(%address, reason = reason.as_str(), "address suppressed by SES feedback");
    }
    Ok(())
}
