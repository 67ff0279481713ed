//! SES feedback through SNS, end to end: notifications signed in the test with a key and a
//! certificate it generates (rcgen), the certificate served from 127.0.0.1, and every path
//! of the endpoint against real PostgreSQL and RabbitMQ — suppression on bounce and complaint,
//! soft bounces, delivery outcomes, idempotence, and each way a message can be forged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use mailroom_testkit::app::{Settings, TestApp};

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:mailroom-ses";

/// A key pair and self-signed certificate (made with rcgen, no openssl needed), and a tiny
/// HTTP server for the certificate and for subscription URLs, which counts what was fetched.
struct Signer {
    key: rsa::RsaPrivateKey,
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Signer {
    async fn start() -> Self {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["sns.test".to_owned()]).unwrap();
        let cert = params.self_signed(&key_pair).unwrap().pem().into_bytes();
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&key_pair.serialize_der()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (h, cert) = (h.clone(), cert.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                    // A path with "missing" in it is not there: a certificate URL that 404s.
                    let (status, body): (&str, &[u8]) = if path.contains("missing") {
                        ("404 Not Found", b"no")
                    } else if path.ends_with(".pem") {
                        ("200 OK", &cert)
                    } else {
                        ("200 OK", b"ok")
                    };
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    let _ = s.write_all(body).await;
                });
            }
        });
        Self { key, base, hits }
    }

    fn cert_url(&self) -> String {
        format!("{}cert.pem", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Signs `text` with SHA1withRSA (version 1) or SHA256withRSA (version 2), base64.
    fn sign(&self, text: &str, version: &str) -> String {
        use rsa::signature::{SignatureEncoding, Signer as _};
        let signature = if version == "1" {
            rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(self.key.clone())
                .sign(text.as_bytes())
                .to_vec()
        } else {
            rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.key.clone())
                .sign(text.as_bytes())
                .to_vec()
        };
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(signature)
    }

    /// A signed Notification envelope carrying `message`.
    fn notification(&self, message: &Value, version: &str) -> Value {
        let mut env = json!({
            "Type": "Notification",
            "MessageId": uuid::Uuid::new_v4().to_string(),
            "TopicArn": TOPIC,
            "Message": message.to_string(),
            "Timestamp": now_timestamp(),
            "SignatureVersion": version,
            "SigningCertURL": self.cert_url(),
        });
        self.resign(&mut env);
        env
    }

    /// (Re)computes the signature over SNS's canonical string of `env` as it is now.
    fn resign(&self, env: &mut Value) {
        let mut unsigned = env.clone();
        unsigned["Signature"] = json!("");
        let parsed: ingest::sns::Envelope = serde_json::from_value(unsigned).unwrap();
        let text = ingest::sns::canonical(&parsed).unwrap();
        let version = env["SignatureVersion"].as_str().unwrap().to_owned();
        env["Signature"] = json!(self.sign(&text, &version));
    }
}

/// SNS's Timestamp of a message published now.
fn now_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn app_with_feedback(signer: &Signer) -> TestApp {
    TestApp::start(Settings {
        sns_topic_arns: vec![TOPIC.into()],
        sns_cert_url_prefixes: vec![signer.base.clone()],
        ..Settings::default()
    })
    .await
}

/// POSTs an envelope the way SNS does: text/plain, with its headers.
async fn deliver(app: &TestApp, env: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/ses/notifications", app.base))
        .header("content-type", "text/plain; charset=UTF-8")
        .header(
            "x-amz-sns-message-type",
            env["Type"].as_str().unwrap_or_default(),
        )
        .header("x-amz-sns-topic-arn", TOPIC)
        .body(env.to_string())
        .send()
        .await
        .unwrap()
}

async fn events(app: &TestApp) -> i64 {
    app.count("ses_events").await
}

