//! The connections the operator commands open — PostgreSQL, RabbitMQ, an SES client — each
//! failing with one line that names where it tried (password redacted); and [`actor`], who
//! runs the command, for the audit table.

use mailroom::config::{BrokerArgs, DatabaseArgs, SesArgs, redact_url};

/// A pool on `DATABASE_URL`, or why not.
pub async fn database(db: &DatabaseArgs) -> anyhow::Result<sqlx::PgPool> {
    let url = db.database_url.expose();
    mailroom::store::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL at {}: {e}", redact_url(url)))
}

/// A connection to RabbitMQ (`AMQP_URL`), or why not.
pub async fn broker(broker: &BrokerArgs) -> anyhow::Result<lapin::Connection> {
    let url = broker.amqp_url.expose();
    mailroom::broker::connect_with_heartbeat(url, "mailroom-cli", broker.amqp_heartbeat)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach RabbitMQ at {}: {e}",
                redact_url(broker.amqp_url.expose())
            )
        })
}

/// An SES client for an interactive command: these may use the SDK's own retries (3
/// attempts), as there is no retry ladder here.
pub async fn ses(ses: &SesArgs) -> aws_sdk_sesv2::Client {
    mailroom::ses::client(ses, 3).await
}

/// Who runs the command, for the audit table.
pub fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into())
}
