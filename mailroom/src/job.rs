//! The job: what ingest puts in the outbox and the dispatcher takes from the queue. It names a
//! user and a kind of email; it never carries a token, a password or an address, so a message
//! sitting in a queue (or replayed from the dead letters a day later) holds no secret, and the
//! dispatcher always reads the user's current address at send time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Locale;

/// The kinds of email Mailroom sends. The serialised name is also the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// "Confirm your address", with a verification link.
    Verification,
    /// "Reset your password", with a reset link.
    PasswordReset,
    /// "Your password was changed": a notice, no link.
    PasswordChanged,
    /// "Sign in": a link to the app's `SIGN_IN_URL` and/or a code (sign-in by email).
    SignIn,
    /// "You're invited": a link to the page where the invitee sets a password.
    Invite,
    /// "Confirm your new address", to the new address of an email change (link and/or code).
    EmailChangeConfirm,
    /// To the old address of an email change: it names the new one (masked) with a cancel
    /// link, and a confirm link when both addresses must confirm.
    EmailChangeNotice,
    /// "Your address was changed", to the old address once the change is made.
    EmailChanged,
    /// Not an email: one webhook event on its way to one endpoint (see [`crate::webhook`]).
    /// It travels like an email job (outbox, queues, retries, dead letters, replay).
    Webhook,
}

impl JobKind {
    pub const ALL: [JobKind; 9] = [
        JobKind::Verification,
        JobKind::PasswordReset,
        JobKind::PasswordChanged,
        JobKind::SignIn,
        JobKind::Invite,
        JobKind::EmailChangeConfirm,
        JobKind::EmailChangeNotice,
        JobKind::EmailChanged,
        JobKind::Webhook,
    ];

    /// The kinds that are emails (each has templates).
    pub const EMAILS: [JobKind; 8] = [
        JobKind::Verification,
        JobKind::PasswordReset,
        JobKind::PasswordChanged,
        JobKind::SignIn,
        JobKind::Invite,
        JobKind::EmailChangeConfirm,
        JobKind::EmailChangeNotice,
        JobKind::EmailChanged,
    ];

    pub fn is_email(self) -> bool {
        self != JobKind::Webhook
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Verification => "verification",
            JobKind::PasswordReset => "password_reset",
            JobKind::PasswordChanged => "password_changed",
            JobKind::SignIn => "sign_in",
            JobKind::Invite => "invite",
            JobKind::EmailChangeConfirm => "email_change_confirm",
            JobKind::EmailChangeNotice => "email_change_notice",
            JobKind::EmailChanged => "email_changed",
            JobKind::Webhook => "webhook",
        }
    }

    pub fn routing_key(self) -> &'static str {
        self.as_str()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub job_id: Uuid,
    pub kind: JobKind,
    pub user_id: Uuid,
    pub locale: Locale,
    pub requested_at: DateTime<Utc>,
    /// The calling service's own reference for this email (≤ 128 characters), echoed in its
    /// status and in every webhook about it. Absent in jobs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The name of the API key whose request raised the job; None for jobs Mailroom raised
    /// itself (the "password changed" notice, reminders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// What the email carries: a link (the default, and all that jobs written before codes
    /// existed knew), a one-time code, or both. Omitted when it is a link, so such a job reads
    /// as it always did.
    #[serde(default, skip_serializing_if = "Method::is_link")]
    pub method: Method,
    /// Where the person goes once the link did its work: an address the caller gave, checked
    /// against `RETURN_TO_ALLOWED` when the request came in. Links carry it as `return_to=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to: Option<String>,
    /// The email change an email-change job is about (its addresses are read from it at send
    /// time, like the user's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<Uuid>,
}

/// What an email that proves an inbox carries: a link to follow, a code to type, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Link,
    Code,
    Both,
}

impl Method {
    pub fn is_link(&self) -> bool {
        *self == Method::Link
    }

    pub fn sends_link(self) -> bool {
        self != Method::Code
    }

    pub fn sends_code(self) -> bool {
        self != Method::Link
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Link => "link",
            Method::Code => "code",
            Method::Both => "both",
        }
    }

    /// The request's `method` field.
    pub fn parse(s: &str) -> Result<Self, crate::domain::Invalid> {
        match s {
            "link" => Ok(Method::Link),
            "code" => Ok(Method::Code),
            "both" => Ok(Method::Both),
            _ => Err(crate::domain::Invalid(
                "must be \"link\", \"code\" or \"both\"".into(),
            )),
        }
    }
}

