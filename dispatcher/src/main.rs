//! The `dispatcher` binary: `run` consumes and sends; the other subcommands are operator tools.

use clap::{Parser, Subcommand};
use dispatcher::identities::{self, IdentityCommand};
use mailroom::broker::Topology;
use mailroom::clock::Clock;
use mailroom::config::{BrokerArgs, LogArgs, SesArgs};

#[derive(Parser, Debug)]
#[command(
    name = "dispatcher",
    version,
    about = "Mailroom's dispatcher: sends queued emails through SES, and manages SES identities",
    long_about = "Mailroom's dispatcher. `run` consumes jobs from RabbitMQ, mints each link's token, \
                  renders the templates and sends through Amazon SES v2, recording every outcome in \
                  PostgreSQL; transient failures are retried through delay queues, permanent ones \
                  dead-lettered. The other subcommands are operator tools."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume jobs and send emails until SIGTERM or Ctrl-C.
    Run(Box<dispatcher::RunConfig>),
    /// Manage SES identities: list, verify-email, verify-domain, show, delete.
    Identities {
        #[command(flatten)]
        ses: SesArgs,
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Show the SES account: sandbox or production, quota, sending rate.
    Account {
        #[command(flatten)]
        ses: SesArgs,
        /// Also check that this configuration set exists (the one the dispatcher sends with).
        #[arg(long, env = "SES_CONFIGURATION_SET")]
        configuration_set: Option<String>,
    },
    /// Inspect the dead-letter queue without consuming or reordering it.
    Dead {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Check or preview the email templates.
    Templates {
        /// Folder of the handlebars templates.
        #[arg(long, global = true, env = "TEMPLATES_DIR", default_value = mailroom::templates::DEFAULT_DIR)]
        templates_dir: std::path::PathBuf,
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Move dead letters back to the work queue: one or more jobs, an error class, or all.
    /// Each replayed job mints a fresh token when it is sent.
    Replay(ReplayArgs),
    /// The suppression list: addresses Mailroom does not mail (hard bounces, complaints,
    /// addresses an operator added). Every send checks it.
    Suppressions {
        #[command(flatten)]
        db: mailroom::config::DatabaseArgs,
        /// Endpoints told of every address added (email.suppressed).
        #[arg(long = "webhook-url", env = "WEBHOOK_URL", value_delimiter = ',')]
        webhook_urls: Vec<String>,
        #[command(subcommand)]
        command: SuppressionCommand,
    },
    /// The dispatchers sharing the SES sending rate on this database and queue prefix: each
    /// one's host, pid, last heartbeat and share.
    Status {
        #[command(flatten)]
        db: mailroom::config::DatabaseArgs,
        /// The queue prefix whose dispatchers to show.
        #[arg(long, env = "QUEUE_PREFIX", default_value = "mailroom")]
        queue_prefix: String,
    },
    /// Webhooks: check the endpoints (WEBHOOK_URL) and their signature check.
    Webhooks {
        #[command(flatten)]
        webhooks: mailroom::webhook::WebhookArgs,
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

#[derive(Subcommand, Debug)]
enum WebhooksCommand {
    /// POST a signed `ping` event to every WEBHOOK_URL now (not through the queue) and show
    /// each answer. Exits non-zero unless every endpoint answered 2xx.
    Test,
}

#[derive(Subcommand, Debug)]
enum SuppressionCommand {
    /// List suppressed addresses, newest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this reason: bounce, complaint, soft_bounce, manual or ses.
        #[arg(long, value_parser = parse_reason)]
        reason: Option<mailroom::store::SuppressionReason>,
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Stop mailing ADDRESS (audited).
    Add {
        address: String,
        /// Why: manual (default), bounce, complaint, soft_bounce or ses.
        #[arg(long, default_value = "manual", value_parser = parse_reason)]
        reason: mailroom::store::SuppressionReason,
        /// A note kept with the entry.
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// Mail ADDRESS again (audited), e.g. after the person fixed their mailbox.
    Remove { address: String },
    /// Import SES's account-level suppression list (reason `ses`); addresses already listed
    /// keep their entry. Audited.
    Sync {
        #[command(flatten)]
        ses: SesArgs,
    },
}

fn parse_reason(s: &str) -> Result<mailroom::store::SuppressionReason, String> {
    mailroom::store::SuppressionReason::parse(s).ok_or_else(|| {
        format!("unknown reason '{s}'; use bounce, complaint, soft_bounce, manual or ses")
    })
}

#[derive(Subcommand, Debug)]
enum TemplatesCommand {
    /// Compile every template in strict mode and render each email of each locale with sample
    /// data; fails on a template that does not compile or uses a name it is not given.
    Check,
    /// Print the subject, text and HTML of one email rendered with sample data.
    Render {
        /// verification, password_reset or password_changed.
        kind: String,
        /// Locale to render (falls back like a real send: pt-BR → pt → en).
        #[arg(long, default_value = "en")]
        locale: String,
    },
}

#[derive(Subcommand, Debug)]
enum DeadCommand {
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

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["job", "error_class", "all"])))]
struct ReplayArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// For the audit table (the replay itself needs only RabbitMQ).
    #[command(flatten)]
    db: mailroom::config::DatabaseArgs,
    /// Replay this job (repeatable).
    #[arg(long = "job", value_name = "JOB_ID")]
    job: Vec<String>,
    /// Replay every dead letter of this error class (permanent, retryable, render, malformed,
    /// delivery_limit).
    #[arg(long)]
    error_class: Option<String>,
    /// Replay every dead letter.
    #[arg(long)]
    all: bool,
    /// Say what would be replayed, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replays per second at most.
    #[arg(long)]
    rate: Option<f64>,
}

fn main() -> std::process::ExitCode {
    // Before the runtime's threads exist: it sets environment variables. Not for `run`: a
    // production dispatcher started from a checkout where scripts/up once ran must not pick up
    // the local stand-in's endpoint and credentials for what its environment left unset.
    if std::env::args().nth(1).as_deref() != Some("run")
        && let Some(warning) = mailroom::config::load_dotenv()
    {
        eprintln!("{warning}");
    }
    run_main()
}

#[tokio::main]
async fn run_main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn,aws_runtime=error"
    };
    mailroom::telemetry::init_with_default(cli.log.log_format, level);
    let result: anyhow::Result<()> = match cli.command {
        Command::Run(config) => {
            let sdk = mailroom::ses::load_sdk_config(&config.ses).await;
            dispatcher::run(*config, Clock::system(), sdk, mailroom::shutdown_signal()).await
        }
        Command::Identities { ses, command } => {
            // Interactive commands may use the SDK's own retries: there is no ladder here.
            let client = mailroom::ses::client(&ses, 3).await;
            identities::run(&client, command, &mut std::io::stdout())
                .await
                .map_err(anyhow::Error::from)
        }
        Command::Account {
            ses,
            configuration_set,
        } => {
            let client = mailroom::ses::client(&ses, 3).await;
            identities::account(
                &client,
                configuration_set.as_deref(),
                &mut std::io::stdout(),
            )
            .await
            .map_err(anyhow::Error::from)
        }
        Command::Dead {
            broker,
            command: DeadCommand::List { json, limit },
        } => dead_list(&broker, json, limit).await,
        Command::Replay(args) => replay(args).await,
        Command::Suppressions {
            db,
            webhook_urls,
            command,
        } => suppressions(&db, &webhook_urls, command).await,
        Command::Status { db, queue_prefix } => status(&db, &queue_prefix).await,
        Command::Webhooks {
            webhooks,
            command: WebhooksCommand::Test,
        } => dispatcher::webhooks::ping(&webhooks, &mut std::io::stdout()).await,
        Command::Templates {
            templates_dir,
            command,
        } => templates(&templates_dir, command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn connect(broker: &BrokerArgs) -> anyhow::Result<lapin::Connection> {
    mailroom::broker::connect(broker.amqp_url.expose(), "mailroom-cli")
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach RabbitMQ at {}: {e}",
                mailroom::config::redact_url(broker.amqp_url.expose())
            )
        })
}

