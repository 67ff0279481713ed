//! The real `dashboard` binary in a real terminal (tmux), against live PostgreSQL, RabbitMQ and
//! moto: it shows the data, replays a dead letter behind a confirm, writes the audit row, and
//! restores the terminal on `q`.

use std::process::Command;
use std::time::Duration;

use lapin::types::FieldTable;
use mailroom::broker::{self, Topology};
use mailroom::domain::{EmailAddress, Locale, UserName};
use mailroom::job::{Job, JobKind};
use mailroom::store::{self, NewUser};
use mailroom_testkit::{self as testkit, TestDb, TestQueues};

struct Tmux(String);

impl Tmux {
    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(
            Command::new("tmux")
                .args(["send-keys", "-t", &self.0, keys])
                .status()
                .unwrap()
                .success()
        );
    }

    async fn wait_for(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the screen did not show {text:?} within 20 s; it shows:\n{s}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[tokio::test]
async fn the_real_binary_shows_live_data_replays_behind_a_confirm_and_restores_the_terminal() {
    let db = TestDb::create().await;
    let queues = TestQueues::new();
    let topo = Topology::new(&queues.prefix);
    let email = format!(
        "waiting-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let job = Job::new(
        JobKind::Verification,
        uuid::Uuid::new_v4(),
        Locale::default_locale(),
        chrono::Utc::now(),
    );
    let user = NewUser {
        name: UserName::parse(&format!(
            "u{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .unwrap(),
        email: EmailAddress::parse(&email).unwrap(),
        hashed_password: None,
        locale: Locale::default_locale(),
    };
    store::create_user_with_job(&db.pool, &user, &job)
        .await
        .unwrap();

    // One dead letter, as the dispatcher would have left it.
    let conn = broker::connect(&testkit::amqp_url(), "test").await.unwrap();
    let ch = broker::confirm_channel(&conn).await.unwrap();
    topo.declare_all(&conn, &[Duration::from_secs(1)])
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        broker::ERROR_CLASS_HEADER.into(),
        broker::long_string("permanent"),
    );
    headers.insert(
        broker::LAST_ERROR_HEADER.into(),
        broker::long_string("SES MessageRejected: sender not verified"),
    );
    headers.insert(broker::RECIPIENT_HEADER.into(), broker::long_string(&email));
    broker::publish_confirmed(
        &ch,
        "",
        &topo.dead_queue(),
        &job.to_vec(),
        broker::job_properties(&job.job_id.to_string(), headers),
    )
    .await
    .unwrap();
    // ... and the send log row the dispatcher writes with it (the dashboard lists from there).
    sqlx::query(
        "INSERT INTO sends (job_id, kind, user_id, recipient, status, attempts, error_class,
                            last_error, first_attempt_at, updated_at)
         VALUES ($1, 'verification', $2, $3, 'dead', 1, 'permanent',
                 'SES MessageRejected: sender not verified', now(), now())",
    )
    .bind(job.job_id)
    .bind(job.user_id)
    .bind(&email)
    .execute(&db.pool)
    .await
    .unwrap();

    let session = Tmux(format!("mailroom-dash-{}", uuid::Uuid::new_v4().simple()));
    let command = format!(
        "env DATABASE_URL='{}' AMQP_URL='{}' QUEUE_PREFIX='{}' SES_ENDPOINT_URL='{}' AWS_ACCESS_KEY_ID=testing \
         AWS_SECRET_ACCESS_KEY=testing RETRY_DELAYS=1s DISPATCHER_METRICS_URL=off REFRESH_INTERVAL=300ms \
         USER=operator-test '{}'; echo DASHBOARD-EXITED-$?; sleep 60",
        db.url,
        testkit::amqp_url(),
        queues.prefix,
        testkit::moto_url(),
        env!("CARGO_BIN_EXE_dashboard"),
    );
    assert!(
        Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session.0,
                "-x",
                "80",
                "-y",
                "24",
                &command
            ])
            .status()
            .unwrap()
            .success()
    );

    let screen = session.wait_for("emails").await;
    assert!(screen.contains("1 Overview"), "{screen}");
    assert!(
        screen.contains("retry.1s") && screen.contains("dead"),
        "{screen}"
    );
    session.wait_for("SES account     unavailable").await;

    session.keys("3");
    let screen = session.wait_for(&email).await;
    assert!(
        screen.contains("not sent"),
        "no link was sent to this user yet: {screen}"
    );

    session.keys("4");
    let screen = session.wait_for("permanent").await;
    assert!(
        screen.contains("Dead letters by error class (1)"),
        "{screen}"
    );
    session.keys("r");
    session.wait_for("Replay this dead letter?").await;
    session.keys("y");
    session.wait_for("replayed 1 of 1").await;
    session.wait_for("Dead letters by error class (0)").await;
    let audit: (String, String, i32) = sqlx::query_as("SELECT actor, action, count FROM audit_log")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(audit, ("operator-test".into(), "replay".into(), 1));

    session.keys("?");
    session.wait_for("Keys (Esc closes)").await;
    session.keys("Escape");
    session.keys("q");
    let screen = session.wait_for("DASHBOARD-EXITED-0").await;
    assert!(
        !screen.contains("1 Overview"),
        "the alternate screen is gone: {screen}"
    );
    drop(conn);
}
