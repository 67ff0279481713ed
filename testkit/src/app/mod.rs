//! `TestApp`: a real ingest and (optionally) a real dispatcher in-process, each test with its
//! own database, queue prefix, sender identity and clock. Helper methods are named after what a
//! user does.
//! [`Settings`] (how a test wants its services wired) is in `settings.rs`; starting the
//! services, in-process or as the real binaries, in `processes.rs`.
//!
//! Over 500 lines on purpose: it is one type, whose methods are the vocabulary every test is
//! written in; split by feature, they would only be harder to find.

use std::net::SocketAddr;
use std::time::Duration;

use crate as testkit;
use crate::{HttpFaultProxy, Moto, SentMessage, TcpProxy, TestDb, TestQueues};
use dispatcher::RunConfig;
use mailroom::clock::Clock;
use mailroom::config::{BrokerArgs, Secret};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const API_KEY: &str = "test-key-0123456789";
/// A second caller: configured as `partner:<this>`, so its jobs and requests carry the name
/// `partner` (the bare keys are named `default`).
pub const PARTNER_API_KEY: &str = "partner-key-0123456789";

/// The `CODE_SECRET` of every test app's ingest and dispatcher, so that any test can ask for a
/// one-time code.
pub const CODE_SECRET: &str = "test-code-secret-0123456789abcdef0123456789";

mod processes;
mod settings;
use processes::spawn_ingest;
pub use settings::Settings;

pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    /// Ingest's operations listener (`/metrics`, the detailed `/readyz`), once it is up.
    pub ops_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    pub clock: Clock,
    pub moto: Moto,
    pub sender: String,
    /// Where the dispatcher sends: moto, or a fault proxy in front of it.
    pub ses_endpoint: String,
    pub retry_delays: Vec<Duration>,
    pub send_concurrency: usize,
    pub max_send_rate: Option<f64>,
    pub ses_timeout: Duration,
    pub hash_concurrency: Option<usize>,
    pub hash_queue: usize,
    pub verify_link_mode: ingest::VerifyLinkMode,
    pub sns_topic_arns: Vec<String>,
    pub sns_cert_url_prefixes: Vec<String>,
    /// The dispatcher's SES_CONFIGURATION_SET.
    pub configuration_set: Option<String>,
    pub webhooks: mailroom::webhook::WebhookArgs,
    pub amqp_url: String,
    /// AMQP_HEARTBEAT of both services, when the test set one.
    pub amqp_heartbeat: Option<Duration>,
    pub ses_proxy: Option<HttpFaultProxy>,
    pub amqp_proxy: Option<TcpProxy>,
    pub db_proxy: Option<TcpProxy>,
    /// The database URL the services use (through the proxy when there is one).
    pub service_db_url: String,
    ingest: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    /// [`Settings::ingest_config`].
    ingest_tweak: Option<fn(&mut ingest::Config)>,
    dispatcher: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    extra: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    // Declared last: dropped after the services above stopped using them.
    pub queues: TestQueues,
    pub db: TestDb,
}

/// `TEST_LOG=1`: the in-process services log through the test harness's capture, so a failing
/// test shows what ingest and the dispatcher said (`RUST_LOG` sets the level, default `info`).
/// Off by default: a passing suite stays quiet.
fn show_logs_if_asked() {
    if std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0") {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Once per test binary; later calls find the subscriber set and do nothing.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the in-process services before the queues and the database are removed (the
        // fields below are dropped after this): a relay still running would declare the
        // queues again right after their deletion, and they would outlive the test. That
        // happens on a multi-thread runtime, and whenever a test goes on after one TestApp
        // (several in a loop).
        let mut handles = Vec::new();
        for (cancel, handle) in self.take_services() {
            cancel.cancel();
            handle.abort();
            handles.push(handle);
        }
        // On a current-thread runtime an aborted task never runs again; on a multi-thread
        // one it may be in the middle of a poll: wait for it to end.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !handles.iter().all(|h| h.is_finished()) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.moto.forget_sender(&self.sender);
    }
}

impl TestApp {
    /// Ingest and a dispatcher, ready to sign people up.
    pub async fn spawn() -> Self {
        Self::start(Settings::default()).await
    }

    /// Ingest only: events are accepted and relayed, nothing is sent.
    pub async fn ingest_only() -> Self {
        Self::start(Settings {
            dispatcher: false,
            ..Settings::default()
        })
        .await
    }

