//! Checking a login, as the calling service does: the right password works, every failure
//! looks the same (and costs the same argon2 work), a flood on one address locks it, and a
//! password reset takes effect.

use serde_json::{Value, json};

use mailroom_testkit::app::TestApp;

const PASSWORD: &str = "correct horse battery";

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post("/v1/logins", &json!({"email": email, "password": password}))
        .await
}

/// `mailroom_password_hashes_total{outcome="done"}` as ingest reports it.
#[tokio::test]
async fn the_right_password_logs_in_and_every_failure_looks_the_same() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    let r = login(
        &app,
        &email.to_uppercase().replace("@EXAMPLE.COM", "@example.com"),
        PASSWORD,
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user_id"], user_id.to_string());
    assert_eq!(v["email_verified"], false);

    // A user without a password (signed up without one).
    let passwordless = app.unique_email();
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": passwordless}),
        )
        .await;
    assert_eq!(r.status(), 202);

    let before = app.password_hashes_done().await;
    let mut bodies = Vec::new();
    for (who, password) in [
        (email.as_str(), "wrong horse battery"),
        ("nobody-here@example.com", PASSWORD),
        (passwordless.as_str(), PASSWORD),
    ] {
        let r = login(&app, who, password).await;
        assert_eq!(r.status(), 401, "{who}");
        assert!(r.headers().get("www-authenticate").is_none());
        // Alike but for the request's own id.
        let mut v: Value = r.json().await.unwrap();
        assert!(v["error"]["request_id"].is_string());
        v["error"].as_object_mut().unwrap().remove("request_id");
        bodies.push(v.to_string());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
    assert!(bodies[0].contains("invalid_credentials"));
    // Each of the three did an argon2 check, the unknown address and the passwordless user too.
    assert_eq!(app.password_hashes_done().await - before, 3);
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM login_failures ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        reasons,
        ["wrong_password", "unknown_address", "no_password"]
    );
}

#[tokio::test]
async fn five_failures_lock_the_address_until_the_window_has_passed() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    for _ in 0..5 {
        assert_eq!(login(&app, &email, "guess guess guess").await.status(), 401);
    }
    // Now even the right password is refused, with when to come back.
    let r = login(&app, &email, PASSWORD).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((800..=900).contains(&retry), "{retry}");
    // Locked answers are not failures: they do not extend the lockout.
    assert_eq!(app.count("login_failures").await, 5);
    app.clock
        .advance(chrono::Duration::minutes(15) + chrono::Duration::seconds(1));
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 200);

    // Unknown addresses are counted the same way.
    let ghost = app.unique_email();
    for _ in 0..5 {
        assert_eq!(login(&app, &ghost, PASSWORD).await.status(), 401);
    }
    assert_eq!(login(&app, &ghost, PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn bad_login_requests_get_422_and_an_overlong_password_is_never_hashed() {
    let app = TestApp::ingest_only().await;
    let before = app.password_hashes_done().await;
    for body in [
        json!({"email": "a@example.com"}),
        json!({"password": PASSWORD}),
        json!({"email": "a@example.com", "password": "x".repeat(129)}),
        json!({"email": "not an address", "password": PASSWORD}),
        json!({"email": "a@example.com", "password": PASSWORD, "extra": 1}),
    ] {
        let r = app.post("/v1/logins", &body).await;
        assert_eq!(r.status(), 422, "{body}");
    }
    assert_eq!(
        app.password_hashes_done().await,
        before,
        "nothing was hashed"
    );
    let r = app
        .http
        .post(format!("{}/v1/logins", app.base))
        .json(&json!({"email": "a@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an API key is required");
}

#[tokio::test]
async fn a_hash_made_with_older_parameters_is_rehashed_on_login() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    let old = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(8 * 1024, 1, 1, None).unwrap(),
    )
    .hash_password(
        PASSWORD.as_bytes(),
        &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
    )
    .unwrap()
    .to_string();
    sqlx::query("UPDATE users SET hashed_password = $2 WHERE id = $1")
        .bind(user_id)
        .bind(&old)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 200);
    let now: String = sqlx::query_scalar("SELECT hashed_password FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_ne!(now, old);
    assert!(now.contains("m=19456"), "{now}");
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 200);
}

/// A user imported from a hand-rolled Node backend keeps their bcrypt hash (`$2b$`, cost 10,
/// as Node's `bcrypt` writes it): a wrong password is refused like any other, the right one
/// logs in, and that login re-hashes it with argon2id, so they are on bcrypt no longer.
#[tokio::test]
async fn an_imported_bcrypt_hash_logs_in_and_is_rehashed_with_argon2id() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    let old = bcrypt::hash_with_result(PASSWORD, 10)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoB);
    assert!(old.starts_with("$2b$10$") && old.len() == 60, "{old}");
    sqlx::query("UPDATE users SET hashed_password = $2 WHERE id = $1")
        .bind(user_id)
        .bind(&old)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = login(&app, &email, "not the password").await;
    assert_eq!(r.status(), 401);
    let stored = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT hashed_password FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        stored(app.db.pool.clone()).await,
        old,
        "a failure changes nothing"
    );
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 200);
    let now = stored(app.db.pool.clone()).await;
    assert!(
        now.starts_with("$argon2id$") && now.contains("m=19456"),
        "{now}"
    );
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 200);
    assert_eq!(login(&app, &email, "not the password").await.status(), 401);
}

