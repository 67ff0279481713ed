//! The dispatcher's settings: [`RunConfig`] (what clap read) checked and put in the form the
//! dispatcher uses. [`Settings::try_from`] checks everything and reports every problem at once
//! ([`InvalidConfig`]), so an operator fixes a configuration in one go; nothing out of range
//! is quietly replaced by something that is not.
//!
//! Only what can be told from the values themselves is checked here; what needs the outside
//! world (the templates on disk, the SES account, the metrics port) is checked by the start-up
//! that takes these settings.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mailroom::config::{BrokerArgs, DatabaseArgs, SesArgs, redact_url};
use mailroom::webhook::Webhooks;

use crate::RunConfig;

/// The longest link lifetime accepted: a link's expiry must be a date, and a century is
/// already a typo.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A checked configuration of `dispatcher run`.
#[derive(Debug)]
pub struct Settings {
    pub db: DatabaseArgs,
    pub broker: BrokerArgs,
    pub ses: SesArgs,
    /// The sender, trimmed.
    pub mail_from: String,
    /// Trimmed; None when unset or blank.
    pub configuration_set: Option<String>,
    /// Without a trailing slash.
    pub public_url: String,
    /// `RESET_URL`, or `PUBLIC_URL/reset-password`.
    pub reset_url: String,
    pub templates_dir: PathBuf,
    pub verification_ttl: Duration,
    pub reset_ttl: Duration,
    /// `SIGN_IN_URL`, trimmed; None when unset or blank.
    pub sign_in_url: Option<String>,
    pub sign_in_ttl: Duration,
    pub invite_ttl: Duration,
    /// At least one, none zero.
    pub retry_delays: Vec<Duration>,
    /// Above zero and finite; None: ask SES (else 14).
    pub max_send_rate: Option<f64>,
    /// At most `u16::MAX` (it is also the prefetch); None: sized from the rate.
    pub send_concurrency: Option<NonZeroUsize>,
    /// `WEBHOOK_CONCURRENCY`: at least 1, at most `u16::MAX` (it is also the prefetch).
    pub webhook_concurrency: NonZeroUsize,
    /// None: "off".
    pub metrics_listen: Option<SocketAddr>,
    pub shutdown_timeout: Duration,
    pub pause_probe_interval: Duration,
    pub webhooks: Arc<Webhooks>,
    /// Retention, reminders and expiry (see [`crate::sweep`]).
    pub sweep: crate::sweep::SweepArgs,
    /// One-time codes: their key (None: off), length, life and attempts.
    pub codes: mailroom::config::Codes,
}

