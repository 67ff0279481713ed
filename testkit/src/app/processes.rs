//! Starting a [`TestApp`]'s services: ingest in a task of its own ([`spawn_ingest`]), and the
//! real dispatcher binary wired to the test's database, queues and SES endpoint
//! ([`TestApp::dispatcher_command`]).

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use mailroom::clock::Clock;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TestApp;

impl TestApp {
    /// `dispatcher run`, the real binary, on this test's database, queues, sender and SES
    /// endpoint (moto's, or the proxy's), with moto's throwaway credentials, no metrics
    /// listener and only warnings logged. Callers add what their test varies (a later `env`
    /// of the same name wins) and spawn it.
    pub fn dispatcher_command(&self) -> Command {
        let mut c = Command::new(crate::bin_path("dispatcher"));
        c.arg("run")
            .env("DATABASE_URL", &self.db.url)
            .env("AMQP_URL", &self.amqp_url)
            .env("QUEUE_PREFIX", &self.queues.prefix)
            .env("MAIL_FROM", &self.sender)
            .env("PUBLIC_URL", &self.base)
            .env("SES_ENDPOINT_URL", &self.ses_endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("DISPATCHER_METRICS_LISTEN", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        c
    }
}

/// Builds and runs an ingest on `listener` in a task of its own. Gives back the address of its
/// operations listener (None when the build failed: the task's result says why), and what stops
/// it.
pub(super) async fn spawn_ingest(
    listener: tokio::net::TcpListener,
    config: ingest::Config,
    clock: Clock,
) -> (
    Option<SocketAddr>,
    CancellationToken,
    JoinHandle<anyhow::Result<()>>,
) {
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stop = cancel.clone();
    let handle = tokio::spawn(async move {
        let settings = ingest::Settings::try_from(config)?;
        let app = ingest::Application::build(settings, clock, listener).await?;
        let _ = tx.send(app.operations_addr());
        app.run_until_stopped(stop.cancelled_owned()).await
    });
    (rx.await.ok().flatten(), cancel, handle)
}
