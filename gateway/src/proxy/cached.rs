//! The edge cache's shell: GETs and HEADs through the proxy and the sites are answered
//! from the store when it can (`crate::cache`), misses for the same URL wait for one
//! fetch (the first, the leader; the others follow), a stale answer is revalidated or,
//! with no uplink up or a failing origin, served stale. Every answer says what happened in
//! `Cache-Status` (RFC 9211; the cache's name is `canopy`) and, from the store, `Age`.

use super::cache_disk::DiskTier;
use super::*;
use crate::cache::{Lookup, NotStored, Purge, Purged, Served, ServedBody, Store, StoreConfig};
use http_body::Frame;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::sync::watch;
use tracing::warn;

/// The cache's name in `Cache-Status`.
const NAME: &str = "canopy";

/// The longest a miss waits for the fetch of the same URL under way (which ends when its
/// device has the whole body: a slow device must not hold the others for long).
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// The edge cache: the store, its disk tier, and the fetches under way.
pub struct EdgeCache {
    store: Arc<Mutex<Store>>,
    disk: Option<Arc<DiskTier>>,
    inflight: Inflight,
}

/// The store, locked; the disk work it asked for meanwhile is queued when let go (under
/// the lock, so in the store's order).
struct StoreGuard<'a> {
    store: std::sync::MutexGuard<'a, Store>,
    disk: Option<&'a DiskTier>,
}

impl std::ops::Deref for StoreGuard<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl std::ops::DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.disk {
            let ops = self.store.take_ops();
            if !ops.is_empty() {
                d.submit(&mut self.store, ops);
            }
        }
    }
}

fn lock<'a>(store: &'a Mutex<Store>, disk: Option<&'a DiskTier>) -> StoreGuard<'a> {
    StoreGuard {
        store: store.lock().unwrap_or_else(|p| p.into_inner()),
        disk,
    }
}

impl EdgeCache {
    /// The cache; with a disk tier in `disk_dir` (read back into the store first) when
    /// given.
    pub(crate) fn new(
        mut cfg: StoreConfig,
        disk_dir: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        if disk_dir.is_none() {
            cfg.disk_bytes = 0;
        }
        let store = Arc::new(Mutex::new(Store::new(cfg)));
        let disk = match disk_dir {
            Some(dir) => Some(Arc::new(DiskTier::open(dir, &store)?)),
            None => None,
        };
        let me = Self {
            store,
            disk,
            inflight: Arc::default(),
        };
        gauges(&me.store());
        Ok(me)
    }

    fn store(&self) -> StoreGuard<'_> {
        lock(&self.store, self.disk.as_deref())
    }

    /// `s` with its body in memory: read back from disk (and promoted) when only the
    /// disk tier had it; `None` when that read failed (the copy is forgotten).
    async fn resolve(&self, mut s: Served, head_only: bool) -> Option<Served> {
        let ServedBody::Disk { name, len } = &s.body else {
            return Some(s);
        };
        if head_only {
            s.body = ServedBody::Memory(Bytes::new());
            return Some(s);
        }
        let disk = self.disk.as_ref()?;
        match disk.read(name, *len).await {
            Ok(body) => {
                metrics::counter!("canopy_gateway_cache_disk_reads_total").increment(1);
                self.store().promote(s.entry, name, body.clone());
                s.body = ServedBody::Memory(body);
                Some(s)
            }
            Err(e) => {
                warn!(error = %e, "edge cache: a disk copy could not be read; fetched again");
                self.store().disk_lost(name);
                None
            }
        }
    }

    /// Removes what `what` names.
    pub fn purge(&self, what: &Purge) -> Purged {
        let mut store = self.store();
        let p = store.purge(what);
        gauges(&store);
        metrics::counter!("canopy_gateway_cache_purged_total").increment(p.entries);
        p
    }

    /// (answers, bytes in memory, bytes on disk) held.
    pub fn usage(&self) -> (usize, u64, u64) {
        let s = self.store();
        (s.len(), s.bytes() + s.index_bytes(), s.disk_bytes())
    }
}

