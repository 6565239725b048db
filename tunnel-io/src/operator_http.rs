//! The small HTTP/1.1 listeners an operator reads (over TLS when asked): the gateway's
//! admin API and status page, the relay's fleet view, `/metrics` at both ends. One accept loop for all of them
//! (at most so many connections at once, a request's head within 10 s, a connection for
//! 5 minutes at most), the pages' static files with their headers, and the script both
//! pages share (`operator_http/operator.js`).

use crate::listen::accept;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The script both operator pages load first, as `/operator.js`.
pub const OPERATOR_JS: &str = include_str!("operator_http/operator.js");

/// A request's head must arrive within this.
const HEAD_WITHIN: Duration = Duration::from_secs(10);
/// A connection (kept alive or stalled) lasts this long at most.
const CONNECTION_AT_MOST: Duration = Duration::from_secs(300);

/// Serves HTTP/1.1 on `listener` until the task is dropped: each request is answered by
/// `handler(peer, request)`; at most `max_connections` at once, more wait to be accepted.
pub async fn serve<H, F, B>(listener: TcpListener, max_connections: usize, handler: H)
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_tls(listener, None, max_connections, handler).await
}

/// Like [`serve`], over TLS with `tls` when it is set (the handshake counts towards the
/// request head's 10 s).
pub async fn serve_tls<H, F, B>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    handler: H,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = accept(&listener).await;
        let (handler, tls) = (handler.clone(), tls.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let answer = handler(peer, req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let started = tokio::time::Instant::now();
            // the first head within HEAD_WITHIN of the accept, a TLS handshake included
            let http = move || {
                let mut http = hyper::server::conn::http1::Builder::new();
                let left = HEAD_WITHIN.saturating_sub(started.elapsed());
                http.timer(TokioTimer::new())
                    .header_read_timeout(left.max(Duration::from_millis(1)));
                http
            };
            let _ = tokio::time::timeout(CONNECTION_AT_MOST, async {
                match tls {
                    None => {
                        let _ = http().serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(tls) => match tokio::time::timeout(HEAD_WITHIN, tls.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = http().serve_connection(TokioIo::new(s), svc).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            tracing::debug!(%peer, within = ?HEAD_WITHIN, "no TLS handshake in time")
                        }
                    },
                }
            })
            .await;
            drop(slot);
        });
    }
}

/// An operator API's answer: `json`, the text of a JSON value, never cached.
pub fn json(status: StatusCode, json: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(json)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A static file of an operator page: `kind` its content type, `csp` the
/// Content-Security-Policy it runs under (the pages hold no data: they are served without
/// a token and read their API with one).
pub fn asset(body: &'static str, kind: &'static str, csp: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn answers_with_the_handler_and_holds_at_most_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(
            listener,
            1,
            |peer: SocketAddr, req: Request<Incoming>| async move {
                let body = format!("{} {}", req.uri().path(), peer.ip());
                Response::new(Full::new(Bytes::from(body)))
            },
        ));
        let got = ask(
            addr,
            b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("/x 127.0.0.1"), "{got}");
        // one connection held open: the next waits to be accepted until it closes
        let held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = tokio::spawn(ask(
            addr,
            b"GET /y HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "answered past the limit");
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(got.ends_with("/y 127.0.0.1"), "{got}");
        server.abort();
    }

    #[test]
    fn an_asset_carries_its_type_and_policy() {
        let r = asset("x", "text/css", "default-src 'self'");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/css");
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'"
        );
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
