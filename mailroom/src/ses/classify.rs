//! Sorting every failed SES call into an [`ErrorClass`]: retry it, give up on this message, or
//! pause the whole account. The rules are a table ([`RULES`]), tried in order, so that what
//! each SES error code does can be read (and audited) in one place; transport failures and
//! codes no rule names fall back to the HTTP status.

use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;

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
    /// SES refused `MAIL_FROM` itself: not a verified identity (deleted, another region, or
    /// never verified). No message can go until it is verified again.
    SenderNotVerified,
}

impl PauseReason {
    pub const ALL: [PauseReason; 5] = [
        PauseReason::Account,
        PauseReason::Quota,
        PauseReason::Credentials,
        PauseReason::Configuration,
        PauseReason::SenderNotVerified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Account => "account",
            PauseReason::Quota => "quota",
            PauseReason::Credentials => "credentials",
            PauseReason::Configuration => "configuration",
            PauseReason::SenderNotVerified => "sender_not_verified",
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

/// One classification rule: a service error whose code is one of `codes` (any code when empty)
/// and, if `message_contains` is set, whose message contains that phrase (lower case).
struct Rule {
    codes: &'static [&'static str],
    message_contains: Option<&'static str>,
    class: ErrorClass,
}

/// The rules, first match wins. Why each exists:
/// - SES v2 reports a used-up daily quota either as LimitExceeded or as throttling whose message
///   says so; the quota resets on its own, so both pause.
/// - Throttling and SES's own failures are retryable.
/// - A paused or suspended account, an unverified MAIL FROM domain, a configuration set that
///   does not exist (every send would fail alike) and bad credentials are no one message's
///   fault: pause.
/// - A rejected or invalid message fails the same way every time: permanent.
const RULES: &[Rule] = &[
    Rule {
        codes: &["LimitExceededException", "LimitExceeded"],
        message_contains: None,
        class: ErrorClass::AccountStop(PauseReason::Quota),
    },
    Rule {
        codes: &[],
        message_contains: Some("daily message quota"),
        class: ErrorClass::AccountStop(PauseReason::Quota),
    },
    Rule {
        codes: &[
            "TooManyRequestsException",
            "Throttling",
            "ThrottlingException",
            "ServiceUnavailable",
            "InternalFailure",
            "InternalServerError",
        ],
        message_contains: None,
        class: ErrorClass::Retryable,
    },
    Rule {
        codes: &["SendingPausedException", "AccountSuspendedException"],
        message_contains: None,
        class: ErrorClass::AccountStop(PauseReason::Account),
    },
    Rule {
        codes: &["MailFromDomainNotVerifiedException"],
        message_contains: None,
        class: ErrorClass::AccountStop(PauseReason::Configuration),
    },
    Rule {
        codes: &["NotFoundException", "ConfigurationSetDoesNotExist"],
        message_contains: Some("configuration set"),
        class: ErrorClass::AccountStop(PauseReason::Configuration),
    },
    Rule {
        codes: CREDENTIAL_CODES,
        message_contains: None,
        class: ErrorClass::AccountStop(PauseReason::Credentials),
    },
    Rule {
        codes: &[
            "MessageRejected",
            "BadRequestException",
            "NotFoundException",
            "InvalidParameterValue",
        ],
        message_contains: None,
        class: ErrorClass::Permanent,
    },
];

/// The class of a service error from its code, its message (lower case) and its HTTP status.
fn class_of(code: Option<&str>, message_lower: &str, status: Option<u16>) -> ErrorClass {
    let matches = |r: &&Rule| {
        (r.codes.is_empty() || code.is_some_and(|c| r.codes.contains(&c)))
            && r.message_contains.is_none_or(|m| message_lower.contains(m))
    };
    if let Some(rule) = RULES.iter().find(matches) {
        return rule.class;
    }
    match status {
        Some(429) => ErrorClass::Retryable,
        Some(s) if s >= 500 => ErrorClass::Retryable,
        // 401/403 without a code we know: an authentication or authorisation failure, which
        // no single message causes.
        Some(401 | 403) => ErrorClass::AccountStop(PauseReason::Credentials),
        _ => ErrorClass::Permanent,
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

/// Whether a rejected send was refused because the *sender* is not a verified identity, so
/// that the account, not this message, is at fault: SES's "Email address is not verified. The
/// following identities failed the check in region …: <identities>" (moto: "Email address not
/// verified <source>") naming `mail_from` or its domain as a word. The same rejection naming
/// only the recipient (SES's sandbox) stays a fault of that message.
pub fn sender_not_verified(e: &SesError, mail_from: &str) -> bool {
    if e.code.as_deref() != Some("MessageRejected") {
        return false;
    }
    let message = e.message.to_ascii_lowercase();
    if !message.contains("not verified") {
        return false;
    }
    let from = address_of(mail_from);
    let domain = from.rsplit_once('@').map(|(_, d)| d.to_owned());
    message
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '"' | '\''))
        .map(|word| word.trim_end_matches(['.', ':']))
        .any(|word| word == from || domain.as_deref() == Some(word))
}

/// The address of `MAIL_FROM` (`Name <address>` or a bare address), in lower case.
pub(crate) fn address_of(mail_from: &str) -> String {
    mail_from
        .rsplit_once('<')
        .map_or(mail_from, |(_, rest)| rest.trim_end_matches('>'))
        .trim()
        .to_ascii_lowercase()
}

/// `.classified()` on the result of any SDK call: its error as a [`SesError`].
pub trait Classified<T> {
    fn classified(self) -> Result<T, SesError>;
}

impl<T, E> Classified<T> for Result<T, SdkError<E>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn classified(self) -> Result<T, SesError> {
        self.map_err(|e| classify(&e))
    }
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
    let transport = |class, code: &str, message: String| SesError {
        class,
        code: Some(code.into()),
        message,
    };
    match err {
        SdkError::TimeoutError(_) => transport(
            ErrorClass::Retryable,
            "Timeout",
            "SES did not answer in time".into(),
        ),
        SdkError::DispatchFailure(f) => {
            let what = if f.is_timeout() {
                "timed out connecting to SES"
            } else if f.is_io() {
                "could not reach SES (connection failed)"
            } else {
                "could not send the request to SES"
            };
            transport(ErrorClass::Retryable, "Dispatch", format!("{what}: {text}"))
        }
        SdkError::ConstructionFailure(_) => transport(
            ErrorClass::Permanent,
            "Construction",
            format!("could not build the SES request: {text}"),
        ),
        SdkError::ResponseError(_) => transport(
            ErrorClass::Retryable,
            "ResponseError",
            format!("SES sent an answer that could not be read: {text}"),
        ),
        SdkError::ServiceError(se) => {
            let code = typed_code(se.err())
                .map(str::to_owned)
                .or_else(|| se.err().code().map(str::to_owned));
            let status = Some(se.raw().status().as_u16());
            // A modelled error keeps its message in its own field (shown by Display); an
            // unmodelled one in the metadata: look at both.
            let text_lower = format!("{} {}", se.err().message().unwrap_or_default(), se.err())
                .to_ascii_lowercase();
            let class = class_of(code.as_deref(), &text_lower, status);
            let detail = service_detail(se.err(), code.as_deref(), status);
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
            message: text,
        },
    }
}

