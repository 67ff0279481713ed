//! Webhooks end to end: events enqueued with the change they report, relayed, delivered by the
//! dispatcher with Standard Webhooks signatures, retried through a receiver's outage, dead-
//! lettered and replayed like emails; and the checks at start and `dispatcher webhooks test`.

use std::process::Command;
use std::time::Duration;

use dispatcher::dead::{self, Filter, ReplayOptions};
use mailroom::broker::Topology;
use mailroom::webhook::WebhookArgs;
use mailroom_testkit::{self as testkit, Answer, Received, WebhookReceiver};

use mailroom_testkit::app::{Settings, TestApp};

const SECRET_A: &str = "whsec_bWFpbHJvb20tdGVzdC1zZWNyZXQtb25lLTMyYnl0ZXM=";
const SECRET_B: &str = "whsec_bWFpbHJvb20tdGVzdC1zZWNyZXQtdHdvLTMyYnl0ZXM=";

/// Endpoints for `receiver`, subscribed to the account events (these tests count what they
/// get: the per-email delivery events have their own test, in ingest's feedback tests).
fn hooks_to(receiver: &WebhookReceiver, secrets: &str, timeout: Duration) -> WebhookArgs {
    WebhookArgs {
        webhook_urls: vec![receiver.url()],
        webhook_events: ["user.*", "password.*", "email.dead", "email.suppressed"]
            .map(String::from)
            .to_vec(),
        webhook_secret: Some(mailroom::config::Secret::new(secrets)),
        webhook_timeout: timeout,
    }
}

async fn app_with(receiver: &WebhookReceiver, settings: Settings) -> TestApp {
    TestApp::start(Settings {
        webhooks: hooks_to(receiver, SECRET_A, Duration::from_secs(5)),
        ..settings
    })
    .await
}

/// Waits until the receiver got a request that answers `pred`; returns it.
async fn wait_received(
    receiver: &WebhookReceiver,
    what: &str,
    pred: impl Fn(&Received) -> bool,
) -> Received {
    testkit::eventually(what, Duration::from_secs(30), || async {
        receiver.received().into_iter().find(|r| pred(r))
    })
    .await
}

fn of_type(r: &Received, t: &str) -> bool {
    r.json()["type"] == t
}

/// Checks a request the way a receiver following the spec does, with one secret.
fn verifies_with(r: &Received, secret: &str) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(r.body.as_bytes(), &r.headers)
        .is_ok()
}

/// Signs a person up and follows their verification link; returns (user id, address).
async fn sign_up_and_verify(app: &TestApp) -> (String, String) {
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    assert_eq!(app.follow(&link).await.status(), 200);
    (user_id.to_string(), email)
}

#[tokio::test]
async fn verification_and_password_change_reach_the_receiver_signed_with_every_secret() {
    let receiver = WebhookReceiver::start().await;
    let app = TestApp::start(Settings {
        webhooks: hooks_to(
            &receiver,
            &format!("{SECRET_A} {SECRET_B}"),
            Duration::from_secs(5),
        ),
        ..Settings::default()
    })
    .await;
    let (user_id, email) = sign_up_and_verify(&app).await;
    let got = wait_received(&receiver, "user.verified", |r| of_type(r, "user.verified")).await;

    let body = got.json();
    assert_eq!(body["data"]["user_id"], user_id.as_str());
    assert_eq!(body["data"]["email"], email.as_str());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(got.header("content-type"), "application/json");
    assert!(got.header("webhook-id").starts_with("msg_"), "{got:?}");
    let ts: i64 = got.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    // One `v1,` entry per secret, and each one checks out on its own (rotation).
    let entries: Vec<&str> = got.header("webhook-signature").split(' ').collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.starts_with("v1,")));
    assert!(verifies_with(&got, SECRET_A));
    assert!(verifies_with(&got, SECRET_B));
    // A receiver with another secret, or a body changed on the way, does not accept it.
    assert!(!verifies_with(
        &got,
        "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0zMmJ5dGVz"
    ));
    let mut tampered = got.clone();
    tampered.body = tampered.body.replace(&email, "someone@else.example");
    assert!(!verifies_with(&tampered, SECRET_A));

    // A reset that changes the password: password.changed, from the same transaction.
    let r = app
        .reset_password_by_email(&email, "a brand new secret")
        .await;
    assert_eq!(r.status(), 200);
    let changed = wait_received(&receiver, "password.changed", |r| {
        of_type(r, "password.changed")
    })
    .await;
    assert_eq!(changed.json()["data"]["user_id"], user_id.as_str());
    assert_eq!(changed.json()["data"]["email"], email.as_str());
    assert!(verifies_with(&changed, SECRET_A));
    assert_ne!(changed.header("webhook-id"), got.header("webhook-id"));
    // Each delivery is in the send log as a job of kind webhook.
    let (delivered,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM sends WHERE kind = 'webhook' AND status = 'sent' AND detail = 'HTTP 200'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(delivered, 2);
}

