//! Amazon SES v2: building the client, sending one email, sorting every failure into an
//! [`ErrorClass`], and the identity and account calls behind `dispatcher identities`.
//! Owns the SDK's configuration. The SDK's own retries are turned off for sends
//! (`max_attempts = 1`): the dispatcher's retry ladder is the only retry, so the two never stack
//! and an attempt count means what it says.

use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::Region;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

use crate::config::SesArgs;

/// How a failed SES call should be treated by whoever made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// May succeed later: throttling, timeouts, connection errors, 5xx.
    Retryable,
    /// Will fail the same way every time for this message: rejected message, bad recipient.
    Permanent,
    /// Not the fault of one message: the account or its configuration cannot send right now.
    /// Stop taking jobs rather than burn attempts, and resume when it is fixed.
    AccountStop(PauseReason),
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::AccountStop(_) => "account_stop",
        }
    }
}

/// Why sending stopped for the whole account; the label of `mailroom_dispatcher_paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseReason {
    /// SES paused or suspended the account (`SendingPaused`, `AccountSuspended`).
    Account,
    /// The daily sending quota is used up.
    Quota,
    /// The credentials are missing, wrong, expired, or lack permission (a bad IAM deploy).
    Credentials,
    /// The sending configuration is broken (the MAIL FROM domain is not verified).
    Configuration,
}

impl PauseReason {
    pub const ALL: [PauseReason; 4] = [
        PauseReason::Account,
        PauseReason::Quota,
        PauseReason::Credentials,
        PauseReason::Configuration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Account => "account",
            PauseReason::Quota => "quota",
            PauseReason::Credentials => "credentials",
            PauseReason::Configuration => "configuration",
        }
    }
}

/// Error codes that mean the caller's identity or permissions are wrong: no message will get
/// through until someone fixes the credentials or the IAM policy.
const CREDENTIAL_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "UnrecognizedClient",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
    "NotAuthorized",
];

/// A failed SES call: its class, SES's error code where there was one, and a one-line message
/// fit for a log, a dead letter's header and an operator's terminal.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SesError {
    pub class: ErrorClass,
    pub code: Option<String>,
    pub message: String,
}

/// Sorts any SDK error. Service errors are classified by their code (the same codes on every
/// operation); transport-level failures are retryable; an unknown service error is classified
/// by its HTTP status (429 and 5xx retryable, other 4xx permanent).
pub fn classify<E>(err: &SdkError<E>) -> SesError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify_typed(err, |_| None)
}

/// [`classify`] for `SendEmail`, which also reads the modelled error variant: the variant is
/// what the SDK guarantees, the code in the metadata is only what the wire said.
pub fn classify_send(err: &SdkError<SendEmailError>) -> SesError {
    classify_typed(err, |e| {
        Some(match e {
            SendEmailError::TooManyRequestsException(_) => "TooManyRequestsException",
            SendEmailError::MessageRejected(_) => "MessageRejected",
            SendEmailError::BadRequestException(_) => "BadRequestException",
            SendEmailError::MailFromDomainNotVerifiedException(_) => {
                "MailFromDomainNotVerifiedException"
            }
            SendEmailError::NotFoundException(_) => "NotFoundException",
            SendEmailError::SendingPausedException(_) => "SendingPausedException",
            SendEmailError::AccountSuspendedException(_) => "AccountSuspendedException",
            SendEmailError::LimitExceededException(_) => "LimitExceededException",
            _ => return None,
        })
    })
}

