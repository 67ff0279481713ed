//! The verification pipeline end to end: signup → outbox → RabbitMQ → dispatcher → moto →
//! link → verified.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use lapin::types::FieldTable;
use mailroom::broker::{self, Topology};
use mailroom::domain::{EmailAddress, Locale, UserName};
use mailroom::job::{Job, JobKind};
use mailroom::store::{self, NewUser};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use mailroom_testkit::app::{TestApp, token_of};

#[tokio::test]
async fn signup_sends_a_verification_email_whose_link_verifies_the_user() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let name = format!(
        "Ada <b> & {}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );

    let user_id = app.sign_up_ok(&name, &email).await;
    let msg = app.wait_for_email(&email).await;

    assert_eq!(msg.source, app.sender);
    let link = msg
        .link("/verify-email")
        .expect("the email has a verification link");
    let prefix = format!("{}/verify-email?token=", app.base);
    assert!(link.starts_with(&prefix), "{link}");
    let token = token_of(&link);
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    // The name is escaped in the HTML part.
    let escaped = name
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(msg.body.contains(&escaped), "{}", msg.body);
    assert!(!msg.body.contains("<b> &"));
    // Only the hash of the token is stored.
    let (stored,): (Option<String>,) = sqlx::query_as(
        "SELECT t.token_hash FROM users u
               JOIN link_tokens t ON t.user_id = u.id AND t.job_id = u.verification_job_id
              WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let stored = stored.expect("a token hash is stored");
    assert_ne!(stored, token);
    assert_eq!(stored, hex::encode(Sha256::digest(token.as_bytes())));
    assert_eq!(app.user(&email).await["email_verified"], false);

    let page = app.follow(&link).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(page.text().await.unwrap().contains("confirmed"));
    assert_eq!(app.user(&email).await["email_verified"], true);

    // The send log has the SES message id.
    let (status, ses_id): (String, Option<String>) =
        sqlx::query_as("SELECT status, ses_message_id FROM sends WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "sent");
    assert_eq!(ses_id.as_deref(), Some(msg.id.as_str()));
}

#[tokio::test]
async fn a_token_works_once_and_unknown_or_malformed_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    let token = token_of(
        &app.wait_for_email(&email)
            .await
            .link("/verify-email")
            .unwrap(),
    );

    let r = app
        .post("/v1/verifications", &json!({"token": token}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user_id"], user_id.to_string());
    assert_eq!(v["email"], email);

    let again = app
        .post("/v1/verifications", &json!({"token": token}))
        .await;
    assert_eq!(again.status(), 410);
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["error"]["code"], "token_used");

    let page = app
        .follow(&format!("{}/verify-email?token={token}", app.base))
        .await;
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("already used"));

    let unknown = "ab".repeat(32);
    let r = app
        .post("/v1/verifications", &json!({"token": unknown}))
        .await;
    assert_eq!(r.status(), 404);
    let page = app
        .follow(&format!("{}/verify-email?token={unknown}", app.base))
        .await;
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("not valid"));

    let r = app
        .post("/v1/verifications", &json!({"token": "short"}))
        .await;
    assert_eq!(r.status(), 422);
    for q in ["", "?token=", "?token=%3Cscript%3E", "?other=1"] {
        let page = app.follow(&format!("{}/verify-email{q}", app.base)).await;
        assert_eq!(page.status(), 400, "{q}");
        let body = page.text().await.unwrap();
        assert!(body.contains("incomplete"), "{q}");
        assert!(!body.contains("<script>"));
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();

    app.clock
        .advance(ChronoDuration::hours(24) + ChronoDuration::minutes(1));

    let page = app.follow(&link).await;
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("expired"));
    let r = app
        .post("/v1/verifications", &json!({"token": token_of(&link)}))
        .await;
    assert_eq!(r.status(), 410);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "token_expired");
    assert_eq!(app.user(&email).await["email_verified"], false);
}

#[tokio::test]
async fn a_job_delivered_twice_is_sent_once() {
    let mut app = TestApp::ingest_only().await;
    // One slot: deliveries are handled strictly in order, so once the sentinel is sent both
    // copies of the first job have been handled.
    app.send_concurrency = 1;
    let email = app.unique_email();
    let sentinel_email = app.unique_email();
    let job = make_user(&app, &email).await;
    let sentinel = make_user(&app, &sentinel_email).await;
    app.start_dispatcher().await;

    let conn = broker::connect(&mailroom_testkit::amqp_url(), "test")
        .await
        .unwrap();
    let ch = broker::confirm_channel(&conn).await.unwrap();
    let topo = Topology::new(&app.queues.prefix);
    topo.declare_work(&conn).await.unwrap();
    broker::publish_job(&ch, &topo, &job, FieldTable::default())
        .await
        .unwrap();
    broker::publish_job(&ch, &topo, &job, FieldTable::default())
        .await
        .unwrap();
    broker::publish_job(&ch, &topo, &sentinel, FieldTable::default())
        .await
        .unwrap();

    app.wait_for_status(sentinel.job_id, "sent").await;
    assert_eq!(app.moto.messages_to(&email).await.len(), 1);
    let rec = store::find_send(&app.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, "sent");
    app.stop_dispatcher().await.unwrap();
}

