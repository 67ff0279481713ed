//! The operator dashboard: queue depths, sends and failures, unverified users, dead letters
//! with replay, the SES account — in a terminal.
//!
//! # Layout
//!
//! - [`app`]: state, and the one table of keys that drives key handling, the footer and the
//!   help (pure; tests feed it key sequences).
//! - [`ui`]: drawing, one module per view (tests render it to ratatui's `TestBackend`).
//! - [`text`]: wording shared by both (counts with their noun, ages).
//! - [`data`]: what is shown, and the [`data::DataSource`] seam.
//! - [`live`]: the live source (PostgreSQL, RabbitMQ, SES, the dispatcher's metrics).
//!
//! The screen never waits on I/O: each source is refreshed by a background task of its own,
//! one request in flight at a time, and the frame shows the last good data with its age.

pub mod app;
pub mod data;
pub mod live;
pub mod settings;
pub mod text;
pub mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyEventKind};
use futures_util::{Stream, StreamExt};
use mailroom::config::{BrokerArgs, DatabaseArgs, SesArgs, parse_duration};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::{Notify, mpsc};

use crate::app::App;
use crate::data::{DataSource, Source, Update};
use crate::ui::Now;

/// The dashboard's configuration. Every option also reads the environment variable it names.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "dashboard",
    version,
    about = "Mailroom's terminal dashboard: queues, sends, unverified users, dead letters with replay",
    long_about = "Mailroom's terminal dashboard. Views: 1 Overview (queues, send rate, today's \
                  counts, the SES account), 2 Sends, 3 Users (unverified, with resend), 4 Dead \
                  letters (with replay), 5 Suppressed (the suppression list). Press ? inside for every key. Data refreshes in the \
                  background; actions ask y/n first and are written to the audit table."
)]
pub struct Config {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub ses: SesArgs,

    /// RabbitMQ's management API, for unacked counts ("off" to use AMQP only).
    #[arg(
        long,
        env = "RABBITMQ_MANAGEMENT_URL",
        default_value = "http://guest:guest@127.0.0.1:15672",
        // It carries the management user's password: --help must not print the environment's.
        hide_env_values = true
    )]
    pub management_url: String,

    /// The dispatcher's metrics, to show whether it is paused ("off" to skip).
    #[arg(
        long,
        env = "DISPATCHER_METRICS_URL",
        default_value = "http://127.0.0.1:9091/metrics"
    )]
    pub dispatcher_metrics_url: String,

    /// The dispatcher's retry delays: their count says how many retry queues to show.
    #[arg(long, env = "RETRY_DELAYS", default_value = "10s,1m,5m,30m,2h", value_delimiter = ',', value_parser = parse_duration)]
    pub retry_delays: Vec<Duration>,

    /// Per-address limits for the resend action: the same settings (and defaults) as ingest's.
    #[arg(long, env = "ADDRESS_LIMIT_PER_MINUTE", default_value_t = 1)]
    pub address_limit_per_minute: i64,

    /// See ADDRESS_LIMIT_PER_MINUTE.
    #[arg(long, env = "ADDRESS_LIMIT_PER_HOUR", default_value_t = 5)]
    pub address_limit_per_hour: i64,

    /// How often each source is refreshed.
    #[arg(long, env = "REFRESH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// The dispatcher's UNVERIFIED_REMINDER_AFTER, for the Users view's "next" column.
    #[arg(long, env = "UNVERIFIED_REMINDER_AFTER", default_value = "24h", value_parser = mailroom::policy::retention::parse_keep)]
    pub unverified_reminder_after: mailroom::policy::retention::Keep,

    /// The dispatcher's UNVERIFIED_EXPIRE_AFTER, for the Users view's "next" column.
    #[arg(long, env = "UNVERIFIED_EXPIRE_AFTER", default_value = "30d", value_parser = mailroom::policy::retention::parse_keep)]
    pub unverified_expire_after: mailroom::policy::retention::Keep,
}

/// Refreshes every source in the background: one task per source, one request in flight each,
/// sending results to the UI loop. `now` wakes them all at once (after an action).
fn spawn_refreshers<S: DataSource>(
    source: Arc<S>,
    interval: Duration,
    tx: mpsc::UnboundedSender<(Source, Result<Update, String>)>,
    now: Arc<Notify>,
) -> Vec<tokio::task::JoinHandle<()>> {
    Source::ALL
        .into_iter()
        .map(|s| {
            let (source, tx, now) = (source.clone(), tx.clone(), now.clone());
            tokio::spawn(async move {
                loop {
                    let r = match tokio::time::timeout(Duration::from_secs(10), source.fetch(s))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err("timed out".into()),
                    };
                    if tx.send((s, r)).is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = now.notified() => {}
                    }
                }
            })
        })
        .collect()
}

/// Runs the dashboard on any backend with any event stream until the operator quits; returns
/// the final state. The binary passes a crossterm terminal and its event stream; tests pass a
/// `TestBackend` and a scripted stream.
pub async fn run_app<B, S, E>(
    terminal: &mut Terminal<B>,
    source: Arc<S>,
    mut events: E,
    interval: Duration,
) -> anyhow::Result<App>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: DataSource,
    E: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let mut app = App::new();
    app.prefix = source.prefix();
    let (tx, mut updates) = mpsc::unbounded_channel();
    let refresh_now = Arc::new(Notify::new());
    let tasks = spawn_refreshers(source.clone(), interval, tx, refresh_now.clone());
    let (progress_tx, mut progress) = mpsc::unbounded_channel::<String>();
    let (done_tx, mut done) = mpsc::unbounded_channel::<Result<String, String>>();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut events_open = true;
    loop {
        terminal.draw(|f| ui::draw(f, &app, Now::current()))?;
        if app.quit {
            break;
        }
        tokio::select! {
            ev = events.next(), if events_open => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    if let Some(action) = app.on_key(k) {
                        let (source, progress_tx, done_tx) = (source.clone(), progress_tx.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            let _ = done_tx.send(source.perform(action, progress_tx).await);
                        });
                    }
                }
                Some(Ok(_)) => {} // resize and the rest: the next draw reflows
                Some(Err(e)) => anyhow::bail!("terminal input failed: {e}"),
                None => events_open = false,
            },
            Some((s, r)) = updates.recv() => match r {
                Ok(u) => app.apply(u, Instant::now()),
                Err(e) => app.fail(s, e),
            },
            Some(line) = progress.recv() => app.progress(line),
            Some(r) = done.recv() => {
                app.finished(r);
                refresh_now.notify_waiters();
            }
            _ = tick.tick() => {}
        }
    }
    for t in tasks {
        t.abort();
    }
    Ok(app)
}
