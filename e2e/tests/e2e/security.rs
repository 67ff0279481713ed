//! Abuse and the links' safety: addresses SES cannot take, link scanners (HEAD, click mode),
//! made-up and superseded reset tokens, a used reset link never re-sent, and a flood of
//! password requests bounded in memory.

use std::process::{Command, Stdio};
use std::time::Duration;

use mailroom::domain::Token;
use mailroom::job::Job;
use mailroom_testkit as testkit;
use serde_json::{Value, json};

use mailroom_testkit::app::{API_KEY, Settings, TestApp, token_of};

#[tokio::test]
async fn a_newer_reset_request_invalidates_the_links_of_older_ones() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    app.wait_for_status(job, "sent").await;
    app.post("/v1/password-resets", &json!({"email": email}))
        .await;
    let first = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await[1]
        .link("/reset-password")
        .unwrap();
    // The per-address limit allows one a minute: move the clock past it.
    app.clock.advance(chrono::Duration::seconds(61));
    app.post("/v1/password-resets", &json!({"email": email}))
        .await;
    let second = app.moto.wait_for(&email, 3, Duration::from_secs(30)).await[2]
        .link("/reset-password")
        .unwrap();
    assert_eq!(app.follow(&first).await.status(), 404);
    assert_eq!(app.follow(&second).await.status(), 200);
}

#[tokio::test]
async fn addresses_ses_cannot_take_are_refused_and_idn_domains_are_one_address() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/signups",
        "/v1/verifications/resend",
        "/v1/password-resets",
    ] {
        let body = if path == "/v1/signups" {
            json!({"name": app.unique_name(), "email": "jürgen@example.com"})
        } else {
            json!({"email": "jürgen@example.com"})
        };
        let r = app.post(path, &body).await;
        assert_eq!(r.status(), 422, "{path}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["fields"]["email"].as_str().unwrap_or_default();
        assert!(msg.contains("non-ASCII"), "{path}: {v}");
    }

    let local = format!("leser{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let unicode = format!("{local}@bücher.test");
    let ascii = format!("{local}@xn--bcher-kva.test");
    let (user, job) = app.sign_up_job(&app.unique_name(), &unicode).await;
    app.wait_for_status(job, "sent").await;
    // The other spelling is the same address (verified, so not taken over).
    sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1")
        .bind(user)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": ascii}),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(app.user(&unicode).await["email"], ascii);
    assert_eq!(
        app.moto.messages_to(&ascii).await.len(),
        1,
        "sent as punycode"
    );
}

#[tokio::test]
async fn head_on_a_verification_link_does_not_consume_it() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    for _ in 0..3 {
        let r = app.http.head(&link).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.user(&email).await["email_verified"], false);
    assert_eq!(app.follow(&link).await.status(), 200);
    assert_eq!(app.user(&email).await["email_verified"], true);
    assert_eq!(app.http.head(&link).send().await.unwrap().status(), 410);
}

#[tokio::test]
async fn in_click_mode_opening_the_link_shows_a_button_and_only_its_post_verifies() {
    let app = TestApp::start(Settings {
        verify_link_mode: ingest::VerifyLinkMode::Click,
        ..Settings::default()
    })
    .await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    // A scanner opens it, twice.
    for _ in 0..2 {
        let page = app.follow(&link).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("<form method=\"post\""), "{html}");
    }
    assert_eq!(app.user(&email).await["email_verified"], false);
    let r = app
        .http
        .post(format!("{}/verify-email", app.base))
        .form(&[("token", token_of(&link))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("confirmed"));
    assert_eq!(app.user(&email).await["email_verified"], true);
}

