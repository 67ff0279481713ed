//! A fake data source with fixed data, shared by the state and snapshot tests.

#![allow(dead_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use dashboard::data::*;
use mailroom::dead::DeadLetter;
use mailroom::ses::Account;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

pub fn dead_letter(job: &str, class: &str, recipient: &str) -> DeadLetter {
    DeadLetter {
        job_id: Some(job.into()),
        kind: Some("verification".into()),
        recipient: Some(recipient.into()),
        attempts: if class == "retryable" { 6 } else { 1 },
        error_class: class.into(),
        last_error: format!("SES error for {recipient}"),
        died_at: Some("2026-11-21T11:00:00Z".into()),
        replays: 0,
    }
}

pub fn updates() -> Vec<Update> {
    vec![
        Update::Queues(vec![
            QueueStat {
                name: "emails".into(),
                ready: 12,
                unacked: Some(4),
                consumers: 2,
            },
            QueueStat {
                name: "retry.1".into(),
                ready: 3,
                unacked: Some(0),
                consumers: 0,
            },
            QueueStat {
                name: "dead".into(),
                ready: 3,
                unacked: Some(0),
                consumers: 0,
            },
        ]),
        Update::Activity(Activity {
            recent: vec![
                SendRow {
                    at: t0(),
                    kind: "verification".into(),
                    recipient: "ada@example.com".into(),
                    status: "sent".into(),
                    latency_ms: Some(41),
                    error: String::new(),
                    api_key: "web".into(),
                },
                SendRow {
                    at: t0(),
                    kind: "password_reset".into(),
                    recipient: "bob@example.com".into(),
                    status: "retrying".into(),
                    latency_ms: None,
                    error: "SES TooManyRequestsException".into(),
                    api_key: String::new(),
                },
                SendRow {
                    at: t0(),
                    kind: "verification".into(),
                    recipient: "eve@example.org".into(),
                    status: "dead".into(),
                    latency_ms: None,
                    error: "SES MessageRejected".into(),
                    api_key: "billing".into(),
                },
            ],
            today: Today {
                sent: 120,
                failed: 2,
                dead: 3,
                skipped: 1,
            },
            per_minute: (0..60).map(|i| (i % 7) as u64).collect(),
            paused: Some(false),
            // 24 h: bounces at 3 % (approaching 5 %), complaints at 0.2 % (over 0.1 %).
            feedback: Feedback {
                sent_24h: 1000,
                bounces_24h: 30,
                complaints_24h: 2,
                sent_7d: 7000,
                bounces_7d: 70,
                complaints_7d: 2,
            },
        }),
        Update::Users(Users {
            total: 2,
            more: false,
            oldest: vec![
                UserRow {
                    name: "Grace".into(),
                    email: "grace@example.com".into(),
                    created_at: t0() - chrono::Duration::hours(30),
                    link_expired: Some(true),
                    next: Some(mailroom::policy::retention::NextStep::Expiry(
                        t0() + chrono::Duration::days(29) - chrono::Duration::hours(6),
                    )),
                },
                UserRow {
                    name: "Linus".into(),
                    email: "linus@example.org".into(),
                    created_at: t0() - chrono::Duration::minutes(5),
                    link_expired: Some(false),
                    next: Some(mailroom::policy::retention::NextStep::Reminder(
                        t0() + chrono::Duration::hours(24) - chrono::Duration::minutes(5),
                    )),
                },
            ],
        }),
        Update::Dead(vec![
            dead_letter(
                "11111111-1111-4111-8111-111111111111",
                "permanent",
                "eve@example.org",
            ),
            dead_letter(
                "22222222-2222-4222-8222-222222222222",
                "retryable",
                "mallory@example.net",
            ),
            dead_letter(
                "33333333-3333-4333-8333-333333333333",
                "permanent",
                "trent@example.com",
            ),
        ]),
        Update::Account(AccountInfo::Known(Account {
            production_access: false,
            sending_enabled: true,
            enforcement_status: Some("HEALTHY".into()),
            max_24_hour_send: 200.0,
            sent_last_24_hours: 120.0,
            max_send_rate: 1.0,
            review: None,
        })),
        Update::Suppressions(vec![
            Suppression {
                email: "gone@example.com".into(),
                reason: "bounce".into(),
                detail: "smtp; 550 5.1.1 user unknown".into(),
                created_at: t0(),
            },
            Suppression {
                email: "angry@example.com".into(),
                reason: "complaint".into(),
                detail: "abuse".into(),
                created_at: t0(),
            },
        ]),
    ]
}

/// Serves the fixed data and records the actions it was asked to perform.
#[derive(Default)]
pub struct FakeSource {
    pub fetches: AtomicUsize,
    pub performed: Mutex<Vec<Action>>,
    /// Fail this source's fetches, to test the status line.
    pub failing: Option<Source>,
}

impl DataSource for FakeSource {
    async fn fetch(&self, source: Source) -> Result<Update, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.failing == Some(source) {
            return Err("connection refused".into());
        }
        let i = Source::ALL.iter().position(|s| *s == source).unwrap();
        Ok(updates().remove(i))
    }

    async fn perform(
        &self,
        action: Action,
        progress: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<String, String> {
        self.performed.lock().unwrap().push(action.clone());
        let _ = progress.send("examined 1 · replayed 1 · parked 0".into());
        Ok("replayed 1 of 1 dead letters (0 parked)".into())
    }
}