#[tokio::test]
async fn a_password_reset_takes_effect_for_logins() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    app.wait_for_status(job, "sent").await;
    let r = app
        .reset_password_by_email(&email, "a brand new secret")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 401);
    assert_eq!(
        login(&app, &email, "a brand new secret").await.status(),
        200
    );
}

#[tokio::test]
async fn concurrent_guesses_cannot_get_past_the_limit() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    // Twelve guesses at once: each is reserved before it is hashed, so only five are checked.
    let mut tasks = Vec::new();
    for n in 0..12 {
        let (http, base, email) = (app.http.clone(), app.base.clone(), email.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/v1/logins"))
                .bearer_auth(mailroom_testkit::app::API_KEY)
                .json(&json!({"email": email, "password": format!("guess number {n}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let locked = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, locked), (5, 7), "{statuses:?}");
}

#[tokio::test]
async fn attempts_abandoned_before_their_outcome_do_not_lock_the_right_password_out() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    // Eight attempts whose callers gave up minutes ago, inside the lockout window, with their
    // reservations never finished: what a timeout, a lost connection or a crash between the
    // reservation and the outcome leaves behind.
    sqlx::query(
        "INSERT INTO login_failures (email, reason, failed_at)
         SELECT $1, 'in_progress', now() - make_interval(mins => 1 + g) FROM generate_series(1, 8) g",
    )
    .bind(&email)
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 200);
    // Real failures still lock the address, the right password too.
    for _ in 0..5 {
        assert_eq!(login(&app, &email, "not the password").await.status(), 401);
    }
    assert_eq!(login(&app, &email, PASSWORD).await.status(), 429);
}

async fn login_from(app: &TestApp, email: &str, password: &str, ip: &str) -> reqwest::Response {
    app.post(
        "/v1/logins",
        &json!({"email": email, "password": password, "client_ip": ip}),
    )
    .await
}

#[tokio::test]
async fn a_guesser_locks_out_only_itself_and_the_victim_logs_in_from_elsewhere() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    for _ in 0..5 {
        let r = login_from(&app, &email, "guess guess guess", "203.0.113.9").await;
        assert_eq!(r.status(), 401);
    }
    // The guesser is locked out, the right password too.
    let r = login_from(&app, &email, PASSWORD, "203.0.113.9").await;
    assert_eq!(r.status(), 429);
    // The person, from their own address (IPv6 here), is not.
    let r = login_from(&app, &email, PASSWORD, "2001:db8::7").await;
    assert_eq!(r.status(), 200);
    // A caller that does not say where its user is counts as one more client.
    let r = login(&app, &email, PASSWORD).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_successful_login_clears_its_clients_failures() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let ip = "198.51.100.20";
    for _ in 0..4 {
        assert_eq!(
            login_from(&app, &email, "typo typo typo", ip)
                .await
                .status(),
            401
        );
    }
    assert_eq!(login_from(&app, &email, PASSWORD, ip).await.status(), 200);
    // Four more typos: without the clearing, the fifth failure of the window would lock.
    for _ in 0..4 {
        assert_eq!(
            login_from(&app, &email, "typo typo typo", ip)
                .await
                .status(),
            401
        );
    }
    assert_eq!(login_from(&app, &email, PASSWORD, ip).await.status(), 200);
}

#[tokio::test]
async fn guessing_spread_over_many_clients_meets_the_address_ceiling() {
    let app = TestApp::start(mailroom_testkit::app::Settings {
        dispatcher: false,
        ingest_config: Some(|c| c.login_address_failure_limit = 8),
        ..Default::default()
    })
    .await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    for i in 0..8 {
        let r = login_from(&app, &email, "guess guess guess", &format!("192.0.2.{i}")).await;
        assert_eq!(r.status(), 401, "client {i}");
    }
    // Every client is locked out now, a new one with the right password too.
    let r = login_from(&app, &email, PASSWORD, "192.0.2.200").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_client_ip_that_is_not_an_address_is_422_and_nothing_is_counted() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    for bad in ["localhost", "203.0.113", "1.2.3.4/24", ""] {
        let r = login_from(&app, &email, PASSWORD, bad).await;
        assert_eq!(r.status(), 422, "{bad:?}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["fields"]["client_ip"].is_string(),
            "{bad:?}: {v}"
        );
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM login_failures")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
