//! On-site LL-HLS over HTTP: the gateway's `/live/` for venue screens.
//!
//! URLs:
//! - `/live/` — JSON: cameras and their state;
//! - `/live/<camera>/index.m3u8` — multivariant playlist of the main rendition (what venue
//!   screens play);
//! - `/live/<camera>/abr.m3u8` — multivariant playlist of every rendition (main and the
//!   camera's substream), for players that switch. The renditions share a wall-clock-based
//!   timeline. (ffmpeg's HLS reader mixes streams of different variants, so index.m3u8
//!   lists one.)
//! - `/live/<camera>/<rendition>/stream.m3u8` — media playlist; blocking reload with
//!   `_HLS_msn` / `_HLS_part`;
//! - `/live/<camera>/<rendition>/init-<gen>.mp4`, `seg-<msn>.m4s`, `part-<msn>.<i>.m4s`;
//!   a request for the hinted part waits for it.

use crate::rendition::LiveRendition;
use crate::streams::{LiveStream, LiveStreams};
use bytes::Bytes;
use segmenter::hls::{render_multivariant, Blocking, Ready};
use segmenter::{Lookup, Rendition};
use std::time::Duration;

/// An HTTP answer from the live module: status, content type, cache policy, body.
pub struct Answer {
    /// Status code.
    pub status: http::StatusCode,
    /// Content-Type.
    pub content_type: &'static str,
    /// Cache-Control.
    pub cache: &'static str,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    fn ok(content_type: &'static str, cache: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status: http::StatusCode::OK,
            content_type,
            cache,
            body: body.into(),
        }
    }

    fn error(status: http::StatusCode, msg: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            cache: "no-store",
            body: Bytes::from(format!("{msg}\n")),
        }
    }
}

const M3U8: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";
const M4S: &str = "video/iso.segment";
const NO_CACHE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=60, immutable";

impl LiveStreams {
    /// Serves `GET /live/...`; `path` starts after `/live/`.
    pub async fn serve(&self, path: &str, query: Option<&str>) -> Answer {
        use http::StatusCode as S;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [""] => self.index(),
            [cam, file @ ("index.m3u8" | "abr.m3u8")] => {
                let Some(s) = self.get(cam) else {
                    return Answer::error(S::NOT_FOUND, "no such camera");
                };
                self.multivariant(&s, *file == "abr.m3u8").await
            }
            [cam, rend, file] => {
                let Some(r) = self.get(cam).and_then(|s| s.rendition(rend)) else {
                    return Answer::error(S::NOT_FOUND, "no such camera or rendition");
                };
                serve_file(&r, file, query).await
            }
            _ => Answer::error(S::NOT_FOUND, "not found"),
        }
    }

    fn index(&self) -> Answer {
        let mut v = Vec::new();
        for s in self.all() {
            let rends: Vec<_> = s
                .renditions
                .iter()
                .map(|r| {
                    let (st, ring_bytes, ring_parts) =
                        r.with(|x| (x.stats(), x.ring().bytes(), x.ring().len()));
                    serde_json::json!({
                        "name": r.name(),
                        "playlist": format!("/live/{}/{}/stream.m3u8", s.name(), r.name()),
                        "frames": st.frames, "dropped": st.dropped, "parts": st.parts,
                        "segments": st.segments, "discontinuities": st.discontinuities,
                        "ring_bytes": ring_bytes, "ring_parts": ring_parts,
                    })
                })
                .collect();
            v.push(serde_json::json!({
                "name": s.name(),
                "url": format!("/live/{}/index.m3u8", s.name()),
                "status": s.status(),
                "renditions": rends,
            }));
        }
        Answer::ok(
            "application/json",
            NO_CACHE,
            serde_json::to_vec_pretty(&v).unwrap_or_default(),
        )
    }

    async fn multivariant(&self, s: &LiveStream, all: bool) -> Answer {
        // a player that asks before the first segment is complete waits a little
        let main = s.main();
        let limit = main.cfg.segmenter.segment_target * 4;
        main.wait_for(limit, |r| {
            r.variant(String::new()).is_some_and(|v| v.bandwidth > 0)
        })
        .await;
        let variants: Vec<_> = s
            .renditions
            .iter()
            .take(if all { usize::MAX } else { 1 })
            .filter_map(|r| r.with(|x| x.variant(format!("{}/stream.m3u8", r.name()))))
            .collect();
        if variants.is_empty() {
            return Answer::error(http::StatusCode::SERVICE_UNAVAILABLE, "camera not live yet");
        }
        Answer::ok(M3U8, NO_CACHE, render_multivariant(&variants))
    }
}

