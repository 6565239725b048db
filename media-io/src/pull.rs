//! Pulled cameras: RTSP with retina (TCP interleaved, credentials), reconnecting when the
//! camera drops.

use crate::feed::Feed;
use crate::rendition::LiveRendition;
use crate::streams::LiveStream;
use futures_util::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, Session, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Longest wait for an RTSP answer or for media before the session counts as dead.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// When to try a camera that dropped again: at once (200 ms) after a session that brought
/// media, then 250 ms doubling to 1 s while the camera has been gone for under five
/// minutes (a camera that comes back is live again within a second), then every 5 s.
#[derive(Debug, Default)]
struct Backoff {
    down_since: Option<tokio::time::Instant>,
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MIN: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(1);
    const LONG_CAP: Duration = Duration::from_secs(5);
    const LONG_AFTER: Duration = Duration::from_secs(300);

    /// The wait before the next attempt, after one that ended at `now`; `delivered`: it
    /// brought media.
    fn after(&mut self, now: tokio::time::Instant, delivered: bool) -> Duration {
        if delivered {
            self.down_since = Some(now);
            self.next = Self::MIN;
            return Self::FIRST;
        }
        let since = *self.down_since.get_or_insert(now);
        let cap = if now.saturating_duration_since(since) >= Self::LONG_AFTER {
            Self::LONG_CAP
        } else {
            Self::CAP
        };
        let wait = self.next.clamp(Self::MIN, cap);
        self.next = (wait * 2).min(cap);
        wait
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
    let mut backoff = Backoff::default();
    loop {
        if main {
            stream.set_status(|s| s.state = "connecting".into());
        }
        let mut frames = 0;
        let r = pull_once(&stream, &rendition, &url, creds.clone(), main, &mut frames).await;
        stream.source_broke(&rendition);
        let msg = match r {
            Ok(()) => "the camera ended the stream".to_string(),
            Err(e) => e,
        };
        let wait = backoff.after(tokio::time::Instant::now(), frames > 0);
        warn!(camera, rendition = rendition.name(), error = %msg, retry_ms = wait.as_millis() as u64, "camera disconnected; reconnecting");
        if main {
            stream.set_status(|s| {
                s.state = "reconnecting".into();
                s.last_error = Some(msg.clone());
            });
        }
        tokio::time::sleep(wait).await;
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
    frames: &mut u64,
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
    let mut feed = Feed::new(camera, rendition.clone(), &set_up).on_air(stream.program());
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
        *frames = feed.frames;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_that_returns_is_tried_within_a_second() {
        let t0 = tokio::time::Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.after(t0, true), Duration::from_millis(200));
        let waits: Vec<u64> = (0..6)
            .map(|i| b.after(t0 + Duration::from_secs(i), false).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![250, 500, 1000, 1000, 1000, 1000]);
        // gone for five minutes: up to 5 s
        let later: Vec<u64> = (0..4)
            .map(|i| b.after(t0 + Duration::from_secs(301 + i), false).as_secs())
            .collect();
        assert_eq!(later, vec![1, 2, 4, 5]);
        // a session with media resets it
        assert_eq!(
            b.after(t0 + Duration::from_secs(400), true),
            Duration::from_millis(200)
        );
        assert_eq!(
            b.after(t0 + Duration::from_secs(401), false),
            Duration::from_millis(250)
        );
    }

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
