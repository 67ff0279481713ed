//! Sending one rendered email (`SendEmail`), with its latency.

use std::time::{Duration, Instant};

use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

use super::classify::{ErrorClass, PauseReason, SesError, classify_send, sender_not_verified};

/// One rendered email ready to go.
pub struct OutgoingEmail<'a> {
    /// `SES_CONFIGURATION_SET`: where SES publishes this email's events (bounces,
    /// complaints, deliveries).
    pub configuration_set: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub html: &'a str,
    pub text: &'a str,
}

/// A successful send: SES's message id and how long the call took.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: String,
    pub latency: Duration,
}

pub async fn send(client: &Client, email: OutgoingEmail<'_>) -> Result<Sent, SesError> {
    let utf8 = |s: &str| {
        Content::builder()
            .data(s)
            .charset("UTF-8")
            .build()
            .expect("data is set")
    };
    let message = Message::builder()
        .subject(utf8(email.subject))
        .body(
            Body::builder()
                .html(utf8(email.html))
                .text(utf8(email.text))
                .build(),
        )
        .build();
    let started = Instant::now();
    let out = client
        .send_email()
        .from_email_address(email.from)
        .destination(Destination::builder().to_addresses(email.to).build())
        .content(EmailContent::builder().simple(message).build())
        .set_configuration_set_name(email.configuration_set.map(str::to_owned))
        .send()
        .await
        .map_err(|e| {
            let mut err = classify_send(&e);
            // A rejection of the sender itself (a deleted identity, another region) would
            // reject every message alike: the account's fault, not this message's.
            if err.class == ErrorClass::Permanent && sender_not_verified(&err, email.from) {
                err.class = ErrorClass::AccountStop(PauseReason::SenderNotVerified);
            }
            err
        })?;
    Ok(Sent {
        message_id: out.message_id().unwrap_or_default().to_owned(),
        latency: started.elapsed(),
    })
}
