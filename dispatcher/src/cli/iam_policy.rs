//! `dispatcher iam-policy`: the least-privilege IAM policy for *this* configuration — the
//! policies of `docs/iam/` (built into the binary) with their placeholders filled: the region,
//! the account id (from STS's GetCallerIdentity with the credentials the dispatcher would use,
//! or `--account-id`), `MAIL_FROM`'s identity and the configuration set. So nobody copies
//! `ses:*` again.

use std::io::Write;

use mailroom::config::SesArgs;
use serde_json::Value;

const DISPATCHER: &str = include_str!("../../../docs/iam/dispatcher-policy.json");
const OPERATOR: &str = include_str!("../../../docs/iam/operator-policy.json");

/// `dispatcher iam-policy`.
#[derive(clap::Args, Debug)]
pub struct IamPolicyArgs {
    #[command(flatten)]
    pub ses: SesArgs,
    /// The sender: the dispatcher may send as its address and its domain's identity only.
    #[arg(long, env = "MAIL_FROM")]
    pub mail_from: String,
    /// The configuration set the dispatcher names on every send. Unset: none in the policy.
    #[arg(long, env = "SES_CONFIGURATION_SET")]
    pub configuration_set: Option<String>,
    /// The 12-digit AWS account id. Default: asked of STS (GetCallerIdentity) with the
    /// credentials the dispatcher would use (SES_ENDPOINT_URL, when set, serves STS too).
    #[arg(long)]
    pub account_id: Option<String>,
    /// The operators' policy (identities, account, suppressions) instead of the dispatcher's.
    #[arg(long)]
    pub operator: bool,
}

/// Runs `dispatcher iam-policy`: the policy as JSON on stdout.
pub async fn main(args: IamPolicyArgs) -> anyhow::Result<()> {
    let account = match &args.account_id {
        Some(id) => check_account_id(id)?,
        None => caller_account(&args.ses).await?,
    };
    let policy = fill(
        if args.operator { OPERATOR } else { DISPATCHER },
        &Filled {
            region: &args.ses.aws_region,
            account: &account,
            mail_from: args.mail_from.trim(),
            configuration_set: args.configuration_set.as_deref().map(str::trim),
        },
    )?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", serde_json::to_string_pretty(&policy)?)?;
    Ok(())
}

fn check_account_id(id: &str) -> anyhow::Result<String> {
    let id = id.trim();
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_owned())
    } else {
        anyhow::bail!("--account-id must be the 12-digit AWS account id, e.g. 123456789012")
    }
}

/// The account of the credentials in use, from STS.
async fn caller_account(ses: &SesArgs) -> anyhow::Result<String> {
    let sdk = mailroom::ses::load_sdk_config(ses).await;
    let mut conf = aws_sdk_sts::config::Builder::from(&sdk);
    if let Some(url) = &ses.ses_endpoint_url {
        conf = conf.endpoint_url(url);
    }
    let sts = aws_sdk_sts::Client::from_conf(conf.build());
    let who = sts.get_caller_identity().send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot ask STS for the account id ({}); pass --account-id",
            aws_sdk_sts::error::DisplayErrorContext(&e)
        )
    })?;
    let account = who
        .account()
        .ok_or_else(|| anyhow::anyhow!("STS did not say the account id; pass --account-id"))?;
    check_account_id(account)
}

/// What goes into the placeholders.
pub struct Filled<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub mail_from: &'a str,
    pub configuration_set: Option<&'a str>,
}

/// The policy `template` with `REGION`, `ACCOUNT_ID`, the example identity and configuration
/// set replaced. The sender's identity is its domain and, for an address, the address too
/// (SES authorises a send against whichever identity verified it); without a configuration
/// set its resource goes.
pub fn fill(template: &str, f: &Filled<'_>) -> anyhow::Result<Value> {
    let domain = f
        .mail_from
        .rsplit_once('@')
        .map_or(f.mail_from, |(_, d)| d)
        .to_ascii_lowercase();
    if domain.is_empty() || !domain.contains('.') {
        anyhow::bail!(
            "MAIL_FROM {:?} has no domain to name in the policy",
            f.mail_from
        );
    }
    let arn = |what: &str| format!("arn:aws:ses:{}:{}:{what}", f.region, f.account);
    let mut policy: Value = serde_json::from_str(template)?;
    for statement in policy["Statement"].as_array_mut().into_iter().flatten() {
        let resources: Vec<String> = match &statement["Resource"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => continue,
        };
        let mut filled = Vec::new();
        for r in resources {
            if r == "*" {
                filled.push(r);
            } else if r.ends_with(":identity/example.com") {
                filled.push(arn(&format!("identity/{domain}")));
                if f.mail_from.contains('@') {
                    filled.push(arn(&format!("identity/{}", f.mail_from)));
                }
            } else if r.contains(":configuration-set/") {
                if let Some(set) = f.configuration_set.filter(|s| !s.is_empty()) {
                    filled.push(arn(&format!("configuration-set/{set}")));
                }
            } else {
                filled.push(
                    r.replace("REGION", f.region)
                        .replace("ACCOUNT_ID", f.account),
                );
            }
        }
        statement["Resource"] = match filled.as_slice() {
            [one] => Value::String(one.clone()),
            _ => Value::Array(filled.into_iter().map(Value::String).collect()),
        };
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(p: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for s in p["Statement"].as_array().unwrap() {
            match &s["Resource"] {
                Value::String(r) => out.push(r.clone()),
                Value::Array(a) => out.extend(a.iter().map(|v| v.as_str().unwrap().to_owned())),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn the_placeholders_are_filled_and_nothing_else_is_granted() {
        let f = Filled {
            region: "eu-west-1",
            account: "111122223333",
            mail_from: "no-reply@mail.example.org",
            configuration_set: Some("mailroom-events"),
        };
        let p = fill(DISPATCHER, &f).unwrap();
        assert_eq!(
            resources(&p),
            [
                "arn:aws:ses:eu-west-1:111122223333:identity/mail.example.org",
                "arn:aws:ses:eu-west-1:111122223333:identity/no-reply@mail.example.org",
                "arn:aws:ses:eu-west-1:111122223333:configuration-set/mailroom-events",
                "*",
            ]
        );
        let text = p.to_string();
        assert!(
            !text.contains("REGION") && !text.contains("ACCOUNT_ID") && !text.contains("ses:*")
        );
        // Without a configuration set, its resource goes.
        let p = fill(
            DISPATCHER,
            &Filled {
                configuration_set: None,
                ..f
            },
        )
        .unwrap();
        assert!(!p.to_string().contains("configuration-set"));
        let op = fill(OPERATOR, &f).unwrap();
        assert!(
            op.to_string()
                .contains("arn:aws:ses:eu-west-1:111122223333:identity/*")
        );
        assert!(
            fill(
                DISPATCHER,
                &Filled {
                    mail_from: "nobody",
                    ..f
                }
            )
            .is_err()
        );
        assert!(check_account_id("12345").is_err() && check_account_id("123456789012").is_ok());
    }
}
