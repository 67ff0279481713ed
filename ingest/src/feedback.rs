//! SES feedback inside a verified SNS notification: turns SES's message, in either of its two
//! formats (the identity *notification* format with `notificationType`, or the configuration
//! set *event publishing* format with `eventType`), into one event per recipient for the store.
//! Owns the reading of SES's JSON; deciding what an event does (suppression, the send log's
//! delivery outcome) is the store's, in one transaction.

use chrono::{DateTime, Utc};
use mailroom::domain::EmailAddress;
use mailroom::store::NewSesEvent;
use serde_json::Value;

/// The events in one SES message. A message that is not JSON, or of a type Mailroom does not
/// know, still gives one event (type `unknown` or the type in lower case), so that nothing SNS
/// delivers is dropped unseen.
pub fn events(sns_message_id: &str, message: &str, now: DateTime<Utc>) -> Vec<NewSesEvent> {
    let v: Value = serde_json::from_str(message).unwrap_or(Value::Null);
    let raw_type = v["notificationType"]
        .as_str()
        .or_else(|| v["eventType"].as_str())
        .unwrap_or("unknown");
    let kind = type_name(raw_type);
    let mail = &v["mail"];
    let ses_message_id = mail["messageId"].as_str().map(str::to_owned);
    let detail = detail(&v, raw_type);
    let subtype = subtype(raw_type, detail);
    let occurred_at = detail["timestamp"]
        .as_str()
        .or_else(|| mail["timestamp"].as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc));
    let feedback_id = detail["feedbackId"].as_str().map(str::to_owned);
    let shared_diagnostic = detail["smtpResponse"]
        .as_str()
        .or_else(|| detail["reason"].as_str())
        .or_else(|| detail["errorMessage"].as_str())
        .map(str::to_owned);
    let recipients = recipients(raw_type, detail, mail);
    let event = |recipient: Option<String>, diagnostic: Option<String>| NewSesEvent {
        sns_message_id: sns_message_id.to_owned(),
        kind: kind.clone(),
        subtype: subtype.clone(),
        recipient,
        ses_message_id: ses_message_id.clone(),
        diagnostic: diagnostic.or_else(|| shared_diagnostic.clone()),
        feedback_id: feedback_id.clone(),
        occurred_at,
    };
    if recipients.is_empty() {
        return vec![event(None, None)];
    }
    recipients
        .into_iter()
        .map(|(r, d)| event(Some(normalise(&r)), d))
        .collect()
}

/// Each type keeps its details under its own key.
fn detail<'a>(v: &'a Value, raw_type: &str) -> &'a Value {
    match raw_type {
        "Bounce" => &v["bounce"],
        "Complaint" => &v["complaint"],
        "Delivery" => &v["delivery"],
        "Send" => &v["send"],
        "Reject" => &v["reject"],
        "DeliveryDelay" => &v["deliveryDelay"],
        "RenderingFailure" => &v["failure"],
        _ => &Value::Null,
    }
}

