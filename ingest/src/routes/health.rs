//! Operations endpoints. On the public port: `/healthz` (the process answers) and `/readyz`
//! (ready or not, and which part is down, without the error text: an anonymous caller learns
//! nothing of the database's or broker's addresses or versions). On the operations listener
//! (`INGEST_METRICS_LISTEN`): `/metrics` (Prometheus text), `/healthz`, and `/readyz` with the
//! errors, for the operator.

use http::StatusCode;
use mailroom::metrics::{Page, PageFuture};
use mailroom::store;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::relay::BrokerState;
use crate::response::{Resp, json_response};
use crate::state::AppState;

pub async fn healthz() -> Result<Resp, ApiError> {
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

/// The public `/readyz`: [`readiness`] without error texts.
pub async fn readyz(state: &AppState) -> Result<Resp, ApiError> {
    let (status, mut body) = readiness(state).await;
    for part in ["database", "broker"] {
        if let Some(p) = body.get_mut(part).and_then(Value::as_object_mut) {
            p.remove("error");
            p.remove("reason");
        }
    }
    Ok(json_response(status, &body))
}

/// Ready when the database answers. A broker outage (or a broker that blocks publishing) is
/// reported but does not make ingest unready: the outbox holds the jobs until RabbitMQ is back.
/// With the reasons (error texts).
async fn readiness(state: &AppState) -> (StatusCode, Value) {
    let db = store::read::ping(&state.pool).await;
    let backlog = store::outbox_backlog(&state.pool).await.ok();
    let broker = match &*state.broker_state.read().expect("state lock") {
        BrokerState::Connecting => json!({"status": "connecting"}),
        BrokerState::Connected => json!({"status": "connected"}),
        // Still ready: the outbox keeps what the relay cannot publish until the alarm clears.
        BrokerState::Blocked(reason) => json!({"status": "blocked", "reason": reason}),
        BrokerState::Down(e) => json!({"status": "down", "error": e}),
    };
    let (status, db_json) = match db {
        Ok(_) => (StatusCode::OK, json!({"status": "ok"})),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "down", "error": e.to_string()}),
        ),
    };
    let body = json!({
        "ready": status == StatusCode::OK,
        "database": db_json,
        "broker": broker,
        "outbox_backlog": backlog,
    });
    (status, body)
}

/// The metrics, with the two states (backlog, broker connection) read now.
async fn metrics(state: &AppState) -> String {
    let backlog = store::outbox_backlog(&state.pool).await.unwrap_or(-1);
    let connected = matches!(
        &*state.broker_state.read().expect("state lock"),
        BrokerState::Connected
    );
    state.metrics.outbox_backlog.set(backlog);
    state.metrics.broker_connected.set(i64::from(connected));
    state.metrics.render()
}

/// What the operations listener answers for `path`.
pub fn operations_page(state: std::sync::Arc<AppState>, path: &str) -> PageFuture {
    let path = path.to_owned();
    Box::pin(async move {
        match path.as_str() {
            "/metrics" => Page::metrics(metrics(&state).await),
            "/readyz" => {
                let (status, body) = readiness(&state).await;
                Page::json(status, &body)
            }
            "/healthz" => Page::json(StatusCode::OK, &json!({"status": "ok"})),
            _ => Page::not_found(),
        }
    })
}
