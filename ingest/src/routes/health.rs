//! Operations endpoints: `/readyz` (the database, the broker, the outbox backlog) and
//! `/metrics` (Prometheus text).

use super::*;

impl App {
    /// Ready when the database answers. A broker outage is reported but does not make ingest
    /// unready: the outbox holds the jobs until RabbitMQ is back.
    pub(super) async fn readyz(&self) -> Resp {
        let db = sqlx::query("SELECT 1").execute(&self.pool).await;
        let backlog = store::outbox_backlog(&self.pool).await.ok();
        let broker = match &*self.broker_state.read().expect("state lock") {
            BrokerState::Connecting => json!({"status": "connecting"}),
            BrokerState::Connected => json!({"status": "connected"}),
            BrokerState::Down(e) => json!({"status": "down", "error": e}),
        };
        let (status, db_json) = match db {
            Ok(_) => (StatusCode::OK, json!({"status": "ok"})),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "down", "error": e.to_string()}),
            ),
        };
        json_response(
            status,
            &json!({
                "ready": status == StatusCode::OK,
                "database": db_json,
                "broker": broker,
                "outbox_backlog": backlog,
            }),
        )
    }

    pub(super) async fn metrics_text(&self) -> Resp {
        let backlog = store::outbox_backlog(&self.pool).await.unwrap_or(-1);
        let connected = matches!(
            &*self.broker_state.read().expect("state lock"),
            BrokerState::Connected
        );
        let m = &self.metrics;
        let text = Exposition::default()
            .counter_vec(
                "mailroom_ingest_requests_total",
                "HTTP requests by route and status.",
                &m.requests,
            )
            .counter_vec(
                "mailroom_events_accepted_total",
                "Events accepted (written to the outbox), by kind.",
                &m.accepted,
            )
            .counter_vec(
                "mailroom_email_requests_total",
                "Reset and resend requests by kind and outcome (queued, suppressed, unknown_address, already_verified).",
                &m.requests_by_outcome,
            )
            .counter_vec(
                "mailroom_logins_total",
                "Login checks by outcome: ok, invalid, locked (429), busy (503).",
                &m.logins,
            )
            .counter_vec(
                "mailroom_ses_events_total",
                "SES feedback events recorded from SNS, by type (bounce, complaint, delivery, …).",
                &m.ses_events,
            )
            .counter_vec(
                "mailroom_password_hashes_total",
                "argon2 password hashes by outcome: done, or refused because every slot and the queue were taken (503).",
                &m.password_hashes,
            )
            .counter(
                "mailroom_jobs_published_total",
                "Jobs published to RabbitMQ and confirmed.",
                &m.published,
            )
            .gauge(
                "mailroom_outbox_backlog",
                "Outbox rows not yet confirmed by RabbitMQ (-1: database unavailable).",
                backlog,
            )
            .gauge(
                "mailroom_broker_connected",
                "1 when the relay is connected to RabbitMQ.",
                i64::from(connected),
            )
            .finish();
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(text)))
            .expect("valid response")
    }
}
