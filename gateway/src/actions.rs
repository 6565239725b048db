//! Local actions (`[[actions]]`), the shell of `tunnel::actions`: every quarter second it
//! reads the gateway's own measurements (the bond's capacity for the stream class, each
//! uplink's state, loss and data cap, the spool), feeds the rules, and does what fired:
//!
//! - holds (`level`, `prefer_uplink`, `avoid_uplink`, `pause_class`) last while their rule
//!   is fired and are undone when it clears; when several rules hold the same thing, the
//!   strictest wins (the lowest level ceiling; an avoided uplink over a preferred one:
//!   `tunnel::actions::held_tiers`);
//! - one-shot actions (`purge_cache`, `run`) happen once per firing.
//!
//! Each firing and clearing is logged with its cause, counted in
//! `canopy_gateway_action_firings_total{action}` and shown in
//! `canopy_gateway_action_active{action}` and the admin API's status. A `dry_run` rule is
//! logged and counted but does nothing.

use crate::bond::Bond;
use crate::config::{ActionConfig, Then};
use crate::contribute::Contributor;
use crate::levels::Levels;
use media_io::LiveStreams;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};
use tunnel::actions::{held_tiers, Event, LinkReading, Measurements, UplinkHold};
use tunnel::path::Tier;
use tunnel::stream_level::Level;
use tunnel::TrafficClass;

/// How often the rules are checked.
const TICK: Duration = Duration::from_millis(250);
/// A hook command still running after this is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a purge removed, and where each rendition's spool now starts.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Purged {
    pub parts: u64,
    pub bytes: u64,
    /// Per rendition: the parts from this one on were kept (the relay has not answered
    /// for them yet, as of the contributor's last look, at most a second old).
    pub kept_from: Vec<KeptFrom>,
}

/// Where a rendition's purge stopped.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeptFrom {
    pub camera: String,
    pub rendition: String,
    pub seq: u64,
}

/// Traffic classes local actions have paused, and why.
#[derive(Debug, Default)]
pub struct Paused(Mutex<HashMap<TrafficClass, String>>);

impl Paused {
    /// Why `class` is paused, if it is.
    pub fn why(&self, class: TrafficClass) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&class)
            .cloned()
    }

    fn set(&self, now: HashMap<TrafficClass, String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }
}

/// One action, for status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionStatus {
    /// Its name.
    pub name: String,
    /// Its condition (`capacity_below_mbps`, ...).
    pub when: &'static str,
    /// Its threshold.
    pub value: Option<f64>,
    /// What it does (`level`, ...).
    pub then: &'static str,
    /// Fired and not cleared.
    pub active: bool,
    /// Logged and counted only.
    pub dry_run: bool,
    /// How often it has fired.
    pub firings: u64,
    /// Why it last fired.
    pub cause: Option<String>,
    /// When it last fired or cleared, ms since the Unix epoch.
    pub changed_at_ms: Option<u64>,
}

/// What the actions act on.
pub struct Targets {
    /// The uplinks.
    pub bond: Arc<Bond>,
    /// The cameras (their spools).
    pub live: Arc<LiveStreams>,
    /// The cameras' levels, when contributing.
    pub levels: Option<Arc<Levels>>,
    /// The contribution (what the relay has), when contributing.
    pub contributor: Option<Arc<Contributor>>,
    /// The classes the proxy refuses for now.
    pub paused: Arc<Paused>,
}

struct State {
    core: tunnel::actions::Actions,
    changed_at: Vec<Option<SystemTime>>,
    /// Uplinks the crew prefers (true) or avoids (false) by hand, through the admin API.
    by_hand: HashMap<String, bool>,
}

/// What the crew asks of an uplink by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandHold {
    /// Put traffic on it first.
    Prefer,
    /// Use it only when the others cannot.
    Avoid,
    /// Back to its configured tier (and to what the rules ask).
    Auto,
}

impl HandHold {
    /// From its name in the admin API.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "prefer" => Some(Self::Prefer),
            "avoid" => Some(Self::Avoid),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// Its name in the admin API, the status and the holds file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prefer => "prefer",
            Self::Avoid => "avoid",
            Self::Auto => "auto",
        }
    }

    /// The hold an uplink held by hand has (`prefer`: true, as in `Actions::held_by_hand`).
    pub fn held(prefer: bool) -> Self {
        if prefer {
            Self::Prefer
        } else {
            Self::Avoid
        }
    }
}

/// The running `[[actions]]`.
pub struct Actions {
    cfgs: Vec<ActionConfig>,
    state: Mutex<State>,
    /// Held while the holds are worked out and applied: a step and an admin request apply
    /// one after the other, so the later reading of the rules is the one that stays.
    applying: Mutex<()>,
    targets: Targets,
}

