//! LL-HLS over HTTP for any [`WindowSource`]: the gateway's renditions (on-site screens)
//! and the relay's mirrored ones (viewers) answer with the same code.
//!
//! - media playlists with blocking reload (`_HLS_msn`, `_HLS_part`, RFC 8216bis: wait until
//!   the playlist holds the part, 400 when it is too far ahead, 503 after three target
//!   durations), delta updates (`_HLS_skip`) and rendition reports;
//! - init segments, segments, and parts: the hinted part is answered as soon as its first
//!   chunk exists, as a body that grows as the rest arrives; a part given up before it is
//!   whole ends its body with [`BrokenOff`], which the server turns into an aborted answer
//!   (never a short body that looks complete);
//! - cache headers for a CDN in front: playlists short-lived (a blocking answer a little
//!   longer: it only ever satisfies later requests too), media immutable.
//!
//! Errors are [`ServeError`]s; the caller turns them into its synthetic responses (status,
//! reason header). A slow viewer costs only its own task: bodies are slices of shared parts,
//! readers wait on a watch, and nothing here blocks the feeder for longer than a lock.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::BodyExt;
use segmenter::hls::{Blocking, Ready, RenderOptions, RenditionReport};
use segmenter::window::PartRead;
use segmenter::{LiveWindow, Lookup};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A response body: whole, or growing with a part.
pub type MediaBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BrokenOff>;

/// A growing part's body ended before the part was whole: it was given up (a gap), or it
/// did not complete within three target durations. A server must abort the answer (close
/// the HTTP/1.1 connection without the last chunk, reset the HTTP/3 stream): the bytes
/// sent so far are a torn fMP4 fragment, and a player that took them as the whole part
/// would feed its decoder a box cut in the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the part was given up before it was whole")]
pub struct BrokenOff;

