//! Delivery guarantees under faults: SES outages, permanent failures and replay, poison
//! messages, throttling and the rate limit, account stops, RabbitMQ outages, scale-out,
//! graceful shutdown and kill -9. SES faults come from a fault-injecting proxy in front of moto,
//! RabbitMQ outages from a cuttable TCP proxy: each test has its own, so nothing leaks between
//! tests running in parallel.

use std::collections::HashMap;
use std::time::Duration;

use dispatcher::dead::{self, Filter, ReplayOptions};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use mailroom::broker::Topology;
use mailroom_testkit::{self as testkit, HttpFault};
use serde_json::Value;

use mailroom_testkit::app::{Settings, TestApp};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) async fn all_sent(app: &TestApp, jobs: &[(String, uuid::Uuid)]) {
    for (_, job) in jobs {
        app.wait_for_status(*job, "sent").await;
    }
}

async fn messages_per_recipient(app: &TestApp, jobs: &[(String, uuid::Uuid)]) -> Vec<usize> {
    let mut out = Vec::new();
    for (email, _) in jobs {
        out.push(app.moto.messages_to(email).await.len());
    }
    out
}

#[tokio::test]
async fn an_ses_outage_within_the_ladder_delivers_every_job_once() {
    let app = TestApp::start(Settings {
        ses_proxy: true,
        retry_delays: vec![ms(300), ms(600), ms(1000), ms(2000), ms(4000), ms(8000)],
        ..Settings::default()
    })
    .await;
    app.ses_proxy().set(HttpFault::Refuse);

    let jobs = app.sign_up_many(5).await;
    for (_, job) in &jobs {
        let rec = app.wait_for_status(*job, "retrying").await;
        assert_eq!(rec.error_class.as_deref(), Some("retryable"));
    }
    app.ses_proxy().set(HttpFault::Pass);

    all_sent(&app, &jobs).await;
    assert_eq!(messages_per_recipient(&app, &jobs).await, vec![1; 5]);
    for (_, job) in &jobs {
        let rec = mailroom::store::find_send(&app.db.pool, *job)
            .await
            .unwrap()
            .unwrap();
        assert!(rec.attempts >= 2, "{rec:?}");
    }
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_and_delivered_after_replay() {
    // SES rejects the message itself (a rejection that names the sender pauses instead).
    let app = TestApp::start(Settings {
        ses_proxy: true,
        ..Settings::default()
    })
    .await;
    app.ses_proxy()
        .set(HttpFault::Error(400, "MessageRejected".into()));
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;

    let rec = app.wait_for_status(job, "dead").await;
    assert_eq!(rec.error_class.as_deref(), Some("permanent"));
    assert!(rec.last_error.unwrap().contains("MessageRejected"));
    let topo = Topology::new(&app.queues.prefix);
    testkit::eventually("the dead letter", Duration::from_secs(10), || async {
        (app.queue_len(&topo.dead_queue()).await == 1).then_some(())
    })
    .await;
    let conn = app.connect_broker().await;
    let letters = dead::list(&conn, &topo, 100).await.unwrap();
    assert_eq!(letters.len(), 1);
    let d = &letters[0];
    assert_eq!(d.job_id.as_deref(), Some(job.to_string().as_str()));
    assert_eq!(d.kind.as_deref(), Some("verification"));
    assert_eq!(d.recipient.as_deref(), Some(email.as_str()));
    assert_eq!(d.error_class, "permanent");
    assert_eq!(d.attempts, 1);
    assert_eq!(d.replays, 0);
    assert!(d.died_at.is_some());
    // Listing consumed nothing.
    assert_eq!(dead::list(&conn, &topo, 100).await.unwrap(), letters);

    // A dry run changes nothing; a filter that matches nothing replays nothing.
    let dry = ReplayOptions {
        filter: Filter::All,
        dry_run: true,
        rate: None,
    };
    let r = dead::replay(&conn, &topo, &dry, |_| {}).await.unwrap();
    assert_eq!((r.examined, r.matched, r.replayed), (1, 1, 1));
    let other = ReplayOptions {
        filter: Filter::ErrorClass("render".into()),
        dry_run: false,
        rate: None,
    };
    let r = dead::replay(&conn, &topo, &other, |_| {}).await.unwrap();
    assert_eq!((r.examined, r.matched, r.replayed), (1, 0, 0));
    assert_eq!(app.queue_len(&topo.dead_queue()).await, 1);

    // Fix the cause, replay that job.
    app.ses_proxy().set(HttpFault::Pass);
    let opts = ReplayOptions {
        filter: Filter::Jobs(vec![job.to_string()]),
        dry_run: false,
        rate: Some(50.0),
    };
    let r = dead::replay(&conn, &topo, &opts, |_| {}).await.unwrap();
    assert_eq!((r.examined, r.matched, r.replayed, r.parked), (1, 1, 1, 0));

    app.wait_for_status(job, "sent").await;
    let msgs = app.moto.messages_to(&email).await;
    assert_eq!(msgs.len(), 1);
    // The replayed job minted a working link.
    let link = msgs[0].link("/verify-email").unwrap();
    assert_eq!(app.follow(&link).await.status(), 200);
    assert_eq!(app.queue_len(&topo.dead_queue()).await, 0);
}

#[tokio::test]
async fn a_job_replayed_too_often_is_parked_not_looped() {
    let app = TestApp::start(Settings {
        ses_proxy: true,
        ..Settings::default()
    })
    .await;
    app.ses_proxy()
        .set(HttpFault::Error(400, "MessageRejected".into()));
    let (_, job) = app
        .sign_up_job(&app.unique_name(), &app.unique_email())
        .await;
    let topo = Topology::new(&app.queues.prefix);
    let conn = app.connect_broker().await;
    let all = ReplayOptions {
        filter: Filter::All,
        dry_run: false,
        rate: None,
    };
    for round in 0..dead::MAX_REPLAYS {
        testkit::eventually("the job to die again", Duration::from_secs(20), || async {
            let l = dead::list(&conn, &topo, 10).await.unwrap();
            (l.len() == 1 && l[0].replays == round).then_some(())
        })
        .await;
        let r = dead::replay(&conn, &topo, &all, |_| {}).await.unwrap();
        assert_eq!(r.replayed, 1);
    }
    testkit::eventually("the last death", Duration::from_secs(20), || async {
        let l = dead::list(&conn, &topo, 10).await.unwrap();
        (l.len() == 1 && l[0].replays == dead::MAX_REPLAYS).then_some(())
    })
    .await;
    let r = dead::replay(&conn, &topo, &all, |_| {}).await.unwrap();
    assert_eq!((r.matched, r.replayed, r.parked), (1, 0, 1));
    assert_eq!(app.queue_len(&topo.dead_queue()).await, 1);
    assert_eq!(app.wait_for_status(job, "dead").await.job_id, job);
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_next_signup_still_delivered() {
    let app = TestApp::spawn().await;
    let topo = Topology::new(&app.queues.prefix);
    let conn = app.connect_broker().await;
    let ch = mailroom::broker::confirm_channel(&conn).await.unwrap();
    topo.declare_work(&conn).await.unwrap();
    for (key, body) in [
        ("verification", &b"this is not json"[..]),
        ("password_reset", br#"{"job_id":"nope"}"#),
    ] {
        ch.basic_publish(
            topo.exchange().into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_message_id("poison".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    testkit::eventually("two dead letters", Duration::from_secs(20), || async {
        (app.queue_len(&topo.dead_queue()).await == 2).then_some(())
    })
    .await;
    let letters = dead::list(&conn, &topo, 10).await.unwrap();
    assert!(
        letters.iter().all(|d| d.error_class == "malformed"),
        "{letters:?}"
    );
    assert!(letters[0].last_error.contains("malformed job"));

    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    // Malformed jobs cannot be replayed: they are parked.
    let r = dead::replay(
        &conn,
        &topo,
        &ReplayOptions {
            filter: Filter::All,
            dry_run: false,
            rate: None,
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((r.matched, r.parked), (2, 2));
}

#[tokio::test]
async fn throttling_slows_sending_but_delivers_everything_and_the_rate_is_never_exceeded() {
    let rate = 5.0;
    let app = TestApp::start(Settings {
        ses_proxy: true,
        max_send_rate: Some(rate),
        send_concurrency: 8,
        retry_delays: vec![ms(300), ms(600), ms(1200), ms(2400)],
        ..Settings::default()
    })
    .await;
    app.ses_proxy()
        .next(6, HttpFault::Error(429, "TooManyRequestsException".into()));
    let jobs = app.sign_up_many(15).await;
    all_sent(&app, &jobs).await;
    assert_eq!(messages_per_recipient(&app, &jobs).await, vec![1; 15]);
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM sends WHERE attempts > 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(retried >= 1, "throttled sends were retried");

    // When each successful call started, from the send log: never more than `rate` in a second.
    let starts: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM sent_at)::float8 - latency_ms / 1000.0 FROM sends ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    for s in &starts {
        *per_second.entry(s.floor() as i64).or_default() += 1;
    }
    let busiest = per_second.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= rate as usize,
        "{busiest} sends started in one second: {per_second:?}"
    );
}

#[tokio::test]
async fn an_account_stop_pauses_without_spending_attempts() {
    // One retry only: if pausing spent attempts, the job would be dead long before the end.
    let app = TestApp::start(Settings {
        ses_proxy: true,
        retry_delays: vec![ms(200)],
        ..Settings::default()
    })
    .await;
    app.ses_proxy()
        .set(HttpFault::Error(400, "SendingPausedException".into()));
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    // Several probes and redeliveries while paused.
    testkit::eventually(
        "the pause to be hit a few times",
        Duration::from_secs(20),
        || async { (app.ses_proxy().requests() >= 4).then_some(()) },
    )
    .await;
    let rec = mailroom::store::find_send(&app.db.pool, job)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rec.status, "dead");
    assert_ne!(rec.status, "retrying");
    app.ses_proxy().set(HttpFault::Pass);
    app.wait_for_status(job, "sent").await;
    assert_eq!(app.moto.messages_to(&email).await.len(), 1);
}

#[tokio::test]
async fn a_rabbitmq_outage_during_signups_loses_nothing() {
    let app = TestApp::start(Settings {
        amqp_proxy: true,
        ..Settings::default()
    })
    .await;
    let mut jobs = app.sign_up_many(3).await;
    app.amqp_proxy().cut();
    jobs.extend(app.sign_up_many(5).await);
    // Ingest stays ready: the outbox holds the jobs.
    let (status, v) = app.readiness().await;
    assert_eq!(status, 200);
    assert!(v["outbox_backlog"].as_i64().unwrap() >= 1, "{v}");
    app.amqp_proxy().restore();

    all_sent(&app, &jobs).await;
    assert_eq!(messages_per_recipient(&app, &jobs).await, vec![1; 8]);
    testkit::eventually("the outbox to drain", Duration::from_secs(20), || async {
        let (_, v) = app.readiness().await;
        (v["outbox_backlog"] == 0 && v["broker"]["status"] == "connected").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_database_outage_holds_jobs_and_readiness_tells_the_truth() {
    let app = TestApp::start(Settings {
        db_proxy: true,
        ..Settings::default()
    })
    .await;
    let first = app.sign_up_many(1).await;
    all_sent(&app, &first).await;

    app.db_proxy().cut();
    let (status, v) = app.readiness().await;
    assert_eq!(status, 503);
    assert_eq!(v["database"]["status"], "down");
    // The public answer names no error (no addresses or versions for anonymous callers); the
    // operations listener's does.
    assert!(v["database"].get("error").is_none(), "{v}");
    let ops: Value = app.ops_get("/readyz").await.json().await.unwrap();
    assert_eq!(ops["database"]["status"], "down");
    assert!(
        ops["database"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{ops}"
    );
    // A signup while the database is down is refused with 503, not accepted and lost.
    let r = app.sign_up(&app.unique_name(), &app.unique_email()).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable");

    // A job that reaches the dispatcher while its database is away is held, not failed.
    let email = app.unique_email();
    let job = crate::signup::make_user(&app, &email).await;
    let conn = app.connect_broker().await;
    let ch = mailroom::broker::confirm_channel(&conn).await.unwrap();
    let topo = Topology::new(&app.queues.prefix);
    mailroom::broker::publish_job(&ch, &topo, &job, Default::default())
        .await
        .unwrap();
    tokio::time::sleep(ms(1500)).await;
    assert!(app.moto.messages_to(&email).await.is_empty());

    app.db_proxy().restore();
    app.wait_for_status(job.job_id, "sent").await;
    assert_eq!(app.moto.messages_to(&email).await.len(), 1);
    assert_eq!(app.readiness().await.0, 200);
}

#[tokio::test]
async fn two_dispatchers_and_two_ingests_send_each_job_once() {
    let mut app = TestApp::start(Settings {
        send_concurrency: 2,
        ..Settings::default()
    })
    .await;
    let second = app.spawn_extra_ingest().await;
    app.spawn_extra_dispatcher();
    let mut jobs = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 {
            app.base.clone()
        } else {
            second.clone()
        };
        let email = app.unique_email();
        let r = app
            .http
            .post(format!("{base}/v1/signups"))
            .bearer_auth(mailroom_testkit::app::API_KEY)
            .json(&serde_json::json!({"name": app.unique_name(), "email": email}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        jobs.push((email, v["job_id"].as_str().unwrap().parse().unwrap()));
    }
    all_sent(&app, &jobs).await;
    assert_eq!(messages_per_recipient(&app, &jobs).await, vec![1; 20]);
    // Every outbox row was published and confirmed: confirmed rows leave the outbox.
    testkit::eventually("an empty outbox", Duration::from_secs(10), || async {
        (app.count("outbox").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_records_in_flight_sends() {
    let mut app = TestApp::start(Settings {
        ses_proxy: true,
        ..Settings::default()
    })
    .await;
    app.ses_proxy().set(HttpFault::Delay(ms(1500)));
    let jobs = app.sign_up_many(3).await;
    testkit::eventually("three sends in flight", Duration::from_secs(20), || async {
        (app.ses_proxy().requests() >= 3).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    app.stop_dispatcher().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    for (_, job) in &jobs {
        let rec = mailroom::store::find_send(&app.db.pool, *job)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            rec.status, "sent",
            "in-flight sends finish and are recorded: {rec:?}"
        );
    }
}

fn spawn_dispatcher_process(app: &TestApp, concurrency: usize) -> testkit::KillOnDrop {
    spawn_dispatcher_process_at(app, concurrency, 100.0)
}

/// The real dispatcher binary on this test's database, queues and SES endpoint, with an
/// account rate of `rate` per second.
pub(crate) fn spawn_dispatcher_process_at(
    app: &TestApp,
    concurrency: usize,
    rate: f64,
) -> testkit::KillOnDrop {
    let child = app
        .dispatcher_command()
        .env("MAX_SEND_RATE", rate.to_string())
        // A short claim lease (2 × this), so the jobs a killed process held go out soon.
        .env("SES_TIMEOUT", "2s")
        .env("SEND_CONCURRENCY", concurrency.to_string())
        .env("RETRY_DELAYS", "200ms,400ms")
        .spawn()
        .expect("start the dispatcher binary");
    testkit::KillOnDrop(child)
}

#[tokio::test]
async fn kill_9_mid_batch_loses_nothing_and_duplicates_at_most_the_sends_in_flight() {
    let concurrency = 4;
    let app = TestApp::start(Settings {
        dispatcher: false,
        ses_proxy: true,
        ..Settings::default()
    })
    .await;
    app.ses_proxy().set(HttpFault::Delay(ms(150)));
    let jobs = app.sign_up_many(24).await;
    let mut first = spawn_dispatcher_process(&app, concurrency);
    testkit::eventually("some sends", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sends WHERE status = 'sent'")
            .fetch_one(&app.db.pool)
            .await
            .ok()?;
        (n >= 4).then_some(())
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();

    let mut second = spawn_dispatcher_process(&app, concurrency);
    all_sent(&app, &jobs).await;
    let counts = messages_per_recipient(&app, &jobs).await;
    assert!(counts.iter().all(|c| *c >= 1), "nothing lost: {counts:?}");
    let duplicates: usize = counts.iter().map(|c| c - 1).sum();
    assert!(
        duplicates <= concurrency,
        "{duplicates} duplicates with {concurrency} in flight"
    );

    // SIGTERM: the dispatcher exits 0 within 10 s.
    testkit::terminate(&second);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit within 10 s"
        );
        tokio::time::sleep(ms(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_send_whose_record_fails_at_shutdown_is_recorded_later_and_never_sent_again() {
    let mut app = TestApp::start(Settings {
        ses_proxy: true,
        db_proxy: true,
        ..Settings::default()
    })
    .await;
    // One email first, so that the dispatcher's start-up calls to SES are behind us.
    let first = app.sign_up_many(1).await;
    all_sent(&app, &first).await;
    // SES takes 2 s to answer: long enough to cut the database and begin the shutdown while
    // the call is in flight.
    app.ses_proxy()
        .set(HttpFault::Delay(Duration::from_secs(2)));
    let before = app.ses_proxy().requests();
    let jobs = app.sign_up_many(1).await;
    let (email, job) = jobs[0].clone();
    testkit::eventually("the SES call", Duration::from_secs(10), || async {
        (app.ses_proxy().requests() > before).then_some(())
    })
    .await;
    app.db_proxy().cut();
    let stopping = app.begin_dispatcher_stop();
    // SES accepts the email while the database is away and shutdown has begun; the record
    // cannot be written until the database is back, after the session's shutdown timeout.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !stopping.is_finished(),
        "the dispatcher exited with a send unrecorded"
    );
    app.db_proxy().restore();
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("the dispatcher stops once the record landed")
        .unwrap()
        .unwrap();
    let (status,): (String,) = sqlx::query_as("SELECT status FROM sends WHERE job_id = $1")
        .bind(job)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "sent");
    // A new dispatcher gets the job again (it was never acknowledged) and, past the claim's
    // lease (2 × SES_TIMEOUT), must still not send it a second time.
    app.ses_proxy().set(HttpFault::Pass);
    app.start_dispatcher().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(app.moto.messages_to(&email).await.len(), 1);
}
