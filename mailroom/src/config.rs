//! The option groups that every binary shares, with their environment variables and defaults.
//! Each binary flattens the groups it needs into its own clap struct, so `--help` and the table
//! in docs/configuration.md describe the same names (a test compares them). Defaults work against the
//! services on a development machine. Credentials are [`Secret`]s and never print.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A string that must not appear in logs or `Debug` output (URLs with passwords, API keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Reads `./.env` (what `scripts/up` writes) into the environment, without overriding anything
/// already set there. Only the current folder: a `.env` further up must not leak into programs
/// started elsewhere (the tests run the binaries from the crate folders). Call it first in
/// `main`, before any thread exists: it sets environment variables. Returns a warning to print
/// when the file exists but cannot be read.
pub fn load_dotenv() -> Option<String> {
    match dotenvy::from_path(".env") {
        Ok(()) => None,
        Err(e) if e.not_found() => None,
        Err(e) => Some(format!("warning: ignoring ./.env: {e}")),
    }
}

/// A URL (or a comma-separated list of them) with its password replaced, fit for a log line.
pub fn redact_url(raw: &str) -> String {
    if raw.contains(',') {
        return raw
            .split(',')
            .map(|u| redact_url(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/mailroom",
        hide_default_value = false,
        // The URL may carry a password: --help must not print what the environment set.
        hide_env_values = true
    )]
    pub database_url: Secret,

    /// Connections to PostgreSQL at most, per process. Each batched statement of the dispatcher
    /// and each request of ingest holds one only while it runs.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: u32,
}

#[derive(clap::Args, Clone, Debug)]
pub struct BrokerArgs {
    /// RabbitMQ connection URL; several nodes of a cluster, comma-separated (each connection
    /// tries them in turn, starting at the next one).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: Secret,

    /// Names the exchange and queues: <prefix>, <prefix>.emails, <prefix>.retry.<delay>, <prefix>.dead.
    #[arg(long, env = "QUEUE_PREFIX", default_value = "mailroom", value_parser = parse_prefix)]
    pub queue_prefix: String,

    /// The AMQP heartbeat asked of RabbitMQ (whole seconds; the lower of this and the broker's
    /// own wins). A connection that hears nothing for twice this is given up and made again,
    /// so it bounds how long a silent network partition goes unnoticed. A `heartbeat=` in
    /// AMQP_URL takes precedence for that node.
    #[arg(long, env = "AMQP_HEARTBEAT", default_value = "10s", value_parser = parse_heartbeat)]
    pub amqp_heartbeat: Duration,
}

/// A heartbeat: whole seconds from 1 to 65535 (the protocol's field is a 16-bit count of
/// seconds). 0 would turn heartbeats off, and with them the only way to notice a silent peer.
fn parse_heartbeat(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d.subsec_millis() != 0 || d.as_secs() > u64::from(u16::MAX) {
        return Err("use whole seconds from 1s to 65535s (e.g. 10s)".into());
    }
    Ok(d)
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Ok(s.to_owned())
    } else {
        Err("use letters, digits, '.', '_' or '-' (at most 200)".into())
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct SesArgs {
    /// AWS region of the SES endpoint. Credentials come from aws-config's default chain
    /// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles, …).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,

    /// Send to an SES-compatible endpoint instead of real SES (e.g. moto: http://127.0.0.1:5005).
    #[arg(long, env = "SES_ENDPOINT_URL")]
    pub ses_endpoint_url: Option<String>,

    /// How long one SES call may take before it counts as a (retryable) timeout.
    #[arg(long, env = "SES_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ses_timeout: Duration,
}

/// One-time codes (`"method": "code"` or `"both"` on signups, resends, resets and sign-ins).
/// Ingest checks them and the dispatcher mints them, so both read the same settings.
#[derive(clap::Args, Clone, Debug)]
pub struct CodeArgs {
    /// Key of the codes' HMAC, at least 32 bytes (`openssl rand -hex 32`), the same for ingest
    /// and every dispatcher. Unset: requests for codes are refused with 422.
    #[arg(long, env = "CODE_SECRET", hide_env_values = true)]
    pub code_secret: Option<Secret>,

    /// Digits in a one-time code (6 to 10).
    #[arg(long, env = "CODE_LENGTH", default_value_t = 6, value_parser = clap::value_parser!(u8).range(6..=10))]
    pub code_length: u8,

    /// How long a one-time code works.
    #[arg(long, env = "CODE_TTL", default_value = "15m", value_parser = parse_duration)]
    pub code_ttl: Duration,

    /// Wrong guesses a code survives (1 to 20); the guess after them finds it dead (410).
    #[arg(long, env = "CODE_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=20))]
    pub code_max_attempts: u8,
}

impl Default for CodeArgs {
    /// What the flags give when none is set: codes off.
    fn default() -> Self {
        Self {
            code_secret: None,
            code_length: 6,
            code_ttl: Duration::from_secs(900),
            code_max_attempts: 5,
        }
    }
}

/// [`CodeArgs`] checked: the key when codes are on.
#[derive(Clone, Debug)]
pub struct Codes {
    pub key: Option<crate::domain::CodeKey>,
    pub digits: usize,
    pub ttl: Duration,
    pub max_attempts: i32,
}

impl CodeArgs {
    /// The settings, or what is wrong with them.
    pub fn check(&self) -> Result<Codes, String> {
        let key = match &self.code_secret {
            None => None,
            Some(s) if s.expose().trim().is_empty() => None,
            Some(s) => Some(
                crate::domain::CodeKey::new(s.expose()).map_err(|e| format!("CODE_SECRET {e}"))?,
            ),
        };
        if self.code_ttl < Duration::from_secs(60) || self.code_ttl > Duration::from_secs(86_400) {
            return Err("CODE_TTL must be between 1m and 24h".into());
        }
        Ok(Codes {
            key,
            digits: self.code_length.into(),
            ttl: self.code_ttl,
            max_attempts: self.code_max_attempts.into(),
        })
    }
}

impl Codes {
    /// Codes off (no `CODE_SECRET`), with the defaults otherwise: what tests and tools that
    /// never mint a code use.
    pub fn off() -> Self {
        Self {
            key: None,
            digits: 6,
            ttl: Duration::from_secs(900),
            max_attempts: 5,
        }
    }
}

/// Output format for logs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format. The level is set with RUST_LOG (default: info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Parses `500ms`, `10s`, `1m`, `5m`, `2h`, `1d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 10s, 5m or 2h"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("'{s}' has an unknown unit (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_millis(ms))
}

/// Formats a duration the way [`parse_duration`] reads it, for logs and help.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    match ms {
        0 => "0s".into(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// The effective configuration of a command (`ingest --print-config`, `dispatcher config`):
/// one `NAME=value  # source` line per environment variable its arguments read, sorted, where
/// the source is the command line, the environment or clap's default. Values of `secret`
/// variables are never printed (only how many there are); `DATABASE_URL` and `AMQP_URL` lose
/// their password, `WEBHOOK_URL` its userinfo and query. A variable that `dotenv` (the
/// `./.env` of the working directory) sets but the environment does not is marked: the
/// services read the environment only, so that value is *not* used.
pub fn effective_config(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    secret: &[&str],
    dotenv: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    use clap::parser::ValueSource;
    let mut out: Vec<(String, String)> = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = raw.join(",");
        let shown = if raw.is_empty() {
            "(unset)".to_owned()
        } else if secret.contains(&env) {
            format!("[redacted: {} value(s)]", raw.len())
        } else if ["DATABASE_URL", "AMQP_URL"].contains(&env) {
            redact_url(&value)
        } else if env == "WEBHOOK_URL" {
            raw.iter()
                .map(|u| crate::events::redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            value
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "command line",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let note = if dotenv.contains(env) && source != "environment" {
            " (./.env sets it too, but the services read only the environment)"
        } else {
            ""
        };
        out.push((env.to_owned(), format!("{env}={shown}  # {source}{note}")));
    }
    out.sort();
    out.into_iter().map(|(_, l)| l).collect()
}

/// The variables `./.env` sets that the environment does not (empty without a `./.env`).
pub fn dotenv_only() -> std::collections::BTreeSet<String> {
    dotenvy::from_path_iter(".env")
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|(k, _)| k)
                .filter(|k| std::env::var_os(k).is_none())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5w").is_err());
        for s in ["10s", "1m", "2h", "250ms", "1d"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn the_heartbeat_default_is_the_one_connect_uses() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            broker: BrokerArgs,
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.broker.amqp_heartbeat, crate::broker::DEFAULT_HEARTBEAT);
    }

    #[test]
    fn heartbeats_are_whole_seconds_and_never_off() {
        assert_eq!(parse_heartbeat("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_heartbeat("1").unwrap(), Duration::from_secs(1));
        for bad in ["0s", "1500ms", "65536s", "ten"] {
            assert!(parse_heartbeat(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
