//! The edge cache's store (sans-IO: every call takes `now`): answers to GETs through the
//! proxy and the sites, kept by RFC 9111's rules (http-cache-semantics, as a shared
//! cache: `private`, `no-store` and `Authorization` respected, `Vary` matched,
//! revalidation by ETag / Last-Modified), in memory bounded by bytes, least recently
//! used out first. The shell (`proxy/cached.rs`) asks it, fetches, coalesces and serves.

mod directives;

pub use directives::{clamp_deltas, states_freshness, with_default_max_age, Directives};

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// Variants kept per URL (by `Vary`); the least recently used goes beyond it.
const MAX_VARIANTS: usize = 8;

/// How the cache is bounded and what it assumes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Bytes of bodies and heads kept in memory.
    pub memory_bytes: u64,
    /// Largest answer kept.
    pub max_object_bytes: u64,
    /// How long past its freshness an answer may still be served when no uplink is up
    /// or the origin fails (unless its own directives forbid it or say less).
    pub stale_max: Duration,
}

/// One stored answer.
#[derive(Debug)]
struct Stored {
    url: String,
    site: String,
    policy: CachePolicy,
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    directives: Directives,
    /// When it stops being fresh.
    fresh_until: SystemTime,
    tick: u64,
}

impl Stored {
    fn bytes(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        (self.body.len() + head + self.url.len() + 256) as u64
    }
}

/// An answer served from the store.
#[derive(Debug, Clone)]
pub struct Served {
    /// Status and headers (with `Age`).
    pub head: http::response::Parts,
    /// The body.
    pub body: Bytes,
    /// Seconds of freshness left; negative when stale.
    pub ttl: i64,
}

/// What the store has for a request.
#[derive(Debug)]
pub enum Lookup {
    /// Fresh: serve it.
    Fresh(Served),
    /// Stored but stale: ask the origin with these headers (validators added), and
    /// keep `Entry` to serve or revalidate.
    Stale {
        /// The entry.
        entry: EntryId,
        /// The request to send (revalidation headers set).
        request: http::request::Parts,
    },
    /// Nothing for this URL.
    UriMiss,
    /// Something for this URL, but not for this request's `Vary` headers.
    VaryMiss,
}

/// An entry's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(u64);

/// Which entries a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One URL (every variant).
    Url(String),
    /// Every URL that starts with this.
    Prefix(String),
    /// Everything of one site (the name devices asked for).
    Site(String),
    /// Everything.
    All,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Answers removed.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    entries: HashMap<EntryId, Stored>,
    by_url: HashMap<String, Vec<EntryId>>,
    lru: BTreeMap<u64, EntryId>,
    bytes: u64,
    next_id: u64,
    tick: u64,
}

/// Why an answer was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// RFC 9111 forbids it (no-store, private, Authorization, an uncacheable status...).
    Forbidden,
    /// It sets a cookie: a shared cache would hand one device's cookie to others.
    SetsCookie,
    /// Larger than `max_object_bytes`.
    TooLarge,
    /// Not fresh for any time and nothing to revalidate it with: storing is pointless.
    Useless,
}

impl Store {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        Self {
            cfg,
            entries: HashMap::new(),
            by_url: HashMap::new(),
            lru: BTreeMap::new(),
            bytes: 0,
            next_id: 0,
            tick: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The largest answer it keeps.
    pub fn max_object_bytes(&self) -> u64 {
        self.cfg.max_object_bytes
    }

    /// What it has for `req` (a GET or HEAD whose URI is the cache key) at `now`.
    pub fn lookup(&mut self, req: &http::request::Parts, now: SystemTime) -> Lookup {
        let Some(ids) = self.by_url.get(&req.uri.to_string()) else {
            return Lookup::UriMiss;
        };
        let get = as_get(req);
        let mut stale = None;
        for id in ids.clone() {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            match e.policy.before_request(&get, now) {
                BeforeRequest::Fresh(head) => {
                    let served = Served {
                        head: with_status(head, e.status),
                        body: e.body.clone(),
                        ttl: e.policy.time_to_live(now).as_secs() as i64,
                    };
                    self.touch(id);
                    return Lookup::Fresh(served);
                }
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } => stale = Some((id, request)),
                BeforeRequest::Stale { .. } => {}
            }
        }
        match stale {
            Some((entry, request)) => {
                self.touch(entry);
                Lookup::Stale { entry, request }
            }
            None => Lookup::VaryMiss,
        }
    }

