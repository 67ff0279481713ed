//! The faults of production, each held without losing or dead-lettering mail: SES refusing
//! the credentials, a database that refuses writes or restarts, a changed retry ladder, a
//! queue declared with other settings, a second copy of a job while the first is being sent, a
//! send that timed out and went out anyway, a broker that refuses publishes, broker nodes that
//! are down, a silent network partition from the broker, a memory alarm (on a node of the
//! test's own), the dead queue's order under listings and partial replays, and dead letters that
//! outlive many listings under a delivery limit.

use std::time::Duration;

use mailroom::broker::{self, Topology};
use mailroom::job::Job;
use mailroom_testkit::{self as testkit, HttpFault};
use serde_json::{Value, json};

use mailroom_testkit::app::{Settings, TestApp, token_of};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Dead letters in the queue and in the send log, together.
async fn dead_count(app: &TestApp) -> (u32, i64) {
    let queued = app
        .queue_len(&Topology::new(&app.queues.prefix).dead_queue())
        .await;
    let (logged,): (i64,) = sqlx::query_as("SELECT count(*) FROM sends WHERE status = 'dead'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    (queued, logged)
}

#[tokio::test]
async fn a_403_from_ses_pauses_and_every_job_is_delivered_when_access_returns() {
    // One short retry: were a 403 treated as a failure of the message, all five would be dead
    // within a second.
    let app = TestApp::start(Settings {
        ses_proxy: true,
        retry_delays: vec![ms(200)],
        ..Settings::default()
    })
    .await;
    app.ses_proxy()
        .set(HttpFault::Error(403, "AccessDeniedException".into()));
    let jobs = app.sign_up_many(5).await;
    // The dispatcher tries, pauses, and probes (GetAccount, which the proxy refuses too).
    testkit::eventually(
        "the dispatcher to hit the 403 and probe",
        Duration::from_secs(20),
        || async { (app.ses_proxy().requests() >= 4).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        dead_count(&app).await,
        (0, 0),
        "nothing dead during the outage"
    );
    assert!(app.moto.messages_to(&jobs[0].0).await.is_empty());

    app.ses_proxy().set(HttpFault::Pass);
    for (email, job) in &jobs {
        app.wait_for_status(*job, "sent").await;
        assert_eq!(app.moto.messages_to(email).await.len(), 1, "{email}");
    }
    assert_eq!(dead_count(&app).await, (0, 0));
}

#[tokio::test]
async fn a_database_that_refuses_writes_holds_jobs_and_dead_letters_none() {
    let app = TestApp::start(Settings {
        retry_delays: vec![ms(200)],
        ..Settings::default()
    })
    .await;
    // "Disk full" on every write to the send log, as PostgreSQL reports it.
    sqlx::raw_sql(
        "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
               USING ERRCODE = '53100'; END $$;
         CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON sends
            FOR EACH ROW EXECUTE FUNCTION disk_full();",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let jobs = app.sign_up_many(3).await;
    // Well past what a requeue loop needs to exhaust the delivery limit (20) many times over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(dead_count(&app).await, (0, 0));
    for (email, _) in &jobs {
        assert!(app.moto.messages_to(email).await.is_empty());
    }

    sqlx::raw_sql("DROP TRIGGER disk_full ON sends")
        .execute(&app.db.pool)
        .await
        .unwrap();
    for (email, job) in &jobs {
        let rec = app.wait_for_status(*job, "sent").await;
        assert_eq!(rec.attempts, 1, "holding spent no attempt");
        assert_eq!(app.moto.messages_to(email).await.len(), 1);
    }
    assert_eq!(dead_count(&app).await, (0, 0));
}

#[tokio::test]
async fn a_changed_retry_ladder_declares_new_queues_and_keeps_sending() {
    let mut app = TestApp::start(Settings {
        retry_delays: vec![ms(200), ms(400)],
        ..Settings::default()
    })
    .await;
    let first = app.sign_up_many(1).await;
    app.wait_for_status(first[0].1, "sent").await;
    app.stop_dispatcher().await.unwrap();

    // A new ladder: new queues by name, no PRECONDITION_FAILED against the old ones.
    app.retry_delays = vec![ms(300), ms(600), ms(1200)];
    app.start_dispatcher().await;
    let second = app.sign_up_many(1).await;
    app.wait_for_status(second[0].1, "sent").await;
    let topo = Topology::new(&app.queues.prefix);
    let names = testkit::queues_named(&format!("{}.retry.", app.queues.prefix)).await;
    for d in [ms(200), ms(400), ms(300), ms(600), ms(1200)] {
        assert!(names.contains(&topo.retry_queue(d)), "{names:?}");
    }
}

#[tokio::test]
async fn a_queue_declared_with_other_settings_stops_the_dispatcher_with_a_clear_error() {
    let mut app = TestApp::start(Settings {
        dispatcher: false,
        ..Settings::default()
    })
    .await;
    // What an older version left behind: a classic delay queue under a name this version uses.
    let conn = app.connect_broker().await;
    let topo = Topology::new(&app.queues.prefix);
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        topo.retry_queue(ms(200)).as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    app.start_dispatcher().await;
    let err = tokio::time::timeout(Duration::from_secs(20), app.join_dispatcher())
        .await
        .expect("the dispatcher stops instead of reconnecting forever")
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&topo.retry_queue(ms(200))), "{text}");
    assert!(text.contains("Drain it and delete it"), "{text}");
}

/// A user with a job already in the send log, and the job's message published `copies` times.
async fn publish_copies(app: &TestApp, copies: usize) -> (String, Job) {
    let email = app.unique_email();
    let job = crate::signup::make_user(app, &email).await;
    let conn = app.connect_broker().await;
    let topo = Topology::new(&app.queues.prefix);
    topo.declare_work(&conn).await.unwrap();
    let ch = broker::confirm_channel(&conn).await.unwrap();
    for _ in 0..copies {
        broker::publish_job(&ch, &topo, &job, Default::default())
            .await
            .unwrap();
    }
    (email, job)
}

#[tokio::test]
async fn a_second_copy_of_a_job_being_sent_waits_and_is_not_sent_again() {
    let app = TestApp::start(Settings {
        ses_proxy: true,
        send_concurrency: 4,
        ..Settings::default()
    })
    .await;
    // The first send takes 2 s (within the 5 s SES timeout): the second copy arrives meanwhile.
    app.ses_proxy()
        .set(HttpFault::Delay(Duration::from_secs(2)));
    let (email, job) = publish_copies(&app, 2).await;
    app.wait_for_status(job.job_id, "sent").await;
    app.ses_proxy().set(HttpFault::Pass);
    // The second copy comes back from its delay queue, sees `sent`, and is acknowledged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.moto.messages_to(&email).await.len(), 1);
    let topo = Topology::new(&app.queues.prefix);
    assert_eq!(app.queue_len(&topo.work_queue()).await, 0);
    assert_eq!(app.queue_len(&topo.retry_queue(ms(200))).await, 0);
    assert_eq!(dead_count(&app).await, (0, 0));
}

#[tokio::test]
async fn after_a_timed_out_send_went_out_anyway_every_link_it_produced_works() {
    // SES answers the first reset send only after the dispatcher gave up on it (timeout 1 s):
    // the email went out, and the retry sends a second one.
    let app = TestApp::start(Settings {
        ses_proxy: true,
        ses_timeout: Duration::from_secs(1),
        ..Settings::default()
    })
    .await;
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    app.wait_for_status(job, "sent").await;
    app.ses_proxy()
        .next(1, HttpFault::Delay(Duration::from_millis(1500)));
    let r = app
        .post("/v1/password-resets", &json!({"email": email}))
        .await;
    assert_eq!(r.status(), 202);
    let mails = app.moto.wait_for(&email, 3, Duration::from_secs(30)).await;
    let links: Vec<String> = mails
        .iter()
        .filter_map(|m| m.link("/reset-password"))
        .collect();
    assert_eq!(links.len(), 2, "two reset emails of the same job");
    // Both links open the form; the first one used changes the password; the other is then
    // "already used", not "unknown".
    for link in &links {
        assert_eq!(app.follow(link).await.status(), 200, "{link}");
    }
    let confirm = |link: &str| {
        app.http
            .post(format!("{}/v1/password-resets/confirm", app.base))
            .json(&json!({"token": token_of(link), "password": "a new password 1"}))
            .send()
    };
    assert_eq!(confirm(&links[1]).await.unwrap().status(), 200);
    assert_eq!(confirm(&links[0]).await.unwrap().status(), 410);
}

#[tokio::test]
async fn a_broker_that_refuses_publishes_is_retried_with_backoff_and_loses_nothing() {
    let app = TestApp::start(Settings {
        dispatcher: false,
        ..Settings::default()
    })
    .await;
    let topo = Topology::new(&app.queues.prefix);
    // A policy that lets the work queue hold nothing: every publish is refused (basic.nack).
    let policy = format!("refuse-{}", uuid::Uuid::new_v4().simple());
    // Removed even when an assertion below fails: a policy left behind outlives the test.
    let _guard = PolicyGuard(policy.clone());
    let mgmt = reqwest::Client::new();
    let put = mgmt
        .put(format!(
            "{}/api/policies/%2f/{policy}",
            testkit::management_url()
        ))
        .basic_auth("guest", Some("guest"))
        .json(&json!({
            "pattern": format!("^{}$", regex_escape(&topo.work_queue())),
            "definition": {"max-length": 0},
            "apply-to": "queues",
            "priority": 100,
        }))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let queue_url = format!(
        "{}/api/queues/%2f/{}",
        testkit::management_url(),
        topo.work_queue()
    );
    testkit::eventually("the policy to apply", Duration::from_secs(20), || async {
        let q: Value = mgmt
            .get(&queue_url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (q["effective_policy_definition"]["max-length"] == 0).then_some(())
    })
    .await;
    // A quorum queue's length limit is soft: a publish that arrives while the queue is still
    // empty may get in (under load, the relay can publish a whole batch before the length
    // counts). So the first signup goes alone, and the others only once it has either got in
    // (the queue is then over its limit) or been refused: either way the rest are refused.
    let mut jobs = app.sign_up_many(1).await;
    let work_queue = topo.work_queue();
    testkit::eventually(
        "the first publish to be settled",
        Duration::from_secs(20),
        || async {
            let (attempts,): (i64,) =
                sqlx::query_as("SELECT COALESCE(max(attempts), 0)::int8 FROM outbox")
                    .fetch_one(&app.db.pool)
                    .await
                    .ok()?;
            (attempts > 0 || app.queue_len(&work_queue).await > 0).then_some(())
        },
    )
    .await;
    jobs.extend(app.sign_up_many(3).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (attempts,): (i64,) = sqlx::query_as("SELECT COALESCE(max(attempts), 0)::int8 FROM outbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // A tight connect/publish/fail loop makes hundreds of attempts in 4 s; backoff a handful.
    assert!(
        (1..=12).contains(&attempts),
        "{attempts} publish attempts in 4 s"
    );
    // The refused ones stay in the outbox.
    let (status, v) = app.readiness().await;
    assert_eq!(status, 200);
    assert!(v["outbox_backlog"].as_i64().unwrap() >= 1, "{v}");
    assert_eq!(v["broker"]["status"], "down", "{v}");

    mgmt.delete(format!(
        "{}/api/policies/%2f/{policy}",
        testkit::management_url()
    ))
    .basic_auth("guest", Some("guest"))
    .send()
    .await
    .unwrap();
    testkit::eventually("the outbox to drain", Duration::from_secs(30), || async {
        let (_, v) = app.readiness().await;
        (v["outbox_backlog"] == 0).then_some(())
    })
    .await;
    assert_eq!(app.queue_len(&topo.work_queue()).await, jobs.len() as u32);
}

/// Deletes a RabbitMQ policy when dropped.
struct PolicyGuard(String);

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let url = format!("{}/api/policies/%2f/{}", testkit::management_url(), self.0);
        testkit::block_on_own_thread(async move {
            let _ = reqwest::Client::new()
                .delete(url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
        });
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

#[tokio::test]
async fn listing_and_a_partial_replay_keep_the_dead_queue_in_order() {
    let app = TestApp::ingest_only().await;
    let topo = Topology::new(&app.queues.prefix);
    let conn = app.connect_broker().await;
    topo.declare_work(&conn).await.unwrap();
    let ch = broker::confirm_channel(&conn).await.unwrap();
    // More than 32 letters: a quorum queue returns a closed channel's messages in map order,
    // which scrambles anything beyond 32, and one by one it rotates them.
    let mut ids = Vec::new();
    let start = chrono::Utc::now();
    for n in 0..60 {
        let job = Job::new(
            mailroom::job::JobKind::Verification,
            uuid::Uuid::new_v4(),
            mailroom::domain::Locale::default_locale(),
            chrono::Utc::now(),
        );
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            broker::ERROR_CLASS_HEADER.into(),
            broker::long_string(if n % 2 == 0 { "permanent" } else { "render" }),
        );
        headers.insert(
            broker::DIED_AT_HEADER.into(),
            broker::long_string(&dispatcher::worker::timestamp(
                start + chrono::Duration::milliseconds(n),
            )),
        );
        broker::publish_confirmed(
            &ch,
            "",
            &topo.dead_queue(),
            &job.to_vec(),
            broker::job_properties(&job.job_id.to_string(), headers),
        )
        .await
        .unwrap();
        ids.push(job.job_id.to_string());
    }
    let listed = |l: Vec<mailroom::dead::DeadLetter>| -> Vec<String> {
        l.into_iter().filter_map(|d| d.job_id).collect()
    };
    for _ in 0..3 {
        let l = mailroom::dead::list(&conn, &topo, 500).await.unwrap();
        assert_eq!(listed(l), ids, "listing keeps the order");
    }
    // Replay one class: the other stays, in its order.
    let report = mailroom::dead::replay(
        &conn,
        &topo,
        &mailroom::dead::ReplayOptions {
            filter: mailroom::dead::Filter::ErrorClass("render".into()),
            dry_run: false,
            rate: None,
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((report.examined, report.replayed), (60, 30));
    let left = mailroom::dead::list(&conn, &topo, 500).await.unwrap();
    let expected: Vec<String> = ids.iter().step_by(2).cloned().collect();
    assert_eq!(listed(left), expected);
}

#[tokio::test]
async fn listing_and_dry_run_replay_30_times_never_lose_a_dead_letter() {
    use mailroom::dead::{self, DeadLetter, Filter, ReplayOptions};
    // Real dead letters: SES rejects the message itself.
    let app = TestApp::start(Settings {
        ses_proxy: true,
        ..Settings::default()
    })
    .await;
    app.ses_proxy()
        .set(HttpFault::Error(400, "MessageRejected".into()));
    let jobs = app.sign_up_many(3).await;
    for (_, job) in &jobs {
        app.wait_for_status(*job, "dead").await;
    }
    let topo = Topology::new(&app.queues.prefix);
    let dead_queue = topo.dead_queue();
    testkit::eventually("the dead letters", Duration::from_secs(10), || async {
        (app.queue_len(&dead_queue).await == 3).then_some(())
    })
    .await;
    let conn = app.connect_broker().await;
    let ids = |l: &[DeadLetter]| -> Vec<String> {
        let mut v: Vec<String> = l.iter().filter_map(|d| d.job_id.clone()).collect();
        v.sort();
        v
    };
    let mut expected: Vec<String> = jobs.iter().map(|(_, j)| j.to_string()).collect();
    expected.sort();
    let before = dead::list(&conn, &topo, 100).await.unwrap();
    assert_eq!(ids(&before), expected);

    // RabbitMQ 4.x gives every quorum queue a delivery limit of 20 by default, this 3.10 none: a
    // policy gives this test's dead queue a limit of 3, so that letters given back by requeueing
    // them would be dropped (the dead queue dead-letters nowhere) within the first round.
    let policy = format!("dead-limit-{}", uuid::Uuid::new_v4().simple());
    // Removed even when an assertion below fails: a policy left behind outlives the test.
    let _guard = PolicyGuard(policy.clone());
    let mgmt = reqwest::Client::new();
    let put = mgmt
        .put(format!(
            "{}/api/policies/%2f/{policy}",
            testkit::management_url()
        ))
        .basic_auth("guest", Some("guest"))
        .json(&json!({
            "pattern": format!("^{}$", regex_escape(&dead_queue)),
            "definition": {"delivery-limit": 3},
            "apply-to": "queues",
            "priority": 100,
        }))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let queue_url = format!(
        "{}/api/queues/%2f/{}",
        testkit::management_url(),
        dead_queue
    );
    testkit::eventually("the policy to apply", Duration::from_secs(20), || async {
        let q: Value = mgmt
            .get(&queue_url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (q["effective_policy_definition"]["delivery-limit"] == 3).then_some(())
    })
    .await;

    let dry_run = ReplayOptions {
        filter: Filter::All,
        dry_run: true,
        rate: None,
    };
    let matching_nothing = ReplayOptions {
        filter: Filter::ErrorClass("no-such-class".into()),
        dry_run: false,
        rate: None,
    };
    for round in 1..=30 {
        let listed = dead::list(&conn, &topo, 100).await.unwrap();
        assert_eq!(ids(&listed), expected, "listing {round}");
        // Every header came along: the same letters, not just the same ids.
        assert_eq!(listed, before, "listing {round}");
        let r = dead::replay(&conn, &topo, &dry_run, |_| {}).await.unwrap();
        assert_eq!(
            (r.examined, r.matched, r.replayed, r.duplicates),
            (3, 3, 3, 0),
            "dry run {round}"
        );
        let r = dead::replay(&conn, &topo, &matching_nothing, |_| {})
            .await
            .unwrap();
        assert_eq!(
            (r.examined, r.matched, r.replayed),
            (3, 0, 0),
            "filtered replay {round}"
        );
    }
    // The last give-back's ack has no reply: the count may lag it for a moment.
    testkit::eventually(
        "the dead queue to hold its 3 letters",
        Duration::from_secs(10),
        || async { (app.queue_len(&dead_queue).await == 3).then_some(()) },
    )
    .await;
    assert_eq!(dead::list(&conn, &topo, 100).await.unwrap(), before);
    for (_, job) in &jobs {
        assert_eq!(app.wait_for_status(*job, "dead").await.job_id, *job);
    }
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_list_of_broker_nodes_connects_past_the_ones_that_are_down() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let list = format!(
        "amqp://guest:guest@{closed}/%2f, {}",
        mailroom_testkit::amqp_url()
    );
    // Every starting point of the rotation reaches the live node.
    for _ in 0..3 {
        let conn = mailroom::broker::connect(&list, "test").await.unwrap();
        assert!(conn.status().connected());
        let _ = conn.close(200, "done".into()).await;
    }
    let none = format!("amqp://guest:guest@{closed}/%2f,amqp://guest:guest@{closed}/%2f");
    assert!(mailroom::broker::connect(&none, "test").await.is_err());
    assert_eq!(
        mailroom::config::redact_url(&list.replace("guest:guest", "user:secret")),
        format!(
            "amqp://user:***@{closed}/%2f,{}",
            mailroom_testkit::amqp_url().replace("guest:guest", "user:***")
        )
    );
}

#[tokio::test]
async fn connections_ended_by_a_database_restart_answer_503_not_500() {
    let app = TestApp::ingest_only().await;
    // Warm ingest's pool, then end every one of its connections the way a restart does
    // (57P01, "terminating connection due to administrator command").
    for _ in 0..4 {
        app.sign_up_ok(&app.unique_name(), &app.unique_email())
            .await;
    }
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(ended >= 1);
    let mut answers = Vec::new();
    for _ in 0..30 {
        let r = app.sign_up(&app.unique_name(), &app.unique_email()).await;
        let status = r.status().as_u16();
        if status == 503 {
            assert!(r.headers().get("retry-after").is_some());
        }
        answers.push(status);
        if status == 202 {
            break;
        }
    }
    assert!(
        answers.iter().all(|s| *s == 202 || *s == 503),
        "{answers:?}"
    );
    assert_eq!(answers.last(), Some(&202), "{answers:?}");
}

/// Runs `sql` on a connection of its own that may write whatever the database's default
/// (the test's pool may hold connections that were ended meanwhile).
async fn as_admin(app: &TestApp, sql: &str) {
    use sqlx::Connection;
    let mut conn = fresh_connection(app).await;
    sqlx::query("SET default_transaction_read_only = off")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A connection of its own to the test database, opened now (with its current settings).
async fn fresh_connection(app: &TestApp) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&app.db.url).await.unwrap()
}

/// Ends every connection of the test database (but the one ending them), so that the next
/// ones pick up the database's new settings.
const END_OTHER_CONNECTIONS: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()";

#[tokio::test]
async fn a_read_only_database_answers_503_with_retry_after_and_writes_nothing() {
    let app = TestApp::ingest_only().await;
    app.sign_up_ok(&app.unique_name(), &app.unique_email())
        .await;
    // As after a failover to a standby: new sessions cannot write (SQLSTATE 25006).
    let db = app.db.url.rsplit('/').next().unwrap().to_owned();
    as_admin(
        &app,
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
    )
    .await;
    as_admin(&app, END_OTHER_CONNECTIONS).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        let r = app.sign_up(&app.unique_name(), &app.unique_email()).await;
        let status = r.status().as_u16();
        if status == 503 {
            assert!(
                r.headers().get("retry-after").is_some(),
                "503 without Retry-After"
            );
        }
        answers.push(status);
    }
    // The first may meet a connection ended above (also 503); none may be a 500.
    assert!(answers.iter().all(|s| *s == 503), "{answers:?}");
    as_admin(
        &app,
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = off"),
    )
    .await;
    as_admin(&app, END_OTHER_CONNECTIONS).await;
    testkit::eventually(
        "signups to be taken again",
        Duration::from_secs(20),
        || async {
            let r = app.sign_up(&app.unique_name(), &app.unique_email()).await;
            (r.status() == 202).then_some(())
        },
    )
    .await;
    // The first user and the one accepted just now: nothing was written while read-only.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut fresh_connection(&app).await)
        .await
        .unwrap();
    assert_eq!(n, 2, "nothing written while read-only");
}

#[tokio::test]
async fn a_sender_that_is_no_longer_verified_pauses_and_nothing_is_dead_lettered() {
    let app = TestApp::start(Settings {
        retry_delays: vec![ms(200)],
        ..Settings::default()
    })
    .await;
    // The sender identity is deleted (or MAIL_FROM points at another region): SES rejects
    // every send, naming the sender.
    app.moto.forget_sender(&app.sender);
    let jobs = app.sign_up_many(5).await;
    testkit::eventually(
        "a send refused for the sender",
        Duration::from_secs(20),
        || async {
            let stopped: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sends WHERE error_class = 'account_stop'
                   AND last_error LIKE '%not verified%'",
            )
            .fetch_one(&app.db.pool)
            .await
            .ok()?;
            (stopped >= 1).then_some(())
        },
    )
    .await;
    // Several probe intervals and a retry delay later: still nothing dead, nothing sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        dead_count(&app).await,
        (0, 0),
        "dead-lettered for the sender"
    );
    assert!(app.moto.messages_to(&jobs[0].0).await.is_empty());

    app.moto.verify_sender(&app.sender).await;
    for (email, job) in &jobs {
        app.wait_for_status(*job, "sent").await;
        assert_eq!(app.moto.messages_to(email).await.len(), 1, "{email}");
    }
    assert_eq!(dead_count(&app).await, (0, 0));
}

#[tokio::test]
async fn a_silent_partition_from_the_broker_is_detected_and_nothing_is_sent_twice() {
    // A short heartbeat, so that the partition is noticed in seconds: with RabbitMQ's default
    // (60 s) neither service would notice for two minutes, and a relay waiting on confirms only
    // after its 30 s deadline.
    let heartbeat = Duration::from_secs(1);
    let app = TestApp::start(Settings {
        amqp_proxy: true,
        amqp_heartbeat: Some(heartbeat),
        ses_proxy: true,
        ..Settings::default()
    })
    .await;
    let mut jobs = app.sign_up_many(3).await;
    crate::delivery::all_sent(&app, &jobs).await;

    // Sends in flight when the partition starts: SES (not partitioned) takes them while their
    // acks go nowhere, so the broker gives them to the next session again.
    app.ses_proxy().set(HttpFault::Delay(ms(800)));
    let requests = app.ses_proxy().requests();
    jobs.extend(app.sign_up_many(3).await);
    // Every job published (the relay idle, as most of the time) and sends under way.
    testkit::eventually(
        "a send to be in flight",
        Duration::from_secs(20),
        || async {
            let (_, v) = app.readiness().await;
            (v["outbox_backlog"] == 0 && app.ses_proxy().requests() > requests).then_some(())
        },
    )
    .await;
    let connections = app.amqp_proxy().accepted();
    app.amqp_proxy().stall();
    let stalled = std::time::Instant::now();
    app.ses_proxy().set(HttpFault::Pass);

    // Both services give their silent connection up and connect again (a connection the
    // partition holds): the relay, idle, and the dispatcher, one each.
    testkit::eventually(
        "both services to give up their connection and connect again",
        Duration::from_secs(20),
        || async { (app.amqp_proxy().accepted() >= connections + 2).then_some(()) },
    )
    .await;
    let detected = stalled.elapsed();
    // lapin gives up after 2 heartbeats without a byte, checked every half heartbeat; then
    // the dispatcher drains its steps and waits its first backoff (250 ms).
    assert!(
        detected <= 2 * heartbeat + Duration::from_secs(3),
        "the partition went unnoticed for {detected:?}"
    );
    let ops: Value = app.ops_get("/readyz").await.json().await.unwrap();
    assert_eq!(ops["broker"]["status"], "down", "{ops}");
    assert!(
        ops["broker"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("heartbeat")),
        "{ops}"
    );

    // Signups meanwhile are accepted: the outbox holds them.
    jobs.extend(app.sign_up_many(4).await);
    let (status, v) = app.readiness().await;
    assert_eq!(status, 200, "{v}");
    assert!(v["outbox_backlog"].as_i64().unwrap() >= 4, "{v}");
    println!("detected after {detected:?}; /readyz: {ops}");

    app.amqp_proxy().unstall();
    let healed = std::time::Instant::now();
    crate::delivery::all_sent(&app, &jobs).await;
    println!(
        "every job sent {:?} after the partition ended",
        healed.elapsed()
    );
    for (email, _) in &jobs {
        assert_eq!(app.moto.messages_to(email).await.len(), 1, "{email}");
    }
    testkit::eventually("the outbox to drain", Duration::from_secs(20), || async {
        let (_, v) = app.readiness().await;
        (v["outbox_backlog"] == 0 && v["broker"]["status"] == "connected").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_memory_alarm_blocks_the_relay_and_every_job_is_published_once_when_it_clears() {
    // A node of this test's own: an alarm blocks every publisher of its broker, and the shared
    // broker serves every other test.
    let node = testkit::RabbitNode::start().await;
    let app = TestApp::start(Settings {
        dispatcher: false,
        amqp_url: Some(node.url()),
        // Short, so that the block below outlasts two heartbeats: lapin writes nothing on a
        // blocked connection, not even heartbeats, and the connection must survive that.
        amqp_heartbeat: Some(Duration::from_secs(1)),
        ..Settings::default()
    })
    .await;
    let work_queue = Topology::new(&app.queues.prefix).work_queue();
    // A connection that publishes nothing: RabbitMQ blocks only publishers.
    let conn = broker::connect(&node.url(), "test").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queued = || async {
        broker::queue_counts(&ch, &work_queue)
            .await
            .map_or(0, |(ready, _)| ready)
    };
    let mut jobs = app.sign_up_many(2).await;
    testkit::eventually(
        "the first jobs to be queued",
        Duration::from_secs(20),
        || async { (queued().await == 2).then_some(()) },
    )
    .await;

    node.ctl(&["set_vm_memory_high_watermark", "0.0000001"]);
    let alarm = std::time::Instant::now();
    // Accepted all the same: the outbox holds them.
    jobs.extend(app.sign_up_many(5).await);
    let ops: Value = testkit::eventually(
        "/readyz to report the blocked broker",
        Duration::from_secs(20),
        || async {
            let ops: Value = app.ops_get("/readyz").await.json().await.ok()?;
            (ops["broker"]["status"] == "blocked").then_some(ops)
        },
    )
    .await;
    let noticed = alarm.elapsed();
    assert!(
        ops["broker"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("memory")),
        "{ops}"
    );
    // Still ready (the outbox holds the jobs), and the public answer gives no reason.
    let (status, public) = app.readiness().await;
    assert_eq!(status, 200, "{public}");
    assert_eq!(public["broker"], json!({"status": "blocked"}), "{public}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(queued().await, 2, "published while the broker was blocked");
    let (_, v) = app.readiness().await;
    assert_eq!(v["outbox_backlog"], 5, "{v}");

    node.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    let cleared = std::time::Instant::now();
    testkit::eventually("the outbox to drain", Duration::from_secs(30), || async {
        let (_, v) = app.readiness().await;
        (v["outbox_backlog"] == 0 && v["broker"]["status"] == "connected").then_some(())
    })
    .await;
    println!(
        "blocked noticed {noticed:?} after the alarm; outbox drained {:?} after it cleared; {ops}",
        cleared.elapsed()
    );
    // A late second copy would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut published = Vec::new();
    while let Some(m) = ch
        .basic_get(
            work_queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let id = m.delivery.properties.message_id().as_ref().unwrap();
        published.push(id.as_str().parse::<uuid::Uuid>().unwrap());
    }
    published.sort();
    let mut expected: Vec<uuid::Uuid> = jobs.iter().map(|(_, job)| *job).collect();
    expected.sort();
    assert_eq!(published, expected, "each job in the work queue once");
    let _ = conn.close(200, "done".into()).await;
}