/// The store's size, in the metrics.
fn gauges(store: &Store) {
    metrics::gauge!("canopy_gateway_cache_entries").set(store.len() as f64);
    metrics::gauge!("canopy_gateway_cache_bytes").set(store.bytes() as f64);
    metrics::gauge!("canopy_gateway_cache_index_bytes").set(store.index_bytes() as f64);
    metrics::gauge!("canopy_gateway_cache_disk_bytes").set(store.disk_bytes() as f64);
}

/// Whether the cache has a say in this request: a GET or HEAD for an http(s) URL, not a
/// range, not a bid or check-in.
pub(super) fn applies(req: &Request<Incoming>, route: &Route) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && !route.class.is_transactional()
        && route.target.scheme().is_some()
        && !req.headers().contains_key(header::RANGE)
}

/// What happened, for `Cache-Status` and the metrics.
struct Status {
    /// RFC 9211 parameters after the cache's name.
    params: String,
    /// Metric label.
    result: &'static str,
}

impl Status {
    fn hit(ttl: i64, more: &str, result: &'static str) -> Self {
        Self {
            params: format!("hit; ttl={ttl}{more}"),
            result,
        }
    }
    fn fwd(fwd: &str, more: &str, result: &'static str) -> Self {
        Self {
            params: format!("fwd={fwd}{more}"),
            result,
        }
    }
}

/// What the cache alone can answer for `req`, without the uplinks (its class is paused):
/// a fresh answer, or a stale one where stale answers are allowed with no uplink.
pub(super) async fn without_uplinks(
    cache: &EdgeCache,
    req: &Request<Incoming>,
    tls_name: Option<&str>,
) -> Option<Response<Body>> {
    let head_only = req.method() == Method::HEAD;
    let (_, parts) = keyed(req, tls_name);
    let now = SystemTime::now();
    let looked = cache.store().lookup(&parts, now);
    let (served, st) = match looked {
        Lookup::Fresh(hit) => {
            let st = Status::hit(hit.ttl, "", "hit");
            (hit, st)
        }
        Lookup::Stale { entry, .. } => {
            let s = cache.store().stale(entry, now, false)?;
            let st = Status::hit(s.ttl, "; detail=\"stale, class paused\"", "stale");
            (s, st)
        }
        Lookup::UriMiss | Lookup::VaryMiss => return None,
    };
    let served = cache.resolve(served, head_only).await?;
    Some(from_store(served, head_only, st))
}

