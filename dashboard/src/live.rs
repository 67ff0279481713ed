//! The live [`DataSource`]: PostgreSQL for sends and users, RabbitMQ for queues and dead
//! letters (the management HTTP API when it answers, AMQP passive declares otherwise), SES for
//! the account, the dispatcher's metrics for its pause state. Actions go through the same
//! library functions as the CLI and the API, and are written to the audit table.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lapin::Connection;
use mailroom::broker::{self, Topology};
use mailroom::dead::{self, ReplayOptions};
use mailroom::domain::EmailAddress;
use mailroom::job::JobKind;
use mailroom::store::{self, AddressLimits};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::data::{
    AccountInfo, Action, Activity, DataSource, Feedback, QueueStat, SendRow, Source, Today, Update,
    UserRow, Users,
};

pub struct LiveSource {
    pub pool: PgPool,
    pub amqp_url: String,
    pub topology: Topology,
    pub retry_delays: Vec<std::time::Duration>,
    pub ses: aws_sdk_sesv2::Client,
    /// e.g. http://guest:guest@127.0.0.1:15672; None to use AMQP only.
    pub management_url: Option<String>,
    pub dispatcher_metrics_url: Option<String>,
    pub http: reqwest::Client,
    /// The OS user, for the audit table.
    pub actor: String,
    /// Limits for the resend action, as ingest applies them.
    pub limits: AddressLimits,
    conn: Mutex<Option<Arc<Connection>>>,
}

