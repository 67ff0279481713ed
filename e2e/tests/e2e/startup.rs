//! Start-up: either binary may start first.

use std::time::Duration;

use mailroom::config::Secret;
use mailroom_testkit::app::{Settings, TestApp};
use mailroom_testkit::{self as testkit, TestDb};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_dispatcher_started_before_any_migration_applies_them_and_registers() {
    // Only for its queues, sender and SES settings: the dispatcher gets a database that no
    // ingest has migrated yet, as when both start at once.
    let app = TestApp::ingest_only().await;
    let empty = TestDb::create_empty().await;
    let mut config = app.dispatcher_config();
    config.db.database_url = Secret::new(empty.url.clone());
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(dispatcher::run(
        config,
        app.clock.clone(),
        testkit::sdk_config(),
        async move { stop.cancelled().await },
    ));
    testkit::eventually(
        "the dispatcher registered in a database it migrated",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dispatchers")
                .fetch_one(&empty.pool)
                .await
                .ok()?;
            (n == 1).then_some(())
        },
    )
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}

async fn dispatcher_readiness(
    http: &reqwest::Client,
    port: u16,
) -> Option<(u16, serde_json::Value)> {
    let r = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.json().await.ok()?))
}

#[tokio::test]
async fn the_dispatcher_is_ready_while_consuming_and_says_why_not_while_paused() {
    use mailroom_testkit::HttpFault;
    let app = TestApp::start(Settings {
        dispatcher: false,
        ses_proxy: true,
        ..Settings::default()
    })
    .await;
    let port = testkit::free_port();
    let _dispatcher = mailroom_testkit::KillOnDrop(
        app.dispatcher_command()
            .env("MAX_SEND_RATE", "50")
            .env("PAUSE_PROBE_INTERVAL", "500ms")
            .env("DISPATCHER_METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let v = testkit::eventually("ready", Duration::from_secs(30), || async {
        dispatcher_readiness(&http, port)
            .await
            .filter(|(s, _)| *s == 200)
            .map(|(_, v)| v)
    })
    .await;
    assert_eq!(v["consuming"], true, "{v}");
    let healthz = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mailroom_dispatcher_paused"), "{metrics}");

    // SES refuses the account: the dispatcher pauses, and says so.
    app.ses_proxy()
        .set(HttpFault::Error(403, "AccessDeniedException".into()));
    let jobs = app.sign_up_many(1).await;
    let v = testkit::eventually(
        "not ready while paused",
        Duration::from_secs(30),
        || async {
            dispatcher_readiness(&http, port)
                .await
                .filter(|(s, v)| *s == 503 && !v["paused"].is_null())
                .map(|(_, v)| v)
        },
    )
    .await;
    assert_eq!(v["ready"], false, "{v}");
    assert!(v["paused"].is_string(), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("paused"), "{v}");

    // Access is back: ready again, and the email goes out.
    app.ses_proxy().set(HttpFault::Pass);
    crate::delivery::all_sent(&app, &jobs).await;
    testkit::eventually("ready again", Duration::from_secs(30), || async {
        dispatcher_readiness(&http, port)
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
}