/// Answers `req` (for `route`) through the cache.
pub(super) async fn serve(
    state: &State,
    cache: &EdgeCache,
    mut req: Request<Incoming>,
    route: Route,
    tls_name: Option<&str>,
) -> Response<Body> {
    let head_only = req.method() == Method::HEAD;
    let (site, parts) = keyed(&req, tls_name);
    let key = parts.uri.to_string();
    let mut followed = false;
    loop {
        let now = SystemTime::now();
        let looked = cache.store().lookup(&parts, now);
        let (stale, miss) = match looked {
            Lookup::Fresh(hit) => {
                let st = if followed {
                    Status::hit(hit.ttl, "; collapsed", "collapsed")
                } else {
                    Status::hit(hit.ttl, "", "hit")
                };
                match cache.resolve(hit, head_only).await {
                    Some(hit) => return from_store(hit, head_only, st),
                    // its disk copy is gone: looked up again, a miss now
                    None => continue,
                }
            }
            Lookup::Stale { entry, request } => (Some((entry, request)), "stale"),
            Lookup::UriMiss => (None, "uri-miss"),
            Lookup::VaryMiss => (None, "vary-miss"),
        };
        if !state.bond.any_usable() {
            let served = stale
                .as_ref()
                .and_then(|(entry, _)| cache.store().stale(*entry, now, false));
            let served = match served {
                Some(s) => cache.resolve(s, head_only).await,
                None => None,
            };
            return match served {
                Some(s) => {
                    let st = Status::hit(s.ttl, "; detail=\"stale, no uplink\"", "stale");
                    from_store(s, head_only, st)
                }
                None => tagged(
                    synthetic(
                        StatusCode::GATEWAY_TIMEOUT,
                        "no uplink is up, and this is not in the gateway's edge cache",
                    ),
                    Status::fwd(miss, "; detail=\"no uplink\"", "offline_miss"),
                ),
            };
        }
        // one fetch per URL at a time: the others wait for it, then look again
        // a HEAD stores nothing, so it leads nothing (it neither waits nor is waited for)
        let leader = if followed || head_only {
            None
        } else {
            match lead_or_follow(cache, &key) {
                Ok(l) => Some(l),
                Err(mut rx) => {
                    let wait = state.response_timeout.min(FOLLOW_WAIT);
                    let _ = tokio::time::timeout(wait, rx.wait_for(|d| *d)).await;
                    followed = true;
                    continue;
                }
            }
        };
        if let Some((_, revalidate)) = &stale {
            for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                match revalidate.headers.get(&h) {
                    Some(v) => {
                        req.headers_mut().insert(h, v.clone());
                    }
                    None => {
                        req.headers_mut().remove(&h);
                    }
                }
            }
        }
        let resp = forward(state, req, route).await;
        let now = SystemTime::now();
        let status = resp.status();
        let (head, body) = resp.into_parts();
        if let Some((entry, _)) = &stale {
            if status == StatusCode::NOT_MODIFIED {
                let refreshed = cache.store().revalidated(*entry, &parts, &head, now);
                // a 304 the entry's validators do not match: the origin said "not
                // modified" to the validators sent, which were the entry's; it is served
                // as it is rather than pass a 304 to a device that did not ask for one
                let (s, more) = match refreshed {
                    Some(s) => (Some(s), "; fwd-status=304"),
                    None => (
                        cache.store().stale(*entry, now, true),
                        "; fwd-status=304; detail=\"validator mismatch\"",
                    ),
                };
                let s = match s {
                    Some(s) => cache.resolve(s, head_only).await,
                    None => None,
                };
                drop(leader);
                return match s {
                    Some(s) => from_store(s, head_only, Status::fwd("stale", more, "revalidated")),
                    None => tagged(
                        synthetic(
                            StatusCode::BAD_GATEWAY,
                            "the origin answered 304 to a revalidation the cache cannot use",
                        ),
                        Status::fwd("stale", more, "miss"),
                    ),
                };
            }
            if status.is_server_error() {
                let s = cache.store().stale(*entry, now, true);
                let s = match s {
                    Some(s) => cache.resolve(s, head_only).await,
                    None => None,
                };
                if let Some(s) = s {
                    drop(leader);
                    let st = Status::fwd(
                        "stale",
                        &format!(
                            "; fwd-status={}; ttl={}; detail=stale-if-error",
                            status.as_u16(),
                            s.ttl
                        ),
                        "stale",
                    );
                    return from_store(s, head_only, st);
                }
            }
        }
        let resp = Response::from_parts(head, body);
        return keep(state, cache, &site, &parts, resp, leader, miss, head_only);
    }
}

