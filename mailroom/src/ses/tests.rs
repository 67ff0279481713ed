//! Error classification against the SDK's own mocks: each SES error as the real client
//! surfaces it.
use super::*;
use aws_config::retry::RetryConfig;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::operation::send_email::SendEmailError;
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
        SendEmailError::MessageRejected(MessageRejected::builder().message("unverified").build()),
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
            SendEmailError::AccountSuspendedException(AccountSuspendedException::builder().build()),
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

/// `request_production` against the SDK's mock: what it sends, and how SES's refusals read.
#[tokio::test]
async fn a_production_request_sends_the_form_and_its_refusals_are_classified() {
    use aws_sdk_sesv2::operation::put_account_details::PutAccountDetailsOutput;
    let req = ProductionRequest {
        website_url: "https://app.example.com/".into(),
        use_case: "verification and reset emails".into(),
        mail_type: "TRANSACTIONAL".into(),
        contact_language: "EN".into(),
        additional_contacts: vec!["ops@example.com".into()],
    };
    let sent = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = sent.clone();
    let ok = mock!(Client::put_account_details)
        .match_requests(move |input| {
            *seen.lock().unwrap() = Some((
                input.production_access_enabled(),
                input.mail_type().map(|m| m.as_str().to_owned()),
                input.website_url().map(str::to_owned),
                input.additional_contact_email_addresses().to_vec(),
            ));
            true
        })
        .then_output(|| PutAccountDetailsOutput::builder().build());
    let client = mock_client!(aws_sdk_sesv2, [&ok]);
    request_production(&client, &req).await.unwrap();
    assert_eq!(
        sent.lock().unwrap().clone().unwrap(),
        (
            Some(true),
            Some("TRANSACTIONAL".into()),
            Some("https://app.example.com/".into()),
            vec!["ops@example.com".to_owned()],
        )
    );
    // SES's refusals as the wire says them: a conflict (asked already) or a malformed form is
    // permanent, with SES's words; throttling is retryable.
    for (status, code, class) in [
        (409, "ConflictException", ErrorClass::Permanent),
        (400, "BadRequestException", ErrorClass::Permanent),
        (429, "TooManyRequestsException", ErrorClass::Retryable),
    ] {
        let rule = mock!(Client::put_account_details).then_http_response(move || {
            let mut r = HttpResponse::new(
                StatusCode::try_from(status).unwrap(),
                SdkBody::from(format!("{{\"message\":\"refused: {code}\"}}")),
            );
            r.headers_mut().insert("x-amzn-ErrorType", code);
            r.headers_mut().insert("content-type", "application/json");
            r
        });
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let e = request_production(&client, &req).await.unwrap_err();
        assert_eq!(e.class, class, "{code}: {e}");
        assert!(e.message.contains("refused"), "{e}");
    }
}