/// The kind of bounce (`Permanent/General`), complaint, delay or rejection.
fn subtype(raw_type: &str, detail: &Value) -> Option<String> {
    match raw_type {
        "Bounce" => Some(format!(
            "{}/{}",
            detail["bounceType"].as_str().unwrap_or("Undetermined"),
            detail["bounceSubType"].as_str().unwrap_or("Undetermined")
        )),
        "Complaint" => detail["complaintFeedbackType"].as_str().map(str::to_owned),
        "DeliveryDelay" => detail["delayType"].as_str().map(str::to_owned),
        "Reject" => detail["reason"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// The recipients the event is about, each with its own diagnostic: those the type lists, or
/// else the message's destination.
fn recipients(raw_type: &str, detail: &Value, mail: &Value) -> Vec<(String, Option<String>)> {
    // (recipient, its own diagnostic) for each recipient the event is about.
    let listed = |key: &str| -> Vec<(String, Option<String>)> {
        detail[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let address = r["emailAddress"].as_str().or_else(|| r.as_str())?;
                Some((
                    address.to_owned(),
                    r["diagnosticCode"].as_str().map(str::to_owned),
                ))
            })
            .collect()
    };
    let mut recipients = match raw_type {
        "Bounce" => listed("bouncedRecipients"),
        "Complaint" => listed("complainedRecipients"),
        "Delivery" => listed("recipients"),
        "DeliveryDelay" => listed("delayedRecipients"),
        _ => Vec::new(),
    };
    if recipients.is_empty() {
        recipients = mail["destination"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(|s| (s.to_owned(), None)))
            .collect();
    }
    recipients
}

/// `Bounce` → `bounce`, `DeliveryDelay` → `delivery_delay`, `RenderingFailure` →
/// `rendering_failure`: the label of `mailroom_ses_events_total{type}`.
fn type_name(raw: &str) -> String {
    let mut out = String::new();
    for (i, c) in raw.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    if out.is_empty() || !out.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        "unknown".into()
    } else {
        out
    }
}

/// Addresses as users' emails are stored (punycode domain), so that the suppression list and
/// the users table compare alike; one SES reports as it got it is kept as it is.
fn normalise(address: &str) -> String {
    EmailAddress::parse(address)
        .map(|e| e.as_str().to_owned())
        .unwrap_or_else(|_| address.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn a_bounce_in_the_notification_format() {
        let m = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent",
            "bounceSubType":"General","feedbackId":"f-1","timestamp":"2026-11-22T10:00:00.000Z",
            "bouncedRecipients":[{"emailAddress":"a@Example.com","diagnosticCode":"550 5.1.1"},
                                 {"emailAddress":"b@example.com"}]},
            "mail":{"messageId":"ses-1","timestamp":"2026-11-22T09:59:00.000Z",
                    "destination":["a@example.com","b@example.com"]}}"#;
        let e = events("sns-1", m, now());
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, "bounce");
        assert_eq!(e[0].subtype.as_deref(), Some("Permanent/General"));
        assert_eq!(e[0].recipient.as_deref(), Some("a@example.com"));
        assert_eq!(e[0].diagnostic.as_deref(), Some("550 5.1.1"));
        assert_eq!(e[0].feedback_id.as_deref(), Some("f-1"));
        assert_eq!(e[0].ses_message_id.as_deref(), Some("ses-1"));
        assert_eq!(e[0].occurred_at.to_rfc3339(), "2026-11-22T10:00:00+00:00");
    }

    #[test]
    fn a_complaint_and_a_delay_in_the_event_publishing_format() {
        let m = r#"{"eventType":"Complaint","complaint":{"complaintFeedbackType":"abuse",
            "complainedRecipients":[{"emailAddress":"c@example.com"}]},
            "mail":{"messageId":"ses-2"}}"#;
        let e = events("sns-2", m, now());
        assert_eq!(
            (e[0].kind.as_str(), e[0].subtype.as_deref()),
            ("complaint", Some("abuse"))
        );
        let m = r#"{"eventType":"DeliveryDelay","deliveryDelay":{"delayType":"MailboxFull",
            "delayedRecipients":[{"emailAddress":"d@example.com","diagnosticCode":"452"}]},
            "mail":{"messageId":"ses-3"}}"#;
        let e = events("sns-3", m, now());
        assert_eq!(e[0].kind, "delivery_delay");
        assert_eq!(e[0].diagnostic.as_deref(), Some("452"));
    }

    #[test]
    fn unknown_or_unreadable_messages_are_still_one_event() {
        let e = events("sns-4", r#"{"eventType":"Subscription","mail":{}}"#, now());
        assert_eq!((e.len(), e[0].kind.as_str()), (1, "subscription"));
        let e = events("sns-5", "not json", now());
        assert_eq!((e.len(), e[0].kind.as_str()), (1, "unknown"));
        assert_eq!(e[0].recipient, None);
    }

    #[test]
    fn send_reject_and_rendering_failure_use_the_destination() {
        let m = r#"{"eventType":"Reject","reject":{"reason":"Bad content"},
            "mail":{"messageId":"ses-6","destination":["e@example.com"]}}"#;
        let e = events("sns-6", m, now());
        assert_eq!(e[0].kind, "reject");
        assert_eq!(e[0].recipient.as_deref(), Some("e@example.com"));
        assert_eq!(e[0].diagnostic.as_deref(), Some("Bad content"));
        let e = events(
            "sns-7",
            r#"{"eventType":"RenderingFailure","failure":{"errorMessage":"x"},"mail":{}}"#,
            now(),
        );
        assert_eq!(e[0].kind, "rendering_failure");
    }
}
