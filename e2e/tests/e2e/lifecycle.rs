//! The life of an unverified account and the retention sweep, against the real services: a
//! reminder with a fresh link, expiry freeing the name and address (`user.expired`), and a
//! million expired rows swept while signups keep answering.

use std::time::{Duration, Instant};

use dispatcher::sweep::Sweep;
use mailroom_testkit::app::{Settings, TestApp};
use mailroom_testkit::{self as testkit, WebhookReceiver};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_bWFpbHJvb20tdGVzdC1zZWNyZXQtb25lLTMyYnl0ZXM=";

async fn backdate(app: &TestApp, user: uuid::Uuid, by: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE users SET created_at = created_at - interval '{by}',
                          verification_job_at = verification_job_at - interval '{by}'
          WHERE id = $1"
    )))
    .bind(user)
    .execute(&app.db.pool)
    .await
    .unwrap();
}

/// A dispatcher that sweeps every second, with the default reminder and expiry ages: one
/// unverified user two days old gets one reminder whose link verifies; one 31 days old is
/// deleted with `user.expired`, and their address can sign up again; a verified user as old
/// stays.
#[tokio::test]
async fn a_reminder_goes_out_once_and_an_old_unverified_user_expires() {
    let receiver = WebhookReceiver::start().await;
    let app = TestApp::start(Settings {
        dispatcher: false,
        webhooks: mailroom::webhook::WebhookArgs {
            webhook_urls: vec![format!("{}#events=user.expired", receiver.url())],
            webhook_events: Vec::new(),
            webhook_secret: Some(mailroom::config::Secret::new(SECRET)),
            webhook_timeout: Duration::from_secs(5),
        },
        ..Settings::default()
    })
    .await;
    let (due, stale, kept) = (app.unique_email(), app.unique_email(), app.unique_email());
    let due_id = app.sign_up_ok(&app.unique_name(), &due).await;
    let stale_name = app.unique_name();
    let stale_id = app.sign_up_ok(&stale_name, &stale).await;
    let kept_id = app.sign_up_ok(&app.unique_name(), &kept).await;
    // An invitee as old as the one reminded: their invite says what to do, no reminder.
    let invitee = app.unique_email();
    let r = app.post("/v1/invites", &json!({"email": invitee})).await;
    assert_eq!(r.status(), 202);
    let invitee_id: uuid::Uuid = r.json::<serde_json::Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A verified user as old as the stale one.
    sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1")
        .bind(kept_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let mut config = app.dispatcher_config();
    config.sweep.retention_sweep_interval = Duration::from_secs(1);
    let cancel = CancellationToken::new();
    let dispatcher = tokio::spawn(dispatcher::run(
        config,
        app.clock.clone(),
        testkit::sdk_config(),
        cancel.clone().cancelled_owned(),
    ));

    // Each signup's own email first (it makes the verification job current), then the users
    // age: two days for one, 31 for the others.
    let first = app
        .wait_for_email(&due)
        .await
        .link("/verify-email")
        .unwrap();
    app.wait_for_email(&stale).await;
    app.wait_for_email(&invitee).await;
    backdate(&app, invitee_id, "2 days").await;
    backdate(&app, due_id, "2 days").await;
    backdate(&app, stale_id, "31 days").await;
    backdate(&app, kept_id, "31 days").await;

    // The signup's email, then the reminder, with a fresh link that works.
    let msgs = app.moto.wait_for(&due, 2, Duration::from_secs(30)).await;
    let reminder = msgs[1].link("/verify-email").unwrap();
    assert_ne!(first, reminder);
    testkit::eventually(
        "the stale user to expire",
        Duration::from_secs(20),
        || async {
            (app.count(&format!("users WHERE id = '{stale_id}'")).await == 0).then_some(())
        },
    )
    .await;
    let expired = testkit::eventually("user.expired", Duration::from_secs(20), || async {
        receiver
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|b| b["type"] == "user.expired")
    })
    .await;
    assert_eq!(expired["data"]["user_id"], stale_id.to_string());
    assert_eq!(expired["data"]["email"], stale);
    assert_eq!(
        app.count(&format!("users WHERE id = '{kept_id}'")).await,
        1,
        "verified users stay"
    );
    assert_eq!(
        app.follow(&first).await.status(),
        404,
        "the older link died"
    );
    assert_eq!(app.follow(&reminder).await.status(), 200);
    // Several sweeps later: still one reminder.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.moto.messages_to(&due).await.len(),
        2,
        "one reminder, once"
    );
    assert_eq!(app.count("users WHERE reminded_at IS NOT NULL").await, 1);
    assert_eq!(
        app.moto.messages_to(&invitee).await.len(),
        1,
        "an invitee is not reminded to verify"
    );
    // And the dashboard's read of unverified users says so: no reminder is next for them.
    let rows = mailroom::store::read::oldest_unverified(&app.db.pool, 500)
        .await
        .unwrap();
    let row = rows
        .iter()
        .find(|u| u.email == invitee)
        .expect("the invitee");
    assert!(row.reminded, "no reminder is due for an invitee");
    // The name and the address are free again.
    let r = app
        .post("/v1/signups", &json!({"name": stale_name, "email": stale}))
        .await;
    assert_eq!(r.status(), 202);
    cancel.cancel();
    dispatcher.await.unwrap().unwrap();
    app.stop().await;
}

