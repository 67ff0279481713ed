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
    /// Will fail the same way every time: rejected message, bad address, unverified sender.
    Permanent,
    /// The whole account cannot send right now (paused, suspended, daily quota): stop taking
    /// jobs rather than burn attempts.
    AccountStop,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::AccountStop => "account_stop",
        }
    }
}

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
            // Missing credentials will not fix themselves between attempts, but a credentials
            // provider that is briefly unavailable (instance metadata) might: retryable.
            class: ErrorClass::Retryable,
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
            let class = match code.as_deref() {
                Some(
                    "TooManyRequestsException"
                    | "Throttling"
                    | "ThrottlingException"
                    | "ServiceUnavailable"
                    | "InternalFailure"
                    | "InternalServerError",
                ) => ErrorClass::Retryable,
                Some(
                    "SendingPausedException"
                    | "AccountSuspendedException"
                    | "LimitExceededException",
                ) => ErrorClass::AccountStop,
                Some(
                    "MessageRejected"
                    | "BadRequestException"
                    | "MailFromDomainNotVerifiedException"
                    | "NotFoundException"
                    | "InvalidParameterValue",
                ) => ErrorClass::Permanent,
                _ => match status {
                    Some(429) => ErrorClass::Retryable,
                    Some(s) if s >= 500 => ErrorClass::Retryable,
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
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = client
            .list_email_identities()
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| classify(&e))?;
        for i in page.email_identities() {
            out.push(Identity {
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
            });
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_owned()),
            _ => break,
        }
    }
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
            SendEmailError::BadRequestException(BadRequestException::builder().build()),
            SendEmailError::MailFromDomainNotVerifiedException(
                MailFromDomainNotVerifiedException::builder().build(),
            ),
            SendEmailError::NotFoundException(NotFoundException::builder().build()),
        ] {
            let e = class_of(err).await;
            assert_eq!(e.class, ErrorClass::Permanent, "{e}");
        }
    }

    #[tokio::test]
    async fn account_level_stops_are_account_stops() {
        for err in [
            SendEmailError::SendingPausedException(SendingPausedException::builder().build()),
            SendEmailError::AccountSuspendedException(AccountSuspendedException::builder().build()),
            SendEmailError::LimitExceededException(LimitExceededException::builder().build()),
        ] {
            let e = class_of(err).await;
            assert_eq!(e.class, ErrorClass::AccountStop, "{e}");
        }
    }

    #[tokio::test]
    async fn unlabelled_errors_are_classified_by_status() {
        assert_eq!(class_of_status(500, "").await.class, ErrorClass::Retryable);
        assert_eq!(class_of_status(503, "").await.class, ErrorClass::Retryable);
        assert_eq!(class_of_status(429, "").await.class, ErrorClass::Retryable);
        assert_eq!(class_of_status(403, "").await.class, ErrorClass::Permanent);
    }
}
