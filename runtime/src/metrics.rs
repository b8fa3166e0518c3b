//! skiffd's own metrics, in the Prometheus (OpenMetrics) text format on `metrics_address`
//! (off by default), with the `prometheus-client` crate: CRI calls by method and status code
//! with latency histograms, pods and containers by state, shims started and lost, image pulls
//! (bytes, seconds, errors), layer unpack time, CNI ADD/DEL latency, and the process's memory
//! and descriptors. Counters are recorded whether or not the endpoint is on (an atomic add);
//! gauges are read when scraped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::codegen::http;

use crate::error::{IoContext, Result};
use crate::node::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.5 ms to about 65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    cri_calls: Family<Call, Counter>,
    cri_seconds: Histograms<Method>,
    pods: Family<State, Gauge>,
    containers: Family<State, Gauge>,
    shims_started: Counter,
    shims_lost: Gauge,
    pulls: Family<Outcome, Counter>,
    pull_bytes: Counter,
    pull_seconds: Histogram,
    unpack_seconds: Histogram,
    cni_seconds: Histograms<Op>,
    resident_bytes: Gauge,
    open_fds: Gauge,
    events: Counter,
    event_build_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

/// The daemon's metrics (made on first use).
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("skiff");
        let m = Metrics {
            cri_calls: Family::default(),
            cri_seconds: Family::new_with_constructor(latency),
            pods: Family::default(),
            containers: Family::default(),
            shims_started: Counter::default(),
            shims_lost: Gauge::default(),
            pulls: Family::default(),
            pull_bytes: Counter::default(),
            pull_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            unpack_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            cni_seconds: Family::new_with_constructor(latency),
            resident_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            events: Counter::default(),
            event_build_seconds: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "cri_requests",
            "CRI calls by method and gRPC status code",
            m.cri_calls.clone(),
        );
        r.register(
            "cri_request_duration_seconds",
            "CRI call latency by method",
            m.cri_seconds.clone(),
        );
        r.register("pods", "Pods by state", m.pods.clone());
        r.register("containers", "Containers by state", m.containers.clone());
        r.register(
            "shims_started",
            "Pod shims started",
            m.shims_started.clone(),
        );
        r.register(
            "shims_lost",
            "Ready pods whose shim is gone",
            m.shims_lost.clone(),
        );
        r.register("image_pulls", "Image pulls by result", m.pulls.clone());
        r.register(
            "image_pull_bytes",
            "Bytes of images pulled (as the registry serves them)",
            m.pull_bytes.clone(),
        );
        r.register(
            "image_pull_duration_seconds",
            "Image pull time",
            m.pull_seconds.clone(),
        );
        r.register(
            "layer_unpack_duration_seconds",
            "Time to unpack one layer, as its blob streams in",
            m.unpack_seconds.clone(),
        );
        r.register(
            "cni_duration_seconds",
            "CNI ADD and DEL latency",
            m.cni_seconds.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "skiffd's resident memory",
            m.resident_bytes.clone(),
        );
        r.register(
            "process_open_fds",
            "skiffd's open file descriptors",
            m.open_fds.clone(),
        );
        r.register(
            "container_events",
            "Container and pod events built for GetContainerEvents subscribers",
            m.events.clone(),
        );
        r.register(
            "container_event_build_seconds",
            "Time spent building container events (reading the statuses they carry)",
            m.event_build_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn shim_started(&self) {
        self.shims_started.inc();
    }

    /// An image pull that ended (`bytes` of the image when it succeeded).
    pub fn pulled(&self, began: Instant, bytes: Option<u64>) {
        let result = if bytes.is_some() { "ok" } else { "error" };
        self.pulls
            .get_or_create(&Outcome {
                result: result.into(),
            })
            .inc();
        self.pull_bytes.inc_by(bytes.unwrap_or(0));
        self.pull_seconds.observe(began.elapsed().as_secs_f64());
    }

    /// `n` events built in the time since `began`.
    pub fn events_built(&self, n: usize, began: Instant) {
        self.events.inc_by(n as u64);
        self.event_build_seconds
            .inc_by(began.elapsed().as_secs_f64());
    }

    pub fn unpacked(&self, began: Instant) {
        self.unpack_seconds.observe(began.elapsed().as_secs_f64());
    }

    /// A CNI `op` (ADD, DEL) that took since `began`.
    pub fn cni(&self, op: &str, began: Instant) {
        self.cni_seconds
            .get_or_create(&Op { op: op.into() })
            .observe(began.elapsed().as_secs_f64());
    }

    fn call(&self, method: &str, code: &str, began: Instant) {
        self.cri_calls
            .get_or_create(&Call {
                method: method.into(),
                code: code.into(),
            })
            .inc();
        self.cri_seconds
            .get_or_create(&Method {
                method: method.into(),
            })
            .observe(began.elapsed().as_secs_f64());
    }

    /// The text a scrape gets: gauges read now, then everything encoded.
    pub fn render(&self, node: &Node) -> String {
        self.pods.clear();
        self.containers.clear();
        let mut lost = 0;
        for p in node.pods.list() {
            let state = format!("{:?}", p.cri_state());
            self.pods.get_or_create(&State { state }).inc();
            if p.state == crate::pod::PodState::Ready
                && !(p.shim_pid > 0 && crate::pod::lifecycle::is_our_shim(p.shim_pid, &p.id))
            {
                lost += 1;
            }
        }
        self.shims_lost.set(lost);
        for c in node.containers.list() {
            let state = format!(
                "{:?}",
                crate::container::cri_state(&node.container_state(&c))
            );
            self.containers.get_or_create(&State { state }).inc();
        }
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
            .unwrap_or(0);
        self.resident_bytes.set(rss.saturating_mul(1024));
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as i64)
            .unwrap_or(0);
        self.open_fds.set(fds);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` (HTTP/1.1) until the process ends.
pub async fn serve(addr: SocketAddr, node: Arc<Node>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .ctx(|| format!("binding metrics_address {addr}"))?;
    tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving metrics at /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let node = node.clone();
                        async move {
                            let (status, body) = if req.uri().path() == "/metrics" {
                                let text = tokio::task::spawn_blocking(move || get().render(&node))
                                    .await
                                    .unwrap_or_default();
                                (http::StatusCode::OK, text)
                            } else {
                                (
                                    http::StatusCode::NOT_FOUND,
                                    "not found: try /metrics\n".into(),
                                )
                            };
                            http::Response::builder()
                                .status(status)
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(conn);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// A tower layer over the CRI services counting each call by method and status code, and
/// timing it (to its response headers: for a streamed call, until it starts streaming).
#[derive(Clone, Copy, Default)]
pub struct CriLayer;

impl<S> tower::Layer<S> for CriLayer {
    type Service = Instrumented<S>;
    fn layer(&self, inner: S) -> Instrumented<S> {
        Instrumented(inner)
    }
}

#[derive(Clone)]
pub struct Instrumented<S>(S);

impl<S, B, RB> tower::Service<http::Request<B>> for Instrumented<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let began = Instant::now();
        let fut = self.0.call(req);
        Box::pin(async move {
            let r = fut.await;
            if let Ok(resp) = &r {
                // An error answer carries its status in the headers ("trailers only"); a
                // success carries OK in the trailers.
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0);
                get().call(
                    &method,
                    &format!("{:?}", tonic::Code::from_i32(code)),
                    began,
                );
            }
            r
        })
    }
}
