//! Run-time control of a running emulator: a timeline from its profile, and a Unix control
//! socket taking one command per line (`canopy linkem ... --control PATH`):
//!
//! - `outage on` / `outage off`: cut the link silently (a blackhole) or restore it
//! - `rate UP DOWN`: rates in kbit/s
//! - `latency MS`: one-way latency, both directions
//! - `loss PERCENT`: random loss, both directions (clears bursty loss)
//! - `profile NAME`: switch to another profile (built-in name or file)
//! - `stats`: the counters as JSON
//!
//! Each command is answered with one line: `ok ...` or `error ...`.

use super::{LinkEmulator, LinkProfile, TimelineEvent};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Applies one command; returns the answer line (without newline).
pub fn apply(link: &LinkEmulator, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    let mut event = TimelineEvent::default();
    match words.as_slice() {
        ["outage", "on"] => event.outage = Some(true),
        ["outage", "off"] => event.outage = Some(false),
        ["rate", _, _] => match (num(1), num(2)) {
            (Some(u), Some(d)) => {
                event.up_rate_kbps = Some(u);
                event.down_rate_kbps = Some(d);
            }
            _ => return "error rate takes two numbers (kbit/s up and down)".into(),
        },
        ["latency", _] => match num(1) {
            Some(l) => event.latency_ms = Some(l),
            None => return "error latency takes milliseconds".into(),
        },
        ["loss", p] => match p.parse::<f32>() {
            Ok(p) if (0.0..=100.0).contains(&p) => event.loss_percent = Some(p),
            _ => return "error loss takes a percentage 0-100".into(),
        },
        ["profile", name] => {
            return match LinkProfile::load(name) {
                Ok(p) => {
                    let n = p.name.clone();
                    link.set_profile(p);
                    format!("ok profile {n}")
                }
                Err(e) => format!("error {e}"),
            }
        }
        ["stats"] => {
            return serde_json::to_string(&link.stats())
                .map(|s| format!("ok {s}"))
                .unwrap_or_else(|e| format!("error {e}"))
        }
        _ => {
            return "error commands: outage on|off, rate UP DOWN, latency MS, loss PERCENT, profile NAME, stats"
                .into()
        }
    }
    apply_event(link, &event);
    format!("ok {}", line.trim())
}

/// Applies a timeline event now.
pub fn apply_event(link: &LinkEmulator, event: &TimelineEvent) {
    if let Some(o) = event.outage {
        link.set_outage(o);
    }
    let mut p = link.profile();
    let before = p.clone();
    event.apply_to(&mut p);
    if p != before {
        link.set_profile(p);
    }
}

/// Plays the profile's timeline, relative to now.
pub async fn run_timeline(link: Arc<LinkEmulator>, mut events: Vec<TimelineEvent>) {
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let start = tokio::time::Instant::now();
    for e in events {
        let Ok(offset) = Duration::try_from_secs_f64(e.at_s.clamp(0.0, 1e9)) else {
            continue; // not a number
        };
        let at = start + offset;
        tokio::time::sleep_until(at).await;
        tracing::info!(at_s = e.at_s, ?e, "timeline");
        apply_event(&link, &e);
    }
}

/// Serves the control socket at `path` until the task is dropped.
pub async fn serve(link: Arc<LinkEmulator>, path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let link = link.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = apply(&link, &line);
                if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[tokio::test]
    async fn commands_change_the_running_link() {
        let target = SocketAddr::from(([127, 0, 0, 1], 9));
        let link = LinkEmulator::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            LinkProfile::symmetric("t", 1000, 10, 100),
        )
        .await
        .expect("emulator");
        assert!(apply(&link, "outage on").starts_with("ok"));
        assert!(link.outage());
        assert!(apply(&link, "outage off").starts_with("ok"));
        assert!(!link.outage());
        assert!(apply(&link, "rate 2000 500").starts_with("ok"));
        assert_eq!(link.profile().up.rate_kbps, 2000);
        assert_eq!(link.profile().down.rate_kbps, 500);
        assert!(apply(&link, "latency 40").starts_with("ok"));
        assert_eq!(link.profile().down.latency_ms, 40);
        assert!(apply(&link, "loss 2.5").starts_with("ok"));
        assert!(apply(&link, "loss 200").starts_with("error"));
        assert!(apply(&link, "rate fast").starts_with("error"));
        assert!(apply(&link, "dance").starts_with("error"));
        assert!(apply(&link, "stats").contains("up_in"));
    }

    #[tokio::test]
    async fn the_timeline_plays_in_order() {
        let link = Arc::new(
            LinkEmulator::start(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from(([127, 0, 0, 1], 9)),
                LinkProfile::symmetric("t", 1000, 10, 100),
            )
            .await
            .expect("emulator"),
        );
        let events = vec![
            TimelineEvent {
                at_s: 0.4,
                outage: Some(false),
                up_rate_kbps: Some(300),
                ..Default::default()
            },
            TimelineEvent {
                at_s: 0.2,
                outage: Some(true),
                ..Default::default()
            },
        ];
        let t = tokio::spawn(run_timeline(link.clone(), events));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(link.outage());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!link.outage());
        assert_eq!(link.profile().up.rate_kbps, 300);
        t.await.expect("timeline");
    }
}
