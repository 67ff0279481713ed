//! `dispatcher account`: the SES account as the dispatcher sees it — sandbox or production,
//! sending enabled or paused, the 24-hour quota and the sending rate — and whether the
//! configuration set it sends with exists. The calls are in [`mailroom::ses`].

use std::io::Write;

use aws_sdk_sesv2::Client;
use mailroom::config::SesArgs;
use mailroom::ses::{self, SesError};

/// `dispatcher account`: the SES endpoint, and the configuration set to check.
#[derive(clap::Args, Debug)]
pub struct AccountArgs {
    #[command(flatten)]
    pub ses: SesArgs,
    /// Also check that this configuration set exists (the one the dispatcher sends with).
    #[arg(long, env = "SES_CONFIGURATION_SET")]
    pub configuration_set: Option<String>,
}

/// Runs `dispatcher account` from the command line.
pub async fn main(args: AccountArgs) -> anyhow::Result<()> {
    let client = super::connect::ses(&args.ses).await;
    account(
        &client,
        args.configuration_set.as_deref(),
        &mut std::io::stdout(),
    )
    .await
    .map_err(anyhow::Error::from)
}

/// `dispatcher account`: the sending quota and status, or why it cannot be shown; and whether
/// the configuration set the dispatcher sends with exists.
pub async fn account(
    client: &Client,
    configuration_set: Option<&str>,
    out: &mut impl Write,
) -> Result<(), SesError> {
    if let Some(name) = configuration_set.filter(|n| !n.trim().is_empty()) {
        if ses::configuration_set_exists(client, name).await? {
            let _ = writeln!(out, "configuration set: {name} (exists)");
        } else {
            let _ = writeln!(
                out,
                "configuration set: {name} is MISSING: SES refuses sends that name it. Create it \
                 (docs/api.md: Bounces and complaints) or unset SES_CONFIGURATION_SET."
            );
        }
    }
    match ses::get_account(client).await? {
        None => {
            let _ = writeln!(
                out,
                "This SES endpoint does not report the account (GetAccount is not implemented; moto does not). The dispatcher then sends at MAX_SEND_RATE (default 14/s)."
            );
        }
        Some(a) => {
            let _ = writeln!(
                out,
                "access:          {}",
                if a.production_access {
                    "production"
                } else {
                    "sandbox (verified recipients only)"
                }
            );
            let _ = writeln!(
                out,
                "sending:         {}",
                if a.sending_enabled {
                    "enabled"
                } else {
                    "PAUSED"
                }
            );
            if let Some(s) = &a.enforcement_status {
                let _ = writeln!(out, "enforcement:     {s}");
            }
            let _ = writeln!(
                out,
                "24-hour quota:   {} of {} used",
                a.sent_last_24_hours, a.max_24_hour_send
            );
            let _ = writeln!(out, "max send rate:   {}/s", a.max_send_rate);
        }
    }
    Ok(())
}