impl Actions {
    /// Starts checking `cfgs` (validated) against the gateway's measurements.
    pub fn start(cfgs: Vec<ActionConfig>, targets: Targets) -> Arc<Self> {
        let rules = cfgs.iter().map(ActionConfig::rule).collect();
        let me = Arc::new(Self {
            state: Mutex::new(State {
                core: tunnel::actions::Actions::new(rules),
                changed_at: vec![None; cfgs.len()],
                by_hand: HashMap::new(),
            }),
            applying: Mutex::new(()),
            cfgs,
            targets,
        });
        for a in &me.cfgs {
            metrics::gauge!("canopy_gateway_action_active", "action" => a.name.clone()).set(0.0);
            metrics::counter!("canopy_gateway_action_firings_total", "action" => a.name.clone())
                .absolute(0);
        }
        if !me.cfgs.is_empty() {
            let m = me.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    m.step();
                }
            });
        }
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn step(self: &Arc<Self>) {
        let now = tunnel_io::clock::now();
        let m = self.measure();
        let events = {
            let mut st = self.lock();
            let events = st.core.update(now, &m);
            for e in &events {
                st.changed_at[e.rule] = Some(SystemTime::now());
            }
            events
        };
        for e in &events {
            self.on_event(e);
        }
        // holds are worked out every step: a camera that appears later is held too
        self.apply_holds();
    }

    /// Holds uplink `name` by hand (the admin API); false when there is no such uplink.
    /// A hold by hand counts as a fired rule's: an avoided uplink wins over a preferred one.
    pub fn hold_uplink(&self, name: &str, hold: HandHold) -> bool {
        if !self.targets.bond.paths().iter().any(|p| p.name == name) {
            return false;
        }
        {
            let mut st = self.lock();
            match hold {
                HandHold::Auto => st.by_hand.remove(name),
                HandHold::Prefer => st.by_hand.insert(name.to_owned(), true),
                HandHold::Avoid => st.by_hand.insert(name.to_owned(), false),
            };
        }
        info!(uplink = name, hold = ?hold, "uplink held by hand");
        self.apply_holds();
        true
    }

    /// The uplinks held by hand: (name, preferred).
    pub fn held_by_hand(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = self
            .lock()
            .by_hand
            .iter()
            .map(|(n, p)| (n.clone(), *p))
            .collect();
        v.sort();
        v
    }

    /// What the rules read now.
    fn measure(&self) -> Measurements {
        let t = &self.targets;
        let links = t
            .bond
            .paths()
            .iter()
            .map(|p| {
                let s = p.status();
                LinkReading {
                    name: s.name,
                    usable: s.usable,
                    loss: s.loss,
                    cap_used: s.cap_bytes.map(|c| s.cap_used as f64 / c.max(1) as f64),
                }
            })
            .collect();
        // the fullest spool: each rendition's is bounded on its own
        let spool = t
            .live
            .all()
            .iter()
            .flat_map(|c| c.renditions().to_vec())
            .filter_map(|r| r.spool_fill())
            .map(|(bytes, max)| bytes as f64 / max.max(1) as f64)
            .reduce(f64::max);
        Measurements {
            capacity: t.bond.stream_capacity(),
            links,
            spool,
        }
    }

    fn on_event(self: &Arc<Self>, e: &Event) {
        let Some(a) = self.cfgs.get(e.rule) else {
            return;
        };
        let name = a.name.as_str();
        let then = a.then.as_str();
        if e.fired {
            warn!(action = name, then, cause = %e.cause, dry_run = a.dry_run, "action fired");
            metrics::counter!("canopy_gateway_action_firings_total", "action" => a.name.clone())
                .increment(1);
        } else {
            info!(action = name, then, cause = %e.cause, dry_run = a.dry_run, "action cleared");
        }
        metrics::gauge!("canopy_gateway_action_active", "action" => a.name.clone())
            .set(if e.fired { 1.0 } else { 0.0 });
        if a.dry_run || !e.fired {
            return;
        }
        match a.then {
            Then::PurgeCache => {
                let (me, name) = (self.clone(), name.to_string());
                tokio::spawn(async move { me.purge(&name).await });
            }
            Then::Run => run_hook(a, &e.cause),
            Then::Level | Then::PreferUplink | Then::AvoidUplink | Then::PauseClass => {}
        }
    }

    /// Removes the spooled parts the relay has answered for (it has them, or refused
    /// them for good). The files go on the blocking pool.
    pub async fn purge(&self, by: &str) -> Purged {
        let Some(c) = &self.targets.contributor else {
            info!(
                by,
                "purge: nothing is sent to the relay, so nothing is known to be there: kept"
            );
            return Purged::default();
        };
        let delivered = c.delivered();
        let purged = tokio::task::spawn_blocking(move || {
            let mut out = Purged::default();
            for d in delivered {
                let (parts, bytes) = d.rendition.purge_spool_before(d.below);
                out.parts += parts;
                out.bytes += bytes;
                out.kept_from.push(KeptFrom {
                    camera: d.camera,
                    rendition: d.rendition.name().to_string(),
                    seq: d.below,
                });
            }
            out
        })
        .await
        .unwrap_or_default();
        info!(
            by,
            parts = purged.parts,
            bytes = purged.bytes,
            "purge: removed the spooled parts the relay has answered for"
        );
        purged
    }

    /// The holds of every fired rule, applied.
    fn apply_holds(&self) {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        // one reading of the rules' states serves every hold
        let (states, by_hand) = {
            let st = self.lock();
            (st.core.states(), st.by_hand.clone())
        };
        let holding_with = || {
            self.cfgs
                .iter()
                .zip(&states)
                .filter(|(a, s)| s.active && !a.dry_run)
        };
        let holding = || holding_with().map(|(a, _)| a);
        let t = &self.targets;
        if let Some(levels) = &t.levels {
            for camera in levels.cameras() {
                let ceiling = holding()
                    .filter(|a| a.then == Then::Level)
                    .filter(|a| a.cameras.is_empty() || a.cameras.contains(&camera))
                    .filter_map(|a| {
                        let l = a.level.as_deref().and_then(Level::from_name)?;
                        Some((l, a.name.as_str()))
                    })
                    .max_by_key(|(l, _)| *l);
                let _ = match ceiling {
                    Some((l, by)) => levels.set_ceiling(&camera, Some(l), by),
                    None => levels.set_ceiling(&camera, None, ""),
                };
            }
        }
        let holds: Vec<UplinkHold<'_>> = holding()
            .filter_map(|a| {
                let u = a.uplink.as_deref()?;
                match a.then {
                    Then::PreferUplink => Some(UplinkHold::Prefer(u)),
                    Then::AvoidUplink => Some(UplinkHold::Avoid(u)),
                    _ => None,
                }
            })
            .chain(by_hand.iter().map(|(u, prefer)| match prefer {
                true => UplinkHold::Prefer(u.as_str()),
                false => UplinkHold::Avoid(u.as_str()),
            }))
            .collect();
        let uplinks: Vec<(&str, Tier)> = t
            .bond
            .paths()
            .iter()
            .map(|p| (p.name.as_str(), p.configured_tier))
            .collect();
        let tiers = held_tiers(&uplinks, &holds);
        for (p, tier) in t.bond.paths().iter().zip(tiers) {
            if p.set_tier(tier) {
                let now = p.tier().as_str();
                if tier.is_some() {
                    info!(uplink = %p.name, tier = now, "uplink tier set by a local action");
                } else {
                    info!(uplink = %p.name, tier = now, "uplink back to its configured tier");
                }
            }
        }
        let paused: HashMap<TrafficClass, String> = holding_with()
            .filter(|(a, _)| a.then == Then::PauseClass)
            .filter_map(|(a, s)| {
                let cause = s.cause.as_deref().unwrap_or_default();
                Some((a.class?, format!("action {} ({cause})", a.name)))
            })
            .collect();
        t.paused.set(paused);
    }

    /// Every action's state, in config order.
    pub fn snapshot(&self) -> Vec<ActionStatus> {
        let st = self.lock();
        self.cfgs
            .iter()
            .zip(st.core.states())
            .zip(&st.changed_at)
            .map(|((a, s), at)| ActionStatus {
                name: a.name.clone(),
                when: a.when.as_str(),
                value: a.value,
                then: a.then.as_str(),
                active: s.active,
                dry_run: a.dry_run,
                firings: s.firings,
                cause: s.cause,
                changed_at_ms: at.and_then(|t| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_millis() as u64)
                }),
            })
            .collect()
    }
}

/// Runs a `run` action's command (no shell) with `CANOPY_ACTION` and `CANOPY_CAUSE` in its
/// environment; logs how it ended.
fn run_hook(a: &ActionConfig, cause: &str) {
    let Some((program, args)) = a.command.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("CANOPY_ACTION", &a.name)
        .env("CANOPY_CAUSE", cause)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    let name = a.name.clone();
    let program = program.clone();
    match cmd.spawn() {
        Err(e) => warn!(action = %name, %program, error = %e, "action: cannot run the command"),
        Ok(mut child) => {
            tokio::spawn(async move {
                match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
                    Ok(Ok(s)) if s.success() => {
                        info!(action = %name, %program, "action: command done")
                    }
                    Ok(Ok(s)) => {
                        warn!(action = %name, %program, status = %s, "action: command failed")
                    }
                    Ok(Err(e)) => {
                        warn!(action = %name, %program, error = %e, "action: command lost")
                    }
                    Err(_) => {
                        let _ = child.kill().await;
                        warn!(action = %name, %program, timeout_s = HOOK_TIMEOUT.as_secs(), "action: command killed after its timeout");
                    }
                }
            });
        }
    }
}
