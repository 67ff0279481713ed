//! `dispatcher dead list` and `dispatcher replay`: reading the dead-letter queue without
//! consuming it, and moving dead letters back to the work queue (with the send log and the
//! audit table told). The queue work itself is in [`crate::dead`].

use mailroom::broker::Topology;
use mailroom::config::{BrokerArgs, DatabaseArgs};

use super::connect;
use super::table::{Column, Table};
use crate::dead::{DeadLetter, Filter, ReplayOptions, ReplayReport};

/// `dispatcher dead …`: the queue to read, and what to do with it.
#[derive(clap::Args, Debug)]
pub struct DeadArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(subcommand)]
    pub command: DeadCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DeadCommand {
    /// List dead letters: job id, kind, recipient, attempts, error class, last error, when it
    /// died and how often it was replayed.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most this many (oldest first).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// `dispatcher replay`: which dead letters to move back, and how.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["job", "error_class", "all"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    // For the audit table (the replay itself needs only RabbitMQ).
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Replay this job (repeatable).
    #[arg(long = "job", value_name = "JOB_ID")]
    pub job: Vec<String>,
    /// Replay every dead letter of this error class (permanent, retryable, render, malformed,
    /// delivery_limit).
    #[arg(long)]
    pub error_class: Option<String>,
    /// Replay every dead letter.
    #[arg(long)]
    pub all: bool,
    /// Say what would be replayed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replays per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
}

/// Runs `dispatcher dead …`.
pub async fn main(args: DeadArgs) -> anyhow::Result<()> {
    match args.command {
        DeadCommand::List { json, limit } => list(&args.broker, json, limit).await,
    }
}

async fn list(broker: &BrokerArgs, json: bool, limit: usize) -> anyhow::Result<()> {
    let conn = connect::broker(broker).await?;
    let topo = Topology::new(&broker.queue_prefix);
    let letters = crate::dead::list(&conn, &topo, limit).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e} (has a dispatcher ever run with QUEUE_PREFIX={}?)",
            topo.dead_queue(),
            broker.queue_prefix
        )
    })?;
    let _ = conn.close(200, "done".into()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
    } else if letters.is_empty() {
        println!("No dead letters in {}.", topo.dead_queue());
    } else {
        print!("{}", table(&letters));
    }
    Ok(())
}

fn table(letters: &[DeadLetter]) -> Table {
    let mut t = Table::new([
        Column::left("JOB", 36),
        Column::left("KIND", 14),
        Column::left("RECIPIENT", 30),
        Column::right("ATT", 3),
        Column::left("CLASS", 14),
        Column::left("DIED", 20),
        Column::right("REP", 3),
        Column::last("LAST ERROR"),
    ])
    .counted("dead letters");
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    for d in letters {
        t.row([
            or_dash(&d.job_id),
            or_dash(&d.kind),
            or_dash(&d.recipient),
            d.attempts.to_string(),
            d.error_class.clone(),
            or_dash(&d.died_at),
            d.replays.to_string(),
            d.last_error.clone(),
        ]);
    }
    t
}

/// Runs `dispatcher replay`.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let filter = if args.all {
        Filter::All
    } else if let Some(c) = args.error_class {
        Filter::ErrorClass(c)
    } else {
        Filter::Jobs(args.job)
    };
    let conn = connect::broker(&args.broker).await?;
    let topo = Topology::new(&args.broker.queue_prefix);
    let opts = ReplayOptions {
        filter,
        dry_run: args.dry_run,
        rate: args.rate,
    };
    let mut last_print = std::time::Instant::now();
    let report = crate::dead::replay(&conn, &topo, &opts, |r| {
        if last_print.elapsed() >= std::time::Duration::from_secs(1) {
            eprintln!(
                "… examined {}, replayed {}, parked {}",
                r.examined, r.replayed, r.parked
            );
            last_print = std::time::Instant::now();
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("replay stopped: {e}"))?;
    let _ = conn.close(200, "done".into()).await;
    if !report.dry_run {
        audit_replay(&args.db, &opts.filter, &report.replayed_jobs).await;
    }
    print_report(&report)
}

/// The summary line; an error when some replayed letters could not be taken off the dead queue.
fn print_report(report: &ReplayReport) -> anyhow::Result<()> {
    println!(
        "{}examined {} dead letters: {} matched, {} {}, {} parked (replayed {} times already, or not a job)",
        if report.dry_run { "dry run: " } else { "" },
        report.examined,
        report.matched,
        report.replayed,
        if report.dry_run {
            "would be replayed"
        } else {
            "replayed"
        },
        report.parked,
        crate::dead::MAX_REPLAYS
    );
    if report.failed > 0 {
        anyhow::bail!(
            "{} dead letter(s) were published but RabbitMQ did not take their removal from the \
             dead queue (the connection dropped); they are still dead letters. Run the replay \
             again: the send log stops a second send of any that went through.",
            report.failed
        );
    }
    Ok(())
}

/// Writes the replay to the audit table, as the dashboard does. Best effort: the replay already
/// happened, so a database that cannot be reached only earns a warning.
async fn audit_replay(db: &DatabaseArgs, filter: &Filter, replayed: &[(String, i64)]) {
    let detail = filter.describe();
    let count = replayed.len();
    let actor = connect::actor();
    let written = async {
        let pool = mailroom::store::connect(db.database_url.expose()).await?;
        // The send log stops listing them as dead: they are back in the work queue.
        mailroom::store::mark_replayed(&pool, replayed, chrono::Utc::now()).await?;
        mailroom::store::audit(&pool, &actor, "replay", &detail, count as i64).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), written).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("warning: replay not written to the send log and the audit table: {e}")
        }
        Err(_) => {
            eprintln!("warning: replay not written to the audit table: the database did not answer")
        }
    }
}
