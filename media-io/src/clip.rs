//! A clip played as a live camera (the demo's camera, benches).

use crate::streams::LiveStream;
use segmenter::program::Source;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Plays a clip as a live camera's main stream (and its program's), in real time, looped:
/// each loop continues the timeline (no discontinuity), as a camera's stream would.
pub async fn run_clip(stream: Arc<LiveStream>, clip: Arc<segmenter::mp4file::Clip>) {
    let rendition = stream.main();
    if let Err(e) = rendition.set_tracks(clip.tracks.clone()) {
        warn!(camera = stream.name(), error = %e, "clip unusable");
        return;
    }
    stream.connected();
    let program = stream.program();
    let period_us = clip.duration_us().max(1);
    let start = tokio::time::Instant::now();
    for n in 0i64.. {
        for f in &clip.frames {
            let ts = i64::from(clip.tracks[f.track].timescale.max(1));
            let at_us = f.dts * 1_000_000 / ts + n * period_us;
            tokio::time::sleep_until(start + Duration::from_micros(at_us.max(0) as u64)).await;
            let frame = clip.looped(f, n);
            if let Some(p) = &program {
                p.offer(Source::Main, &clip.tracks, frame.clone());
            }
            if let Err(e) = rendition.frame(frame) {
                debug!(camera = stream.name(), error = %e, "clip frame dropped");
            }
        }
    }
}
