//! The edge cache's store (sans-IO: every call takes `now`): answers to GETs through the
//! proxy and the sites, kept by RFC 9111's rules (http-cache-semantics, as a shared
//! cache: `private`, `no-store` and `Authorization` respected, `Vary` matched,
//! revalidation by ETag / Last-Modified), in two tiers each bounded by bytes: memory,
//! and (when `disk_bytes` > 0) a disk copy of every answer that fits, written through, so
//! an answer pushed out of memory is still served (its body read back and promoted) and
//! the cache survives a restart. Least recently used out first in each tier; an answer
//! leaves the store when neither tier holds its body. The store decides; the disk work it
//! asks for is in [`DiskOp`]s the shell carries out (`proxy/cache_disk.rs`) and reports
//! back. The shell (`proxy/cached.rs`) asks it, fetches, coalesces and serves.

mod directives;
pub mod record;

pub use directives::{clamp_deltas, states_freshness, with_default_max_age, Directives};
pub use record::{Record, RecordError};

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
    /// Bytes of answers kept on disk (0: no disk tier).
    pub disk_bytes: u64,
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
    /// The request headers the answer varies on (all the disk keeps of the request).
    vary: http::HeaderMap,
    /// The body, while in memory.
    body: Option<Bytes>,
    body_len: u64,
    /// Its copy on disk, when the disk tier has one.
    disk: Option<DiskCopy>,
    directives: Directives,
    /// When it stops being fresh.
    fresh_until: SystemTime,
    /// When it came (or was last revalidated).
    at: SystemTime,
    tick: u64,
}

/// An answer's files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DiskCopy {
    name: String,
    bytes: u64,
}

impl Stored {
    /// What the index holds in memory for it, body aside.
    fn head_bytes(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .chain(self.vary.iter())
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        (head + self.url.len() + 256) as u64
    }

    /// What it holds in memory.
    fn mem_bytes(&self) -> u64 {
        self.head_bytes() + self.body.as_ref().map_or(0, |b| b.len() as u64)
    }

    /// What it counts against (memory tier, index): an answer with its body in memory
    /// counts whole against memory; one only on disk counts its head against the index
    /// (bounded with the disk tier, whose copies include their heads), so the memory
    /// bound is always met by letting bodies go.
    fn charge(&self) -> (u64, u64) {
        match self.body {
            Some(_) => (self.mem_bytes(), 0),
            None => (0, self.head_bytes()),
        }
    }

    /// Its size as an answer (head and body).
    fn size(&self) -> u64 {
        self.head_bytes() + self.body_len
    }

    fn record(&self) -> Record {
        Record {
            url: self.url.clone(),
            site: self.site.clone(),
            vary: self.vary.clone(),
            status: self.status,
            headers: self.headers.clone(),
            at: self.at,
            body_len: self.body_len,
        }
    }

    fn served_body(&self) -> ServedBody {
        match (&self.body, &self.disk) {
            (Some(b), _) => ServedBody::Memory(b.clone()),
            (None, Some(d)) => ServedBody::Disk {
                name: d.name.clone(),
                len: self.body_len,
            },
            // an entry without a body in either tier is removed at once
            (None, None) => ServedBody::Memory(Bytes::new()),
        }
    }
}

/// Where a served answer's body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedBody {
    /// In memory.
    Memory(Bytes),
    /// Only on disk: the shell reads `<name>.body` (exactly `len` bytes), then
    /// [`Store::promote`]s it, or reports it [`Store::disk_lost`].
    Disk {
        /// The files' name.
        name: String,
        /// The body's bytes.
        len: u64,
    },
}

/// Disk work the store asks of its shell, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// Write `<name>.body`, then `<name>.head` (its presence means the copy is whole).
    Write {
        /// The files' name.
        name: String,
        /// The head's record.
        head: Vec<u8>,
        /// The body.
        body: Bytes,
    },
    /// Replace `<name>.head` (a revalidation refreshed the answer).
    WriteHead {
        /// The files' name.
        name: String,
        /// The head's record.
        head: Vec<u8>,
    },
    /// Remove `<name>.head` and `<name>.body`.
    Delete {
        /// The files' name.
        name: String,
    },
}

