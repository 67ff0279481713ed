//! Operations endpoints: `/readyz` (the database, the broker, the outbox backlog) and
//! `/metrics` (Prometheus text).

use super::*;

impl App {
    /// Ready when the database answers. A broker outage is reported but does not make ingest
    /// unready: the outbox holds the jobs until RabbitMQ is back.
    pub(super) async fn readyz(&self) -> Resp {
        let db = store::read::ping(&self.pool).await;
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
        self.metrics.outbox_backlog.set(backlog);
        self.metrics.broker_connected.set(i64::from(connected));
        let text = self.metrics.render();
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, mailroom::metrics::CONTENT_TYPE)
            .body(Full::new(Bytes::from(text)))
            .expect("valid response")
    }
}