/// `application/vnd.apple.mpegurl`
pub const M3U8: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";
const M4S: &str = "video/iso.segment";
/// Media never changes once published (URLs are never reused: see the mirror's numbering).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A window that readers can wait on.
pub trait WindowSource: Send + Sync + 'static {
    /// Runs `f` on the window.
    fn with_window<R>(&self, f: impl FnOnce(&mut LiveWindow) -> R) -> R;
    /// A receiver that changes whenever the window does.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Why a request gets no media.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// Unknown stream, file, or a part no longer (or never) held.
    #[error("{0}")]
    NotFound(&'static str),
    /// A malformed name or directive.
    #[error("{0}")]
    BadRequest(String),
    /// Not there in time.
    #[error("{0}")]
    Unavailable(&'static str),
    /// A signed URL was required and not given, or expired.
    #[error("{0}")]
    Forbidden(&'static str),
}

impl ServeError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// Waits until `ready` holds on `src`'s window or `limit` passes; true if it holds.
pub async fn wait_for<S: WindowSource + ?Sized>(
    src: &S,
    limit: Duration,
    mut ready: impl FnMut(&mut LiveWindow) -> bool,
) -> bool {
    let mut rx = src.changes();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if src.with_window(&mut ready) {
            return true;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return src.with_window(&mut ready),
        }
    }
}

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> MediaBody {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn ok(content_type: &'static str, cache: &str, body: MediaBody) -> Response<MediaBody> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = http::HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// The answer as a client of HTTP `version` can take it. HTTP/1.0 has no chunked encoding:
/// a body of unknown length ends when the connection closes, so a cut one would read as
/// whole (and a caching proxy that speaks 1.0 upstream, as nginx does by default, would
/// keep it as immutable). For it a growing part is waited for whole and answered with its
/// length, or refused when given up; HTTP/1.1 and later get the answer as it is.
pub async fn whole_for(
    version: http::Version,
    resp: Response<MediaBody>,
) -> Result<Response<MediaBody>, ServeError> {
    if version >= http::Version::HTTP_11
        || http_body::Body::size_hint(resp.body()).exact().is_some()
    {
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    match body.collect().await {
        Ok(c) => Ok(Response::from_parts(parts, full(c.to_bytes()))),
        Err(BrokenOff) => Err(ServeError::Unavailable(
            "the part was given up before it was whole",
        )),
    }
}

/// The target duration the blocking waits follow (it grows with long GOPs).
fn target(src: &impl WindowSource) -> Duration {
    Duration::from_secs_f64(src.with_window(|w| w.target_duration()).clamp(0.2, 60.0))
}

/// Another rendition's live edge, asked for when a playlist is rendered.
pub type EdgeFn = Arc<dyn Fn() -> Option<(u64, u32)> + Send + Sync>;

/// How a media playlist is rendered beyond the request's own directives.
#[derive(Clone, Default)]
pub struct PlaylistOptions {
    /// Other renditions' reports, made when the playlist is rendered.
    pub reports: Vec<(String, EdgeFn)>,
    /// Appended to every URI (a viewer token).
    pub uri_suffix: String,
}

/// The media playlist, after a blocking wait if the query asks for one.
pub async fn media_playlist<S: WindowSource>(
    src: &S,
    query: Option<&str>,
    opts: &PlaylistOptions,
) -> Result<Response<MediaBody>, ServeError> {
    let b = Blocking::parse(query).map_err(|e| ServeError::BadRequest(e.to_string()))?;
    // RFC 8216bis: a blocking request that cannot be met within three target durations
    // gets 503; a first load waits a little for a stream that is about to begin
    let limit = target(src) * if b.msn.is_some() { 3 } else { 4 };
    let mut bad = false;
    let ok_now = wait_for(src, limit, |w| match w.ready(b) {
        Ready::Now => true,
        Ready::BadRequest => {
            bad = true;
            true
        }
        Ready::Wait => false,
    })
    .await;
    if bad {
        return Err(ServeError::BadRequest(
            "_HLS_msn or _HLS_part is too far ahead of the live edge".into(),
        ));
    }
    if !ok_now {
        return Err(ServeError::Unavailable("no media yet"));
    }
    let reports = opts
        .reports
        .iter()
        .filter_map(|(uri, f)| {
            f().map(|(last_msn, last_part)| RenditionReport {
                uri: uri.clone(),
                last_msn,
                last_part,
            })
        })
        .collect();
    let ropts = RenderOptions {
        skip: b.skip,
        reports,
        uri_suffix: opts.uri_suffix.clone(),
    };
    let (text, part_target) = src.with_window(|w| (w.render(&ropts), w.playlist().part_target()));
    // a blocking answer holds the part it waited for: it can serve later requests for the
    // same part for a while; a plain reload lives for half a part
    let cache = if b.msn.is_some() {
        "public, max-age=6".to_string()
    } else {
        format!("public, max-age={}", ((part_target / 2.0) as u64).max(1))
    };
    Ok(ok(M3U8, &cache, full(text)))
}

/// Init segment `generation`.
pub fn init<S: WindowSource>(src: &S, generation: u32) -> Result<Response<MediaBody>, ServeError> {
    src.with_window(|w| w.init(generation))
        .map(|d| ok(MP4, IMMUTABLE, full(d)))
        .ok_or(ServeError::NotFound("no such init segment"))
}

/// Whole segment `msn`, once complete (a request for the next one waits for it).
pub async fn segment<S: WindowSource>(
    src: &S,
    msn: u64,
) -> Result<Response<MediaBody>, ServeError> {
    let limit = target(src) * 3;
    let mut found = None;
    wait_for(src, limit, |w| match w.segment(msn) {
        Lookup::NotYet => false,
        other => {
            found = Some(other);
            true
        }
    })
    .await;
    match found {
        Some(Lookup::Ready(d)) => Ok(ok(M4S, IMMUTABLE, full(d))),
        Some(_) => Err(ServeError::NotFound("no longer (or never) here, or a gap")),
        None => Err(ServeError::Unavailable("not produced in time")),
    }
}

/// Part `index` of segment `msn`: at once when whole; the hinted part as soon as its first
/// chunk exists, as a body that grows with the part until it is whole.
pub async fn part<S: WindowSource>(
    src: Arc<S>,
    msn: u64,
    index: u32,
) -> Result<Response<MediaBody>, ServeError> {
    let limit = target(&*src) * 3;
    let mut first = None;
    let mut abandons = 0;
    wait_for(&*src, limit, |w| match w.read_part(msn, index, 0) {
        PartRead::NotYet => false,
        PartRead::Data { chunks, .. } if chunks.is_empty() => false,
        other => {
            first = Some(other);
            abandons = w.abandons();
            true
        }
    })
    .await;
    let (chunks, complete) = match first {
        Some(PartRead::Data { chunks, complete }) => (chunks, complete),
        Some(_) => return Err(ServeError::NotFound("no longer (or never) here, or a gap")),
        None => return Err(ServeError::Unavailable("not produced in time")),
    };
    if complete {
        let data = chunks.into_iter().next().unwrap_or_default();
        return Ok(ok(M4S, IMMUTABLE, full(data)));
    }
    let state = Growing {
        src,
        msn,
        index,
        // counts the bytes handed out: the queued chunks add theirs as they go
        offset: 0,
        queued: chunks.into(),
        abandons,
        done: false,
        deadline: tokio::time::Instant::now() + limit,
    };
    let stream = futures_util::stream::unfold(state, Growing::next);
    let body = http_body_util::StreamBody::new(futures_util::StreamExt::map(stream, |b| {
        b.map(http_body::Frame::data)
    }));
    Ok(ok(M4S, IMMUTABLE, body.boxed_unsync()))
}

/// A part's body that follows the part as it grows.
struct Growing<S> {
    src: Arc<S>,
    msn: u64,
    index: u32,
    offset: u64,
    queued: std::collections::VecDeque<Bytes>,
    /// The window's count of given-up parts when the body began: a part given up after
    /// that is this one, even if another has taken its place since.
    abandons: u64,
    done: bool,
    deadline: tokio::time::Instant,
}

impl<S: WindowSource> Growing<S> {
    /// The next piece of the body: bytes as they arrive, `None` once the part is whole, or
    /// one [`BrokenOff`] (then `None`) if it ends before that.
    async fn next(mut self) -> Option<(Result<Bytes, BrokenOff>, Self)> {
        loop {
            if let Some(b) = self.queued.pop_front() {
                self.offset += b.len() as u64;
                return Some((Ok(b), self));
            }
            if self.done {
                return None;
            }
            let mut rx = self.src.changes();
            let (msn, index, offset, since) = (self.msn, self.index, self.offset, self.abandons);
            let read = self.src.with_window(|w| {
                if w.abandoned_since(since, msn, index) {
                    PartRead::Gone
                } else {
                    w.read_part(msn, index, offset)
                }
            });
            match read {
                PartRead::Data { chunks, complete } => {
                    self.queued
                        .extend(chunks.into_iter().filter(|c| !c.is_empty()));
                    self.done = complete;
                    if !self.queued.is_empty() || complete {
                        continue;
                    }
                }
                // the part was given up on (its source broke off)
                PartRead::Gone | PartRead::NotYet => return self.broken_off(),
            }
            if tokio::time::timeout_at(self.deadline, rx.changed())
                .await
                .is_err()
            {
                return self.broken_off();
            }
        }
    }

    fn broken_off(mut self) -> Option<(Result<Bytes, BrokenOff>, Self)> {
        self.done = true;
        Some((Err(BrokenOff), self))
    }
}

/// A media file name of a rendition: `init-G.mp4`, `seg-M.m4s`, `part-M.I.m4s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFile {
    /// The media playlist.
    Playlist,
    /// An init segment.
    Init(u32),
    /// A segment.
    Segment(u64),
    /// A part.
    Part(u64, u32),
}

impl MediaFile {
    /// Parses a file name; `None` for names that are no media file.
    pub fn parse(name: &str) -> Result<Option<Self>, ServeError> {
        let bad = |what: &str| ServeError::BadRequest(format!("bad {what} name"));
        if name == "stream.m3u8" {
            return Ok(Some(Self::Playlist));
        }
        if let Some(g) = name
            .strip_prefix("init-")
            .and_then(|f| f.strip_suffix(".mp4"))
        {
            return g
                .parse()
                .map(|g| Some(Self::Init(g)))
                .map_err(|_| bad("init segment"));
        }
        if let Some(m) = name
            .strip_prefix("seg-")
            .and_then(|f| f.strip_suffix(".m4s"))
        {
            return m
                .parse()
                .map(|m| Some(Self::Segment(m)))
                .map_err(|_| bad("segment"));
        }
        if let Some(p) = name
            .strip_prefix("part-")
            .and_then(|f| f.strip_suffix(".m4s"))
        {
            let parsed = p
                .split_once('.')
                .and_then(|(m, i)| Some((m.parse().ok()?, i.parse().ok()?)));
            return parsed
                .map(|(m, i)| Some(Self::Part(m, i)))
                .ok_or_else(|| bad("part"));
        }
        Ok(None)
    }
}

/// Serves one media file of a rendition.
pub async fn serve_file<S: WindowSource>(
    src: Arc<S>,
    file: &str,
    query: Option<&str>,
    opts: &PlaylistOptions,
) -> Result<Response<MediaBody>, ServeError> {
    match MediaFile::parse(file)? {
        Some(MediaFile::Playlist) => media_playlist(&*src, query, opts).await,
        Some(MediaFile::Init(g)) => init(&*src, g),
        Some(MediaFile::Segment(m)) => segment(&*src, m).await,
        Some(MediaFile::Part(m, i)) => part(src, m, i).await,
        None => Err(ServeError::NotFound("not found")),
    }
}

/// The live edge of a window, for another rendition's report: (last msn, last part).
pub fn live_edge(w: &LiveWindow) -> Option<(u64, u32)> {
    w.playlist().last_part()
}

#[cfg(test)]
mod tests {
    use super::*;
    use segmenter::{Chunk, PartMeta, SegmentStart, WindowConfig};
    use std::sync::Mutex;

    struct Src {
        w: Mutex<LiveWindow>,
        tx: watch::Sender<u64>,
    }

    impl WindowSource for Src {
        fn with_window<R>(&self, f: impl FnOnce(&mut LiveWindow) -> R) -> R {
            let mut w = self.w.lock().unwrap();
            let r = f(&mut w);
            let v = w.version();
            self.tx
                .send_if_modified(|old| std::mem::replace(old, v) != v);
            r
        }
        fn changes(&self) -> watch::Receiver<u64> {
            self.tx.subscribe()
        }
    }

    fn chunk(seq: u64, offset: u64, data: &'static [u8], last: bool) -> Chunk {
        Chunk {
            part: PartMeta {
                seq,
                msn: 0,
                index: seq as u32,
                independent: seq == 0,
                init: 0,
                capture_ms: 0,
                segment: (seq == 0).then_some(SegmentStart {
                    discontinuity: false,
                    pdt_ms: 1_795_000_000_000,
                }),
            },
            offset,
            data: Bytes::from_static(data),
            end_us: 200_000,
            last,
            ends_segment: false,
            frame_ms: 0,
        }
    }

    #[tokio::test]
    async fn the_hinted_part_grows_in_its_body_and_a_blocking_reload_waits() {
        let src = Arc::new(Src {
            w: Mutex::new(LiveWindow::new(WindowConfig::default(), 0)),
            tx: watch::channel(0).0,
        });
        src.with_window(|w| w.push_chunk(&chunk(0, 0, b"aa", true)).unwrap());
        let s2 = src.clone();
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s2.with_window(|w| w.push_chunk(&chunk(1, 0, b"bb", false)).unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
            s2.with_window(|w| w.push_chunk(&chunk(1, 2, b"cc", true)).unwrap());
        });
        let opts = PlaylistOptions::default();
        let pl = media_playlist(&*src, Some("_HLS_msn=0&_HLS_part=1"), &opts);
        let resp = part(src.clone(), 0, 1).await.unwrap();
        assert!(resp.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"bbcc");
        let pl = pl
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&pl).contains("part-0.1.m4s"));
        feeder.await.unwrap();
        assert_eq!(
            media_playlist(&*src, Some("_HLS_msn=9"), &opts)
                .await
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            media_playlist(&*src, Some("_HLS_msn=x"), &opts)
                .await
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            part(src.clone(), 5, 0).await.unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        assert!(MediaFile::parse("part-1.x.m4s").is_err());
        assert_eq!(MediaFile::parse("favicon.ico").unwrap(), None);
    }

    /// A player that takes a torn part for a whole one feeds its decoder half a box: the
    /// body ends with an error instead, whether the part is given up or never completes.
    #[tokio::test(start_paused = true)]
    async fn a_part_given_up_or_late_ends_its_body_with_an_error() {
        let src = Arc::new(Src {
            w: Mutex::new(LiveWindow::new(WindowConfig::default(), 0)),
            tx: watch::channel(0).0,
        });
        src.with_window(|w| w.push_chunk(&chunk(0, 0, b"aa", true)).unwrap());
        src.with_window(|w| w.push_chunk(&chunk(1, 0, b"bb", false)).unwrap());
        let s2 = src.clone();
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s2.with_window(|w| w.abandon_growing());
        });
        let mut body = part(src.clone(), 0, 1).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"bb");
        assert_eq!(body.frame().await.unwrap().unwrap_err(), BrokenOff);
        assert!(body.frame().await.is_none());
        feeder.await.unwrap();

        // the next part takes the given-up one's place before the body looks again: its
        // bytes are not the rest of the first one's
        src.with_window(|w| w.push_chunk(&chunk(1, 0, b"bb", false)).unwrap());
        let mut body = part(src.clone(), 0, 1).await.unwrap().into_body();
        body.frame().await.unwrap().unwrap();
        src.with_window(|w| {
            w.abandon_growing();
            w.push_chunk(&chunk(1, 0, b"xx", false)).unwrap();
            w.push_chunk(&chunk(1, 2, b"yy", false)).unwrap();
        });
        assert_eq!(body.frame().await.unwrap().unwrap_err(), BrokenOff);
        src.with_window(|w| w.abandon_growing());

        // a part that stops growing: the body gives up after three target durations
        src.with_window(|w| w.push_chunk(&chunk(1, 0, b"cc", false)).unwrap());
        let started = tokio::time::Instant::now();
        let body = part(src.clone(), 0, 1).await.unwrap().into_body();
        assert_eq!(body.collect().await.unwrap_err(), BrokenOff);
        let limit = target(&*src) * 3;
        assert!((limit..limit + Duration::from_millis(5)).contains(&started.elapsed()));

        // an HTTP/1.0 client, which cannot tell a cut body from a whole one: refused
        // once the part is given up; a part that completes is answered with its length
        let resp = part(src.clone(), 0, 1).await.unwrap();
        let s3 = src.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s3.with_window(|w| w.abandon_growing());
        });
        let e = whole_for(http::Version::HTTP_10, resp).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        src.with_window(|w| w.push_chunk(&chunk(1, 0, b"dd", false)).unwrap());
        let resp = part(src.clone(), 0, 1).await.unwrap();
        let s4 = src.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s4.with_window(|w| w.push_chunk(&chunk(1, 2, b"ee", true)).unwrap());
        });
        let whole = whole_for(http::Version::HTTP_10, resp).await.unwrap();
        assert_eq!(http_body::Body::size_hint(whole.body()).exact(), Some(4));
        assert_eq!(
            &whole.into_body().collect().await.unwrap().to_bytes()[..],
            b"ddee"
        );
    }
}
