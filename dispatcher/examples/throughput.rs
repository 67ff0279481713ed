//! Benchmark: signup latency and end-to-end throughput of the whole pipeline on this machine.
//!
//!     cargo run -p dispatcher --example throughput
//!
//! Starts ingest and a dispatcher in-process against the local PostgreSQL, RabbitMQ and moto
//! (throwaway database and queue prefix), posts `BENCH_SIGNUPS` signups (default 2000) from
//! `BENCH_CLIENTS` concurrent clients (default 32), and reports the signup latency and the time
//! until every email reached moto. `MAX_SEND_RATE` is set high (`BENCH_RATE`, default 1000) so
//! that the limiter does not hide the pipeline's own limits; passwords are omitted so that
//! argon2 does not dominate (`BENCH_PASSWORDS=1` includes them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom::clock::Clock;
use mailroom::config::{BrokerArgs, DatabaseArgs, LogArgs, LogFormat, Secret};
use mailroom_testkit::{self as testkit, Moto, TestDb, TestQueues};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let signups = env("BENCH_SIGNUPS", 2000) as usize;
    let clients = env("BENCH_CLIENTS", 32) as usize;
    let rate = env("BENCH_RATE", 1000) as f64;
    let passwords = env("BENCH_PASSWORDS", 0) == 1;
    let db = TestDb::create().await;
    let queues = TestQueues::new();
    let moto = Moto::new();
    let sender = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    moto.verify_sender(&sender).await;
    let broker = BrokerArgs {
        amqp_url: Secret::new(testkit::amqp_url()),
        queue_prefix: queues.prefix.clone(),
        amqp_heartbeat: mailroom::broker::DEFAULT_HEARTBEAT,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let ingest = tokio::spawn(ingest::run(
        listener,
        {
            // clap's own defaults, so that no default is restated here; then the bench's.
            use clap::Parser;
            let mut c = ingest::Config::try_parse_from(["ingest", "--api-keys", "bench"])
                .expect("ingest's defaults parse");
            c.db = DatabaseArgs {
                database_url: Secret::new(db.url.clone()),
                pool_size: 16,
            };
            c.broker = broker.clone();
            c.log = LogArgs {
                log_format: LogFormat::Text,
            };
            c.listen = "127.0.0.1:0".parse().unwrap();
            c.metrics_listen = "off".into();
            c.request_timeout = Duration::from_secs(30);
            c.relay_interval = Duration::from_millis(200);
            c.shutdown_timeout = Duration::from_secs(5);
            c
        },
        Clock::system(),
        cancel.clone().cancelled_owned(),
    ));
    let dispatcher = tokio::spawn(dispatcher::run(
        dispatcher::RunConfig {
            db: DatabaseArgs {
                database_url: Secret::new(db.url.clone()),
                pool_size: 16,
            },
            broker,
            ses: testkit::ses_args(&moto.url),
            mail_from: sender,
            configuration_set: None,
            public_url: base.clone(),
            reset_url: None,
            templates_dir: mailroom::templates::DEFAULT_DIR.into(),
            verification_ttl: Duration::from_secs(86400),
            reset_ttl: Duration::from_secs(3600),
            sign_in_url: None,
            sign_in_ttl: Duration::from_secs(900),
            invite_ttl: Duration::from_secs(7 * 86_400),
            retry_delays: vec![Duration::from_secs(1)],
            max_send_rate: Some(rate),
            send_concurrency: Some(16),
            webhook_concurrency: 8,
            metrics_listen: "off".into(),
            shutdown_timeout: Duration::from_secs(10),
            pause_probe_interval: Duration::from_secs(5),
            webhooks: Default::default(),
            sweep: Default::default(),
            codes: Default::default(),
        },
        Clock::system(),
        testkit::sdk_config(),
        cancel.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    testkit::eventually("ingest up", Duration::from_secs(30), || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, next, run) = (http.clone(), base.clone(), next.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= signups {
                    return lat;
                }
                let mut body = serde_json::json!({"name": format!("b{run}-{i}"), "email": format!("b{run}-{i}@example.com")});
                if passwords {
                    body["password"] = "correct horse battery".into();
                }
                let t = Instant::now();
                let r = http.post(format!("{base}/v1/signups")).bearer_auth("bench").json(&body).send().await.unwrap();
                assert_eq!(r.status(), 202);
                lat.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let accepted = started.elapsed();
    let pool = db.pool.clone();
    testkit::eventually("every email sent", Duration::from_secs(600), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sends WHERE status = 'sent'")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n as usize >= signups).then_some(())
    })
    .await;
    let all_sent = started.elapsed();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{signups} signups from {clients} clients (passwords: {passwords}), MAX_SEND_RATE {rate}, SEND_CONCURRENCY 16"
    );
    println!(
        "signup latency: median {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 95 / 100]),
        ms(latencies[latencies.len() * 99 / 100])
    );
    println!(
        "accepted all in {:.2} s ({:.0}/s)",
        accepted.as_secs_f64(),
        signups as f64 / accepted.as_secs_f64()
    );
    println!(
        "all emails in moto after {:.2} s ({:.0} emails/s end to end)",
        all_sent.as_secs_f64(),
        signups as f64 / all_sent.as_secs_f64()
    );
    cancel.cancel();
    let _ = ingest.await;
    let _ = dispatcher.await;
}
