//! Still parts against a real decoder (ffmpeg, which tests/deps.sh installs): a camera-like
//! x264 stream (B-frames, 1 s GOPs) with AAC audio, mono and stereo, stops after 2 s and
//! the relay's still parts go on for 2 s. ffmpeg must read the whole of it without a
//! message; every still picture must be the last keyframe's picture, and the still audio
//! silent.

use bytes::Bytes;
use segmenter::still::StillMaker;
use segmenter::{Output, Segmenter, SegmenterConfig};
use std::path::Path;

mod common;
use common::ffmpeg;

/// A 3 s test clip with `channels` of audio, through our segmenter: init and whole parts.
#[cfg(test)]
fn camera(dir: &Path, channels: &str) -> (Bytes, Vec<Bytes>) {
    let mp4 = dir.join(format!("camera-{channels}.mp4"));
    let made = ffmpeg(&[
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-bf",
        "2",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-ac",
        channels,
        mp4.to_str().unwrap(),
    ]);
    assert!(
        made.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let clip = segmenter::mp4file::demux(&Bytes::from(std::fs::read(&mp4).unwrap())).unwrap();
    let mut seg = Segmenter::new(SegmenterConfig::default());
    seg.set_tracks(clip.tracks.clone()).unwrap();
    let (mut init, mut parts, mut part) = (Bytes::new(), Vec::new(), Vec::new());
    for f in &clip.frames {
        seg.handle_frame(f.clone(), 0).unwrap();
        while let Some(o) = seg.poll_output() {
            match o {
                Output::Init { data, .. } => init = data,
                Output::Chunk(c) => {
                    part.extend_from_slice(&c.data);
                    if c.last {
                        parts.push(Bytes::from(std::mem::take(&mut part)));
                    }
                }
            }
        }
    }
    (init, parts)
}

#[cfg(test)]
fn check(channels: &str) {
    let dir = std::env::temp_dir().join(format!("canopy-still-{channels}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (init, parts) = camera(&dir, channels);
    // the first 2 s (ten parts), then the media stops: 2 s of still parts
    let real = &parts[..10];
    let mut maker = StillMaker::new();
    maker.set_init(0, Some(&init));
    for p in real {
        maker.take(p);
    }
    let mut stream = init.to_vec();
    for p in real {
        stream.extend_from_slice(p);
    }
    for i in 0..10 {
        let still = maker.part(0.2, i % 5 == 0).expect("a still part");
        stream.extend_from_slice(&still.data);
    }
    let file = dir.join("held.mp4");
    std::fs::write(&file, &stream).unwrap();
    let f = file.to_str().unwrap();

    let read = ffmpeg(&["-nostdin", "-v", "error", "-i", f, "-f", "null", "-"]);
    let messages = String::from_utf8_lossy(&read.stderr);
    assert!(
        read.status.success() && messages.trim().is_empty(),
        "{messages}"
    );

    // every still picture is the last keyframe's (the 26th picture: 1 s GOPs at 25 fps),
    // in output order, one line a picture
    let md5 = ffmpeg(&[
        "-nostdin",
        "-v",
        "error",
        "-i",
        f,
        "-map",
        "0:v",
        "-fps_mode",
        "passthrough",
        "-f",
        "framemd5",
        "-",
    ]);
    let listing = String::from_utf8_lossy(&md5.stdout);
    let hashes: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(str::trim))
        .collect();
    assert_eq!(
        hashes.len(),
        60,
        "50 pictures, then 10 still ones: {listing}"
    );
    let keyframe = hashes[25];
    assert!(hashes[50..].iter().all(|h| *h == keyframe), "{listing}");
    assert_eq!(hashes[..50].iter().filter(|h| **h == keyframe).count(), 1);

    // the still audio is silence (from 0.1 s after the stop: the last real frame's overlap)
    let pcm = ffmpeg(&[
        "-nostdin", "-v", "error", "-i", f, "-map", "0:a", "-f", "s16le", "-ac", "1", "-ar",
        "48000", "-",
    ]);
    let samples: Vec<i16> = pcm
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let total_s = samples.len() as f64 / 48_000.0;
    assert!((3.9..4.1).contains(&total_s), "{total_s} s of audio");
    let loud_before = samples[48_000..96_000]
        .iter()
        .filter(|s| s.abs() > 1000)
        .count();
    assert!(loud_before > 10_000, "the tone: {loud_before} loud samples");
    let after = &samples[(2.1 * 48_000.0) as usize..];
    let loudest = after.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(loudest <= 1, "the still audio reaches {loudest}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_held_stereo_stream_decodes_to_its_keyframe_and_silence() {
    check("2");
}

#[test]
fn a_held_mono_stream_decodes_to_its_keyframe_and_silence() {
    check("1");
}