async fn dead_list(broker: &BrokerArgs, json: bool, limit: usize) -> anyhow::Result<()> {
    let conn = connect(broker).await?;
    let topo = Topology::new(&broker.queue_prefix);
    let letters = dispatcher::dead::list(&conn, &topo, limit)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e} (has a dispatcher ever run with QUEUE_PREFIX={}?)",
                topo.dead_queue(),
                broker.queue_prefix
            )
        })?;
    let _ = conn.close(200, "done".into()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(());
    }
    if letters.is_empty() {
        println!("No dead letters in {}.", topo.dead_queue());
        return Ok(());
    }
    println!(
        "{:<36}  {:<14}  {:<30}  {:>3}  {:<14}  {:<20}  {:>3}  LAST ERROR",
        "JOB", "KIND", "RECIPIENT", "ATT", "CLASS", "DIED", "REP"
    );
    for d in &letters {
        println!(
            "{:<36}  {:<14}  {:<30}  {:>3}  {:<14}  {:<20}  {:>3}  {}",
            d.job_id.as_deref().unwrap_or("-"),
            d.kind.as_deref().unwrap_or("-"),
            d.recipient.as_deref().unwrap_or("-"),
            d.attempts,
            d.error_class,
            d.died_at.as_deref().unwrap_or("-"),
            d.replays,
            d.last_error
        );
    }
    println!("{} dead letters", letters.len());
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    use dispatcher::dead::{Filter, ReplayOptions};
    let filter = if args.all {
        Filter::All
    } else if let Some(c) = args.error_class {
        Filter::ErrorClass(c)
    } else {
        Filter::Jobs(args.job)
    };
    let conn = connect(&args.broker).await?;
    let topo = Topology::new(&args.broker.queue_prefix);
    let opts = ReplayOptions {
        filter,
        dry_run: args.dry_run,
        rate: args.rate,
    };
    let mut last_print = std::time::Instant::now();
    let report = dispatcher::dead::replay(&conn, &topo, &opts, |r| {
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
        dispatcher::dead::MAX_REPLAYS
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

async fn status(db: &mailroom::config::DatabaseArgs, prefix: &str) -> anyhow::Result<()> {
    let url = db.database_url.expose();
    let pool = mailroom::store::connect(url).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to PostgreSQL at {}: {e}",
            mailroom::config::redact_url(url)
        )
    })?;
    let members = dispatcher::rate::members(&pool, prefix).await?;
    println!(
        "{:<36}  {:<20}  {:>7}  {:>9}  {:>8}  STATE",
        "DISPATCHER", "HOST", "PID", "HEARTBEAT", "SHARE/S"
    );
    for m in &members {
        println!(
            "{:<36}  {:<20}  {:>7}  {:>7}ms  {:>8.2}  {}",
            m.id,
            m.host,
            m.pid,
            m.heartbeat_age_ms,
            m.share,
            if m.live { "live" } else { "gone" }
        );
    }
    let live: Vec<_> = members.iter().filter(|m| m.live).collect();
    println!(
        "{} live dispatcher(s) on prefix {prefix}, sending at most {:.2}/s together",
        live.len(),
        live.iter().map(|m| m.share).sum::<f64>()
    );
    Ok(())
}

