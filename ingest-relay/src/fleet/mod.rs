//! The fleet view: every gateway the relay hears from, built from their delta telemetry
//! (`POST https://canopy.session/telemetry`, [`intake`]; the policy is
//! `tunnel::telemetry::Fleet`), their connections and their viewers; kept for the last
//! hour. [`page`] serves it on `[fleet] listen`: a page and `GET /api/fleet`.

use crate::audience::Audience;
use crate::error::Refusal;
use crate::server::{no_content, refuse, ConnCtx, Stream};
use bytes::Buf;
use http::{Response, StatusCode};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tunnel::telemetry::{Fleet, Refused};
use tunnel::wire::telemetry::{self as wire, LinkLine, Report};

pub(crate) mod page;

/// How long a report's body may take to arrive.
const READ_WITHIN: Duration = Duration::from_secs(5);

/// The relay's fleet: gateways' telemetry and viewers.
pub(crate) struct FleetState {
    fleet: Mutex<Fleet>,
    audience: Mutex<Audience>,
}

impl FleetState {
    /// A gateway silent for `offline_after` is shown offline.
    pub(crate) fn new(offline_after: Duration) -> Self {
        Self {
            fleet: Mutex::new(Fleet::new(offline_after)),
            audience: Mutex::new(Audience::default()),
        }
    }

    fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection of gateway `scope` (its certificate's common name) opened.
    pub(crate) fn opened(&self, scope: &str) {
        self.fleet().opened(Instant::now(), scope);
    }

    /// A connection of gateway `scope` closed.
    pub(crate) fn closed(&self, scope: &str) {
        self.fleet().closed(Instant::now(), scope);
    }

    /// `ip` fetched one of gateway `name`'s playlists.
    pub(crate) fn viewer(&self, name: &str, ip: IpAddr) {
        self.audience
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saw(Instant::now(), name, ip);
    }

    /// Adds the hour's points when due, and sets the gauges. Every second, for ever.
    pub(crate) async fn run(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut f = self.fleet();
            f.tick(now, unix_now());
            let online = f
                .gateways()
                .filter(|(_, g)| g.online(now, f.offline_after))
                .count();
            let all = f.gateways().count();
            drop(f);
            metrics::gauge!("canopy_relay_fleet_gateways", "state" => "online").set(online as f64);
            metrics::gauge!("canopy_relay_fleet_gateways", "state" => "offline")
                .set((all - online) as f64);
        }
    }

