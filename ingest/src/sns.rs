//! Amazon SNS's HTTP(S) delivery, as SES feedback arrives: the envelope, and its
//! authentication. SNS signs every message with a key whose certificate it publishes; this
//! module owns checking that signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA, over
//! SNS's canonical string for the message type), the rule for where a certificate or a
//! subscription URL may be fetched from, and the certificate cache. It never fetches from a host
//! the rule does not allow, and never trusts a message it could not verify.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde::Deserialize;
use url::Url;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

/// The JSON SNS posts. Field names are SNS's.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    pub subject: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

/// Why a message was refused. Every variant but [`Refused::Unreachable`] is answered 403 and
/// records nothing; `Unreachable` is 503, so that SNS delivers the message again (a 4xx counts
/// as delivered, and its feedback would be lost).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error("topic {0} is not one of SNS_TOPIC_ARNS")]
    Topic(String),
    #[error("SignatureVersion {0} is not supported (1 or 2)")]
    Version(String),
    #[error("{0} is not an SNS address this service fetches from")]
    Host(String),
    #[error("the message type {0} is not one SNS sends")]
    Type(String),
    #[error("the signing certificate could not be used: {0}")]
    Certificate(String),
    #[error("the signing certificate could not be fetched: {0}")]
    Unreachable(String),
    #[error("the signature does not match the message")]
    Signature,
    #[error("the message's Timestamp {0} is more than an hour old, or in the future")]
    Stale(String),
}

/// Messages older than this are refused: a captured message cannot be replayed for ever.
pub const MAX_MESSAGE_AGE: Duration = Duration::from_secs(3600);

/// How far a Timestamp may be ahead of our clock (clock skew).
const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(15 * 60);

/// How long a certificate fetch's outcome, key or failure, is kept for the messages that name
/// the same URL: a burst of notifications fetches once, and a URL that failed is not fetched
/// again by every message that names it.
const RECENT_FETCH_TTL: Duration = Duration::from_secs(60);

/// Recent fetch outcomes kept at most.
const RECENT_FETCHES: usize = 64;

/// Certificate fetches per minute at most, whatever the messages name. SNS uses one or two
/// certificates per region at a time, so its messages need one fetch now and then; a forger
/// naming URL after URL gets 503s past this instead of making us fetch each.
pub const CERT_FETCHES_PER_MINUTE: u32 = 10;

/// What fetching a certificate gave: its key, or why it could not be used.
type Fetched = Result<RsaPublicKey, Refused>;

/// The SNS settings and the certificate cache.
pub struct Sns {
    topics: Vec<String>,
    /// Extra allowed URL prefixes for certificates and subscription URLs (tests serve on
    /// 127.0.0.1); the `https://sns.<region>.amazonaws.com/` of the topic is always allowed.
    prefixes: Vec<String>,
    http: reqwest::Client,
    /// Certificate URL → public key. SNS rotates certificates rarely; each is fetched once,
    /// and kept only once a signature verified with it (so forged messages cannot fill it).
    keys: Mutex<HashMap<String, RsaPublicKey>>,
    /// What fetching each URL gave lately, verified or not (see [`RECENT_FETCH_TTL`]).
    recent: Mutex<HashMap<String, (Instant, Fetched)>>,
    /// One certificate fetch at a time: concurrent messages naming a new URL wait for the
    /// first one's fetch and use its outcome.
    fetching: tokio::sync::Mutex<()>,
    /// [`CERT_FETCHES_PER_MINUTE`].
    fetch_budget: governor::DefaultDirectRateLimiter,
}

/// Certificates kept at most; SNS uses one or two per region at a time.
const KEPT_KEYS: usize = 16;

