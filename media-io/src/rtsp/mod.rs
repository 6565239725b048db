//! The RTSP push listener for encoders (ANNOUNCE / SETUP / RECORD over TCP): the message
//! codec, the SDP, the RTP depacketizers, the session state machine and the socket shell.

pub mod codec;
pub mod listener;
pub mod rtp;
pub mod sdp;
pub mod session;

pub use listener::PushListener;
pub use session::MAX_CAMERAS;

use crate::feed::Feed;
use crate::rendition::LiveRendition;
use segmenter::RenditionConfig;
use std::sync::Arc;

/// The fuzzable input path of a push: SDP parsing, request-head parsing, RTP depacketizing
/// and segmenting. Never panics on any input.
pub fn fuzz_input(data: &[u8]) {
    let _ = codec::parse_head(&String::from_utf8_lossy(data));
    let _ = codec::url_path(&String::from_utf8_lossy(data));
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkAoEf+yA==,aM44gA==\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190\r\n";
    let Ok(medias) = sdp::parse_sdp(sdp.as_bytes()) else {
        return;
    };
    let _ = sdp::parse_sdp(data);
    let rendition = Arc::new(LiveRendition::standalone(
        "main",
        RenditionConfig::default(),
    ));
    let mut streams: Vec<rtp::RtpStream> = medias
        .iter()
        .enumerate()
        .filter_map(|(i, m)| rtp::RtpStream::new(i, m).ok())
        .collect();
    let mut feed = Feed::new("fuzz", rendition, &[(0, true, 90_000), (1, false, 48_000)]);
    for (i, s) in streams.iter().enumerate() {
        feed.parameters(i, s.parameters());
    }
    // the input is a series of [stream(1), len(2), packet] records
    let mut rest = data;
    while rest.len() >= 3 {
        let which = usize::from(rest[0] & 1);
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let pkt = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if let Some(stream) = streams.get_mut(which) {
            let _ = stream.feed(pkt, &mut feed);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_never_panics() {
        let mut seed = 1u64;
        for n in 0..2000 {
            let mut v = Vec::new();
            for _ in 0..(n % 300) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push((seed >> 33) as u8);
            }
            super::fuzz_input(&v);
        }
    }
}
