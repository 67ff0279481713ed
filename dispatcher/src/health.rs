//! The dispatcher's operations listener (`DISPATCHER_METRICS_LISTEN`): `/metrics`, `/healthz`
//! (the process answers) and `/readyz` (ready while consuming; not ready while paused by an
//! account stop or without RabbitMQ, with the reason as JSON), for Prometheus and for an
//! orchestrator's probes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use mailroom::metrics::{Page, PageFuture};
use mailroom::ses::PauseReason;
use serde_json::json;

use crate::metrics::Metrics;
use crate::rate::SharedRate;

/// What the operations listener reads.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub paused: Arc<Mutex<Option<PauseReason>>>,
    pub consuming: Arc<AtomicBool>,
    pub rate: Arc<SharedRate>,
}

impl Health {
    /// The answer for `path`.
    pub fn page(&self, path: &str) -> PageFuture {
        let page = match path {
            "/metrics" => Page::metrics(
                self.metrics
                    .render(*self.paused.lock().expect("pause lock"), &self.rate),
            ),
            "/healthz" => Page::json(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => self.readiness(),
            _ => Page::not_found(),
        };
        Box::pin(async move { page })
    }

    /// Ready while a session consumes and no account stop pauses it. A pause is not a fault
    /// of this instance (SES said stop), but an instance that sends nothing is not ready: an
    /// orchestrator should know, and alerting too.
    fn readiness(&self) -> Page {
        let paused = *self.paused.lock().expect("pause lock");
        let consuming = self.consuming.load(Ordering::Relaxed);
        let reason = match (paused, consuming) {
            (Some(r), _) => Some(format!("paused: {} (SES account stop)", r.as_str())),
            (None, false) => Some("not consuming: connecting to RabbitMQ".to_owned()),
            (None, true) => None,
        };
        let status = if reason.is_none() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Page::json(
            status,
            &json!({
                "ready": reason.is_none(),
                "consuming": consuming,
                "paused": paused.map(|r| r.as_str()),
                "reason": reason,
            }),
        )
    }
}
