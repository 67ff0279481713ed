//! The suppression list: the dispatcher never mails a listed address, whatever the path
//! (signup, resend, reset, replay); requests for it answer as always and are recorded; the API
//! tells the calling service; operators manage it with the CLI, audited.

use std::process::Command;
use std::time::Duration;

use mailroom::domain::EmailAddress;
use mailroom::store::{self, SuppressionReason};
use mailroom::webhook::Endpoints;
use serde_json::json;

use mailroom_testkit::app::TestApp;

/// Runs `dispatcher suppressions …` (the real binary) against the test's database.
fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = Command::new(mailroom_testkit::bin_path("dispatcher"))
        .arg("suppressions")
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("USER", "operator-test")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_suppressed_address_gets_no_email_on_any_path_until_it_is_removed() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let (ok, out) = cli(
        &app,
        &["add", &email.to_uppercase(), "--detail", "asked by support"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("will not mail"), "{out}");

    // Signup: the verification job is recorded as suppressed and SES is never called.
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    let rec = app.wait_for_status(job, "suppressed").await;
    assert!(rec.detail.unwrap().contains("suppression list"));
    let user = app.user(&email).await;
    assert_eq!(user["email_status"], "suppressed");
    assert_eq!(user["suppression"]["reason"], "manual");

    // Resend and reset: the same 202, recorded with their own outcome, nothing queued.
    for path in ["/v1/verifications/resend", "/v1/password-resets"] {
        let r = app.post(path, &json!({"email": email})).await;
        assert_eq!(r.status(), 202, "{path}");
    }
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM email_requests ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, vec!["address_suppressed", "address_suppressed"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.moto.messages_to(&email).await.is_empty());

    // Listed, then removed (both audited): mail flows again.
    let (ok, out) = cli(&app, &["list", "--reason", "manual"]);
    assert!(
        ok && out.to_lowercase().contains(&email) && out.contains("asked by support"),
        "{out}"
    );
    let (ok, out) = cli(&app, &["remove", &email]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&app, &["remove", &email]);
    assert!(!ok && out.contains("not on the suppression list"), "{out}");
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit_log ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        vec![
            ("operator-test".into(), "suppress".into()),
            ("operator-test".into(), "unsuppress".into())
        ]
    );
    assert_eq!(app.user(&email).await["email_status"], "ok");
    let r = app
        .post("/v1/verifications/resend", &json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    app.wait_for_email(&email).await;
}

#[tokio::test]
async fn a_replayed_job_for_a_suppressed_address_is_not_sent() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let job = crate::signup::make_user(&app, &email).await;
    store::suppress(
        &app.db.pool,
        &EmailAddress::parse(&email).unwrap(),
        SuppressionReason::Bounce,
        "550 5.1.1 user unknown",
        &Endpoints::default(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    // The worker step itself, as a replayed job would reach it.
    let out = crate::signup::worker_for(&app)
        .process(Ok(job.clone()), None)
        .await;
    assert_eq!(
        out,
        dispatcher::worker::Outcome::Suppressed {
            reason: "bounce".into()
        }
    );
    let rec = store::find_send(&app.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, "suppressed");
    // No token was minted for it.
    let minted: i64 = sqlx::query_scalar("SELECT count(*) FROM link_tokens")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(minted, 0);
    assert!(app.moto.messages_to(&email).await.is_empty());
}

#[tokio::test]
async fn the_cli_refuses_bad_addresses_and_reasons_with_one_line() {
    let app = TestApp::ingest_only().await;
    let (ok, out) = cli(&app, &["add", "not-an-address"]);
    assert!(!ok && out.contains("must contain an @"), "{out}");
    let (ok, out) = cli(&app, &["add", "a@example.com", "--reason", "spite"]);
    assert!(!ok && out.contains("unknown reason 'spite'"), "{out}");
    let (ok, out) = cli(&app, &["list"]);
    assert!(ok && out.contains("No suppressed addresses"), "{out}");
}

#[tokio::test]
async fn the_ses_account_list_is_imported_once_and_keeps_existing_entries() {
    use mailroom::ses::SuppressedAddress;
    let app = TestApp::ingest_only().await;
    let known = app.unique_email();
    store::suppress(
        &app.db.pool,
        &EmailAddress::parse(&known).unwrap(),
        SuppressionReason::Bounce,
        "from SNS",
        &Endpoints::default(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let fresh = app.unique_email();
    // As `suppressed_destinations` reads it from SES (unit-tested with the SDK's mocks).
    let list = vec![
        SuppressedAddress {
            email: known.clone(),
            reason: "BOUNCE".into(),
        },
        SuppressedAddress {
            email: fresh.to_uppercase().replace("@EXAMPLE.COM", "@example.com"),
            reason: "COMPLAINT".into(),
        },
    ];
    let now = chrono::Utc::now();
    assert_eq!(
        store::import_ses_suppressions(&app.db.pool, &list, &Endpoints::default(), now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store::import_ses_suppressions(&app.db.pool, &list, &Endpoints::default(), now)
            .await
            .unwrap(),
        0
    );
    let kept = store::suppression(&app.db.pool, &known)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.reason, "bounce");
    let imported = store::suppression(&app.db.pool, &fresh)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(imported.reason, "ses");
    assert!(imported.detail.contains("COMPLAINT"));
}

#[tokio::test]
async fn the_cli_reads_the_local_env_file_and_the_environment_wins() {
    let app = TestApp::ingest_only().await;
    let dir = std::env::temp_dir().join(format!("mailroom-env-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        format!("# as scripts/up writes it\nDATABASE_URL={}\n", app.db.url),
    )
    .unwrap();
    let run = |env_url: Option<&str>| {
        let mut cmd = Command::new(mailroom_testkit::bin_path("dispatcher"));
        cmd.args(["suppressions", "list"])
            .current_dir(&dir)
            .env_remove("DATABASE_URL");
        if let Some(u) = env_url {
            cmd.env("DATABASE_URL", u);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run(None);
    assert!(ok && out.contains("No suppressed addresses"), "{out}");
    let (ok, out) = run(Some("postgres://postgres@127.0.0.1:1/nowhere"));
    assert!(
        !ok && out.contains("cannot connect"),
        "the environment wins: {out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
