//! The calling service's contract: idempotency keys, named API keys, references, the status of
//! each job, and signups over unverified holders.

use std::time::Duration;

use serde_json::{Value, json};

use mailroom_testkit::app::{API_KEY, PARTNER_API_KEY, TestApp};

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.base))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_keyed(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
}

async fn status_of(app: &TestApp, job: &str) -> Value {
    get_keyed(app, &format!("/v1/jobs/{job}"))
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signup_retried_with_its_idempotency_key_gets_the_same_answer_and_makes_one_user() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let body =
        json!({"name": app.unique_name(), "email": email, "password": "correct horse battery"});
    let key = uuid::Uuid::new_v4().to_string();

    let first = post_keyed(&app, "/v1/signups", &key, &body).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = post_keyed(&app, "/v1/signups", &key, &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        first,
        "the same answer"
    );
    assert_eq!(app.count("users").await, 1, "one user");
    assert_eq!(app.count("jobs").await, 1, "one job");

    // The same key with another body: 422, and nothing done.
    let other = json!({"name": app.unique_name(), "email": app.unique_email()});
    let r = post_keyed(&app, "/v1/signups", &key, &other).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "idempotency_key_reused", "{v}");
    // … and on another endpoint.
    let r = post_keyed(&app, "/v1/password-resets", &key, &json!({"email": email})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.count("users").await, 1);

    // Keys are per API key name: the partner's same key is its own.
    let r = app
        .http
        .post(format!("{}/v1/signups", app.base))
        .bearer_auth(PARTNER_API_KEY)
        .header("Idempotency-Key", &key)
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert_eq!(app.count("users").await, 2);

    // Key order in the body does not make another request; a malformed key is 400.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"password":"correct horse battery","email":"{email}","name":{}}}"#,
        body["name"]
    ))
    .unwrap();
    let r = post_keyed(&app, "/v1/signups", &key, &reordered).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let r = post_keyed(&app, "/v1/signups", &"k".repeat(256), &body).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_key_whose_first_request_still_runs_answers_409_and_an_error_frees_the_key() {
    let app = TestApp::ingest_only().await;
    let key = "first-still-running";
    let body = json!({"name": app.unique_name(), "email": app.unique_email()});
    // What a first request leaves while it runs: the reservation, without an answer. (Its
    // fingerprint is not this body's, yet the answer is 409, not 422: a key in progress is
    // spoken for whatever comes.)
    sqlx::query(
        "INSERT INTO idempotency_keys (api_key, key, route, fingerprint, created_at, expires_at)
         VALUES ('default', $1, 'POST /v1/signups', '\\x00', now(), now() + interval '1 day')",
    )
    .bind(key)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let r = post_keyed(&app, "/v1/signups", key, &body).await;
    // A different fingerprint is refused as reused even while in progress.
    assert_eq!(r.status(), 422);
    sqlx::query("UPDATE idempotency_keys SET fingerprint = $2 WHERE key = $1")
        .bind(key)
        .bind(ingest::idempotency::fingerprint(
            "POST /v1/signups",
            body.as_object().unwrap(),
        ))
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = post_keyed(&app, "/v1/signups", key, &body).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "idempotency_key_in_progress", "{v}");
    assert_eq!(app.count("users").await, 0);

    // A request that fails (422) releases its key: the corrected retry runs.
    let key = "fails-then-fixed";
    let bad = json!({"name": "", "email": app.unique_email()});
    assert_eq!(
        post_keyed(&app, "/v1/signups", key, &bad).await.status(),
        422
    );
    mailroom_testkit::eventually(
        "the failed request's key to be released",
        Duration::from_secs(5),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = $1")
                .bind(key)
                .fetch_one(&app.db.pool)
                .await
                .ok()?;
            (n == 0).then_some(())
        },
    )
    .await;
    let fixed = json!({"name": app.unique_name(), "email": app.unique_email()});
    assert_eq!(
        post_keyed(&app, "/v1/signups", key, &fixed).await.status(),
        202
    );
}