impl Sns {
    pub fn new(topics: Vec<String>, prefixes: Vec<String>) -> Self {
        Self {
            topics,
            prefixes,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                // A redirect could lead off the allowed hosts.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            keys: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            fetch_budget: governor::RateLimiter::direct(governor::Quota::per_minute(
                NonZeroU32::new(CERT_FETCHES_PER_MINUTE).expect("more than 0"),
            )),
        }
    }

    /// Whether `topic_arn` is one of `SNS_TOPIC_ARNS`: checked on the request's header before
    /// the body is read, and on the envelope after.
    pub fn listed(&self, topic_arn: &str) -> bool {
        self.topics.iter().any(|t| t == topic_arn)
    }

    /// Checks topic, version, age, certificate host and signature, in that order: the cheap
    /// checks first, and nothing is fetched for a message that fails them. `now` is the
    /// service's clock, for the Timestamp's age.
    pub async fn verify(&self, env: &Envelope, now: DateTime<Utc>) -> Result<(), Refused> {
        if !self.listed(&env.topic_arn) {
            return Err(Refused::Topic(env.topic_arn.clone()));
        }
        if env.signature_version != "1" && env.signature_version != "2" {
            return Err(Refused::Version(env.signature_version.clone()));
        }
        if !fresh(&env.timestamp, now) {
            return Err(Refused::Stale(env.timestamp.clone()));
        }
        self.allowed(&env.topic_arn, &env.signing_cert_url)?;
        if env.signing_cert_url.starts_with("https://sns.") && !sns_cert_path(&env.signing_cert_url)
        {
            return Err(Refused::Host(env.signing_cert_url.clone()));
        }
        let text = canonical(env)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(env.signature.trim())
            .map_err(|_| Refused::Signature)?;
        let signature =
            Signature::try_from(signature.as_slice()).map_err(|_| Refused::Signature)?;
        let (key, cached) = self.key(&env.signing_cert_url).await?;
        let ok = if env.signature_version == "1" {
            VerifyingKey::<sha1::Sha1>::new(key.clone()).verify(text.as_bytes(), &signature)
        } else {
            VerifyingKey::<sha2::Sha256>::new(key.clone()).verify(text.as_bytes(), &signature)
        };
        ok.map_err(|_| Refused::Signature)?;
        if !cached {
            let mut keys = self.keys.lock().expect("key cache");
            if keys.len() >= KEPT_KEYS {
                keys.clear();
            }
            keys.insert(env.signing_cert_url.clone(), key);
        }
        Ok(())
    }

    /// The rule for any URL this module fetches: SNS's own host in the topic's region and
    /// partition (`amazonaws.com`, `amazonaws.com.cn` for `aws-cn`), over HTTPS, or a
    /// configured prefix. Compared as parsed URLs, never as strings: the scheme, host and port
    /// must be the prefix's, the path under the prefix's path, and the URL may carry no
    /// userinfo (`http://127.0.0.1:9000@evil.test/` starts with the string
    /// `http://127.0.0.1:9000` but is fetched from evil.test).
    pub fn allowed(&self, topic_arn: &str, url: &str) -> Result<(), Refused> {
        let refused = || Refused::Host(url.to_owned());
        let parsed = Url::parse(url).map_err(|_| refused())?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(refused());
        }
        let mut arn = topic_arn.split(':');
        let partition = arn.nth(1).unwrap_or_default();
        let region = arn.nth(1).unwrap_or_default();
        let domain = if partition == "aws-cn" {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        let sns = (!region.is_empty())
            .then(|| Url::parse(&format!("https://sns.{region}.{domain}/")).ok())
            .flatten();
        let configured = self
            .prefixes
            .iter()
            .filter(|p| !p.is_empty())
            .filter_map(|p| Url::parse(p).ok());
        if sns
            .into_iter()
            .chain(configured)
            .any(|p| under_prefix(&parsed, &p))
        {
            Ok(())
        } else {
            Err(refused())
        }
    }

    /// Confirms a subscription by fetching its SubscribeURL (already checked by [`Sns::allowed`]).
    pub async fn confirm(&self, url: &str) -> Result<(), String> {
        let r = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("SNS answered {}", r.status()))
        }
    }

    /// The key of the certificate at `url`, and whether it came from the cache of verified
    /// keys. A key not verified yet is fetched at most once at a time, at most
    /// [`CERT_FETCHES_PER_MINUTE`] in all, and its fetch's outcome (a failure too) is reused
    /// for [`RECENT_FETCH_TTL`].
    async fn key(&self, url: &str) -> Result<(RsaPublicKey, bool), Refused> {
        if let Some(k) = self.keys.lock().expect("key cache").get(url) {
            return Ok((k.clone(), true));
        }
        if let Some(outcome) = self.recent_fetch(url) {
            return outcome.map(|k| (k, false));
        }
        // Order matters: the lock first, then the look again, so that the messages that waited
        // for the first fetch use its outcome instead of fetching in turn.
        let _one = self.fetching.lock().await;
        if let Some(outcome) = self.recent_fetch(url) {
            return outcome.map(|k| (k, false));
        }
        if self.fetch_budget.check().is_err() {
            return Err(Refused::Unreachable(format!(
                "more than {CERT_FETCHES_PER_MINUTE} certificate fetches in a minute; not fetching {url} now"
            )));
        }
        let outcome = self.fetch_key(url).await;
        let mut recent = self.recent.lock().expect("recent fetches");
        if recent.len() >= RECENT_FETCHES {
            recent.retain(|_, (at, _)| at.elapsed() < RECENT_FETCH_TTL);
            if recent.len() >= RECENT_FETCHES {
                recent.clear();
            }
        }
        recent.insert(url.to_owned(), (Instant::now(), outcome.clone()));
        outcome.map(|k| (k, false))
    }

    /// What fetching `url` gave within [`RECENT_FETCH_TTL`], if it was fetched.
    fn recent_fetch(&self, url: &str) -> Option<Fetched> {
        let recent = self.recent.lock().expect("recent fetches");
        recent
            .get(url)
            .filter(|(at, _)| at.elapsed() < RECENT_FETCH_TTL)
            .map(|(_, outcome)| outcome.clone())
    }

    /// Fetches the certificate at `url` and takes its RSA key.
    async fn fetch_key(&self, url: &str) -> Result<RsaPublicKey, Refused> {
        let cert = |e: String| Refused::Certificate(e);
        let away = |e: reqwest::Error| Refused::Unreachable(e.to_string());
        let resp = self.http.get(url).send().await.map_err(away)?;
        let status = resp.status();
        // A 5xx may pass (SNS retries our 503); a 4xx will not: the URL is wrong, refuse.
        if status.is_server_error() {
            return Err(Refused::Unreachable(format!("{url} answered {status}")));
        }
        if !status.is_success() {
            return Err(cert(format!("{url} answered {status}")));
        }
        let pem = resp.text().await.map_err(away)?;
        let parsed = Certificate::from_pem(pem.as_bytes()).map_err(|e| cert(e.to_string()))?;
        let spki = parsed
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| cert(e.to_string()))?;
        RsaPublicKey::from_public_key_der(&spki).map_err(|e| cert(e.to_string()))
    }
}

