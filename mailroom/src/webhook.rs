//! Webhooks: what Mailroom tells the calling service when something happens to a user, signed
//! per the Standard Webhooks spec (<https://www.standardwebhooks.com/>).
//!
//! This module owns the configuration (endpoints and secrets, checked at start) and the
//! signature headers. The events themselves are types in [`crate::events`]; storing one (an
//! event row, and per endpoint a delivery and its job in the outbox, in the caller's
//! transaction) is [`crate::store::webhooks`]'s. From there a delivery travels like an email:
//! relay, work queue, dispatcher (which makes the HTTP call), retry ladder, dead letters,
//! replay.

use std::time::Duration;

use crate::config::{Secret, parse_duration};
pub use crate::events::{Endpoints, EventType, new_event_id};

/// `WEBHOOK_URL`, `WEBHOOK_SECRET` and `WEBHOOK_TIMEOUT`, shared by ingest (which enqueues
/// events) and the dispatcher (which signs and delivers them).
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Where to POST webhook events: one or more http(s) URLs, comma-separated. Unset: no
    /// webhooks.
    #[arg(
        long = "webhook-url",
        env = "WEBHOOK_URL",
        value_delimiter = ',',
        // A URL may carry credentials (userinfo, a token in the query).
        hide_env_values = true
    )]
    pub webhook_urls: Vec<String>,

    /// The events endpoints get, comma-separated patterns: `*`, a prefix such as `email.*`,
    /// or an event's name (`user.verified`). Unset: all. An endpoint may subscribe on its own
    /// with a fragment on its URL (`…/hook#events=email.delivered|email.bounced`).
    #[arg(long = "webhook-events", env = "WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Vec<String>,

    /// Signing secrets, `whsec_` + base64 of 24 to 64 random bytes; several, space-separated,
    /// while rotating (each request carries one signature per secret). Required with
    /// WEBHOOK_URL.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// How long one delivery attempt may take before it counts as failed (and is retried).
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
}

/// No webhooks, with the default timeout (what the flags give when none is set).
impl Default for WebhookArgs {
    fn default() -> Self {
        Self {
            webhook_urls: Vec::new(),
            webhook_events: Vec::new(),
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

/// Signs bodies with every configured secret.
pub struct Signer {
    keys: Vec<standardwebhooks::Webhook>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} secret(s))", self.keys.len())
    }
}

impl Signer {
    /// Parses `WEBHOOK_SECRET`: space-separated `whsec_<base64>` secrets of 24 to 64 bytes.
    pub fn parse(secrets: &str) -> Result<Self, String> {
        use base64::Engine;
        let mut keys = Vec::new();
        for (i, s) in secrets.split_whitespace().enumerate() {
            let n = i + 1;
            let Some(b64) = s.strip_prefix("whsec_") else {
                return Err(format!(
                    "WEBHOOK_SECRET: secret {n} must start with whsec_ (whsec_ + base64 of 24 to 64 random bytes)"
                ));
            };
            let key = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("WEBHOOK_SECRET: secret {n} is not valid base64: {e}"))?;
            if !(24..=64).contains(&key.len()) {
                return Err(format!(
                    "WEBHOOK_SECRET: secret {n} is {} bytes; use 24 to 64 random bytes",
                    key.len()
                ));
            }
            keys.push(
                standardwebhooks::Webhook::from_bytes(key)
                    .map_err(|e| format!("WEBHOOK_SECRET: secret {n}: {e}"))?,
            );
        }
        if keys.is_empty() {
            return Err("WEBHOOK_SECRET is empty".into());
        }
        Ok(Self { keys })
    }

    /// The three Standard Webhooks headers for one attempt: `webhook-id` (the event's, the
    /// same on every attempt), `webhook-timestamp` (this attempt's, so that a receiver's
    /// five-minute tolerance holds for retries hours later) and `webhook-signature` (one
    /// `v1,<base64>` per secret, space-separated).
    pub fn headers(&self, id: &str, timestamp: i64, body: &str) -> [(&'static str, String); 3] {
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                k.sign(id, timestamp, body.as_bytes())
                    .expect("a str body is valid UTF-8")
            })
            .collect();
        [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signatures.join(" ")),
        ]
    }
}

/// Everything a component needs to enqueue and deliver webhooks, checked at start: a
/// component refuses to start with an endpoint that is not http(s), or endpoints without a
/// secret, rather than fail on the first event.
#[derive(Debug)]
pub struct Webhooks {
    pub endpoints: Endpoints,
    pub signer: Option<Signer>,
    pub timeout: Duration,
}

impl Webhooks {
    pub fn from_args(args: &WebhookArgs) -> Result<Self, String> {
        let endpoints = Endpoints::parse_with_events(&args.webhook_urls, &args.webhook_events)?;
        let signer = match &args.webhook_secret {
            Some(s) if !s.expose().trim().is_empty() => Some(Signer::parse(s.expose())?),
            _ => None,
        };
        if !endpoints.is_empty() && signer.is_none() {
            return Err(
                "WEBHOOK_URL is set but WEBHOOK_SECRET is not: receivers could not check where events come from".into(),
            );
        }
        if args.webhook_timeout.is_zero() {
            return Err("WEBHOOK_TIMEOUT must be more than 0".into());
        }
        Ok(Self {
            endpoints,
            signer,
            timeout: args.webhook_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_spec_and_once_per_secret() {
        // The Standard Webhooks reference vector.
        let signer = Signer::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let [id, ts, sig] = signer.headers(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(id, ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".into()));
        assert_eq!(ts, ("webhook-timestamp", "1649367553".into()));
        assert_eq!(sig.1, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");

        let two = Signer::parse(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
        let [_, _, sig] = two.headers("msg_1", 1, "{}");
        let entries: Vec<&str> = sig.1.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.starts_with("v1,")));
    }

    #[test]
    fn bad_secrets_and_urls_are_refused_with_the_reason() {
        let err = |s: &str| Signer::parse(s).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").contains("whsec_"));
        assert!(err("whsec_%%%").contains("base64"));
        assert!(err("whsec_c2hvcnQ=").contains("5 bytes"));

        let args = WebhookArgs {
            webhook_urls: vec!["https://example.com/hooks".into()],
            webhook_events: Vec::new(),
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(10),
        };
        assert!(
            Webhooks::from_args(&args)
                .unwrap_err()
                .contains("WEBHOOK_SECRET")
        );
    }
}
