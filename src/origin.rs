//! The demo origin: a small local HTTP/1.1 server standing in for an event's web services.
//! It serves `/assets/<bytes>` (generated bulk bodies), `POST /checkin`, `POST /bid`,
//! `POST /upload` (counts and discards), `POST /upload/slow/<bytes per second>` (the same,
//! read no faster than that: a slow origin), `POST /digest` (counts and answers the body's length
//! and SHA-256, so a test can check that a striped body arrived whole and in order), `/echo`
//! (returns the request head), `/bids` (the bids' keys in arrival order) and `/stats`
//! (its counters as JSON, for the benches). Used by
//! `canopy demo`, the benchmarks and the end-to-end tests.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The answer to a `/digest` upload of `body`: its length and SHA-256, hex, on one line
/// (what tests expect of an upload that arrived whole).
pub fn digest_of(body: &[u8]) -> String {
    use sha2::Digest;
    digest_line(body.len() as u64, &sha2::Sha256::digest(body))
}

/// The `/digest` answer's line for `n` bytes with SHA-256 `hash`.
fn digest_line(n: u64, hash: &[u8]) -> String {
    format!("{n} {}\n", tunnel_io::tls::hex(hash))
}

/// Counters of the demo origin.
#[derive(Debug, Default)]
pub struct OriginStats {
    /// Bids received.
    pub bids: AtomicU64,
    /// Check-ins received.
    pub checkins: AtomicU64,
    /// Upload bytes received (counted as they arrive).
    pub upload_bytes: AtomicU64,
    /// `/digest` requests received.
    pub digests: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Idempotency keys of the bids received, in arrival order (the last 10,000).
    pub bid_keys: std::sync::Mutex<std::collections::VecDeque<String>>,
    /// Fetches of `/static/...` and `/short/...` by path (at most 10,000 paths).
    pub static_fetches: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Telemetry (`/t/...`) received.
    pub telemetry: AtomicU64,
    /// The last telemetry request as received: target, headers, body (JSON).
    pub last_telemetry: std::sync::Mutex<Option<serde_json::Value>>,
}

/// Binds the demo origin; serve it with [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the demo origin on a listener forever.
pub async fn serve(listener: TcpListener, stats: Arc<OriginStats>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(tcp, stats.clone()));
    }
}

/// Serves the demo origin on an in-memory listener (the in-process harness's).
pub async fn serve_virtual(mut listener: crate::linkem::VirtualListener, stats: Arc<OriginStats>) {
    while let Some(io) = listener.accept().await {
        tokio::spawn(serve_connection(io, stats.clone()));
    }
}