/// Whether SNS's `Timestamp` (ISO 8601, `2026-11-22T10:00:00.000Z`) is at most
/// [`MAX_MESSAGE_AGE`] old and not more than [`MAX_CLOCK_AHEAD`] ahead of `now`.
fn fresh(timestamp: &str, now: DateTime<Utc>) -> bool {
    let Ok(at) = DateTime::parse_from_rfc3339(timestamp) else {
        return false;
    };
    let age = now.signed_duration_since(at.with_timezone(&Utc));
    let max_age = chrono::Duration::from_std(MAX_MESSAGE_AGE).expect("an hour");
    let ahead = chrono::Duration::from_std(MAX_CLOCK_AHEAD).expect("minutes");
    age <= max_age && age >= -ahead
}

/// SNS's certificates live at `/SimpleNotificationService-<hex>.pem`, without a query: any
/// other path on SNS's host is refused, so that a forger cannot make us fetch URL after URL.
fn sns_cert_path(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    let path = u.path();
    u.query().is_none()
        && u.fragment().is_none()
        && path
            .strip_prefix("/SimpleNotificationService-")
            .and_then(|p| p.strip_suffix(".pem"))
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// SNS's string to sign: `Name\nvalue\n` for the type's fields, in this order. A field SNS
/// requires for the type but that is missing makes the message unverifiable.
pub fn canonical(env: &Envelope) -> Result<String, Refused> {
    let mut out = String::new();
    let mut add = |name: &str, value: &str| {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    };
    match env.kind.as_str() {
        "Notification" => {
            add("Message", &env.message);
            add("MessageId", &env.message_id);
            if let Some(s) = &env.subject {
                add("Subject", s);
            }
            add("Timestamp", &env.timestamp);
            add("TopicArn", &env.topic_arn);
            add("Type", &env.kind);
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            let (Some(url), Some(token)) = (&env.subscribe_url, &env.token) else {
                return Err(Refused::Signature);
            };
            add("Message", &env.message);
            add("MessageId", &env.message_id);
            add("SubscribeURL", url);
            add("Timestamp", &env.timestamp);
            add("Token", token);
            add("TopicArn", &env.topic_arn);
            add("Type", &env.kind);
        }
        other => return Err(Refused::Type(other.to_owned())),
    }
    Ok(out)
}

/// Whether `url` lies under `prefix`: the same scheme, host and port, and a path that is the
/// prefix's path or continues it at a segment boundary.
fn under_prefix(url: &Url, prefix: &Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host_str() != prefix.host_str()
        || url.port_or_known_default() != prefix.port_or_known_default()
    {
        return false;
    }
    let base = prefix.path();
    match url.path().strip_prefix(base) {
        Some(rest) => base.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_counts_for_an_hour_and_may_run_a_little_ahead() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(fresh("2026-12-01T12:00:00.000Z", now));
        assert!(fresh("2026-12-01T11:00:00.000Z", now));
        assert!(!fresh("2026-12-01T10:59:59.999Z", now));
        assert!(fresh("2026-12-01T12:14:00Z", now), "clock skew");
        assert!(!fresh("2026-12-01T12:16:00Z", now));
        for bad in ["", "yesterday", "2026-12-01 12:00:00", "1700000000"] {
            assert!(!fresh(bad, now), "{bad:?}");
        }
    }

    fn envelope(kind: &str) -> Envelope {
        Envelope {
            kind: kind.into(),
            message_id: "m".into(),
            topic_arn: "arn:aws:sns:eu-west-1:123:ses".into(),
            message: "{}".into(),
            timestamp: "2026-11-22T10:00:00.000Z".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subject: None,
            subscribe_url: Some("https://sns.eu-west-1.amazonaws.com/?Action=Confirm".into()),
            token: Some("t".into()),
        }
    }

    #[test]
    fn the_canonical_string_follows_the_type() {
        assert_eq!(
            canonical(&envelope("Notification")).unwrap(),
            "Message\n{}\nMessageId\nm\nTimestamp\n2026-11-22T10:00:00.000Z\nTopicArn\narn:aws:sns:eu-west-1:123:ses\nType\nNotification\n"
        );
        let c = canonical(&envelope("SubscriptionConfirmation")).unwrap();
        assert!(c.contains("SubscribeURL\nhttps://sns.eu-west-1.amazonaws.com/?Action=Confirm\n"));
        assert!(c.contains("Token\nt\n"));
        assert!(canonical(&envelope("Other")).is_err());
    }

    #[test]
    fn only_sns_hosts_of_the_topics_region_or_configured_prefixes_are_allowed() {
        let sns = Sns::new(vec![], vec!["http://127.0.0.1:9/".into()]);
        let arn = "arn:aws:sns:eu-west-1:123:ses";
        assert!(
            sns.allowed(
                arn,
                "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem"
            )
            .is_ok()
        );
        assert!(sns.allowed(arn, "http://127.0.0.1:9/cert.pem").is_ok());
        assert!(sns_cert_path(
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
        ));
        for bad in [
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c64.pem?x=1",
            "https://sns.eu-west-1.amazonaws.com/other.pem",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-zz.pem",
        ] {
            assert!(!sns_cert_path(bad), "{bad}");
        }
        // A prefix without a trailing slash, as an operator may write one.
        let loose = Sns::new(vec![], vec!["http://127.0.0.1:9000".into()]);
        assert!(loose.allowed(arn, "http://127.0.0.1:9000/cert.pem").is_ok());
        for bad in [
            // The userinfo trick: fetched from evil.test.
            "http://127.0.0.1:9000@evil.test/cert.pem",
            "http://127.0.0.1:9000:x@evil.test/cert.pem",
            // Another port that the string prefix also matches.
            "http://127.0.0.1:90001/cert.pem",
            "http://127.0.0.1:90/cert.pem",
            "http://user@127.0.0.1:9000/cert.pem",
        ] {
            assert!(loose.allowed(arn, bad).is_err(), "{bad}");
        }
        let paths = Sns::new(vec![], vec!["http://127.0.0.1:9000/certs".into()]);
        assert!(
            paths
                .allowed(arn, "http://127.0.0.1:9000/certs/a.pem")
                .is_ok()
        );
        assert!(
            paths
                .allowed(arn, "http://127.0.0.1:9000/certs-evil/a.pem")
                .is_err()
        );
        // The China partition's host.
        let cn = "arn:aws-cn:sns:cn-north-1:123:ses";
        assert!(
            sns.allowed(
                cn,
                "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
            )
            .is_ok()
        );
        assert!(
            sns.allowed(cn, "https://sns.cn-north-1.amazonaws.com/x.pem")
                .is_err()
        );
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.test/x.pem",
            "https://evil.test/https://sns.eu-west-1.amazonaws.com/",
        ] {
            assert!(sns.allowed(arn, bad).is_err(), "{bad}");
        }
    }
}