/// The origin's answer: stored on its way to the device when the store may keep it.
#[allow(clippy::too_many_arguments)]
fn keep(
    state: &State,
    cache: &EdgeCache,
    site: &str,
    parts: &http::request::Parts,
    resp: Response<Body>,
    leader: Option<Leader>,
    fwd: &str,
    head_only: bool,
) -> Response<Body> {
    let (mut head, body) = resp.into_parts();
    if let Some(secs) = static_max_age(state, site, parts, &head) {
        crate::cache::with_default_max_age(&mut head.headers, secs);
    }
    hop::strip_hop_by_hop(&mut head.headers);
    let now = SystemTime::now();
    let storable = if head_only || head.headers.contains_key(wire::HDR_REASON) {
        // a HEAD has no body to keep; the gateway's own refusals are not the origin's
        Err(NotStored::Forbidden)
    } else {
        cache.store().storable(parts, &head, now).map(|_| ())
    };
    let status = head.status.as_u16();
    match storable {
        Ok(()) => {
            let st = Status::fwd(fwd, &format!("; fwd-status={status}; stored"), "miss");
            let declared = head
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let tee = Tee {
                inner: body,
                declared,
                buf: BytesMut::new(),
                cap: cache.store().max_object_bytes() as usize,
                done: Some(Keep {
                    store: cache.store.clone(),
                    disk: cache.disk.clone(),
                    site: site.to_string(),
                    parts: parts.clone(),
                    head: head.clone(),
                    leader,
                }),
            };
            tagged(Response::from_parts(head, tee.boxed_unsync()), st)
        }
        Err(_) => {
            drop(leader);
            let st = Status::fwd(fwd, &format!("; fwd-status={status}"), "miss");
            tagged(Response::from_parts(head, body), st)
        }
    }
}

/// The default max-age of a site's static assets, for an answer that says nothing of its
/// freshness.
fn static_max_age(
    state: &State,
    site: &str,
    parts: &http::request::Parts,
    head: &http::response::Parts,
) -> Option<u64> {
    let secs = state.sites.get(site)?.static_max_age;
    // an answer to a request with a cookie or credentials may be that visitor's own
    let personal = parts.headers.contains_key(header::COOKIE)
        || parts.headers.contains_key(header::AUTHORIZATION);
    if secs == 0
        || personal
        || head.status != StatusCode::OK
        || crate::cache::states_freshness(&head.headers)
    {
        return None;
    }
    let ext = parts
        .uri
        .path()
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    let by_ext = ext.as_deref().is_some_and(|e| {
        matches!(
            e,
            "css"
                | "js"
                | "mjs"
                | "png"
                | "jpg"
                | "jpeg"
                | "gif"
                | "webp"
                | "avif"
                | "svg"
                | "ico"
                | "woff"
                | "woff2"
                | "ttf"
                | "otf"
        )
    });
    let ct = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let by_type = ct.starts_with("image/")
        || ct.starts_with("font/")
        || ct.starts_with("text/css")
        || ct.contains("javascript");
    (by_ext || by_type).then_some(secs)
}

/// Serves a stored answer (its body in memory: [`EdgeCache::resolve`]).
fn from_store(s: Served, head_only: bool, st: Status) -> Response<Body> {
    let body = match s.body {
        ServedBody::Memory(b) if !head_only => b,
        _ => Bytes::new(),
    };
    tagged(Response::from_parts(s.head, full(body)), st)
}

/// Adds `Cache-Status` and counts the outcome.
fn tagged(mut r: Response<Body>, st: Status) -> Response<Body> {
    metrics::counter!("canopy_gateway_cache_requests_total", "result" => st.result).increment(1);
    if let Ok(v) = HeaderValue::from_str(&format!("{NAME}; {}", st.params)) {
        r.headers_mut().insert("cache-status", v);
    }
    r
}

/// The site a request is for (on a site's HTTPS connection, the name its handshake asked
/// for) and the request as the store sees it.
fn keyed(req: &Request<Incoming>, tls_name: Option<&str>) -> (String, http::request::Parts) {
    let site = match tls_name {
        Some(n) => n.to_string(),
        None => request_host(req),
    };
    let url = asked_url(req, &site, tls_name.is_some());
    let parts = cache_request(req, &url, &site);
    (site, parts)
}

/// The URL the device asked for (what the crew purges by): its absolute form through
/// the proxy, or the site's name and the path.
fn asked_url(req: &Request<Incoming>, host: &str, tls: bool) -> Uri {
    if req.uri().scheme().is_some() {
        return req.uri().clone();
    }
    let scheme = if tls { "https" } else { "http" };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{pq}")
        .parse()
        .unwrap_or_else(|_| req.uri().clone())
}

