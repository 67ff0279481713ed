//! Amazon SNS's HTTP(S) delivery, as SES feedback arrives: the envelope, and its
//! authentication. SNS signs every message with a key whose certificate it publishes; this
//! module owns checking that signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA, over
//! SNS's canonical string for the message type), the rule for where a certificate or a
//! subscription URL may be fetched from, and the certificate cache. It never fetches from a host
//! the rule does not allow, and never trusts a message it could not verify.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
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
#[derive(Debug, thiserror::Error)]
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
}

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
        }
    }

    /// Checks topic, version, certificate host and signature, in that order: the cheap checks
    /// first, and nothing is fetched for a message that fails them.
    pub async fn verify(&self, env: &Envelope) -> Result<(), Refused> {
        if !self.topics.iter().any(|t| t == &env.topic_arn) {
            return Err(Refused::Topic(env.topic_arn.clone()));
        }
        if env.signature_version != "1" && env.signature_version != "2" {
            return Err(Refused::Version(env.signature_version.clone()));
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

    /// The key of the certificate at `url`, and whether it came from the cache.
    async fn key(&self, url: &str) -> Result<(RsaPublicKey, bool), Refused> {
        if let Some(k) = self.keys.lock().expect("key cache").get(url) {
            return Ok((k.clone(), true));
        }
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
        let key = RsaPublicKey::from_public_key_der(&spki).map_err(|e| cert(e.to_string()))?;
        Ok((key, false))
    }
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
