//! Skipped pictures against a real decoder (ffmpeg, which tests/deps.sh installs): streams
//! from x264 with the coding tools cameras use (CABAC with B-frames and weighted
//! prediction, CAVLC, picture order count type 2) keep their keyframes, every other frame
//! replaced by a skipped picture. ffmpeg must decode every frame without a message, and
//! every skipped picture must be its keyframe's picture again.

use bytes::Bytes;
use segmenter::h264_skip::SkipCoder;
use segmenter::media::parameter_sets;

mod common;
use common::ffmpeg;

/// Makes a 4 s x264 clip with `x264`'s settings, replaces every frame but the keyframes by a
/// skipped picture and decodes it with ffmpeg: (frames, keyframes, the decoded frames' md5s
/// in output order, ffmpeg's messages).
#[cfg(test)]
fn skip_all_but_keyframes(name: &str, x264: &[&str]) -> (usize, usize, Vec<String>, String) {
    let dir = std::env::temp_dir().join(format!("canopy-skip-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mp4 = dir.join("in.mp4");
    let mut args = vec![
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-g",
        "25",
    ];
    args.extend_from_slice(x264);
    args.push(mp4.to_str().unwrap());
    let made = ffmpeg(&args);
    assert!(
        made.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let clip = segmenter::mp4file::demux(&Bytes::from(std::fs::read(&mp4).unwrap())).unwrap();
    let v = clip.tracks.iter().position(|t| t.codec.is_video()).unwrap();
    let track = &clip.tracks[v];
    let coder = SkipCoder::new(track).unwrap();
    let mut annexb = Vec::new();
    for set in parameter_sets(track) {
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(set);
    }
    let mut anchor = None;
    let mut n = 0;
    let mut frames = 0;
    let mut keyframes = 0;
    for f in clip.frames.iter().filter(|f| f.track == v) {
        let au = if f.keyframe {
            anchor = Some(coder.anchor(&f.data).unwrap());
            n = 0;
            keyframes += 1;
            f.data.clone()
        } else {
            n += 1;
            coder.picture(anchor.unwrap(), n).unwrap()
        };
        frames += 1;
        let mut rest: &[u8] = &au;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
    }
    let es = dir.join("out.h264");
    std::fs::write(&es, &annexb).unwrap();
    let out = ffmpeg(&[
        "-nostdin",
        "-v",
        "error",
        "-f",
        "h264",
        "-i",
        es.to_str().unwrap(),
        "-f",
        "framemd5",
        "-",
    ]);
    let md5s: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|s| s.trim().to_string()))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        md5s.len(),
        frames,
        "{name}: ffmpeg decoded {} of {frames}",
        md5s.len()
    );
    (
        frames,
        keyframes,
        md5s,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(test)]
fn check(name: &str, x264: &[&str]) {
    let (frames, keyframes, md5s, messages) = skip_all_but_keyframes(name, x264);
    assert!(messages.trim().is_empty(), "{name}: ffmpeg said {messages}");
    assert!(keyframes >= 3, "{name}: {keyframes} keyframes");
    // every picture of a GOP is its keyframe's: as many distinct pictures as keyframes
    let mut runs = md5s.clone();
    runs.dedup();
    assert_eq!(
        runs.len(),
        keyframes,
        "{name}: {frames} frames, {keyframes} keyframes, {} distinct runs",
        runs.len()
    );
    assert_eq!(frames, 100, "{name}");
}

#[test]
fn cabac_with_b_frames_and_weighted_prediction() {
    check("cabac", &["-profile:v", "high", "-bf", "3"]);
}

#[test]
fn cavlc() {
    check("cavlc", &["-profile:v", "baseline"]);
}

#[test]
fn picture_order_count_type_2() {
    check("poc2", &["-profile:v", "main", "-bf", "0"]);
}

#[test]
fn a_picture_is_a_few_bytes() {
    let track = {
        let clip = segmenter::mp4file::demux(&Bytes::from_static(include_bytes!(
            "../../assets/demo-camera.mp4"
        )))
        .unwrap();
        let v = clip.tracks.iter().position(|t| t.codec.is_video()).unwrap();
        let key = clip
            .frames
            .iter()
            .find(|f| f.track == v && f.keyframe)
            .unwrap()
            .clone();
        (clip.tracks[v].clone(), key)
    };
    let coder = SkipCoder::new(&track.0).unwrap();
    let anchor = coder.anchor(&track.1.data).unwrap();
    let p = coder.picture(anchor, 1).unwrap();
    eprintln!("{}x{}: {} bytes", track.0.width, track.0.height, p.len());
    assert!(p.len() < 200, "{} bytes", p.len());
}
