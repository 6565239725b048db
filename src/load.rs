//! Scripted venue load through a gateway's proxy: bulk downloads and uploads, bids and
//! check-ins, with the counters the demo and the benches report.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Counters shared by the load tasks.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Response body bytes of bulk downloads.
    pub down_bytes: AtomicU64,
    /// Bulk requests that failed.
    pub bulk_failed: AtomicU64,
    /// Bids answered 200.
    pub bids_ok: AtomicU64,
    /// Bids that failed (error or non-200).
    pub bids_failed: AtomicU64,
    /// Check-ins answered 200.
    pub checkins_ok: AtomicU64,
    /// Check-ins that failed.
    pub checkins_failed: AtomicU64,
    /// (when the bid was sent, round trip in ms) of every successful bid.
    pub bid_rtts: Mutex<Vec<(Instant, f64)>>,
}

impl LoadStats {
    /// Bid round trips (ms) of bids sent at or after `since`, sorted.
    pub fn bid_rtts_since(&self, since: Instant) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .bid_rtts
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|(t, _)| *t >= since)
                    .map(|(_, ms)| *ms)
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// The `q` quantile (0..1) of sorted values; NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// An HTTP/1.1 connection to the gateway's proxy.
pub struct ProxyClient {
    proxy: SocketAddr,
    /// The device's own address (a loopback address of its own), if not the default.
    from: Option<std::net::IpAddr>,
    sender: Option<hyper::client::conn::http1::SendRequest<Body>>,
}

impl ProxyClient {
    /// A client for the proxy at `proxy`; connects lazily.
    pub fn new(proxy: SocketAddr) -> Self {
        Self {
            proxy,
            from: None,
            sender: None,
        }
    }

    /// A client that connects from `from` (another device, to the gateway's per-device
    /// limits: any 127.0.0.0/8 address on loopback).
    pub fn from(proxy: SocketAddr, from: std::net::IpAddr) -> Self {
        Self {
            proxy,
            from: Some(from),
            sender: None,
        }
    }

    async fn sender(
        &mut self,
    ) -> anyhow::Result<&mut hyper::client::conn::http1::SendRequest<Body>> {
        let usable = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let tcp = match self.from {
                Some(ip) => {
                    let sock = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    sock.bind(SocketAddr::new(ip, 0))?;
                    sock.connect(self.proxy).await?
                }
                None => TcpStream::connect(self.proxy).await?,
            };
            tcp.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no connection"))
    }

    /// Sends a request (absolute URL: explicit proxy) and reads the whole response body,
    /// counting its bytes into `counter`. Returns (status, body bytes).
    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
        counter: Option<&AtomicU64>,
    ) -> anyhow::Result<(u16, u64)> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body)?;
        let sender = self.sender().await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(d) = frame.data_ref() {
                n += d.len() as u64;
                if let Some(c) = counter {
                    c.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
        }
        Ok((status, n))
    }
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().boxed_unsync()
}

/// A small fixed body.
pub fn small(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync()
}

/// A body of the given bytes.
pub fn bytes(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

/// A generated body of `size` bytes in 64 KiB chunks, counting bytes as they are taken.
pub fn generated(size: u64) -> Body {
    const CHUNK: u64 = 64 * 1024;
    let block = Bytes::from(vec![0x5au8; CHUNK as usize]);
    let stream = futures_util::stream::iter(0..size.div_ceil(CHUNK)).map(move |i| {
        let len = (size - i * CHUNK).min(CHUNK) as usize;
        Ok::<_, Infallible>(Frame::data(block.slice(..len)))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// Downloads `url` over and over.
pub async fn download_loop(proxy: SocketAddr, url: String, stats: Arc<LoadStats>) {
    let mut c = ProxyClient::new(proxy);
    loop {
        match c
            .send(Method::GET, &url, &[], empty(), Some(&stats.down_bytes))
            .await
        {
            Ok((200, _)) => {}
            _ => {
                stats.bulk_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Uploads `size` bytes to `url` over and over.
pub async fn upload_loop(proxy: SocketAddr, url: String, size: u64, stats: Arc<LoadStats>) {
    let mut c = ProxyClient::new(proxy);
    let len = size.to_string();
    loop {
        match c
            .send(
                Method::POST,
                &url,
                &[("content-length", &len)],
                generated(size),
                None,
            )
            .await
        {
            Ok((200, _)) => {}
            _ => {
                stats.bulk_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends a small POST to `url` every `interval`, each on its own task so a slow one never
/// delays the next; records round trips as bids (or counts check-ins when `checkin`).
pub async fn transaction_loop(
    proxy: SocketAddr,
    url: String,
    interval: Duration,
    checkin: bool,
    stats: Arc<LoadStats>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle: Arc<Mutex<Vec<ProxyClient>>> = Arc::new(Mutex::new(Vec::new()));
    loop {
        tick.tick().await;
        let stats = stats.clone();
        let url = url.clone();
        let idle = idle.clone();
        tokio::spawn(async move {
            let mut c = idle
                .lock()
                .ok()
                .and_then(|mut v| v.pop())
                .unwrap_or_else(|| ProxyClient::new(proxy));
            let sent = Instant::now();
            let body = if checkin {
                small("{\"ticket\":\"T-1234\"}")
            } else {
                small("{\"lot\":7,\"amount\":120}")
            };
            let r = c
                .send(
                    Method::POST,
                    &url,
                    &[("content-type", "application/json")],
                    body,
                    None,
                )
                .await;
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            let ok = matches!(r, Ok((200, _)));
            match (checkin, ok) {
                (false, true) => {
                    stats.bids_ok.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut v) = stats.bid_rtts.lock() {
                        v.push((sent, ms));
                    }
                }
                (false, false) => {
                    stats.bids_failed.fetch_add(1, Ordering::Relaxed);
                }
                (true, true) => {
                    stats.checkins_ok.fetch_add(1, Ordering::Relaxed);
                }
                (true, false) => {
                    stats.checkins_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            if r.is_ok() {
                if let Ok(mut v) = idle.lock() {
                    v.push(c);
                }
            }
        });
    }
}
