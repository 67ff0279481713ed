//! Mailroom's test kit, for the integration tests of every crate: a throwaway database per
//! test, a unique queue prefix per test (both removed when dropped), moto's SES, the fault
//! proxies, the webhook receiver, the SES stand-in, guards for the real binaries, and
//! [`app::TestApp`] (a real ingest and dispatcher in-process). A dev-dependency only: no
//! production crate depends on it, so nothing here can ship.
//!
//! # Layout
//!
//! - this file: databases ([`TestDb`]), queue prefixes ([`TestQueues`]), moto ([`Moto`]),
//!   [`eventually`], [`KillOnDrop`] and [`bin_path`];
//! - [`app`]: `TestApp`, helper methods named after what a user does;
//! - `proxy`: TCP and HTTP proxies that inject faults ([`TcpProxy`], [`HttpFaultProxy`]);
//! - `rabbit_node`: a RabbitMQ node of a test's own, for faults of a whole broker
//!   ([`RabbitNode`]);
//! - `receiver`: a webhook receiver that records what it got ([`WebhookReceiver`]);
//! - `ses_standin`: an SES v2 stand-in with a fixed latency and rate ([`SesStandIn`]);
//! - [`docs`]: reading docs/configuration.md's table, for the tests that compare it to clap.
//!
//! `TEST_LOG=1` makes [`app::TestApp`] show the services' logs (`RUST_LOG` sets the level).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_sesv2::config::{Credentials, Region, SharedCredentialsProvider};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::Value;
use sqlx::PgPool;

