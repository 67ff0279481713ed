//! An SES v2 stand-in of the project's own, for benchmarks and for tests that need what moto
//! cannot give: a fixed answer time, GetAccount with a chosen `MaxSendRate`, and a count of the
//! sends per wall-clock second and of the most calls ever in flight at once.
//!
//! It answers `SendEmail` (`POST /v2/email/outbound-emails`, and Postmark's `POST /email` for
//! the zero2prod reference of BENCHMARKS.md) with a fresh `MessageId` after `latency`, and `GetAccount` (`GET /v2/email/account`) when a rate is set (404 otherwise, like
//! moto). It checks nothing: senders, bodies and signatures are not looked at. What it saw is
//! at `GET /stats` (JSON) and [`SesStandIn::stats`]; `POST /reset` clears it.
//!
//! It must never be the bottleneck of what it measures: `scripts/bench` measures its own
//! capacity in the same run and prints it beside the figures.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the stand-in behaves.
#[derive(Debug, Clone, Default)]
pub struct StandInConfig {
    /// How long each `SendEmail` takes to answer (SES itself takes tens of milliseconds).
    pub latency: Duration,
    /// What `GetAccount` reports as `MaxSendRate`; None answers 404, as moto does.
    pub max_send_rate: Option<f64>,
}

/// What the stand-in saw since it started or was last reset.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct StandInStats {
    /// `SendEmail` calls answered.
    pub sent: u64,
    /// The most `SendEmail` calls in flight at one moment.
    pub max_in_flight: u64,
    /// Sends that arrived in each wall-clock second: `[unix second, count]`, oldest first.
    pub per_second: Vec<(u64, u64)>,
}

#[derive(Default)]
struct State {
    sent: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    per_second: Mutex<BTreeMap<u64, u64>>,
    /// The last `PutAccountDetails` body: the account is in the sandbox with a pending review
    /// once there is one.
    account_details: Mutex<Option<serde_json::Value>>,
}

impl State {
    fn stats(&self) -> StandInStats {
        StandInStats {
            sent: self.sent.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            per_second: self
                .per_second
                .lock()
                .expect("stats lock")
                .iter()
                .map(|(s, n)| (*s, *n))
                .collect(),
        }
    }

    fn reset(&self) {
        self.sent.store(0, Ordering::Relaxed);
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        self.per_second.lock().expect("stats lock").clear();
    }
}

/// A running stand-in; stops when dropped.
pub struct SesStandIn {
    pub addr: SocketAddr,
    state: Arc<State>,
    cancel: CancellationToken,
}

impl SesStandIn {
    /// Serves on `listener` until dropped.
    pub fn start(listener: TcpListener, config: StandInConfig) -> Self {
        let addr = listener.local_addr().expect("stand-in address");
        let state = Arc::new(State::default());
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, config, state.clone(), cancel.clone()));
        Self {
            addr,
            state,
            cancel,
        }
    }

    /// Binds a free port on 127.0.0.1 and serves there.
    pub async fn bind(config: StandInConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SES stand-in");
        Self::start(listener, config)
    }

    /// The `SES_ENDPOINT_URL` that points at it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> StandInStats {
        self.state.stats()
    }

    pub fn reset(&self) {
        self.state.reset()
    }

    /// Stops accepting; answers in progress finish.
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for SesStandIn {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve(
    listener: TcpListener,
    config: StandInConfig,
    state: Arc<State>,
    cancel: CancellationToken,
) {
    let config = Arc::new(config);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = cancel.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let (config, state) = (config.clone(), state.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (config, state) = (config.clone(), state.clone());
                async move { Ok::<_, Infallible>(answer(req, &config, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn answer(
    req: Request<Incoming>,
    config: &StandInConfig,
    state: &State,
) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    // Read the whole request, as SES would, before answering.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match (method, path.as_str()) {
        // SES v2 SendEmail; and Postmark's send (`POST /email`), which the zero2prod reference
        // app calls, so both can be measured against the same stand-in.
        (Method::POST, "/v2/email/outbound-emails" | "/email") => {
            // Counted when it arrives, as SES counts a send against the rate.
            let second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            *state
                .per_second
                .lock()
                .expect("stats lock")
                .entry(second)
                .or_default() += 1;
            let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            state.max_in_flight.fetch_max(now, Ordering::Relaxed);
            if !config.latency.is_zero() {
                tokio::time::sleep(config.latency).await;
            }
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
            let n = state.sent.fetch_add(1, Ordering::Relaxed) + 1;
            json(StatusCode::OK, format!(r#"{{"MessageId":"standin-{n}"}}"#))
        }
        // PutAccountDetails: remembered, and the account waits in the sandbox for its review.
        (Method::POST, "/v2/email/account/details") => {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(details) => {
                    *state.account_details.lock().expect("details lock") = Some(details);
                    json(StatusCode::OK, "{}".into())
                }
                Err(e) => json(
                    StatusCode::BAD_REQUEST,
                    format!(r#"{{"message":"not JSON: {e}"}}"#),
                ),
            }
        }
        (Method::GET, "/account-details") => json(
            StatusCode::OK,
            state
                .account_details
                .lock()
                .expect("details lock")
                .clone()
                .unwrap_or(serde_json::Value::Null)
                .to_string(),
        ),
        (Method::GET, "/v2/email/account") => match config.max_send_rate {
            Some(rate) => {
                let details = state.account_details.lock().expect("details lock").clone();
                let mut account = serde_json::json!({
                    "SendQuota": {
                        "Max24HourSend": 1.0e9,
                        "MaxSendRate": rate,
                        "SentLast24Hours": state.sent.load(Ordering::Relaxed) as f64,
                    },
                    "SendingEnabled": true,
                    "ProductionAccessEnabled": details.is_none(),
                    "EnforcementStatus": "HEALTHY",
                });
                if let Some(mut d) = details {
                    d["ReviewDetails"] =
                        serde_json::json!({"Status": "PENDING", "CaseId": "standin-case-1"});
                    account["Details"] = d;
                }
                json(StatusCode::OK, account.to_string())
            }
            None => json(
                StatusCode::NOT_FOUND,
                r#"{"message":"GetAccount is not served: no MaxSendRate was given"}"#.into(),
            ),
        },
        (Method::GET, "/stats") => json(
            StatusCode::OK,
            serde_json::to_string(&state.stats()).expect("stats serialize"),
        ),
        (Method::POST, "/reset") => {
            state.reset();
            json(StatusCode::OK, "{}".into())
        }
        _ => json(
            StatusCode::NOT_FOUND,
            format!(r#"{{"message":"the stand-in does not serve {path}"}}"#),
        ),
    }
}