#[tokio::test]
async fn a_receiver_that_fails_hangs_or_refuses_gets_the_event_once_it_is_back() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer(Answer::Status(500));
    let app = TestApp::start(Settings {
        webhooks: hooks_to(&receiver, SECRET_A, Duration::from_millis(500)),
        retry_delays: vec![Duration::from_millis(300); 30],
        ..Settings::default()
    })
    .await;
    sign_up_and_verify(&app).await;
    let first = wait_received(&receiver, "a first attempt", |_| true).await;
    let job: uuid::Uuid = sqlx::query_scalar("SELECT job_id FROM sends WHERE kind = 'webhook'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let last_error = |needle: &'static str| {
        let pool = app.db.pool.clone();
        async move {
            testkit::eventually(
                &format!("a failed attempt saying {needle:?}"),
                Duration::from_secs(30),
                || {
                    let pool = pool.clone();
                    async move {
                        let rec = mailroom::store::find_send(&pool, job).await.unwrap()?;
                        let e = rec.last_error.unwrap_or_default();
                        e.contains(needle).then_some(e)
                    }
                },
            )
            .await
        }
    };
    let e = last_error("HTTP 500").await;
    assert!(e.contains("receiver says 500"), "{e}");

    // Hung: no answer within WEBHOOK_TIMEOUT.
    receiver.answer(Answer::Delay(Duration::from_secs(3)));
    last_error("no answer").await;
    // Gone: connections refused.
    receiver.stop_listening();
    let e = last_error("cannot reach").await;
    assert!(e.to_lowercase().contains("refused"), "{e}");
    // Back.
    receiver.answer(Answer::Status(200));
    receiver.listen_again().await;
    app.wait_for_status(job, "sent").await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let all = receiver.received();
    let delivered: Vec<_> = all.iter().filter(|r| r.answered == 200).collect();
    assert_eq!(delivered.len(), 1, "delivered once: {all:?}");
    // Every attempt carried the same id and the same bytes; each was signed afresh.
    assert!(
        all.iter()
            .all(|r| r.header("webhook-id") == first.header("webhook-id") && r.body == first.body)
    );
    assert!(verifies_with(delivered[0], SECRET_A));
    assert_eq!(app.count("sends WHERE status = 'dead'").await, 0);
}

#[tokio::test]
async fn a_webhook_that_runs_out_of_retries_is_dead_and_a_replay_delivers_it() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer(Answer::Status(503));
    let app = app_with(
        &receiver,
        Settings {
            retry_delays: vec![Duration::from_millis(100), Duration::from_millis(100)],
            ..Settings::default()
        },
    )
    .await;
    sign_up_and_verify(&app).await;
    let job: uuid::Uuid = testkit::eventually("the webhook job", Duration::from_secs(30), || {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar("SELECT job_id FROM sends WHERE kind = 'webhook'")
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    })
    .await;
    let dead_rec = app.wait_for_status(job, "dead").await;
    assert!(
        dead_rec
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("HTTP 503"),
        "{dead_rec:?}"
    );
    assert_eq!(receiver.received().len(), 3, "three attempts");
    // A dead webhook does not raise an email.dead of its own.
    assert_eq!(
        app.count("webhook_events WHERE type = 'email.dead'").await,
        0
    );

    // Listed with the dead emails, with its endpoint as the recipient...
    let conn = app.connect_broker().await;
    let topo = Topology::new(&app.queues.prefix);
    let letters = dead::list(&conn, &topo, 100).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind.as_deref(), Some("webhook"));
    assert_eq!(
        letters[0].recipient.as_deref(),
        Some(receiver.url().as_str())
    );

    // ...and replayed once the receiver is fixed: delivered, with the same webhook-id.
    receiver.answer(Answer::Status(204));
    let opts = ReplayOptions {
        filter: Filter::Jobs(vec![job.to_string()]),
        dry_run: false,
        rate: None,
    };
    let r = dead::replay(&conn, &topo, &opts, |_| {}).await.unwrap();
    assert_eq!(r.replayed, 1);
    app.wait_for_status(job, "sent").await;
    let all = receiver.received();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].answered, 204);
    assert_eq!(all[3].header("webhook-id"), all[0].header("webhook-id"));
}