fn classify_typed<E>(err: &SdkError<E>, typed_code: impl Fn(&E) -> Option<&'static str>) -> SesError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = chain(err);
    if !matches!(err, SdkError::ServiceError(_)) && text.to_lowercase().contains("credential") {
        return SesError {
            // Missing credentials are no fault of the message: pause (no attempt spent) and
            // resume when a credentials provider answers again.
            class: ErrorClass::AccountStop(PauseReason::Credentials),
            code: Some("Credentials".into()),
            message: "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                      or AWS_PROFILE, or run where an instance role is available"
                .into(),
        };
    }
    match err {
        SdkError::TimeoutError(_) => SesError {
            class: ErrorClass::Retryable,
            code: Some("Timeout".into()),
            message: "SES did not answer in time".into(),
        },
        SdkError::DispatchFailure(f) => {
            let what = if f.is_timeout() {
                "timed out connecting to SES"
            } else if f.is_io() {
                "could not reach SES (connection failed)"
            } else {
                "could not send the request to SES"
            };
            SesError {
                class: ErrorClass::Retryable,
                code: Some("Dispatch".into()),
                message: format!("{what}: {text}"),
            }
        }
        SdkError::ConstructionFailure(_) => SesError {
            class: ErrorClass::Permanent,
            code: Some("Construction".into()),
            message: format!("could not build the SES request: {text}"),
        },
        SdkError::ResponseError(_) => SesError {
            class: ErrorClass::Retryable,
            code: Some("ResponseError".into()),
            message: format!("SES sent an answer that could not be read: {}", chain(err)),
        },
        SdkError::ServiceError(se) => {
            let code = typed_code(se.err())
                .map(str::to_owned)
                .or_else(|| se.err().code().map(str::to_owned));
            let status = Some(se.raw().status().as_u16());
            // A modelled error keeps its message in its own field (shown by Display); an
            // unmodelled one in the metadata: look at both.
            let text_lower = format!("{} {}", se.err().message().unwrap_or_default(), se.err())
                .to_ascii_lowercase();
            let class = match code.as_deref() {
                // SES v2 reports a used-up daily quota either as LimitExceeded or as throttling
                // whose message says so; the quota resets on its own, so this is a pause.
                Some("LimitExceededException" | "LimitExceeded") => {
                    ErrorClass::AccountStop(PauseReason::Quota)
                }
                _ if text_lower.contains("daily message quota") => {
                    ErrorClass::AccountStop(PauseReason::Quota)
                }
                Some(
                    "TooManyRequestsException"
                    | "Throttling"
                    | "ThrottlingException"
                    | "ServiceUnavailable"
                    | "InternalFailure"
                    | "InternalServerError",
                ) => ErrorClass::Retryable,
                Some("SendingPausedException" | "AccountSuspendedException") => {
                    ErrorClass::AccountStop(PauseReason::Account)
                }
                Some("MailFromDomainNotVerifiedException") => {
                    ErrorClass::AccountStop(PauseReason::Configuration)
                }
                // SES's answer when SES_CONFIGURATION_SET names a set that does not exist:
                // every send would fail alike, so it is the configuration, not the message.
                Some("NotFoundException" | "ConfigurationSetDoesNotExist")
                    if text_lower.contains("configuration set") =>
                {
                    ErrorClass::AccountStop(PauseReason::Configuration)
                }
                Some(c) if CREDENTIAL_CODES.contains(&c) => {
                    ErrorClass::AccountStop(PauseReason::Credentials)
                }
                Some(
                    "MessageRejected"
                    | "BadRequestException"
                    | "NotFoundException"
                    | "InvalidParameterValue",
                ) => ErrorClass::Permanent,
                _ => match status {
                    Some(429) => ErrorClass::Retryable,
                    Some(s) if s >= 500 => ErrorClass::Retryable,
                    // 401/403 without a code we know: an authentication or authorisation
                    // failure, which no single message causes.
                    Some(401 | 403) => ErrorClass::AccountStop(PauseReason::Credentials),
                    _ => ErrorClass::Permanent,
                },
            };
            let shown = se.err().to_string();
            let detail = se
                .err()
                .message()
                .map(str::to_owned)
                .or_else(|| {
                    // A modelled error keeps its message in its own fields; Display shows it.
                    let trimmed = code
                        .as_deref()
                        .and_then(|c| shown.strip_prefix(c))
                        .unwrap_or(&shown)
                        .trim_start_matches([':', ' '])
                        .to_owned();
                    (!trimmed.is_empty() && trimmed != "unhandled error").then_some(trimmed)
                })
                .unwrap_or_else(|| {
                    status.map_or("no details".into(), |s| format!("HTTP status {s}"))
                });
            SesError {
                class,
                message: match &code {
                    Some(c) => format!("SES {c}: {detail}"),
                    None => format!("SES error: {detail}"),
                },
                code,
            }
        }
        _ => SesError {
            class: ErrorClass::Retryable,
            code: None,
            message: chain(err),
        },
    }
}

