//! PostgreSQL switched over to its promoted streaming replica while signups arrive, as a
//! managed database's failover does: the real ingest and dispatcher reach the database through
//! the test kit's proxy, which then points at the replica (a DNS flip). No accepted signup is
//! lost, the gap answers 503 (never 500), and every job is sent once the new primary is up.

use std::process::{Command, Stdio};
use std::time::Duration;

use mailroom_testkit::{self as testkit, KillOnDrop, Moto, PgPair, TcpProxy, TestQueues};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_the_promoted_replica_loses_no_accepted_signup() {
    let pair = PgPair::start().await;
    let proxy = TcpProxy::start(pair.primary).await;
    let db_url = format!("postgres://postgres@{}/postgres", proxy.addr);
    let queues = TestQueues::new();
    let moto = Moto::new();
    let sender = format!("sender-{}@example.com", uuid::Uuid::new_v4().simple());
    moto.verify_sender(&sender).await;
    let port = testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = |c: &mut Command| {
        c.env("DATABASE_URL", &db_url)
            .env("AMQP_URL", testkit::amqp_url())
            .env("QUEUE_PREFIX", &queues.prefix)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
    };
    let mut ingest = Command::new(testkit::bin_path("ingest"));
    env(&mut ingest);
    ingest
        .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
        .env("INGEST_METRICS_LISTEN", "off")
        .env("INGEST_API_KEYS", "switch-key")
        .env("RELAY_INTERVAL", "200ms");
    let _ingest = KillOnDrop(ingest.spawn().unwrap());
    let mut dispatcher = Command::new(testkit::bin_path("dispatcher"));
    env(&mut dispatcher);
    dispatcher
        .arg("run")
        .env("MAIL_FROM", &sender)
        .env("PUBLIC_URL", &base)
        .env("SES_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("MAX_SEND_RATE", "50")
        .env("SES_TIMEOUT", "2s")
        .env("RETRY_DELAYS", "200ms,400ms,1s,2s")
        .env("DISPATCHER_METRICS_LISTEN", "off");
    let _dispatcher = KillOnDrop(dispatcher.spawn().unwrap());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    testkit::eventually("ingest ready", Duration::from_secs(30), || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Signups one after another, through the switchover and past it.
    let signups = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            let started = std::time::Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(14) {
                i += 1;
                let email = format!("switch-{i}-{}@example.com", uuid::Uuid::new_v4().simple());
                let r = http
                    .post(format!("{base}/v1/signups"))
                    .bearer_auth("switch-key")
                    .json(&serde_json::json!({"name": format!("s{i}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]), "email": email}))
                    .send()
                    .await;
                let status = r.as_ref().map_or(0, |r| r.status().as_u16());
                *statuses.entry(status).or_default() += 1;
                if status == 202 {
                    accepted.push(email);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (accepted, statuses)
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The failover: the primary goes, the replica is promoted, the name points at it.
    proxy.cut();
    pair.switch_over().await;
    proxy.retarget(pair.replica);
    proxy.restore();
    let (accepted, statuses) = signups.await.unwrap();
    // Shown with --nocapture: how the gap looked.
    eprintln!("answers by status through the switchover: {statuses:?}");
    assert!(accepted.len() > 20, "{statuses:?}");
    assert!(
        statuses.keys().all(|s| *s == 202 || *s == 503),
        "answers other than 202 and 503: {statuses:?}"
    );

    // Every accepted signup is on the new primary, and gets its email, once.
    let promoted = match sqlx::PgPool::connect(&format!(
        "postgres://postgres@{}/postgres",
        pair.replica
    ))
    .await
    {
        Ok(p) => p,
        Err(e) => panic!("cannot reach the promoted replica: {e}\n{}", pair.logs()),
    };
    for email in &accepted {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(&promoted)
            .await
            .unwrap();
        assert_eq!(n, 1, "{email} was accepted and lost ({statuses:?})");
    }
    for email in &accepted {
        let got = moto.wait_for(email, 1, Duration::from_secs(60)).await;
        assert_eq!(got.len(), 1, "{email}");
    }
    promoted.close().await;
}
