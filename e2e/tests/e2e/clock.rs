//! Every process on the database's clock: the real dispatcher binary run under `faketime`,
//! its machine clock ten minutes ahead or two hours behind, next to the database's.

use std::time::Duration;

use mailroom::store;
use mailroom_testkit as testkit;
use mailroom_testkit::app::{Settings, TestApp};

/// libfaketime (Debian's package `faketime`), preloaded into the binary itself rather than
/// through the `faketime` wrapper, which would run it as a child that outlives a kill.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The real dispatcher on this test's database, queues and SES endpoint, its wall clock moved
/// by `skew` (libfaketime's syntax: `+10m`, `-2h`); the monotonic clock is left alone, as a
/// wrong wall clock leaves it. `SES_TIMEOUT` is 30 s: a claim's lease is a minute.
fn dispatcher_with_clock(app: &TestApp, skew: &str) -> testkit::KillOnDrop {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's package faketime (scripts/test does)"
    );
    let child = app
        .dispatcher_command()
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", skew)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("MAX_SEND_RATE", "50")
        .env("SES_TIMEOUT", "30s")
        .env("RETRY_DELAYS", "200ms,400ms")
        .spawn()
        .expect("start the dispatcher binary");
    testkit::KillOnDrop(child)
}

async fn database_now(app: &TestApp) -> chrono::DateTime<chrono::Utc> {
    store::read::database_time(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn a_dispatcher_ten_minutes_ahead_does_not_take_over_a_live_claim() {
    let app = TestApp::start(Settings {
        dispatcher: false,
        ..Settings::default()
    })
    .await;
    let _ahead = dispatcher_with_clock(&app, "+10m");
    // It is up and sending.
    let other = app.sign_up_many(1).await;
    crate::delivery::all_sent(&app, &other).await;
    // A job another dispatcher is sending right now: claimed at the database's time, with a
    // lease of a minute.
    let email = app.unique_email();
    let job = crate::signup::make_user(&app, &email).await;
    let lease = Duration::from_secs(60);
    let claimed = store::claim_jobs(
        &app.db.pool,
        std::slice::from_ref(&job),
        database_now(&app).await,
        lease,
        lease,
    )
    .await
    .unwrap();
    assert!(matches!(claimed[0].claim, store::Claim::Claimed { .. }));
    let conn = app.connect_broker().await;
    let ch = mailroom::broker::confirm_channel(&conn).await.unwrap();
    let topo = mailroom::broker::Topology::new(&app.queues.prefix);
    mailroom::broker::publish_job(&ch, &topo, &job, Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // By its own clock the claim is ten minutes old, past its lease: it would send it again.
    assert!(
        app.moto.messages_to(&email).await.is_empty(),
        "a live claim was taken over and the email sent twice"
    );
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM sends WHERE job_id = $1")
            .bind(job.job_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("sending", 1));
    // What it sent is dated by the database's clock, not its own.
    let (sent_at,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT sent_at FROM sends WHERE job_id = $1")
            .bind(other[0].1)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let off = (database_now(&app).await - sent_at).num_seconds().abs();
    assert!(off < 60, "sent_at is {off} s off the database's clock");
}

#[tokio::test]
async fn a_dispatcher_two_hours_behind_mints_reset_links_that_work() {
    let app = TestApp::start(Settings {
        dispatcher: false,
        ..Settings::default()
    })
    .await;
    let _behind = dispatcher_with_clock(&app, "-2h");
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.moto.wait_for(&email, 1, Duration::from_secs(30)).await;
    // RESET_TTL is an hour: by its own clock, the link would have expired an hour ago.
    let r = app
        .reset_password_by_email(&email, "a new long password")
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}
