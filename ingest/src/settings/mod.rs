//! [`Settings`]: ingest's configuration once checked. Built from the clap [`Config`] with
//! `TryFrom`, which checks every option and reports every problem at once ([`InvalidConfig`]
//! lists each), so that an operator fixes them in one go. Nothing is clamped or replaced by a
//! default behind the operator's back: a value that cannot work (a limit of 0, a zero interval,
//! a window too long to represent) is refused with the variable's name and the reason.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use mailroom::config::{BrokerArgs, DatabaseArgs};
use mailroom::policy::feedback::FeedbackRules;
use mailroom::store::AddressLimits;
use mailroom::webhook::Endpoints;

use crate::auth::ApiKeys;
use crate::config::{Config, VerifyLinkMode};

mod checks;

use checks::{
    address_limits, broker, database, feedback_rules, hashing, http, logins, more_than_zero, sns,
};

/// Everything ingest runs with, every value checked (see the module documentation).
#[derive(Debug)]
pub struct Settings {
    /// `DATABASE_URL` (parses as a PostgreSQL URL) and `DATABASE_POOL_SIZE` (at least 1).
    pub db: DatabaseArgs,
    /// `AMQP_URL` (every node an AMQP URL) and `QUEUE_PREFIX`.
    pub broker: BrokerArgs,
    pub api_keys: ApiKeys,
    /// `IDEMPOTENCY_TTL`, more than 0.
    pub idempotency_ttl: Duration,
    /// `TEMPLATES_DIR`, as given: its templates are found and compiled when the state is
    /// built ([`crate::AppState::build`]), by `mailroom::templates`, which resolves the
    /// default folder.
    pub templates_dir: PathBuf,
    pub http: HttpSettings,
    /// `RELAY_INTERVAL`, more than 0.
    pub relay_interval: Duration,
    pub address_limits: AddressLimits,
    pub hashing: HashSettings,
    pub verify_link_mode: VerifyLinkMode,
    /// SES feedback over SNS; None when `SNS_TOPIC_ARNS` is unset (the endpoint answers 404).
    pub sns: Option<SnsSettings>,
    pub logins: LoginSettings,
    /// `SOFT_BOUNCE_LIMIT` (at least 1) and `SOFT_BOUNCE_WINDOW`.
    pub feedback_rules: FeedbackRules,
    /// Where webhook events go (`WEBHOOK_URL`, with a `WEBHOOK_SECRET`); their jobs are
    /// enqueued with the change they report.
    pub webhooks: Endpoints,
    /// One-time codes: the key (None: requests for codes are refused), digits, attempts.
    pub codes: mailroom::config::Codes,
    /// `RETURN_TO_ALLOWED`: where links may send people back to (empty: nowhere).
    pub return_to: mailroom::policy::return_to::AllowList,
    /// `SIGN_IN_URL`, trimmed; None (unset or blank): sign-in by email is off.
    pub sign_in_url: Option<String>,
    /// `EMAIL_CHANGE_CONFIRM=both`: the old address confirms a change too.
    pub email_change_confirm_old: bool,
    pub email_change_ttl: Duration,
}

/// `SIGN_IN_URL`: an absolute URL when set.
fn sign_in_url(raw: Option<&str>) -> Result<Option<String>, String> {
    match raw.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(u) => match url::Url::parse(u) {
            Ok(_) => Ok(Some(u.to_owned())),
            Err(e) => Err(format!("SIGN_IN_URL is not a URL ({e}): {u}")),
        },
    }
}