impl LiveSource {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        amqp_url: String,
        topology: Topology,
        retry_delays: Vec<std::time::Duration>,
        ses: aws_sdk_sesv2::Client,
        management_url: Option<String>,
        dispatcher_metrics_url: Option<String>,
        actor: String,
        limits: AddressLimits,
    ) -> Self {
        Self {
            pool,
            amqp_url,
            topology,
            retry_delays,
            ses,
            management_url,
            dispatcher_metrics_url,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("http client"),
            actor,
            limits,
            conn: Mutex::new(None),
        }
    }

    /// The broker connection, made (again) on demand.
    async fn connection(&self) -> Result<Arc<Connection>, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| c.status().connected()) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            broker::connect(&self.amqp_url, "mailroom-dashboard")
                .await
                .map_err(|e| e.to_string())?,
        );
        *guard = Some(c.clone());
        Ok(c)
    }

    /// A queue's name without the prefix, as the dashboard shows it.
    fn short<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(&self.topology.prefix)
            .and_then(|n| n.strip_prefix('.'))
            .unwrap_or(name)
    }

    fn queue_names(&self) -> Vec<String> {
        let mut names = vec![self.topology.work_queue()];
        names.extend(
            self.retry_delays
                .iter()
                .map(|d| self.topology.retry_queue(*d)),
        );
        names.push(self.topology.dead_queue());
        names
    }

    async fn queues(&self) -> Result<Vec<QueueStat>, String> {
        // The management API knows unacked counts; AMQP passive declares do not.
        if let Some(base) = &self.management_url
            && let Ok(q) = self.queues_by_management(base).await
        {
            return Ok(q);
        }
        let conn = self.connection().await?;
        let mut out = Vec::new();
        for name in self.queue_names() {
            // A failed passive declare closes the channel: one channel per queue.
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            match broker::queue_counts(&ch, &name).await {
                Ok((ready, consumers)) => out.push(QueueStat {
                    name: self.short(&name).to_owned(),
                    ready: ready.into(),
                    unacked: None,
                    consumers: consumers.into(),
                }),
                Err(_) => out.push(QueueStat {
                    name: self.short(&name).to_owned(),
                    ready: 0,
                    unacked: None,
                    consumers: 0,
                }),
            }
            let _ = ch.close(200, "done".into()).await;
        }
        Ok(out)
    }

    async fn queues_by_management(&self, base: &str) -> Result<Vec<QueueStat>, String> {
        let url = url_without_credentials(base);
        let (user, pass) = credentials(base);
        let mut out = Vec::new();
        for name in self.queue_names() {
            let r = self
                .http
                .get(format!("{url}/api/queues/%2f/{name}"))
                .basic_auth(&user, Some(&pass))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let short = self.short(&name).to_owned();
            if r.status() == 404 {
                out.push(QueueStat {
                    name: short,
                    ready: 0,
                    unacked: Some(0),
                    consumers: 0,
                });
                continue;
            }
            let v: serde_json::Value = r
                .error_for_status()
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            out.push(QueueStat {
                name: short,
                ready: v["messages_ready"].as_u64().unwrap_or(0),
                unacked: Some(v["messages_unacknowledged"].as_u64().unwrap_or(0)),
                consumers: v["consumers"].as_u64().unwrap_or(0),
            });
        }
        Ok(out)
    }

    async fn activity(&self) -> Result<Activity, String> {
        let e = |e: sqlx::Error| e.to_string();
        let recent: Vec<RecentRow> = sqlx::query_as(
            "SELECT updated_at, kind, recipient, status, latency_ms, last_error, detail
                   FROM sends ORDER BY updated_at DESC LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(e)?;
        let (sent, failed, dead, skipped): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'sent'),
                    count(*) FILTER (WHERE status IN ('retrying', 'sending') AND error_class IS NOT NULL),
                    count(*) FILTER (WHERE status = 'dead'),
                    count(*) FILTER (WHERE status = 'skipped')
               FROM sends WHERE updated_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(e)?;
        let minutes: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT (extract(epoch FROM now() - sent_at) / 60)::int AS ago, count(*)
               FROM sends WHERE sent_at > now() - interval '1 hour'
              GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(e)?;
        // Rates as SES computes them: hard bounces and complaints per email sent.
        let (sent_24h, sent_7d): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE sent_at > now() - interval '1 day'), count(*)
               FROM sends WHERE sent_at > now() - interval '7 days'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(e)?;
        let (bounces_24h, complaints_24h, bounces_7d, complaints_7d): (i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT count(*) FILTER (WHERE hard AND occurred_at > now() - interval '1 day'),
                        count(*) FILTER (WHERE type = 'complaint'
                                           AND occurred_at > now() - interval '1 day'),
                        count(*) FILTER (WHERE hard),
                        count(*) FILTER (WHERE type = 'complaint')
                   FROM (SELECT type, occurred_at,
                                type = 'bounce' AND subtype LIKE 'Permanent%' AS hard
                           FROM ses_events WHERE occurred_at > now() - interval '7 days') e",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(e)?;
        let mut per_minute = vec![0u64; 60];
        for (ago, n) in minutes {
            if (0..60).contains(&ago) {
                per_minute[59 - ago as usize] = n as u64;
            }
        }
        Ok(Activity {
            recent: recent
                .into_iter()
                .map(
                    |(at, kind, recipient, status, latency_ms, err, detail)| SendRow {
                        at,
                        kind,
                        recipient: recipient.unwrap_or_else(|| "-".into()),
                        status,
                        latency_ms,
                        error: err.or(detail).unwrap_or_default(),
                    },
                )
                .collect(),
            today: Today {
                sent,
                failed,
                dead,
                skipped,
            },
            per_minute,
            feedback: Feedback {
                sent_24h,
                bounces_24h,
                complaints_24h,
                sent_7d,
                bounces_7d,
                complaints_7d,
            },
            paused: self.paused().await,
        })
    }

    async fn paused(&self) -> Option<bool> {
        let url = self.dispatcher_metrics_url.as_ref()?;
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        // One line per reason (`mailroom_dispatcher_paused{reason="quota"} 1`): paused when any
        // of them is 1.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mailroom_dispatcher_paused"))
            .collect();
        (!lines.is_empty()).then(|| {
            lines
                .iter()
                .any(|l| l.rsplit(' ').next().is_some_and(|v| v.trim() == "1"))
        })
    }

    async fn users(&self) -> Result<Users, String> {
        let e = |e: sqlx::Error| e.to_string();
        // Counting is bounded: past COUNT_CAP an exact figure costs a scan of every unverified
        // row on each refresh (130 ms at 500,000), and "10000+" tells the operator enough.
        let counted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM users WHERE NOT email_verified LIMIT $1) s",
        )
        .bind(COUNT_CAP + 1)
        .fetch_one(&self.pool)
        .await
        .map_err(e)?;
        let rows: Vec<(String, String, DateTime<Utc>, Option<bool>)> = sqlx::query_as(
            "SELECT name, email, created_at,
                    CASE WHEN verification_token IS NULL THEN NULL
                         ELSE verification_token_expiry IS NULL OR verification_token_expiry < now() END
               FROM users WHERE NOT email_verified ORDER BY created_at LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(e)?;
        Ok(Users {
            total: counted.min(COUNT_CAP),
            more: counted > COUNT_CAP,
            oldest: rows
                .into_iter()
                .map(|(name, email, created_at, link_expired)| UserRow {
                    name,
                    email,
                    created_at,
                    link_expired,
                })
                .collect(),
        })
    }
}

