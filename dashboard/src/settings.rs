//! [`Settings`]: the dashboard's [`Config`] checked before the terminal is taken over, with
//! every problem reported at once (one line each) instead of a dashboard that spins on a zero
//! refresh interval or shows the wrong retry queues.

use std::time::Duration;

use mailroom::config::{SesArgs, redact_url};
use mailroom::store::AddressLimits;

use crate::Config;

/// What the dashboard runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub amqp_url: String,
    pub amqp_heartbeat: Duration,
    pub queue_prefix: String,
    pub ses: SesArgs,
    /// None: `off` (AMQP only).
    pub management_url: Option<String>,
    /// None: `off` (the pause state is not shown).
    pub dispatcher_metrics_url: Option<String>,
    pub retry_delays: Vec<Duration>,
    pub limits: AddressLimits,
    pub refresh_interval: Duration,
    /// `UNVERIFIED_REMINDER_AFTER` and `UNVERIFIED_EXPIRE_AFTER` (None: `off`).
    pub unverified: (Option<Duration>, Option<Duration>),
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct InvalidConfig(pub Vec<String>);

impl TryFrom<Config> for Settings {
    type Error = InvalidConfig;

    fn try_from(c: Config) -> Result<Self, InvalidConfig> {
        let mut problems = Vec::new();
        let database_url = c.db.database_url.expose().to_owned();
        if url::Url::parse(&database_url).is_err() {
            problems.push(format!(
                "DATABASE_URL {} is not a URL (postgres://user@host:port/db)",
                redact_url(&database_url)
            ));
        }
        let management_url =
            optional_url("RABBITMQ_MANAGEMENT_URL", &c.management_url, &mut problems);
        let dispatcher_metrics_url = optional_url(
            "DISPATCHER_METRICS_URL",
            &c.dispatcher_metrics_url,
            &mut problems,
        );
        if c.retry_delays.is_empty() || c.retry_delays.iter().any(Duration::is_zero) {
            problems.push(
                "RETRY_DELAYS must list one delay above 0 per retry, as the dispatcher's (e.g. 10s,1m,5m,30m,2h)"
                    .into(),
            );
        }
        for (name, n) in [
            ("ADDRESS_LIMIT_PER_MINUTE", c.address_limit_per_minute),
            ("ADDRESS_LIMIT_PER_HOUR", c.address_limit_per_hour),
        ] {
            if n < 0 {
                problems.push(format!("{name} is {n}: use 0 or more, as on ingest"));
            }
        }
        if c.refresh_interval.is_zero() {
            problems.push("REFRESH_INTERVAL must be more than 0 (e.g. 2s)".into());
        }
        if !problems.is_empty() {
            return Err(InvalidConfig(problems));
        }
        Ok(Settings {
            database_url,
            amqp_url: c.broker.amqp_url.expose().to_owned(),
            amqp_heartbeat: c.broker.amqp_heartbeat,
            queue_prefix: c.broker.queue_prefix,
            ses: c.ses,
            management_url,
            dispatcher_metrics_url,
            retry_delays: c.retry_delays,
            limits: AddressLimits {
                per_minute: c.address_limit_per_minute,
                per_hour: c.address_limit_per_hour,
            },
            refresh_interval: c.refresh_interval,
            unverified: (c.unverified_reminder_after.0, c.unverified_expire_after.0),
        })
    }
}

/// `off` (or empty) is None; anything else must be an http(s) URL.
fn optional_url(name: &str, raw: &str, problems: &mut Vec<String>) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "off" {
        return None;
    }
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(raw.to_owned()),
        _ => {
            problems.push(format!(
                "{name} {} is not an http(s) URL (or \"off\")",
                redact_url(raw)
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, InvalidConfig> {
        let mut all = vec!["dashboard"];
        all.extend_from_slice(args);
        Settings::try_from(Config::try_parse_from(all).unwrap())
    }

    #[test]
    fn the_defaults_are_valid_and_off_turns_a_source_off() {
        let s = parse(&["--management-url", "off"]).unwrap();
        assert_eq!(s.management_url, None);
        assert!(s.dispatcher_metrics_url.is_some());
        assert_eq!(s.retry_delays.len(), 5);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(&[
            "--refresh-interval",
            "0s",
            "--address-limit-per-hour=-1",
            "--dispatcher-metrics-url",
            "ftp://x",
            "--retry-delays",
            "0s",
        ])
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "REFRESH_INTERVAL",
            "ADDRESS_LIMIT_PER_HOUR is -1",
            "DISPATCHER_METRICS_URL",
            "RETRY_DELAYS",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert_eq!(err.0.len(), 4, "{text}");
    }
}
