//! Frames with arbitrary timestamps, flags, tracks and payloads into a rendition (segmenter,
//! part ring, playlist), with discontinuities and reads in between.
#![no_main]
use bytes::Bytes;
use segmenter::{Frame, Rendition, RenditionConfig, Track};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
    let Some(avcc) = segmenter::media::avcc_from_parameter_sets(&sps, &[&[0x68, 0xce, 0x38, 0x80]])
    else {
        return;
    };
    let mut r = Rendition::new(RenditionConfig {
        ring_bytes: 1 << 16,
        ..Default::default()
    });
    let _ = r.set_tracks(vec![
        Track::h264(avcc, 640, 360),
        Track::aac(Bytes::from_static(&[0x11, 0x90]), 48_000, 2),
    ]);
    // records: op(1) track(1) dts(4) cts(2) len(1) payload
    let mut rest = data;
    let mut wall = 1_800_000_000_000u64;
    while rest.len() >= 9 {
        let op = rest[0];
        let track = usize::from(rest[1] % 3);
        let dts = i64::from(i32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]])) * 16;
        let cts = i64::from(i16::from_le_bytes([rest[6], rest[7]]));
        let len = usize::from(rest[8]).min(rest.len() - 9);
        let payload = Bytes::copy_from_slice(&rest[9..9 + len]);
        rest = &rest[9 + len..];
        wall += u64::from(op & 0x3f);
        match op >> 6 {
            0 | 1 => {
                let _ = r.handle_frame(
                    Frame {
                        track,
                        pts: dts + cts,
                        dts,
                        keyframe: op & 1 == 1,
                        data: payload,
                    },
                    wall,
                );
            }
            2 => r.discontinuity(),
            _ => {
                let w = r.window();
                let (m, p) = w.playlist().next_part().unwrap_or((0, 0));
                let _ = w.part(m.saturating_sub(u64::from(op & 3)), p);
                let _ = w.read_part(m, p, u64::from(op & 7) * 64);
                let _ = w.segment(m.saturating_sub(1));
                let _ = w.render(&segmenter::hls::RenderOptions {
                    skip: op & 1 == 1,
                    ..Default::default()
                });
            }
        }
    }
    r.finish();
});
