//! What an encoder sends to the RTSP push listener: request heads, SDP, and interleaved RTP
//! through retina's depacketizers into the segmenter.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    media_io::rtsp::fuzz_input(data);
});