#[tokio::test]
async fn a_dead_email_and_a_suppressed_address_are_announced() {
    let receiver = WebhookReceiver::start().await;
    // SES rejects the message: the verification email dies.
    let app = app_with(
        &receiver,
        Settings {
            ses_proxy: true,
            ..Settings::default()
        },
    )
    .await;
    app.ses_proxy()
        .set(testkit::HttpFault::Error(400, "MessageRejected".into()));
    let email = app.unique_email();
    let (user_id, job) = app.sign_up_job(&app.unique_name(), &email).await;
    let dead = wait_received(&receiver, "email.dead", |r| of_type(r, "email.dead")).await;
    let data = &dead.json()["data"];
    assert_eq!(data["user_id"], user_id.to_string());
    assert_eq!(data["email"], email.as_str());
    assert_eq!(data["email_kind"], "verification");
    assert_eq!(data["job_id"], job.to_string());
    assert_eq!(data["error_class"], "permanent");
    assert!(verifies_with(&dead, SECRET_A));

    // An operator suppresses the address with the CLI: email.suppressed.
    let out = Command::new(mailroom_testkit::bin_path("dispatcher"))
        .args(["suppressions", "add", &email, "--detail", "asked by phone"])
        .env("DATABASE_URL", &app.db.url)
        .env("WEBHOOK_URL", receiver.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let suppressed = wait_received(&receiver, "email.suppressed", |r| {
        of_type(r, "email.suppressed")
    })
    .await;
    let data = &suppressed.json()["data"];
    assert_eq!(data["email"], email.as_str());
    assert_eq!(data["user_id"], user_id.to_string());
    assert_eq!(data["reason"], "manual");
    // Adding it again changes nothing and announces nothing.
    let again = Command::new(mailroom_testkit::bin_path("dispatcher"))
        .args(["suppressions", "add", &email])
        .env("DATABASE_URL", &app.db.url)
        .env("WEBHOOK_URL", receiver.url())
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        app.count("webhook_events WHERE type = 'email.suppressed'")
            .await,
        1
    );
}

#[tokio::test]
async fn bad_webhook_settings_stop_both_services_at_start() {
    for (urls, secret, needle) in [
        (
            vec!["ftp://example.com/hooks"],
            Some(SECRET_A),
            "http:// or https://",
        ),
        (vec!["not a url"], Some(SECRET_A), "not a URL"),
        (vec!["https://example.com/hooks"], None, "WEBHOOK_SECRET"),
        (vec!["https://example.com/hooks"], Some("s3cr3t"), "whsec_"),
    ] {
        let mut app = TestApp::start(Settings {
            dispatcher: false,
            ..Settings::default()
        })
        .await;
        app.webhooks = WebhookArgs {
            webhook_urls: urls.iter().map(|u| u.to_string()).collect(),
            webhook_events: Vec::new(),
            webhook_secret: secret.map(mailroom::config::Secret::new),
            webhook_timeout: Duration::from_secs(5),
        };
        let err = dispatcher::run(
            app.dispatcher_config(),
            app.clock.clone(),
            testkit::sdk_config(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains(needle), "dispatcher: {err:#}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = ingest::run(
            listener,
            app.ingest_config(),
            app.clock.clone(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains(needle), "ingest: {err:#}");
        // Stopped before the next round: this runtime goes on, and a relay still running
        // would declare this round's queues again after their removal.
        app.stop().await;
    }
}

#[tokio::test]
async fn webhooks_test_pings_every_endpoint_and_says_which_failed() {
    let receiver = WebhookReceiver::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // tokio's Command: the receiver answers on this test's runtime meanwhile.
    let run = |urls: String| {
        tokio::process::Command::new(mailroom_testkit::bin_path("dispatcher"))
            .args(["webhooks", "test"])
            .env("WEBHOOK_URL", urls)
            .env("WEBHOOK_SECRET", SECRET_A)
            .env("WEBHOOK_TIMEOUT", "2s")
            .output()
    };
    let ok = run(receiver.url()).await.unwrap();
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        text.contains(&format!("ok      {}  HTTP 200", receiver.url())),
        "{text}"
    );
    let ping = wait_received(&receiver, "ping", |r| of_type(r, "ping")).await;
    assert!(verifies_with(&ping, SECRET_A));

    let mixed = run(format!("{},http://{closed}/hooks", receiver.url()))
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&mixed.stdout),
        String::from_utf8_lossy(&mixed.stderr)
    );
    assert!(!mixed.status.success(), "{text}");
    assert!(
        text.contains(&format!("FAILED  http://{closed}/hooks")),
        "{text}"
    );
    assert!(
        text.contains("1 endpoint(s) did not accept the ping"),
        "{text}"
    );

    let none = Command::new(mailroom_testkit::bin_path("dispatcher"))
        .args(["webhooks", "test"])
        .env_remove("WEBHOOK_URL")
        .env_remove("WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("WEBHOOK_URL is not set"));
}