#[tokio::test]
async fn made_up_reset_tokens_are_refused_without_hashing_anything() {
    let app = TestApp::ingest_only().await;
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let (http, base) = (app.http.clone(), app.base.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/v1/password-resets/confirm"))
                .json(&json!({"token": Token::generate().expose(), "password": "a guess 12345"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 404);
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("mailroom_password_hashes_total{outcome=\"done\"} 0")
            || !metrics.contains("mailroom_password_hashes_total{outcome=\"done\"}"),
        "{metrics}"
    );
}

/// A reset token for `email`'s user, written straight into the database as the dispatcher would.
async fn plant_reset_token(app: &TestApp, user_id: uuid::Uuid) -> Token {
    let token = Token::generate();
    let job = uuid::Uuid::new_v4();
    sqlx::query(
        "UPDATE users SET reset_job_id = $2, reset_job_at = now(),
                          reset_token_expiry = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(user_id)
    .bind(job)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO link_tokens (token_hash, user_id, kind, job_id, expires_at, created_at)
         VALUES ($1, $2, 'reset', $3, now() + interval '1 hour', now())",
    )
    .bind(token.hash().as_str())
    .bind(user_id)
    .bind(job)
    .execute(&app.db.pool)
    .await
    .unwrap();
    token
}

/// Peak resident memory of a process, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status")
        * 1024
}

#[tokio::test]
async fn a_flood_of_password_requests_is_bounded_and_ingest_stays_responsive() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    let token = plant_reset_token(&app, user_id).await;

    // The real binary, so that its memory is its own.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let bin = mailroom_testkit::bin_path("ingest");
    let ingest = Command::new(bin)
        .env("DATABASE_URL", &app.db.url)
        .env("AMQP_URL", &app.amqp_url)
        .env("QUEUE_PREFIX", &app.queues.prefix)
        .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
        .env("INGEST_API_KEYS", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ingest = testkit::KillOnDrop(ingest);
    let http = reqwest::Client::new();
    testkit::eventually("ingest up", Duration::from_secs(30), || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    // 300 anonymous requests at once, each with a valid token: every one passes the token check
    // and asks for an argon2 hash.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let (http, base, t) = (http.clone(), base.clone(), token.expose().to_owned());
        flood.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/password-resets/confirm"))
                .json(&json!({"token": t, "password": "flood password 1"}))
                .send()
                .await
                .unwrap();
            let retry_after = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry_after)
        }));
    }
    // Meanwhile: health answers, and a signup without a password is accepted.
    let started = std::time::Instant::now();
    let health = http
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let health_took = started.elapsed();
    assert_eq!(health.status(), 200);
    let signup = http
        .post(format!("{base}/v1/signups"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": app.unique_name(), "email": app.unique_email()}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 202);

    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for t in flood {
        let (status, retry_after) = t.await.unwrap();
        if status == 503 {
            assert!(retry_after, "503 comes with Retry-After");
        }
        *by_status.entry(status).or_default() += 1;
    }
    let rss = peak_rss(ingest.id());
    let _ = ingest.kill();
    let _ = ingest.wait();
    eprintln!(
        "flood: {by_status:?}; /healthz took {health_took:?}; peak RSS {} MB",
        rss / 1_000_000
    );
    assert_eq!(
        by_status.get(&200),
        Some(&1),
        "one request changed it: {by_status:?}"
    );
    assert!(
        by_status.get(&503).copied().unwrap_or(0) >= 200,
        "most were refused at once: {by_status:?}"
    );
    assert!(rss < 300_000_000, "peak RSS {rss} bytes");
}

#[tokio::test]
async fn a_retry_of_a_reset_whose_link_was_used_sends_no_new_link() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let signup = crate::signup::make_user(&app, &email).await;
    let reset = Job::new(
        mailroom::job::JobKind::PasswordReset,
        signup.user_id,
        mailroom::domain::Locale::default_locale(),
        chrono::Utc::now(),
    );
    let worker = crate::signup::worker_for(&app);
    let first = worker.process(Ok(reset.clone()), None).await;
    assert!(
        matches!(first, dispatcher::worker::Outcome::Sent { .. }),
        "{first:?}"
    );
    let link = app.moto.wait_for(&email, 1, Duration::from_secs(10)).await[0]
        .link("/reset-password")
        .unwrap();
    let r = app
        .http
        .post(format!("{}/v1/password-resets/confirm", app.base))
        .json(&json!({"token": token_of(&link), "password": "a new password 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // As if the first SES call had timed out (it arrived all the same) and the ladder retries.
    sqlx::query("UPDATE sends SET status = 'retrying' WHERE job_id = $1")
        .bind(reset.job_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let again = worker.process(Ok(reset.clone()), None).await;
    assert!(
        matches!(again, dispatcher::worker::Outcome::Skipped { .. }),
        "{again:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.moto.messages_to(&email).await.len(),
        1,
        "no second link"
    );
}
