//! Webhooks: what Mailroom tells the calling service when something happens to a user, signed
//! per the Standard Webhooks spec (<https://www.standardwebhooks.com/>).
//!
//! This module owns the configuration (endpoints and secrets, checked at start), the event
//! body, the signature headers, and enqueueing. An event is one row (`webhook_events`: its id
//! is the `webhook-id` header, the same on every attempt, and its body is stored as sent, so
//! every attempt carries the same bytes); each endpoint gets a delivery row and a job of kind
//! [`JobKind::Webhook`] in the outbox, written in the caller's transaction, so the event exists
//! exactly when the change it reports does. From there a delivery travels like an email: relay,
//! work queue, dispatcher (which makes the HTTP call), retry ladder, dead letters, replay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::config::{Secret, parse_duration};
use crate::domain::Locale;
use crate::job::{Job, JobKind};

/// The events a receiver can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A person confirmed their address (sent in the transaction that marks it verified).
    UserVerified,
    /// A password was changed through a reset link (same transaction as the new hash).
    PasswordChanged,
    /// An address joined the suppression list: Mailroom will not email it any more.
    EmailSuppressed,
    /// An email job was dead-lettered: the person did not get it.
    EmailDead,
    /// `dispatcher webhooks test`: checks the endpoint and its signature check.
    Ping,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::UserVerified,
        EventType::PasswordChanged,
        EventType::EmailSuppressed,
        EventType::EmailDead,
        EventType::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::UserVerified => "user.verified",
            EventType::PasswordChanged => "password.changed",
            EventType::EmailSuppressed => "email.suppressed",
            EventType::EmailDead => "email.dead",
            EventType::Ping => "ping",
        }
    }
}

/// `WEBHOOK_URL`, `WEBHOOK_SECRET` and `WEBHOOK_TIMEOUT`, shared by ingest (which enqueues
/// events) and the dispatcher (which signs and delivers them).
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Where to POST webhook events: one or more http(s) URLs, comma-separated. Unset: no
    /// webhooks.
    #[arg(long = "webhook-url", env = "WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,

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
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

/// The endpoints, checked: every one is an absolute http or https URL with a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints(Vec<String>);

impl Endpoints {
    pub fn parse(urls: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for raw in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let url = url::Url::parse(raw)
                .map_err(|e| format!("WEBHOOK_URL {raw:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "WEBHOOK_URL {raw:?} must be http:// or https://, not {}://",
                    url.scheme()
                ));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("WEBHOOK_URL {raw:?} has no host"));
            }
            out.push(url.to_string());
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn urls(&self) -> &[String] {
        &self.0
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
        let endpoints = Endpoints::parse(&args.webhook_urls)?;
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

/// A new event id: `msg_` and 32 hex digits.
pub fn new_event_id() -> String {
    format!("msg_{}", Uuid::new_v4().simple())
}

/// The body: `{"type": …, "timestamp": …, "data": {…}}`.
pub fn body(kind: EventType, data: &Value, at: DateTime<Utc>) -> String {
    json!({
        "type": kind.as_str(),
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// Records an event and, per endpoint, a delivery and its job in the outbox, all inside the
/// caller's transaction. Nothing when no endpoint is configured. Returns the event id.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    endpoints: &Endpoints,
    kind: EventType,
    user_id: Option<Uuid>,
    data: Value,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    if endpoints.is_empty() {
        return Ok(None);
    }
    let id = new_event_id();
    sqlx::query("INSERT INTO webhook_events (id, type, body, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(kind.as_str())
        .bind(body(kind, &data, now))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    for url in endpoints.urls() {
        // The job names the user (nil when the event has none, e.g. a suppressed address
        // nobody signed up with); what to send and where is in the delivery row.
        let job = Job::new(
            JobKind::Webhook,
            user_id.unwrap_or(Uuid::nil()),
            Locale::default_locale(),
            now,
        );
        sqlx::query("INSERT INTO webhook_deliveries (job_id, event_id, url) VALUES ($1, $2, $3)")
            .bind(job.job_id)
            .bind(&id)
            .bind(url)
            .execute(&mut **tx)
            .await?;
        crate::store::enqueue(tx, &job).await?;
    }
    Ok(Some(id))
}

/// One delivery, as the dispatcher needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    pub body: String,
}

pub async fn delivery(pool: &sqlx::PgPool, job_id: Uuid) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.event_id, e.type AS event_type, d.url, e.body
           FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
          WHERE d.job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

/// Records a delivered webhook in the send log (the receiver's status in the detail) and on
/// the delivery.
pub async fn record_delivered(
    pool: &sqlx::PgPool,
    job_id: Uuid,
    url: &str,
    status: u16,
    now: DateTime<Utc>,
    latency_ms: i32,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE sends SET status = 'sent', recipient = $2, detail = $3, updated_at = $4,
                          latency_ms = $5, error_class = NULL, last_error = NULL
          WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(url)
    .bind(format!("HTTP {status}"))
    .bind(now)
    .bind(latency_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE webhook_deliveries SET status = $2, delivered_at = $3 WHERE job_id = $1")
        .bind(job_id)
        .bind(i32::from(status))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
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

        assert!(
            Endpoints::parse(&["ftp://example.com/hook".into()])
                .unwrap_err()
                .contains("http:// or https://")
        );
        assert!(
            Endpoints::parse(&["not a url".into()])
                .unwrap_err()
                .contains("not a URL")
        );
        let ok = Endpoints::parse(&[
            "https://example.com/hooks".into(),
            " http://127.0.0.1:9/x ".into(),
        ])
        .unwrap();
        assert_eq!(ok.urls().len(), 2);

        let args = WebhookArgs {
            webhook_urls: vec!["https://example.com/hooks".into()],
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(10),
        };
        assert!(
            Webhooks::from_args(&args)
                .unwrap_err()
                .contains("WEBHOOK_SECRET")
        );
    }

    #[test]
    fn the_body_has_type_timestamp_and_data() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let b: Value = serde_json::from_str(&body(
            EventType::UserVerified,
            &json!({"user_id": "u", "email": "a@example.com"}),
            at,
        ))
        .unwrap();
        assert_eq!(b["type"], "user.verified");
        assert_eq!(b["timestamp"], "2026-11-22T10:00:00.000Z");
        assert_eq!(b["data"]["email"], "a@example.com");
    }
}
