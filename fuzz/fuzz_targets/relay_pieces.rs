//! The relay's media intake: arbitrary `canopy-media` headers and bytes, as a gateway (or
//! anything holding a gateway's certificate) could send them, into a mirror and its
//! recording, with the clock moving and viewers reading in between.
#![no_main]
use bytes::Bytes;
use segmenter::hls::RenderOptions;
use segmenter::mirror::{Mirror, MirrorConfig};
use segmenter::record::Recording;
use segmenter::window::StreamInfo;
use std::time::{Duration, Instant};
use tunnel::wire::media::PieceHeader;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut wall = 1_800_000_000_000u64;
    let mut m = Mirror::new(
        MirrorConfig {
            max_pending_bytes: 1 << 20,
            ..MirrorConfig::default()
        },
        1_800_000_000,
    );
    let mut rec = Recording::new(Duration::from_secs(5));
    let mut last: Option<(u64, u32)> = None;
    // records: op(1) header length(1) header, payload length(1) payload
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0];
        let hl = usize::from(rest[1]).min(rest.len() - 2);
        let header = String::from_utf8_lossy(&rest[2..2 + hl]).into_owned();
        rest = &rest[2 + hl..];
        let pl = usize::from(*rest.first().unwrap_or(&0)).min(rest.len().saturating_sub(1));
        let payload = Bytes::copy_from_slice(rest.get(1..1 + pl).unwrap_or(&[]));
        rest = rest.get(1 + pl..).unwrap_or(&[]);
        let step = Duration::from_millis(u64::from(op & 0x3f) * 20);
        now += step;
        wall += step.as_millis() as u64;
        match op >> 6 {
            0 | 1 => {
                let Ok(h) = PieceHeader::decode(&header) else {
                    continue;
                };
                let piece = ingest_relay::piece_from_wire(&h, payload);
                last = Some((piece.run, piece.part.init));
                if let Ok(t) = m.handle_piece(now, wall, piece) {
                    if let Some(p) = t.completed {
                        let _ = rec.add_part(now, &p);
                    }
                }
            }
            2 => {
                // the init the last piece named, or another
                let (run, generation) = match last {
                    Some(l) if op & 4 != 0 => l,
                    _ => (u64::from(op & 3), u32::from(op & 1)),
                };
                m.handle_init(
                    now,
                    run,
                    generation,
                    payload,
                    StreamInfo {
                        codecs: header,
                        resolution: None,
                    },
                );
            }
            _ => {
                m.poll(now);
                let _ = rec.poll(now);
                let w = m.window();
                let _ = w.render(&RenderOptions {
                    skip: op & 1 == 1,
                    ..RenderOptions::default()
                });
                if let Some((msn, index)) = w.playlist().next_part() {
                    let _ = w.read_part(msn, index, u64::from(op & 7) * 100);
                }
                if let Some((msn, index)) = w.playlist().last_part() {
                    let _ = w.read_part(msn, index, 0);
                }
                let _ = rec.render();
            }
        }
    }
    let _ = rec.end(now);
});