fn bounce(message_id: &str, recipient: &str, kind: &str) -> Value {
    json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind, "bounceSubType": "General", "feedbackId": "fb-1",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "bouncedRecipients": [{"emailAddress": recipient, "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]
        },
        "mail": {"messageId": message_id, "destination": [recipient]}
    })
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_address_end_to_end() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    let sent = app.wait_for_status(job, "sent").await;
    let ses_id = sent.ses_message_id.unwrap();

    let env = signer.notification(&bounce(&ses_id, &email, "Permanent"), "1");
    let r = deliver(&app, &env).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let (kind, subtype, job_of, diag): (String, String, Option<uuid::Uuid>, String) =
        sqlx::query_as("SELECT type, subtype, job_id, diagnostic FROM ses_events")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), subtype.as_str()),
        ("bounce", "Permanent/General")
    );
    assert_eq!(job_of, Some(job));
    assert!(diag.contains("550"));
    let delivery: Option<String> =
        sqlx::query_scalar("SELECT delivery FROM sends WHERE job_id = $1")
            .bind(job)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(delivery.as_deref(), Some("bounced"));
    let user = app.user(&email).await;
    assert_eq!(user["email_status"], "suppressed");
    assert_eq!(user["suppression"]["reason"], "bounce");
    // A reset for it now sends nothing.
    app.post("/v1/password-resets", &json!({"email": email}))
        .await;
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM email_requests")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(outcome, "address_suppressed");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("mailroom_ses_events_total{type=\"bounce\"} 1"),
        "{metrics}"
    );
    // The certificate was fetched once, however many messages it signs.
    let again = signer.notification(&json!({"eventType": "Delivery", "delivery": {"recipients": [email]}, "mail": {"messageId": ses_id}}), "2");
    assert_eq!(deliver(&app, &again).await.status(), 200);
    assert_eq!(signer.hits("/cert.pem"), 1);
    // Delivered after bounced does not hide the bounce.
    let delivery: Option<String> =
        sqlx::query_scalar("SELECT delivery FROM sends WHERE job_id = $1")
            .bind(job)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(delivery.as_deref(), Some("bounced"));
}

#[tokio::test]
async fn complaints_suppress_except_not_spam_and_soft_bounces_after_the_limit() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let (annoyed, happy, flaky) = (app.unique_email(), app.unique_email(), app.unique_email());
    for (who, feedback) in [(&annoyed, "abuse"), (&happy, "not-spam")] {
        let m = json!({
            "eventType": "Complaint",
            "complaint": {"complaintFeedbackType": feedback, "complainedRecipients": [{"emailAddress": who}]},
            "mail": {"messageId": "never-sent-by-us"}
        });
        assert_eq!(
            deliver(&app, &signer.notification(&m, "2")).await.status(),
            200
        );
    }
    let reason = |email: String| {
        let pool = app.db.pool.clone();
        async move {
            mailroom::store::suppression(&pool, &email)
                .await
                .unwrap()
                .map(|s| s.reason)
        }
    };
    assert_eq!(reason(annoyed.clone()).await.as_deref(), Some("complaint"));
    assert_eq!(reason(happy.clone()).await, None);
    // An event for a message Mailroom never sent is recorded, without a job.
    let unowned: i64 = sqlx::query_scalar("SELECT count(*) FROM ses_events WHERE job_id IS NULL")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(unowned, 2);

    for n in 1..=3 {
        let env = signer.notification(&bounce(&format!("ses-{n}"), &flaky, "Transient"), "1");
        assert_eq!(deliver(&app, &env).await.status(), 200);
        let expected = (n == 3).then(|| "soft_bounce".to_owned());
        assert_eq!(
            reason(flaky.clone()).await,
            expected,
            "after {n} soft bounces"
        );
    }
}