    /// The stale answer of `entry`, when it may be served at `now` without the origin:
    /// no uplink is up (`error` false) or the origin failed (`error` true).
    pub fn stale(&mut self, entry: EntryId, now: SystemTime, error: bool) -> Option<Served> {
        let e = self.entries.get(&entry)?;
        let over = now.duration_since(e.fresh_until).unwrap_or_default();
        let allowed = e.directives.stale_allowed(self.cfg.stale_max, error)?;
        if over > allowed {
            return None;
        }
        let mut headers = e.headers.clone();
        set_age(&mut headers, e.policy.age(now));
        let head = head_of(e.status, headers);
        let body = e.body.clone();
        self.touch(entry);
        Some(Served {
            head,
            body,
            // stale by a part of a second is stale: counted as a whole one
            ttl: -(over.as_secs_f64().ceil() as i64),
        })
    }

    /// The origin answered a revalidation of `entry` with `resp` (no body read yet).
    /// `Some` when the stored body is still good (304): the entry is refreshed and served.
    pub fn revalidated(
        &mut self,
        entry: EntryId,
        req: &http::request::Parts,
        resp: &http::response::Parts,
        now: SystemTime,
    ) -> Option<Served> {
        if resp.status != StatusCode::NOT_MODIFIED {
            return None;
        }
        let resp = &clamped(resp);
        let e = self.entries.get_mut(&entry)?;
        match e.policy.after_response(&as_get(req), resp, now) {
            AfterResponse::NotModified(policy, head) => {
                self.bytes = self.bytes.saturating_sub(e.bytes());
                e.headers = policy_headers(&head);
                e.directives = Directives::of(&e.headers);
                e.fresh_until = fresh_until(now, &policy);
                e.policy = policy;
                self.bytes += e.bytes();
                let ttl = e.policy.time_to_live(now).as_secs() as i64;
                let body = e.body.clone();
                let status = e.status;
                self.touch(entry);
                Some(Served {
                    head: with_status(head, status),
                    body,
                    ttl,
                })
            }
            AfterResponse::Modified(..) => None,
        }
    }

