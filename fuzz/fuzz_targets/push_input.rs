//! What an encoder sends to the RTSP push listener: request heads, SDP, and interleaved RTP
//! through retina's depacketizers into the segmenter.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway::rtsp_push::fuzz_input(data);
});