#[tokio::test]
async fn a_retried_reset_request_with_its_key_is_recorded_once() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let body = json!({"email": email, "reference": "ticket-9"});
    for _ in 0..3 {
        let r = post_keyed(&app, "/v1/password-resets", "reset-once", &body).await;
        assert_eq!(r.status(), 202);
        assert_eq!(r.text().await.unwrap(), r#"{"status":"accepted"}"#);
    }
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT outcome, api_key FROM email_requests")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, [("queued".to_owned(), Some("default".to_owned()))]);
    let (reference,): (Option<String>,) =
        sqlx::query_as("SELECT reference FROM jobs WHERE kind = 'password_reset'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(reference.as_deref(), Some("ticket-9"));
}

#[tokio::test]
async fn a_job_reads_queued_then_sent_with_its_reference_and_a_users_emails_page_newest_first() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let r = app
        .http
        .post(format!("{}/v1/signups", app.base))
        .bearer_auth(PARTNER_API_KEY)
        .json(&json!({"name": app.unique_name(), "email": email, "reference": "crm-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let (user_id, job_id) = (
        v["user_id"].as_str().unwrap(),
        v["job_id"].as_str().unwrap(),
    );
    let first = status_of(&app, job_id).await;
    assert!(
        ["queued", "sending", "sent"].contains(&first["status"].as_str().unwrap()),
        "{first}"
    );
    app.wait_for_email(&email).await;
    let sent =
        mailroom_testkit::eventually("the job to read sent", Duration::from_secs(20), || async {
            let s = status_of(&app, job_id).await;
            (s["status"] == "sent").then_some(s)
        })
        .await;
    assert_eq!(sent["reference"], "crm-42");
    assert_eq!(sent["api_key"], "partner");
    assert_eq!(sent["kind"], "verification");
    assert_eq!(sent["user_id"], user_id);
    assert_eq!(sent["attempts"], 1);
    assert!(sent["ses_message_id"].is_string(), "{sent}");
    assert!(sent["sent_at"].is_string());
    assert!(sent["delivery"].is_null());

    // Two resends: three emails, newest first, two to a page.
    for _ in 0..2 {
        app.post("/v1/verifications/resend", &json!({"email": email}))
            .await;
        // One per minute per address: move the last request back out of the window.
        sqlx::query("UPDATE email_requests SET requested_at = requested_at - interval '2 minutes'")
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    let page = get_keyed(&app, &format!("/v1/users/{user_id}/emails?limit=2")).await;
    assert_eq!(page.status(), 200);
    let page: Value = page.json().await.unwrap();
    let emails = page["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 2, "{page}");
    assert!(
        emails[0]["job_id"].as_str() > emails[1]["job_id"].as_str(),
        "newest first"
    );
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let rest: Value = get_keyed(
        &app,
        &format!("/v1/users/{user_id}/emails?limit=2&cursor={cursor}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rest["emails"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(
        rest["emails"][0]["job_id"], job_id,
        "the signup's job is the oldest"
    );
    assert!(rest["next_cursor"].is_null());

    // Bad input and unknown ids.
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        get_keyed(&app, &format!("/v1/jobs/{unknown}"))
            .await
            .status(),
        404
    );
    assert_eq!(get_keyed(&app, "/v1/jobs/not-a-uuid").await.status(), 400);
    assert_eq!(
        get_keyed(&app, &format!("/v1/users/{unknown}/emails"))
            .await
            .status(),
        404
    );
    assert_eq!(
        get_keyed(&app, &format!("/v1/users/{user_id}/emails?limit=0"))
            .await
            .status(),
        400
    );
    let anonymous = app.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(anonymous.status(), 401);

    // The partner's requests are counted under its name.
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mailroom_ingest_requests_total{")
                && l.contains("api_key=\"partner\"")
                && l.contains("route=\"/v1/signups\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_second_signup_for_an_unverified_address_takes_it_over_and_only_its_link_works() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let first_id = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": email, "password": "attacker password"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["user_id"]
        .clone();
    let first_link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();

    // The address's owner signs up again, with another name and password.
    let name = app.unique_name();
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": name, "email": email.to_uppercase(), "password": "owner's own password"}),
        )
        .await;
    assert_eq!(r.status(), 202, "never 409 for an unverified holder");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user_id"], first_id, "the same user, taken over");
    assert!(v["job_id"].is_string(), "a fresh verification email: {v}");
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let second_link = msgs[1].link("/verify-email").unwrap();
    assert_ne!(first_link, second_link);
    assert_eq!(
        app.follow(&first_link).await.status(),
        404,
        "the older link died"
    );
    assert_eq!(app.follow(&second_link).await.status(), 200);
    let user = app.user(&email).await;
    assert_eq!(user["name"], name);
    assert_eq!(user["email_verified"], true);
    let login = |password: &'static str| {
        let app = &app;
        let email = email.clone();
        async move {
            app.post("/v1/logins", &json!({"email": email, "password": password}))
                .await
                .status()
        }
    };
    assert_eq!(
        login("owner's own password").await,
        200,
        "the newest password logs in"
    );
    assert_eq!(
        login("attacker password").await,
        401,
        "the first one does not"
    );

    // Verified now: a third signup is refused.
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": email}),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn a_name_held_by_an_unverified_user_is_taken_over_and_their_address_replaced() {
    let app = TestApp::ingest_only().await;
    let name = app.unique_name();
    let (typo, right) = (app.unique_email(), app.unique_email());
    let first = app.sign_up_ok(&name, &typo).await;
    // The same person, with the address they meant, and a second unverified holder of it.
    let other = app.sign_up_ok(&app.unique_name(), &right).await;
    let r = app
        .post("/v1/signups", &json!({"name": name, "email": right}))
        .await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    // The address's holder is the account; the name's unverified holder is removed to free it.
    assert_eq!(v["user_id"], other.to_string());
    let users: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, name, email FROM users")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        users,
        [(other, name.clone(), right.clone())],
        "first was {first}"
    );
}

/// Every text column of every table in the test's database that holds `needle`, as
/// `table.column`.
async fn columns_holding(app: &TestApp, needle: &str) -> Vec<String> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
          WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb')
            AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (table, column) in columns {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE strpos(lower({column}::text), lower($1)) > 0"
        )))
        .bind(needle)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

#[tokio::test]
async fn an_erased_user_is_in_no_table_but_their_suppression_still_holds() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let (user, job) = app.sign_up_job(&app.unique_name(), &email).await;
    app.wait_for_status(job, "sent").await;
    // Everything that remembers the address: a reset request, a failed login, an SES event,
    // a suppression, an audit row.
    app.post("/v1/password-resets", &json!({"email": email}))
        .await;
    app.post(
        "/v1/logins",
        &json!({"email": email, "password": "wrong password!"}),
    )
    .await;
    sqlx::query(
        "INSERT INTO ses_events (sns_message_id, type, subtype, recipient, ses_message_id,
                                 job_id, diagnostic, occurred_at, received_at)
         SELECT 'sns-1', 'bounce', 'Permanent/General', $2, ses_message_id, job_id,
                'smtp; 550 ' || $2 || ' unknown', now(), now()
           FROM sends WHERE job_id = $1",
    )
    .bind(job)
    .bind(&email)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO suppressions (email, reason, detail, created_at) VALUES ($1, 'bounce', $1, now())",
    )
    .bind(&email)
    .execute(&app.db.pool)
    .await
    .unwrap();
    mailroom::store::audit(&app.db.pool, "operator", "unsuppress", &email, 1)
        .await
        .unwrap();
    assert!(!columns_holding(&app, &email).await.is_empty());

    let delete = |id: uuid::Uuid| {
        let app = &app;
        async move {
            app.http
                .delete(format!("{}/v1/users/{id}", app.base))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(delete(user).await, 204);
    let left = columns_holding(&app, &email).await;
    assert!(left.is_empty(), "the address is still in {left:?}");
    // The counts stay: the send log row and the SES event, without the address.
    assert_eq!(app.count("sends WHERE kind = 'verification'").await, 1);
    assert_eq!(app.count("ses_events").await, 1);
    assert_eq!(app.count("audit_log WHERE action = 'erase_user'").await, 1);
    assert_eq!(delete(user).await, 404, "a second erasure finds nobody");
    let r = app
        .http
        .delete(format!("{}/v1/users/not-a-uuid", app.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The address signs up again: its suppression (now a hash) still keeps it from being mailed.
    let (again, job) = app.sign_up_job(&app.unique_name(), &email).await;
    assert_ne!(again, user);
    app.wait_for_status(job, "suppressed").await;
    assert_eq!(app.user(&email).await["email_status"], "suppressed");
    let mut now_holding = columns_holding(&app, &email).await;
    now_holding.sort();
    assert_eq!(
        now_holding,
        ["sends.detail", "sends.recipient", "users.email"],
        "only the new signup's own rows name it"
    );
}

#[tokio::test]
async fn a_typo_in_an_unverified_address_is_corrected_and_only_the_new_address_verifies() {
    let app = TestApp::spawn().await;
    let (typo, right) = (app.unique_email(), app.unique_email());
    let user = app.sign_up_ok(&app.unique_name(), &typo).await;
    let old_link = app
        .wait_for_email(&typo)
        .await
        .link("/verify-email")
        .unwrap();
    let patch = |id: uuid::Uuid, body: Value| {
        let app = &app;
        async move {
            app.http
                .patch(format!("{}/v1/users/{id}", app.base))
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = patch(user, json!({"email": right, "reference": "typo-fix"})).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user_id"], user.to_string());
    let job = v["job_id"].as_str().expect("a fresh email").to_owned();
    let new_link = app
        .wait_for_email(&right)
        .await
        .link("/verify-email")
        .unwrap();
    assert_eq!(
        app.follow(&old_link).await.status(),
        404,
        "the typo's link died"
    );
    assert_eq!(app.follow(&new_link).await.status(), 200);
    assert_eq!(app.user(&right).await["email_verified"], true);
    assert_eq!(status_of(&app, &job).await["reference"], "typo-fix");
    // Verified now: corrections are refused; so are unknown users, taken and bad addresses.
    assert_eq!(
        patch(user, json!({"email": app.unique_email()}))
            .await
            .status(),
        409
    );
    assert_eq!(
        patch(uuid::Uuid::new_v4(), json!({"email": app.unique_email()}))
            .await
            .status(),
        404
    );
    let other = app
        .sign_up_ok(&app.unique_name(), &app.unique_email())
        .await;
    assert_eq!(patch(other, json!({"email": right})).await.status(), 409);
    assert_eq!(
        patch(other, json!({"email": "not an address"}))
            .await
            .status(),
        422
    );
}
