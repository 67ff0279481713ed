//! The webhook events, as types: the public contract with the calling service.
//!
//! Each event is one serde struct whose fields are exactly the `data` of its body, and
//! [`Event::TYPE`] names it. The store writes what it is given (see
//! [`crate::store::webhooks`]); nothing else builds an event body, so the OpenAPI schemas and
//! the event table in `docs/api.md` can be checked against these structs (a test does).
//!
//! This module also owns [`Endpoints`] (the checked `WEBHOOK_URL` list), because which
//! endpoints an event goes to is decided when it is stored. It must never do I/O.
//!
//! It stays one file past 550 lines because half of it is the contract tests, which compare
//! every struct here with ingest's OpenAPI schemas and the event table of docs/api.md: keeping
//! the types and those checks side by side is what keeps the three from drifting.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::SuppressionReason;

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
    /// SES accepted an email (recorded by the dispatcher, in the transaction of its record).
    EmailSent,
    /// SES feedback about a sent email: delivered to the recipient's server.
    EmailDelivered,
    /// SES feedback: the email bounced (permanently or not: see `feedback_type`).
    EmailBounced,
    /// SES feedback: the recipient marked it as spam.
    EmailComplained,
    /// SES feedback: delivery is delayed; SES keeps trying.
    EmailDelayed,
    /// A person was erased (`DELETE /v1/users/{id}`).
    UserDeleted,
    /// An unverified user was deleted after `UNVERIFIED_EXPIRE_AFTER`: name and address free.
    UserExpired,
    /// A user was invited (`POST /v1/invites`): an unverified user without a password.
    UserInvited,
    /// An invite was accepted: the password is set and the address verified.
    InviteAccepted,
    /// A user's address changed (an email change was confirmed).
    UserEmailChanged,
    /// `dispatcher webhooks test`: checks the endpoint and its signature check.
    Ping,
}

impl EventType {
    pub const ALL: [EventType; 15] = [
        EventType::UserVerified,
        EventType::PasswordChanged,
        EventType::EmailSuppressed,
        EventType::EmailDead,
        EventType::EmailSent,
        EventType::EmailDelivered,
        EventType::EmailBounced,
        EventType::EmailComplained,
        EventType::EmailDelayed,
        EventType::UserDeleted,
        EventType::UserExpired,
        EventType::UserInvited,
        EventType::InviteAccepted,
        EventType::UserEmailChanged,
        EventType::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::UserVerified => "user.verified",
            EventType::PasswordChanged => "password.changed",
            EventType::EmailSuppressed => "email.suppressed",
            EventType::EmailDead => "email.dead",
            EventType::EmailSent => "email.sent",
            EventType::EmailDelivered => "email.delivered",
            EventType::EmailBounced => "email.bounced",
            EventType::EmailComplained => "email.complained",
            EventType::EmailDelayed => "email.delayed",
            EventType::UserDeleted => "user.deleted",
            EventType::UserExpired => "user.expired",
            EventType::UserInvited => "user.invited",
            EventType::InviteAccepted => "invite.accepted",
            EventType::UserEmailChanged => "user.email_changed",
            EventType::Ping => "ping",
        }
    }
}

/// One event's `data`. Implemented by the structs below (one per [`EventType`]; the four SES
/// feedback types share [`EmailFeedback`]).
pub trait Event: Serialize {
    fn event_type(&self) -> EventType;
    /// The user the event is about, if any: its delivery job names them.
    fn user_id(&self) -> Option<Uuid>;
}

/// `user.verified`: the address was confirmed.
#[derive(Debug, Clone, Serialize)]
pub struct UserVerified {
    pub user_id: Uuid,
    pub email: String,
}

/// `password.changed`: a reset link set a new password.
#[derive(Debug, Clone, Serialize)]
pub struct PasswordChanged {
    pub user_id: Uuid,
    pub email: String,
}

/// `email.suppressed`: the address joined the suppression list. `user_id` is None when no
/// user has the address.
#[derive(Debug, Clone, Serialize)]
pub struct EmailSuppressed {
    pub user_id: Option<Uuid>,
    pub email: String,
    pub reason: SuppressionReason,
}

