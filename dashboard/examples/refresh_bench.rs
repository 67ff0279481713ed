//! Benchmark: database time of one dashboard refresh with many users and sends.
//!
//!     cargo run -p dashboard --example refresh_bench
//!
//! Creates a throwaway database (dropped at the end), fills it with `BENCH_USERS` users
//! (default 1,000,000; `BENCH_UNVERIFIED_PERCENT` of them unverified, default 5) and
//! `BENCH_SENDS` sends (default 1,000,000, spread over 30 days, the newest today), runs
//! `ANALYZE`, then times the two database-backed refreshes (sends + today's counts + per-minute
//! rate, and unverified users) exactly as the dashboard runs them, `BENCH_ROUNDS` times
//! (default 50). Wall time measured from the client, so it is an upper bound on database time.

use std::time::{Duration, Instant};

use dashboard::data::{DataSource, Source};
use dashboard::live::LiveSource;
use mailroom::broker::Topology;
use mailroom_testkit::{self as testkit, TestDb};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 95 / 100).min(v.len() - 1)]),
        ms(*v.last().unwrap())
    )
}

#[tokio::main]
async fn main() {
    let users = env("BENCH_USERS", 1_000_000);
    let sends = env("BENCH_SENDS", 1_000_000);
    let unverified = env("BENCH_UNVERIFIED_PERCENT", 5);
    let rounds = env("BENCH_ROUNDS", 50) as usize;
    let db = TestDb::create().await;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO users (id, name, email, email_verified, created_at, verification_job_id,
                            verification_token_expiry)
         SELECT gen_random_uuid(), 'user' || g, 'user' || g || '@example.com',
                (g % 100) >= $2, now() - make_interval(secs => g * 10),
                gen_random_uuid(), now() - make_interval(secs => g * 10) + interval '1 day'
           FROM generate_series(1, $1) g",
    )
    .bind(users as i64)
    .bind(unverified as i64)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sends (job_id, kind, user_id, recipient, status, attempts, ses_message_id,
                            requested_at, first_attempt_at, updated_at, sent_at, latency_ms)
         SELECT gen_random_uuid(),
                CASE WHEN g % 10 = 0 THEN 'password_reset' ELSE 'verification' END,
                gen_random_uuid(), 'user' || g || '@example.com',
                CASE WHEN g % 200 = 0 THEN 'dead' WHEN g % 97 = 0 THEN 'skipped' ELSE 'sent' END,
                1, 'm-' || g, t, t, t, CASE WHEN g % 200 = 0 OR g % 97 = 0 THEN NULL ELSE t END, 40
           FROM generate_series(1, $1) g,
                LATERAL (SELECT now() - make_interval(secs => (g::float8 * 30 * 86400 / $1)::int) AS t) x",
    )
    .bind(sends as i64)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
    eprintln!(
        "loaded {users} users ({unverified}% unverified) and {sends} sends in {:.1?}",
        started.elapsed()
    );

    let source = LiveSource::new(
        db.pool.clone(),
        testkit::amqp_url(),
        Topology::new("bench"),
        vec![std::time::Duration::from_secs(10)],
        testkit::ses_client(&testkit::moto_url()),
        None,
        None,
        "bench".into(),
        mailroom::store::AddressLimits {
            per_minute: 1,
            per_hour: 5,
        },
    );
    // Warm the cache the way a running dashboard would.
    for _ in 0..3 {
        source.fetch(Source::Activity).await.unwrap();
        source.fetch(Source::Users).await.unwrap();
    }
    let (mut activity, mut users_t, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        source.fetch(Source::Activity).await.unwrap();
        let a = t.elapsed();
        let t = Instant::now();
        source.fetch(Source::Users).await.unwrap();
        let u = t.elapsed();
        activity.push(a);
        users_t.push(u);
        total.push(a + u);
    }
    println!("rows: {users} users ({unverified}% unverified), {sends} sends; {rounds} rounds");
    println!("sends + today + per-minute: {}", stats(activity));
    println!("unverified users:           {}", stats(users_t));
    println!("one refresh (both):         {}", stats(total));
}