async fn serve_file(r: &LiveRendition, file: &str, query: Option<&str>) -> Answer {
    use http::StatusCode as S;
    let part_target = r.cfg.segmenter.part_target;
    // the target duration grows with long GOPs; blocking waits follow it
    let target = r.cfg.segmenter.segment_target.max(Duration::from_secs_f64(
        r.with(|x| x.target_duration()).min(60.0),
    ));
    if file == "stream.m3u8" {
        let b = match Blocking::parse(query) {
            Ok(b) => b,
            Err(e) => return Answer::error(S::BAD_REQUEST, &e),
        };
        // RFC 8216bis: a blocking request that cannot be met within three target durations
        // gets 503
        let limit = if b.msn.is_some() {
            target * 3
        } else {
            target * 4
        };
        let mut bad = false;
        let ok = r
            .wait_for(limit, |x| match x.ready(b) {
                Ready::Now => true,
                Ready::BadRequest => {
                    bad = true;
                    true
                }
                Ready::Wait => false,
            })
            .await;
        if bad {
            return Answer::error(S::BAD_REQUEST, "_HLS_msn is more than two segments ahead");
        }
        if !ok {
            return Answer::error(S::SERVICE_UNAVAILABLE, "no media yet");
        }
        return Answer::ok(M3U8, NO_CACHE, r.with(|x| x.render()));
    }
    if let Some(g) = file
        .strip_prefix("init-")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        let Ok(g) = g.parse::<u32>() else {
            return Answer::error(S::BAD_REQUEST, "bad init segment name");
        };
        return match r.with(|x| x.init(g)) {
            Some(d) => Answer::ok(MP4, IMMUTABLE, d),
            None => Answer::error(S::NOT_FOUND, "no such init segment"),
        };
    }
    let lookup: Box<dyn Fn(&mut Rendition) -> Lookup + Send + Sync> = if let Some(m) = file
        .strip_prefix("seg-")
        .and_then(|f| f.strip_suffix(".m4s"))
    {
        let Ok(msn) = m.parse::<u64>() else {
            return Answer::error(S::BAD_REQUEST, "bad segment name");
        };
        Box::new(move |x| x.segment(msn))
    } else if let Some(p) = file
        .strip_prefix("part-")
        .and_then(|f| f.strip_suffix(".m4s"))
    {
        let parsed = p
            .split_once('.')
            .and_then(|(m, i)| Some((m.parse::<u64>().ok()?, i.parse::<u32>().ok()?)));
        let Some((msn, idx)) = parsed else {
            return Answer::error(S::BAD_REQUEST, "bad part name");
        };
        Box::new(move |x| x.part(msn, idx))
    } else {
        return Answer::error(S::NOT_FOUND, "not found");
    };
    let mut found = None;
    let limit = (part_target * 4).max(target * 2);
    r.wait_for(limit, |x| match lookup(x) {
        Lookup::NotYet => false,
        other => {
            found = Some(other);
            true
        }
    })
    .await;
    match found {
        Some(Lookup::Ready(d)) => Answer::ok(M4S, IMMUTABLE, d),
        Some(Lookup::Gone) => Answer::error(S::NOT_FOUND, "no longer (or never) in the ring"),
        _ => Answer::error(S::SERVICE_UNAVAILABLE, "not produced in time"),
    }
}
