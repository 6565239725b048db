//! The transcode level: a low-bitrate rendition of a camera that has no second stream,
//! made on the gateway by an ffmpeg child process.
//!
//! ffmpeg reads the camera's main rendition as we packaged it (its init segment, then each
//! part as it completes, CMAF on its stdin, from a part that starts with a keyframe),
//! scales the video down, encodes it with x264 (ultrafast, zero latency, a keyframe every
//! second, constant bit rate), copies the audio, and writes fragmented MP4 to its stdout (a
//! fragment at nearly every packet), which `segmenter::fmp4` reads back into the camera's `transcode`
//! rendition and its program. Why a child process rather than GStreamer's Rust bindings:
//! no new dependency tree in the gateway (ffmpeg is one Debian package, already a test
//! tool), a crash or a leak in the codec stays outside the gateway, and its CPU is the
//! child's, measurable and bounded (`-threads`).
//!
//! The child is started again when it exits (with backoff) and when the camera's tracks
//! change (a new init segment); when it falls behind the ring it skips ahead to the newest
//! keyframe part. Its error output is logged (the first lines of each run).

use crate::program::ProgramFeed;
use crate::rendition::LiveRendition;
use crate::streams::LiveStream;
use segmenter::fmp4::{Fmp4Reader, Found};
use segmenter::program::Source;
use segmenter::Track;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

/// The largest box read back from ffmpeg.
const MAX_BOX: usize = 8 << 20;
/// Lines of ffmpeg's error output logged per run.
const LOG_LINES: usize = 20;

/// What the transcode makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscodeSettings {
    /// Video bit rate, kbit/s.
    pub video_kbps: u32,
    /// Picture height at most, pixels (the width follows the aspect ratio).
    pub height: u32,
    /// Threads ffmpeg may use for decoding and encoding each.
    pub threads: u32,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        Self {
            video_kbps: 250,
            height: 360,
            threads: 1,
        }
    }
}

