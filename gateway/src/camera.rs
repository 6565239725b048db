//! Camera ingest: RTSP pull with retina (TCP interleaved, credentials, reconnect with backoff),
//! and the glue from retina's frames and parameters to the segmenter's tracks and frames
//! (shared with the push listener).

use crate::live::{LiveRendition, LiveStream};
use futures_util::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, Session, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use segmenter::segmenter::FrameError;
use segmenter::{Frame, Track};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Longest wait for an RTSP answer or for media before the session counts as dead.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A segmenter track from retina's parameters; `clock_rate` is the RTP clock of the stream.
pub fn track_from(params: ParametersRef<'_>, clock_rate: u32) -> Option<Track> {
    match params {
        ParametersRef::Video(p) => {
            let (w, h) = p.pixel_dimensions();
            let (w, h) = (u16::try_from(w).ok()?, u16::try_from(h).ok()?);
            let config = bytes::Bytes::copy_from_slice(p.extra_data());
            let codec = p.rfc6381_codec();
            let mut t = if codec.starts_with("avc1") {
                Track::h264(config, w, h)
            } else if codec.starts_with("hvc1") || codec.starts_with("hev1") {
                Track::h265(config, w, h)
            } else {
                return None;
            };
            t.timescale = clock_rate;
            Some(t)
        }
        ParametersRef::Audio(p) => {
            if !p.rfc6381_codec().is_some_and(|c| c.starts_with("mp4a")) {
                return None;
            }
            let mut t = Track::aac(
                bytes::Bytes::copy_from_slice(p.extra_data()),
                p.clock_rate(),
                p.channels().get(),
            );
            t.timescale = clock_rate;
            Some(t)
        }
        _ => None,
    }
}

/// Feeds one rendition from retina items: keeps the track list in step with the source's
/// parameters, drops video after packet loss until the next keyframe, and logs problems
/// once per kind with the camera's name.
pub struct Feed {
    camera: String,
    rendition: Arc<LiveRendition>,
    /// retina stream id → (our track index, RTP clock rate)
    map: Vec<(usize, usize, u32)>,
    tracks: Vec<Option<Track>>,
    applied: bool,
    resync: bool,
    last_error: Option<String>,
    dts: segmenter::media::DtsFromPts,
    /// Frames packaged.
    pub frames: u64,
}

impl Feed {
    /// `streams`: (retina stream id, is video, RTP clock rate) of the streams set up, video first.
    pub fn new(
        camera: &str,
        rendition: Arc<LiveRendition>,
        streams: &[(usize, bool, u32)],
    ) -> Self {
        let map = streams
            .iter()
            .enumerate()
            .map(|(i, (id, _, clock))| (*id, i, *clock))
            .collect();
        if !streams.iter().any(|(_, v, _)| *v) {
            warn!(camera, "the camera sends no video: packaging audio only");
        }
        Self {
            camera: camera.to_string(),
            rendition,
            map,
            tracks: vec![None; streams.len()],
            applied: false,
            resync: false,
            last_error: None,
            dts: Default::default(),
            frames: 0,
        }
    }

    fn note(&mut self, e: String) {
        if self.last_error.as_deref() != Some(e.as_str()) {
            warn!(camera = %self.camera, rendition = self.rendition.name(), "{e}");
            self.last_error = Some(e);
        }
    }

    /// Updates a stream's parameters (at start, and when a frame says they changed).
    pub fn parameters(&mut self, stream_id: usize, params: Option<ParametersRef<'_>>) {
        let Some(&(_, idx, clock)) = self.map.iter().find(|(id, _, _)| *id == stream_id) else {
            return;
        };
        let t = params.and_then(|p| track_from(p, clock));
        if t.is_some() && self.tracks[idx] != t {
            self.tracks[idx] = t;
            self.applied = false;
        }
    }