use mailroom::config::SesArgs;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The server the test databases are created on (its `postgres` database).
pub fn admin_database_url() -> String {
    env_or(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

pub fn amqp_url() -> String {
    env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// moto's server; `.ci/run` and `scripts/moto` start it on this port.
pub fn moto_url() -> String {
    env_or("MOTO_URL", "http://127.0.0.1:5005")
}

/// Runs `fut` to completion on a new thread with its own runtime. For cleanup in `Drop`, which
/// may run inside a runtime (where blocking on another future would panic) or outside one.
pub fn block_on_own_thread(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
    .join();
}

/// A database of its own, migrated, dropped (with FORCE) when this value is dropped.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let db = Self::create_empty().await;
        mailroom::store::migrate(&db.pool)
            .await
            .expect("migrations apply");
        db
    }

    /// A database of its own with no tables: what a binary that starts before any migration
    /// ran finds.
    pub async fn create_empty() -> Self {
        let name = format!("mailroom_test_{}", uuid::Uuid::new_v4().simple());
        let admin = mailroom::store::connect(&admin_database_url())
            .await
            .expect("PostgreSQL must be running for the tests (see docs/testing.md)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let mut url = url::Url::parse(&admin_database_url()).expect("valid url");
        url.set_path(&name);
        let url = url.to_string();
        let pool = mailroom::store::connect(&url)
            .await
            .expect("connect test db");
        Self { pool, url, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_own_thread(async move {
            if let Ok(admin) = mailroom::store::connect(&admin_database_url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
                admin.close().await;
            }
        });
    }
}

/// A unique `QUEUE_PREFIX`; its exchange and queues are deleted when this value is dropped.
pub struct TestQueues {
    pub prefix: String,
}

impl TestQueues {
    pub fn new() -> Self {
        Self {
            prefix: format!("test.{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Default for TestQueues {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestQueues {
    fn drop(&mut self) {
        let topo = mailroom::broker::Topology::new(&self.prefix);
        block_on_own_thread(async move {
            let Ok(conn) = mailroom::broker::connect(&amqp_url(), "mailroom-test-cleanup").await
            else {
                return;
            };
            let mut queues = vec![topo.work_queue(), topo.dead_queue()];
            // Delay queues are named by their delay: ask the management API for every queue
            // under the prefix, and fall back to the delays the tests use.
            queues.extend(queues_named(&format!("{}.", topo.prefix)).await);
            queues.extend(
                [
                    100, 200, 300, 400, 600, 1000, 1200, 2000, 2400, 4000, 8000, 10_000,
                ]
                .map(|ms| topo.retry_queue(Duration::from_millis(ms))),
            );
            queues.sort();
            queues.dedup();
            for q in queues {
                // A failed delete closes the channel: use a fresh one each time.
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .exchange_delete(topo.exchange().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = conn.close(200, "cleanup done".into()).await;
        });
    }
}

/// The RabbitMQ management API (enabled by scripts/test), for listing queues.
pub fn management_url() -> String {
    env_or("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
}

/// Names of the queues starting with `prefix`, from the management API; empty when it is off.
pub async fn queues_named(prefix: &str) -> Vec<String> {
    let url = format!("{}/api/queues/%2f?columns=name", management_url());
    let Ok(resp) = reqwest::Client::new()
        .get(url)
        .basic_auth("guest", Some("guest"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    else {
        return Vec::new();
    };
    let names: Value = resp.json().await.unwrap_or(Value::Null);
    names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// SES options pointing at moto (or at a fault proxy in front of it).
pub fn ses_args(endpoint: &str) -> SesArgs {
    SesArgs {
        aws_region: "us-east-1".into(),
        ses_endpoint_url: Some(endpoint.to_owned()),
        ses_timeout: Duration::from_secs(5),
    }
}

/// An SDK configuration with dummy static credentials, as moto accepts any.
pub fn sdk_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "testkit",
        )))
        .build()
}

pub fn ses_client(endpoint: &str) -> aws_sdk_sesv2::Client {
    mailroom::ses::client_from(&sdk_config(), &ses_args(endpoint), 1)
}

/// One message moto recorded. moto keeps only the HTML part as `body`.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub id: String,
    pub source: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

impl SentMessage {
    /// The one-time code in the email: the first element whose whole text is 6 to 10 digits.
    pub fn code(&self) -> Option<String> {
        self.body
            .split('>')
            .skip(1)
            .filter_map(|s| s.split('<').next())
            .map(str::trim)
            .find(|t| (6..=10).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    }

    /// The first `href` that contains `path`, with HTML entities in it decoded.
    pub fn link(&self, path: &str) -> Option<String> {
        self.body
            .split("href=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .find(|l| l.contains(path))
            .map(|l| l.replace("&amp;", "&").replace("&#x3D;", "="))
    }
}

/// moto's inspection API.
pub struct Moto {
    pub url: String,
    http: reqwest::Client,
}

impl Moto {
    pub fn new() -> Self {
        Self {
            url: moto_url(),
            http: reqwest::Client::new(),
        }
    }

    /// Everything sent to `to` so far (moto is shared between tests: filter by recipient).
    pub async fn messages_to(&self, to: &str) -> Vec<SentMessage> {
        let data: Value = self
            .http
            .get(format!("{}/moto-api/data.json", self.url))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "moto must be running at {} ({e}); scripts/test starts it",
                    self.url
                )
            })
            .json()
            .await
            .expect("moto answers JSON");
        data["ses"]["Message"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| SentMessage {
                id: m["id"].as_str().unwrap_or_default().to_owned(),
                source: m["source"].as_str().unwrap_or_default().to_owned(),
                to: m["destinations"]["ToAddresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                subject: m["subject"].as_str().unwrap_or_default().to_owned(),
                body: m["body"].as_str().unwrap_or_default().to_owned(),
            })
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// Waits until at least `n` messages to `to` arrived, or panics after `timeout`.
    pub async fn wait_for(&self, to: &str, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.messages_to(to).await;
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "expected {n} message(s) to {to} within {timeout:?}, got {}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes a sender identity again. moto is shared by every test and by runs that follow,
    /// and its ListEmailIdentities fails once it holds more than a page (100) of them.
    pub fn forget_sender(&self, address: &str) {
        let (url, address) = (self.url.clone(), address.to_owned());
        block_on_own_thread(async move {
            let _ = mailroom::ses::delete_identity(&ses_client(&url), &address).await;
        });
    }

    /// Makes `address` a verified sender in moto.
    pub async fn verify_sender(&self, address: &str) {
        if let Err(e) = mailroom::ses::create_identity(&ses_client(&self.url), address).await {
            panic!(
                "moto must be running at {} for the tests ({e}); scripts/test starts it",
                self.url
            );
        }
    }
}

impl Default for Moto {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub mod app;
pub mod docs;
mod proxy;
pub use proxy::{HttpFault, HttpFaultProxy, TcpProxy};
mod pg_pair;
pub use pg_pair::PgPair;
mod rabbit_node;
pub use rabbit_node::RabbitNode;
mod receiver;
pub use receiver::{Answer, Received, WebhookReceiver};

/// A child process (a real binary a test runs) that is killed when dropped. A test that fails
/// half-way must not leave its binary running: a leaked process keeps the test run's output
/// pipe open, and whatever reads that pipe (CI's `tee`) then waits for it forever.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
mod ses_standin;
pub use ses_standin::{SesStandIn, StandInConfig, StandInStats};

/// A port nothing listens on now, for a listener a test or a real binary binds next. Another
/// process may take it first; what then fails to bind says so.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The path of one of the workspace's binaries (`ingest`, `dispatcher`, `dashboard`), built
/// into the same target directory as the running test (`scripts/test` builds them all first).
/// Works from any crate's tests, unlike `CARGO_BIN_EXE_*`, which only a binary's own package
/// sees.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --workspace --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// Sends SIGTERM to a child process (a real binary a test runs), as an orchestrator would to
/// stop it gracefully.
pub fn terminate(child: &std::process::Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) only sends a signal; a pid that has exited meanwhile gets ESRCH.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH),
        "kill -TERM {pid}: {}",
        std::io::Error::last_os_error()
    );
}
