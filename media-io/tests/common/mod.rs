//! What the tests that run a real ffmpeg share.

use std::process::{Command, Output};

/// Runs ffmpeg with `args` (tests/deps.sh installs it).
pub(crate) fn ffmpeg(args: &[&str]) -> Output {
    Command::new("ffmpeg")
        .args(args)
        .output()
        .expect("this test needs ffmpeg (tests/deps.sh installs it)")
}
