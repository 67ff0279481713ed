//! The check of each option (or group of options) of [`Config`](crate::Config): each takes
//! the raw values and gives the checked ones, or every problem found in them, worded with the
//! variable's name and what to do about it.

use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use mailroom::config::{BrokerArgs, DatabaseArgs, redact_url};
use mailroom::policy::feedback::FeedbackRules;
use mailroom::store::AddressLimits;

use super::{HashSettings, HttpSettings, LoginSettings, Problems, SnsSettings};

pub(super) fn database(db: DatabaseArgs) -> Result<DatabaseArgs, Vec<String>> {
    let mut problems = Vec::new();
    let url = db.database_url.expose();
    if let Err(e) = sqlx::postgres::PgConnectOptions::from_str(url) {
        problems.push(format!(
            "DATABASE_URL {} is not a PostgreSQL URL: {e}",
            redact_url(url)
        ));
    }
    if db.pool_size == 0 {
        problems.push("DATABASE_POOL_SIZE must be at least 1".into());
    }
    if problems.is_empty() {
        Ok(db)
    } else {
        Err(problems)
    }
}

pub(super) fn broker(broker: BrokerArgs) -> Result<BrokerArgs, Vec<String>> {
    let mut problems = Vec::new();
    let nodes: Vec<&str> = broker
        .amqp_url
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if nodes.is_empty() {
        problems.push("AMQP_URL is empty: set the URL of RabbitMQ".into());
    }
    for node in nodes {
        if let Err(e) = lapin::uri::AMQPUri::from_str(node) {
            let shown = redact_url(node);
            // The parser's message may quote the URL, password and all.
            let e = e.replace(node, &shown);
            problems.push(format!("AMQP_URL {shown} is not an AMQP URL: {e}"));
        }
    }
    // The rule of QUEUE_PREFIX's parser, for a configuration built without clap.
    let prefix = &broker.queue_prefix;
    if prefix.is_empty()
        || prefix.len() > 200
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        problems.push(format!(
            "QUEUE_PREFIX {prefix:?}: use letters, digits, '.', '_' or '-' (at most 200)"
        ));
    }
    if problems.is_empty() {
        Ok(broker)
    } else {
        Err(problems)
    }
}

pub(super) fn http(
    max_body_bytes: usize,
    request_timeout: Duration,
    shutdown_timeout: Duration,
    max_connections: usize,
    metrics_listen: &str,
) -> Result<HttpSettings, Vec<String>> {
    let mut p = Problems::default();
    let max_body_bytes = p.take(at_least_one("MAX_BODY_BYTES", max_body_bytes));
    let request_timeout = p.take(more_than_zero("REQUEST_TIMEOUT", request_timeout));
    let max_connections = p.take(at_least_one("INGEST_MAX_CONNECTIONS", max_connections));
    let metrics_listen = p.take(listen_or_off("INGEST_METRICS_LISTEN", metrics_listen));
    match (
        max_body_bytes,
        request_timeout,
        max_connections,
        metrics_listen,
    ) {
        (
            Some(max_body_bytes),
            Some(request_timeout),
            Some(max_connections),
            Some(metrics_listen),
        ) => Ok(HttpSettings {
            max_body_bytes,
            request_timeout,
            shutdown_timeout,
            max_connections,
            metrics_listen,
        }),
        _ => Err(p.0),
    }
}

/// An address, or None for `off`.
fn listen_or_off(name: &str, listen: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if listen == "off" {
        return Ok(None);
    }
    listen
        .parse()
        .map(Some)
        .map_err(|e| format!("{name} '{listen}' is not host:port or off: {e}"))
}

pub(super) fn address_limits(per_minute: i64, per_hour: i64) -> Result<AddressLimits, Vec<String>> {
    let mut problems = Vec::new();
    for (name, n) in [
        ("ADDRESS_LIMIT_PER_MINUTE", per_minute),
        ("ADDRESS_LIMIT_PER_HOUR", per_hour),
    ] {
        if n < 0 {
            problems.push(format!(
                "{name} is {n}: use 0 or more (0: no reset or resend email is sent)"
            ));
        }
    }
    if problems.is_empty() {
        Ok(AddressLimits {
            per_minute,
            per_hour,
        })
    } else {
        Err(problems)
    }
}

