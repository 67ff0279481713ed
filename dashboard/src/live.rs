//! The live [`DataSource`]: PostgreSQL for sends and users, RabbitMQ for queues and dead
//! letters (the management HTTP API when it answers, AMQP passive declares otherwise), SES for
//! the account, the dispatcher's metrics for its pause state. Actions go through the same
//! library functions as the CLI and the API, and are written to the audit table.

use std::sync::Arc;

use chrono::Utc;
use lapin::Connection;
use mailroom::broker::{self, Topology};
use mailroom::dead::{self, ReplayOptions};
use mailroom::domain::EmailAddress;
use mailroom::job::JobKind;
use mailroom::store::{self, AddressLimits, read};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::data::{
    AccountInfo, Action, Activity, DataSource, Feedback, QueueStat, SendRow, Source, Today, Update,
    UserRow, Users,
};

pub struct LiveSource {
    pub pool: PgPool,
    pub amqp_url: String,
    /// `AMQP_HEARTBEAT`: a broker silent for twice this drops the connection, which is made
    /// again at the next refresh.
    pub amqp_heartbeat: std::time::Duration,
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
    /// The dispatcher's UNVERIFIED_REMINDER_AFTER and UNVERIFIED_EXPIRE_AFTER, to show what
    /// its sweep does next to each unverified user.
    pub unverified: (Option<std::time::Duration>, Option<std::time::Duration>),
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
            amqp_heartbeat: broker::DEFAULT_HEARTBEAT,
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
            unverified: (
                Some(std::time::Duration::from_secs(86_400)),
                Some(std::time::Duration::from_secs(30 * 86_400)),
            ),
            conn: Mutex::new(None),
        }
    }

    /// With the dispatcher's reminder and expiry ages instead of their defaults.
    pub fn with_unverified_rules(
        mut self,
        reminder_after: Option<std::time::Duration>,
        expire_after: Option<std::time::Duration>,
    ) -> Self {
        self.unverified = (reminder_after, expire_after);
        self
    }

    /// With `AMQP_HEARTBEAT` instead of its default.
    pub fn with_heartbeat(mut self, heartbeat: std::time::Duration) -> Self {
        self.amqp_heartbeat = heartbeat;
        self
    }

    /// The broker connection, made (again) on demand.
    async fn connection(&self) -> Result<Arc<Connection>, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| c.status().connected()) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            broker::connect_with_heartbeat(
                &self.amqp_url,
                "mailroom-dashboard",
                self.amqp_heartbeat,
            )
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

    /// Both lanes' work and delay queues (emails first), then the dead queue.
    fn queue_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for lane in [self.topology.clone(), self.topology.webhooks()] {
            names.push(lane.work_queue());
            names.extend(self.retry_delays.iter().map(|d| lane.retry_queue(*d)));
        }
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
        let recent = read::recent_sends(&self.pool, 500).await.map_err(e)?;
        let today = read::today_counts(&self.pool).await.map_err(e)?;
        let minutes = read::sends_per_minute(&self.pool).await.map_err(e)?;
        // Rates as SES computes them: hard bounces and complaints per email sent.
        let f = read::feedback_counts(&self.pool).await.map_err(e)?;
        let mut per_minute = vec![0u64; 60];
        for (ago, n) in minutes {
            if (0..60).contains(&ago) {
                per_minute[59 - ago as usize] = n as u64;
            }
        }
        Ok(Activity {
            recent: recent
                .into_iter()
                .map(|r| SendRow {
                    at: r.updated_at,
                    kind: r.kind,
                    recipient: r.recipient.unwrap_or_else(|| "-".into()),
                    status: r.status,
                    latency_ms: r.latency_ms,
                    error: r.last_error.or(r.detail).unwrap_or_default(),
                    api_key: r.api_key.unwrap_or_default(),
                })
                .collect(),
            today: Today {
                sent: today.sent,
                failed: today.failed,
                dead: today.dead,
                skipped: today.skipped,
            },
            per_minute,
            feedback: Feedback {
                sent_24h: f.sent_24h,
                bounces_24h: f.bounces_24h,
                complaints_24h: f.complaints_24h,
                sent_7d: f.sent_7d,
                bounces_7d: f.bounces_7d,
                complaints_7d: f.complaints_7d,
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
        let counted = read::count_unverified(&self.pool, COUNT_CAP)
            .await
            .map_err(e)?;
        let rows = read::oldest_unverified(&self.pool, 500).await.map_err(e)?;
        Ok(Users {
            total: counted.min(COUNT_CAP),
            more: counted > COUNT_CAP,
            oldest: rows
                .into_iter()
                .map(|u| UserRow {
                    name: u.name,
                    email: u.email,
                    created_at: u.created_at,
                    link_expired: u.link_expired,
                    next: mailroom::policy::retention::next_step(
                        u.created_at,
                        u.last_email_at,
                        u.reminded,
                        self.unverified.0,
                        self.unverified.1,
                    ),
                })
                .collect(),
        })
    }
}

/// Unverified users are counted up to this many.
const COUNT_CAP: i64 = 10_000;

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
            Source::Dead => mailroom::dead::from_send_log(&self.pool, 500)
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
                    "replayed {} of {} ({} parked)",
                    report.replayed,
                    crate::text::counted(report.matched as i64, "dead letter", "dead letters"),
                    report.parked
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
                    store::RequestedBy::default(),
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
