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
    #[command(subcommand)]
    pub command: Option<AccountCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum AccountCommand {
    /// Ask SES to take the account out of the sandbox (the console's "Request production
    /// access", as PutAccountDetails). SES reviews it within about a day; `dispatcher account`
    /// shows the review's status.
    RequestProduction {
        /// The website the emails are about (SES reviewers look at it).
        #[arg(long)]
        website_url: String,
        /// How you send: who gets the emails, how addresses are collected, how bounces and
        /// complaints are handled (Mailroom's suppression list and SES feedback).
        #[arg(long)]
        use_case: String,
        /// transactional or marketing.
        #[arg(long, default_value = "transactional", value_parser = ["transactional", "marketing"])]
        mail_type: String,
        /// The language SES writes to you in: EN or JA.
        #[arg(long, default_value = "EN", value_parser = ["EN", "JA", "en", "ja"])]
        contact_language: String,
        /// Another address for SES's messages about the account; repeat for more (at most 4).
        #[arg(long = "additional-contact")]
        additional_contacts: Vec<String>,
    },
}

/// Runs `dispatcher account` from the command line.
pub async fn main(args: AccountArgs) -> anyhow::Result<()> {
    let client = super::connect::ses(&args.ses).await;
    if let Some(AccountCommand::RequestProduction {
        website_url,
        use_case,
        mail_type,
        contact_language,
        additional_contacts,
    }) = args.command
    {
        let req = production_request(
            website_url,
            use_case,
            &mail_type,
            &contact_language,
            additional_contacts,
        )?;
        ses::request_production(&client, &req).await?;
        println!(
            "Asked SES for production access ({} mail, {}). SES reviews it, usually within a \
             day; `dispatcher account` shows the review's status.",
            req.mail_type, req.website_url
        );
        return Ok(());
    }
    account(
        &client,
        args.configuration_set.as_deref(),
        &mut std::io::stdout(),
    )
    .await
    .map_err(anyhow::Error::from)
}

/// The request, checked: an absolute http(s) URL, a use case of some substance, addresses that
/// are addresses.
pub fn production_request(
    website_url: String,
    use_case: String,
    mail_type: &str,
    contact_language: &str,
    additional_contacts: Vec<String>,
) -> anyhow::Result<ses::ProductionRequest> {
    let url = url::Url::parse(website_url.trim())
        .map_err(|e| anyhow::anyhow!("--website-url {website_url:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("--website-url must be an http or https URL");
    }
    let use_case = use_case.trim().to_owned();
    if use_case.chars().count() < 20 {
        anyhow::bail!(
            "--use-case is what SES reviewers read: say in a few sentences who gets the emails \
             and how bounces and complaints are handled"
        );
    }
    if additional_contacts.len() > 4 {
        anyhow::bail!("--additional-contact: SES takes at most 4");
    }
    for a in &additional_contacts {
        mailroom::domain::EmailAddress::parse(a)
            .map_err(|e| anyhow::anyhow!("--additional-contact {a:?} {e}"))?;
    }
    Ok(ses::ProductionRequest {
        website_url: url.to_string(),
        use_case,
        mail_type: mail_type.to_ascii_uppercase(),
        contact_language: contact_language.to_ascii_uppercase(),
        additional_contacts,
    })
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
            match &a.review {
                Some((status, case)) => {
                    let case = case
                        .as_deref()
                        .map(|c| format!(" (case {c})"))
                        .unwrap_or_default();
                    let _ = writeln!(out, "production review: {status}{case}");
                }
                None if !a.production_access => {
                    let _ = writeln!(
                        out,
                        "production review: none asked for: `dispatcher account request-production`"
                    );
                }
                None => {}
            }
            if !a.production_access {
                let _ = writeln!(
                    out,
                    "sandbox limits:  only verified recipients, {} emails a day, {}/s, until \
                     production access is granted",
                    a.max_24_hour_send, a.max_send_rate
                );
            }
        }
    }
    Ok(())
}
