//! The local admin API (`[admin] listen`): what the gateway is doing, and the crew's hand
//! on it. Every request carries `Authorization: Bearer <token>` (the token in
//! `[admin] token_file`, made on first start), but the status page's own files, which hold
//! no data; JSON in and out.
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/status` | links, cameras' levels, actions, paused classes, bids, cache |
//! | `GET /` | the status page (no data in it: it asks for the token, then reads `/api/events`) |
//! | `GET /live/...` | the cameras' on-site LL-HLS (the page's previews) |
//! | `GET /api/events` | server-sent events: the status and the history's new seconds, each second |
//! | `GET /api/history?since=S` | every link's seconds after Unix second S (the last 5 minutes) |
//! | `GET /api/levels` | every camera's level (and pin, ceiling, what is on air) |
//! | `PUT /api/levels/<camera>` `{"level": "substream"}` | pins the camera; `"auto"` lifts the pin (kept across restarts: [`holds`]) |
//! | `PUT /api/uplinks/<name>` `{"hold": "prefer"}` | prefers (or `"avoid"`s) the uplink by hand; `"auto"` lifts it (kept likewise) |
//! | `GET /api/actions` | every `[[actions]]` rule: fired or not, cause, firings |
//! | `POST /api/purge` | removes the spooled parts the relay has answered for |
//! | `GET /api/cache` | the edge cache's answers, bytes in memory and on disk |
//! | `POST /api/cache/purge` `{"url": U}`, `{"prefix": P}`, `{"site": S}` or `{"all": true}` | removes those answers from the edge cache |
//! | `POST /api/post-event` `{"dry_run": true}` | the post-event hygiene (`[event]`), or what it would do; its report |

use crate::actions::Actions;
use crate::bond::Bond;
use crate::config::AdminSection;
use crate::history::{History, Reading};
use crate::levels::Levels;
use crate::GatewayError;
use tunnel_io::admin_token::{authorized, read_or_make_token};

pub mod holds;
mod page;
mod problems;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use tunnel::stream_level::Level;

/// The largest request body read.
const MAX_BODY: usize = 4096;
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

/// What the admin API reads and acts on.
pub struct AdminView {
    /// The gateway's name.
    pub name: String,
    /// The uplinks.
    pub bond: Arc<Bond>,
    /// The cameras' levels, when contributing.
    pub levels: Option<Arc<Levels>>,
    /// The local actions.
    pub actions: Arc<Actions>,
    /// The proxy's paused classes.
    pub paused: Arc<crate::actions::Paused>,
    /// The edge cache, when on.
    pub cache: Option<Arc<crate::EdgeCache>>,
    /// The post-event hygiene, when `[event]` is set.
    pub hygiene: Option<Arc<crate::hygiene::Hygiene>>,
    /// Bids and check-ins.
    pub(crate) bids: Arc<crate::bids::Bids>,
    /// The cameras' on-site LL-HLS (the page's previews).
    pub live: Arc<crate::LiveStreams>,
    /// The links' last minutes ([`sample_links`] keeps it).
    pub history: Arc<std::sync::Mutex<History>>,
    /// What the crew set by hand, kept across restarts (when the admin API is on).
    pub holds: Option<Arc<holds::HoldsFile>>,
}

impl AdminView {
    /// Sets again what the crew had set by hand before the gateway (re)started: a pinned
    /// camera as soon as it is seen (cameras come as their streams start). An uplink the
    /// config no longer has, or a level that is not one, is logged and forgotten; pins
    /// wait in the file while the low-bandwidth mode is off.
    pub fn restore_holds(&self) {
        use crate::actions::HandHold;
        let Some(file) = &self.holds else { return };
        let held = file.held();
        for (camera, name) in &held.levels {
            match (&self.levels, Level::from_name(name)) {
                (Some(levels), Some(l)) => levels.pin_when_seen(camera, l),
                (None, Some(_)) => {
                    warn!(camera, level = %name, "a level pinned by hand is kept but not applied: the cameras are not sent to the relay ([live] contribute = false)")
                }
                (_, None) => {
                    warn!(camera, level = %name, "a level pinned by hand is not a level: forgotten");
                    file.set_level(camera, None, || true);
                }
            }
        }
        for (uplink, name) in &held.uplinks {
            let set = HandHold::from_name(name)
                .filter(|h| *h != HandHold::Auto)
                .is_some_and(|h| self.actions.hold_uplink(uplink, h));
            if set {
                info!(uplink, hold = %name, "uplink held by hand before the restart: held again");
            } else {
                warn!(uplink, hold = %name, "an uplink held by hand before the restart is not in the config now (or the hold is not prefer or avoid): forgotten");
                file.set_uplink(uplink, HandHold::Auto, || true);
            }
        }
    }
}

/// Seconds of each link's history kept.
pub const HISTORY_SECONDS: usize = 300;
/// How often the links are read for their history.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Reads every link into `history` four times a second, for ever.
pub async fn sample_links(bond: Arc<Bond>, history: Arc<std::sync::Mutex<History>>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at_ms = crate::clock::wall_us() / 1000;
        let readings: Vec<Reading> = bond
            .paths()
            .iter()
            .map(|p| {
                let s = p.status();
                Reading {
                    up_bps: s.up_bps,
                    down_bps: s.down_bps,
                    srtt_ms: s.srtt.as_secs_f64() * 1000.0,
                    loss: s.loss,
                    state: s.health.as_str(),
                    usable: s.usable,
                }
            })
            .collect();
        let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in readings.into_iter().enumerate() {
            h.observe(i, at_ms, r);
        }
    }
}

/// A new, empty history for `bond`'s links.
pub fn history_for(bond: &Bond) -> Arc<std::sync::Mutex<History>> {
    let names = bond
        .paths()
        .iter()
        .map(|p| p.status().name)
        .collect::<Vec<_>>();
    Arc::new(std::sync::Mutex::new(History::new(names, HISTORY_SECONDS)))
}

/// The bound admin listener and its token.
pub struct Admin {
    listener: TcpListener,
    token: Arc<str>,
    holds: Arc<holds::HoldsFile>,
}

impl Admin {
    /// Binds `[admin] listen` (None when it is unset), reading the token (made on first
    /// start, readable by the owner only).
    pub async fn bind(cfg: &AdminSection) -> Result<Option<Self>, GatewayError> {
        let Some(addr) = cfg.listen else {
            return Ok(None);
        };
        let token = read_or_make_token(&cfg.token_file).map_err(|e| {
            GatewayError::Config(format!(
                "admin.token_file {}: {e}",
                cfg.token_file.display()
            ))
        })?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Some(Self {
            listener,
            token: token.into(),
            holds: Arc::new(holds::HoldsFile::open(cfg.holds_file.clone())),
        }))
    }

    /// The file keeping what the crew sets by hand.
    pub fn holds(&self) -> Arc<holds::HoldsFile> {
        self.holds.clone()
    }

    /// Its address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, view: Arc<AdminView>) {
        info!(addr = ?self.listener.local_addr().ok(), "admin API listening");
        let token = self.token;
        tunnel_io::operator_http::serve(self.listener, MAX_CONNECTIONS, move |peer, req| {
            let (view, token) = (view.clone(), token.clone());
            async move { handle(&view, &token, peer, req).await }
        })
        .await;
    }
}

/// An answer's body fails only when it follows a live part given up before it was whole
/// (`media_io::hls_http::BrokenOff`): the connection is then cut, not the part shortened.
type Answer = Response<crate::proxy::Body>;

/// A body that cannot fail, as an [`Answer`]'s.
fn infallible<B>(b: B) -> crate::proxy::Body
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    b.map_err(|never| match never {}).boxed_unsync()
}

fn json(status: StatusCode, v: &serde_json::Value) -> Answer {
    tunnel_io::operator_http::json(status, format!("{v:#}\n")).map(infallible)
}

fn error(status: StatusCode, message: &str) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

async fn handle(
    view: &Arc<AdminView>,
    token: &str,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Answer {
    // the page itself holds no data: it asks for the token and reads the API with it
    if let Some(a) = page::asset(req.method(), req.uri().path()) {
        return a;
    }
    if !authorized(req.headers().get(header::AUTHORIZATION), token) {
        debug!(%peer, path = req.uri().path(), "admin: refused without the token");
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "this needs Authorization: Bearer <the token in [admin] token_file>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"canopy\""),
        );
        return r;
    }
    if let Some(a) = page::live(view, &req).await {
        return a;
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/api/status", &Method::GET) => json(StatusCode::OK, &status(view)),
        ("/api/history", &Method::GET) => history(view, req.uri().query()),
        ("/api/events", &Method::GET) => page::events(view.clone()),
        ("/api/levels", &Method::GET) => json(StatusCode::OK, &levels(view)),
        ("/api/actions", &Method::GET) => {
            json(StatusCode::OK, &serde_json::json!(view.actions.snapshot()))
        }
        ("/api/purge", &Method::POST) => {
            let p = view.actions.purge("admin API").await;
            info!(%peer, parts = p.parts, bytes = p.bytes, "admin: cache purged");
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "purged_parts": p.parts,
                    "purged_bytes": p.bytes,
                    "kept_from": p.kept_from,
                }),
            )
        }
        ("/api/cache", &Method::GET) => match &view.cache {
            Some(c) => {
                let (entries, bytes, disk_bytes) = c.usage();
                json(
                    StatusCode::OK,
                    &serde_json::json!({"entries": entries, "bytes": bytes, "disk_bytes": disk_bytes}),
                )
            }
            None => cache_off(),
        },
        ("/api/cache/purge", &Method::POST) => purge_cache(view, peer, req).await,
        ("/api/post-event", &Method::POST) => post_event(view, peer, req).await,
        (p, &Method::PUT) if p.starts_with("/api/uplinks/") => {
            let uplink = p["/api/uplinks/".len()..].to_string();
            hold_uplink(view, peer, &uplink, req).await
        }
        (p, &Method::PUT) if p.starts_with("/api/levels/") => {
            let camera = p["/api/levels/".len()..].to_string();
            set_level(view, peer, &camera, req).await
        }
        ("/api/status" | "/api/history" | "/api/events" | "/api/levels" | "/api/actions", _) => {
            not_allowed("GET")
        }
        ("/api/purge" | "/api/cache/purge" | "/api/post-event", _) => not_allowed("POST"),
        ("/api/cache", _) => not_allowed("GET"),
        (p, _) if p.starts_with("/api/levels/") || p.starts_with("/api/uplinks/") => {
            not_allowed("PUT")
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not found: try / (the status page), /api/status, /api/events, /api/history, \
             /api/levels[/<camera>], /api/uplinks/<name>, /api/actions, /api/purge, /api/cache, \
             /api/cache/purge, /api/post-event, /live/",
        ),
    }
}

/// `POST /api/post-event` with `{"dry_run": true|false}`: the post-event hygiene now (a
/// real run only once the event has ended); answers its report, with the text in `text`.
async fn post_event(view: &AdminView, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    let Some(h) = &view.hygiene else {
        return error(
            StatusCode::CONFLICT,
            "no [event] in the gateway's config: nothing says when the event ends",
        );
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        dry_run: bool,
    }
    let b: Body = match read_json(req, "expected {\"dry_run\": true|false}").await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = crate::clock::wall_us() as i64 / 1_000_000;
    match h
        .purge(crate::hygiene::Trigger::Command, b.dry_run, now)
        .await
    {
        Ok(rep) => {
            info!(%peer, dry_run = b.dry_run, "admin: post-event hygiene:\n{}", rep.text());
            let mut v = serde_json::json!(rep);
            v["text"] = rep.text().into();
            json(StatusCode::OK, &v)
        }
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

fn cache_off() -> Answer {
    error(
        StatusCode::CONFLICT,
        "the edge cache is off ([cache] enabled = false)",
    )
}

/// `POST /api/cache/purge` with one of `{"url": U}`, `{"prefix": P}`, `{"site": S}`,
/// `{"all": true}`.
async fn purge_cache(view: &AdminView, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    use crate::cache::Purge;
    let Some(cache) = &view.cache else {
        return cache_off();
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        url: Option<String>,
        prefix: Option<String>,
        site: Option<String>,
        #[serde(default)]
        all: bool,
    }
    let usage = "expected one of {\"url\": U}, {\"prefix\": P}, {\"site\": S}, {\"all\": true}";
    let b: Body = match read_json(req, usage).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let what = match (b.url, b.prefix, b.site, b.all) {
        (Some(u), None, None, false) => Purge::Url(u),
        (None, Some(p), None, false) => Purge::Prefix(p),
        (None, None, Some(s), false) => Purge::Site(s),
        (None, None, None, true) => Purge::All,
        _ => return error(StatusCode::UNPROCESSABLE_ENTITY, usage),
    };
    let p = cache.purge(&what);
    info!(%peer, ?what, entries = p.entries, bytes = p.bytes, "admin: edge cache purged");
    json(
        StatusCode::OK,
        &serde_json::json!({"purged_entries": p.entries, "purged_bytes": p.bytes}),
    )
}

/// A JSON request body of at most [`MAX_BODY`] bytes, or the answer that says why not
/// (`usage` says what was expected).
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    usage: &str,
) -> Result<T, Answer> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("at most {MAX_BODY} bytes"),
            ))
        }
        Err(_) => return Err(error(StatusCode::BAD_REQUEST, "the body was cut")),
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("{usage}: {e}")))
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow}"));
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// `PUT /api/levels/<camera>` with `{"level": "<level>" | "auto"}`.
async fn set_level(
    view: &AdminView,
    peer: SocketAddr,
    camera: &str,
    req: Request<Incoming>,
) -> Answer {
    let Some(levels) = &view.levels else {
        return error(
            StatusCode::CONFLICT,
            "the low-bandwidth mode is off: the cameras are not sent to the relay ([live] contribute = false)",
        );
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        level: String,
    }
    let body: Body = match read_json(req, "expected {\"level\": \"substream\"} (or \"auto\")").await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let level = match body.level.as_str() {
        "auto" => None,
        name => match Level::from_name(name) {
            Some(l) => Some(l),
            None => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "level must be full, substream, transcode, keyframes, audio or auto",
                )
            }
        },
    };
    let live = || levels.set_override(camera, level);
    let set = match &view.holds {
        Some(h) => h.set_level(camera, level, live),
        None => live(),
    };
    if !set {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no camera named {camera:?} is sent to the relay"),
        );
    }
    info!(%peer, camera, level = %body.level, "admin: stream level set by hand");
    let now = levels.snapshot().into_iter().find(|c| c.camera == camera);
    json(StatusCode::OK, &serde_json::json!(now))
}

async fn hold_uplink(
    view: &AdminView,
    peer: SocketAddr,
    uplink: &str,
    req: Request<Incoming>,
) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        hold: String,
    }
    let body: Body = match read_json(
        req,
        "expected {\"hold\": \"prefer\"} (or \"avoid\", \"auto\")",
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(hold) = crate::actions::HandHold::from_name(&body.hold) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hold must be prefer, avoid or auto",
        );
    };
    let live = || view.actions.hold_uplink(uplink, hold);
    let set = match &view.holds {
        Some(h) => h.set_uplink(uplink, hold, live),
        None => live(),
    };
    if !set {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no uplink named {uplink:?}"),
        );
    }
    info!(%peer, uplink, hold = %body.hold, "admin: uplink held by hand");
    let now = status(view)["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == uplink).cloned());
    json(StatusCode::OK, &serde_json::json!(now))
}

fn levels(view: &AdminView) -> serde_json::Value {
    serde_json::json!(view
        .levels
        .as_ref()
        .map(|l| l.snapshot())
        .unwrap_or_default())
}

pub(crate) fn status(view: &AdminView) -> serde_json::Value {
    let by_hand = view.actions.held_by_hand();
    let links: Vec<serde_json::Value> = view
        .bond
        .paths()
        .iter()
        .map(|p| {
            let s = p.status();
            let held = by_hand
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, prefer)| crate::actions::HandHold::held(*prefer).name());
            serde_json::json!({
                "held_by_hand": held,
                "name": s.name,
                "kind": s.kind.as_str(),
                "tier": s.tier.as_str(),
                "configured_tier": p.configured_tier.as_str(),
                "state": s.health.as_str(),
                "usable": s.usable,
                "srtt_ms": s.srtt.as_secs_f64() * 1000.0,
                "loss": s.loss,
                "up_bps": s.up_bps,
                "down_bps": s.down_bps,
                "demotions": s.demotions,
                "cap_used_bytes": s.cap_used,
                "cap_bytes": s.cap_bytes,
            })
        })
        .collect();
    let paused: Vec<serde_json::Value> = tunnel::TrafficClass::ALL
        .iter()
        .filter_map(|c| {
            view.paused
                .why(*c)
                .map(|why| serde_json::json!({ "class": c.as_str(), "by": why }))
        })
        .collect();
    let mut s = serde_json::json!({
        "gateway": view.name,
        "stream_capacity_bps": view.bond.stream_capacity().map(|c| c * 8.0),
        "links": links,
        "cameras": levels(view),
        "actions": view.actions.snapshot(),
        "paused": paused,
        "bids": view.bids.glance(),
        "cache": view.cache.as_ref().map(|c| {
            let (entries, bytes, disk_bytes) = c.usage();
            serde_json::json!({"entries": entries, "bytes": bytes, "disk_bytes": disk_bytes})
        }),
    });
    s["problems"] = problems::problems(&s).into();
    s
}

/// `GET /api/history?since=S`: every link's seconds after Unix second S (all kept without).
fn history(view: &AdminView, query: Option<&str>) -> Answer {
    let since = match query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))
    {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(s) => s,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "since= takes a Unix time in seconds",
                )
            }
        },
    };
    json(StatusCode::OK, &history_after(view, since).0)
}

/// Every link's seconds after `since` (`{"links": [{"name", "points"}]}`), and the newest
/// second in it (`since` when there is none).
fn history_after(view: &AdminView, since: u64) -> (serde_json::Value, u64) {
    let h = view.history.lock().unwrap_or_else(|p| p.into_inner());
    let links: Vec<serde_json::Value> = h
        .since(since)
        .into_iter()
        .map(|(name, points)| serde_json::json!({"name": name, "points": points}))
        .collect();
    let newest = h.newest().map_or(since, |n| n.max(since));
    (serde_json::json!({ "links": links }), newest)
}