/// Unverified users are counted up to this many.
const COUNT_CAP: i64 = 10_000;

/// updated_at, kind, recipient, status, latency_ms, last_error, detail
type RecentRow = (
    DateTime<Utc>,
    String,
    Option<String>,
    String,
    Option<i32>,
    Option<String>,
    Option<String>,
);

fn url_without_credentials(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => raw.trim_end_matches('/').to_owned(),
    }
}

fn credentials(raw: &str) -> (String, String) {
    url::Url::parse(raw)
        .ok()
        .filter(|u| !u.username().is_empty())
        .map(|u| {
            (
                u.username().to_owned(),
                u.password().unwrap_or("").to_owned(),
            )
        })
        .unwrap_or_else(|| ("guest".into(), "guest".into()))
}

impl DataSource for LiveSource {
    fn prefix(&self) -> String {
        self.topology.prefix.clone()
    }

    async fn fetch(&self, source: Source) -> Result<Update, String> {
        match source {
            Source::Queues => self.queues().await.map(Update::Queues),
            Source::Activity => self.activity().await.map(Update::Activity),
            Source::Users => self.users().await.map(Update::Users),
            // From the send log, not the queue: listing the queue means holding its messages
            // unacknowledged, and a replay running meanwhile would skip every one held.
            Source::Dead => store::dead_letters(&self.pool, 500)
                .await
                .map(Update::Dead)
                .map_err(|e| e.to_string()),
            Source::Suppressions => store::list_suppressions(&self.pool, None, 500)
                .await
                .map(Update::Suppressions)
                .map_err(|e| e.to_string()),
            Source::Account => match mailroom::ses::get_account(&self.ses).await {
                Ok(Some(a)) => Ok(Update::Account(AccountInfo::Known(a))),
                Ok(None) => Ok(Update::Account(AccountInfo::Unavailable)),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    async fn perform(
        &self,
        action: Action,
        progress: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<String, String> {
        match action {
            Action::Replay { filter, .. } => {
                let conn = self.connection().await?;
                let detail = filter.describe();
                let opts = ReplayOptions {
                    filter,
                    dry_run: false,
                    rate: None,
                };
                let report = dead::replay(&conn, &self.topology, &opts, |r| {
                    let _ = progress.send(format!(
                        "examined {} · replayed {} · parked {}",
                        r.examined, r.replayed, r.parked
                    ));
                })
                .await
                .map_err(|e| e.to_string())?;
                let _ = store::mark_replayed(&self.pool, &report.replayed_jobs, Utc::now()).await;
                let _ = store::audit(
                    &self.pool,
                    &self.actor,
                    "replay",
                    &detail,
                    report.replayed as i64,
                )
                .await;
                Ok(format!(
                    "replayed {} of {} dead letters ({} parked)",
                    report.replayed, report.matched, report.parked
                ))
            }
            Action::Unsuppress { email } => {
                // By the stored form: an entry SES reported unparsed can be removed too.
                // Audited like `dispatcher suppressions remove`.
                let removed = store::unsuppress_entry(&self.pool, &email)
                    .await
                    .map_err(|e| e.to_string())?;
                if !removed {
                    return Ok(format!("{email} was not on the list any more"));
                }
                let _ = store::audit(&self.pool, &self.actor, "unsuppress", &email, 1).await;
                Ok(format!(
                    "{email} is no longer suppressed: mail flows to it again"
                ))
            }
            Action::ResendVerification { email } => {
                let addr = EmailAddress::parse(&email).map_err(|e| e.to_string())?;
                // The same path as POST /v1/verifications/resend, limits included.
                let (outcome, _) = store::request_email(
                    &self.pool,
                    &addr,
                    JobKind::Verification,
                    self.limits,
                    Utc::now(),
                )
                .await
                .map_err(|e| e.to_string())?;
                let _ =
                    store::audit(&self.pool, &self.actor, "resend_verification", &email, 1).await;
                Ok(format!("resend to {email}: {}", outcome.as_str()))
            }
        }
    }
}
