//! The low-bandwidth mode's shell: every 100 ms it measures what each camera's levels cost
//! (from its renditions' newest parts), what the bond can give the stream class, and how
//! long live media has waited at the gateway, and feeds them to
//! `tunnel::stream_level::StreamLevels`; the levels it answers select what each camera's
//! program carries to the relay (`media_io::program`). Every change is logged with its
//! cause and counted.

use crate::bond::Bond;
use crate::contribute::Contributor;
use media_io::{LiveStream, LiveStreams};
use segmenter::program::{Cut, Selection, Source};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::info;
use tunnel::stream_level::{Ladder, Level, LevelConfig, StreamLevels};

/// How often the levels are worked out. (At 100 ms a shortage's 150 ms hold took two or
/// three looks, 200-300 ms; at 50 ms it takes three or four.)
const TICK: Duration = Duration::from_millis(50);
/// The parts a level's cost is measured over.
const COST_SPAN: Duration = Duration::from_secs(4);

/// One camera's level, for status and metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CameraLevel {
    /// The camera.
    pub camera: String,
    /// Its level.
    pub level: &'static str,
    /// Set by hand (the level it is pinned at).
    pub pinned: Option<&'static str>,
    /// The best level a local action allows it.
    pub ceiling: Option<&'static str>,
    /// What its program carries now (`main`, `sub`, ... and the cut), once on air.
    pub on_air: Option<String>,
}

struct State {
    core: StreamLevels,
    /// Camera names, in the core's order.
    cameras: Vec<String>,
    /// Pins kept from before a restart for cameras not seen yet (a pulled camera is added
    /// at the first step that finds its program, a pushed one when its encoder connects).
    pinned_when_seen: HashMap<String, Level>,
}

impl State {
    /// Adds camera `name`, pinned at once if a pin kept from before a restart waits for it.
    fn add_camera(&mut self, name: &str, priority: i32) {
        self.core.add(priority);
        self.cameras.push(name.to_string());
        if let Some(level) = self.pinned_when_seen.remove(name) {
            self.core.set_override(self.cameras.len() - 1, Some(level));
            info!(
                camera = name,
                level = level.name(),
                "stream level pinned by hand before the restart: pinned again"
            );
        }
    }

    /// Pins `camera` at `level` (None: lifts the pin); false: no such camera (a pin
    /// waiting for the camera is lifted all the same).
    fn pin(&mut self, camera: &str, level: Option<Level>) -> bool {
        let Some(i) = self.cameras.iter().position(|n| n == camera) else {
            return level.is_none() && self.pinned_when_seen.remove(camera).is_some();
        };
        if let Some(ch) = self.core.set_override(i, level) {
            info!(camera, from = ch.from.name(), to = ch.to.name(), cause = %ch.cause, "stream level set");
        }
        true
    }

    /// Pins `camera` at `level` now, or once it is added.
    fn pin_when_seen(&mut self, camera: &str, level: Level) {
        if !self.pin(camera, Some(level)) {
            self.pinned_when_seen.insert(camera.to_owned(), level);
        }
    }
}

/// Sets camera `i`'s ceiling in the core, logging a change.
fn apply_ceiling(st: &mut State, i: usize, level: Option<Level>, action: &str) {
    if st.core.ceiling(i) == level {
        return;
    }
    let camera = st.cameras[i].clone();
    match level {
        Some(l) => info!(camera, ceiling = l.name(), action, "stream level held down"),
        None => info!(camera, action, "stream level free again"),
    }
    if let Some(ch) = st.core.set_ceiling(i, level) {
        info!(camera, from = ch.from.name(), to = ch.to.name(), cause = %ch.cause, action, "stream level down");
        metrics::counter!(
            "canopy_gateway_stream_level_changes_total",
            "camera" => camera,
            "direction" => "down"
        )
        .increment(1);
    }
}

/// The low-bandwidth mode of a gateway's cameras.
pub struct Levels {
    state: Mutex<State>,
    streams: Arc<LiveStreams>,
}

