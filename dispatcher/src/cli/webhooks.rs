//! `dispatcher webhooks test`: a signed `ping` to every endpoint, at once and not through the
//! queue, so an operator sees each receiver's answer (and whether it accepts the signature)
//! before real events depend on it. Deliveries themselves are a step of [`crate::worker`].

use std::io::Write;

use anyhow::Context;
use mailroom::events::{self, Ping};
use mailroom::webhook::{WebhookArgs, Webhooks};

/// `dispatcher webhooks …`: the endpoints and secrets, and what to do with them.
#[derive(clap::Args, Debug)]
pub struct WebhooksCliArgs {
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum WebhooksCommand {
    /// POST a signed `ping` event to every WEBHOOK_URL now (not through the queue) and show
    /// each answer. Exits non-zero unless every endpoint answered 2xx.
    Test,
    /// List deliveries parked because their endpoint was taken out of WEBHOOK_URL (newest
    /// first; URLs without userinfo or query). Their events are kept; nothing is sent.
    Parked {
        #[command(flatten)]
        db: mailroom::config::DatabaseArgs,
        /// How many to list at most.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// Runs `dispatcher webhooks …`.
pub async fn main(args: WebhooksCliArgs) -> anyhow::Result<()> {
    match args.command {
        WebhooksCommand::Test => ping(&args.webhooks, &mut std::io::stdout()).await,
        WebhooksCommand::Parked { db, limit } => {
            let pool = super::connect::database(&db).await?;
            let parked =
                mailroom::store::webhooks::parked(&pool, crate::worker::PARKED, limit).await?;
            let mut out = std::io::stdout();
            if parked.is_empty() {
                writeln!(out, "No parked webhook deliveries")?;
            }
            for p in &parked {
                writeln!(
                    out,
                    "{}  {}  {}  {}  {}",
                    p.parked_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    p.job_id,
                    p.event_type,
                    p.event_id,
                    events::redact_url(&p.url)
                )?;
            }
            Ok(())
        }
    }
}

/// Pings every configured endpoint; fails unless each answered 2xx.
pub async fn ping(args: &WebhookArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let hooks = Webhooks::from_args(args).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        !hooks.endpoints.is_empty(),
        "WEBHOOK_URL is not set: name the endpoint(s) to test, e.g. WEBHOOK_URL=https://example.com/hooks"
    );
    let signer = hooks.signer.as_ref().context("WEBHOOK_SECRET is not set")?;
    let http = crate::worker::webhook_client()?;
    let now = chrono::Utc::now();
    let id = events::new_event_id();
    let ping = Ping {
        message: "a test event from `dispatcher webhooks test`".into(),
    };
    let body = events::body(&ping, now);
    let mut failed = 0;
    for url in hooks.endpoints.urls() {
        let started = std::time::Instant::now();
        let request =
            crate::worker::signed_request(&http, url, &hooks, signer, &id, now.timestamp(), &body);
        let took = || format!("{} ms", started.elapsed().as_millis());
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                writeln!(
                    out,
                    "ok      {url}  HTTP {}  {}",
                    r.status().as_u16(),
                    took()
                )?;
            }
            Ok(r) => {
                failed += 1;
                let status = r.status();
                let said = r.text().await.unwrap_or_default();
                let said: String = said.trim().chars().take(200).collect();
                writeln!(out, "FAILED  {url}  HTTP {status}  {}  {said}", took())?;
            }
            Err(e) => {
                failed += 1;
                let why = if e.is_timeout() {
                    format!("no answer within {:?}", hooks.timeout)
                } else {
                    crate::worker::error_chain(&e)
                };
                writeln!(out, "FAILED  {url}  {why}")?;
            }
        }
    }
    writeln!(
        out,
        "ping {id} sent to {} endpoint(s)",
        hooks.endpoints.urls().len()
    )?;
    anyhow::ensure!(failed == 0, "{failed} endpoint(s) did not accept the ping");
    Ok(())
}