/// The HTTP server's limits.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// `MAX_BODY_BYTES`, at least 1.
    pub max_body_bytes: usize,
    /// `REQUEST_TIMEOUT`, more than 0.
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT` (0: open connections are closed at once).
    pub shutdown_timeout: Duration,
    /// `INGEST_MAX_CONNECTIONS`, at least 1.
    pub max_connections: usize,
    /// `INGEST_METRICS_LISTEN`: None for `off`.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The bounded argon2 pool (see [`crate::hashing`]).
#[derive(Debug, Clone, Copy)]
pub struct HashSettings {
    /// `HASH_CONCURRENCY`, at least 1; unset: the number of CPU cores.
    pub concurrency: NonZeroUsize,
    /// `HASH_QUEUE` (0: nothing waits).
    pub queue: usize,
}

/// `SNS_TOPIC_ARNS` and `SNS_CERT_URL_PREFIXES`, blank entries left out.
#[derive(Debug, Clone)]
pub struct SnsSettings {
    /// At least one, each `arn:<partition>:sns:<region>:<account>:<name>`.
    pub topics: Vec<String>,
    /// Each an http:// or https:// URL prefix.
    pub cert_url_prefixes: Vec<String>,
}

/// The login lockout.
#[derive(Debug, Clone, Copy)]
pub struct LoginSettings {
    /// `LOGIN_FAILURE_LIMIT`, at least 1: per address and client.
    pub failure_limit: i64,
    /// `LOGIN_ADDRESS_FAILURE_LIMIT`, at least `failure_limit`: per address, every client.
    pub address_failure_limit: i64,
    /// `LOGIN_FAILURE_WINDOW`, more than 0 (and representable: checked).
    pub failure_window: Duration,
}

impl LoginSettings {
    /// The lockout rule these settings make.
    pub fn rules(&self) -> mailroom::policy::logins::LoginRules {
        mailroom::policy::logins::LoginRules {
            limit: self.failure_limit,
            address_limit: self.address_failure_limit,
            window: chrono::Duration::from_std(self.failure_window)
                .expect("checked when the settings were made"),
        }
    }
}

/// Every problem found in a [`Config`], one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig(pub Vec<String>);

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            all => {
                write!(f, "invalid configuration ({} problems):", all.len())?;
                for p in all {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for InvalidConfig {}

/// Gathers the problems of the checks, so that all are reported together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// The value when `checked` is Ok; otherwise notes its problem(s).
    fn take<T, E: IntoProblems>(&mut self, checked: Result<T, E>) -> Option<T> {
        match checked {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.extend(e.into_problems());
                None
            }
        }
    }
}

/// One problem or several.
trait IntoProblems {
    fn into_problems(self) -> Vec<String>;
}

impl IntoProblems for String {
    fn into_problems(self) -> Vec<String> {
        vec![self]
    }
}

impl IntoProblems for Vec<String> {
    fn into_problems(self) -> Vec<String> {
        self
    }
}

impl TryFrom<Config> for Settings {
    type Error = InvalidConfig;

    fn try_from(c: Config) -> Result<Self, InvalidConfig> {
        let mut p = Problems::default();
        let db = p.take(database(c.db));
        let broker = p.take(broker(c.broker));
        let api_keys = p.take(ApiKeys::parse(&c.api_keys));
        let http = p.take(http(
            c.max_body_bytes,
            c.request_timeout,
            c.shutdown_timeout,
            c.max_connections,
            &c.metrics_listen,
        ));
        let relay_interval = p.take(more_than_zero("RELAY_INTERVAL", c.relay_interval));
        let idempotency_ttl = p.take(
            more_than_zero("IDEMPOTENCY_TTL", c.idempotency_ttl).and_then(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .filter(|d| *d < chrono::Duration::days(3650))
                    .map(|_| d)
                    .ok_or_else(|| "IDEMPOTENCY_TTL must be shorter than ten years".to_owned())
            }),
        );
        let address_limits = p.take(address_limits(
            c.address_limit_per_minute,
            c.address_limit_per_hour,
        ));
        let hashing = p.take(hashing(c.hash_concurrency, c.hash_queue));
        let sns = p.take(sns(&c.sns_topic_arns, &c.sns_cert_url_prefixes));
        let logins = p.take(logins(
            c.login_failure_limit,
            c.login_address_failure_limit,
            c.login_failure_window,
        ));
        let feedback_rules = p.take(feedback_rules(c.soft_bounce_limit, c.soft_bounce_window));
        let webhooks =
            p.take(mailroom::webhook::Webhooks::from_args(&c.webhooks).map(|w| w.endpoints));
        let codes = p.take(c.codes.check());
        let return_to = p.take(mailroom::policy::return_to::AllowList::parse(
            &c.return_to_allowed,
        ));
        let sign_in_url = p.take(sign_in_url(c.sign_in_url.as_deref()));
        let email_change_ttl = p.take(
            more_than_zero("EMAIL_CHANGE_TTL", c.email_change_ttl).and_then(|d| {
                (d <= Duration::from_secs(30 * 86_400))
                    .then_some(d)
                    .ok_or_else(|| "EMAIL_CHANGE_TTL must be at most 30d".to_owned())
            }),
        );
        if !p.0.is_empty() {
            return Err(InvalidConfig(p.0));
        }
        let checked = "no problem was found";
        Ok(Settings {
            db: db.expect(checked),
            broker: broker.expect(checked),
            api_keys: api_keys.expect(checked),
            idempotency_ttl: idempotency_ttl.expect(checked),
            templates_dir: c.templates_dir,
            http: http.expect(checked),
            relay_interval: relay_interval.expect(checked),
            address_limits: address_limits.expect(checked),
            hashing: hashing.expect(checked),
            verify_link_mode: c.verify_link_mode,
            sns: sns.expect(checked),
            logins: logins.expect(checked),
            feedback_rules: feedback_rules.expect(checked),
            webhooks: webhooks.expect(checked),
            codes: codes.expect(checked),
            return_to: return_to.expect(checked),
            sign_in_url: sign_in_url.expect(checked),
            email_change_confirm_old: c.email_change_confirm
                == crate::config::EmailChangeConfirm::Both,
            email_change_ttl: email_change_ttl.expect(checked),
        })
    }
}

impl Settings {
    /// The same as `Settings::try_from(config)`.
    pub fn from_config(config: Config) -> Result<Self, InvalidConfig> {
        Self::try_from(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["ingest", "--api-keys", "k"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn the_defaults_with_a_key_are_valid() {
        let s = Settings::try_from(config(&[])).unwrap();
        assert_eq!(s.logins.failure_limit, 5);
        assert_eq!(s.feedback_rules.soft_bounce_limit, 3);
        assert_eq!(
            s.feedback_rules.soft_bounce_window,
            chrono::Duration::days(7)
        );
        assert!(s.sns.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = config(&[
            "--login-failure-limit",
            "0",
            "--soft-bounce-limit",
            "0",
            "--max-body-bytes",
            "0",
            "--relay-interval",
            "0s",
            "--hash-concurrency",
            "0",
            "--sns-topic-arns",
            "mailroom-ses",
        ]);
        c.api_keys.clear();
        let err = Settings::try_from(c).unwrap_err();
        let text = err.to_string();
        for needle in [
            "INGEST_API_KEYS",
            "LOGIN_FAILURE_LIMIT is 0",
            "SOFT_BOUNCE_LIMIT is 0",
            "MAX_BODY_BYTES is 0",
            "RELAY_INTERVAL is 0",
            "HASH_CONCURRENCY is 0",
            "SNS_TOPIC_ARNS",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert_eq!(err.0.len(), 7, "{text}");
        assert!(
            text.starts_with("invalid configuration (7 problems):"),
            "{text}"
        );
    }

    #[test]
    fn one_problem_reads_as_one_line() {
        let err = Settings::try_from(config(&["--login-failure-limit=-1"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: LOGIN_FAILURE_LIMIT is -1: use at least 1"
        );
    }

    #[test]
    fn urls_windows_and_prefixes_are_checked() {
        let mut c = config(&[
            "--soft-bounce-window",
            "0s",
            "--address-limit-per-hour=-1",
            "--sns-topic-arns",
            "arn:aws:sns:eu-west-1:123456789012:ses",
            "--sns-cert-url-prefixes",
            "ftp://example.com/",
        ]);
        c.db.database_url = mailroom::config::Secret::new("postgres://u:hunter2@db:port/x");
        c.broker.amqp_url = mailroom::config::Secret::new("amqp://g:hunter2@mq/%2f, not a url");
        c.broker.queue_prefix = String::new();
        c.login_failure_window = Duration::MAX;
        let text = Settings::try_from(c).unwrap_err().to_string();
        for needle in [
            "DATABASE_URL",
            "AMQP_URL",
            "QUEUE_PREFIX",
            "SOFT_BOUNCE_WINDOW is 0",
            "LOGIN_FAILURE_WINDOW is too long",
            "ADDRESS_LIMIT_PER_HOUR is -1",
            "SNS_CERT_URL_PREFIXES",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("SNS_TOPIC_ARNS"), "{text}");
    }

    #[test]
    fn blank_sns_entries_are_left_out() {
        let s = Settings::try_from(config(&[
            "--sns-topic-arns",
            " arn:aws:sns:eu-west-1:123456789012:ses ,",
            "--sns-cert-url-prefixes",
            ",http://127.0.0.1:9/",
        ]))
        .unwrap();
        let sns = s.sns.unwrap();
        assert_eq!(sns.topics, ["arn:aws:sns:eu-west-1:123456789012:ses"]);
        assert_eq!(sns.cert_url_prefixes, ["http://127.0.0.1:9/"]);
    }

    #[test]
    fn webhook_problems_are_reported_with_the_others() {
        let mut c = config(&["--soft-bounce-limit", "0"]);
        c.webhooks.webhook_urls = vec!["https://example.com/hooks".into()];
        let text = Settings::try_from(c).unwrap_err().to_string();
        assert!(text.contains("WEBHOOK_SECRET"), "{text}");
        assert!(text.contains("SOFT_BOUNCE_LIMIT"), "{text}");
    }
}
