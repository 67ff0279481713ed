//! `dispatcher suppressions …`: the suppression list as an operator sees it — listing, adding
//! and removing addresses (audited, webhooks told of additions) and importing SES's own
//! account-level list. The list itself is in [`mailroom::store`].

use mailroom::config::{DatabaseArgs, SesArgs};
use mailroom::domain::EmailAddress;
use mailroom::store::{self, Suppression, SuppressionReason};
use mailroom::webhook::Endpoints;
use sqlx::PgPool;

use super::connect::{self, actor};
use super::table::{Column, Table};

/// `dispatcher suppressions …`: the database holding the list, the endpoints to tell, and
/// what to do.
#[derive(clap::Args, Debug)]
pub struct SuppressionsArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Endpoints told of every address added (email.suppressed).
    #[arg(
        long = "webhook-url",
        env = "WEBHOOK_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_urls: Vec<String>,
    #[command(subcommand)]
    pub command: SuppressionCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SuppressionCommand {
    /// List suppressed addresses, newest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this reason: bounce, complaint, soft_bounce, manual or ses.
        #[arg(long, value_parser = parse_reason)]
        reason: Option<SuppressionReason>,
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Stop mailing ADDRESS (audited).
    Add {
        /// The email address to stop mailing.
        address: String,
        /// Why: manual (default), bounce, complaint, soft_bounce or ses.
        #[arg(long, default_value = "manual", value_parser = parse_reason)]
        reason: SuppressionReason,
        /// A note kept with the entry.
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// Mail ADDRESS again (audited), e.g. after the person fixed their mailbox.
    Remove {
        /// The email address to mail again.
        address: String,
    },
    /// Import SES's account-level suppression list (reason `ses`); addresses already listed
    /// keep their entry. Audited.
    Sync {
        #[command(flatten)]
        ses: SesArgs,
    },
}

fn parse_reason(s: &str) -> Result<SuppressionReason, String> {
    SuppressionReason::parse(s).ok_or_else(|| {
        format!("unknown reason '{s}'; use bounce, complaint, soft_bounce, manual or ses")
    })
}

/// Runs `dispatcher suppressions …`.
pub async fn main(args: SuppressionsArgs) -> anyhow::Result<()> {
    let hooks = Endpoints::parse(&args.webhook_urls).map_err(anyhow::Error::msg)?;
    let pool = connect::database(&args.db).await?;
    match args.command {
        SuppressionCommand::List {
            json,
            reason,
            limit,
        } => list(&pool, json, reason, limit).await?,
        SuppressionCommand::Add {
            address,
            reason,
            detail,
        } => add(&pool, &hooks, &address, reason, &detail).await?,
        SuppressionCommand::Sync { ses } => sync(&pool, &hooks, &ses).await?,
        SuppressionCommand::Remove { address } => remove(&pool, &address).await?,
    }
    pool.close().await;
    Ok(())
}

fn address(raw: &str) -> anyhow::Result<EmailAddress> {
    EmailAddress::parse(raw).map_err(|e| anyhow::anyhow!("'{raw}' {e}"))
}

async fn list(
    pool: &PgPool,
    json: bool,
    reason: Option<SuppressionReason>,
    limit: i64,
) -> anyhow::Result<()> {
    let list = store::list_suppressions(pool, reason, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("No suppressed addresses.");
    } else {
        print!("{}", table(&list));
    }
    Ok(())
}

fn table(list: &[Suppression]) -> Table {
    let mut t = Table::new([
        Column::left("ADDRESS", 40),
        Column::left("REASON", 11),
        Column::left("SINCE", 20),
        Column::last("DETAIL"),
    ])
    .counted("address(es)");
    for e in list {
        t.row([
            e.email.clone(),
            e.reason.clone(),
            e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            e.detail.clone(),
        ]);
    }
    t
}

async fn add(
    pool: &PgPool,
    hooks: &Endpoints,
    raw: &str,
    reason: SuppressionReason,
    detail: &str,
) -> anyhow::Result<()> {
    let email = address(raw)?;
    let added = store::suppress(pool, &email, reason, detail, hooks, chrono::Utc::now()).await?;
    if added {
        store::audit(pool, &actor(), "suppress", email.as_str(), 1).await?;
        println!(
            "{email} is suppressed ({}): Mailroom will not mail it.",
            reason.as_str()
        );
    } else {
        println!("{email} was already suppressed; nothing changed.");
    }
    Ok(())
}

async fn sync(pool: &PgPool, hooks: &Endpoints, ses: &SesArgs) -> anyhow::Result<()> {
    let client = connect::ses(ses).await;
    let list = mailroom::ses::suppressed_destinations(&client)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read SES's suppression list: {e}"))?;
    let new = store::import_ses_suppressions(pool, &list, hooks, chrono::Utc::now()).await?;
    store::audit(pool, &actor(), "suppressions_sync", "", new as i64).await?;
    println!(
        "SES lists {} address(es); {new} new on Mailroom's list, {} already there.",
        list.len(),
        list.len() - new
    );
    Ok(())
}

async fn remove(pool: &PgPool, raw: &str) -> anyhow::Result<()> {
    let email = address(raw)?;
    if store::unsuppress(pool, &email).await? {
        store::audit(pool, &actor(), "unsuppress", email.as_str(), 1).await?;
        println!("{email} is no longer suppressed: mail flows to it again.");
        Ok(())
    } else {
        anyhow::bail!("{email} is not on the suppression list");
    }
}