impl Levels {
    /// Starts working out the levels of `streams`' cameras (`priorities` by camera name, 0
    /// for a camera not named) over `bond`, with the backlog `contributor` reports.
    pub fn start(
        bond: Arc<Bond>,
        streams: Arc<LiveStreams>,
        contributor: Arc<Contributor>,
        priorities: HashMap<String, i32>,
    ) -> Arc<Self> {
        let me = Arc::new(Self {
            state: Mutex::new(State {
                core: StreamLevels::new(LevelConfig::default(), &[]),
                cameras: Vec::new(),
                pinned_when_seen: HashMap::new(),
            }),
            streams,
        });
        let m = me.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                m.step(&bond, &contributor, &priorities);
                let probe = m.lock().core.take_probe();
                if let Some(p) = probe {
                    tracing::debug!(
                        rate_mbps = p.rate * 8.0 / 1e6,
                        "probing the links' capacity"
                    );
                    crate::probe::start(&bond, p);
                }
            }
        });
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn step(&self, bond: &Bond, contributor: &Contributor, priorities: &HashMap<String, i32>) {
        let now = tunnel_io::clock::now();
        let cams: Vec<Arc<LiveStream>> = self
            .streams
            .all()
            .into_iter()
            .filter(|c| c.program().is_some())
            .collect();
        let mut st = self.lock();
        for c in &cams {
            if !st.cameras.iter().any(|n| n == c.name()) {
                let p = priorities.get(c.name()).copied().unwrap_or(0);
                st.add_camera(c.name(), p);
            }
        }
        let by_name: HashMap<&str, &Arc<LiveStream>> = cams.iter().map(|c| (c.name(), c)).collect();
        let ladders: Vec<Ladder> = st
            .cameras
            .iter()
            .map(|n| {
                by_name
                    .get(n.as_str())
                    .map_or(Ladder::default(), |c| ladder(c))
            })
            .collect();
        // None in an outage: the levels hold (see tunnel::stream_level)
        let m = bond.stream_measure(contributor.status().backlog);
        tracing::trace!(
            capacity_mbps = m.capacity.map(|c| c * 8.0 / 1e6),
            proof_mbps = m.proof.map(|c| c * 8.0 / 1e6),
            backlog_ms = m.backlog.as_millis() as u64,
            saturated = m.saturated,
            demand_mbps = st.core.demand() * 8.0 / 1e6,
            "levels"
        );
        let changes = st.core.update(now, &ladders, m);
        for ch in &changes {
            let camera = &st.cameras[ch.camera];
            let down = ch.to > ch.from;
            info!(
                camera = %camera,
                from = ch.from.name(),
                to = ch.to.name(),
                cause = %ch.cause,
                "stream level {}",
                if down { "down" } else { "up" }
            );
            metrics::counter!(
                "canopy_gateway_stream_level_changes_total",
                "camera" => camera.clone(),
                "direction" => if down { "down" } else { "up" }
            )
            .increment(1);
        }
        for (i, name) in st.cameras.iter().enumerate() {
            let (Some(c), Some(level)) = (by_name.get(name.as_str()), st.core.level(i)) else {
                continue;
            };
            metrics::gauge!("canopy_gateway_stream_level", "camera" => name.clone())
                .set(level as u8 as f64);
            if let Some(p) = c.program() {
                p.select(selection(level, &ladders[i]));
            }
        }
    }

    /// Pins `camera` at `level` now, or as soon as the camera is seen (a pin kept from
    /// before a restart: the cameras come as their streams start).
    pub fn pin_when_seen(&self, camera: &str, level: Level) {
        self.lock().pin_when_seen(camera, level);
    }

    /// Pins `camera` at `level` (None: back to automatic). False: no such camera.
    pub fn set_override(&self, camera: &str, level: Option<Level>) -> bool {
        self.lock().pin(camera, level)
    }

    /// Holds `camera` at `level` or lower for a local action (None: lifted); false: no
    /// such camera (yet). Logs what changed.
    pub fn set_ceiling(&self, camera: &str, level: Option<Level>, action: &str) -> bool {
        let mut st = self.lock();
        let Some(i) = st.cameras.iter().position(|n| n == camera) else {
            return false;
        };
        apply_ceiling(&mut st, i, level, action);
        true
    }

    /// Every camera's name.
    pub fn cameras(&self) -> Vec<String> {
        self.lock().cameras.clone()
    }

    /// Every camera's level.
    pub fn snapshot(&self) -> Vec<CameraLevel> {
        let st = self.lock();
        st.cameras
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let on_air = self
                    .streams
                    .get(name)
                    .and_then(|c| c.program())
                    .and_then(|p| p.state().0)
                    .map(describe);
                CameraLevel {
                    camera: name.clone(),
                    level: st.core.level(i).map_or("full", Level::name),
                    pinned: st.core.pinned(i).map(Level::name),
                    ceiling: st.core.ceiling(i).map(Level::name),
                    on_air,
                }
            })
            .collect()
    }
}

