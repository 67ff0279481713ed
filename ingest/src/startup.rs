//! Starting and stopping ingest: [`Application::build`] makes the [`AppState`] from the
//! [`Settings`] and starts the outbox relay; [`Application::run_until_stopped`] serves HTTP
//! on the listener it was given until the shutdown future resolves, then drains open
//! connections (up to `SHUTDOWN_TIMEOUT`) and stops the relay. [`run`] does all of it from a
//! [`Config`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use mailroom::broker::Topology;
use mailroom::clock::Clock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::Config;
use crate::relay::Relay;
use crate::settings::Settings;
use crate::state::AppState;

/// How long a connection may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs ingest until `shutdown` resolves: checks the configuration (every problem at once),
/// migrates the database, starts the relay, serves HTTP on `listener`, then drains and stops.
pub async fn run(
    listener: TcpListener,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = Settings::try_from(config)?;
    Application::build(settings, clock, listener)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// A built ingest: its state, its listener and its running relay.
pub struct Application {
    listener: TcpListener,
    /// The operations listener (`INGEST_METRICS_LISTEN`), None when off.
    operations: Option<TcpListener>,
    state: Arc<AppState>,
    relay: (CancellationToken, JoinHandle<()>),
    /// Stops the relay when the application is dropped without a graceful stop (never run, or
    /// its task aborted): a relay left running would go on reconnecting, and declare the
    /// queues again after whoever owned them removed them.
    stop_relay: DropGuard,
}

impl Application {
    /// Builds the state (database, migrations, templates: see [`AppState::build`]) and starts
    /// the outbox relay. Serves nothing until [`Application::run_until_stopped`].
    pub async fn build(
        settings: Settings,
        clock: Clock,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        // Bound before anything starts, so that a taken port stops ingest at once, naming it.
        let operations = match settings.http.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr} (INGEST_METRICS_LISTEN): {e}")
            })?),
            None => None,
        };
        let state = Arc::new(AppState::build(settings, clock).await?);
        let relay = Relay {
            pool: state.pool.clone(),
            amqp_url: state.settings.broker.amqp_url.expose().to_owned(),
            heartbeat: state.settings.broker.amqp_heartbeat,
            topology: Topology::new(&state.settings.broker.queue_prefix),
            wake: state.relay_wake.clone(),
            interval: state.settings.relay_interval,
            state: state.broker_state.clone(),
            clock: state.clock.clone(),
            metrics: state.metrics.clone(),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(relay.run(cancel.clone()));
        Ok(Self {
            listener,
            operations,
            state,
            stop_relay: cancel.clone().drop_guard(),
            relay: (cancel, task),
        })
    }

    /// Where it listens (the port the listener was bound to, 0 included).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the operations listener (metrics, detailed readiness) listens, if it is on.
    pub fn operations_addr(&self) -> Option<SocketAddr> {
        self.operations.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains open connections (up to
    /// `SHUTDOWN_TIMEOUT`), stops the relay and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            operations,
            state,
            relay: (cancel, relay),
            stop_relay,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "ingest listening");
        // The operations listener lives as long as the relay: metrics stay readable while
        // connections drain. A child of the relay's token, so that dropping stops it too.
        if let Some(ops) = operations {
            tracing::info!(addr = %ops.local_addr()?, "metrics listening");
            let state = state.clone();
            tokio::spawn(mailroom::metrics::serve_pages(
                ops,
                move |path: &str| crate::routes::health::operations_page(state.clone(), path),
                cancel.child_token(),
            ));
        }
        let graceful = GracefulShutdown::new();
        serve(listener, &state, &graceful, shutdown).await;
        tracing::info!("shutting down: draining connections");
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(state.settings.http.shutdown_timeout) => {
                tracing::warn!("connections still open after the shutdown timeout; closing them");
            }
        }
        // The relay stops last: anything accepted before shutdown is already in the outbox, and
        // whatever it does not publish now the next start (or another instance) will.
        cancel.cancel();
        let _ = relay.await;
        drop(stop_relay);
        state.pool.close().await;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

/// Accepts connections until `shutdown` resolves, each served on its own task and watched by
/// `graceful`; the listener is closed on return.
async fn serve(
    listener: TcpListener,
    state: &Arc<AppState>,
    graceful: &GracefulShutdown,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // One slot per open connection, taken before accepting: past the cap, new connections
    // wait in the kernel's listen backlog instead of each costing a task and a file.
    let slots = Arc::new(tokio::sync::Semaphore::new(
        state.settings.http.max_connections,
    ));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = &mut shutdown => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually "too many open files": back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(crate::routes::handle(&state, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}