/// Every problem found in a configuration, in the order of the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    pub problems: Vec<String>,
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.problems.as_slice() {
            [one] => f.write_str(one),
            all => {
                write!(f, "{} problems in the configuration:", all.len())?;
                for p in all {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for InvalidConfig {}

impl TryFrom<RunConfig> for Settings {
    type Error = InvalidConfig;

    fn try_from(c: RunConfig) -> Result<Self, InvalidConfig> {
        let mut problems = Vec::new();
        let mut check = |p: Option<String>| problems.extend(p);
        check(database_url(&c.db));
        check(pool_size(&c.db));
        check(mail_from(&c.mail_from));
        check(link_ttl("VERIFICATION_TTL", c.verification_ttl));
        check(link_ttl("RESET_TTL", c.reset_ttl));
        check(link_ttl("SIGN_IN_TTL", c.sign_in_ttl));
        check(link_ttl("INVITE_TTL", c.invite_ttl));
        let sign_in_url = c
            .sign_in_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        if let Some(u) = &sign_in_url {
            check(
                url::Url::parse(u)
                    .err()
                    .map(|e| format!("SIGN_IN_URL is not a URL ({e}): {u}")),
            );
        }
        check(retry_delays(&c.retry_delays));
        check(max_send_rate(c.max_send_rate));
        check(send_concurrency(c.send_concurrency));
        check(webhook_concurrency(c.webhook_concurrency));
        for p in c.sweep.problems() {
            check(Some(p));
        }
        let codes = c.codes.check().unwrap_or_else(|p| {
            check(Some(p));
            mailroom::config::Codes::off()
        });
        let metrics_listen = metrics_listen(&c.metrics_listen).unwrap_or_else(|p| {
            check(Some(p));
            None
        });
        let webhooks = Webhooks::from_args(&c.webhooks).map_err(|p| check(Some(p)));
        let webhooks = match webhooks {
            Ok(w) if problems.is_empty() => Arc::new(w),
            _ => return Err(InvalidConfig { problems }),
        };
        let public_url = c.public_url.trim_end_matches('/').to_owned();
        Ok(Settings {
            reset_url: c
                .reset_url
                .unwrap_or_else(|| format!("{public_url}/reset-password")),
            public_url,
            mail_from: c.mail_from.trim().to_owned(),
            configuration_set: c
                .configuration_set
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            send_concurrency: c.send_concurrency.and_then(NonZeroUsize::new),
            webhook_concurrency: NonZeroUsize::new(c.webhook_concurrency).expect("checked"),
            metrics_listen,
            webhooks,
            db: c.db,
            broker: c.broker,
            ses: c.ses,
            templates_dir: c.templates_dir,
            verification_ttl: c.verification_ttl,
            reset_ttl: c.reset_ttl,
            sign_in_url,
            sign_in_ttl: c.sign_in_ttl,
            invite_ttl: c.invite_ttl,
            retry_delays: c.retry_delays,
            max_send_rate: c.max_send_rate,
            shutdown_timeout: c.shutdown_timeout,
            pause_probe_interval: c.pause_probe_interval,
            sweep: c.sweep,
            codes,
        })
    }
}

fn database_url(db: &DatabaseArgs) -> Option<String> {
    let url = db.database_url.expose();
    sqlx::postgres::PgConnectOptions::from_str(url)
        .err()
        .map(|e| format!("invalid DATABASE_URL {}: {e}", redact_url(url)))
}

fn pool_size(db: &DatabaseArgs) -> Option<String> {
    (db.pool_size == 0).then(|| "DATABASE_POOL_SIZE must be at least 1".to_owned())
}

fn mail_from(from: &str) -> Option<String> {
    from.trim().is_empty().then(|| {
        "MAIL_FROM is empty: set the verified sender address, e.g. MAIL_FROM=no-reply@example.com"
            .to_owned()
    })
}

fn link_ttl(name: &str, ttl: Duration) -> Option<String> {
    (ttl > MAX_LINK_TTL).then(|| {
        format!("{name} must be at most 36500d (100 years): a link's expiry must be a date")
    })
}

fn retry_delays(delays: &[Duration]) -> Option<String> {
    (delays.is_empty() || delays.iter().any(|d| d.is_zero())).then(|| {
        "RETRY_DELAYS needs at least one delay above zero, e.g. RETRY_DELAYS=10s,1m,5m".to_owned()
    })
}

fn max_send_rate(rate: Option<f64>) -> Option<String> {
    match rate {
        Some(r) if r.is_nan() || r <= 0.0 => Some("MAX_SEND_RATE must be greater than 0".into()),
        Some(r) if !r.is_finite() => {
            Some("MAX_SEND_RATE must be a finite number of sends per second".into())
        }
        _ => None,
    }
}

fn webhook_concurrency(n: usize) -> Option<String> {
    if n == 0 || n > usize::from(u16::MAX) {
        Some(format!(
            "WEBHOOK_CONCURRENCY is {n}: use 1 to {} (it is also the prefetch)",
            u16::MAX
        ))
    } else {
        None
    }
}

fn send_concurrency(n: Option<usize>) -> Option<String> {
    match n {
        Some(0) => Some(
            "SEND_CONCURRENCY must be at least 1 (or unset, to size it from the sending rate)"
                .into(),
        ),
        Some(n) if n > usize::from(u16::MAX) => Some(format!(
            "SEND_CONCURRENCY must be at most {} (it is also the prefetch, which AMQP counts in 16 bits)",
            u16::MAX
        )),
        _ => None,
    }
}

/// The metrics address, None for "off"; or why it is not an address.
fn metrics_listen(listen: &str) -> Result<Option<SocketAddr>, String> {
    if listen == "off" {
        return Ok(None);
    }
    listen
        .parse()
        .map(Some)
        .map_err(|e| format!("DISPATCHER_METRICS_LISTEN '{listen}' is not host:port: {e}"))
}

#[cfg(test)]
mod tests {
    use mailroom::config::Secret;
    use mailroom::webhook::WebhookArgs;

    use super::*;

    fn config() -> RunConfig {
        RunConfig {
            db: DatabaseArgs {
                database_url: Secret::new("postgres://postgres:pw@127.0.0.1:5432/mailroom"),
                pool_size: 16,
            },
            broker: BrokerArgs {
                amqp_url: Secret::new("amqp://127.0.0.1:5672/%2f"),
                queue_prefix: "mailroom".into(),
                amqp_heartbeat: mailroom::broker::DEFAULT_HEARTBEAT,
            },
            ses: SesArgs {
                aws_region: "us-east-1".into(),
                ses_endpoint_url: None,
                ses_timeout: Duration::from_secs(10),
            },
            mail_from: " no-reply@example.com ".into(),
            configuration_set: Some("  ".into()),
            public_url: "https://mail.example.com/".into(),
            reset_url: None,
            templates_dir: mailroom::templates::DEFAULT_DIR.into(),
            verification_ttl: Duration::from_secs(86_400),
            reset_ttl: Duration::from_secs(3_600),
            sign_in_url: None,
            sign_in_ttl: Duration::from_secs(900),
            invite_ttl: Duration::from_secs(7 * 86_400),
            retry_delays: vec![Duration::from_secs(10)],
            max_send_rate: None,
            send_concurrency: None,
            webhook_concurrency: 8,
            metrics_listen: "127.0.0.1:9091".into(),
            shutdown_timeout: Duration::from_secs(10),
            pause_probe_interval: Duration::from_secs(30),
            webhooks: WebhookArgs::default(),
            sweep: Default::default(),
            codes: Default::default(),
        }
    }

    #[test]
    fn a_good_configuration_is_put_in_shape() {
        let s = Settings::try_from(config()).unwrap();
        assert_eq!(s.mail_from, "no-reply@example.com");
        assert_eq!(s.configuration_set, None);
        assert_eq!(s.public_url, "https://mail.example.com");
        assert_eq!(s.reset_url, "https://mail.example.com/reset-password");
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9091".parse().unwrap()));
        assert_eq!(s.send_concurrency, None);

        let s = Settings::try_from(RunConfig {
            metrics_listen: "off".into(),
            send_concurrency: Some(usize::from(u16::MAX)),
            max_send_rate: Some(0.5),
            reset_url: Some("https://app.example.com/reset?from=mail".into()),
            configuration_set: Some(" events ".into()),
            ..config()
        })
        .unwrap();
        assert_eq!(s.metrics_listen, None);
        assert_eq!(s.send_concurrency.map(NonZeroUsize::get), Some(65_535));
        assert_eq!(s.reset_url, "https://app.example.com/reset?from=mail");
        assert_eq!(s.configuration_set.as_deref(), Some("events"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Settings::try_from(RunConfig {
            db: DatabaseArgs {
                database_url: Secret::new("postgres://root:hunter2@db:port/mailroom"),
                pool_size: 0,
            },
            mail_from: "  ".into(),
            verification_ttl: MAX_LINK_TTL + Duration::from_secs(1),
            retry_delays: vec![Duration::from_secs(10), Duration::ZERO],
            max_send_rate: Some(f64::NAN),
            send_concurrency: Some(0),
            metrics_listen: "localhost".into(),
            webhooks: WebhookArgs {
                webhook_urls: vec!["https://example.com/hooks".into()],
                webhook_events: Vec::new(),
                ..WebhookArgs::default()
            },
            ..config()
        })
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "9 problems in the configuration",
            "invalid DATABASE_URL",
            "DATABASE_POOL_SIZE must be at least 1",
            "MAIL_FROM is empty",
            "VERIFICATION_TTL must be at most",
            "RETRY_DELAYS needs at least one delay above zero",
            "MAX_SEND_RATE must be greater than 0",
            "SEND_CONCURRENCY must be at least 1",
            "DISPATCHER_METRICS_LISTEN 'localhost' is not host:port",
            "WEBHOOK_SECRET",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(err.problems.len(), 9);
    }

    #[test]
    fn nothing_out_of_range_is_quietly_replaced() {
        let problems = |c: RunConfig| Settings::try_from(c).unwrap_err().problems;
        assert_eq!(
            problems(RunConfig {
                max_send_rate: Some(f64::INFINITY),
                ..config()
            }),
            ["MAX_SEND_RATE must be a finite number of sends per second"]
        );
        assert_eq!(
            problems(RunConfig {
                max_send_rate: Some(-1.0),
                ..config()
            }),
            ["MAX_SEND_RATE must be greater than 0"]
        );
        let too_many = problems(RunConfig {
            send_concurrency: Some(70_000),
            ..config()
        });
        assert!(too_many[0].starts_with("SEND_CONCURRENCY must be at most 65535"));
        let one = Settings::try_from(RunConfig {
            retry_delays: Vec::new(),
            ..config()
        })
        .unwrap_err();
        // A single problem reads as itself.
        assert_eq!(
            one.to_string(),
            "RETRY_DELAYS needs at least one delay above zero, e.g. RETRY_DELAYS=10s,1m,5m"
        );
    }
}
