//! Building the SES v2 client from the shared options. The SDK's own retries are turned off
//! for sends (`sdk_retries` = 1): the dispatcher's retry ladder is the only retry, so the two
//! never stack and an attempt count means what it says.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::Region;

use crate::config::SesArgs;

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