async fn suppressions(
    db: &mailroom::config::DatabaseArgs,
    webhook_urls: &[String],
    command: SuppressionCommand,
) -> anyhow::Result<()> {
    use mailroom::domain::EmailAddress;
    use mailroom::store;
    let hooks = mailroom::webhook::Endpoints::parse(webhook_urls).map_err(anyhow::Error::msg)?;
    let url = db.database_url.expose();
    let pool = store::connect(url).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to PostgreSQL at {}: {e}",
            mailroom::config::redact_url(url)
        )
    })?;
    let address = |raw: &str| EmailAddress::parse(raw).map_err(|e| anyhow::anyhow!("'{raw}' {e}"));
    match command {
        SuppressionCommand::List {
            json,
            reason,
            limit,
        } => {
            let list = store::list_suppressions(&pool, reason, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("No suppressed addresses.");
            } else {
                println!(
                    "{:<40}  {:<11}  {:<20}  DETAIL",
                    "ADDRESS", "REASON", "SINCE"
                );
                for e in &list {
                    println!(
                        "{:<40}  {:<11}  {:<20}  {}",
                        e.email,
                        e.reason,
                        e.created_at.format("%Y-%m-%d %H:%M:%S"),
                        e.detail
                    );
                }
                println!("{} address(es)", list.len());
            }
        }
        SuppressionCommand::Add {
            address: raw,
            reason,
            detail,
        } => {
            let email = address(&raw)?;
            let added =
                store::suppress(&pool, &email, reason, &detail, &hooks, chrono::Utc::now()).await?;
            if added {
                store::audit(&pool, &actor(), "suppress", email.as_str(), 1).await?;
                println!(
                    "{email} is suppressed ({}): Mailroom will not mail it.",
                    reason.as_str()
                );
            } else {
                println!("{email} was already suppressed; nothing changed.");
            }
        }
        SuppressionCommand::Sync { ses } => {
            let client = mailroom::ses::client(&ses, 3).await;
            let list = mailroom::ses::suppressed_destinations(&client)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read SES's suppression list: {e}"))?;
            let new =
                store::import_ses_suppressions(&pool, &list, &hooks, chrono::Utc::now()).await?;
            store::audit(&pool, &actor(), "suppressions_sync", "", new as i64).await?;
            println!(
                "SES lists {} address(es); {new} new on Mailroom's list, {} already there.",
                list.len(),
                list.len() - new
            );
        }
        SuppressionCommand::Remove { address: raw } => {
            let email = address(&raw)?;
            if store::unsuppress(&pool, &email).await? {
                store::audit(&pool, &actor(), "unsuppress", email.as_str(), 1).await?;
                println!("{email} is no longer suppressed: mail flows to it again.");
            } else {
                anyhow::bail!("{email} is not on the suppression list");
            }
        }
    }
    pool.close().await;
    Ok(())
}

