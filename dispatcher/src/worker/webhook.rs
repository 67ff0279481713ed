//! The step of a webhook job: one signed POST of one event to one endpoint, and its outcome
//! recorded. Also the client and the request shape that `dispatcher webhooks test` reuses.

use mailroom::events::redact_url;
use std::time::{Duration, Instant};

use mailroom::job::Job;
use mailroom::store::webhooks::Delivery;
use mailroom::store::{self, SendStatus};
use mailroom::webhook::{Signer, Webhooks};

use super::db_retry::DbResult;
use super::{Outcome, Worker};

/// The client webhook deliveries go through.
pub fn webhook_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Mailroom-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTP client: {e}"))
}

/// What one POST came to.
enum Attempt {
    /// A 2xx answer.
    Delivered { status: u16, latency_ms: i32 },
    /// Any other answer, no answer in time, or no connection: why, in words.
    Failed(String),
    /// The dispatcher shut down before the receiver answered.
    Abandoned,
}

/// The send log's detail of a parked webhook delivery (see `dispatcher webhooks parked`).
pub const PARKED: &str = "parked: its endpoint is no longer in WEBHOOK_URL";

impl Worker {
    /// POSTs one webhook event to one endpoint, signed. A 2xx answer delivers it; any other
    /// answer, no answer within `WEBHOOK_TIMEOUT`, or no connection is a failed attempt that
    /// goes down the retry ladder like a failed send (the receiver may be deploying).
    pub(super) async fn deliver_webhook(&self, job: &Job) -> DbResult<Outcome> {
        let Some(d) = self
            .retry_db(|| store::webhooks::delivery(&self.pool, job.job_id))
            .await?
        else {
            return self.skip(job, "the webhook event no longer exists").await;
        };
        // An endpoint taken out of WEBHOOK_URL gets nothing more: its deliveries are parked
        // (kept, and listed by `dispatcher webhooks parked`), not retried against a receiver
        // the operator removed.
        if !self.webhooks.endpoints.urls().iter().any(|u| u == &d.url) {
            mailroom::metrics::count(&self.metrics.webhooks, "parked");
            return self.skip(job, PARKED).await;
        }
        let error = match &self.webhooks.signer {
            None => "WEBHOOK_SECRET is not set on this dispatcher, so the event cannot be signed"
                .to_owned(),
            Some(signer) => match self.post(&d, signer).await {
                Attempt::Delivered { status, latency_ms } => {
                    return self.delivered(job, &d, status, latency_ms).await;
                }
                Attempt::Failed(error) => error,
                Attempt::Abandoned => return Ok(Outcome::Abandoned),
            },
        };
        self.webhook_failed(job, &d, error).await
    }

    /// One attempt: the POST and the receiver's answer.
    async fn post(&self, d: &Delivery, signer: &Signer) -> Attempt {
        let started = Instant::now();
        // The timestamp is this attempt's: receivers reject old ones (replay defence).
        let request = signed_request(
            &self.http,
            &d.url,
            &self.webhooks,
            signer,
            &d.event_id,
            self.clock.now().timestamp(),
            &d.body,
        );
        let answer = tokio::select! {
            r = request.send() => r,
            _ = self.cancel.cancelled() => return Attempt::Abandoned,
        };
        match answer {
            Ok(r) if r.status().is_success() => Attempt::Delivered {
                status: r.status().as_u16(),
                latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            },
            Ok(r) => Attempt::Failed(refusal(r, &redact_url(&d.url)).await),
            Err(e) if e.is_timeout() => Attempt::Failed(format!(
                "no answer from {} within {} (WEBHOOK_TIMEOUT)",
                redact_url(&d.url),
                mailroom::config::format_duration(self.webhooks.timeout)
            )),
            // Without its URL: reqwest's error names the URL in full, secrets and all.
            Err(e) => Attempt::Failed(format!(
                "cannot reach {}: {}",
                redact_url(&d.url),
                error_chain(&e.without_url())
            )),
        }
    }

    async fn delivered(
        &self,
        job: &Job,
        d: &Delivery,
        status: u16,
        latency_ms: i32,
    ) -> DbResult<Outcome> {
        let now = self.clock.now();
        self.retry_db(|| {
            store::webhooks::record_delivered(
                &self.pool, job.job_id, &d.url, status, now, latency_ms,
            )
        })
        .await?;
        mailroom::metrics::count(&self.metrics.webhooks, "delivered");
        tracing::info!(job_id = %job.job_id, event = %d.event_type, webhook_id = %d.event_id, url = %redact_url(&d.url), status, "webhook delivered");
        Ok(Outcome::Sent {
            message_id: format!("HTTP {status}"),
        })
    }

    async fn webhook_failed(&self, job: &Job, d: &Delivery, error: String) -> DbResult<Outcome> {
        mailroom::metrics::count(&self.metrics.webhooks, "failed");
        tracing::warn!(job_id = %job.job_id, webhook_id = %d.event_id, url = %redact_url(&d.url), error = %error, "webhook delivery failed");
        let now = self.clock.now();
        // The send log (and the dead list, the dashboard) shows the endpoint without secrets.
        let redacted = redact_url(&d.url);
        self.retry_db(|| {
            store::record_failure(
                &self.pool,
                job.job_id,
                SendStatus::Sending,
                Some(&redacted),
                "webhook",
                &error,
                now,
            )
        })
        .await?;
        Ok(Outcome::Retry { error })
    }
}

/// A refusal in words: the status and a little of what the receiver said, for the send log
/// and the dead list.
async fn refusal(mut r: reqwest::Response, url: &str) -> String {
    let status = r.status();
    let said = tokio::time::timeout(Duration::from_secs(1), r.chunk())
        .await
        .ok()
        .and_then(|c| c.ok().flatten())
        .map(|b| {
            String::from_utf8_lossy(&b[..b.len().min(200)])
                .trim()
                .to_owned()
        })
        .unwrap_or_default();
    format!("HTTP {status} from {url}: {said}")
        .trim_end_matches(": ")
        .to_owned()
}

/// One webhook POST: the JSON body, the Standard Webhooks headers, the per-attempt timeout.
/// Shared by deliveries and `dispatcher webhooks test`, so a ping is signed like an event.
pub(crate) fn signed_request(
    http: &reqwest::Client,
    url: &str,
    hooks: &Webhooks,
    signer: &Signer,
    id: &str,
    timestamp: i64,
    body: &str,
) -> reqwest::RequestBuilder {
    let mut request = http
        .post(url)
        .timeout(hooks.timeout)
        .header("content-type", "application/json");
    for (name, value) in signer.headers(id, timestamp, body) {
        request = request.header(name, value);
    }
    request.body(body.to_owned())
}

/// An error and its causes on one line ("error sending request: … : Connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
