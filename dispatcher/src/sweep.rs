//! The sweep: every `RETENTION_SWEEP_INTERVAL`, one dispatcher (whichever takes the leader
//! lock; the others skip that round) deletes the rows each table no longer keeps
//! ([`mailroom::policy::retention`]), reminds unverified users once after
//! `UNVERIFIED_REMINDER_AFTER`, and deletes those still unverified after
//! `UNVERIFIED_EXPIRE_AFTER` (`user.expired`). Everything runs in batches of
//! [`retention::BATCH`] rows, each its own statement or short transaction, so that signups and
//! sends never wait behind it however much there is to delete.

use std::sync::Arc;
use std::time::Duration;

use mailroom::clock::Clock;
use mailroom::config::parse_duration;
use mailroom::events::Endpoints;
use mailroom::policy::retention::{self, TABLES, Table};
use mailroom::store;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

pub use mailroom::policy::retention::Keep;
use mailroom::policy::retention::parse_keep as parse_retention;

/// The sweep's settings, as `dispatcher run` reads them. Each retention is a duration, or
/// `off` (never swept).
#[derive(clap::Args, Clone, Debug)]
pub struct SweepArgs {
    /// How often the sweep runs (retention, reminders, expiry); one dispatcher at a time does it.
    #[arg(long, env = "RETENTION_SWEEP_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub retention_sweep_interval: Duration,
    /// One reminder (a verification email with a fresh link) to users still unverified this
    /// long after their last verification email; `off`: none.
    #[arg(long, env = "UNVERIFIED_REMINDER_AFTER", default_value = "24h", value_parser = parse_retention)]
    pub unverified_reminder_after: Keep,
    /// Users still unverified this long after signing up are deleted (their name and address
    /// freed, `user.expired`); `off`: kept.
    #[arg(long, env = "UNVERIFIED_EXPIRE_AFTER", default_value = "30d", value_parser = parse_retention)]
    pub unverified_expire_after: Keep,
    /// How long the send log keeps a finished send (from its last change).
    #[arg(long, env = "RETENTION_SENDS", default_value = "90d", value_parser = parse_retention)]
    pub retention_sends: Keep,
    /// How long SES events are kept.
    #[arg(long, env = "RETENTION_SES_EVENTS", default_value = "90d", value_parser = parse_retention)]
    pub retention_ses_events: Keep,
    /// How long a job's record (`GET /v1/jobs/{id}`) is kept.
    #[arg(long, env = "RETENTION_JOBS", default_value = "90d", value_parser = parse_retention)]
    pub retention_jobs: Keep,
    /// How long reset and resend requests are kept (their limits look back an hour).
    #[arg(long, env = "RETENTION_EMAIL_REQUESTS", default_value = "25h", value_parser = parse_retention)]
    pub retention_email_requests: Keep,
    /// How long failed logins are kept (keep it above LOGIN_FAILURE_WINDOW).
    #[arg(long, env = "RETENTION_LOGIN_FAILURES", default_value = "2d", value_parser = parse_retention)]
    pub retention_login_failures: Keep,
    /// How long webhook events (and their deliveries) are kept.
    #[arg(long, env = "RETENTION_WEBHOOK_EVENTS", default_value = "30d", value_parser = parse_retention)]
    pub retention_webhook_events: Keep,
    /// How long link tokens are kept past their expiry.
    #[arg(long, env = "RETENTION_LINK_TOKENS", default_value = "1d", value_parser = parse_retention)]
    pub retention_link_tokens: Keep,
    /// How long one-time codes are kept past their expiry.
    #[arg(long, env = "RETENTION_ONE_TIME_CODES", default_value = "1d", value_parser = parse_retention)]
    pub retention_one_time_codes: Keep,
    /// How long the count of guesses at an address without a code is kept (keep it above
    /// CODE_TTL).
    #[arg(long, env = "RETENTION_CODE_MISSES", default_value = "1d", value_parser = parse_retention)]
    pub retention_code_misses: Keep,
    /// How long email changes (and their links) are kept, from their request.
    #[arg(long, env = "RETENTION_EMAIL_CHANGES", default_value = "30d", value_parser = parse_retention)]
    pub retention_email_changes: Keep,
    /// How long idempotency keys are kept past their expiry.
    #[arg(long, env = "RETENTION_IDEMPOTENCY_KEYS", default_value = "0s", value_parser = parse_retention)]
    pub retention_idempotency_keys: Keep,
    /// How long the audit log is kept.
    #[arg(long, env = "RETENTION_AUDIT_LOG", default_value = "365d", value_parser = parse_retention)]
    pub retention_audit_log: Keep,
    /// How long the row of a dispatcher that stopped is kept.
    #[arg(long, env = "RETENTION_DISPATCHERS", default_value = "7d", value_parser = parse_retention)]
    pub retention_dispatchers: Keep,
}

