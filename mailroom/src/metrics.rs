//! A small Prometheus text-format registry: counters, labelled counters, gauges and
//! histograms backed by atomics. Owns only the numbers and their rendering; each binary
//! declares its own metrics and serves `render()` at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with labels, e.g. `sends_total{outcome="sent"}`.
#[derive(Debug)]
pub struct CounterVec {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, values: &[&str]) {
        debug_assert_eq!(values.len(), self.labels.len());
        let key = values.iter().map(|s| (*s).to_owned()).collect();
        *self
            .values
            .lock()
            .expect("metrics lock")
            .entry(key)
            .or_default() += 1;
    }

    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|s| (*s).to_owned()).collect();
        self.values
            .lock()
            .expect("metrics lock")
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
}

/// A histogram of seconds with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if seconds <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Builds the text exposition, one metric at a time.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, c: &Counter) -> &mut Self {
        self.head(name, help, "counter");
        let _ = writeln!(self.0, "{name} {}", c.get());
        self
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: impl std::fmt::Display) -> &mut Self {
        self.head(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {v}");
        self
    }

    /// A gauge with one label, one line per value.
    pub fn gauge_vec<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> &mut Self {
        self.head(name, help, "gauge");
        for (v, n) in values {
            let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {n}", escape(v));
        }
        self
    }

    pub fn counter_vec(&mut self, name: &str, help: &str, c: &CounterVec) -> &mut Self {
        self.head(name, help, "counter");
        for (values, n) in c.values.lock().expect("metrics lock").iter() {
            let labels: Vec<String> = c
                .labels
                .iter()
                .zip(values)
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(self.0, "{name}{{{}}} {n}", labels.join(","));
        }
        self
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> &mut Self {
        self.head(name, help, "histogram");
        for (b, n) in h.bounds.iter().zip(&h.buckets) {
            let _ = writeln!(
                self.0,
                "{name}_bucket{{le=\"{b}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            self.0,
            "{name}_sum {}",
            h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(self.0, "{name}_count {count}");
        self
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `render()` as Prometheus text on every path of `listener` until `cancel`. For
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
                            .header("content-type", "text/plain; version=0.0.4")
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
    fn renders_prometheus_text() {
        let c = Counter::default();
        c.add(3);
        let v = CounterVec::new(&["outcome"]);
        v.inc(&["sent"]);
        v.inc(&["sent"]);
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        let text = Exposition::default()
            .counter("a_total", "A.", &c)
            .counter_vec("b_total", "B.", &v)
            .histogram("c_seconds", "C.", &h)
            .finish();
        assert!(text.contains("a_total 3\n"));
        assert!(text.contains("b_total{outcome=\"sent\"} 2\n"));
        assert!(text.contains("c_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("c_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("c_seconds_count 2\n"));
    }
}