impl TranscodeSettings {
    /// ffmpeg's arguments: CMAF in on stdin, fragmented MP4 out on stdout, its video in
    /// `timescale` (the main stream's: a player's HLS reader keeps the first time base it
    /// saw, and ffmpeg's gave every other frame of a 12,800 Hz transcode the same time
    /// after a switch from the camera's 90 kHz, "non monotonically increasing dts").
    pub fn args(&self, timescale: u32) -> Vec<String> {
        let k = self.video_kbps;
        let t = self.threads.max(1).to_string();
        [
            "-hide_banner",
            "-nostats",
            "-loglevel",
            "error",
            "-fflags",
            "+nobuffer+genpts",
            "-threads",
            &t,
            "-f",
            "mp4",
            "-i",
            "pipe:0",
            "-map",
            "0:v:0",
            "-map",
            "0:a:0?",
            "-c:a",
            "copy",
            "-filter_threads",
            &t,
            "-vf",
            &format!("scale=-2:'min({},ih)':flags=fast_bilinear", self.height),
            "-c:v",
            "libx264",
            "-threads",
            &t,
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            &format!("{k}k"),
            "-maxrate",
            &format!("{k}k"),
            "-bufsize",
            &format!("{}k", k / 2),
            "-force_key_frames",
            "expr:gte(t,n_forced*1)",
            "-f",
            "mp4",
            "-movflags",
            "empty_moov+default_base_moof",
            // a fragment flushed at nearly every packet (at most one sample of each track
            // in it): `frag_every_frame` gave every other audio frame the time of the one
            // before it (Debian's ffmpeg 5.1), and the program dropped it: 40% of the audio
            // missing, a hole every 40 ms, and Chromium stalled
            "-frag_duration",
            "1",
            "-video_track_timescale",
            &timescale.to_string(),
            "pipe:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// A transcode with no output for this long while the camera sends is started again.
const STALL: Duration = Duration::from_secs(10);

/// Why one run of the child ended.
#[derive(Debug, thiserror::Error)]
enum RunEnd {
    #[error("ffmpeg could not start: {0}")]
    Spawn(std::io::Error),
    #[error("ffmpeg started without its pipes")]
    NoPipes,
    #[error("waiting for ffmpeg failed: {0}")]
    Wait(std::io::Error),
    #[error("ffmpeg exited: {0}")]
    Exited(std::process::ExitStatus),
    #[error("ffmpeg's output does not read: {0}")]
    Output(#[from] segmenter::fmp4::Fmp4Error),
    #[error("ffmpeg closed its output")]
    OutputClosed,
    #[error("ffmpeg took no more input: {0}")]
    InputClosed(std::io::Error),
    #[error("ffmpeg's tracks were refused: {0}")]
    TracksRefused(String),
    #[error("ffmpeg made nothing for {} s while the camera sent", STALL.as_secs())]
    Stalled,
    #[error("the camera's tracks changed")]
    TracksChanged,
    #[error("the camera is gone")]
    CameraGone,
}

/// Makes `stream`'s `transcode` rendition from its main one, forever.
pub async fn run_transcode(stream: Arc<LiveStream>, settings: TranscodeSettings) {
    let camera = stream.name().to_string();
    let Some(out) = stream.rendition(crate::program::rendition_of(Source::Transcode)) else {
        return;
    };
    let main = stream.main();
    let mut wait = Duration::from_secs(1);
    loop {
        let generation = until_init(&main).await;
        let started = tokio::time::Instant::now();
        let end = run_once(&stream, &main, &out, generation, settings).await;
        stream.source_broke(&out);
        if let RunEnd::Spawn(e) = &end {
            if e.kind() == std::io::ErrorKind::NotFound {
                warn!(
                    camera,
                    "ffmpeg is not installed: no transcode level for this camera"
                );
                return;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            wait = Duration::from_secs(1);
        }
        match end {
            RunEnd::TracksChanged => {
                info!(
                    camera,
                    "transcode: the camera's tracks changed; starting again"
                );
                // a camera whose tracks keep changing does not spawn ffmpeg in a burst
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            e => {
                warn!(camera, error = %e, retry_ms = wait.as_millis() as u64, "transcode stopped");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Waits until `main` has an init segment; its generation.
async fn until_init(main: &LiveRendition) -> u32 {
    let mut changes = crate::hls_http::WindowSource::changes(main);
    loop {
        if let Some((g, _, _)) = main.init() {
            return g;
        }
        if changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The newest part of `main` that starts with a keyframe, in init `generation`.
fn newest_keyframe_part(main: &LiveRendition, generation: u32) -> Option<u64> {
    let next = main.with(|r| r.window().next_seq());
    let oldest = main.oldest_seq();
    (oldest..next).rev().take(200).find(|&s| {
        main.part(s)
            .is_some_and(|p| p.independent && p.init == generation)
    })
}

async fn run_once(
    stream: &LiveStream,
    main: &Arc<LiveRendition>,
    out: &Arc<LiveRendition>,
    generation: u32,
    settings: TranscodeSettings,
) -> RunEnd {
    let camera = stream.name().to_string();
    let timescale = main.with(|r| {
        r.tracks()
            .find(|t| t.codec.is_video())
            .map_or(90_000, |t| t.timescale)
    });
    let mut child = match tokio::process::Command::new("ffmpeg")
        .args(settings.args(timescale))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return RunEnd::Spawn(e),
    };
    info!(
        camera,
        pid = child.id(),
        kbps = settings.video_kbps,
        height = settings.height,
        "transcode: ffmpeg started"
    );
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return RunEnd::NoPipes;
    };
    {
        let camera = camera.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut n = 0;
            while let Ok(Some(l)) = lines.next_line().await {
                if n < LOG_LINES {
                    warn!(camera, "ffmpeg: {l}");
                }
                n += 1;
            }
        });
    }
    let feeding = feed(main.clone(), stdin, generation);
    let reading = read_back(stream.program(), main, out.clone(), stdout);
    tokio::select! {
        end = feeding => {
            let _ = child.kill().await;
            end
        }
        end = reading => {
            let _ = child.kill().await;
            end
        }
        status = child.wait() => match status {
            Ok(s) => RunEnd::Exited(s),
            Err(e) => RunEnd::Wait(e),
        },
    }
}

/// Writes `main`'s init segment `generation` and then each part as it completes into
/// ffmpeg's stdin, until the tracks change or the pipe closes.
async fn feed(
    main: Arc<LiveRendition>,
    mut stdin: tokio::process::ChildStdin,
    generation: u32,
) -> RunEnd {
    let mut changes = crate::hls_http::WindowSource::changes(&*main);
    let Some(init) = main.init_generation(generation) else {
        return RunEnd::TracksChanged;
    };
    if let Err(e) = stdin.write_all(&init).await {
        return RunEnd::InputClosed(e);
    }
    let mut next: Option<u64> = None;
    loop {
        if main.init().is_some_and(|(g, _, _)| g != generation) {
            return RunEnd::TracksChanged;
        }
        if next.is_none_or(|s| s < main.oldest_seq()) {
            // the start, or fallen behind the ring: from the newest keyframe part
            next = newest_keyframe_part(&main, generation);
            if let Some(s) = next {
                debug!(
                    rendition = main.name(),
                    seq = s,
                    "transcode: feeding from a keyframe part"
                );
            }
        }
        while let Some(part) = next.and_then(|s| main.part(s)) {
            if part.init != generation {
                return RunEnd::TracksChanged;
            }
            if !part.gap {
                if let Err(e) = stdin.write_all(&part.data).await {
                    return RunEnd::InputClosed(e);
                }
            }
            next = Some(part.seq + 1);
        }
        if changes.changed().await.is_err() {
            return RunEnd::CameraGone;
        }
    }
}

/// Reads ffmpeg's fragmented MP4 back into `out` (and the camera's program); a child that
/// makes nothing for [`STALL`] while `main` has fresh parts is stalled.
async fn read_back(
    program: Option<Arc<ProgramFeed>>,
    main: &LiveRendition,
    out: Arc<LiveRendition>,
    mut stdout: tokio::process::ChildStdout,
) -> RunEnd {
    let mut reader = Fmp4Reader::new(MAX_BOX);
    let mut tracks: Vec<Track> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tokio::time::timeout(STALL, stdout.read(&mut buf)).await {
            Err(_) if main.recent_rate(Duration::from_secs(2)).is_some() => return RunEnd::Stalled,
            Err(_) => continue, // the camera is quiet too
            Ok(Ok(0) | Err(_)) => return RunEnd::OutputClosed,
            Ok(Ok(n)) => n,
        };
        reader.push(&buf[..n]);
        loop {
            match reader.poll() {
                Ok(None) => break,
                Ok(Some(Found::Tracks(t))) => {
                    if let Err(e) = out.set_tracks(t.clone()) {
                        return RunEnd::TracksRefused(e);
                    }
                    tracks = t;
                }
                Ok(Some(Found::Frame(f))) => {
                    if let Some(p) = &program {
                        p.offer(Source::Transcode, &tracks, f.clone());
                    }
                    if let Err(e) = out.frame(f) {
                        debug!(rendition = out.name(), error = %e, "transcoded frame dropped");
                    }
                }
                Err(e) => return RunEnd::Output(e),
            }
        }
    }
}
