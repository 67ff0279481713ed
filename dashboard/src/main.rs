//! The `dashboard` binary: parse configuration, connect, run the terminal UI, restore the
//! terminal on every exit path (ratatui's init installs a panic hook that restores it too).

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use crossterm::event::EventStream;
use dashboard::Config;
use dashboard::live::LiveSource;
use dashboard::settings::Settings;
use mailroom::broker::Topology;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads exist: it sets environment variables.
    if let Some(warning) = mailroom::config::load_dotenv() {
        eprintln!("{warning}");
    }
    run_main()
}

#[tokio::main]
async fn run_main() -> std::process::ExitCode {
    let config = Config::parse();
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Checked before the terminal is taken over, so that every problem prints plainly.
    let settings = Settings::try_from(config)?;
    // Lazy: the dashboard opens even while PostgreSQL is down, and says so in its status line.
    let pool =
        mailroom::store::connect_lazy(&settings.database_url).context("invalid DATABASE_URL")?;
    let ses = mailroom::ses::client(&settings.ses, 1).await;
    let actor = os_user();
    let source = Arc::new(
        LiveSource::new(
            pool,
            settings.amqp_url.clone(),
            Topology::new(&settings.queue_prefix),
            settings.retry_delays.clone(),
            ses,
            settings.management_url.clone(),
            settings.dispatcher_metrics_url.clone(),
            actor,
            settings.limits,
        )
        .with_heartbeat(settings.amqp_heartbeat)
        .with_unverified_rules(settings.unverified.0, settings.unverified.1),
    );
    let mut terminal = ratatui::init();
    let result = dashboard::run_app(
        &mut terminal,
        source,
        EventStream::new(),
        settings.refresh_interval,
    )
    .await;
    ratatui::restore();
    result.map(|_| ())
}

/// The operator's OS user, for the audit table: $USER, $LOGNAME, else `id -un`.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            let name = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (!name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "unknown".into())
}