    pub async fn start(settings: Settings) -> Self {
        show_logs_if_asked();
        let db = TestDb::create().await;
        let moto = Moto::new();
        let sender = format!("sender-{}@example.com", uuid::Uuid::new_v4().simple());
        if settings.verify_sender {
            moto.verify_sender(&sender).await;
        }
        let ses_proxy = if settings.ses_proxy {
            Some(HttpFaultProxy::start(&moto.url).await)
        } else {
            None
        };
        let amqp_proxy = if settings.amqp_proxy {
            Some(TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await)
        } else {
            None
        };
        let db_proxy = if settings.db_proxy {
            Some(TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await)
        } else {
            None
        };
        let service_db_url = match &db_proxy {
            Some(p) => {
                let mut u = url::Url::parse(&db.url).unwrap();
                u.set_port(Some(p.addr.port())).unwrap();
                u.to_string()
            }
            None => db.url.clone(),
        };
        let amqp_url = match &amqp_proxy {
            Some(p) => format!("amqp://guest:guest@{}/%2f", p.addr),
            None => settings.amqp_url.clone().unwrap_or_else(testkit::amqp_url),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut app = Self {
            base: format!("http://{addr}"),
            addr,
            ops_addr: None,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            clock: Clock::system(),
            ses_endpoint: ses_proxy.as_ref().map_or(moto.url.clone(), |p| p.url()),
            moto,
            sender,
            retry_delays: settings.retry_delays.clone(),
            send_concurrency: settings.send_concurrency,
            max_send_rate: settings.max_send_rate,
            ses_timeout: settings.ses_timeout,
            hash_concurrency: settings.hash_concurrency,
            hash_queue: settings.hash_queue,
            verify_link_mode: settings.verify_link_mode,
            sns_topic_arns: settings.sns_topic_arns.clone(),
            sns_cert_url_prefixes: settings.sns_cert_url_prefixes.clone(),
            configuration_set: settings.configuration_set.clone(),
            webhooks: settings.webhooks.clone(),
            ingest_tweak: settings.ingest_config,
            amqp_url,
            amqp_heartbeat: settings.amqp_heartbeat,
            ses_proxy,
            amqp_proxy,
            db_proxy,
            service_db_url,
            ingest: None,
            dispatcher: None,
            extra: Vec::new(),
            queues: TestQueues::new(),
            db,
        };
        let (ops_addr, cancel, handle) =
            spawn_ingest(listener, app.ingest_config(), app.clock.clone()).await;
        app.ops_addr = ops_addr;
        app.ingest = Some((cancel, handle));
        app.wait_ready().await;
        if settings.dispatcher {
            app.start_dispatcher().await;
        }
        app
    }

    /// Starts one more ingest on the same database and queues; returns its base URL.
    pub async fn spawn_extra_ingest(&mut self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_, cancel, handle) =
            spawn_ingest(listener, self.ingest_config(), self.clock.clone()).await;
        self.extra.push((cancel, handle));
        format!("http://{addr}")
    }

    /// Starts one more dispatcher on the same database and queues.
    pub fn spawn_extra_dispatcher(&mut self) {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(dispatcher::run(
            self.dispatcher_config(),
            self.clock.clone(),
            testkit::sdk_config(),
            cancel.clone().cancelled_owned(),
        ));
        self.extra.push((cancel, handle));
    }

    pub fn ses_proxy(&self) -> &HttpFaultProxy {
        self.ses_proxy.as_ref().expect("started with ses_proxy")
    }

    pub fn db_proxy(&self) -> &TcpProxy {
        self.db_proxy.as_ref().expect("started with db_proxy")
    }

    pub fn amqp_proxy(&self) -> &TcpProxy {
        self.amqp_proxy.as_ref().expect("started with amqp_proxy")
    }

    /// ingest's configuration: clap's own defaults (so that no default is restated here), and
    /// what the test controls on top.
    pub fn ingest_config(&self) -> ingest::Config {
        use clap::Parser;
        let mut config = ingest::Config::try_parse_from(["ingest", "--api-keys", API_KEY])
            .expect("ingest's defaults parse");
        config.db.database_url = Secret::new(self.service_db_url.clone());
        config.broker = self.broker_args();
        config.listen = self.addr;
        config.metrics_listen = "127.0.0.1:0".into();
        config.api_keys = vec![
            Secret::new(API_KEY),
            Secret::new("second-key"),
            Secret::new(format!("partner:{PARTNER_API_KEY}")),
        ];
        // Faster than the defaults, so that tests do not wait on them.
        config.relay_interval = Duration::from_millis(200);
        config.shutdown_timeout = Duration::from_secs(2);
        config.hash_concurrency = self.hash_concurrency;
        config.hash_queue = self.hash_queue;
        config.verify_link_mode = self.verify_link_mode;
        config.sns_topic_arns = self.sns_topic_arns.clone();
        config.sns_cert_url_prefixes = self.sns_cert_url_prefixes.clone();
        config.webhooks = self.webhooks.clone();
        config.codes.code_secret = Some(Secret::new(CODE_SECRET));
        config.sign_in_url = Some(self.sign_in_url());
        if let Some(tweak) = self.ingest_tweak {
            tweak(&mut config);
        }
        config
    }