/// Who runs the command, for the audit table.
fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into())
}

fn templates(dir: &std::path::Path, command: TemplatesCommand) -> anyhow::Result<()> {
    use mailroom::templates::{EmailContext, Templates};
    let t = Templates::load(dir)?;
    match command {
        TemplatesCommand::Check => {
            let checked = t.check()?;
            for c in &checked {
                println!("ok  {c}");
            }
            println!(
                "{} emails in {} locales render in strict mode",
                checked.len(),
                t.locales().len()
            );
        }
        TemplatesCommand::Render { kind, locale } => {
            let k = mailroom::job::JobKind::parse(&kind).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown kind '{kind}': use verification, password_reset or password_changed"
                )
            })?;
            let l = mailroom::domain::Locale::parse(&locale)
                .map_err(|e| anyhow::anyhow!("--locale '{locale}' {e}"))?;
            let used = t.resolve_locale(k, &l).unwrap_or_else(|| "none".into());
            let e = t.render_email(k, &l, &EmailContext::sample())?;
            println!(
                "Locale:  {used}{}",
                if used != l.as_str() {
                    format!(" (fallback for {l})", l = l.as_str())
                } else {
                    String::new()
                }
            );
            println!("Subject: {}\n", e.subject);
            println!(
                "--- text ---\n{}\n--- html ---\n{}",
                e.text.trim_end(),
                e.html.trim_end()
            );
        }
    }
    Ok(())
}

/// Writes the replay to the audit table, as the dashboard does. Best effort: the replay already
/// happened, so a database that cannot be reached only earns a warning.
async fn audit_replay(
    db: &mailroom::config::DatabaseArgs,
    filter: &dispatcher::dead::Filter,
    replayed: &[(String, i64)],
) {
    let detail = filter.describe();
    let count = replayed.len();
    let actor = actor();
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
