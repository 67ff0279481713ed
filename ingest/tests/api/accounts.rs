//! Password reset, resend, per-address limits, locales, and secrets kept out of logs.

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use serde_json::{Value, json};

use mailroom_testkit::app::{TestApp, token_of};

async fn request_reset(app: &TestApp, email: &str) -> (u16, String) {
    let r = app
        .post("/v1/password-resets", &json!({"email": email}))
        .await;
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Signs a new person up, asks for a reset, and returns their address and the reset link.
async fn reset_link_for_new_user(app: &TestApp) -> (String, String) {
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    request_reset(app, &email).await;
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let reset = msgs
        .iter()
        .find(|m| m.subject == "Reset your password")
        .expect("a reset email");
    (email, reset.link("/reset-password").expect("a reset link"))
}

async fn password_verifies(app: &TestApp, email: &str, password: &str) -> bool {
    let (hash,): (String,) = sqlx::query_as("SELECT hashed_password FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    mailroom::domain::Password::parse(password)
        .unwrap()
        .verify(&hash)
}

#[tokio::test]
async fn reset_for_unknown_and_known_addresses_answers_alike() {
    let app = TestApp::spawn().await;
    let known = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &known).await;
    app.wait_for_email(&known).await;

    let a = request_reset(&app, &known).await;
    let b = request_reset(&app, &app.unique_email()).await;
    assert_eq!(a, (202, r#"{"status":"accepted"}"#.to_string()));
    assert_eq!(a, b, "the answer reveals nothing");
    let msgs = app.moto.wait_for(&known, 2, Duration::from_secs(30)).await;
    assert!(msgs.iter().any(|m| m.subject == "Reset your password"));
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM email_requests ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["queued", "unknown_address"]);
    // Bad input still gets its error.
    let r = app
        .post("/v1/password-resets", &json!({"email": "nope"}))
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .http
        .post(format!("{}/v1/password-resets", app.base))
        .json(&json!({"email": known}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_reset_page_never_consumes_the_token_and_the_token_works_once() {
    let app = TestApp::spawn().await;
    let (email, link) = reset_link_for_new_user(&app).await;
    assert!(
        link.starts_with(&format!("{}/reset-password?token=", app.base)),
        "{link}"
    );
    let token = token_of(&link);

    // A mail scanner and then the person open the page: both get the form.
    for _ in 0..2 {
        let page = app.follow(&link).await;
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert!(
            page.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("form-action 'self'")
        );
        let body = page.text().await.unwrap();
        assert!(
            body.contains("<form method=\"post\" action=\"/v1/password-resets/confirm\""),
            "{body}"
        );
    }

    // A weak password is refused and the token survives.
    let r = app
        .post(
            "/v1/password-resets/confirm",
            &json!({"token": token, "password": "short"}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["fields"]["password"].is_string());

    // The form posts; it works once.
    let form = [
        ("token", token.as_str()),
        ("password", "a new long password"),
    ];
    let r = app
        .http
        .post(format!("{}/v1/password-resets/confirm", app.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("password was changed"));
    assert!(password_verifies(&app, &email, "a new long password").await);
    assert!(!password_verifies(&app, &email, "correct horse battery").await);

    let r = app
        .post(
            "/v1/password-resets/confirm",
            &json!({"token": token, "password": "another long one"}),
        )
        .await;
    assert_eq!(r.status(), 410);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "token_used");
    assert_eq!(app.follow(&link).await.status(), 410);
    assert!(password_verifies(&app, &email, "a new long password").await);

    // The "your password was changed" notice.
    let msgs = app.moto.wait_for(&email, 3, Duration::from_secs(30)).await;
    assert!(
        msgs.iter()
            .any(|m| m.subject == "Your password was changed")
    );

    // Unknown and malformed tokens.
    let r = app
        .post(
            "/v1/password-resets/confirm",
            &json!({"token": "cd".repeat(32), "password": "long enough!"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        app.follow(&format!(
            "{}/reset-password?token={}",
            app.base,
            "cd".repeat(32)
        ))
        .await
        .status(),
        404
    );
    assert_eq!(
        app.follow(&format!("{}/reset-password", app.base))
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn the_reset_form_says_why_a_password_was_refused() {
    let app = TestApp::spawn().await;
    let (email, link) = reset_link_for_new_user(&app).await;
    let token = token_of(&link);
    // As first shown, the form has no error.
    let page = app.follow(&link).await.text().await.unwrap();
    assert!(!page.contains("role=\"alert\""), "{page}");

    let confirm = format!("{}/v1/password-resets/confirm", app.base);
    let r = app
        .http
        .post(&confirm)
        .form(&[("token", token.as_str()), ("password", "short")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains(
            "<p class=\"error\" role=\"alert\">The password must be at least 8 characters.</p>"
        ),
        "{body}"
    );
    assert!(
        body.contains("<form method=\"post\" action=\"/v1/password-resets/confirm\""),
        "the same form: {body}"
    );
    assert!(
        body.contains(&format!("value=\"{token}\"")),
        "the form keeps the token: {body}"
    );

    // Refusing the password consumed nothing: the link still works with a good one.
    let r = app
        .http
        .post(&confirm)
        .form(&[
            ("token", token.as_str()),
            ("password", "a long enough password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(password_verifies(&app, &email, "a long enough password").await);
}

#[tokio::test]
async fn an_expired_reset_link_is_refused() {
    let app = TestApp::spawn().await;
    let (_, link) = reset_link_for_new_user(&app).await;
    app.clock.advance(ChronoDuration::minutes(61));
    assert_eq!(app.follow(&link).await.status(), 410);
    let r = app
        .post(
            "/v1/password-resets/confirm",
            &json!({"token": token_of(&link), "password": "long enough!"}),
        )
        .await;
    assert_eq!(r.status(), 410);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "token_expired");
}

#[tokio::test]
async fn resend_invalidates_the_earlier_link_and_skips_verified_or_unknown_addresses() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let first = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();

    let r = app
        .post("/v1/verifications/resend", &json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let second = msgs[1].link("/verify-email").unwrap();
    assert_ne!(first, second);

    assert_eq!(
        app.follow(&first).await.status(),
        404,
        "the earlier link stopped working"
    );
    assert_eq!(app.follow(&second).await.status(), 200);

    // Verified and unknown addresses: the same 202, nothing sent.
    let r = app
        .post("/v1/verifications/resend", &json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .post(
            "/v1/verifications/resend",
            &json!({"email": app.unique_email()}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM email_requests ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["queued", "already_verified", "unknown_address"]);
    assert_eq!(app.moto.messages_to(&email).await.len(), 2);
}

#[tokio::test]
async fn thirty_reset_requests_for_one_address_send_at_most_the_limit() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(request_reset(&app, &email).await);
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every answer alike"
    );
    let (queued, suppressed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome = 'queued'), count(*) FILTER (WHERE outcome = 'suppressed')
           FROM email_requests",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((queued, suppressed), (1, 29));
    // After a minute one more is allowed; after five in the hour, none.
    for i in 0..6 {
        app.clock.advance(ChronoDuration::seconds(61));
        request_reset(&app, &email).await;
        let queued: i64 =
            sqlx::query_scalar("SELECT count(*) FROM email_requests WHERE outcome = 'queued'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(queued, (i + 2).min(5), "after {} minutes", i + 1);
    }
    let job: uuid::Uuid = sqlx::query_scalar(
        "SELECT job_id FROM email_requests WHERE outcome = 'queued' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    app.wait_for_status(job, "sent").await;
    // Each of the five is sent, or skipped because a newer reset request replaced it before it
    // went out (its link would not work any more): never more than five emails.
    let (sent, superseded): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent'),
                count(*) FILTER (WHERE status = 'skipped' AND detail LIKE '%newer reset request%')
           FROM sends WHERE kind = 'password_reset'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sent + superseded, 5, "sent {sent}, superseded {superseded}");
    let resets = app
        .moto
        .messages_to(&email)
        .await
        .iter()
        .filter(|m| m.subject == "Reset your password")
        .count();
    assert_eq!(resets as i64, sent);
}

#[tokio::test]
async fn locales_pick_the_template_with_a_fallback_to_english() {
    let app = TestApp::spawn().await;
    let de = app.unique_email();
    let fr = app.unique_email();
    for (email, locale) in [(&de, "de"), (&fr, "fr-CA")] {
        let r = app
            .post(
                "/v1/signups",
                &json!({"name": app.unique_name(), "email": email, "locale": locale}),
            )
            .await;
        assert_eq!(r.status(), 202);
    }
    let m = app.wait_for_email(&de).await;
    assert!(
        m.subject
            .starts_with("Bitte bestätige deine E-Mail-Adresse"),
        "{}",
        m.subject
    );
    assert!(m.body.contains("24 Stunden"));
    let m = app.wait_for_email(&fr).await;
    assert!(
        m.subject.starts_with("Confirm your email address"),
        "{}",
        m.subject
    );
    // The reset email follows the user's stored locale.
    request_reset(&app, &de).await;
    let msgs = app.moto.wait_for(&de, 2, Duration::from_secs(30)).await;
    assert!(
        msgs.iter()
            .any(|m| m.subject == "Setze dein Passwort zurück")
    );
}

#[tokio::test]
async fn tokens_passwords_and_api_keys_never_appear_in_the_logs() {
    // The real binaries, at debug level, through signup, verification and a password reset.
    let app = TestApp::start(mailroom_testkit::app::Settings {
        dispatcher: false,
        ..Default::default()
    })
    .await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let logs = std::env::temp_dir().join(format!("mailroom-logs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs).unwrap();
    let api_key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let spawn = |args: &[&str], log: &str| {
        // ingest is built next to the dispatcher binary (same workspace, same target dir).
        let bin = mailroom_testkit::bin_path(args[0]);
        assert!(bin.exists(), "build ingest first: {}", bin.display());
        let child = Command::new(bin)
            .args(&args[1..])
            .env("DATABASE_URL", &app.db.url)
            .env("AMQP_URL", &app.amqp_url)
            .env("QUEUE_PREFIX", &app.queues.prefix)
            .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env("INGEST_API_KEYS", &api_key)
            .env("MAIL_FROM", &app.sender)
            .env("PUBLIC_URL", &base)
            .env("SES_ENDPOINT_URL", &app.ses_endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("DISPATCHER_METRICS_LISTEN", "off")
            .env("CODE_SECRET", mailroom_testkit::app::CODE_SECRET)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join(log)).unwrap())
            .spawn()
            .unwrap();
        mailroom_testkit::KillOnDrop(child)
    };
    let mut ingest = spawn(&["ingest"], "ingest.log");
    let mut dispatcher = spawn(&["dispatcher", "run"], "dispatcher.log");
    let http = reqwest::Client::new();
    mailroom_testkit::eventually("ingest up", Duration::from_secs(30), || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    let email = app.unique_email();
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{base}/v1/signups"))
        .bearer_auth(&api_key)
        .json(&json!({"name": app.unique_name(), "email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let verify = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    assert_eq!(http.get(&verify).send().await.unwrap().status(), 200);
    // A link and a code: neither may be logged (handlebars logs its helpers' values at DEBUG).
    http.post(format!("{base}/v1/password-resets"))
        .bearer_auth(&api_key)
        .json(&json!({"email": email, "method": "both"}))
        .send()
        .await
        .unwrap();
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let reset = msgs.iter().find_map(|m| m.link("/reset-password")).unwrap();
    let code = msgs
        .iter()
        .find_map(|m| m.code())
        .expect("the reset email's code");
    let new_password = format!("new-{}", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{base}/v1/password-resets/confirm"))
        .json(&json!({"token": token_of(&reset), "password": new_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.moto.wait_for(&email, 3, Duration::from_secs(30)).await;

    for child in [&mut ingest, &mut dispatcher] {
        mailroom_testkit::terminate(child);
        child.wait().unwrap();
    }
    let text = std::fs::read_to_string(logs.join("ingest.log")).unwrap()
        + &std::fs::read_to_string(logs.join("dispatcher.log")).unwrap();
    assert!(
        text.contains("signup accepted") && text.contains("sent"),
        "the logs were captured"
    );
    for (what, secret) in [
        ("the verification token", token_of(&verify)),
        ("the reset token", token_of(&reset)),
        ("the password", password),
        ("the new password", new_password),
        ("the API key", api_key),
        ("CODE_SECRET", mailroom_testkit::app::CODE_SECRET.to_owned()),
    ] {
        // Which one, never its value: the failure message must not leak it either.
        let at = text.find(&secret).map(|i| text[..i].lines().count());
        assert_eq!(
            at, None,
            "{what} appeared in the logs (at that line number)"
        );
    }
    // Six digits turn up in timestamps (`.881503Z`): only a run of exactly these digits that
    // is not a fraction of a second counts.
    let bytes = text.as_bytes();
    let logged = text.match_indices(&code).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + code.len()).copied();
        !before.is_some_and(|b| b.is_ascii_digit() || b == b'.')
            && !after.is_some_and(|b| b.is_ascii_digit())
    });
    assert!(!logged, "the one-time code appeared in the logs");
    std::fs::remove_dir_all(logs).unwrap();
}

#[tokio::test]
async fn concurrent_confirmations_of_one_reset_token_cost_one_hash() {
    let app = TestApp::spawn().await;
    let (_, link) = reset_link_for_new_user(&app).await;
    let token = token_of(&link);
    let before = app.password_hashes_done().await;
    let tries = (0..10).map(|n| {
        let (app, token) = (&app, token.clone());
        async move {
            let r = app
                .post(
                    "/v1/password-resets/confirm",
                    &json!({"token": token, "password": format!("a new password {n}")}),
                )
                .await;
            let status = r.status().as_u16();
            if status == 503 {
                assert!(r.headers().get("retry-after").is_some());
            }
            status
        }
    });
    let mut statuses = futures_util::future::join_all(tries).await;
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 410, 503].contains(s)),
        "{statuses:?}"
    );
    let after = app.password_hashes_done().await;
    assert_eq!(
        after - before,
        1,
        "argon2 hashes for one token: {statuses:?}"
    );
}