    pub fn broker_args(&self) -> BrokerArgs {
        BrokerArgs {
            amqp_url: Secret::new(self.amqp_url.clone()),
            queue_prefix: self.queues.prefix.clone(),
            amqp_heartbeat: self
                .amqp_heartbeat
                .unwrap_or(mailroom::broker::DEFAULT_HEARTBEAT),
        }
    }

    /// The dispatcher's configuration: clap's own defaults (so that no default is restated
    /// here), and what the test controls on top.
    pub fn dispatcher_config(&self) -> RunConfig {
        use clap::Parser;
        /// `RunConfig` is flattened into `dispatcher run`; parsed here on its own.
        #[derive(clap::Parser)]
        struct Run {
            #[command(flatten)]
            run: RunConfig,
        }
        let mut config = Run::try_parse_from(["dispatcher", "--mail-from", &self.sender])
            .expect("the dispatcher's defaults parse")
            .run;
        config.db.database_url = Secret::new(self.service_db_url.clone());
        config.broker = self.broker_args();
        config.ses = mailroom::config::SesArgs {
            ses_timeout: self.ses_timeout,
            ..testkit::ses_args(&self.ses_endpoint)
        };
        config.configuration_set = self.configuration_set.clone();
        config.public_url = self.base.clone();
        config.retry_delays = self.retry_delays.clone();
        config.max_send_rate = self.max_send_rate;
        config.send_concurrency = (self.send_concurrency > 0).then_some(self.send_concurrency);
        config.metrics_listen = "off".into();
        // Faster than the defaults, so that tests do not wait on them.
        config.shutdown_timeout = Duration::from_secs(5);
        config.pause_probe_interval = Duration::from_millis(500);
        config.webhooks = self.webhooks.clone();
        config.codes.code_secret = Some(Secret::new(CODE_SECRET));
        config.sign_in_url = Some(self.sign_in_url());
        config
    }

    /// The `SIGN_IN_URL` of both services: a page of "the app" (nothing serves it; tests take
    /// the token from the link and post it as the app would).
    pub fn sign_in_url(&self) -> String {
        format!("{}/app/sign-in", self.base)
    }

    pub async fn start_dispatcher(&mut self) {
        assert!(self.dispatcher.is_none(), "dispatcher already running");
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(dispatcher::run(
            self.dispatcher_config(),
            self.clock.clone(),
            testkit::sdk_config(),
            cancel.clone().cancelled_owned(),
        ));
        self.dispatcher = Some((cancel, handle));
    }

    /// Waits for the dispatcher to end by itself and returns what `run` returned.
    pub async fn join_dispatcher(&mut self) -> anyhow::Result<()> {
        let (_cancel, handle) = self.dispatcher.take().expect("dispatcher running");
        handle.await.expect("dispatcher task")
    }