    fn apply(&mut self) -> bool {
        if self.applied {
            return true;
        }
        // every stream set up needs its parameters before the init segment can be written
        if self.tracks.iter().any(Option::is_none) {
            return false;
        }
        let tracks: Vec<Track> = self.tracks.iter().flatten().cloned().collect();
        match self.rendition.set_tracks(tracks) {
            Ok(()) => {
                self.applied = true;
                true
            }
            Err(e) => {
                self.note(format!("unusable stream parameters: {e}"));
                false
            }
        }
    }

    /// One item from the source.
    pub fn item(&mut self, item: CodecItem) {
        let (stream_id, frame_ts, key, loss, data, video) = match item {
            CodecItem::VideoFrame(f) => {
                let key = f.is_random_access_point();
                (
                    f.stream_id(),
                    f.timestamp().timestamp(),
                    key,
                    f.loss(),
                    f.into_data(),
                    true,
                )
            }
            CodecItem::AudioFrame(f) => (
                f.stream_id(),
                f.timestamp().timestamp(),
                true,
                f.loss(),
                f.data().to_vec(),
                false,
            ),
            _ => return,
        };
        let Some(&(_, idx, _)) = self.map.iter().find(|(id, _, _)| *id == stream_id) else {
            return;
        };
        if video && loss > 0 {
            debug!(camera = %self.camera, loss, "video packets lost: waiting for a keyframe");
            self.resync = true;
        }
        if video && self.resync {
            if !key {
                return;
            }
            self.resync = false;
        }
        if !self.apply() {
            if self.tracks[idx].is_none() && video {
                self.note("no SPS/PPS from the camera yet: waiting for them".into());
            }
            return;
        }
        let frame = Frame {
            track: idx,
            pts: frame_ts,
            dts: frame_ts,
            keyframe: key,
            data: data.into(),
        };
        let frames = if video {
            self.dts.push(frame)
        } else {
            vec![frame]
        };
        for frame in frames {
            match self.rendition.frame(frame) {
                Ok(_) => {
                    self.frames += 1;
                    self.last_error = None;
                }
                Err(FrameError::WaitingForKeyframe) => {}
                Err(e) => self.note(format!("frame dropped: {e}")),
            }
        }
    }
}