#[tokio::test]
async fn the_same_notification_twice_is_recorded_once_and_unknown_types_are_kept() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let env = signer.notification(&bounce("ses-x", &app.unique_email(), "Permanent"), "2");
    assert_eq!(deliver(&app, &env).await.status(), 200);
    assert_eq!(deliver(&app, &env).await.status(), 200);
    assert_eq!(events(&app).await, 1);
    let odd = signer.notification(&json!({"eventType": "Subscription", "mail": {}}), "1");
    assert_eq!(deliver(&app, &odd).await.status(), 200);
    let kinds: Vec<String> = sqlx::query_scalar("SELECT type FROM ses_events ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(kinds, vec!["bounce", "subscription"]);
}

#[tokio::test]
async fn forged_or_foreign_messages_are_refused_and_record_nothing() {
    let signer = Signer::start().await;
    let foreign = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let message = bounce("ses-y", &app.unique_email(), "Permanent");

    // A signature by another key (the foreign signer's), over the right text.
    let mut forged = signer.notification(&message, "1");
    let parsed: ingest::sns::Envelope = serde_json::from_value(forged.clone()).unwrap();
    forged["Signature"] = json!(foreign.sign(&ingest::sns::canonical(&parsed).unwrap(), "1"));
    // A valid signature, but over other fields: the message was changed after signing.
    let mut altered = signer.notification(&message, "2");
    altered["Message"] =
        json!(bounce("ses-y", "someone-else@example.com", "Permanent").to_string());
    // A topic not in SNS_TOPIC_ARNS, correctly signed.
    let mut topic = signer.notification(&message, "1");
    topic["TopicArn"] = json!("arn:aws:sns:eu-west-1:123456789012:someone-elses");
    signer.resign(&mut topic);
    // A certificate on a host that is not allowed: must not even be fetched.
    let mut host = foreign.notification(&message, "1");
    host["SigningCertURL"] = json!(foreign.cert_url());
    foreign.resign(&mut host);
    // An unsupported signature version, and no signature at all.
    let mut version = signer.notification(&message, "1");
    version["SignatureVersion"] = json!("3");
    let mut unsigned = signer.notification(&message, "1");
    unsigned["Signature"] = json!("");

    for (what, env) in [
        ("forged", &forged),
        ("altered", &altered),
        ("topic", &topic),
        ("host", &host),
        ("version", &version),
        ("unsigned", &unsigned),
    ] {
        let r = deliver(&app, env).await;
        assert_eq!(r.status(), 403, "{what}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "forbidden", "{what}");
    }
    assert_eq!(
        foreign.hits("/cert.pem"),
        0,
        "nothing fetched from a foreign host"
    );
    assert_eq!(events(&app).await, 0);
    assert_eq!(app.count("suppressions").await, 0);

    let r = app
        .http
        .post(format!("{}/v1/ses/notifications", app.base))
        .header("content-type", "text/plain")
        .header("x-amz-sns-message-type", "Notification")
        .header("x-amz-sns-topic-arn", TOPIC)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_subscription_is_confirmed_by_fetching_its_url_and_the_endpoint_is_off_without_topics() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let mut env = json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "Timestamp": now_timestamp(),
        "SignatureVersion": "2",
        "SigningCertURL": signer.cert_url(),
        "SubscribeURL": format!("{}confirm?Token=abc", signer.base),
        "Token": "abc",
    });
    signer.resign(&mut env);
    assert_eq!(deliver(&app, &env).await.status(), 200);
    assert_eq!(signer.hits("/confirm?Token=abc"), 1);

    let off = TestApp::ingest_only().await;
    let r = deliver(&off, &env).await;
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_certificate_url_that_only_starts_like_an_allowed_prefix_is_refused_unfetched() {
    let signer = Signer::start().await;
    let forger = Signer::start().await;
    // The allowed prefix written without its trailing slash, as an operator may.
    let prefix = signer.base.trim_end_matches('/').to_owned();
    let app = TestApp::start(Settings {
        sns_topic_arns: vec![TOPIC.into()],
        sns_cert_url_prefixes: vec![prefix.clone()],
        ..Settings::default()
    })
    .await;
    let victim = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &victim).await;
    // The forger signs a hard bounce of the victim with their own key, and names a URL that
    // starts with the allowed prefix as a string but, its host being after the userinfo, is
    // fetched from the forger's server.
    let forger_host = forger
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut env = forger.notification(&bounce("ses-z", &victim, "Permanent"), "1");
    env["SigningCertURL"] = json!(format!("{prefix}@{forger_host}/cert.pem"));
    forger.resign(&mut env);
    let r = deliver(&app, &env).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        forger.hits("/cert.pem"),
        0,
        "the forger's certificate was fetched"
    );
    assert_eq!(events(&app).await, 0);
    assert_eq!(
        app.count("suppressions").await,
        0,
        "the victim was suppressed"
    );
}

