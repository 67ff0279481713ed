//! The faults and abuse of production, each held without losing or dead-lettering mail: SES
//! refusing the credentials, a database that refuses writes, a changed retry ladder, a second
//! copy of a job while the first is being sent, a send that timed out and went out twice, a
//! broker that refuses publishes, addresses SES cannot take, link scanners, and a flood of
//! password requests.

use std::process::{Command, Stdio};
use std::time::Duration;

use mailroom::broker::{self, Topology};
use mailroom::domain::Token;
use mailroom::job::Job;
use mailroom::testkit::{self, HttpFault};
use serde_json::{Value, json};

use crate::helpers::{API_KEY, Settings, TestApp, token_of};

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
    let job = crate::pipeline::make_user(app, &email).await;
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
async fn a_newer_reset_request_invalidates_the_links_of_older_ones() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    app.wait_for_status(job, "sent").await;
    app.post("/v1/password-resets", &json!({"email": email}))
        .await;
    let first = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await[1]
        .link("/reset-password")
        .unwrap();
    // The per-address limit allows one a minute: move the clock past it.
    app.clock.advance(chrono::Duration::seconds(61));
    app.post("/v1/password-resets", &json!({"email": email}))
        .await;
    let second = app.moto.wait_for(&email, 3, Duration::from_secs(30)).await[2]
        .link("/reset-password")
        .unwrap();
    assert_eq!(app.follow(&first).await.status(), 404);
    assert_eq!(app.follow(&second).await.status(), 200);
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
    let jobs = app.sign_up_many(2).await;
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
    // A quorum queue's length limit is soft: the first message may get in, the rest are
    // refused and stay in the outbox.
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
async fn addresses_ses_cannot_take_are_refused_and_idn_domains_are_one_address() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/signups",
        "/v1/verifications/resend",
        "/v1/password-resets",
    ] {
        let body = if path == "/v1/signups" {
            json!({"name": app.unique_name(), "email": "jürgen@example.com"})
        } else {
            json!({"email": "jürgen@example.com"})
        };
        let r = app.post(path, &body).await;
        assert_eq!(r.status(), 422, "{path}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["fields"]["email"].as_str().unwrap_or_default();
        assert!(msg.contains("non-ASCII"), "{path}: {v}");
    }

    let local = format!("leser{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let unicode = format!("{local}@bücher.test");
    let ascii = format!("{local}@xn--bcher-kva.test");
    let (_, job) = app.sign_up_job(&app.unique_name(), &unicode).await;
    // The other spelling is the same address.
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": ascii}),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(app.user(&unicode).await["email"], ascii);
    app.wait_for_status(job, "sent").await;
    assert_eq!(
        app.moto.messages_to(&ascii).await.len(),
        1,
        "sent as punycode"
    );
}

#[tokio::test]
async fn head_on_a_verification_link_does_not_consume_it() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    for _ in 0..3 {
        let r = app.http.head(&link).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.user(&email).await["email_verified"], false);
    assert_eq!(app.follow(&link).await.status(), 200);
    assert_eq!(app.user(&email).await["email_verified"], true);
    assert_eq!(app.http.head(&link).send().await.unwrap().status(), 410);
}

#[tokio::test]
async fn in_click_mode_opening_the_link_shows_a_button_and_only_its_post_verifies() {
    let app = TestApp::start(Settings {
        verify_link_mode: ingest::VerifyLinkMode::Click,
        ..Settings::default()
    })
    .await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    // A scanner opens it, twice.
    for _ in 0..2 {
        let page = app.follow(&link).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("<form method=\"post\""), "{html}");
    }
    assert_eq!(app.user(&email).await["email_verified"], false);
    let r = app
        .http
        .post(format!("{}/verify-email", app.base))
        .form(&[("token", token_of(&link))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("confirmed"));
    assert_eq!(app.user(&email).await["email_verified"], true);
}

