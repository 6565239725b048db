//! Idle HTTP/1.1 connections to origins, kept for the next request to the same origin: a
//! request through the relay then costs no TCP (and TLS) handshake when one went to that
//! origin shortly before. Connections are made only by `Egress::connect`, so every one was
//! checked against the allowlist and its address rules when it was opened; the name and
//! port are checked again for every request that takes one.
//!
//! A connection goes back to the pool once its response is done (hyper says it is ready
//! for another request), at most [`MAX_IDLE_PER_ORIGIN`] per origin and [`MAX_IDLE`] in
//! all, and is dropped after [`IDLE`] unused (origins close idle keep-alive connections on their own; a connection
//! they closed is seen closed and skipped). A request a pooled connection turns out not to
//! take (closed in the meantime) comes back whole and goes on a fresh connection.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The request body every origin connection carries.
pub(crate) type OriginBody = UnsyncBoxBody<Bytes, tunnel_io::BodyError>;
/// The sending half of an origin connection.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<OriginBody>;

/// Idle connections by origin, each with when it went idle.
type Idle = HashMap<OriginKey, Vec<(Sender, Instant)>>;

/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 16;
/// Idle connections kept in all.
const MAX_IDLE: usize = 256;
/// An idle connection is dropped after this long: below the 5 s after which common
/// servers (Node.js, Apache) close idle keep-alive connections themselves, so a request
/// rarely meets one the origin is closing.
const IDLE: Duration = Duration::from_secs(4);

/// Which origin: lower-case host, port, TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OriginKey {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl OriginKey {
    pub(crate) fn new(host: &str, port: u16, tls: bool) -> Self {
        Self {
            host: host.to_ascii_lowercase(),
            port,
            tls,
        }
    }
}

/// The pool.
#[derive(Default)]
pub(crate) struct OriginPool {
    idle: Mutex<Idle>,
}

impl OriginPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty pool, with its sweeper: idle connections go when unused for [`IDLE`],
    /// also on a quiet relay. The sweeper ends with the pool.
    pub(crate) fn start() -> Arc<Self> {
        let pool = Arc::new(Self::default());
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE).await;
                match weak.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
        pool
    }

    /// An idle connection to `key` ready for a request, newest first.
    pub(crate) fn take(&self, key: &OriginKey) -> Option<Sender> {
        let now = tunnel_io::clock::now();
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some((s, at)) = list.pop() {
            if now.duration_since(at) < IDLE && s.is_ready() && !s.is_closed() {
                found = Some(s);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        if found.is_some() {
            metrics::counter!("canopy_relay_origin_connections_reused_total").increment(1);
        }
        Self::count(&idle);
        found
    }

    /// Drops the connections idle for longer than [`IDLE`] (run every [`IDLE`]).
    fn sweep(&self) {
        let mut idle = self.lock();
        Self::drop_stale(&mut idle, tunnel_io::clock::now());
        Self::count(&idle);
    }

    /// Drops the connections idle for [`IDLE`] or closed.
    fn drop_stale(idle: &mut Idle, now: Instant) {
        idle.retain(|_, l| {
            l.retain(|(s, at)| now.duration_since(*at) < IDLE && !s.is_closed());
            !l.is_empty()
        });
    }

    fn count(idle: &Idle) -> usize {
        let n: usize = idle.values().map(Vec::len).sum();
        metrics::gauge!("canopy_relay_origin_connections_idle").set(n as f64);
        n
    }

    /// Puts `sender` back once its response is done (within [`IDLE`]).
    pub(crate) fn give_back(self: &Arc<Self>, key: OriginKey, mut sender: Sender) {
        let pool = self.clone();
        tokio::spawn(async move {
            // closed, failed, or still busy after IDLE: dropped
            if let Ok(Ok(())) = tokio::time::timeout(IDLE, sender.ready()).await {
                pool.keep(key, sender);
            }
        });
    }

    fn keep(&self, key: OriginKey, sender: Sender) {
        let now = tunnel_io::clock::now();
        let mut idle = self.lock();
        // drop what went stale; beyond the bound, the oldest idle connection goes
        Self::drop_stale(&mut idle, now);
        if Self::count(&idle) >= MAX_IDLE {
            let oldest = idle
                .iter()
                .filter_map(|(k, l)| l.first().map(|(_, at)| (k.clone(), *at)))
                .min_by_key(|(_, at)| *at)
                .map(|(k, _)| k);
            if let Some(k) = oldest {
                if let Some(l) = idle.get_mut(&k) {
                    l.remove(0);
                    if l.is_empty() {
                        idle.remove(&k);
                    }
                }
            }
        }
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push((sender, now));
        }
        Self::count(&idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;

    /// A keep-alive origin on loopback that answers every request with the number of
    /// connections it has accepted so far.
    async fn origin() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut n = 0u32;
            while let Ok((tcp, _)) = l.accept().await {
                n += 1;
                let conn_no = n;
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(conn_no.to_string())),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    async fn connect(addr: std::net::SocketAddr) -> Sender {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        s
    }

    async fn get(s: &mut Sender) -> String {
        let body: OriginBody = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let req = hyper::Request::get("/").body(body).expect("req");
        let resp = s.send_request(req).await.expect("resp");
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[tokio::test]
    async fn a_connection_is_taken_again_once_its_answer_is_done() {
        let addr = origin().await;
        let pool = Arc::new(OriginPool::default());
        let key = OriginKey::new("Origin.Test", addr.port(), false);
        assert!(pool.take(&key).is_none());
        let mut s = connect(addr).await;
        assert_eq!(get(&mut s).await, "1");
        pool.give_back(key.clone(), s);
        let mut again = None;
        for _ in 0..50 {
            again = pool.take(&OriginKey::new("origin.test", addr.port(), false));
            if again.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut s = again.expect("the idle connection, whatever the host's case");
        assert_eq!(get(&mut s).await, "1", "the same connection");
        // another origin (TLS or not is part of the key) has none
        assert!(pool
            .take(&OriginKey::new("origin.test", addr.port(), true))
            .is_none());
    }
}