    /// The fleet as `GET /api/fleet` answers it (`with_hour`: each gateway's last hour
    /// too, `?hour=1`; a page asks for it now and then, not each second).
    pub(crate) fn view(&self, relay: &str, with_hour: bool) -> serde_json::Value {
        let now = Instant::now();
        let viewers = self
            .audience
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts(now);
        let f = self.fleet();
        let gateways: Vec<serde_json::Value> = f
            .gateways()
            .map(|(scope, g)| {
                let (name, event) = scope.split_once('.').unwrap_or((scope, ""));
                let by_prefix = |p: &'static str| {
                    g.summary
                        .iter()
                        .filter_map(move |(k, v)| k.strip_prefix(p).map(|n| (n, v)))
                };
                let links: Vec<serde_json::Value> = by_prefix("l.")
                    .map(|(n, v)| match LinkLine::decode(v) {
                        Some(l) => serde_json::json!({
                            "name": n, "state": l.state, "kind": l.kind,
                            "up_kbps": l.up_kbps, "down_kbps": l.down_kbps,
                            "rtt_ms": l.rtt_ms, "loss_pct": l.loss_pct,
                        }),
                        None => serde_json::json!({ "name": n, "state": "unknown" }),
                    })
                    .collect();
                let cameras: Vec<serde_json::Value> = by_prefix("c.")
                    .map(|(n, v)| {
                        let (level, pinned) = match v.strip_suffix(" pinned") {
                            Some(l) => (l, true),
                            None => (v.as_str(), false),
                        };
                        serde_json::json!({ "name": n, "level": level, "pinned": pinned })
                    })
                    .collect();
                // `accepted pending queued oldest_s`; none reported: null, not zeros
                let bids = g.summary.get("bids").map(|b| {
                    let f: Vec<&str> = b.split(' ').collect();
                    let count = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
                    let oldest = f.get(3).and_then(|x| x.parse::<f64>().ok()).filter(|x| x.is_finite());
                    serde_json::json!({
                        "accepted": count(0), "pending": count(1), "queued": count(2),
                        "oldest_pending_s": oldest,
                    })
                });
                let problems: Vec<&String> = by_prefix("p.").map(|(_, v)| v).collect();
                let online = g.online(now, f.offline_after);
                serde_json::json!({
                    "name": name,
                    "event": event,
                    "online": online,
                    "connections": g.connections,
                    "why_offline": (!online).then(|| if g.connections == 0 {
                        "no connection".to_string()
                    } else {
                        match g.last_report {
                            Some(t) => format!("no report for {:.0} s", now.saturating_duration_since(t).as_secs_f64()),
                            None => "no report yet".to_string(),
                        }
                    }),
                    "last_report_s": g.last_report.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    "up_kbps": g.number("up"),
                    "down_kbps": g.number("down"),
                    "links_up": g.number("links_up") as u64,
                    "links": links,
                    "cameras": cameras,
                    "viewers": viewers.get(name).copied().unwrap_or(0),
                    "bids": bids,
                    "stream_capacity_kbps": g.summary.get("capacity").and_then(|c| c.parse::<f64>().ok()),
                    "problems": problems,
                    "version": g.summary.get("v"),
                    "telemetry_bytes": g.bytes,
                    "reports": g.reports,
                    "hour": with_hour.then_some(&g.points),
                })
            })
            .collect();
        serde_json::json!({ "relay": relay, "gateways": gateways })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST https://canopy.session/telemetry`: applies a gateway's report; 204, or 409 with
/// `canopy-telemetry: full` when the relay wants a whole summary.
pub(crate) async fn intake(fleet: &FleetState, ctx: &ConnCtx, stream: &mut Stream) -> StatusCode {
    let mut body = Vec::new();
    let read = tokio::time::timeout(READ_WITHIN, async {
        loop {
            match stream.recv_data().await {
                Ok(Some(mut chunk)) => {
                    if body.len() + chunk.remaining() > wire::MAX_REPORT {
                        return Err(StatusCode::PAYLOAD_TOO_LARGE);
                    }
                    while chunk.has_remaining() {
                        let c = chunk.chunk();
                        body.extend_from_slice(c);
                        let n = c.len();
                        chunk.advance(n);
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => return Err(StatusCode::BAD_REQUEST),
            }
        }
    })
    .await;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(StatusCode::PAYLOAD_TOO_LARGE)) => {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return refuse(
                stream,
                Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "a report is at most 24 KiB"),
            )
            .await;
        }
        // the gateway gave up on it: nothing to answer
        Ok(Err(s)) => return s,
        Err(_) => {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return refuse(
                stream,
                Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the report did not arrive in 5 s",
                ),
            )
            .await;
        }
    }
    metrics::counter!("canopy_relay_telemetry_bytes_total").increment(body.len() as u64);
    let report = match Report::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(stream, Refusal::new(StatusCode::BAD_REQUEST, e.to_string())).await
        }
    };
    let applied = fleet
        .fleet()
        .apply(Instant::now(), &ctx.scope, &report, body.len());
    match applied {
        Ok(()) => no_content(stream).await,
        Err(Refused::WantFull) => {
            let r = Refusal::new(StatusCode::CONFLICT, "send a whole summary");
            let mut resp = Response::builder().status(r.status);
            if let Some(h) = resp.headers_mut() {
                *h = r.headers();
                h.insert(
                    wire::HDR_TELEMETRY,
                    http::HeaderValue::from_static(wire::WANT_FULL),
                );
            }
            if stream
                .send_response(resp.body(()).unwrap_or_default())
                .await
                .is_ok()
            {
                let _ = stream.send_data(r.body()).await;
                let _ = stream.finish().await;
            }
            StatusCode::CONFLICT
        }
        Err(Refused::Full) => {
            refuse(
                stream,
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the relay keeps as many gateways as it can",
                ),
            )
            .await
        }
        // nobody waits for this answer (the gateway sent a newer report since)
        Err(Refused::Stale) => {
            refuse(
                stream,
                Refusal::new(
                    StatusCode::CONFLICT,
                    "older than the report the relay holds: ignored",
                ),
            )
            .await
        }
    }
}
