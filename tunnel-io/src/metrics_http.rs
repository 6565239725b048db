//! The Prometheus endpoint (`GET /metrics`) each side serves on its `metrics.listen`.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
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

/// Connections served at once (a Prometheus or two, a curl).
const MAX_CONNECTIONS: usize = 8;

/// Serves `/metrics` on the listener until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let Some(handle) = recorder() else {
        tracing::warn!("metrics recorder unavailable; /metrics not served");
        return;
    };
    crate::operator_http::serve(
        listener,
        MAX_CONNECTIONS,
        move |_peer, req: Request<Incoming>| {
            let handle = handle.clone();
            async move {
                if req.uri().path() == "/metrics" {
                    let mut r = Response::new(Full::new(Bytes::from(handle.render())));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                } else {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"try /metrics\n")));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                }
            }
        },
    )
    .await;
}
