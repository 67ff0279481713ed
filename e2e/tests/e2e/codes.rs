//! One-time codes end to end: a request with `"method": "code"` (or `"both"`), the code in the
//! email moto received, and the code typed back through the API, with its attempts.

use std::time::Duration;

use serde_json::{Value, json};

use mailroom_testkit::app::{TestApp, token_of};

/// The answer to a guess: its status, and `error.code` / `error.attempts_left` when refused.
async fn guess(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app.post(path, &body).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

fn refusal(v: &Value) -> (&str, Option<u64>) {
    (
        v["error"]["code"].as_str().unwrap_or_default(),
        v["error"]["attempts_left"].as_u64(),
    )
}

/// A six-digit code that is not `code`.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

#[tokio::test]
async fn a_code_verifies_a_signup_five_wrong_guesses_kill_it_and_a_fresh_code_works() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": email, "password": "correct horse battery",
                    "method": "code"}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let user_id = r.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.wait_for_email(&email).await;
    let code = msg.code().expect("the email carries a code");
    assert_eq!(code.len(), 6);
    assert_eq!(
        msg.link("/verify-email"),
        None,
        "a code-only email has no link"
    );
    // Only a keyed hash is stored: neither the code nor its plain SHA-256.
    let (hash, left): (String, i32) = sqlx::query_as(
        "SELECT code_hash, attempts_left FROM one_time_codes WHERE user_id = $1::uuid",
    )
    .bind(&user_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(left, 5);
    assert!(!hash.contains(&code));
    use sha2::{Digest, Sha256};
    assert_ne!(hash, hex::encode(Sha256::digest(code.as_bytes())));

    // Five wrong guesses: 4, 3, 2, 1, 0 attempts left; then the code is dead, right or not.
    let bad = wrong(&code);
    for left in (0..5).rev() {
        let (status, v) = guess(
            &app,
            "/v1/verifications",
            json!({"email": email, "code": bad}),
        )
        .await;
        assert_eq!(
            (status, refusal(&v)),
            (422, ("invalid_code", Some(left))),
            "{v}"
        );
    }
    let (status, v) = guess(
        &app,
        "/v1/verifications",
        json!({"email": email, "code": code}),
    )
    .await;
    assert_eq!((status, refusal(&v).0), (410, "code_exhausted"), "{v}");
    assert_eq!(app.user(&email).await["email_verified"], false);

    // A fresh code (a resend) works, once; the mistyped grouping people use is accepted.
    let r = app
        .post(
            "/v1/verifications/resend",
            &json!({"email": email, "method": "code"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let fresh = msgs
        .iter()
        .filter_map(|m| m.code())
        .find(|c| *c != code)
        .expect("a new code");
    let spaced = format!("{} {}", &fresh[..3], &fresh[3..]);
    let (status, v) = guess(
        &app,
        "/v1/verifications",
        json!({"email": email, "code": spaced}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["user_id"].as_str(), v["email"].as_str()),
        (Some(&*user_id), Some(&*email))
    );
    assert_eq!(app.user(&email).await["email_verified"], true);
    let (status, v) = guess(
        &app,
        "/v1/verifications",
        json!({"email": email, "code": fresh}),
    )
    .await;
    assert_eq!((status, refusal(&v).0), (410, "code_used"), "{v}");
}

#[tokio::test]
async fn an_unknown_address_answers_exactly_like_a_wrong_code() {
    let app = TestApp::ingest_only().await;
    let nobody = app.unique_email();
    let mut answers = Vec::new();
    for _ in 0..7 {
        let (status, v) = guess(
            &app,
            "/v1/verifications",
            json!({"email": nobody, "code": "123456"}),
        )
        .await;
        answers.push((status, refusal(&v).0.to_owned(), refusal(&v).1));
    }
    let want: Vec<(u16, String, Option<u64>)> = [4, 3, 2, 1, 0]
        .into_iter()
        .map(|n| (422, "invalid_code".to_owned(), Some(n)))
        .chain(std::iter::repeat_n(
            (410, "code_exhausted".to_owned(), None),
            2,
        ))
        .collect();
    assert_eq!(answers, want);
    // A code is relayed by the calling service only: without its API key, 401.
    let r = app
        .http
        .post(format!("{}/v1/verifications", app.base))
        .json(&json!({"email": nobody, "code": "123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bad input is a 422 naming the field, and costs no attempt.
    let (status, v) = guess(
        &app,
        "/v1/verifications",
        json!({"email": nobody, "code": "12ab56"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invalid_fields")),
        "{v}"
    );
    assert!(v["error"]["fields"]["code"].is_string(), "{v}");
    let (status, v) = guess(&app, "/v1/verifications", json!({"email": nobody})).await;
    assert_eq!(status, 422);
    assert!(v["error"]["fields"]["code"].is_string(), "{v}");
    let (status, v) = guess(
        &app,
        "/v1/signups",
        json!({"name": app.unique_name(), "email": nobody, "method": "sms"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(v["error"]["fields"]["method"].is_string(), "{v}");
}

#[tokio::test]
async fn a_reset_by_code_checks_the_code_before_hashing_and_kills_the_link_of_the_same_email() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    let r = app
        .post(
            "/v1/password-resets",
            &json!({"email": email, "method": "both"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let reset = msgs
        .iter()
        .find(|m| m.link("/reset-password").is_some())
        .expect("the reset email");
    let (code, link) = (
        reset.code().expect("a code"),
        reset.link("/reset-password").unwrap(),
    );
    let confirm = "/v1/password-resets/confirm";

    // A weak password is refused before the code is looked at: no attempt spent.
    let hashes = app.password_hashes_done().await;
    let (status, v) = guess(
        &app,
        confirm,
        json!({"email": email, "code": code, "password": "short"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invalid_fields")),
        "{v}"
    );
    // A wrong code costs an attempt and no argon2 hash.
    let (status, v) = guess(
        &app,
        confirm,
        json!({"email": email, "code": wrong(&code), "password": "a new password 1"}),
    )
    .await;
    assert_eq!(
        (status, refusal(&v)),
        (422, ("invalid_code", Some(4))),
        "{v}"
    );
    assert_eq!(
        app.password_hashes_done().await,
        hashes,
        "no hash for a wrong code"
    );

    let (status, v) = guess(
        &app,
        confirm,
        json!({"email": email, "code": code, "password": "a new password 1"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = app
        .post(
            "/v1/logins",
            &json!({"email": email, "password": "a new password 1"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The code and the link of that email are both spent now.
    let (status, v) = guess(
        &app,
        confirm,
        json!({"email": email, "code": code, "password": "another one 22"}),
    )
    .await;
    assert_eq!((status, refusal(&v).0), (410, "code_used"), "{v}");
    let r = app
        .http
        .post(format!("{}{confirm}", app.base))
        .json(&json!({"token": token_of(&link), "password": "another one 22"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    // And the "password changed" notice went out.
    app.moto.wait_for(&email, 3, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_newer_link_request_kills_the_older_code() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    let r = app
        .post(
            "/v1/password-resets",
            &json!({"email": email, "method": "code"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let code = msgs.iter().find_map(|m| m.code()).expect("a code");
    // A minute later (the per-address limit), a link-only reset replaces it.
    app.clock.advance(chrono::Duration::seconds(61));
    let r = app
        .post("/v1/password-resets", &json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    app.moto.wait_for(&email, 3, Duration::from_secs(30)).await;
    let (status, v) = guess(
        &app,
        "/v1/password-resets/confirm",
        json!({"email": email, "code": code, "password": "a new password 1"}),
    )
    .await;
    assert_eq!(
        (status, refusal(&v)),
        (422, ("invalid_code", Some(4))),
        "{v}"
    );
}