#[tokio::test]
async fn made_up_reset_tokens_are_refused_without_hashing_anything() {
    let app = TestApp::ingest_only().await;
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let (http, base) = (app.http.clone(), app.base.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/v1/password-resets/confirm"))
                .json(&json!({"token": Token::generate().expose(), "password": "a guess 12345"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 404);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("mailroom_password_hashes_total{outcome=\"done\"} 0")
            || !metrics.contains("mailroom_password_hashes_total{outcome=\"done\"}"),
        "{metrics}"
    );
}

/// A reset token for `email`'s user, written straight into the database as the dispatcher would.
async fn plant_reset_token(app: &TestApp, user_id: uuid::Uuid) -> Token {
    let token = Token::generate();
    let job = uuid::Uuid::new_v4();
    sqlx::query(
        "UPDATE users SET reset_job_id = $2, reset_job_at = now(),
                          reset_token_expiry = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(user_id)
    .bind(job)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO link_tokens (token_hash, user_id, kind, job_id, expires_at, created_at)
         VALUES ($1, $2, 'reset', $3, now() + interval '1 hour', now())",
    )
    .bind(token.hash().as_str())
    .bind(user_id)
    .bind(job)
    .execute(&app.db.pool)
    .await
    .unwrap();
    token
}

/// Peak resident memory of a process, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status")
        * 1024
}

#[tokio::test]
async fn a_flood_of_password_requests_is_bounded_and_ingest_stays_responsive() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let user_id = app.sign_up_ok(&app.unique_name(), &email).await;
    let token = plant_reset_token(&app, user_id).await;

    // The real binary, so that its memory is its own.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_dispatcher")).with_file_name("ingest");
    let ingest = Command::new(bin)
        .env("DATABASE_URL", &app.db.url)
        .env("AMQP_URL", &app.amqp_url)
        .env("QUEUE_PREFIX", &app.queues.prefix)
        .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
        .env("INGEST_API_KEYS", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ingest = testkit::KillOnDrop(ingest);
    let http = reqwest::Client::new();
    testkit::eventually("ingest up", Duration::from_secs(30), || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    // 300 anonymous requests at once, each with a valid token: every one passes the token check
    // and asks for an argon2 hash.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let (http, base, t) = (http.clone(), base.clone(), token.expose().to_owned());
        flood.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/password-resets/confirm"))
                .json(&json!({"token": t, "password": "flood password 1"}))
                .send()
                .await
                .unwrap();
            let retry_after = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry_after)
        }));
    }
    // Meanwhile: health answers, and a signup without a password is accepted.
    let started = std::time::Instant::now();
    let health = http
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let health_took = started.elapsed();
    assert_eq!(health.status(), 200);
    let signup = http
        .post(format!("{base}/v1/signups"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": app.unique_name(), "email": app.unique_email()}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 202);

    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for t in flood {
        let (status, retry_after) = t.await.unwrap();
        if status == 503 {
            assert!(retry_after, "503 comes with Retry-After");
        }
        *by_status.entry(status).or_default() += 1;
    }
    let rss = peak_rss(ingest.id());
    let _ = ingest.kill();
    let _ = ingest.wait();
    eprintln!(
        "flood: {by_status:?}; /healthz took {health_took:?}; peak RSS {} MB",
        rss / 1_000_000
    );
    assert_eq!(
        by_status.get(&200),
        Some(&1),
        "one request changed it: {by_status:?}"
    );
    assert!(
        by_status.get(&503).copied().unwrap_or(0) >= 200,
        "most were refused at once: {by_status:?}"
    );
    assert!(rss < 300_000_000, "peak RSS {rss} bytes");
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
async fn a_retry_of_a_reset_whose_link_was_used_sends_no_new_link() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let signup = crate::pipeline::make_user(&app, &email).await;
    let reset = Job::new(
        mailroom::job::JobKind::PasswordReset,
        signup.user_id,
        mailroom::domain::Locale::default_locale(),
        chrono::Utc::now(),
    );
    let worker = crate::pipeline::worker_for(&app);
    let first = worker.process(Ok(reset.clone()), None).await;
    assert!(
        matches!(first, dispatcher::worker::Outcome::Sent { .. }),
        "{first:?}"
    );
    let link = app.moto.wait_for(&email, 1, Duration::from_secs(10)).await[0]
        .link("/reset-password")
        .unwrap();
    let r = app
        .http
        .post(format!("{}/v1/password-resets/confirm", app.base))
        .json(&json!({"token": token_of(&link), "password": "a new password 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // As if the first SES call had timed out (it arrived all the same) and the ladder retries.
    sqlx::query("UPDATE sends SET status = 'retrying' WHERE job_id = $1")
        .bind(reset.job_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let again = worker.process(Ok(reset.clone()), None).await;
    assert!(
        matches!(again, dispatcher::worker::Outcome::Skipped { .. }),
        "{again:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.moto.messages_to(&email).await.len(),
        1,
        "no second link"
    );
}

#[tokio::test]
async fn a_list_of_broker_nodes_connects_past_the_ones_that_are_down() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let list = format!(
        "amqp://guest:guest@{closed}/%2f, {}",
        mailroom::testkit::amqp_url()
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
            mailroom::testkit::amqp_url().replace("guest:guest", "user:***")
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