/// The request as the store sees it: the URL the device asked for, its headers, its host
/// as the key's.
fn cache_request(req: &Request<Incoming>, target: &Uri, host: &str) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = req.method().clone();
    parts.uri = target.clone();
    parts.headers = req.headers().clone();
    if let Ok(v) = HeaderValue::from_str(host) {
        parts.headers.insert(header::HOST, v);
    }
    parts
}

/// The host the device asked for (lower-cased, without a port).
fn request_host(req: &Request<Incoming>) -> String {
    req.uri()
        .host()
        .or_else(|| host_header(req))
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The fetches under way, by URL.
type Inflight = Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>;

/// The one fetch under way for a URL; the followers are let go when it is dropped.
struct Leader {
    key: String,
    tx: watch::Sender<bool>,
    inflight: Inflight,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        let _ = self.tx.send(true);
    }
}

/// Leads the fetch of `key`, or follows the one under way.
fn lead_or_follow(cache: &EdgeCache, key: &str) -> Result<Leader, watch::Receiver<bool>> {
    let mut map = cache.inflight.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rx) = map.get(key) {
        return Err(rx.clone());
    }
    let (tx, rx) = watch::channel(false);
    map.insert(key.to_string(), rx);
    Ok(Leader {
        key: key.to_string(),
        tx,
        inflight: cache.inflight.clone(),
    })
}

/// What to store once a body has come whole.
struct Keep {
    store: Arc<Mutex<Store>>,
    disk: Option<Arc<DiskTier>>,
    site: String,
    parts: http::request::Parts,
    head: http::response::Parts,
    /// Let go after the answer is stored, so the followers find it.
    leader: Option<Leader>,
}

impl Keep {
    fn finish(self, body: Option<Bytes>) {
        if body.is_none() {
            debug!(url = %self.parts.uri, "edge cache: body not kept");
        }
        if let Some(body) = body {
            let mut store = lock(&self.store, self.disk.as_deref());
            let url = self.parts.uri.to_string();
            match store.insert(&self.site, &self.parts, &self.head, body, SystemTime::now()) {
                Ok(_) => debug!(%url, "edge cache: stored"),
                Err(why) => debug!(%url, ?why, "edge cache: not stored"),
            }
            gauges(&store);
        }
        drop(self.leader);
    }
}

/// A body passed on to the device as it comes, and kept (up to `cap` bytes) for the
/// store once it is whole.
struct Tee {
    inner: Body,
    buf: BytesMut,
    cap: usize,
    /// The declared length: once that much has come, the body is whole (hyper stops
    /// polling a body with a Content-Length once it has its bytes).
    declared: Option<usize>,
    done: Option<Keep>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.done.is_some() && this.buf.len() + data.len() <= this.cap {
                        this.buf.extend_from_slice(data);
                    } else if let Some(k) = this.done.take() {
                        // too large to keep: passed on only
                        k.finish(None);
                        this.buf = BytesMut::new();
                    }
                }
                // a body that knows it is over is not polled again
                let whole = this.declared.is_some_and(|n| n == this.buf.len());
                if this.inner.is_end_stream() || whole {
                    if let Some(k) = this.done.take() {
                        k.finish(Some(std::mem::take(&mut this.buf).freeze()));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(k) = this.done.take() {
                    k.finish(None);
                }
            }
            Poll::Ready(None) => {
                if let Some(k) = this.done.take() {
                    // a body shorter than it said is not kept
                    let whole = this.declared.is_none_or(|n| n == this.buf.len());
                    k.finish(whole.then(|| std::mem::take(&mut this.buf).freeze()));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // the device went away before the end: nothing is stored, the followers go
        if let Some(k) = self.done.take() {
            k.finish(None);
        }
    }
}
