//! Sign-in by email end to end: the request, the email in moto with its link to the app's
//! `SIGN_IN_URL` and/or its code, and the token or code posted back as the app would.

use std::time::Duration;

use serde_json::{Value, json};

use mailroom_testkit::app::{TestApp, token_of};

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app.post(path, &body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_sign_in_link_signs_in_once_and_verifies_the_address() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    assert_eq!(app.user(&email).await["email_verified"], false);

    let (status, v) = post(&app, "/v1/sign-in-emails", json!({"email": email})).await;
    assert_eq!((status, &v), (202, &json!({"status": "accepted"})));
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let msg = msgs
        .iter()
        .find(|m| m.link("/app/sign-in").is_some())
        .expect("the sign-in email");
    let link = msg.link("/app/sign-in").unwrap();
    assert!(
        link.starts_with(&format!("{}?token=", app.sign_in_url())),
        "{link}"
    );
    assert_eq!(msg.code(), None, "a link-only email has no code");

    let token = token_of(&link);
    let (status, v) = post(&app, "/v1/sign-ins", json!({"token": token})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user_id"], user_id.to_string());
    assert_eq!(v["email_verified"], true);
    // Signing in proved the inbox: the address is verified now.
    assert_eq!(app.user(&email).await["email_verified"], true);
    // The same link a second time is refused.
    let (status, v) = post(&app, "/v1/sign-ins", json!({"token": token})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (410, Some("token_used")),
        "{v}"
    );
    let (status, v) = post(&app, "/v1/sign-ins", json!({"token": "0".repeat(64)})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("token_unknown")),
        "{v}"
    );
}

#[tokio::test]
async fn a_sign_in_code_works_and_wrong_codes_count_towards_the_login_lockout() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    let (status, _) = post(
        &app,
        "/v1/sign-in-emails",
        json!({"email": email, "method": "both"}),
    )
    .await;
    assert_eq!(status, 202);
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let msg = msgs
        .iter()
        .find(|m| m.link("/app/sign-in").is_some())
        .unwrap();
    let (code, link) = (
        msg.code().expect("a code"),
        msg.link("/app/sign-in").unwrap(),
    );
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);

    // Wrong codes from one client: failed logins of that client.
    let guess =
        |code: String, ip: &'static str| json!({"email": email, "code": code, "client_ip": ip});
    for left in [4, 3] {
        let (status, v) = post(&app, "/v1/sign-ins", guess(wrong.clone(), "203.0.113.7")).await;
        assert_eq!(
            (status, v["error"]["attempts_left"].as_u64()),
            (422, Some(left)),
            "{v}"
        );
    }
    let failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM login_failures WHERE lower(email) = lower($1) AND reason = 'wrong_code'",
    )
    .bind(&email)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(failures, 2);

    // The right code from another client signs in, and spends the link of the same email.
    let (status, v) = post(&app, "/v1/sign-ins", guess(code.clone(), "198.51.100.1")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["email_verified"], true);
    let (status, v) = post(&app, "/v1/sign-ins", json!({"token": token_of(&link)})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (410, Some("token_used")),
        "{v}"
    );
    let (status, v) = post(&app, "/v1/sign-ins", guess(code, "198.51.100.1")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (410, Some("code_used")),
        "{v}"
    );
}

#[tokio::test]
async fn code_guesses_past_the_login_limit_are_locked_out() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    let (status, _) = post(
        &app,
        "/v1/sign-in-emails",
        json!({"email": email, "method": "code"}),
    )
    .await;
    assert_eq!(status, 202);
    app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    // LOGIN_FAILURE_LIMIT is 5: five wrong codes, then the client is locked out (429), before
    // the code is even looked at.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = app
            .post(
                "/v1/sign-ins",
                &json!({"email": email, "code": "000000", "client_ip": "203.0.113.9"}),
            )
            .await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    // The code might be 000000 (one in a million): then the first guess signs in.
    if statuses[0] != 200 {
        assert_eq!(statuses, [422, 422, 422, 422, 422, 429]);
    }
}

#[tokio::test]
async fn an_unknown_address_gets_the_same_202_and_no_email_and_sign_in_is_off_without_its_url() {
    let app = TestApp::spawn().await;
    let nobody = app.unique_email();
    let (status, v) = post(&app, "/v1/sign-in-emails", json!({"email": nobody})).await;
    assert_eq!((status, v), (202, json!({"status": "accepted"})));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(app.moto.messages_to(&nobody).await.is_empty());
    let (status, v) = post(
        &app,
        "/v1/sign-in-emails",
        json!({"email": nobody, "return_to": "https://evil.test/"}),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"]["fields"]["return_to"].is_string(), "{v}");

    let off = TestApp::start(mailroom_testkit::app::Settings {
        dispatcher: false,
        ingest_config: Some(|c| c.sign_in_url = None),
        ..Default::default()
    })
    .await;
    for (path, body) in [
        ("/v1/sign-in-emails", json!({"email": nobody})),
        ("/v1/sign-ins", json!({"token": "0".repeat(64)})),
    ] {
        let (status, v) = post(&off, path, body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("sign_in_disabled")),
            "{path}: {v}"
        );
    }
}
