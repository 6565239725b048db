//! On-site LL-HLS: the gateway's `/live/` for venue screens.
//!
//! URLs:
//! - `/live/` — JSON: cameras and their state;
//! - `/live/<camera>/index.m3u8` — multivariant playlist of the main rendition (what venue
//!   screens play);
//! - `/live/<camera>/abr.m3u8` — multivariant playlist of every rendition (main and the
//!   camera's substream), for players that switch. The renditions share a wall-clock-based
//!   timeline. (ffmpeg's HLS reader mixes streams of different variants, so index.m3u8
//!   lists one.)
//! - `/live/<camera>/<rendition>/stream.m3u8` — media playlist (`program` too: what the
//!   relay gets, cut at the camera's low-bandwidth level); blocking reload with
//!   `_HLS_msn` / `_HLS_part`, delta updates with `_HLS_skip`;
//! - `/live/<camera>/<rendition>/init-<gen>.mp4`, `seg-<msn>.m4s`, `part-<msn>.<i>.m4s`;
//!   the hinted part is answered as it grows.

use crate::hls_http::{self, full, MediaBody, PlaylistOptions, ServeError, WindowSource};
use crate::rendition::LiveRendition;
use crate::streams::{LiveStream, LiveStreams};
use http::{header, Response};
use segmenter::hls::render_multivariant;
use std::sync::Arc;

impl LiveStreams {
    /// Serves `GET /live/...`; `path` starts after `/live/`.
    pub async fn serve(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Result<Response<MediaBody>, ServeError> {
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [""] => Ok(self.index()),
            [cam, file @ ("index.m3u8" | "abr.m3u8")] => {
                let s = self
                    .get(cam)
                    .ok_or(ServeError::NotFound("no such camera"))?;
                multivariant(&s, *file == "abr.m3u8", "").await
            }
            [cam, rend, file] => {
                let s = self
                    .get(cam)
                    .ok_or(ServeError::NotFound("no such camera"))?;
                let r = s
                    .rendition(rend)
                    .ok_or(ServeError::NotFound("no such rendition"))?;
                let opts = PlaylistOptions {
                    reports: reports(&s, rend),
                    uri_suffix: String::new(),
                };
                hls_http::serve_file(r, file, query, &opts).await
            }
            _ => Err(ServeError::NotFound("not found")),
        }
    }

    fn index(&self) -> Response<MediaBody> {
        let mut v = Vec::new();
        for s in self.all() {
            let rends: Vec<_> = s
                .renditions
                .iter()
                .map(|r| {
                    let (st, ring_bytes, ring_parts) = r.with(|x| {
                        let st = x.stats();
                        let w = x.window();
                        (st, w.ring().bytes(), w.ring().len())
                    });
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
        let mut r = Response::new(full(serde_json::to_vec_pretty(&v).unwrap_or_default()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        r
    }
}

/// The other renditions' live edges, for a rendition's playlist.
fn reports(s: &Arc<LiveStream>, rend: &str) -> Vec<(String, hls_http::EdgeFn)> {
    s.renditions
        .iter()
        .filter(|r| r.name() != rend)
        .map(|r| {
            let uri = format!("../{}/stream.m3u8", r.name());
            let r = r.clone();
            let f: hls_http::EdgeFn = Arc::new(move || r.with_window(|w| hls_http::live_edge(w)));
            (uri, f)
        })
        .collect()
}

/// A camera's multivariant playlist: its main rendition, or (`all`) every rendition.
async fn multivariant(
    s: &LiveStream,
    all: bool,
    uri_suffix: &str,
) -> Result<Response<MediaBody>, ServeError> {
    // a player that asks before the first segment is complete waits a little
    let main: Arc<LiveRendition> = s.main();
    let limit = main.cfg.segmenter.segment_target * 4;
    hls_http::wait_for(&*main, limit, |w| {
        w.variant(String::new()).is_some_and(|v| v.bandwidth > 0)
    })
    .await;
    // the camera's own renditions: the program is what the relay gets (served on its own)
    let variants: Vec<_> = s
        .renditions
        .iter()
        .filter(|r| r.name() != crate::program::PROGRAM)
        .take(if all { usize::MAX } else { 1 })
        .filter_map(|r| r.with_window(|w| w.variant(format!("{}/stream.m3u8", r.name()))))
        .collect();
    if variants.is_empty() {
        return Err(ServeError::Unavailable("camera not live yet"));
    }
    let mut r = Response::new(full(render_multivariant(&variants, uri_suffix)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(hls_http::M3U8),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=1"),
    );
    Ok(r)
}