    /// The in-process services still running (ingest, the dispatcher, extra ones), taken out so
    /// that stopping them happens once.
    fn take_services(&mut self) -> Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)> {
        let services = self.ingest.take().into_iter().chain(self.dispatcher.take());
        services.chain(self.extra.drain(..)).collect()
    }

    /// Ingest's `/metrics`, from its operations listener.
    pub async fn metrics_text(&self) -> String {
        self.ops_get("/metrics").await.text().await.unwrap()
    }

    /// A GET on ingest's operations listener.
    pub async fn ops_get(&self, path: &str) -> reqwest::Response {
        let ops = self.ops_addr.expect("ingest's operations listener is up");
        self.http
            .get(format!("http://{ops}{path}"))
            .send()
            .await
            .unwrap()
    }

    /// Argon2 hashes ingest has finished, from its metrics.
    pub async fn password_hashes_done(&self) -> u64 {
        let m = self.metrics_text().await;
        m.lines()
            .find_map(|l| l.strip_prefix("mailroom_password_hashes_total{outcome=\"done\"} "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Stops ingest and the dispatcher gracefully, then removes the queues and the database.
    /// Dropping a TestApp stops them too, but on a runtime that goes on afterwards (several
    /// TestApps in one test) only this waits for them to be gone first.
    pub async fn stop(mut self) {
        for (cancel, handle) in self.take_services() {
            cancel.cancel();
            let _ = handle.await;
        }
    }

    /// Stops the dispatcher gracefully and returns what `run` returned.
    /// Begins the dispatcher's graceful stop and gives back its task, for a test that acts
    /// while it is stopping.
    pub fn begin_dispatcher_stop(&mut self) -> JoinHandle<anyhow::Result<()>> {
        let (cancel, handle) = self.dispatcher.take().expect("dispatcher running");
        cancel.cancel();
        handle
    }

    pub async fn stop_dispatcher(&mut self) -> anyhow::Result<()> {
        let (cancel, handle) = self.dispatcher.take().expect("dispatcher running");
        cancel.cancel();
        handle.await.expect("dispatcher task")
    }

    async fn wait_ready(&self) {
        let http = self.http.clone();
        let url = format!("{}/readyz", self.base);
        testkit::eventually("ingest ready", Duration::from_secs(20), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(url).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
    }

    pub fn unique_email(&self) -> String {
        format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
    }

    pub fn unique_name(&self) -> String {
        format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn sign_up(&self, name: &str, email: &str) -> reqwest::Response {
        self.post(
            "/v1/signups",
            &json!({"name": name, "email": email, "password": "correct horse battery"}),
        )
        .await
    }

    /// Signs up and returns the user id, asserting 202.
    pub async fn sign_up_ok(&self, name: &str, email: &str) -> uuid::Uuid {
        self.sign_up_job(name, email).await.0
    }

    /// Signs up (asserting 202) and returns the user id and the job id.
    pub async fn sign_up_job(&self, name: &str, email: &str) -> (uuid::Uuid, uuid::Uuid) {
        let r = self.sign_up(name, email).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        (
            v["user_id"].as_str().unwrap().parse().unwrap(),
            v["job_id"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// Signs `n` new people up; returns (email, job id) of each.
    pub async fn sign_up_many(&self, n: usize) -> Vec<(String, uuid::Uuid)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let email = self.unique_email();
            let (_, job) = self.sign_up_job(&self.unique_name(), &email).await;
            out.push((email, job));
        }
        out
    }

    pub async fn connect_broker(&self) -> lapin::Connection {
        mailroom::broker::connect(&testkit::amqp_url(), "test")
            .await
            .unwrap()
    }

    /// Messages ready in one of this test's queues.
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let conn = self.connect_broker().await;
        let ch = conn.create_channel().await.unwrap();
        let n = mailroom::broker::queue_counts(&ch, queue)
            .await
            .map(|c| c.0)
            .unwrap_or(0);
        let _ = conn.close(200, "done".into()).await;
        n
    }

    pub async fn wait_for_email(&self, to: &str) -> SentMessage {
        self.moto
            .wait_for(to, 1, Duration::from_secs(30))
            .await
            .remove(0)
    }

    /// GET one of ingest's paths, without an API key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.follow(&format!("{}{path}", self.base)).await
    }

    /// `/readyz`: its status and body.
    pub async fn readiness(&self) -> (u16, Value) {
        let r = self.get("/readyz").await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn follow(&self, link: &str) -> reqwest::Response {
        self.http.get(link).send().await.unwrap()
    }

    pub async fn user(&self, email: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/v1/users", self.base))
            .query(&[("email", email)])
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        n
    }

    /// Asks for a reset of `email` (which already got its verification email), takes the link
    /// from the reset email and sets `password` with it; returns the confirm's answer.
    pub async fn reset_password_by_email(&self, email: &str, password: &str) -> reqwest::Response {
        assert_eq!(
            self.post("/v1/password-resets", &serde_json::json!({"email": email}))
                .await
                .status(),
            202
        );
        let link = self
            .moto
            .wait_for(email, 2, Duration::from_secs(30))
            .await
            .iter()
            .find_map(|m| m.link("/reset-password"))
            .expect("a reset email with its link");
        self.http
            .post(format!("{}/v1/password-resets/confirm", self.base))
            .json(&serde_json::json!({"token": token_of(&link), "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Waits until the send log row of `job_id` has `status`.
    pub async fn wait_for_status(
        &self,
        job_id: uuid::Uuid,
        status: &str,
    ) -> mailroom::store::SendRecord {
        let pool = self.db.pool.clone();
        testkit::eventually(
            &format!("job {job_id} to be {status}"),
            Duration::from_secs(30),
            || {
                let pool = pool.clone();
                async move {
                    mailroom::store::find_send(&pool, job_id)
                        .await
                        .unwrap()
                        .filter(|s| s.status == status)
                }
            },
        )
        .await
    }
}

/// The token in a verification or reset link.
pub fn token_of(link: &str) -> String {
    link.split("token=")
        .nth(1)
        .expect("link has a token")
        .to_owned()
}
