//! Logging setup shared by the binaries: `RUST_LOG` picks the level (default `info`, with
//! lapin's own lines off),
//! `LOG_FORMAT` picks text or JSON. Owns nothing else; secrets are kept out of logs by the
//! types that hold them ([`crate::config::Secret`], [`crate::domain::Token`]).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`] with another default level; one-shot commands use `warn` so that their own
/// output is not buried in logs.
pub fn init_with_default(format: LogFormat, level: &str) {
    // lapin logs every channel or connection the broker closes at ERROR, in its own words,
    // before our code reports the same event with what it means and what happens next (a
    // missing queue, a reconnect): its own lines are off unless RUST_LOG asks for them.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},lapin=off")))
        // handlebars logs every helper's parameters at DEBUG, values included: the link (with
        // its token) and the one-time code of every email. Never below WARN, whatever RUST_LOG
        // says; a directive added here wins over one of the same target from the environment.
        .add_directive("handlebars=warn".parse().expect("a valid directive"));
    // Colour only on a terminal: a log file (`scripts/up` writes them under .run/) or a log
    // shipper must get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
