//! `dispatcher status`: the dispatchers sharing the SES sending rate on one database and queue
//! prefix, as registered in PostgreSQL (see [`crate::rate`]), and the rate they add up to.

use crate::rate::Member;
use mailroom::config::DatabaseArgs;

use super::connect;
use super::table::{Column, Table};

/// `dispatcher status`: where the dispatchers register, and which of them to show.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// The queue prefix whose dispatchers to show.
    #[arg(long, env = "QUEUE_PREFIX", default_value = "mailroom")]
    pub queue_prefix: String,
}

/// Runs `dispatcher status`.
pub async fn main(args: StatusArgs) -> anyhow::Result<()> {
    let prefix = &args.queue_prefix;
    let pool = connect::database(&args.db).await?;
    let members = crate::rate::members(&pool, prefix).await?;
    print!("{}", table(&members));
    let live: Vec<_> = members.iter().filter(|m| m.live).collect();
    println!(
        "{} live dispatcher(s) on prefix {prefix}, sending at most {:.2}/s together",
        live.len(),
        live.iter().map(|m| m.share).sum::<f64>()
    );
    Ok(())
}

fn table(members: &[Member]) -> Table {
    let mut t = Table::new([
        Column::left("DISPATCHER", 36),
        Column::left("HOST", 20),
        Column::right("PID", 7),
        Column::right("HEARTBEAT", 9),
        Column::right("SHARE/S", 8),
        Column::last("STATE"),
    ]);
    for m in members {
        t.row([
            m.id.to_string(),
            m.host.clone(),
            m.pid.to_string(),
            format!("{}ms", m.heartbeat_age_ms),
            format!("{:.2}", m.share),
            (if m.live { "live" } else { "gone" }).to_string(),
        ]);
    }
    t
}
