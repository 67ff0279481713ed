//! `dispatcher identities …`: the seed's one-off SES identity scripts as commands — list,
//! verify an address or a domain, show, delete, and sending-authorization policies. Owns only
//! presentation; the calls are in [`mailroom::ses`]. Each failure is one line saying what went
//! wrong and, where we can tell, what to do.

use std::io::Write;

use aws_sdk_sesv2::Client;
use mailroom::config::SesArgs;
use mailroom::domain::EmailAddress;
use mailroom::ses::{self, SesError};

use super::table::{Column, Table};

/// `dispatcher identities …`: the SES endpoint, and what to do there.
#[derive(clap::Args, Debug)]
pub struct IdentitiesArgs {
    #[command(flatten)]
    pub ses: SesArgs,
    #[command(subcommand)]
    pub command: IdentityCommand,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum IdentityCommand {
    /// List every identity (addresses and domains) with its verification status.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask SES to verify an email address: SES mails it a confirmation link.
    VerifyEmail {
        /// The address to verify, e.g. no-reply@example.com.
        address: String,
    },
    /// Ask SES to verify a domain, and print the DNS records (DKIM CNAMEs) to add.
    VerifyDomain {
        /// The domain to verify, e.g. example.com.
        domain: String,
    },
    /// Show one identity's verification and DKIM status.
    Show {
        /// The identity: an email address or a domain.
        name: String,
    },
    /// Delete an identity: mail can no longer be sent from it.
    Delete {
        /// The identity: an email address or a domain.
        name: String,
    },
    /// Sending-authorization policies of an identity: who else may send from it.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum PolicyCommand {
    /// List an identity's policies with their JSON.
    List {
        /// The identity: an email address or a domain.
        identity: String,
    },
    /// Create the policy NAME on IDENTITY from a JSON file, or replace it.
    Put {
        /// The identity: an email address or a domain.
        identity: String,
        /// The policy's name.
        name: String,
        /// The policy document (JSON).
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Delete the policy NAME from IDENTITY.
    Delete {
        /// The identity: an email address or a domain.
        identity: String,
        /// The policy's name.
        name: String,
    },
}

/// Runs `dispatcher identities …` from the command line.
pub async fn main(args: IdentitiesArgs) -> anyhow::Result<()> {
    let client = super::connect::ses(&args.ses).await;
    run(&client, args.command, &mut std::io::stdout())
        .await
        .map_err(anyhow::Error::from)
}

/// A usage error of ours, reported like SES's.
fn refused(message: String) -> SesError {
    SesError {
        class: ses::ErrorClass::Permanent,
        code: None,
        message,
    }
}

/// Runs one identity command against `client`, writing what it shows to `out`.
pub async fn run(
    client: &Client,
    cmd: IdentityCommand,
    out: &mut impl Write,
) -> Result<(), SesError> {
    match cmd {
        IdentityCommand::List { json } => list(client, json, out).await,
        IdentityCommand::VerifyEmail { address } => verify_email(client, &address, out).await,
        IdentityCommand::VerifyDomain { domain } => verify_domain(client, &domain, out).await,
        IdentityCommand::Show { name } => show(client, &name, out).await,
        IdentityCommand::Delete { name } => {
            ses::delete_identity(client, &name).await?;
            let _ = writeln!(out, "Deleted identity {name}.");
            Ok(())
        }
        IdentityCommand::Policy(command) => policy(client, command, out).await,
    }
}

async fn list(client: &Client, json: bool, out: &mut impl Write) -> Result<(), SesError> {
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
    let mut t = Table::new([
        Column::left("IDENTITY", w),
        Column::left("TYPE", 13),
        Column::left("STATUS", 8),
        Column::last("SENDING"),
    ])
    .counted("identities");
    for i in &ids {
        t.row([
            i.name.as_str(),
            i.kind.as_str(),
            i.verification_status.as_str(),
            if i.sending_enabled {
                "enabled"
            } else {
                "disabled"
            },
        ]);
    }
    let _ = write!(out, "{t}");
    Ok(())
}

async fn verify_email(
    client: &Client,
    address: &str,
    out: &mut impl Write,
) -> Result<(), SesError> {
    let addr = EmailAddress::parse(address).map_err(|e| refused(format!("'{address}' {e}")))?;
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
    Ok(())
}

async fn verify_domain(
    client: &Client,
    domain: &str,
    out: &mut impl Write,
) -> Result<(), SesError> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if !domain.contains('.') || domain.contains('@') || domain.contains(char::is_whitespace) {
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
    Ok(())
}

async fn show(client: &Client, name: &str, out: &mut impl Write) -> Result<(), SesError> {
    let d = ses::get_identity(client, name).await?;
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
    Ok(())
}

async fn policy(client: &Client, cmd: PolicyCommand, out: &mut impl Write) -> Result<(), SesError> {
    match cmd {
        PolicyCommand::List { identity } => {
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
        PolicyCommand::Put {
            identity,
            name,
            file,
        } => put_policy(client, &identity, &name, &file, out).await?,
        PolicyCommand::Delete { identity, name } => {
            ses::delete_identity_policy(client, &identity, &name).await?;
            let _ = writeln!(out, "Deleted policy {name} from {identity}.");
        }
    }
    Ok(())
}

async fn put_policy(
    client: &Client,
    identity: &str,
    name: &str,
    file: &std::path::Path,
    out: &mut impl Write,
) -> Result<(), SesError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| refused(format!("cannot read {}: {e}", file.display())))?;
    // SES would refuse it too, but with less to go on.
    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
        refused(format!(
            "{} is not a JSON policy document: {e}",
            file.display()
        ))
    })?;
    let created = ses::put_identity_policy(client, identity, name, &text).await?;
    let _ = writeln!(
        out,
        "{} policy {name} on {identity}.",
        if created { "Created" } else { "Replaced" }
    );
    Ok(())
}
