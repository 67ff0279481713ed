//! `dispatcher identities …` and `dispatcher account`: the seed's one-off SES scripts as
//! commands. Owns only presentation; the calls are in [`mailroom::ses`]. Each failure is one
//! line saying what went wrong and, where we can tell, what to do.

use std::io::Write;

use aws_sdk_sesv2::Client;
use mailroom::domain::EmailAddress;
use mailroom::ses::{self, SesError};

#[derive(clap::Subcommand, Clone, Debug)]
pub enum IdentityCommand {
    /// List every identity (addresses and domains) with its verification status.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask SES to verify an email address: SES mails it a confirmation link.
    VerifyEmail { address: String },
    /// Ask SES to verify a domain, and print the DNS records (DKIM CNAMEs) to add.
    VerifyDomain { domain: String },
    /// Show one identity's verification and DKIM status.
    Show { name: String },
    /// Delete an identity: mail can no longer be sent from it.
    Delete { name: String },
}

pub async fn run(
    client: &Client,
    cmd: IdentityCommand,
    out: &mut impl Write,
) -> Result<(), SesError> {
    match cmd {
        IdentityCommand::List { json } => {
            let ids = ses::list_identities(client).await?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&ids).expect("serialises")
                );
                return Ok(());
            }
            if ids.is_empty() {
                let _ = writeln!(
                    out,
                    "No identities. Add one with `dispatcher identities verify-email ADDRESS` or `verify-domain DOMAIN`."
                );
                return Ok(());
            }
            let w = ids.iter().map(|i| i.name.len()).max().unwrap_or(8).max(8);
            let _ = writeln!(
                out,
                "{:<w$}  {:<13}  {:<8}  SENDING",
                "IDENTITY", "TYPE", "STATUS"
            );
            for i in &ids {
                let _ = writeln!(
                    out,
                    "{:<w$}  {:<13}  {:<8}  {}",
                    i.name,
                    i.kind,
                    i.verification_status,
                    if i.sending_enabled {
                        "enabled"
                    } else {
                        "disabled"
                    }
                );
            }
            let _ = writeln!(out, "{} identities", ids.len());
        }
        IdentityCommand::VerifyEmail { address } => {
            let addr = EmailAddress::parse(&address).map_err(|e| SesError {
                class: ses::ErrorClass::Permanent,
                code: None,
                message: format!("'{address}' {e}"),
            })?;
            let d = ses::create_identity(client, addr.as_str()).await?;
            if d.verified_for_sending {
                let _ = writeln!(out, "{} is verified and can send.", d.name);
            } else {
                let _ = writeln!(
                    out,
                    "SES sent a confirmation link to {}. Open it, then check with `dispatcher identities show {}`.",
                    d.name, d.name
                );
            }
        }
        IdentityCommand::VerifyDomain { domain } => {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !domain.contains('.') || domain.contains('@') || domain.contains(char::is_whitespace)
            {
                return Err(SesError {
                    class: ses::ErrorClass::Permanent,
                    code: None,
                    message: format!("'{domain}' is not a domain name (e.g. example.com)"),
                });
            }
            let d = ses::create_identity(client, &domain).await?;
            let _ = writeln!(
                out,
                "Domain identity {} created (DKIM status: {}).",
                d.name,
                d.dkim_status.as_deref().unwrap_or("unknown")
            );
            if d.dkim_tokens.is_empty() {
                let _ = writeln!(
                    out,
                    "SES returned no DKIM tokens. Run `dispatcher identities show {}` in a few minutes; \
                     if it still has none, open the identity in the SES console to get its DNS records \
                     (endpoints such as moto never return them).",
                    d.name
                );
            } else {
                let _ = writeln!(
                    out,
                    "Add these DNS records; SES verifies the domain once they resolve:"
                );
                for r in d.dns_records() {
                    let _ = writeln!(out, "  {r}");
                }
            }
        }
        IdentityCommand::Show { name } => {
            let d = ses::get_identity(client, &name).await?;
            let _ = writeln!(out, "identity:             {}", d.name);
            let _ = writeln!(out, "type:                 {}", d.kind);
            let _ = writeln!(
                out,
                "verification status:  {}",
                d.verification_status.as_deref().unwrap_or("unknown")
            );
            let _ = writeln!(
                out,
                "verified for sending: {}",
                if d.verified_for_sending { "yes" } else { "no" }
            );
            let _ = writeln!(
                out,
                "DKIM status:          {}",
                d.dkim_status.as_deref().unwrap_or("unknown")
            );
            for r in d.dns_records() {
                let _ = writeln!(out, "DNS record:           {r}");
            }
        }
        IdentityCommand::Delete { name } => {
            ses::delete_identity(client, &name).await?;
            let _ = writeln!(out, "Deleted identity {name}.");
        }
    }
    Ok(())
}

/// `dispatcher account`: the sending quota and status, or why it cannot be shown.
pub async fn account(client: &Client, out: &mut impl Write) -> Result<(), SesError> {
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
