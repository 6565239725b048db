//! The transcoder's output as the gateway reads it back (`segmenter::fmp4`): arbitrary
//! bytes, in arbitrary pieces, must give errors or frames within the box bound, never a
//! panic.
#![no_main]
use segmenter::fmp4::{Fmp4Reader, Found};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut).max(1);
    let mut r = Fmp4Reader::new(1 << 20);
    for c in rest.chunks(piece) {
        r.push(c);
        loop {
            match r.poll() {
                Ok(Some(Found::Frame(f))) => assert!(f.data.len() <= 1 << 20),
                Ok(Some(Found::Tracks(_))) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