/// An answer served from the store.
#[derive(Debug, Clone)]
pub struct Served {
    /// Its entry.
    pub entry: EntryId,
    /// Status and headers (with `Age`).
    pub head: http::response::Parts,
    /// The body.
    pub body: ServedBody,
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
    /// Entries with their body in memory, least recently used first.
    mem_lru: BTreeMap<u64, EntryId>,
    /// Entries with a disk copy, least recently used first.
    disk_lru: BTreeMap<u64, EntryId>,
    /// Bytes of the answers with their body in memory (heads and bodies).
    bytes: u64,
    /// Bytes of the heads of answers only on disk.
    index_bytes: u64,
    /// Bytes on disk.
    disk_bytes: u64,
    ops: Vec<DiskOp>,
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
            mem_lru: BTreeMap::new(),
            disk_lru: BTreeMap::new(),
            bytes: 0,
            index_bytes: 0,
            disk_bytes: 0,
            ops: Vec::new(),
            next_id: 0,
            tick: 0,
        }
    }

    /// Bytes held in memory by answers with their body there (bounded by
    /// `memory_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes held in memory by the heads of answers only on disk.
    pub fn index_bytes(&self) -> u64 {
        self.index_bytes
    }

    /// Bytes held on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// The disk work asked for since the last call, in order.
    pub fn take_ops(&mut self) -> Vec<DiskOp> {
        std::mem::take(&mut self.ops)
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
                        entry: id,
                        head: with_status(head, e.status),
                        body: e.served_body(),
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
        let body = e.served_body();
        self.touch(entry);
        Some(Served {
            entry,
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
                let (m, i) = e.charge();
                self.bytes = self.bytes.saturating_sub(m);
                self.index_bytes = self.index_bytes.saturating_sub(i);
                e.headers = policy_headers(&head);
                e.directives = Directives::of(&e.headers);
                e.fresh_until = fresh_until(now, &policy);
                e.policy = policy;
                e.at = now;
                let (m, i) = e.charge();
                self.bytes += m;
                self.index_bytes += i;
                let ttl = e.policy.time_to_live(now).as_secs() as i64;
                let body = e.served_body();
                let status = e.status;
                if let Some(d) = &e.disk {
                    self.ops.push(DiskOp::WriteHead {
                        name: d.name.clone(),
                        head: e.record().encode(),
                    });
                }
                self.touch(entry);
                self.enforce_bounds();
                Some(Served {
                    entry,
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
        let mut stored = Stored {
            url: url.clone(),
            site: site.to_ascii_lowercase(),
            vary: Record::vary_of(&req.headers, &headers),
            directives: Directives::of(&headers),
            fresh_until: fresh_until(now, &policy),
            at: now,
            policy,
            status: resp.status,
            headers,
            body_len: body.len() as u64,
            body: Some(body),
            disk: None,
            tick: self.tick,
        };
        if self.cfg.disk_bytes > 0 && stored.size() <= self.cfg.disk_bytes {
            let name = format!("{:016x}", fastrand::u64(..));
            self.ops.push(DiskOp::Write {
                name: name.clone(),
                head: stored.record().encode(),
                body: stored.body.clone().unwrap_or_default(),
            });
            stored.disk = Some(DiskCopy {
                name,
                bytes: stored.size(),
            });
        }
        self.add(id, stored);
        Ok(id)
    }

    /// Indexes a new answer: counted in the tiers that hold it, then both tiers brought
    /// within their bounds.
    fn add(&mut self, id: EntryId, stored: Stored) {
        let (m, i) = stored.charge();
        self.bytes += m;
        self.index_bytes += i;
        if stored.body.is_some() {
            self.mem_lru.insert(stored.tick, id);
        }
        if let Some(d) = &stored.disk {
            self.disk_bytes += d.bytes;
            self.disk_lru.insert(stored.tick, id);
        }
        self.by_url.entry(stored.url.clone()).or_default().push(id);
        self.entries.insert(id, stored);
        self.enforce_bounds();
    }

    /// An answer read back from the disk tier (`name`'s record) at `now`: indexed with its
    /// body on disk only. Refused (and so to be deleted) when it could never be served.
    pub fn restore(
        &mut self,
        name: &str,
        rec: Record,
        now: SystemTime,
    ) -> Result<EntryId, NotStored> {
        if self.cfg.disk_bytes == 0 {
            return Err(NotStored::Useless);
        }
        if rec.body_len > self.cfg.max_object_bytes {
            return Err(NotStored::TooLarge);
        }
        let (mut req, ()) = http::Request::new(()).into_parts();
        req.uri = rec.url.parse().map_err(|_| NotStored::Forbidden)?;
        req.headers = rec.vary.clone();
        // the shell keys every request with the site's name as its Host (a policy
        // matches only the same Host)
        if let Ok(h) = HeaderValue::from_str(&rec.site) {
            req.headers.insert(header::HOST, h);
        }
        let resp = head_of(rec.status, rec.headers.clone());
        let policy = CachePolicy::new_options(&req, &resp, rec.at, options());
        if !policy.is_storable() {
            return Err(NotStored::Forbidden);
        }
        let directives = Directives::of(&rec.headers);
        let until = fresh_until(rec.at, &policy);
        let validators = rec.headers.contains_key(header::ETAG)
            || rec.headers.contains_key(header::LAST_MODIFIED);
        let over = now.duration_since(until).unwrap_or_default();
        let servable_stale = directives
            .stale_allowed(self.cfg.stale_max, true)
            .is_some_and(|d| over <= d);
        if !over.is_zero() && !validators && !servable_stale {
            return Err(NotStored::Useless);
        }
        if self
            .by_url
            .get(&rec.url)
            .is_some_and(|ids| ids.len() >= MAX_VARIANTS)
        {
            return Err(NotStored::Useless);
        }
        let id = EntryId(self.next_id);
        self.next_id += 1;
        self.tick += 1;
        let mut stored = Stored {
            url: rec.url,
            site: rec.site.to_ascii_lowercase(),
            vary: rec.vary,
            directives,
            fresh_until: until,
            at: rec.at,
            policy,
            status: rec.status,
            headers: rec.headers,
            body_len: rec.body_len,
            body: None,
            disk: None,
            tick: self.tick,
        };
        stored.disk = Some(DiskCopy {
            name: name.to_owned(),
            bytes: stored.size(),
        });
        self.add(id, stored);
        Ok(id)
    }

    /// A body read back from disk for `entry` (copy `name`): held in memory again, as
    /// the most recently used.
    pub fn promote(&mut self, entry: EntryId, name: &str, body: Bytes) {
        let Some(e) = self.entries.get_mut(&entry) else {
            return;
        };
        let ours = e.disk.as_ref().is_some_and(|d| d.name == name);
        if !ours || e.body.is_some() || body.len() as u64 != e.body_len {
            return;
        }
        self.index_bytes = self.index_bytes.saturating_sub(e.head_bytes());
        self.bytes += e.head_bytes() + body.len() as u64;
        e.body = Some(body);
        self.mem_lru.insert(e.tick, entry);
        self.touch(entry);
        self.enforce_bounds();
    }

    /// Disk copy `name` could not be written or read: forgotten (and the answer with it
    /// when memory does not hold its body).
    pub fn disk_lost(&mut self, name: &str) {
        let found = self
            .entries
            .iter()
            .find(|(_, e)| e.disk.as_ref().is_some_and(|d| d.name == name))
            .map(|(id, _)| *id);
        if let Some(id) = found {
            self.drop_disk(id);
        }
    }

    /// Pushes the least recently used out of each tier until both are within bounds.
    fn enforce_bounds(&mut self) {
        while self.bytes > self.cfg.memory_bytes {
            let Some((_, oldest)) = self.mem_lru.pop_first() else {
                break;
            };
            self.drop_memory(oldest);
            metrics::counter!("canopy_gateway_cache_evictions_total", "tier" => "memory")
                .increment(1);
        }
        while self.disk_bytes > self.cfg.disk_bytes {
            let Some((_, oldest)) = self.disk_lru.pop_first() else {
                break;
            };
            self.drop_disk(oldest);
            metrics::counter!("canopy_gateway_cache_evictions_total", "tier" => "disk")
                .increment(1);
        }
    }

    /// The body leaves memory; the answer stays while its disk copy does.
    fn drop_memory(&mut self, id: EntryId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.disk.is_none() {
            self.remove(id);
            return;
        }
        self.mem_lru.remove(&e.tick);
        if let Some(b) = e.body.take() {
            self.bytes = self.bytes.saturating_sub(e.head_bytes() + b.len() as u64);
            self.index_bytes += e.head_bytes();
        }
    }

    /// The disk copy goes; the answer stays while memory holds its body.
    fn drop_disk(&mut self, id: EntryId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        self.disk_lru.remove(&e.tick);
        if let Some(d) = e.disk.take() {
            self.disk_bytes = self.disk_bytes.saturating_sub(d.bytes);
            self.ops.push(DiskOp::Delete { name: d.name });
        }
        if e.body.is_none() {
            self.remove(id);
        }
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
            if self.mem_lru.remove(&e.tick).is_some() {
                self.mem_lru.insert(tick, id);
            }
            if self.disk_lru.remove(&e.tick).is_some() {
                self.disk_lru.insert(tick, id);
            }
            e.tick = tick;
        }
    }

    /// Removes an answer from both tiers; the bytes freed (memory and disk).
    fn remove(&mut self, id: EntryId) -> Option<u64> {
        let e = self.entries.remove(&id)?;
        self.mem_lru.remove(&e.tick);
        self.disk_lru.remove(&e.tick);
        if let Some(ids) = self.by_url.get_mut(&e.url) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_url.remove(&e.url);
            }
        }
        let (m, i) = e.charge();
        self.bytes = self.bytes.saturating_sub(m);
        self.index_bytes = self.index_bytes.saturating_sub(i);
        let mut freed = m + i;
        if let Some(d) = &e.disk {
            self.disk_bytes = self.disk_bytes.saturating_sub(d.bytes);
            freed += d.bytes;
            self.ops.push(DiskOp::Delete {
                name: d.name.clone(),
            });
        }
        Some(freed)
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
