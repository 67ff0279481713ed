//! SES feedback as SNS posts it to `POST /v1/ses/notifications`, on arbitrary bytes: the body
//! parsed into `ingest::sns::Envelope` as the handler does, its canonical string, the URL rule
//! for certificates and subscription URLs, the whole of `Sns::verify` (topic, version, the
//! Timestamp's age against a fixed clock, host, certificate path, base64, the certificate
//! fetch with its cache and cap, RSA signature) and then what the handler does with a verified
//! message (`feedback::events` on the SES message, or the subscription URL check and fetch).
//! The whole input is also read as a bare SES message by `feedback::events`, SES's JSON in
//! both formats.
//!
//! Nothing leaves the machine: the certificate is served by a thread of this process on
//! 127.0.0.1, and a message whose certificate URL passes the rule but is not on 127.0.0.1 (SNS's
//! own host) is checked up to the fetch, never fetched. The seeds are signed with the key of
//! `sns_cert.pem` (see `fuzz/make_sns_seeds.py`) and name their certificate
//! `http://127.0.0.1:0/…`: the target puts the port of its server in place of `0` (the URL is
//! not part of the signed text), so that the fuzzer starts from messages that verify.

#![no_main]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use ingest::sns::{self, Envelope, Refused, Sns};
use libfuzzer_sys::fuzz_target;

/// The topic of the seeds; the one `Sns` accepts.
const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:mailroom-ses";
/// What the seeds' URLs start with; replaced by [`LOCAL`].
const PLACEHOLDER: &str = "http://127.0.0.1:0/";
const CERT: &str = include_str!("sns_cert.pem");

/// The base URL of the certificate server (`http://127.0.0.1:<port>/`).
static LOCAL: LazyLock<String> = LazyLock::new(serve_certificate);

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// One verifier for the whole run, as in ingest: its certificate cache fills once the first
/// seed verifies, so that later inputs reach the signature check without a fetch.
static SNS: LazyLock<Sns> = LazyLock::new(|| {
    let _guard = RUNTIME.enter();
    Sns::new(vec![TOPIC.to_owned()], vec![LOCAL.clone()])
});

/// The service's clock: the seeds' Timestamp, so that they are fresh.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

/// Serves the certificate for any `*.pem` path, `ok` for `/confirm…`, a 503 for `/5xx…` and a
/// 404 for anything else, one request per connection.
fn serve_certificate() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let base = format!("http://{}/", listener.local_addr().expect("local address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split(' ').nth(1).unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            let (status, body) = if path.ends_with(".pem") {
                ("200 OK", CERT)
            } else if path.starts_with("/confirm") {
                ("200 OK", "ok")
            } else if path.starts_with("/5xx") {
                ("503 Service Unavailable", "")
            } else {
                ("404 Not Found", "")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

fn local(url: &str) -> String {
    match url.strip_prefix(PLACEHOLDER) {
        Some(rest) => format!("{}{rest}", *LOCAL),
        None => url.to_owned(),
    }
}

/// Whether fetching `url` would leave this machine: it passes the rule and is not on
/// 127.0.0.1 (only SNS's own hosts can be).
fn fetched_from_elsewhere(topic: &str, url: &str) -> bool {
    SNS.allowed(topic, url).is_ok()
        && url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h != "127.0.0.1"))
            .unwrap_or(true)
}

fn check_events(sns_message_id: &str, message: &str) {
    let events = ingest::feedback::events(sns_message_id, message, now());
    assert!(
        !events.is_empty(),
        "every SES message gives at least one event"
    );
    for e in &events {
        // The label of mailroom_ses_events_total{type}: never empty, never free text.
        assert!(
            !e.kind.is_empty()
                && e.kind
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "event type {:?}",
            e.kind
        );
        assert_eq!(e.sns_message_id, sns_message_id);
    }
}

fuzz_target!(|data: &[u8]| {
    // The body as a bare SES message (what a verified notification carries).
    check_events("sns-fuzz", &String::from_utf8_lossy(data));

    // The body as the handler reads it.
    let Ok(mut env) = serde_json::from_slice::<Envelope>(data) else {
        return;
    };
    match sns::canonical(&env) {
        Ok(text) => {
            assert!(text.starts_with("Message\n"), "{text:?}");
            assert!(text.ends_with(&format!("Type\n{}\n", env.kind)), "{text:?}");
        }
        Err(Refused::Type(_) | Refused::Signature) => {}
        Err(e) => panic!("canonical refused with {e:?}"),
    }
    let _ = SNS.listed(&env.topic_arn);
    let _ = SNS.allowed(&env.topic_arn, &env.signing_cert_url);
    if let Some(url) = &env.subscribe_url {
        let _ = SNS.allowed(&env.topic_arn, url);
    }

    env.signing_cert_url = local(&env.signing_cert_url);
    if fetched_from_elsewhere(&env.topic_arn, &env.signing_cert_url) {
        return;
    }
    let verified = RUNTIME.block_on(SNS.verify(&env, now()));
    if verified.is_err() {
        return;
    }
    // What `routes::ses_notifications::receive` does with a verified message.
    match env.kind.as_str() {
        "SubscriptionConfirmation" => {
            let url = local(env.subscribe_url.as_deref().unwrap_or_default());
            if SNS.allowed(&env.topic_arn, &url).is_ok()
                && !fetched_from_elsewhere(&env.topic_arn, &url)
            {
                let _ = RUNTIME.block_on(SNS.confirm(&url));
            }
        }
        "UnsubscribeConfirmation" => {}
        _ => check_events(&env.message_id, &env.message),
    }
});