/// The error and its sources on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

/// Builds the SES v2 client from the shared options. `sdk_retries` is the SDK's own attempt
/// count: 1 for sends (our ladder retries), a few for interactive commands.
pub async fn client(args: &SesArgs, sdk_retries: u32) -> Client {
    client_from(&load_sdk_config(args).await, args, sdk_retries)
}

/// The AWS configuration from the environment: region from the options, credentials from
/// aws-config's default chain.
pub async fn load_sdk_config(args: &SesArgs) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(args.aws_region.clone()))
        .load()
        .await
}

pub fn client_from(sdk: &aws_config::SdkConfig, args: &SesArgs, sdk_retries: u32) -> Client {
    let mut conf = aws_sdk_sesv2::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(sdk_retries.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(args.ses_timeout)
                .operation_timeout(args.ses_timeout * sdk_retries.max(1))
                .build(),
        );
    if let Some(url) = &args.ses_endpoint_url {
        conf = conf.endpoint_url(url);
    }
    Client::from_conf(conf.build())
}

/// One rendered email ready to go.
pub struct OutgoingEmail<'a> {
    /// `SES_CONFIGURATION_SET`: where SES publishes this email's events (bounces,
    /// complaints, deliveries).
    pub configuration_set: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub html: &'a str,
    pub text: &'a str,
}

/// A successful send: SES's message id and how long the call took.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: String,
    pub latency: Duration,
}

pub async fn send(client: &Client, email: OutgoingEmail<'_>) -> Result<Sent, SesError> {
    let utf8 = |s: &str| {
        Content::builder()
            .data(s)
            .charset("UTF-8")
            .build()
            .expect("data is set")
    };
    let message = Message::builder()
        .subject(utf8(email.subject))
        .body(
            Body::builder()
                .html(utf8(email.html))
                .text(utf8(email.text))
                .build(),
        )
        .build();
    let started = Instant::now();
    let out = client
        .send_email()
        .from_email_address(email.from)
        .destination(Destination::builder().to_addresses(email.to).build())
        .content(EmailContent::builder().simple(message).build())
        .set_configuration_set_name(email.configuration_set.map(str::to_owned))
        .send()
        .await
        .map_err(|e| classify_send(&e))?;
    Ok(Sent {
        message_id: out.message_id().unwrap_or_default().to_owned(),
        latency: started.elapsed(),
    })
}

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
        .map_err(|e| classify(&e))?;
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
        .map_err(|e| classify(&e))?;
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
        .map_err(|e| classify(&e))?;
    Ok(IdentityDetail::new(
        name,
        out.identity_type(),
        out.verified_for_sending_status(),
        out.verification_status().map(|s| s.as_str().to_owned()),
        out.dkim_attributes(),
    ))
}

pub async fn delete_identity(client: &Client, name: &str) -> Result<(), SesError> {
    client
        .delete_email_identity()
        .email_identity(name)
        .send()
        .await
        .map_err(|e| classify(&e))?;
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
        .map_err(|e| classify(&e))?;
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
        let page = page.map_err(|e| classify(&e))?;
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
        .map_err(|e| classify(&e))?;
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
            .map_err(|e| classify(&e))?;
        return Ok(false);
    }
    client
        .create_email_identity_policy()
        .email_identity(identity)
        .policy_name(name)
        .policy(policy)
        .send()
        .await
        .map_err(|e| classify(&e))?;
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
        .map_err(|e| classify(&e))?;
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
            }))
        }
        Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => Ok(None),
        Err(e) => Err(classify(&e)),
    }
}