#[tokio::test]
async fn webhook_urls_are_redacted_in_the_send_log_and_a_removed_endpoint_is_parked() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer(Answer::Status(503));
    // A receiver URL with credentials and a token, as receivers often take them.
    let secret_url = receiver
        .url()
        .replace("http://", "http://hook-user:hook-pass@")
        + "?token=s3cret-token";
    let mut app = TestApp::start(Settings {
        webhooks: WebhookArgs {
            webhook_urls: vec![secret_url.clone()],
            webhook_events: Vec::new(),
            ..hooks_to(&receiver, SECRET_A, Duration::from_secs(5))
        },
        retry_delays: vec![Duration::from_millis(100)],
        ..Settings::default()
    })
    .await;
    sign_up_and_verify(&app).await;
    let job: uuid::Uuid = testkit::eventually("a failed attempt", Duration::from_secs(30), || {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar(
                "SELECT job_id FROM sends WHERE kind = 'webhook' AND last_error IS NOT NULL",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    let rec = app.wait_for_status(job, "dead").await;
    let shown = format!("{:?} {:?}", rec.recipient, rec.last_error);
    for secret in ["hook-pass", "hook-user", "s3cret-token"] {
        assert!(!shown.contains(secret), "{secret} in the send log: {shown}");
    }
    assert!(shown.contains("/hooks?…"), "{shown}");

    // The endpoint is taken out of the dispatcher's WEBHOOK_URL: what is queued for it is
    // parked, not delivered, and listed.
    app.stop_dispatcher().await.unwrap();
    let before = receiver.received().len();
    receiver.answer(Answer::Status(204));
    app.webhooks.webhook_urls = vec![];
    app.start_dispatcher().await;
    let (_, email) = sign_up_and_verify(&app).await;
    let parked: uuid::Uuid = testkit::eventually("a parked delivery", Duration::from_secs(30), || {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar(
                "SELECT job_id FROM sends WHERE kind = 'webhook' AND status = 'skipped' AND detail LIKE 'parked%'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    assert_eq!(
        receiver.received().len(),
        before,
        "a removed endpoint got a delivery"
    );
    let out = Command::new(testkit::bin_path("dispatcher"))
        .args(["webhooks", "parked"])
        .env("DATABASE_URL", &app.db.url)
        .env("MAIL_FROM", &app.sender)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&parked.to_string()), "{text}");
    assert!(text.contains("user.verified"), "{text}");
    assert!(
        !text.contains("s3cret-token") && !text.contains("hook-pass"),
        "{text}"
    );
    let _ = email;
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_up_no_email() {
    let receiver = WebhookReceiver::start().await;
    // Longer than WEBHOOK_TIMEOUT: every attempt hangs until it times out.
    receiver.answer(Answer::Delay(Duration::from_secs(60)));
    let app = TestApp::start(Settings {
        webhooks: hooks_to(&receiver, SECRET_A, Duration::from_secs(10)),
        retry_delays: vec![Duration::from_secs(30)],
        ..Settings::default()
    })
    .await;
    // 200 pending events, as a `suppressions sync` that imports 200 addresses queues them.
    let endpoints = mailroom::events::Endpoints::parse(&app.webhooks.webhook_urls).unwrap();
    for i in 0..200 {
        let mut tx = app.db.pool.begin().await.unwrap();
        mailroom::store::webhooks::enqueue(
            &mut tx,
            &endpoints,
            &mailroom::events::Ping {
                message: format!("backlog {i}"),
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    // Deliveries under way (the receiver records a request once it has answered, so the send
    // log says when they started).
    testkit::eventually(
        "webhook deliveries hanging",
        Duration::from_secs(30),
        || {
            let pool = app.db.pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sends WHERE kind = 'webhook' AND status = 'sending'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (n >= 4).then_some(())
            }
        },
    )
    .await;
    // A signup now still gets its email at once: the webhooks hold slots of their own.
    let started = std::time::Instant::now();
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.moto.wait_for(&email, 1, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the email took {took:?}");
}
