//! The operator calls behind `dispatcher identities`, `account` and `suppressions sync`:
//! identities and their policies, configuration sets, the account, and SES's account-level
//! suppression list.

use aws_sdk_sesv2::Client;

use aws_sdk_sesv2::error::SdkError;

use super::classify::{Classified, SesError, classify};

/// One identity as `identities list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Identity {
    pub name: String,
    pub kind: String,
    pub verification_status: String,
    pub sending_enabled: bool,
}

pub async fn list_identities(client: &Client) -> Result<Vec<Identity>, SesError> {
    // The SDK's paginator follows NextToken across pages.
    let pages: Vec<_> = client
        .list_email_identities()
        .into_paginator()
        .send()
        .collect::<Result<_, _>>()
        .await
        .classified()?;
    let mut out: Vec<Identity> = pages
        .iter()
        .flat_map(|page| page.email_identities())
        .map(|i| Identity {
            name: i.identity_name().unwrap_or_default().to_owned(),
            kind: i
                .identity_type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            verification_status: i
                .verification_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|| "UNKNOWN".into()),
            sending_enabled: i.sending_enabled(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What SES said about a new or existing identity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdentityDetail {
    pub name: String,
    pub kind: String,
    pub verified_for_sending: bool,
    pub verification_status: Option<String>,
    pub dkim_status: Option<String>,
    /// DKIM tokens: each becomes a CNAME `<token>._domainkey.<domain>` →
    /// `<token>.dkim.amazonses.com`.
    pub dkim_tokens: Vec<String>,
}

impl IdentityDetail {
    fn new(
        name: &str,
        kind: Option<&aws_sdk_sesv2::types::IdentityType>,
        verified_for_sending: bool,
        verification_status: Option<String>,
        dkim: Option<&aws_sdk_sesv2::types::DkimAttributes>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            kind: kind.map(|t| t.as_str().to_owned()).unwrap_or_default(),
            verified_for_sending,
            verification_status,
            dkim_status: dkim.and_then(|d| d.status()).map(|s| s.as_str().to_owned()),
            dkim_tokens: dkim.map(|d| d.tokens().to_vec()).unwrap_or_default(),
        }
    }

    /// The DNS records to add for a domain identity, one per line.
    pub fn dns_records(&self) -> Vec<String> {
        self.dkim_tokens
            .iter()
            .map(|t| {
                format!(
                    "{t}._domainkey.{}  CNAME  {t}.dkim.amazonses.com",
                    self.name
                )
            })
            .collect()
    }
}

pub async fn create_identity(client: &Client, name: &str) -> Result<IdentityDetail, SesError> {
    let out = client
        .create_email_identity()
        .email_identity(name)
        .send()
        .await
        .classified()?;
    Ok(IdentityDetail::new(
        name,
        out.identity_type(),
        out.verified_for_sending_status(),
        None,
        out.dkim_attributes(),
    ))
}

pub async fn get_identity(client: &Client, name: &str) -> Result<IdentityDetail, SesError> {
    let out = client
        .get_email_identity()
        .email_identity(name)
        .send()
        .await
        .classified()?;
    Ok(IdentityDetail::new(
        name,
        out.identity_type(),
        out.verified_for_sending_status(),
        out.verification_status().map(|s| s.as_str().to_owned()),
        out.dkim_attributes(),
    ))
}

/// Whether `mail_from` (`Name <address>` or an address) may send: its address, or else its
/// domain, is an identity verified for sending.
pub async fn sender_verified(client: &Client, mail_from: &str) -> Result<bool, SesError> {
    let address = super::classify::address_of(mail_from);
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_owned());
    for identity in std::iter::once(address.clone()).chain(domain) {
        match get_identity(client, &identity).await {
            Ok(detail) if detail.verified_for_sending => return Ok(true),
            Ok(_) => {}
            Err(e) if e.code.as_deref() == Some("NotFoundException") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

pub async fn delete_identity(client: &Client, name: &str) -> Result<(), SesError> {
    client
        .delete_email_identity()
        .email_identity(name)
        .send()
        .await
        .classified()?;
    Ok(())
}

pub use crate::domain::SuppressedAddress;

/// SES's account-level suppression list, every page (`ListSuppressedDestinations`).
pub async fn suppressed_destinations(client: &Client) -> Result<Vec<SuppressedAddress>, SesError> {
    let pages: Vec<_> = client
        .list_suppressed_destinations()
        .into_paginator()
        .send()
        .collect::<Result<_, _>>()
        .await
        .classified()?;
    Ok(pages
        .iter()
        .flat_map(|page| page.suppressed_destination_summaries())
        .map(|d| SuppressedAddress {
            email: d.email_address().to_owned(),
            reason: d.reason().as_str().to_owned(),
        })
        .collect())
}

/// Whether the configuration set `name` exists. Read from `ListConfigurationSets` (moto's
/// `GetConfigurationSet` answer does not parse; the list is small).
pub async fn configuration_set_exists(client: &Client, name: &str) -> Result<bool, SesError> {
    let mut pages = client.list_configuration_sets().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.classified()?;
        if page.configuration_sets().iter().any(|c| c == name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// An identity's sending-authorization policies, by name (the policy is JSON text).
pub async fn identity_policies(
    client: &Client,
    identity: &str,
) -> Result<std::collections::BTreeMap<String, String>, SesError> {
    let out = client
        .get_email_identity_policies()
        .email_identity(identity)
        .send()
        .await
        .classified()?;
    Ok(out
        .policies()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Creates the policy `name` on `identity`, or replaces it when it exists. Returns true when it
/// was created. (Asks first: SES refuses to create an existing policy, and stand-ins differ.)
pub async fn put_identity_policy(
    client: &Client,
    identity: &str,
    name: &str,
    policy: &str,
) -> Result<bool, SesError> {
    if identity_policies(client, identity)
        .await?
        .contains_key(name)
    {
        client
            .update_email_identity_policy()
            .email_identity(identity)
            .policy_name(name)
            .policy(policy)
            .send()
            .await
            .classified()?;
        return Ok(false);
    }
    client
        .create_email_identity_policy()
        .email_identity(identity)
        .policy_name(name)
        .policy(policy)
        .send()
        .await
        .classified()?;
    Ok(true)
}

pub async fn delete_identity_policy(
    client: &Client,
    identity: &str,
    name: &str,
) -> Result<(), SesError> {
    client
        .delete_email_identity_policy()
        .email_identity(identity)
        .policy_name(name)
        .send()
        .await
        .classified()?;
    Ok(())
}

/// The account as `GetAccount` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Account {
    pub production_access: bool,
    pub sending_enabled: bool,
    pub enforcement_status: Option<String>,
    pub max_24_hour_send: f64,
    pub sent_last_24_hours: f64,
    pub max_send_rate: f64,
    /// The review of a request for production access (`Details.ReviewDetails`): its status
    /// (`PENDING`, `GRANTED`, `DENIED`, `FAILED`) and case id, once one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<(String, Option<String>)>,
}

/// `Ok(None)` when the endpoint does not implement `GetAccount` (moto answers 404), so that
/// callers can say "unavailable" rather than fail.
pub async fn get_account(client: &Client) -> Result<Option<Account>, SesError> {
    match client.get_account().send().await {
        Ok(out) => {
            let q = out.send_quota();
            Ok(Some(Account {
                production_access: out.production_access_enabled(),
                sending_enabled: out.sending_enabled(),
                enforcement_status: out.enforcement_status().map(str::to_owned),
                max_24_hour_send: q.map_or(0.0, |q| q.max24_hour_send()),
                sent_last_24_hours: q.map_or(0.0, |q| q.sent_last24_hours()),
                max_send_rate: q.map_or(0.0, |q| q.max_send_rate()),
                review: out.details().and_then(|d| d.review_details()).map(|r| {
                    (
                        r.status().map_or("UNKNOWN", |s| s.as_str()).to_owned(),
                        r.case_id().map(str::to_owned),
                    )
                }),
            }))
        }
        Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => Ok(None),
        Err(e) => Err(classify(&e)),
    }
}

/// What "Request production access" asks SES (`PutAccountDetails`).
#[derive(Debug, Clone)]
pub struct ProductionRequest {
    pub website_url: String,
    pub use_case: String,
    /// `TRANSACTIONAL` or `MARKETING`.
    pub mail_type: String,
    /// `EN` or `JA`.
    pub contact_language: String,
    pub additional_contacts: Vec<String>,
}

/// Asks SES to take the account out of the sandbox: the console's "Request production
/// access" form, as one call. SES answers at once; the review takes about a day (its status is
/// in [`get_account`]'s `review`).
pub async fn request_production(client: &Client, req: &ProductionRequest) -> Result<(), SesError> {
    use aws_sdk_sesv2::types::{ContactLanguage, MailType};
    client
        .put_account_details()
        .production_access_enabled(true)
        .website_url(&req.website_url)
        .use_case_description(&req.use_case)
        .mail_type(MailType::from(req.mail_type.as_str()))
        .contact_language(ContactLanguage::from(req.contact_language.as_str()))
        .set_additional_contact_email_addresses(
            (!req.additional_contacts.is_empty()).then(|| req.additional_contacts.clone()),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify(&e))
}