/// `email.dead`: an email job was dead-lettered; the person did not get it.
#[derive(Debug, Clone, Serialize)]
pub struct EmailDead {
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    /// The job's kind (`verification`, `password_reset`, `password_changed`).
    pub email_kind: String,
    pub job_id: Uuid,
    /// The calling service's reference of the job, if it gave one.
    pub reference: Option<String>,
    pub error_class: String,
    pub error: String,
}

/// `email.sent`: SES accepted the email.
#[derive(Debug, Clone, Serialize)]
pub struct EmailSent {
    pub job_id: Uuid,
    pub user_id: Uuid,
    pub email_kind: String,
    pub reference: Option<String>,
    pub ses_message_id: String,
}

/// `email.delivered`, `email.bounced`, `email.complained`, `email.delayed`: what SES said of
/// a sent email. `feedback_type` is SES's own word for it (`Permanent/General`,
/// `Transient/MailboxFull`, `abuse`, `MailboxFull`, …; null for a delivery), and `diagnostic`
/// the receiving server's answer when SES passed one on.
#[derive(Debug, Clone, Serialize)]
pub struct EmailFeedback {
    #[serde(skip)]
    pub kind: EventType,
    pub job_id: Uuid,
    pub user_id: Option<Uuid>,
    pub email_kind: String,
    pub reference: Option<String>,
    pub email: Option<String>,
    pub ses_message_id: String,
    pub feedback_type: Option<String>,
    pub diagnostic: Option<String>,
}

impl EmailFeedback {
    /// The event an SES event type (lower case: `delivery`, `bounce`, `complaint`,
    /// `delivery_delay`) is announced as; None for the others (`send`, `reject`, …).
    pub fn type_of(ses_type: &str) -> Option<EventType> {
        match ses_type {
            "delivery" => Some(EventType::EmailDelivered),
            "bounce" => Some(EventType::EmailBounced),
            "complaint" => Some(EventType::EmailComplained),
            "delivery_delay" => Some(EventType::EmailDelayed),
            _ => None,
        }
    }
}

/// `user.deleted`: the person was erased; only their id is said.
#[derive(Debug, Clone, Serialize)]
pub struct UserDeleted {
    pub user_id: Uuid,
}