impl Default for SweepArgs {
    /// What the flags give when none is set (a test compares the two).
    fn default() -> Self {
        let keep = |name: &str| {
            let t = TABLES
                .iter()
                .find(|t| t.name == name)
                .expect("a swept table");
            Keep(retention::parse(t.default).expect("the defaults parse"))
        };
        Self {
            retention_sweep_interval: Duration::from_secs(3600),
            unverified_reminder_after: Keep(Some(Duration::from_secs(86_400))),
            unverified_expire_after: Keep(Some(Duration::from_secs(30 * 86_400))),
            retention_sends: keep("sends"),
            retention_ses_events: keep("ses_events"),
            retention_jobs: keep("jobs"),
            retention_email_requests: keep("email_requests"),
            retention_login_failures: keep("login_failures"),
            retention_webhook_events: keep("webhook_events"),
            retention_link_tokens: keep("link_tokens"),
            retention_one_time_codes: keep("one_time_codes"),
            retention_code_misses: keep("code_misses"),
            retention_email_changes: keep("email_changes"),
            retention_idempotency_keys: keep("idempotency_keys"),
            retention_audit_log: keep("audit_log"),
            retention_dispatchers: keep("dispatchers"),
        }
    }
}

impl SweepArgs {
    /// Each table with its retention (None: `off`), in the order of [`TABLES`].
    pub fn retentions(&self) -> Vec<(Table, Option<Duration>)> {
        TABLES
            .iter()
            .map(|t| {
                let keep = match t.name {
                    "sends" => self.retention_sends.0,
                    "ses_events" => self.retention_ses_events.0,
                    "jobs" => self.retention_jobs.0,
                    "email_requests" => self.retention_email_requests.0,
                    "login_failures" => self.retention_login_failures.0,
                    "webhook_events" => self.retention_webhook_events.0,
                    "link_tokens" => self.retention_link_tokens.0,
                    "one_time_codes" => self.retention_one_time_codes.0,
                    "code_misses" => self.retention_code_misses.0,
                    "email_changes" => self.retention_email_changes.0,
                    "idempotency_keys" => self.retention_idempotency_keys.0,
                    "audit_log" => self.retention_audit_log.0,
                    "dispatchers" => self.retention_dispatchers.0,
                    other => unreachable!("a table without a setting: {other}"),
                };
                (*t, keep)
            })
            .collect()
    }

    /// What cannot work: a zero interval, or a duration too long to subtract from now.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.retention_sweep_interval.is_zero() {
            out.push("RETENTION_SWEEP_INTERVAL must be more than 0 (e.g. 1h)".to_owned());
        }
        let mut check = |name: &str, d: Option<Duration>| {
            if d.is_some_and(|d| d > Duration::from_secs(100 * 365 * 86_400)) {
                out.push(format!("{name} must be at most 36500d (or off)"));
            }
        };
        check(
            "UNVERIFIED_REMINDER_AFTER",
            self.unverified_reminder_after.0,
        );
        check("UNVERIFIED_EXPIRE_AFTER", self.unverified_expire_after.0);
        for (t, keep) in self.retentions() {
            check(t.setting, keep);
        }
        out
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Rows deleted, per table swept.
    pub deleted: Vec<(&'static str, u64)>,
    pub reminded: usize,
    pub expired: usize,
}

/// Waits as long as the batch before took: the sweep runs at most half the time, so that on a
/// database (and a machine) shared with signups and sends it takes at most half of what they
/// would have. Without it, a backlog of three million rows on 2 cores raised the signup p99
/// tenfold while it was swept (BENCHMARKS.md, "The retention sweep against signups").
async fn yield_to_traffic(batch_took: Duration) {
    tokio::time::sleep(batch_took).await;
}

