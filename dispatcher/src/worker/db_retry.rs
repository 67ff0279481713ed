//! Holding a step through database trouble: [`Worker::retry_db`] runs a statement until it
//! succeeds or the dispatcher shuts down, so no job fails for the database's sake.

use std::time::Duration;

use mailroom::store;

use super::Worker;

/// A step-local error: the database, which we wait out rather than fail the job for.
pub(crate) type DbResult<T> = Result<T, sqlx::Error>;

impl Worker {
    /// Runs a database call until it succeeds or the dispatcher shuts down. No database error
    /// is the fault of the job: an outage, a full disk (`53100`), a read-only replica after a
    /// failover (`25006`), a serialization failure or a broken TLS session all pass, and
    /// failing the job for them would empty the work queue into the dead letters within a
    /// minute. So the delivery is held (unacknowledged, no attempt spent) with backoff; since
    /// every step holding one keeps its permit, consumption slows to a stop by itself.
    pub async fn retry_db<T, F, Fut>(&self, mut f: F) -> DbResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = DbResult<T>>,
    {
        let mut backoff = Duration::from_millis(200);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let code = e
                        .as_database_error()
                        .and_then(|d| d.code())
                        .map(|c| c.into_owned());
                    if store::is_unavailable(&e) {
                        tracing::warn!(error = %e, retry_in = ?backoff, "database unavailable; holding the job");
                    } else {
                        tracing::error!(error = %e, sqlstate = code.as_deref().unwrap_or("-"), retry_in = ?backoff, "database error; holding the job until it passes");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.cancel.cancelled() => return Err(e),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
