//! The Prometheus endpoint (`GET /metrics`) each side serves on its `metrics.listen`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tokio::net::TcpListener;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once; later calls return the same handle.
/// `None` if another recorder was installed first.
pub fn recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency_buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                10.24,
            ];
            PrometheusBuilder::new()
                .set_buckets(&latency_buckets)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Serves `/metrics` on the listener until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let Some(handle) = recorder() else {
        tracing::warn!("metrics recorder unavailable; /metrics not served");
        return;
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        hyper::Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(handle.render())))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                    };
                    resp
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