/// Pulls a camera forever: connect, package, and on any failure log it, mark a
/// discontinuity and reconnect with backoff (0.5 s doubling to 10 s; reset after a session
/// that lasted a minute).
pub async fn run_pull(
    stream: Arc<LiveStream>,
    rendition: Arc<LiveRendition>,
    url: String,
    creds: Option<(String, String)>,
) {
    let camera = stream.name().to_string();
    let main = rendition.name() == "main";
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        if main {
            stream.set_status(|s| s.state = "connecting".into());
        }
        let r = pull_once(&stream, &rendition, &url, creds.clone(), main).await;
        rendition.discontinuity();
        let msg = match r {
            Ok(()) => "the camera ended the stream".to_string(),
            Err(e) => e,
        };
        warn!(camera, rendition = rendition.name(), error = %msg, retry_ms = backoff.as_millis() as u64, "camera disconnected; reconnecting");
        if main {
            stream.set_status(|s| {
                s.state = "reconnecting".into();
                s.last_error = Some(msg.clone());
            });
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Strips credentials from the URL (retina wants them separately).
fn split_url(
    url: &str,
    creds: Option<(String, String)>,
) -> Result<(url::Url, Option<Credentials>), String> {
    let mut u = url::Url::parse(url).map_err(|e| format!("bad camera URL: {e}"))?;
    let mut c = creds.map(|(username, password)| Credentials { username, password });
    if !u.username().is_empty() {
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map_or_else(|| s.to_string(), |(_, v)| v.into_owned())
        };
        c.get_or_insert(Credentials {
            username: dec(u.username()),
            password: dec(u.password().unwrap_or("")),
        });
        let _ = u.set_username("");
        let _ = u.set_password(None);
    }
    Ok((u, c))
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", one_line(&e.to_string()))),
        Err(_) => Err(format!(
            "{what}: no answer in {} s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn pull_once(
    stream: &LiveStream,
    rendition: &Arc<LiveRendition>,
    url: &str,
    creds: Option<(String, String)>,
    main: bool,
) -> Result<(), String> {
    let camera = stream.name();
    let (u, creds) = split_url(url, creds)?;
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("canopy-gateway/{}", env!("CARGO_PKG_VERSION")));
    let mut session = timed("DESCRIBE", Session::describe(u, opts)).await?;
    let streams = session.streams();
    let video = streams
        .iter()
        .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"));
    let audio = streams
        .iter()
        .position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic");
    if video.is_none() && audio.is_none() {
        let offered: Vec<String> = streams
            .iter()
            .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
            .collect();
        return Err(format!(
            "no H.264, H.265 or AAC stream offered (the camera offers {offered:?})"
        ));
    }
    let mut set_up = Vec::new();
    for i in [video, audio].into_iter().flatten() {
        let clock = streams[i].clock_rate_hz();
        set_up.push((i, Some(i) == video, clock));
    }
    for (i, _, _) in &set_up {
        let opts = SetupOptions::default()
            .transport(Transport::Tcp(TcpTransportOptions::default()))
            .frame_format(FrameFormat::MP4);
        timed("SETUP", session.setup(*i, opts)).await?;
    }
    let playing = timed(
        "PLAY",
        session.play(PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive)),
    )
    .await?;
    let mut demuxed = playing
        .demuxed()
        .map_err(|e| format!("demux: {}", one_line(&e.to_string())))?;
    let mut feed = Feed::new(camera, rendition.clone(), &set_up);
    for (i, _, _) in &set_up {
        feed.parameters(*i, demuxed.streams()[*i].parameters());
    }
    info!(
        camera,
        rendition = rendition.name(),
        streams = set_up.len(),
        "camera connected"
    );
    if main {
        stream.connected();
    }
    loop {
        let item = match tokio::time::timeout(MEDIA_TIMEOUT, demuxed.next()).await {
            Err(_) => return Err(format!("no media for {} s", MEDIA_TIMEOUT.as_secs())),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(one_line(&e.to_string())),
            Ok(Some(Ok(item))) => item,
        };
        if let CodecItem::VideoFrame(f) = &item {
            if f.has_new_parameters() {
                let id = f.stream_id();
                feed.parameters(id, demuxed.streams()[id].parameters());
            }
        }
        feed.item(item);
    }
}

/// Plays a clip as a live camera, in real time, looped: each loop continues the timeline
/// (no discontinuity), as a camera's stream would.
pub async fn run_clip(stream: Arc<LiveStream>, clip: Arc<segmenter::mp4file::Clip>) {
    let rendition = stream.main();
    if let Err(e) = rendition.set_tracks(clip.tracks.clone()) {
        warn!(camera = stream.name(), error = %e, "clip unusable");
        return;
    }
    stream.connected();
    let period_us = clip.duration_us().max(1);
    let start = tokio::time::Instant::now();
    for n in 0i64.. {
        for f in &clip.frames {
            let ts = i64::from(clip.tracks[f.track].timescale.max(1));
            let at_us = f.dts * 1_000_000 / ts + n * period_us;
            tokio::time::sleep_until(start + Duration::from_micros(at_us.max(0) as u64)).await;
            if let Err(e) = rendition.frame(clip.looped(f, n)) {
                debug!(camera = stream.name(), error = %e, "clip frame dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        let (u, c) = split_url("rtsp://ad%40min:p%3Ass@10.0.0.5:554/s1", None).unwrap();
        assert_eq!(u.as_str(), "rtsp://10.0.0.5:554/s1");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ad@min", "p:ss")
        );
        let (_, c) = split_url("rtsp://h/s", Some(("u".into(), "p".into()))).unwrap();
        assert_eq!(c.unwrap().username, "u");
        assert!(split_url("not a url", None).is_err());
    }
}