    /// Whether an answer with this head could be stored (checked before its body is
    /// read, so a body that will not be kept is not held).
    pub fn storable(
        &self,
        req: &http::request::Parts,
        resp: &http::response::Parts,
        now: SystemTime,
    ) -> Result<CachePolicy, NotStored> {
        let resp = &clamped(resp);
        if resp.headers.contains_key(header::SET_COOKIE) {
            return Err(NotStored::SetsCookie);
        }
        if resp
            .headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|n| n.trim() == "*"))
        {
            // never matches a later request: storing it only pushes others out
            return Err(NotStored::Forbidden);
        }
        if hop_declared_length(&resp.headers).is_some_and(|n| n > self.cfg.max_object_bytes) {
            return Err(NotStored::TooLarge);
        }
        let policy = CachePolicy::new_options(&as_get(req), resp, now, options());
        if !policy.is_storable() {
            return Err(NotStored::Forbidden);
        }
        let validators = resp.headers.contains_key(header::ETAG)
            || resp.headers.contains_key(header::LAST_MODIFIED);
        if policy.time_to_live(now).is_zero() && !validators {
            return Err(NotStored::Useless);
        }
        Ok(policy)
    }

    /// Stores an answer under `req`'s URI for `site`, replacing the variant that `req`
    /// matched; the least recently used answers go to make room.
    pub fn insert(
        &mut self,
        site: &str,
        req: &http::request::Parts,
        resp: &http::response::Parts,
        body: Bytes,
        now: SystemTime,
    ) -> Result<EntryId, NotStored> {
        let resp = &clamped(resp);
        let policy = self.storable(req, resp, now)?;
        if body.len() as u64 > self.cfg.max_object_bytes {
            return Err(NotStored::TooLarge);
        }
        let url = req.uri.to_string();
        let get = as_get(req);
        // the variant this request selects is replaced
        let replaced: Vec<EntryId> = self
            .by_url
            .get(&url)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| {
                        self.entries.get(id).is_some_and(|e| {
                            matches!(
                                e.policy.before_request(&get, now),
                                BeforeRequest::Fresh(_)
                                    | BeforeRequest::Stale { matches: true, .. }
                            )
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        for id in replaced {
            self.remove(id);
        }
        // a header with many values in Vary must not fill the store with one URL
        while self
            .by_url
            .get(&url)
            .is_some_and(|ids| ids.len() >= MAX_VARIANTS)
        {
            let oldest = self.by_url.get(&url).and_then(|ids| {
                ids.iter()
                    .copied()
                    .min_by_key(|id| self.entries.get(id).map_or(0, |e| e.tick))
            });
            match oldest {
                Some(id) => {
                    self.remove(id);
                }
                None => break,
            }
        }
        let id = EntryId(self.next_id);
        self.next_id += 1;
        self.tick += 1;
        let headers = resp.headers.clone();
        let stored = Stored {
            url: url.clone(),
            site: site.to_ascii_lowercase(),
            directives: Directives::of(&headers),
            fresh_until: fresh_until(now, &policy),
            policy,
            status: resp.status,
            headers,
            body,
            tick: self.tick,
        };
        self.bytes += stored.bytes();
        self.lru.insert(self.tick, id);
        self.by_url.entry(url).or_default().push(id);
        self.entries.insert(id, stored);
        while self.bytes > self.cfg.memory_bytes {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.remove(oldest);
            metrics::counter!("canopy_gateway_cache_evictions_total").increment(1);
        }
        Ok(id)
    }

    /// Removes what `what` names.
    pub fn purge(&mut self, what: &Purge) -> Purged {
        let ids: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|(_, e)| match what {
                Purge::Url(u) => &e.url == u,
                Purge::Prefix(p) => e.url.starts_with(p.as_str()),
                Purge::Site(s) => e.site.eq_ignore_ascii_case(s),
                Purge::All => true,
            })
            .map(|(id, _)| *id)
            .collect();
        let mut out = Purged::default();
        for id in ids {
            if let Some(b) = self.remove(id) {
                out.entries += 1;
                out.bytes += b;
            }
        }
        out
    }

    fn touch(&mut self, id: EntryId) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(&id) {
            self.lru.remove(&e.tick);
            e.tick = tick;
            self.lru.insert(tick, id);
        }
    }

    fn remove(&mut self, id: EntryId) -> Option<u64> {
        let e = self.entries.remove(&id)?;
        self.lru.remove(&e.tick);
        if let Some(ids) = self.by_url.get_mut(&e.url) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_url.remove(&e.url);
            }
        }
        let b = e.bytes();
        self.bytes = self.bytes.saturating_sub(b);
        Some(b)
    }
}

/// A shared cache's options.
fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// A HEAD is answered from the GET's answer.
fn as_get(req: &http::request::Parts) -> http::request::Parts {
    let mut get = req.clone();
    if get.method == Method::HEAD {
        get.method = Method::GET;
    }
    get
}

/// An answer's head with its time values held (see [`clamp_deltas`]).
fn clamped(resp: &http::response::Parts) -> http::response::Parts {
    let mut r = resp.clone();
    clamp_deltas(&mut r.headers);
    r
}

/// When an answer stops being fresh (held within what `SystemTime` can say).
fn fresh_until(now: SystemTime, policy: &CachePolicy) -> SystemTime {
    now.checked_add(policy.time_to_live(now))
        .unwrap_or_else(|| now + Duration::from_secs(directives::MAX_DELTA_SECONDS))
}

fn with_status(mut head: http::response::Parts, status: StatusCode) -> http::response::Parts {
    head.status = status;
    head
}

fn head_of(status: StatusCode, headers: http::HeaderMap) -> http::response::Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    parts
}

/// The headers kept from a refreshed answer (its `Age` and `Date` are set when served).
fn policy_headers(head: &http::response::Parts) -> http::HeaderMap {
    let mut h = head.headers.clone();
    h.remove(header::AGE);
    h
}

fn set_age(headers: &mut http::HeaderMap, age: Duration) {
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
}

fn hop_declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
