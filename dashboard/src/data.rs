//! What the dashboard shows and where it comes from. [`DataSource`] is the seam: the live
//! implementation reads PostgreSQL, RabbitMQ (management API, or AMQP passive declares) and SES;
//! tests substitute a fake. Owns no drawing and no key handling.

use std::future::Future;

use chrono::{DateTime, Utc};
use mailroom::dead::{DeadLetter, Filter};
use mailroom::ses::Account;
pub use mailroom::store::Suppression;

use crate::text::counted;

/// One queue's depth as the broker reports it. `unacked` is unknown without the management API.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStat {
    /// The name without the prefix: `emails`, `retry.1`, `dead`.
    pub name: String,
    pub ready: u64,
    pub unacked: Option<u64>,
    pub consumers: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendRow {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub recipient: String,
    pub status: String,
    pub latency_ms: Option<i32>,
    pub error: String,
    /// The name of the API key whose request raised it; empty for Mailroom's own.
    pub api_key: String,
}

/// Counts since midnight (UTC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Today {
    pub sent: i64,
    pub failed: i64,
    pub dead: i64,
    pub skipped: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub recent: Vec<SendRow>,
    pub today: Today,
    /// Sends per minute over the last hour, oldest first (60 values).
    pub per_minute: Vec<u64>,
    /// Whether the dispatcher reports itself paused; None when its metrics cannot be read.
    pub paused: Option<bool>,
    /// Bounce and complaint rates, against the thresholds at which SES reviews an account.
    pub feedback: Feedback,
}

/// SES reviews an account at a 5 % bounce rate and a 0.1 % complaint rate (and may pause it
/// beyond): the rates of the last 24 hours and 7 days, as SES counts them (hard bounces and
/// complaints per email sent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feedback {
    pub sent_24h: i64,
    pub bounces_24h: i64,
    pub complaints_24h: i64,
    pub sent_7d: i64,
    pub bounces_7d: i64,
    pub complaints_7d: i64,
}

/// SES's review thresholds.
pub const BOUNCE_REVIEW: f64 = 0.05;
pub const COMPLAINT_REVIEW: f64 = 0.001;

impl Feedback {
    /// `part / sent`, or None when nothing was sent.
    pub fn rate(part: i64, sent: i64) -> Option<f64> {
        (sent > 0).then(|| part as f64 / sent as f64)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub name: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// The verification link has expired (or none was sent yet: `None`).
    pub link_expired: Option<bool>,
    /// What the dispatcher's sweep does next to them, and from when (None: nothing).
    pub next: Option<mailroom::policy::retention::NextStep>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Users {
    pub total: i64,
    /// There are more than `total` (the count is bounded).
    pub more: bool,
    /// The oldest unverified users first.
    pub oldest: Vec<UserRow>,
}

/// The SES account, or why it cannot be shown.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountInfo {
    Known(Account),
    /// The endpoint does not implement GetAccount (moto).
    Unavailable,
}

/// The feeds, each refreshed by its own background task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Queues,
    Activity,
    Users,
    Dead,
    Account,
    Suppressions,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::Queues,
        Source::Activity,
        Source::Users,
        Source::Dead,
        Source::Account,
        Source::Suppressions,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Source::Queues => "queues",
            Source::Activity => "sends",
            Source::Users => "users",
            Source::Dead => "dead",
            Source::Account => "ses",
            Source::Suppressions => "suppr",
        }
    }
}

/// New data from one source.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Queues(Vec<QueueStat>),
    Activity(Activity),
    Users(Users),
    Dead(Vec<DeadLetter>),
    Account(AccountInfo),
    Suppressions(Vec<Suppression>),
}

/// Something the operator asked for that changes state. Each passes a y/n confirm first.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Replay dead letters: one (`Filter::Jobs` with one id), the filtered ones, or all.
    Replay { filter: Filter, count: usize },
    /// Send a new verification link to an unverified user.
    ResendVerification { email: String },
    /// Take an address off the suppression list: mail flows to it again.
    Unsuppress { email: String },
}

impl Action {
    /// The confirm question.
    pub fn question(&self) -> String {
        match self {
            Action::Replay {
                filter: Filter::All,
                count,
            } => format!("Replay all {}?", dead_letters(*count)),
            Action::Replay { count: 1, .. } => "Replay this dead letter?".into(),
            Action::Replay { count, .. } => format!("Replay {}?", dead_letters(*count)),
            Action::ResendVerification { email } => {
                format!("Send a new verification link to {email}?")
            }
            Action::Unsuppress { email } => {
                format!("Mail {email} again (take it off the suppression list)?")
            }
        }
    }
}

fn dead_letters(count: usize) -> String {
    counted(count as i64, "dead letter", "dead letters")
}

/// Where the dashboard's data comes from and where its actions go.
pub trait DataSource: Send + Sync + 'static {
    /// The QUEUE_PREFIX watched, to show with the queues.
    fn prefix(&self) -> String {
        String::new()
    }

    fn fetch(&self, source: Source) -> impl Future<Output = Result<Update, String>> + Send;

    /// Carries out a confirmed action; `progress` receives lines to show while it runs. Returns
    /// the summary for the status line.
    fn perform(
        &self,
        action: Action,
        progress: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> impl Future<Output = Result<String, String>> + Send;
}
