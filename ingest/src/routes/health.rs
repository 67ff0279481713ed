//! Operations endpoints: `/healthz` (the process answers), `/readyz` (the database, the
//! broker, the outbox backlog) and `/metrics` (Prometheus text).

use http::StatusCode;
use mailroom::store;
use serde_json::json;

use crate::error::ApiError;
use crate::relay::BrokerState;
use crate::response::{Resp, json_response, text_response};
use crate::state::AppState;

pub async fn healthz() -> Result<Resp, ApiError> {
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

/// Ready when the database answers. A broker outage is reported but does not make ingest
/// unready: the outbox holds the jobs until RabbitMQ is back.
pub async fn readyz(state: &AppState) -> Result<Resp, ApiError> {
    let db = store::read::ping(&state.pool).await;
    let backlog = store::outbox_backlog(&state.pool).await.ok();
    let broker = match &*state.broker_state.read().expect("state lock") {
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
    Ok(json_response(
        status,
        &json!({
            "ready": status == StatusCode::OK,
            "database": db_json,
            "broker": broker,
            "outbox_backlog": backlog,
        }),
    ))
}

/// The metrics, with the two states (backlog, broker connection) read now.
pub async fn metrics(state: &AppState) -> Result<Resp, ApiError> {
    let backlog = store::outbox_backlog(&state.pool).await.unwrap_or(-1);
    let connected = matches!(
        &*state.broker_state.read().expect("state lock"),
        BrokerState::Connected
    );
    state.metrics.outbox_backlog.set(backlog);
    state.metrics.broker_connected.set(i64::from(connected));
    Ok(text_response(
        StatusCode::OK,
        mailroom::metrics::CONTENT_TYPE,
        state.metrics.render(),
    ))
}