#[tokio::test]
async fn a_burst_of_messages_naming_a_new_certificate_fetches_it_once() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let envelopes: Vec<Value> = (0..20)
        .map(|i| {
            signer.notification(
                &bounce(&format!("ses-burst-{i}"), &app.unique_email(), "Transient"),
                "2",
            )
        })
        .collect();
    let answers =
        futures_util::future::join_all(envelopes.iter().map(|env| deliver(&app, env))).await;
    for r in answers {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        signer.hits("/cert.pem"),
        1,
        "concurrent messages fetched again"
    );
}

#[tokio::test]
async fn a_certificate_that_cannot_be_fetched_is_not_fetched_again_by_every_message() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    for i in 0..5 {
        let mut env = signer.notification(
            &bounce(&format!("ses-m-{i}"), &app.unique_email(), "Permanent"),
            "1",
        );
        env["SigningCertURL"] = json!(format!("{}missing.pem", signer.base));
        signer.resign(&mut env);
        assert_eq!(deliver(&app, &env).await.status(), 403);
    }
    assert_eq!(signer.hits("/missing.pem"), 1);
    assert_eq!(events(&app).await, 0);
}

#[tokio::test]
async fn certificate_fetches_are_capped_per_minute_and_the_rest_answer_503() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let cap = ingest::sns::CERT_FETCHES_PER_MINUTE as usize;
    let mut statuses = Vec::new();
    for i in 0..cap + 5 {
        let mut env = signer.notification(
            &bounce(&format!("ses-c-{i}"), &app.unique_email(), "Transient"),
            "1",
        );
        env["SigningCertURL"] = json!(format!("{}cert-{i}.pem", signer.base));
        signer.resign(&mut env);
        let r = deliver(&app, &env).await;
        if r.status() == 503 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    let fetched: usize = (0..cap + 5)
        .map(|i| signer.hits(&format!("/cert-{i}.pem")))
        .sum();
    assert_eq!(fetched, cap, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        cap,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        5,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_message_older_than_an_hour_is_refused_and_records_nothing() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    let victim = app.unique_email();
    let mut env = signer.notification(&bounce("ses-old", &victim, "Permanent"), "2");
    let old = chrono::Utc::now() - chrono::Duration::minutes(61);
    env["Timestamp"] = json!(old.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    signer.resign(&mut env);
    let r = deliver(&app, &env).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Timestamp"),
        "{v}"
    );
    assert_eq!(events(&app).await, 0);
    assert_eq!(app.count("suppressions").await, 0);
}

#[tokio::test]
async fn the_sns_headers_are_checked_before_the_body_is_read() {
    let signer = Signer::start().await;
    let app = app_with_feedback(&signer).await;
    // Headers that announce a big body which never comes: a wrong topic is refused at once,
    // without waiting for (or buffering) the body.
    for (topic, kind) in [
        (
            "arn:aws:sns:eu-west-1:123456789012:someone-elses",
            "Notification",
        ),
        (TOPIC, "Surprise"),
        ("", ""),
    ] {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let mut head = "POST /v1/ses/notifications HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 300000\r\n".to_owned();
        if !topic.is_empty() {
            head.push_str(&format!(
                "x-amz-sns-topic-arn: {topic}\r\nx-amz-sns-message-type: {kind}\r\n"
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("answered before the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{topic:?} {kind:?}: {answer}"
        );
    }
    // An envelope whose topic is not its header's is refused too.
    let env = signer.notification(&bounce("ses-h", &app.unique_email(), "Permanent"), "1");
    let r = app
        .http
        .post(format!("{}/v1/ses/notifications", app.base))
        .header("content-type", "text/plain")
        .header("x-amz-sns-message-type", "SubscriptionConfirmation")
        .header("x-amz-sns-topic-arn", TOPIC)
        .body(env.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(events(&app).await, 0);
}

/// The calling service hears what became of its email: a job's status reads `sent`, then
/// `delivered` once SES's delivery notification arrives; its webhook receiver got `email.sent`
/// and `email.delivered`, each with the job, the user and the request's reference. A second
/// endpoint subscribed to bounces only got neither.
#[tokio::test]
async fn a_delivery_reaches_the_job_status_and_the_services_webhooks_with_its_reference() {
    use mailroom_testkit::WebhookReceiver;
    let signer = Signer::start().await;
    let (all, bounces) = (
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
    );
    let app = TestApp::start(Settings {
        sns_topic_arns: vec![TOPIC.into()],
        sns_cert_url_prefixes: vec![signer.base.clone()],
        webhooks: mailroom::webhook::WebhookArgs {
            webhook_urls: vec![all.url(), format!("{}#events=email.bounced", bounces.url())],
            webhook_events: Vec::new(),
            webhook_secret: Some(mailroom::config::Secret::new(
                "whsec_bWFpbHJvb20tdGVzdC1zZWNyZXQtb25lLTMyYnl0ZXM=",
            )),
            webhook_timeout: Duration::from_secs(5),
        },
        ..Settings::default()
    })
    .await;
    let email = app.unique_email();
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": email, "reference": "crm-7"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let job: uuid::Uuid = v["job_id"].as_str().unwrap().parse().unwrap();
    let sent = app.wait_for_status(job, "sent").await;
    let ses_id = sent.ses_message_id.unwrap();
    let status = |app: &TestApp| {
        let url = format!("{}/v1/jobs/{job}", app.base);
        let http = app.http.clone();
        async move {
            http.get(url)
                .bearer_auth(mailroom_testkit::app::API_KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let before = status(&app).await;
    assert_eq!(
        (before["status"].as_str(), before["delivery"].as_str()),
        (Some("sent"), None)
    );

    let note = json!({"eventType": "Delivery", "delivery": {"recipients": [email]}, "mail": {"messageId": ses_id}});
    let r = deliver(&app, &signer.notification(&note, "1")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let after = status(&app).await;
    assert_eq!(after["delivery"], "delivered", "{after}");
    assert_eq!(after["reference"], "crm-7");

    let got = mailroom_testkit::eventually(
        "email.sent and email.delivered",
        Duration::from_secs(30),
        || async {
            let types: Vec<Value> = all.received().iter().map(|r| r.json()).collect();
            (types
                .iter()
                .filter(|b| b["type"] == "email.sent" || b["type"] == "email.delivered")
                .count()
                >= 2)
                .then_some(types)
        },
    )
    .await;
    for t in ["email.sent", "email.delivered"] {
        let b = got
            .iter()
            .find(|b| b["type"] == t)
            .unwrap_or_else(|| panic!("{t}: {got:?}"));
        assert_eq!(b["data"]["job_id"], job.to_string(), "{b}");
        assert_eq!(b["data"]["user_id"], v["user_id"], "{b}");
        assert_eq!(b["data"]["reference"], "crm-7", "{b}");
        assert_eq!(b["data"]["email_kind"], "verification", "{b}");
        assert_eq!(b["data"]["ses_message_id"], ses_id.as_str(), "{b}");
    }
    // The bounce-only endpoint: nothing of these (given the time the other needed, and more).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        bounces.received().is_empty(),
        "{:?}",
        bounces
            .received()
            .iter()
            .map(|r| r.json())
            .collect::<Vec<_>>()
    );
}