impl Event for UserDeleted {
    fn event_type(&self) -> EventType {
        EventType::UserDeleted
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

/// `user.expired`: an unverified user was deleted after `UNVERIFIED_EXPIRE_AFTER`.
#[derive(Debug, Clone, Serialize)]
pub struct UserExpired {
    pub user_id: Uuid,
    pub email: String,
}

impl Event for UserExpired {
    fn event_type(&self) -> EventType {
        EventType::UserExpired
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

/// `user.invited`: an invite was sent to a new, unverified user without a password.
#[derive(Debug, Clone, Serialize)]
pub struct UserInvited {
    pub user_id: Uuid,
    pub email: String,
}

impl Event for UserInvited {
    fn event_type(&self) -> EventType {
        EventType::UserInvited
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

/// `invite.accepted`: the invitee set a password; their address is verified.
#[derive(Debug, Clone, Serialize)]
pub struct InviteAccepted {
    pub user_id: Uuid,
    pub email: String,
}

impl Event for InviteAccepted {
    fn event_type(&self) -> EventType {
        EventType::InviteAccepted
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

/// `user.email_changed`: the user's address is now `new_email` (and verified).
#[derive(Debug, Clone, Serialize)]
pub struct UserEmailChanged {
    pub user_id: Uuid,
    pub old_email: String,
    pub new_email: String,
}

impl Event for UserEmailChanged {
    fn event_type(&self) -> EventType {
        EventType::UserEmailChanged
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

/// `ping`: sent by `dispatcher webhooks test`, never stored.
#[derive(Debug, Clone, Serialize)]
pub struct Ping {
    pub message: String,
}

impl Event for UserVerified {
    fn event_type(&self) -> EventType {
        EventType::UserVerified
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

impl Event for PasswordChanged {
    fn event_type(&self) -> EventType {
        EventType::PasswordChanged
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

impl Event for EmailSuppressed {
    fn event_type(&self) -> EventType {
        EventType::EmailSuppressed
    }
    fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }
}

impl Event for EmailDead {
    fn event_type(&self) -> EventType {
        EventType::EmailDead
    }
    fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }
}

impl Event for Ping {
    fn event_type(&self) -> EventType {
        EventType::Ping
    }
    fn user_id(&self) -> Option<Uuid> {
        None
    }
}

impl Event for EmailSent {
    fn event_type(&self) -> EventType {
        EventType::EmailSent
    }
    fn user_id(&self) -> Option<Uuid> {
        Some(self.user_id)
    }
}

impl Event for EmailFeedback {
    fn event_type(&self) -> EventType {
        self.kind
    }
    fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }
}

/// The endpoints, checked: every one is an absolute http or https URL with a host, and what it
/// subscribes to (`WEBHOOK_EVENTS`, or its own `#events=` list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    urls: Vec<String>,
    /// Per endpoint, the patterns of the events it gets (`*`, `email.*`, `user.verified`).
    filters: Vec<Vec<String>>,
}

/// Whether `pattern` (`*`, `prefix.*` or an event's name) takes `t`.
fn takes(pattern: &str, t: EventType) -> bool {
    let name = t.as_str();
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Checks the patterns of a subscription: each must take at least one event (a typo would
/// otherwise silently take none).
fn patterns(list: &str, sep: char, what: &str) -> Result<Vec<String>, String> {
    let out: Vec<String> = list
        .split(sep)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    for p in &out {
        if !EventType::ALL.iter().any(|t| takes(p, *t)) {
            let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(format!(
                "{what}: {p:?} names no event; use *, a prefix such as email.*, or one of {}",
                names.join(", ")
            ));
        }
    }
    Ok(out)
}

impl Endpoints {
    /// Every endpoint gets every event.
    pub fn parse(urls: &[String]) -> Result<Self, String> {
        Self::parse_with_events(urls, &[])
    }

    /// `WEBHOOK_URL` and `WEBHOOK_EVENTS`: an endpoint subscribes to the events its URL's
    /// fragment names (`https://hooks.example.com/in#events=email.*|user.verified`; the
    /// fragment is never sent), else to `WEBHOOK_EVENTS` (empty: all).
    pub fn parse_with_events(urls: &[String], events: &[String]) -> Result<Self, String> {
        let default = patterns(&events.join(","), ',', "WEBHOOK_EVENTS")?;
        let mut out = Self::default();
        for raw in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let mut url = url::Url::parse(raw)
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
            let filter = match url.fragment() {
                Some(f) => {
                    let list = f.strip_prefix("events=").ok_or_else(|| {
                        format!(
                            "WEBHOOK_URL {}: a fragment must be #events=<pattern>|<pattern>…",
                            redact_url(raw)
                        )
                    })?;
                    patterns(list, '|', "WEBHOOK_URL #events")?
                }
                None => default.clone(),
            };
            url.set_fragment(None);
            out.urls.push(url.to_string());
            out.filters.push(filter);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Every endpoint, whatever it subscribes to.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The endpoints that subscribe to `t` (an empty subscription takes everything).
    pub fn urls_for(&self, t: EventType) -> impl Iterator<Item = &String> {
        self.urls
            .iter()
            .zip(&self.filters)
            .filter(move |(_, f)| f.is_empty() || f.iter().any(|p| takes(p, t)))
            .map(|(u, _)| u)
    }
}

/// `url` as logs and the send log show it: no userinfo, and no query (receivers often take a
/// token there), replaced by `?…`. Something that is not a URL is shown as `[not a URL]`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "[not a URL]".to_owned();
    };
    let had_query = u.query().is_some();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let mut out = u.to_string();
    if had_query {
        out.push_str("?…");
    }
    out
}

/// A new event id: `msg_` and 32 hex digits.
pub fn new_event_id() -> String {
    format!("msg_{}", Uuid::new_v4().simple())
}

/// The body: `{"type": …, "timestamp": …, "data": {…}}`.
pub fn body<E: Event>(event: &E, at: DateTime<Utc>) -> String {
    let data = serde_json::to_value(event).expect("event structs serialise");
    raw_body(event.event_type(), &data, at)
}

/// [`body`] from a `data` value already built.
fn raw_body(kind: EventType, data: &Value, at: DateTime<Utc>) -> String {
    json!({
        "type": kind.as_str(),
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_url;

    #[test]
    fn userinfo_and_query_never_show() {
        assert_eq!(
            redact_url("https://user:secret@hooks.example.com:8443/in?token=abc#x"),
            "https://hooks.example.com:8443/in?…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/hook"
        );
        assert_eq!(redact_url("not a url"), "[not a URL]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample of each event, for the contract tests.
    pub(crate) fn samples() -> Vec<(EventType, Value)> {
        let id = Uuid::nil();
        let v = |e: &dyn erased::Ser| e.value();
        vec![
            (
                EventType::UserVerified,
                v(&UserVerified {
                    user_id: id,
                    email: "a@example.com".into(),
                }),
            ),
            (
                EventType::PasswordChanged,
                v(&PasswordChanged {
                    user_id: id,
                    email: "a@example.com".into(),
                }),
            ),
            (
                EventType::EmailSuppressed,
                v(&EmailSuppressed {
                    user_id: None,
                    email: "a@example.com".into(),
                    reason: SuppressionReason::Bounce,
                }),
            ),
            (
                EventType::EmailDead,
                v(&EmailDead {
                    user_id: Some(id),
                    email: None,
                    email_kind: "verification".into(),
                    job_id: id,
                    reference: None,
                    error_class: "permanent".into(),
                    error: "x".into(),
                }),
            ),
            (
                EventType::EmailSent,
                v(&EmailSent {
                    job_id: id,
                    user_id: id,
                    email_kind: "verification".into(),
                    reference: Some("crm-42".into()),
                    ses_message_id: "m".into(),
                }),
            ),
        ]
        .into_iter()
        .chain(
            [
                EventType::EmailDelivered,
                EventType::EmailBounced,
                EventType::EmailComplained,
                EventType::EmailDelayed,
            ]
            .map(|kind| {
                (
                    kind,
                    v(&EmailFeedback {
                        kind,
                        job_id: id,
                        user_id: Some(id),
                        email_kind: "verification".into(),
                        reference: None,
                        email: Some("a@example.com".into()),
                        ses_message_id: "m".into(),
                        feedback_type: None,
                        diagnostic: None,
                    }),
                )
            }),
        )
        .chain([
            (EventType::UserDeleted, v(&UserDeleted { user_id: id })),
            (
                EventType::UserExpired,
                v(&UserExpired {
                    user_id: id,
                    email: "a@example.com".into(),
                }),
            ),
            (
                EventType::UserInvited,
                v(&UserInvited {
                    user_id: id,
                    email: "a@example.com".into(),
                }),
            ),
            (
                EventType::InviteAccepted,
                v(&InviteAccepted {
                    user_id: id,
                    email: "a@example.com".into(),
                }),
            ),
            (
                EventType::UserEmailChanged,
                v(&UserEmailChanged {
                    user_id: id,
                    old_email: "a@example.com".into(),
                    new_email: "b@example.com".into(),
                }),
            ),
            (
                EventType::Ping,
                v(&Ping {
                    message: "hi".into(),
                }),
            ),
        ])
        .collect()
    }

    mod erased {
        pub trait Ser {
            fn value(&self) -> serde_json::Value;
        }
        impl<T: serde::Serialize> Ser for T {
            fn value(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap()
            }
        }
    }

    #[test]
    fn the_body_has_type_timestamp_and_data() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let b: Value = serde_json::from_str(&body(
            &UserVerified {
                user_id: Uuid::nil(),
                email: "a@example.com".into(),
            },
            at,
        ))
        .unwrap();
        assert_eq!(b["type"], "user.verified");
        assert_eq!(b["timestamp"], "2026-11-22T10:00:00.000Z");
        assert_eq!(b["data"]["email"], "a@example.com");
    }

    #[test]
    fn every_event_type_has_one_struct() {
        let types: Vec<EventType> = samples().into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, EventType::ALL);
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
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
    }

    #[test]
    fn each_endpoint_gets_what_it_subscribes_to() {
        let e = Endpoints::parse_with_events(
            &[
                "https://a.example/in".into(),
                "https://b.example/in#events=email.delivered|email.bounced".into(),
                "https://c.example/in#events=*".into(),
            ],
            &["user.*".into(), "email.dead".into()],
        )
        .unwrap();
        let to = |t| e.urls_for(t).cloned().collect::<Vec<_>>();
        assert_eq!(
            to(EventType::UserVerified),
            ["https://a.example/in", "https://c.example/in"]
        );
        assert_eq!(
            to(EventType::EmailBounced),
            ["https://b.example/in", "https://c.example/in"]
        );
        assert_eq!(to(EventType::EmailSent), ["https://c.example/in"]);
        assert_eq!(
            e.urls()[1],
            "https://b.example/in",
            "the fragment is not kept"
        );
        let err = Endpoints::parse_with_events(&[], &["email.delivred".into()]).unwrap_err();
        assert!(err.contains("names no event"), "{err}");
        let err = Endpoints::parse(&["https://a.example/#x".into()]).unwrap_err();
        assert!(err.contains("#events="), "{err}");
        // No WEBHOOK_EVENTS: everything.
        let all = Endpoints::parse(&["https://a.example/in".into()]).unwrap();
        assert_eq!(all.urls_for(EventType::EmailDelayed).count(), 1);
    }

    /// The schema in ingest's OpenAPI document that describes each event's `data`.
    fn schema_of(t: EventType) -> &'static str {
        match t {
            EventType::UserVerified | EventType::PasswordChanged => "WebhookUser",
            EventType::EmailSuppressed => "WebhookSuppressed",
            EventType::EmailDead => "WebhookEmailDead",
            EventType::EmailSent => "WebhookEmailSent",
            EventType::EmailDelivered
            | EventType::EmailBounced
            | EventType::EmailComplained
            | EventType::EmailDelayed => "WebhookEmailFeedback",
            EventType::UserDeleted => "WebhookUserDeleted",
            EventType::UserEmailChanged => "WebhookEmailChanged",
            EventType::UserExpired | EventType::UserInvited | EventType::InviteAccepted => {
                "WebhookUser"
            }
            EventType::Ping => "WebhookPing",
        }
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn the_openapi_schemas_match_the_event_structs() {
        let doc: Value = serde_json::from_str(include_str!("../../ingest/openapi.json")).unwrap();
        let schemas = &doc["components"]["schemas"];
        let listed: Vec<&str> = schemas["WebhookEvent"]["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(listed, ours, "WebhookEvent.type lists other events");
        for (t, sample) in samples() {
            let schema = &schemas[schema_of(t)];
            assert_eq!(
                keys(&schema["properties"]),
                keys(&sample),
                "{} fields differ from {}",
                schema_of(t),
                t.as_str()
            );
            let mut required: Vec<String> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            required.sort();
            assert_eq!(required, keys(&sample), "{} required", schema_of(t));
        }
    }

    #[test]
    fn the_docs_event_table_matches_the_event_structs() {
        let docs = include_str!("../../docs/api.md");
        for (t, sample) in samples() {
            let row = docs
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", t.as_str())))
                .unwrap_or_else(|| panic!("docs/api.md has no row for {}", t.as_str()));
            let fields_cell = row.trim_end_matches('|').rsplit('|').next().unwrap();
            let mut documented: Vec<String> = fields_cell
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            documented.sort();
            assert_eq!(
                documented,
                keys(&sample),
                "docs/api.md row of {}",
                t.as_str()
            );
        }
    }
}
