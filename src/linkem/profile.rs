//! Link profiles: TOML files in configs/links/, also built into the binary.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use str0m_netem::{Bitrate, DataSize, GilbertElliot, NetemConfig, Probability, RandomLoss};

/// One direction of a link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DirectionProfile {
    /// Link rate in kbit/s (0 = unlimited).
    pub rate_kbps: u64,
    /// One-way latency in ms.
    pub latency_ms: u64,
    /// Jitter in ms (uniform +-).
    pub jitter_ms: u64,
    /// Correlation of successive delays, 0..1 (keeps jitter from reordering much).
    pub jitter_correlation: f32,
    /// Random loss in percent.
    pub loss_percent: f32,
    /// Bursty loss (Gilbert-Elliott); replaces `loss_percent` when set.
    pub burst_loss: Option<GilbertElliottLoss>,
    /// Drop-tail queue at the bottleneck, in ms of the link rate.
    pub queue_ms: u64,
}

impl Default for DirectionProfile {
    fn default() -> Self {
        Self {
            rate_kbps: 0,
            latency_ms: 0,
            jitter_ms: 0,
            jitter_correlation: 0.0,
            loss_percent: 0.0,
            burst_loss: None,
            queue_ms: 200,
        }
    }
}

/// Gilbert-Elliott bursty loss.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliottLoss {
    /// Mean length of the good state, in packets.
    pub good_packets: f32,
    /// Mean length of the bad state (a burst), in packets.
    pub bad_packets: f32,
    /// Loss probability in the bad state, 0..1.
    pub loss_in_bad: f32,
    /// Loss probability in the good state, 0..1.
    #[serde(default)]
    pub loss_in_good: f32,
}

/// A whole link: both directions ("up" is from the venue towards the relay).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// Profile name.
    pub name: String,
    /// What the profile models.
    #[serde(default)]
    pub description: String,
    /// Venue to relay.
    #[serde(default)]
    pub up: DirectionProfile,
    /// Relay to venue.
    #[serde(default)]
    pub down: DirectionProfile,
    /// `[[timeline]]`: changes applied at given times after the emulator starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEvent>,
}

/// One change of a link at a given time (`[[timeline]]` in a profile). Every field that is
/// set is applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TimelineEvent {
    /// Seconds after the emulator started.
    pub at_s: f64,
    /// Cut (`true`: every packet silently dropped, a blackhole) or restore the link.
    #[serde(default)]
    pub outage: Option<bool>,
    /// New rate towards the relay, kbit/s.
    #[serde(default)]
    pub up_rate_kbps: Option<u64>,
    /// New rate towards the venue, kbit/s.
    #[serde(default)]
    pub down_rate_kbps: Option<u64>,
    /// New one-way latency, both directions, ms.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// New random loss, both directions, percent (clears bursty loss).
    #[serde(default)]
    pub loss_percent: Option<f32>,
}

impl TimelineEvent {
    /// Applies the event's profile changes to `p` (the outage is the caller's).
    pub fn apply_to(&self, p: &mut LinkProfile) {
        if let Some(r) = self.up_rate_kbps {
            p.up.rate_kbps = r;
        }
        if let Some(r) = self.down_rate_kbps {
            p.down.rate_kbps = r;
        }
        if let Some(l) = self.latency_ms {
            p.up.latency_ms = l;
            p.down.latency_ms = l;
        }
        if let Some(l) = self.loss_percent {
            for d in [&mut p.up, &mut p.down] {
                d.loss_percent = l;
                d.burst_loss = None;
            }
        }
    }
}

/// A profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Unknown built-in name and no such file.
    #[error("no link profile {0:?} (built in: {1})")]
    Unknown(String, String),
    /// The file is invalid.
    #[error("{0}")]
    Invalid(String),
}

const BUILTIN: [(&str, &str); 7] = [
    (
        "cellular-4g",
        include_str!("../../configs/links/cellular-4g.toml"),
    ),
    (
        "wifi-congested",
        include_str!("../../configs/links/wifi-congested.toml"),
    ),
    (
        "satellite-geo",
        include_str!("../../configs/links/satellite-geo.toml"),
    ),
    (
        "satellite-leo",
        include_str!("../../configs/links/satellite-leo.toml"),
    ),
    (
        "cellular-8m",
        include_str!("../../configs/links/cellular-8m.toml"),
    ),
    ("wifi-4m", include_str!("../../configs/links/wifi-4m.toml")),
    (
        "satellite-2m",
        include_str!("../../configs/links/satellite-2m.toml"),
    ),
];

impl LinkProfile {
    /// Names of the built-in profiles.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in profile by name, or a profile file by path.
    pub fn load(name_or_path: &str) -> Result<Self, ProfileError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return toml::from_str(text)
                .map_err(|e| ProfileError::Invalid(format!("built-in {name_or_path}: {e}")));
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ProfileError::Unknown(
                name_or_path.into(),
                Self::builtin_names().join(", "),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProfileError::Invalid(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ProfileError::Invalid(format!("{}: {e}", path.display())))
    }

    /// A symmetric link: same rate and one-way latency both ways, no loss.
    pub fn symmetric(name: &str, rate_kbps: u64, one_way_ms: u64, queue_ms: u64) -> Self {
        let d = DirectionProfile {
            rate_kbps,
            latency_ms: one_way_ms,
            queue_ms,
            ..DirectionProfile::default()
        };
        Self {
            name: name.into(),
            description: String::new(),
            up: d.clone(),
            down: d,
            timeline: Vec::new(),
        }
    }
}

impl DirectionProfile {
    /// The str0m-netem model of this direction. `seed` makes loss and jitter reproducible.
    pub fn netem(&self, seed: u64) -> NetemConfig {
        let mut cfg = NetemConfig::new()
            .latency(Duration::from_millis(self.latency_ms))
            .jitter(Duration::from_millis(self.jitter_ms))
            .delay_correlation(Probability::new(self.jitter_correlation))
            .seed(seed);
        if let Some(b) = &self.burst_loss {
            cfg = cfg.loss(
                GilbertElliot::new()
                    .good_duration(b.good_packets.max(1.0))
                    .bad_duration(b.bad_packets.max(1.0))
                    .loss_in_bad(Probability::new(b.loss_in_bad))
                    .loss_in_good(Probability::new(b.loss_in_good)),
            );
        } else if self.loss_percent > 0.0 {
            cfg = cfg.loss(RandomLoss::new(Probability::new(self.loss_percent / 100.0)));
        }
        if self.rate_kbps > 0 {
            // str0m-netem counts every packet not yet delivered against the buffer, the
            // ones still in flight for the latency too: size it as queue + latency.
            let bytes = self.rate_kbps * 1000 / 8
                * (self.queue_ms + self.latency_ms + self.jitter_ms)
                / 1000;
            let bytes = bytes.max(3000);
            cfg = cfg.link(Bitrate::kbps(self.rate_kbps), DataSize::bytes(bytes as i64));
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse() {
        for name in LinkProfile::builtin_names() {
            let p = LinkProfile::load(name).expect(name);
            assert_eq!(p.name, name);
            assert!(p.up.rate_kbps > 0 && p.down.rate_kbps > 0, "{name}");
        }
        assert!(LinkProfile::load("no-such-link").is_err());
    }
}