/// What SES said, for the one-line message: the metadata's message, else the modelled error's
/// Display without its code, else the HTTP status.
fn service_detail<E>(err: &E, code: Option<&str>, status: Option<u16>) -> String
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let shown = err.to_string();
    err.message()
        .map(str::to_owned)
        .or_else(|| {
            // A modelled error keeps its message in its own fields; Display shows it.
            let trimmed = code
                .and_then(|c| shown.strip_prefix(c))
                .unwrap_or(&shown)
                .trim_start_matches([':', ' '])
                .to_owned();
            (!trimmed.is_empty() && trimmed != "unhandled error").then_some(trimmed)
        })
        .unwrap_or_else(|| status.map_or("no details".into(), |st| format!("HTTP status {st}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(message: &str) -> SesError {
        SesError {
            class: ErrorClass::Permanent,
            code: Some("MessageRejected".into()),
            message: format!("SES MessageRejected: {message}"),
        }
    }

    #[test]
    fn a_rejected_sender_is_told_from_a_rejected_recipient() {
        let from = "Mailroom <no-reply@example.com>";
        for (message, sender) in [
            ("Email address not verified no-reply@example.com", true),
            (
                "Email address is not verified. The following identities failed the check in region US-EAST-1: no-reply@example.com",
                true,
            ),
            (
                "Email address is not verified. The following identities failed the check in region US-EAST-1: example.com",
                true,
            ),
            // The sandbox: the recipient is not verified. Same domain, other address.
            (
                "Email address is not verified. The following identities failed the check in region US-EAST-1: bob@example.com",
                false,
            ),
            (
                "Email address is not verified: someone@elsewhere.test",
                false,
            ),
            ("Message rejected: the content", false),
        ] {
            assert_eq!(
                sender_not_verified(&rejected(message), from),
                sender,
                "{message}"
            );
        }
        let other_code = SesError {
            code: Some("BadRequestException".into()),
            ..rejected("Email address not verified no-reply@example.com")
        };
        assert!(!sender_not_verified(&other_code, from));
    }
}
