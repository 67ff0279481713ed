//! The dispatcher's metrics: every family registered once at start (so each series reads 0
//! until it happens), the handles the steps and the consumer count through, and the
//! OpenMetrics text served at `DISPATCHER_METRICS_LISTEN`.

use mailroom::metrics::{
    ClassLabel, Counter, Family, FloatGauge, Gauge, Histogram, OutcomeLabel, ReasonLabel, Registry,
    registered,
};
use mailroom::ses::PauseReason;

use crate::rate::SharedRate;

/// The dispatcher's metrics, served at `DISPATCHER_METRICS_LISTEN`: families registered once,
/// handles kept here.
#[derive(Debug)]
pub struct Metrics {
    pub sends: Family<OutcomeLabel, Counter>,
    pub errors: Family<ClassLabel, Counter>,
    pub dead: Family<ClassLabel, Counter>,
    pub retries: Counter,
    pub limiter_waits: Counter,
    /// Sends allowed in flight now (fixed, or as last sized from the rate).
    pub concurrency: Gauge,
    pub pauses: Counter,
    pub latency: Histogram,
    pub webhooks: Family<OutcomeLabel, Counter>,
    /// Rows the sweep deleted, by table.
    pub retention_deleted: Family<TableLabel, Counter>,
    /// Unverified users the sweep reminded or expired.
    pub unverified: Family<OutcomeLabel, Counter>,
    /// Set when /metrics is read, from the shared rate and the pause state.
    rate: RateGauges,
    paused: Family<ReasonLabel, Gauge>,
    registry: Registry,
}

/// `{table}` of what the retention sweep deleted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TableLabel {
    pub table: &'static str,
}

/// The shared rate as this dispatcher sees it; set when /metrics is read.
#[derive(Debug)]
struct RateGauges {
    account: FloatGauge,
    share: FloatGauge,
    live: Gauge,
}

/// Every outcome of `mailroom_sends_total`, registered at start so each reads 0 until it
/// happens (an alert on a rate needs the series to exist).
const SEND_OUTCOMES: &[&str] = &[
    "sent",
    "skipped",
    "duplicate",
    "busy",
    "suppressed",
    "retry",
    "dead",
    "account_stop",
];

impl Default for Metrics {
    /// Registers every family, in the order the text lists them.
    fn default() -> Self {
        let mut r = Registry::default();
        // Field initialisers run in the order written: that is the order of registration.
        Self {
            rate: RateGauges::register(&mut r),
            concurrency: registered(
                &mut r,
                "mailroom_send_concurrency",
                "Sends allowed in flight now (SEND_CONCURRENCY, or sized from the rate and the time of a send).",
                Gauge::default(),
            ),
            sends: registered(
                &mut r,
                "mailroom_sends",
                "Jobs handled, by outcome (sent, skipped, duplicate, busy, suppressed, retry, dead, account_stop).",
                send_outcomes(),
            ),
            errors: registered(
                &mut r,
                "mailroom_send_errors",
                "Failed SES calls by error class.",
                Family::default(),
            ),
            dead: registered(
                &mut r,
                "mailroom_dead_letters",
                "Jobs moved to the dead-letter queue, by error class.",
                Family::default(),
            ),
            retries: registered(
                &mut r,
                "mailroom_retries",
                "Jobs moved to a retry delay queue.",
                Counter::default(),
            ),
            limiter_waits: registered(
                &mut r,
                "mailroom_rate_limiter_waits",
                "Sends that had to wait for the rate limiter.",
                Counter::default(),
            ),
            pauses: registered(
                &mut r,
                "mailroom_account_pauses",
                "Times consumption paused for an account stop.",
                Counter::default(),
            ),
            webhooks: registered(
                &mut r,
                "mailroom_webhook_deliveries",
                "Webhook delivery attempts, by outcome (delivered, failed).",
                Family::default(),
            ),
            retention_deleted: registered(
                &mut r,
                "mailroom_retention_deleted",
                "Rows the retention sweep deleted, by table.",
                Family::default(),
            ),
            unverified: registered(
                &mut r,
                "mailroom_unverified_users",
                "Unverified users the sweep acted on, by outcome (reminded, expired).",
                Family::default(),
            ),
            latency: registered(
                &mut r,
                "mailroom_send_latency_seconds",
                "Duration of successful SES SendEmail calls.",
                mailroom::metrics::latency_histogram(),
            ),
            paused: registered(
                &mut r,
                "mailroom_dispatcher_paused",
                "1 while consumption is paused, by reason (account, quota, credentials, configuration).",
                Family::<ReasonLabel, Gauge>::default(),
            ),
            registry: r,
        }
    }
}

/// The family of `mailroom_sends_total` with every outcome's series present.
fn send_outcomes() -> Family<OutcomeLabel, Counter> {
    let sends = Family::<OutcomeLabel, Counter>::default();
    for outcome in SEND_OUTCOMES {
        let _ = sends.get_or_create(&OutcomeLabel { outcome });
    }
    sends
}

impl RateGauges {
    fn register(r: &mut Registry) -> Self {
        Self {
            account: registered(
                r,
                "mailroom_send_rate_account",
                "The account's sending rate (MAX_SEND_RATE or SES's MaxSendRate), per second.",
                FloatGauge::default(),
            ),
            share: registered(
                r,
                "mailroom_send_rate_share",
                "This dispatcher's share of it, per second (0 while joining or cut off from the database).",
                FloatGauge::default(),
            ),
            live: registered(
                r,
                "mailroom_dispatchers_live",
                "Live dispatchers sharing the rate, as this one last counted them.",
                Gauge::default(),
            ),
        }
    }
}

impl Metrics {
    /// Counts one job of this outcome.
    pub fn count(&self, outcome: &'static str) {
        mailroom::metrics::count(&self.sends, outcome);
    }

    /// The metrics as OpenMetrics text, with the states read now.
    pub fn render(&self, paused: Option<PauseReason>, rate: &SharedRate) -> String {
        self.rate.account.set(rate.account_rate());
        // Three decimals, as an operator reads it.
        self.rate
            .share
            .set((rate.share() * 1000.0).round() / 1000.0);
        self.rate.live.set(rate.live() as i64);
        for r in PauseReason::ALL {
            self.paused
                .get_or_create(&ReasonLabel { reason: r.as_str() })
                .set(i64::from(paused == Some(r)));
        }
        mailroom::metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_listed_in_the_order_it_was_registered() {
        let text = Metrics::default().render(None, &SharedRate::fixed(14.0));
        // Families by label without a series yet (errors, dead letters, webhooks) are not
        // listed until they have one.
        let names = [
            "mailroom_send_rate_account",
            "mailroom_send_rate_share",
            "mailroom_dispatchers_live",
            "mailroom_send_concurrency",
            "mailroom_sends",
            "mailroom_retries",
            "mailroom_rate_limiter_waits",
            "mailroom_account_pauses",
            "mailroom_send_latency_seconds",
            "mailroom_dispatcher_paused",
        ];
        let at: Vec<usize> = names
            .iter()
            .map(|n| {
                text.find(&format!("# HELP {n} "))
                    .unwrap_or_else(|| panic!("{n} missing from:\n{text}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("mailroom_sends_total{outcome=\"account_stop\"} 0"));
    }
}
