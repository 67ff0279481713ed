//! Metrics on the `prometheus-client` crate. Each binary registers its families once, at start,
//! in a [`Registry`] of its own, and keeps the handles: an increment is an atomic add on a
//! counter found by a label set of `&'static str`s (a read lock, no allocation). Owns the label
//! sets the binaries share, the latency buckets, the text rendering, and the `/metrics` server
//! of processes that have no HTTP server of their own. Never decides what is counted.

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// A gauge of a float (sending rates), kept as the bits of an `f64`.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// `{outcome="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// `{class="…"}`: an error class. Owned, because dead letters carry theirs as data.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

/// `{kind="…"}`: a job or request kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// `{reason="…"}`: why the dispatcher is paused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of seconds with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// Registers `metric` in `registry` and gives it back: the handle its binary keeps.
pub fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// Counts one event in a family keyed by outcome.
pub fn count(family: &Family<OutcomeLabel, Counter>, outcome: &'static str) {
    family.get_or_create(&OutcomeLabel { outcome }).inc();
}

/// What `/metrics` answers with: OpenMetrics text (Prometheus reads it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Connections the metrics server serves at once; more wait to be accepted. A scraper needs
/// one or two: the cap only keeps a flood of idle connections from costing a task each.
pub const MAX_METRICS_CONNECTIONS: usize = 64;

/// How long a metrics client may take to send its request headers, and how long a kept-alive
/// connection may sit idle between requests, before it is closed.
pub const METRICS_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One answer of an operations listener ([`serve_pages`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: http::StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Page {
    /// 200 with the metrics text.
    pub fn metrics(body: String) -> Self {
        Self {
            status: http::StatusCode::OK,
            content_type: CONTENT_TYPE,
            body,
        }
    }

    /// JSON with a status.
    pub fn json(status: http::StatusCode, body: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    /// 404 for a path the listener does not serve.
    pub fn not_found() -> Self {
        Self::json(
            http::StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found"}),
        )
    }
}

/// What an operations listener answers for a path.
pub type PageFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Page> + Send>>;

/// Serves `render()` as OpenMetrics text on every path of `listener` until `cancel`: see
/// [`serve_pages`].
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    render: F,
    cancel: tokio_util::sync::CancellationToken,
) where
    F: Fn() -> String + Send + Sync + 'static,
{
    serve_pages(
        listener,
        move |_path: &str| -> PageFuture {
            let page = Page::metrics(render());
            Box::pin(async move { page })
        },
        cancel,
    )
    .await
}

/// Serves `page(path)` on `listener` until `cancel`: the operations listener (metrics, health)
/// of a process, apart from any public port. At most [`MAX_METRICS_CONNECTIONS`] at once, each
/// closed if it sends no request headers within [`METRICS_HEADER_TIMEOUT`]; a failing `accept`
/// (too many open files) backs off instead of spinning.
pub async fn serve_pages<F>(
    listener: tokio::net::TcpListener,
    page: F,
    cancel: tokio_util::sync::CancellationToken,
) where
    F: Fn(&str) -> PageFuture + Send + Sync + 'static,
{
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let page = std::sync::Arc::new(page);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        // A slot before accepting: past the cap, connections wait in the listen backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = cancel.cancelled() => return,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let page = page.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let answer = page(req.uri().path());
                async move {
                    let p = answer.await;
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(p.status)
                            .header("content-type", p.content_type)
                            .body(Full::new(bytes::Bytes::from(p.body)))
                            .expect("valid response"),
                    )
                }
            });
            // The header timeout also ends a kept-alive connection that sends nothing more.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(METRICS_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_idle_metrics_connection_is_closed_and_a_request_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        tokio::spawn(super::serve(
            listener,
            || "up 1\n".to_owned(),
            cancel.clone(),
        ));
        // A connection that never sends its request is closed after the header timeout,
        // instead of holding its task (and a slot) for ever.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(
            super::METRICS_HEADER_TIMEOUT * 3,
            idle.read_to_end(&mut buf),
        )
        .await;
        assert!(read.is_ok(), "an idle connection stayed open");
        assert!(started.elapsed() >= super::METRICS_HEADER_TIMEOUT / 2);
        // A real request is answered.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("up 1\n"), "{answer}");
        cancel.cancel();
    }

    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("a", "A.", c.clone());
        let v = Family::<OutcomeLabel, Counter>::default();
        registry.register("b", "B.", v.clone());
        let h = Histogram::new([0.1, 1.0]);
        registry.register("c_seconds", "C.", h.clone());
        c.inc_by(3);
        v.get_or_create(&OutcomeLabel { outcome: "sent" }).inc();
        v.get_or_create(&OutcomeLabel { outcome: "sent" }).inc();
        h.observe(0.05);
        h.observe(0.5);
        let text = render(&registry);
        assert!(text.contains("a_total 3\n"), "{text}");
        assert!(text.contains("b_total{outcome=\"sent\"} 2\n"), "{text}");
        assert!(text.contains("c_seconds_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("c_seconds_bucket{le=\"1.0\"} 2\n"), "{text}");
        assert!(text.contains("c_seconds_count 2\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
