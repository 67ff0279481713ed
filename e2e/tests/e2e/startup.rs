//! Start-up: either binary may start first.

use std::time::Duration;

use mailroom::config::Secret;
use mailroom_testkit::app::TestApp;
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
