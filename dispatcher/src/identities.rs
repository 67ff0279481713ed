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
    /// Sending-authorization policies of an identity: who else may send from it.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum PolicyCommand {
    /// List an identity's policies with their JSON.
    List { identity: String },
    /// Create the policy NAME on IDENTITY from a JSON file, or replace it.
    Put {
        identity: String,
        name: String,
        /// The policy document (JSON).
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Delete the policy NAME from IDENTITY.
    Delete { identity: String, name: String },
}

/// A usage error of ours, reported like SES's.
fn refused(message: String) -> SesError {
    SesError {
        class: ses::ErrorClass::Permanent,
        code: None,
        message,
    }
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
            let addr =
                EmailAddress::parse(&address).map_err(|e| refused(format!("'{address}' {e}")))?;
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
                return Err(refused(format!(
                    "'{domain}' is not a domain name (e.g. example.com)"
                )));
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
        IdentityCommand::Policy(PolicyCommand::List { identity }) => {
            let policies = ses::identity_policies(client, &identity).await?;
            if policies.is_empty() {
                let _ = writeln!(out, "{identity} has no policies.");
            }
            for (name, policy) in &policies {
                let pretty = serde_json::from_str::<serde_json::Value>(policy)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or_else(|_| policy.clone());
                let _ = writeln!(out, "{name}:\n{pretty}");
            }
        }
        IdentityCommand::Policy(PolicyCommand::Put {
            identity,
            name,
            file,
        }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| refused(format!("cannot read {}: {e}", file.display())))?;
            // SES would refuse it too, but with less to go on.
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                refused(format!(
                    "{} is not a JSON policy document: {e}",
                    file.display()
                ))
            })?;
            let created = ses::put_identity_policy(client, &identity, &name, &text).await?;
            let _ = writeln!(
                out,
                "{} policy {name} on {identity}.",
                if created { "Created" } else { "Replaced" }
            );
        }
        IdentityCommand::Policy(PolicyCommand::Delete { identity, name }) => {
            ses::delete_identity_policy(client, &identity, &name).await?;
            let _ = writeln!(out, "Deleted policy {name} from {identity}.");
        }
    }
    Ok(())
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