#[tokio::test]
async fn the_step_skips_users_who_are_gone_or_already_verified() {
    let app = TestApp::ingest_only().await;
    let worker = worker_for(&app);
    let gone = Job::new(
        JobKind::Verification,
        uuid::Uuid::new_v4(),
        Locale::default_locale(),
        app.clock.now(),
    );
    let out = worker.process(Ok(gone.clone()), None).await;
    assert!(
        matches!(out, dispatcher::worker::Outcome::Skipped { .. }),
        "{out:?}"
    );
    let rec = store::find_send(&app.db.pool, gone.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, "skipped");
    assert!(rec.detail.unwrap().contains("no longer exists"));

    let email = app.unique_email();
    let job = make_user(&app, &email).await;
    sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1")
        .bind(job.user_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let out = worker.process(Ok(job.clone()), None).await;
    assert!(
        matches!(out, dispatcher::worker::Outcome::Skipped { .. }),
        "{out:?}"
    );
    assert!(app.moto.messages_to(&email).await.is_empty());

    // Driving the same job again is a duplicate, not a second attempt.
    let out = worker.process(Ok(job), None).await;
    assert_eq!(out, dispatcher::worker::Outcome::Duplicate);
}

/// Creates a user directly in the store (with its outbox row) and returns its job.
pub async fn make_user(app: &TestApp, email: &str) -> Job {
    let job = Job::new(
        JobKind::Verification,
        uuid::Uuid::new_v4(),
        Locale::default_locale(),
        app.clock.now(),
    );
    let user = NewUser {
        name: UserName::parse(&app.unique_name()).unwrap(),
        email: EmailAddress::parse(email).unwrap(),
        hashed_password: None,
        locale: Locale::default_locale(),
    };
    // Mark the outbox row published so the relay does not also publish it.
    store::create_user_with_job(&app.db.pool, &user, &job)
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET published_at = now() WHERE job_id = $1")
        .bind(job.job_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    job
}

pub fn worker_for(app: &TestApp) -> dispatcher::worker::Worker {
    dispatcher::worker::Worker {
        pool: app.db.pool.clone(),
        ses: mailroom_testkit::ses_client(&app.ses_endpoint),
        templates: Arc::new(
            mailroom::templates::Templates::load(mailroom::templates::DEFAULT_DIR).unwrap(),
        ),
        clock: app.clock.clone(),
        mail_from: app.sender.clone(),
        configuration_set: None,
        public_url: app.base.clone(),
        reset_url: format!("{}/reset-password", app.base),
        verification_ttl: Duration::from_secs(86_400),
        reset_ttl: Duration::from_secs(3_600),
        sign_in_url: Some(format!("{}/app/sign-in", app.base)),
        sign_in_ttl: Duration::from_secs(900),
        invite_ttl: Duration::from_secs(7 * 86_400),
        codes: mailroom::config::Codes::off(),
        claim_lease: Duration::from_secs(10),
        rate: Arc::new(dispatcher::rate::SharedRate::fixed(100.0)),
        metrics: Arc::new(dispatcher::Metrics::default()),
        cancel: tokio_util::sync::CancellationToken::new(),
        webhooks: Arc::new(mailroom::webhook::Webhooks::from_args(&Default::default()).unwrap()),
        http: dispatcher::worker::webhook_client().unwrap(),
        batches: dispatcher::batch::Batches::new(
            app.db.pool.clone(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            Default::default(),
        ),
        service_time: Default::default(),
        records: Default::default(),
    }
}

/// A token statement that committed while its connection was lost (a failover, a restart) is
/// retried with the same hashes: the retry answers "stored" instead of failing with a unique
/// violation forever, which held the job (and its email) until it was dead-lettered (seen in
/// the switchover test).
#[tokio::test]
async fn storing_the_same_link_token_again_is_stored_not_a_conflict() {
    let app = TestApp::ingest_only().await;
    let job = make_user(&app, &app.unique_email()).await;
    let token = mailroom::domain::Token::generate();
    let new = store::NewLinkToken {
        job: job.clone(),
        hash: token.hash(),
        expires_at: app.clock.now() + chrono::Duration::hours(1),
    };
    let kind = store::TokenKind::Verification;
    let now = app.clock.now();
    let first = store::set_link_tokens(&app.db.pool, kind, std::slice::from_ref(&new), now).await;
    assert_eq!(first.unwrap(), [true]);
    let again = store::set_link_tokens(&app.db.pool, kind, std::slice::from_ref(&new), now).await;
    assert_eq!(again.unwrap(), [true], "the retry of a committed statement");
    assert_eq!(app.count("link_tokens").await, 1);
}