/// The sweep of one dispatcher.
pub struct Sweep {
    pub pool: PgPool,
    pub args: SweepArgs,
    pub hooks: Endpoints,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

fn ago(now: chrono::DateTime<chrono::Utc>, d: Duration) -> chrono::DateTime<chrono::Utc> {
    now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Sweep {
    /// Sweeps every `RETENTION_SWEEP_INTERVAL` until `cancel`. A failed sweep is logged and
    /// tried again at the next interval (the database may be away: nothing is lost by
    /// waiting).
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.args.retention_sweep_interval) => {}
            }
            match self.once(&cancel).await {
                Ok(Some(r)) => {
                    tracing::info!(deleted = ?r.deleted, reminded = r.reminded, expired = r.expired, "sweep done")
                }
                Ok(None) => tracing::debug!("another dispatcher is sweeping"),
                Err(e) => {
                    tracing::warn!(error = %e, "the sweep failed; it runs again at the next interval")
                }
            }
        }
    }

    /// One sweep, if this dispatcher takes the leader lock (None: another one holds it).
    /// Stops between batches once `cancel` is set.
    pub async fn once(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Option<SweepReport>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        if !store::retention::try_lead(&mut conn).await? {
            return Ok(None);
        }
        let result = self.lead(&mut conn, cancel).await;
        // Released whatever happened. If the unlock itself fails, the connection is closed
        // instead of going back to the pool: a pooled connection still holding the lock would
        // keep every other dispatcher from sweeping for as long as this one runs.
        if let Err(e) = store::retention::stop_leading(&mut conn).await {
            tracing::warn!(error = %e, "could not release the sweep's lock; closing its connection");
            drop(conn.detach());
        }
        result.map(Some)
    }

    async fn lead(
        &self,
        conn: &mut sqlx::PgConnection,
        cancel: &CancellationToken,
    ) -> Result<SweepReport, sqlx::Error> {
        let mut report = SweepReport::default();
        let now = self.clock.now();
        // Unverified users first: a reminder must not go to a user about to expire, and an
        // expired user's rows are then swept in the same round.
        if let Some(after) = self.args.unverified_expire_after.0 {
            loop {
                let gone = store::retention::expire_unverified(
                    &self.pool,
                    ago(now, after),
                    retention::BATCH,
                    &self.hooks,
                    now,
                )
                .await?;
                report.expired += gone.len();
                self.count_unverified("expired", gone.len());
                if (gone.len() as i64) < retention::BATCH || cancel.is_cancelled() {
                    break;
                }
                yield_to_traffic(Duration::from_millis(50)).await;
            }
        }
        if let Some(after) = self.args.unverified_reminder_after.0 {
            loop {
                let reminded = store::retention::remind_unverified(
                    &self.pool,
                    ago(now, after),
                    retention::BATCH,
                    now,
                )
                .await?;
                report.reminded += reminded.len();
                self.count_unverified("reminded", reminded.len());
                if (reminded.len() as i64) < retention::BATCH || cancel.is_cancelled() {
                    break;
                }
                yield_to_traffic(Duration::from_millis(50)).await;
            }
        }
        for (table, keep) in self.args.retentions() {
            let Some(keep) = keep else { continue };
            let cutoff = ago(now, keep);
            let mut total = 0;
            loop {
                let started = std::time::Instant::now();
                let n =
                    store::retention::sweep_batch(conn, &table, cutoff, retention::BATCH).await?;
                total += n;
                self.metrics
                    .retention_deleted
                    .get_or_create(&crate::metrics::TableLabel { table: table.name })
                    .inc_by(n);
                if (n as i64) < retention::BATCH || cancel.is_cancelled() {
                    break;
                }
                yield_to_traffic(started.elapsed()).await;
            }
            report.deleted.push((table.name, total));
        }
        Ok(report)
    }

    fn count_unverified(&self, outcome: &'static str, n: usize) {
        self.metrics
            .unverified
            .get_or_create(&mailroom::metrics::OutcomeLabel { outcome })
            .inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_defaults_are_the_policys() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: SweepArgs,
        }
        let parsed = P::try_parse_from(["x"]).unwrap().a;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", SweepArgs::default()));
        let off = P::try_parse_from(["x", "--retention-sends", "off"])
            .unwrap()
            .a;
        assert_eq!(off.retention_sends, Keep(None));
        assert!(P::try_parse_from(["x", "--retention-sends", "soon"]).is_err());
    }
}
