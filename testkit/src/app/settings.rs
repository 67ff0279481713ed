//! [`Settings`]: how a test wants its services wired (which proxies, which limits), with the
//! defaults most tests use.

use std::time::Duration;

/// How a test wants its services wired.
#[derive(Clone)]
pub struct Settings {
    pub dispatcher: bool,
    /// Put a fault-injecting proxy between the dispatcher and moto.
    pub ses_proxy: bool,
    /// Put a cuttable TCP proxy between both services and RabbitMQ.
    pub amqp_proxy: bool,
    /// AMQP_HEARTBEAT of both services; None keeps clap's default.
    pub amqp_heartbeat: Option<Duration>,
    /// A broker of the test's own (a [`crate::RabbitNode`]'s URL) instead of the shared one.
    pub amqp_url: Option<String>,
    /// Put a cuttable TCP proxy between both services and PostgreSQL.
    pub db_proxy: bool,
    /// Make the sender a verified identity in moto (otherwise moto rejects every send).
    pub verify_sender: bool,
    pub retry_delays: Vec<Duration>,
    /// SEND_CONCURRENCY; 0 leaves it unset (sized from the rate).
    pub send_concurrency: usize,
    pub max_send_rate: Option<f64>,
    /// The dispatcher's SES timeout (its claim lease is twice this).
    pub ses_timeout: Duration,
    pub hash_concurrency: Option<usize>,
    pub hash_queue: usize,
    pub verify_link_mode: ingest::VerifyLinkMode,
    /// SES feedback: the accepted topics and where their certificates may come from.
    pub sns_topic_arns: Vec<String>,
    pub sns_cert_url_prefixes: Vec<String>,
    pub configuration_set: Option<String>,
    /// WEBHOOK_URL, WEBHOOK_SECRET and WEBHOOK_TIMEOUT of both services.
    pub webhooks: mailroom::webhook::WebhookArgs,
    /// Changes to ingest's configuration beyond the above (a limit, a listener), applied last.
    pub ingest_config: Option<fn(&mut ingest::Config)>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dispatcher: true,
            ses_proxy: false,
            amqp_proxy: false,
            amqp_heartbeat: None,
            amqp_url: None,
            db_proxy: false,
            verify_sender: true,
            retry_delays: vec![Duration::from_millis(200), Duration::from_millis(400)],
            send_concurrency: 4,
            max_send_rate: Some(200.0),
            ses_timeout: Duration::from_secs(5),
            hash_concurrency: None,
            hash_queue: 16,
            verify_link_mode: ingest::VerifyLinkMode::Open,
            sns_topic_arns: Vec::new(),
            sns_cert_url_prefixes: Vec::new(),
            configuration_set: None,
            webhooks: Default::default(),
            ingest_config: None,
        }
    }
}