/// Serves one connection until it closes.
async fn serve_connection<IO>(io: IO, stats: Arc<OriginStats>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let svc = service_fn(move |req| handle(req, stats.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Serves the demo origin over TLS (for CONNECT tests) with a PEM certificate and key.
pub async fn serve_tls(
    listener: TcpListener,
    stats: Arc<OriginStats>,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    let certs = tunnel_io::tls::certs(cert_pem, std::path::Path::new("origin cert"))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem)?;
    let cfg = rustls::ServerConfig::builder_with_provider(tunnel_io::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = stats.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = service_fn(move |req| handle(req, stats.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *r.status_mut() = status;
    r
}

/// Reads a request body to its end; counts bytes into `counter` as they arrive.
async fn drain(body: Incoming, counter: Option<&AtomicU64>) -> u64 {
    drained(body, counter).await.unwrap_or_else(|n| n)
}

/// Reads `body` to its end: its length, or what arrived before it broke (`Err`).
async fn drained(body: Incoming, counter: Option<&AtomicU64>) -> Result<u64, u64> {
    let mut n = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(n) };
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
            if let Some(c) = counter {
                c.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
    }
    Ok(n)
}

async fn handle(
    req: Request<Incoming>,
    stats: Arc<OriginStats>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Some(size) = path.strip_prefix("/assets/") {
        let size: u64 = size
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1 << 20);
        return Ok(asset(size, req.headers().get(http::header::RANGE)));
    }
    if let Some(rate) = path.strip_prefix("/upload/slow/") {
        let rate: u64 = rate.parse().unwrap_or(100_000).max(1);
        let started = tokio::time::Instant::now();
        let mut n = 0u64;
        let mut body = req.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                n += d.len() as u64;
                stats
                    .upload_bytes
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                // no faster than `rate`: the body waits here, and hyper reads no further
                let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
        }
        return Ok(text(StatusCode::OK, format!("{n}\n")));
    }
    if let Some(kind) = ["/static/", "/short/"]
        .into_iter()
        .find(|p| path.starts_with(p) && method == Method::GET)
    {
        drain(req.into_body(), None).await;
        return Ok(static_asset(&stats, &path, kind == "/short/"));
    }
    if path.starts_with("/t/") {
        return Ok(telemetry(&stats, req).await);
    }
    let resp = match (method, path.as_str()) {
        (Method::GET, "/stats/telemetry") => text(
            StatusCode::OK,
            serde_json::json!({
                "count": stats.telemetry.load(Ordering::Relaxed),
                "last": *stats.last_telemetry.lock().unwrap_or_else(|e| e.into_inner()),
            })
            .to_string()
                + "\n",
        ),
        (Method::GET, "/stats/static") => {
            let m = stats
                .static_fetches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            text(
                StatusCode::OK,
                serde_json::to_string(&m).unwrap_or_default() + "\n",
            )
        }
        (Method::POST, "/bid") => {
            let key = req
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            // a bid whose body broke on the way is not taken, as a real origin would not
            let Ok(n) = drained(req.into_body(), None).await else {
                return Ok(text(StatusCode::BAD_REQUEST, "bid body cut short\n".into()));
            };
            let id = stats.bids.fetch_add(1, Ordering::Relaxed) + 1;
            {
                let mut log = stats.bid_keys.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() >= 10_000 {
                    log.pop_front();
                }
                log.push_back(key.clone());
            }
            text(
                StatusCode::OK,
                format!("{{\"accepted\":true,\"bid\":{id},\"bytes\":{n},\"key\":\"{key}\"}}\n"),
            )
        }
        (Method::POST, "/checkin") => {
            drain(req.into_body(), None).await;
            let id = stats.checkins.fetch_add(1, Ordering::Relaxed) + 1;
            text(
                StatusCode::OK,
                format!("{{\"checked_in\":true,\"n\":{id}}}\n"),
            )
        }
        (Method::POST | Method::PUT, "/upload") => {
            let n = drain(req.into_body(), Some(&stats.upload_bytes)).await;
            text(StatusCode::OK, format!("{n}\n"))
        }
        (Method::POST | Method::PUT, "/digest") => {
            use sha2::Digest;
            stats.digests.fetch_add(1, Ordering::Relaxed);
            let mut hash = sha2::Sha256::new();
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    hash.update(d);
                    n += d.len() as u64;
                    stats
                        .upload_bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            text(StatusCode::OK, digest_line(n, &hash.finalize()))
        }
        (Method::GET, "/stats") => {
            drain(req.into_body(), None).await;
            text(
                StatusCode::OK,
                format!(
                    "{{\"bids\":{},\"checkins\":{},\"upload_bytes\":{},\"connections\":{}}}\n",
                    stats.bids.load(Ordering::Relaxed),
                    stats.checkins.load(Ordering::Relaxed),
                    stats.upload_bytes.load(Ordering::Relaxed),
                    stats.connections.load(Ordering::Relaxed)
                ),
            )
        }
        (Method::GET, "/bids") => {
            drain(req.into_body(), None).await;
            let keys: Vec<String> = stats
                .bid_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect();
            text(
                StatusCode::OK,
                serde_json::to_string(&keys).unwrap_or_default() + "\n",
            )
        }
        (_, "/echo") => {
            let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            drain(req.into_body(), None).await;
            text(StatusCode::OK, out)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(resp)
}

/// Telemetry: counted, and the last one kept as it arrived (up to 64 KiB of body), so a
/// test sees what left the venue.
async fn telemetry(stats: &OriginStats, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("?").to_string()),
            )
        })
        .collect();
    stats.telemetry.fetch_add(1, Ordering::Relaxed);
    *stats
        .last_telemetry
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(serde_json::json!({
        "target": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }));
    text(StatusCode::OK, "ok\n".into())
}

/// A venue asset: `/static/NAME` says nothing of its freshness (the gateway's per-site
/// default applies to images, styles and scripts), `/short/NAME` is fresh for a second
/// (then stale: what a cache may still serve when the uplinks are down). Each fetch is
/// counted by path.
fn static_asset(stats: &OriginStats, path: &str, short: bool) -> Response<Body> {
    {
        let mut m = stats
            .static_fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if m.len() < 10_000 || m.contains_key(path) {
            *m.entry(path.to_string()).or_default() += 1;
        }
    }
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    let ct = match ext {
        "png" => "image/png",
        "css" => "text/css",
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    };
    let mut r = text(
        StatusCode::OK,
        format!("asset {path}\n{}\n", "x".repeat(2000)),
    );
    let h = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(ct) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    if short {
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=1"),
        );
    }
    r
}

/// A generated body of `size` bytes (a repeating pattern: byte `o` is `(o % 65536) % 251`),
/// streamed in 64 KiB chunks; `Range: bytes=N-` gets the rest from `N` (206), so a download
/// can resume. The ETag names the size (the content never changes).
fn asset(size: u64, range: Option<&http::HeaderValue>) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let pattern: Bytes = (0..CHUNK)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let start = range
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    if start.is_some_and(|s| s >= size) {
        let mut r = text(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range not satisfiable\n".into(),
        );
        if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{size}")) {
            r.headers_mut().insert(http::header::CONTENT_RANGE, v);
        }
        return r;
    }
    let from = start.unwrap_or(0);
    let stream = futures_util::stream::unfold(from, move |pos| {
        let pattern = pattern.clone();
        async move {
            if pos >= size {
                return None;
            }
            let off = (pos % CHUNK) as usize;
            let len = ((size - pos) as usize).min(CHUNK as usize - off);
            Some((
                Ok::<_, Infallible>(Frame::data(pattern.slice(off..off + len))),
                pos + len as u64,
            ))
        }
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_LENGTH, (size - from).into());
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        http::header::ACCEPT_RANGES,
        http::HeaderValue::from_static("bytes"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"asset-{size}\"")) {
        h.insert(http::header::ETAG, v);
    }
    if start.is_some() {
        if let Ok(v) = http::HeaderValue::from_str(&format!("bytes {from}-{}/{size}", size - 1)) {
            h.insert(http::header::CONTENT_RANGE, v);
        }
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    r
}