/// A million expired rows (of `email_requests`, the table anonymous callers fill) are swept in
/// batches while signups go on: every signup made during the sweep is answered 202, and only
/// the expired rows go. The figures (signup latency during the sweep against before it) are
/// printed; BENCHMARKS.md keeps a release run's.
#[tokio::test]
async fn a_million_expired_rows_are_swept_while_signups_keep_answering() {
    let app = TestApp::ingest_only().await;
    sqlx::query(
        "INSERT INTO email_requests (email, kind, outcome, requested_at)
         SELECT 'old-' || g || '@example.com', 'password_reset', 'queued',
                now() - interval '3 days'
           FROM generate_series(1, 1000000) AS g",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO email_requests (email, kind, outcome, requested_at)
         VALUES ('recent@example.com', 'password_reset', 'queued', now())",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE email_requests")
        .execute(&app.db.pool)
        .await
        .unwrap();

    let signups = |n: usize| {
        let app = &app;
        async move {
            let mut times = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let r = app
                    .post(
                        "/v1/signups",
                        &json!({"name": app.unique_name(), "email": app.unique_email()}),
                    )
                    .await;
                assert_eq!(r.status(), 202);
                times.push(t.elapsed());
            }
            times.sort();
            times
        }
    };
    let before = signups(100).await;

    let args = app.dispatcher_config().sweep;
    let sweep = Sweep {
        pool: app.db.pool.clone(),
        args,
        hooks: Default::default(),
        metrics: std::sync::Arc::new(dispatcher::metrics::Metrics::default()),
        clock: app.clock.clone(),
    };
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let sweeping = sweep.once(&cancel);
    let during = async {
        let mut all = Vec::new();
        // Signups for as long as the sweep runs (at least a few).
        while all.len() < 20 || !sweeping_done() {
            all.extend(signups(10).await);
            if started.elapsed() > Duration::from_secs(120) {
                break;
            }
        }
        all
    };
    // The sweep's end is told through this flag.
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    fn sweeping_done() -> bool {
        DONE.load(std::sync::atomic::Ordering::SeqCst)
    }
    let (report, mut during) = tokio::join!(
        async {
            let r = sweeping.await;
            DONE.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        },
        during
    );
    let report = report.unwrap().expect("this sweep leads");
    let took = started.elapsed();
    during.sort();
    let deleted: u64 = report
        .deleted
        .iter()
        .filter(|(t, _)| *t == "email_requests")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(deleted, 1_000_000);
    assert_eq!(app.count("email_requests").await, 1, "the recent one stays");
    let p99 = |t: &[Duration]| t[(t.len() * 99 / 100).min(t.len() - 1)];
    println!(
        "swept 1,000,000 rows in {took:?}; {} signups during it, p99 {:?} (before: p99 {:?})",
        during.len(),
        p99(&during),
        p99(&before)
    );
}

/// One sweeper at a time: while another dispatcher holds the leader lock, a sweep does
/// nothing (and deletes nothing); once it is released, the next sweep leads.
#[tokio::test]
async fn a_sweep_skips_its_round_while_another_dispatcher_leads() {
    let app = TestApp::ingest_only().await;
    sqlx::query(
        "INSERT INTO login_failures (email, reason, failed_at)
         VALUES ('old@example.com', 'wrong_password', now() - interval '3 days')",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let sweep = Sweep {
        pool: app.db.pool.clone(),
        args: app.dispatcher_config().sweep,
        hooks: Default::default(),
        metrics: std::sync::Arc::new(dispatcher::metrics::Metrics::default()),
        clock: app.clock.clone(),
    };
    let cancel = CancellationToken::new();
    // Another dispatcher's session holds the lock.
    let mut other = app.db.pool.acquire().await.unwrap();
    assert!(
        mailroom::store::retention::try_lead(&mut other)
            .await
            .unwrap()
    );
    assert_eq!(
        sweep.once(&cancel).await.unwrap(),
        None,
        "it skips its round"
    );
    assert_eq!(app.count("login_failures").await, 1, "nothing was deleted");
    mailroom::store::retention::stop_leading(&mut other)
        .await
        .unwrap();
    let report = sweep.once(&cancel).await.unwrap().expect("now it leads");
    assert!(
        report.deleted.contains(&("login_failures", 1)),
        "{report:?}"
    );
    assert_eq!(app.count("login_failures").await, 0);
}
