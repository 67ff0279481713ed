//! A webhook receiver for tests: records every request it gets and answers as told (a status,
//! an answer after a delay), and can stop listening (connections refused) and listen again on
//! the same address, as a receiver being redeployed does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Answer at once with this status.
    Status(u16),
    /// Wait this long, then answer 200 (longer than WEBHOOK_TIMEOUT: a hung receiver).
    Delay(Duration),
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: String,
    /// What the receiver answered (a delayed answer counts as 200).
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a webhook body is JSON")
    }
}

struct State {
    answer: Answer,
    got: Vec<Received>,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    listening: Mutex<Option<CancellationToken>>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let r = Self {
            addr: listener.local_addr().expect("receiver address"),
            state: Arc::new(Mutex::new(State {
                answer: Answer::Status(200),
                got: Vec::new(),
            })),
            listening: Mutex::new(None),
        };
        r.serve(listener);
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub fn answer(&self, a: Answer) {
        self.state.lock().expect("receiver state").answer = a;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("receiver state").got.clone()
    }

    /// Closes the listening socket: connections are refused until [`Self::listen_again`].
    pub fn stop_listening(&self) {
        if let Some(c) = self.listening.lock().expect("receiver").take() {
            c.cancel();
        }
    }

    pub async fn listen_again(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let cancel = CancellationToken::new();
        *self.listening.lock().expect("receiver") = Some(cancel.clone());
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(c) => c, Err(_) => continue },
                    _ = cancel.cancelled() => return,
                };
                let state = state.clone();
                let conn_cancel = cancel.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let answer = state.lock().expect("receiver state").answer.clone();
                            let status = match answer {
                                Answer::Status(s) => s,
                                Answer::Delay(d) => {
                                    tokio::time::sleep(d).await;
                                    200
                                }
                            };
                            state.lock().expect("receiver state").got.push(Received {
                                headers: parts.headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                                answered: status,
                            });
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(format!("receiver says {status}"))))
                                    .expect("response"),
                            )
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    // Stopping drops open connections too, like a receiver going away.
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_cancel.cancelled() => {}
                    }
                });
            }
        });
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop_listening();
    }
}
