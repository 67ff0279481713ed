//! One SES rate for every dispatcher: three real dispatcher processes on one database and
//! queue prefix, one killed mid-run; per-second counts from the send log.

use std::collections::BTreeMap;
use std::time::Duration;

use mailroom_testkit as testkit;

use crate::delivery::{all_sent, spawn_dispatcher_process_at};
use mailroom_testkit::app::{Settings, TestApp};

const RATE: f64 = 30.0;

/// When each successful SES call started (epoch seconds), from the send log.
async fn starts(app: &TestApp) -> Vec<f64> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM sent_at)::float8 - latency_ms / 1000.0
           FROM sends WHERE status = 'sent' ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

async fn live(app: &TestApp) -> Vec<dispatcher::rate::Member> {
    dispatcher::rate::members(&app.db.pool, &app.queues.prefix)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.live)
        .collect()
}

async fn db_now(app: &TestApp) -> f64 {
    sqlx::query_scalar("SELECT extract(epoch FROM now())::float8")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn three_dispatchers_share_one_rate_and_take_over_from_one_that_is_killed() {
    let app = TestApp::start(Settings {
        dispatcher: false,
        ..Settings::default()
    })
    .await;
    let jobs = app.sign_up_many(300).await;
    let mut procs: Vec<_> = (0..3)
        .map(|_| spawn_dispatcher_process_at(&app, 4, RATE))
        .collect();

    // All three count each other and split the rate.
    let three = testkit::eventually(
        "three live dispatchers",
        Duration::from_secs(20),
        || async {
            let l = live(&app).await;
            (l.len() == 3 && l.iter().all(|m| (m.share - RATE * 0.97 / 3.0).abs() < 0.01))
                .then_some(l)
        },
    )
    .await;
    assert_eq!(three.len(), 3);
    let all_three_from = db_now(&app).await;

    // Let them send a while together, then kill one.
    testkit::eventually("200 sent", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sends WHERE status = 'sent'")
            .fetch_one(&app.db.pool)
            .await
            .ok()?;
        (n >= 200).then_some(())
    })
    .await;
    let killed_at = db_now(&app).await;
    procs[0].kill().unwrap();
    procs[0].wait().unwrap();

    // The other two take its share over within a few seconds, and `dispatcher status` says so.
    testkit::eventually(
        "two dispatchers at half the rate each",
        Duration::from_secs(10),
        || async {
            let l = live(&app).await;
            (l.len() == 2 && l.iter().all(|m| (m.share - RATE * 0.97 / 2.0).abs() < 0.01))
                .then_some(())
        },
    )
    .await;
    let took_over_after = db_now(&app).await - killed_at;
    assert!(took_over_after < 8.0, "took {took_over_after:.1} s");
    let out = std::process::Command::new(mailroom_testkit::bin_path("dispatcher"))
        .args(["status"])
        .env("DATABASE_URL", &app.db.url)
        .env("QUEUE_PREFIX", &app.queues.prefix)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("2 live dispatcher(s)") && text.contains("gone"),
        "{text}"
    );

    all_sent(&app, &jobs).await;

    // Never above the account's rate in any second, whoever sent.
    let starts = starts(&app).await;
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for s in &starts {
        *per_second.entry(s.floor() as i64).or_default() += 1;
    }
    let busiest = per_second.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= RATE as usize,
        "{busiest} sends started in one second: {per_second:?}"
    );
    // While all three ran with their shares (from a second after they were counted, as the
    // shares are renewed each second, to the kill), together they used at least 90 % of it.
    let (from, to) = (
        (all_three_from + 1.0).ceil() as i64,
        killed_at.floor() as i64,
    );
    let full: Vec<usize> = (from..to)
        .map(|s| per_second.get(&s).copied().unwrap_or(0))
        .collect();
    assert!(
        !full.is_empty(),
        "no full second with three: {per_second:?}"
    );
    let mean = full.iter().sum::<usize>() as f64 / full.len() as f64;
    println!(
        "per second: {per_second:?}; three together: {full:?} (mean {mean:.1}); took over after {took_over_after:.1} s"
    );
    assert!(
        mean >= 0.9 * RATE,
        "{mean:.1}/s over {full:?} (all: {per_second:?})"
    );
}

#[tokio::test]
async fn a_dispatcher_cut_off_from_the_database_stops_sending_until_it_is_back() {
    let app = TestApp::start(Settings {
        dispatcher: false,
        db_proxy: true,
        ..Settings::default()
    })
    .await;
    // Through the cuttable proxy, as the dispatcher's own pool would be.
    let pool = mailroom::store::connect(&app.service_db_url).await.unwrap();
    let rate = std::sync::Arc::new(dispatcher::rate::SharedRate::shared(
        pool,
        &app.queues.prefix,
        RATE,
    ));
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(rate.clone().run(cancel.clone()));
    // Not before it has been counted: joining waits.
    assert!(rate.limiter().is_none());
    testkit::eventually("a share", Duration::from_secs(10), || async {
        rate.limiter().map(|_| ())
    })
    .await;
    assert!((rate.share() - RATE * 0.97).abs() < 0.01);

    app.db_proxy().cut();
    let cut = std::time::Instant::now();
    testkit::eventually(
        "no share without the database",
        Duration::from_secs(10),
        || async { rate.limiter().is_none().then_some(()) },
    )
    .await;
    // Before the others would count it gone (5 s): no two dispatchers ever use one share.
    assert!(
        cut.elapsed() < dispatcher::rate::LIVE_FOR,
        "{:?}",
        cut.elapsed()
    );
    assert_eq!(rate.share(), 0.0);

    app.db_proxy().restore();
    testkit::eventually("the share back", Duration::from_secs(15), || async {
        rate.limiter().map(|_| ())
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
    // Leaving deletes its row.
    assert!(live(&app).await.is_empty());
}
