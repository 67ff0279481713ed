//! `ingest --print-config`: the effective configuration, one variable a line, with where each
//! value came from (the command line, the environment, or clap's default) and secrets redacted
//! — what an operator checks before asking why ingest does what it does.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Values never printed: API keys and signing secrets.
const SECRET: &[&str] = &["INGEST_API_KEYS", "WEBHOOK_SECRET"];
/// URLs printed without their password.
const URLS: &[&str] = &["DATABASE_URL", "AMQP_URL"];

/// The lines `--print-config` prints for `matches` of `command`, sorted by variable.
pub fn lines(command: &Command, matches: &ArgMatches) -> Vec<String> {
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
        } else if SECRET.contains(&env) {
            format!("[redacted: {} value(s)]", raw.len())
        } else if URLS.contains(&env) {
            mailroom::config::redact_url(&value)
        } else if env == "WEBHOOK_URL" {
            raw.iter()
                .map(|u| mailroom::events::redact_url(u))
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
        out.push((env.to_owned(), format!("{env}={shown}  # {source}")));
    }
    out.sort();
    out.into_iter().map(|(_, l)| l).collect()
}