#[cfg(test)]
mod tests {
    //! Error classification against the SDK's own mocks: each SES error as the real client
    //! surfaces it.
    use super::*;
    use aws_sdk_sesv2::operation::send_email::SendEmailOutput;
    use aws_sdk_sesv2::types::error::*;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn email() -> OutgoingEmail<'static> {
        OutgoingEmail {
            configuration_set: None,
            from: "from@example.com",
            to: "to@example.com",
            subject: "s",
            html: "<p>h</p>",
            text: "t",
        }
    }

    async fn class_of(err: SendEmailError) -> SesError {
        let slot = std::sync::Mutex::new(Some(err));
        let rule = mock!(Client::send_email)
            .then_error(move || slot.lock().unwrap().take().expect("called once"));
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        send(&client, email()).await.unwrap_err()
    }

    async fn class_of_status(status: u16, body: &'static str) -> SesError {
        let rule = mock!(Client::send_email).then_http_response(move || {
            HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
        });
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        send(&client, email()).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_successful_send_returns_the_message_id() {
        let rule = mock!(Client::send_email)
            .then_output(|| SendEmailOutput::builder().message_id("m-1").build());
        let client = mock_client!(aws_sdk_sesv2, [&rule]);
        assert_eq!(send(&client, email()).await.unwrap().message_id, "m-1");
    }

    #[tokio::test]
    async fn throttling_is_retryable() {
        let e = class_of(SendEmailError::TooManyRequestsException(
            TooManyRequestsException::builder()
                .message("slow down")
                .build(),
        ))
        .await;
        assert_eq!(e.class, ErrorClass::Retryable);
        assert!(e.message.contains("slow down"), "{e}");
    }

    #[tokio::test]
    async fn rejected_and_invalid_messages_are_permanent() {
        for err in [
            SendEmailError::MessageRejected(
                MessageRejected::builder().message("unverified").build(),
            ),
            SendEmailError::BadRequestException(
                BadRequestException::builder()
                    .message("Illegal address")
                    .build(),
            ),
            SendEmailError::NotFoundException(NotFoundException::builder().build()),
        ] {
            let e = class_of(err).await;
            assert_eq!(e.class, ErrorClass::Permanent, "{e}");
        }
    }

    #[tokio::test]
    async fn account_level_stops_pause_with_their_reason() {
        for (err, reason) in [
            (
                SendEmailError::SendingPausedException(SendingPausedException::builder().build()),
                PauseReason::Account,
            ),
            (
                SendEmailError::AccountSuspendedException(
                    AccountSuspendedException::builder().build(),
                ),
                PauseReason::Account,
            ),
            (
                SendEmailError::LimitExceededException(LimitExceededException::builder().build()),
                PauseReason::Quota,
            ),
            (
                SendEmailError::MailFromDomainNotVerifiedException(
                    MailFromDomainNotVerifiedException::builder().build(),
                ),
                PauseReason::Configuration,
            ),
        ] {
            let e = class_of(err).await;
            assert_eq!(e.class, ErrorClass::AccountStop(reason), "{e}");
        }
    }

    #[tokio::test]
    async fn a_missing_configuration_set_pauses_but_other_not_found_errors_do_not() {
        let e = class_of(SendEmailError::NotFoundException(
            NotFoundException::builder()
                .message("Configuration set <mailroom> does not exist.")
                .build(),
        ))
        .await;
        assert_eq!(
            e.class,
            ErrorClass::AccountStop(PauseReason::Configuration),
            "{e}"
        );
        let e = class_of(SendEmailError::NotFoundException(
            NotFoundException::builder()
                .message("Template missing")
                .build(),
        ))
        .await;
        assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    }

    #[tokio::test]
    async fn a_used_up_daily_quota_reported_as_throttling_pauses() {
        let e = class_of(SendEmailError::TooManyRequestsException(
            TooManyRequestsException::builder()
                .message("Daily message quota exceeded.")
                .build(),
        ))
        .await;
        assert_eq!(e.class, ErrorClass::AccountStop(PauseReason::Quota), "{e}");
        // The same code with another message is ordinary throttling.
        let e = class_of(SendEmailError::TooManyRequestsException(
            TooManyRequestsException::builder()
                .message("Maximum sending rate exceeded.")
                .build(),
        ))
        .await;
        assert_eq!(e.class, ErrorClass::Retryable, "{e}");
    }

    /// How IAM and signature failures reach the client: an unmodelled error with the code in
    /// the `x-amzn-ErrorType` header and a JSON body, as SES v2's REST-JSON protocol sends it.
    async fn class_of_coded(status: u16, code: &'static str, message: &'static str) -> SesError {
        let rule = mock!(Client::send_email).then_http_response(move || {
            let mut r = HttpResponse::new(
                StatusCode::try_from(status).unwrap(),
                SdkBody::from(format!("{{\"message\":\"{message}\"}}")),
            );
            r.headers_mut().insert("x-amzn-ErrorType", code);
            r.headers_mut().insert("content-type", "application/json");
            r
        });
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        send(&client, email()).await.unwrap_err()
    }

    #[tokio::test]
    async fn credential_and_permission_failures_pause() {
        for (status, code) in [
            (403, "AccessDeniedException"),
            (403, "AccessDenied"),
            (403, "InvalidClientTokenId"),
            (403, "UnrecognizedClientException"),
            (403, "SignatureDoesNotMatch"),
            (403, "ExpiredTokenException"),
            (400, "ExpiredToken"),
        ] {
            let e = class_of_coded(status, code, "not allowed").await;
            assert_eq!(
                e.class,
                ErrorClass::AccountStop(PauseReason::Credentials),
                "{code}: {e}"
            );
            assert_eq!(e.code.as_deref(), Some(code));
        }
    }

    #[tokio::test]
    async fn a_quota_error_by_code_and_message_pauses() {
        let e = class_of_coded(400, "LimitExceededException", "quota").await;
        assert_eq!(e.class, ErrorClass::AccountStop(PauseReason::Quota), "{e}");
        let e = class_of_coded(429, "ThrottlingException", "Daily message quota exceeded").await;
        assert_eq!(e.class, ErrorClass::AccountStop(PauseReason::Quota), "{e}");
    }

    #[tokio::test]
    async fn the_account_suppression_list_is_read_across_pages() {
        use aws_sdk_sesv2::operation::list_suppressed_destinations::ListSuppressedDestinationsOutput;
        use aws_sdk_sesv2::types::{SuppressedDestinationSummary, SuppressionListReason};
        let entry = |email: &str, reason: SuppressionListReason| {
            SuppressedDestinationSummary::builder()
                .email_address(email)
                .reason(reason)
                .last_update_time(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .unwrap()
        };
        let first = mock!(Client::list_suppressed_destinations)
            .match_requests(|r| r.next_token().is_none())
            .then_output(move || {
                ListSuppressedDestinationsOutput::builder()
                    .suppressed_destination_summaries(entry(
                        "a@example.com",
                        SuppressionListReason::Bounce,
                    ))
                    .next_token("page-2")
                    .build()
            });
        let second = mock!(Client::list_suppressed_destinations)
            .match_requests(|r| r.next_token() == Some("page-2"))
            .then_output(move || {
                ListSuppressedDestinationsOutput::builder()
                    .suppressed_destination_summaries(entry(
                        "b@example.com",
                        SuppressionListReason::Complaint,
                    ))
                    .build()
            });
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&first, &second]);
        let list = suppressed_destinations(&client).await.unwrap();
        assert_eq!(
            list,
            vec![
                SuppressedAddress {
                    email: "a@example.com".into(),
                    reason: "BOUNCE".into()
                },
                SuppressedAddress {
                    email: "b@example.com".into(),
                    reason: "COMPLAINT".into()
                },
            ]
        );
    }

    #[tokio::test]
    async fn unlabelled_errors_are_classified_by_status() {
        assert_eq!(class_of_status(500, "").await.class, ErrorClass::Retryable);
        assert_eq!(class_of_status(503, "").await.class, ErrorClass::Retryable);
        assert_eq!(class_of_status(429, "").await.class, ErrorClass::Retryable);
        assert_eq!(class_of_status(400, "").await.class, ErrorClass::Permanent);
        assert_eq!(
            class_of_status(403, "").await.class,
            ErrorClass::AccountStop(PauseReason::Credentials)
        );
    }
}