/// The link of an email: `base` (which may have a query of its own) with `token=` and, when
/// the job has one, `return_to=` (percent-encoded) appended.
pub fn link_with_token(base: &str, token: &str, return_to: Option<&str>) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut link = format!("{base}{sep}token={token}");
    if let Some(r) = return_to {
        link.push_str("&return_to=");
        link.extend(url::form_urlencoded::byte_serialize(r.as_bytes()));
    }
    link
}

/// A message from the queue that is not a job we understand. Permanent: it goes to the dead
/// letters with this text, and never crashes or stalls the consumer.
#[derive(Debug, thiserror::Error)]
#[error("malformed job: {0}")]
pub struct MalformedJob(pub String);

impl Job {
    pub fn new(kind: JobKind, user_id: Uuid, locale: Locale, now: DateTime<Utc>) -> Self {
        Self {
            // Time-ordered (UUIDv7): new keys append to the indexes of `sends` and `outbox`
            // instead of landing on random pages of them.
            job_id: Uuid::now_v7(),
            kind,
            user_id,
            locale,
            requested_at: now,
            reference: None,
            api_key: None,
            method: Method::Link,
            return_to: None,
            change_id: None,
        }
    }

    /// The job with where its link returns to.
    pub fn with_return_to(mut self, return_to: Option<String>) -> Self {
        self.return_to = return_to;
        self
    }

    /// The job with what its email is to carry.
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The job as raised by a caller's request: the API key's name and the caller's reference.
    pub fn from_caller(mut self, api_key: &str, reference: Option<String>) -> Self {
        self.api_key = Some(api_key.to_owned());
        self.reference = reference;
        self
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, MalformedJob> {
        serde_json::from_slice(bytes).map_err(|e| MalformedJob(e.to_string()))
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_schema() {
        let job = Job::new(
            JobKind::PasswordReset,
            Uuid::new_v4(),
            Locale::parse("de").unwrap(),
            Utc::now(),
        );
        let v: serde_json::Value = serde_json::from_slice(&job.to_vec()).unwrap();
        assert_eq!(v["kind"], "password_reset");
        assert_eq!(v["locale"], "de");
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["job_id", "kind", "locale", "requested_at", "user_id"]
        );
        assert_eq!(Job::from_slice(&job.to_vec()).unwrap(), job);
        // A caller's job carries its key's name and reference; older jobs without them parse.
        let called = job.clone().from_caller("web", Some("order-7".into()));
        let v: serde_json::Value = serde_json::from_slice(&called.to_vec()).unwrap();
        assert_eq!(
            (v["api_key"].as_str(), v["reference"].as_str()),
            (Some("web"), Some("order-7"))
        );
        assert_eq!(Job::from_slice(&called.to_vec()).unwrap(), called);
        // A code job says so; a link job does not, as before.
        let coded = job.clone().with_method(Method::Both);
        let v: serde_json::Value = serde_json::from_slice(&coded.to_vec()).unwrap();
        assert_eq!(v["method"], "both");
        assert_eq!(Job::from_slice(&coded.to_vec()).unwrap(), coded);
        assert!(Method::parse("sms").is_err());
    }

    #[test]
    fn links_carry_their_token_and_return_to() {
        assert_eq!(
            link_with_token("https://a.test/r", "t0", None),
            "https://a.test/r?token=t0"
        );
        assert_eq!(
            link_with_token(
                "https://a.test/r?x=1",
                "t0",
                Some("https://app.test/w?a=b&c=d")
            ),
            "https://a.test/r?x=1&token=t0&return_to=https%3A%2F%2Fapp.test%2Fw%3Fa%3Db%26c%3Dd"
        );
    }

    #[test]
    fn malformed() {
        assert!(Job::from_slice(b"not json").is_err());
        assert!(Job::from_slice(br#"{"job_id":"x"}"#).is_err());
        let unknown_kind = br#"{"job_id":"6f1c7a3e-9a1b-4a53-8d0a-2a7b5b0e4c11","kind":"sms","user_id":"6f1c7a3e-9a1b-4a53-8d0a-2a7b5b0e4c11","locale":"en","requested_at":"2026-01-01T00:00:00Z"}"#;
        assert!(Job::from_slice(unknown_kind).is_err());
    }
}