pub(super) fn hashing(concurrency: Option<usize>, queue: usize) -> Result<HashSettings, String> {
    let concurrency = match concurrency {
        Some(n) => NonZeroUsize::new(n).ok_or_else(|| {
            "HASH_CONCURRENCY is 0: use at least 1, or leave it unset for one per CPU core"
                .to_owned()
        })?,
        None => std::thread::available_parallelism()
            .unwrap_or(NonZeroUsize::new(2).expect("2 is not 0")),
    };
    Ok(HashSettings { concurrency, queue })
}

pub(super) fn sns(
    topics: &[String],
    prefixes: &[String],
) -> Result<Option<SnsSettings>, Vec<String>> {
    let non_blank = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let (topics, prefixes) = (non_blank(topics), non_blank(prefixes));
    let mut problems = Vec::new();
    for t in &topics {
        let parts: Vec<&str> = t.split(':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "sns"
            && parts.iter().all(|p| !p.is_empty());
        if !ok {
            problems.push(format!(
                "SNS_TOPIC_ARNS: {t:?} is not a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            ));
        }
    }
    for prefix in &prefixes {
        if !(prefix.starts_with("https://") || prefix.starts_with("http://")) {
            problems.push(format!(
                "SNS_CERT_URL_PREFIXES: {prefix:?} must start with https:// or http://"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((!topics.is_empty()).then_some(SnsSettings {
        topics,
        cert_url_prefixes: prefixes,
    }))
}

pub(super) fn logins(
    limit: i64,
    address_limit: i64,
    window: Duration,
) -> Result<LoginSettings, Vec<String>> {
    let mut p = Problems::default();
    let failure_limit = p.take(at_least_one_i64("LOGIN_FAILURE_LIMIT", limit));
    let address_failure_limit = p.take(if address_limit >= limit {
        Ok(address_limit)
    } else {
        Err(format!(
            "LOGIN_ADDRESS_FAILURE_LIMIT is {address_limit}: use at least LOGIN_FAILURE_LIMIT ({limit})"
        ))
    });
    let failure_window = p.take(window_of("LOGIN_FAILURE_WINDOW", window));
    match (failure_limit, address_failure_limit, failure_window) {
        (Some(failure_limit), Some(address_failure_limit), Some(_)) => Ok(LoginSettings {
            failure_limit,
            address_failure_limit,
            failure_window: window,
        }),
        _ => Err(p.0),
    }
}

pub(super) fn feedback_rules(limit: i64, window: Duration) -> Result<FeedbackRules, Vec<String>> {
    let mut p = Problems::default();
    let soft_bounce_limit = p.take(at_least_one_i64("SOFT_BOUNCE_LIMIT", limit));
    let soft_bounce_window = p.take(window_of("SOFT_BOUNCE_WINDOW", window));
    match (soft_bounce_limit, soft_bounce_window) {
        (Some(soft_bounce_limit), Some(soft_bounce_window)) => Ok(FeedbackRules {
            soft_bounce_limit,
            soft_bounce_window,
        }),
        _ => Err(p.0),
    }
}

fn at_least_one(name: &str, n: usize) -> Result<usize, String> {
    if n >= 1 {
        Ok(n)
    } else {
        Err(format!("{name} is 0: use at least 1"))
    }
}

fn at_least_one_i64(name: &str, n: i64) -> Result<i64, String> {
    if n >= 1 {
        Ok(n)
    } else {
        Err(format!("{name} is {n}: use at least 1"))
    }
}

pub(super) fn more_than_zero(name: &str, d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("{name} is 0: use more than 0 (e.g. 1s)"))
    } else {
        Ok(d)
    }
}

/// A window of past events: more than 0, and short enough that "now minus the window" is a
/// time (the store computes it; a window that overflowed it would fail every request).
fn window_of(name: &str, d: Duration) -> Result<chrono::Duration, String> {
    more_than_zero(name, d)?;
    chrono::Duration::from_std(d)
        .ok()
        .filter(|w| {
            chrono::DateTime::UNIX_EPOCH
                .checked_sub_signed(*w)
                .is_some()
        })
        .ok_or_else(|| format!("{name} is too long to compute with: use at most a few years"))
}
