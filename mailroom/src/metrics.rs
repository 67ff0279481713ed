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

/// Serves `render()` as OpenMetrics text on every path of `listener` until `cancel`. For
/// processes (the dispatcher) that have no HTTP server of their own.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    render: F,
    cancel: tokio_util::sync::CancellationToken,
) where
    F: Fn() -> String + Send + Sync + 'static,
{
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let render = std::sync::Arc::new(render);
    loop {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = cancel.cancelled() => return,
        };
        let render = render.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body = render();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", CONTENT_TYPE)
                            .body(Full::new(bytes::Bytes::from(body)))
                            .expect("valid response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
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