/// What each level of camera `c` costs now.
fn ladder(c: &LiveStream) -> Ladder {
    let rate = |name: &str| c.rendition(name).and_then(|r| r.recent_rate(COST_SPAN));
    let main = rate("main");
    let sub = rate("sub");
    let transcode = rate("transcode");
    // the keyframes and audio levels cut the smallest live source, and need skipped
    // pictures in place of the frames they leave out (H.264 the coder can follow)
    let lower = Ladder([main, sub, transcode, None, None]);
    let light = c
        .program()
        .map(|p| p.light_costs(smallest(&lower)))
        .unwrap_or_default();
    Ladder([main, sub, transcode, light.keyframes, light.audio])
}

/// What camera's program carries at `level`.
fn selection(level: Level, ladder: &Ladder) -> Selection {
    let all = |source| Selection {
        source,
        cut: Cut::All,
    };
    match level {
        Level::Full => all(Source::Main),
        Level::Substream => all(Source::Sub),
        Level::Transcode => all(Source::Transcode),
        Level::Keyframes => Selection {
            source: smallest(ladder),
            cut: Cut::Keyframes,
        },
        Level::Audio => Selection {
            source: smallest(ladder),
            cut: Cut::Audio,
        },
    }
}

/// The smallest live video source.
fn smallest(ladder: &Ladder) -> Source {
    if ladder.cost(Level::Substream).is_some() {
        Source::Sub
    } else if ladder.cost(Level::Transcode).is_some() {
        Source::Transcode
    } else {
        Source::Main
    }
}

fn describe(s: Selection) -> String {
    let source = media_io::program::rendition_of(s.source);
    match s.cut {
        Cut::All => source.to_string(),
        Cut::Keyframes => format!("{source} keyframes"),
        Cut::Audio => format!("{source} audio"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            core: StreamLevels::new(LevelConfig::default(), &[]),
            cameras: Vec::new(),
            pinned_when_seen: HashMap::new(),
        }
    }

    #[test]
    fn a_pin_kept_from_before_a_restart_waits_for_its_camera() {
        let mut st = state();
        st.add_camera("door", 0);
        st.pin_when_seen("door", Level::Keyframes);
        st.pin_when_seen("stage", Level::Audio);
        st.pin_when_seen("gone", Level::Audio);
        assert_eq!(st.core.level(0), Some(Level::Keyframes));
        // the camera comes later (its stream started): pinned as it is added
        st.add_camera("stage", 0);
        assert_eq!(st.core.level(1), Some(Level::Audio));
        assert!(st.pin("stage", None));
        // a waiting pin can be lifted before its camera comes
        assert!(st.pin("gone", None));
        assert!(!st.pin("gone", None));
        st.add_camera("gone", 0);
        assert_eq!(st.core.level(2), Some(Level::Full));
        assert!(!st.pin("nowhere", Some(Level::Audio)));
    }
}
