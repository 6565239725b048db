//! The bond's sans-IO parts together on a virtual clock: each path's estimate and health
//! (`path_estimate`, `path`), the placement of a striped upload's chunks (`spread`) and of
//! chunks sent again (`scheduler`), over a model of two links (rate, one-way delay, a FIFO
//! queue, probes echoed through it). No sockets, no sleeping: a 20 MB upload and a link
//! cut run in milliseconds, the same way every time. The netns benches measure the real
//! transport; this checks the policy's decisions: every path used, every byte delivered
//! once, the dead path's chunks sent again on the other, nothing new placed on it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tunnel::path::{CapState, Tier};
use tunnel::path_estimate::{PathEstimate, TransportStats};
use tunnel::scheduler::{default_policy, ClassSet, PathId, PathView, Scheduler, Unit};
use tunnel::spread;
use tunnel::TrafficClass;

const MS: Duration = Duration::from_millis(1);
/// The gateway's rules for striped chunks (gateway/src/stripe.rs).
const HORIZON: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_millis(40);
const CHUNK: u64 = 128 * 1024;
const CHUNK_MIN: u64 = 32 * 1024;
const RESEND_PIECE: u64 = 32 * 1024;
const WINDOW: u64 = 8 * 1024 * 1024;

fn chunk_len(rate: f64) -> u64 {
    ((rate.max(0.0) * 0.15) as u64).clamp(CHUNK_MIN, CHUNK)
}

struct Link {
    /// Bytes per second.
    rate: f64,
    owd: Duration,
    alive: bool,
    /// Chunks waiting to be sent: (chunk, bytes left).
    queue: VecDeque<(usize, f64)>,
    /// Chunks on the wire: (chunk, arrival at the relay).
    wire: Vec<(usize, Instant)>,
    /// Probes: (sent, echo seen by the gateway).
    probes: VecDeque<(Instant, Instant)>,
    latest_echo: Option<Instant>,
    tx_kept: f64,
    est: PathEstimate,
}

impl Link {
    fn queued_bytes(&self) -> f64 {
        self.queue.iter().map(|(_, b)| b).sum()
    }
}

/// The queue at the link's bottleneck: what is buffered, but at most 5 ms (the delay-based
/// controller keeps it short).
fn bottleneck(l: &Link) -> Duration {
    Duration::from_secs_f64((l.queued_bytes() / l.rate).min(0.005))
}

#[derive(Clone)]
struct Chunk {
    offset: u64,
    len: u64,
    path: PathId,
    generation: u64,
    excluded: Vec<PathId>,
    answered: bool,
}

struct Run {
    /// Time the relay had each in-order prefix: (at, bytes in order).
    progress: Vec<(Duration, u64)>,
    carried: Vec<u64>,
    /// Chunks placed on each path after it was cut and seen dead.
    placed_on_dead: usize,
    copies: u64,
    finished: Option<Duration>,
}

/// One upload of `total` bytes over links of (Mbit/s, one-way ms); `cut` = (path, at).
fn upload(total: u64, links: &[(f64, u64)], cut: Option<(PathId, Duration)>) -> Run {
    let t0 = Instant::now();
    let mut paths: Vec<Link> = links
        .iter()
        .map(|&(mbps, owd)| {
            let mut est = PathEstimate::new(t0);
            est.on_connected(t0, 1, Duration::from_millis(2 * owd));
            Link {
                rate: mbps * 1e6 / 8.0,
                owd: Duration::from_millis(owd),
                alive: true,
                queue: VecDeque::new(),
                wire: Vec::new(),
                probes: VecDeque::new(),
                latest_echo: None,
                tx_kept: 0.0,
                est,
            }
        })
        .collect();
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut again: VecDeque<usize> = VecDeque::new();
    // the relay: bytes received by offset, and what is in order
    let mut received: BTreeMap<u64, u64> = BTreeMap::new();
    let mut in_order = 0u64;
    let mut read = 0u64;
    let mut dead = vec![false; paths.len()];
    let mut run = Run {
        progress: vec![(Duration::ZERO, 0)],
        carried: vec![0; paths.len()],
        placed_on_dead: 0,
        copies: 0,
        finished: None,
    };
    let policy = default_policy();
    let mut primary: Option<PathId> = None;
    // the paths join after their probation, then the chunks go
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(60) {
        t += MS;
        let now = t0 + t;
        if let Some((p, at)) = cut {
            if t >= at && paths[p].alive {
                let l = &mut paths[p];
                l.alive = false;
                // what it held is lost; the gateway learns it only from the silence
                l.queue.clear();
                l.wire.clear();
                l.probes.clear();
            }
        }
        // the links move bytes and probes
        for (id, l) in paths.iter_mut().enumerate() {
            if !l.alive {
                continue;
            }
            let mut budget = l.rate * MS.as_secs_f64();
            while budget > 0.0 {
                let Some(front) = l.queue.front_mut() else {
                    break;
                };
                let n = front.1.min(budget);
                front.1 -= n;
                budget -= n;
                l.tx_kept += n * 1.03;
                if front.1 <= 0.0 {
                    let (c, _) = l.queue.pop_front().expect("front");
                    l.wire.push((c, now + l.owd));
                }
            }
            if t.as_millis().is_multiple_of(10) {
                // the queue above is the transport's buffer: the congestion controller
                // keeps the bottleneck's own queue short (a few ms), and probes go ahead
                // of buffered stream data
                l.probes.push_back((now, now + 2 * l.owd + bottleneck(l)));
            }
            while l.probes.front().is_some_and(|(_, back)| *back <= now) {
                l.latest_echo = l.probes.pop_front().map(|(sent, _)| sent);
            }
            let (arrived, flying): (Vec<_>, Vec<_>) =
                l.wire.drain(..).partition(|(_, at)| *at <= now);
            l.wire = flying;
            for (c, _) in arrived {
                let ch = &mut chunks[c];
                run.carried[id] += ch.len;
                if received.insert(ch.offset, ch.len).is_some() {
                    run.copies += ch.len;
                }
                // the answer comes back one way later; modelled as at once plus the
                // estimate's retire (what ended is not queued)
                ch.answered = true;
                l.est.retire(ch.generation, ch.len);
            }
        }
        // in order at the relay
        while let Some(len) = received.get(&in_order).copied() {
            in_order += len;
        }
        if run.progress.last().is_some_and(|(_, b)| *b != in_order) {
            run.progress.push((t, in_order));
        }
        if in_order >= total {
            run.finished = Some(t);
            break;
        }
        // the gateway's monitor every 10 ms
        if t.as_millis().is_multiple_of(10) {
            for (id, l) in paths.iter_mut().enumerate() {
                // a dead link's connection still looks connected (its queue is empty):
                // only the silence tells
                let stats = TransportStats {
                    tx_kept: l.tx_kept as u64,
                    cwnd: (l.rate * (2 * l.owd + bottleneck(l)).as_secs_f64()) as u64,
                    rtt: 2 * l.owd + bottleneck(l),
                    sent_packets: (l.tx_kept / 1200.0) as u64,
                    lost_packets: 0,
                    latest_echo: l.latest_echo,
                    delivered: None,
                };
                let tick = l.est.tick(now, Some(&stats));
                if tick.dead && !dead[id] && l.est.health().demotions() > 0 {
                    dead[id] = true;
                    // the chunks it carries are sent again elsewhere, in pieces
                    for c in 0..chunks.len() {
                        let ch = chunks[c].clone();
                        if ch.path == id && !ch.answered && !ch.excluded.contains(&id) {
                            chunks[c].answered = true; // superseded by its pieces
                            let mut at = 0;
                            while at < ch.len {
                                let n = RESEND_PIECE.min(ch.len - at);
                                chunks.push(Chunk {
                                    offset: ch.offset + at,
                                    len: n,
                                    path: id,
                                    generation: 0,
                                    excluded: vec![id],
                                    answered: false,
                                });
                                again.push_back(chunks.len() - 1);
                                at += n;
                            }
                        }
                    }
                }
            }
        }
        // place chunks (gateway/src/stripe.rs send_all's rules)
        loop {
            let views: Vec<PathView> = paths
                .iter()
                .enumerate()
                .map(|(id, l)| PathView {
                    id,
                    usable: l.est.is_usable(),
                    tier: Tier::Primary,
                    classes: ClassSet::ALL,
                    cap: CapState::Normal,
                    srtt: l.est.health().srtt(),
                    rate_up: l.est.rate_up(),
                    rate_down: l.est.rate_down(),
                    queued_up: l.est.queued_up_at(l.tx_kept as u64),
                    queued_down: 0,
                    silent: l.est.health().silence(now).unwrap_or_default(),
                })
                .collect();
            let base = chunks
                .iter()
                .filter(|c| !c.answered)
                .map(|c| c.offset)
                .min()
                .unwrap_or(read);
            let unit = |len| Unit {
                class: TrafficClass::Bulk,
                up_bytes: len,
                down_bytes: 0,
            };
            if primary.is_none_or(|p| !views[p].usable) {
                primary = spread::primary(TrafficClass::Bulk, &views, |_| 0);
            }
            let (c, path) = if let Some(&c) = again.front() {
                let u = unit(chunks[c].len);
                let Some(p) = policy
                    .place_again(&u, &views, &chunks[c].excluded)
                    .paths
                    .first()
                    .copied()
                else {
                    break;
                };
                again.pop_front();
                (c, p)
            } else if read < total && read + CHUNK <= base + WINDOW {
                let u = unit(CHUNK.min(total - read));
                let roomy = spread::with_room(&u, &views, HORIZON, 0);
                let pick = match primary {
                    Some(p) if roomy.contains(&p) => Some(p),
                    _ => spread::with_room(&u, &views, IDLE, 2).first().copied(),
                };
                let Some(p) = pick else { break };
                let len = chunk_len(views[p].rate_up).min(total - read);
                chunks.push(Chunk {
                    offset: read,
                    len,
                    path: p,
                    generation: 0,
                    excluded: vec![],
                    answered: false,
                });
                read += len;
                (chunks.len() - 1, p)
            } else {
                break;
            };
            if dead[path] {
                run.placed_on_dead += 1;
            }
            let l = &mut paths[path];
            let ch = &mut chunks[c];
            ch.path = path;
            ch.generation = l.est.reserve(ch.len, 0);
            l.est.carried(true, ch.len, ch.len);
            // placed on a link that died unseen: lost like the rest it held
            if l.alive {
                l.queue.push_back((c, ch.len as f64));
            }
        }
    }
    run
}

/// The longest time the relay's in-order prefix did not move, after the first byte.
fn longest_stall(run: &Run) -> Duration {
    run.progress
        .windows(2)
        .skip(1)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default()
}

#[test]
fn one_upload_uses_both_paths_at_their_rates() {
    let total = 20_000_000;
    let run = upload(total, &[(20.0, 25), (5.0, 8)], None);
    let took = run.finished.expect("the upload finishes");
    // 20 MB over 25 Mbit/s is 6.4 s on the wire
    assert!(took < Duration::from_millis(7600), "took {took:?}");
    let share = run.carried[1] as f64 / total as f64;
    assert!(
        (0.12..0.3).contains(&share),
        "the 5 Mbit/s path carried {share:.2}"
    );
    assert_eq!(run.copies, 0, "no copies without a fault");
    assert!(
        longest_stall(&run) < 300 * MS,
        "stalled {:?}",
        longest_stall(&run)
    );
}

#[test]
fn a_cut_path_is_left_and_its_chunks_come_again_on_the_other() {
    let total = 20_000_000;
    let run = upload(
        total,
        &[(20.0, 25), (5.0, 8)],
        Some((0, Duration::from_secs(3))),
    );
    let took = run
        .finished
        .expect("the upload finishes on the path that is left");
    assert_eq!(run.placed_on_dead, 0, "nothing placed on the dead path");
    // the rest (about 12 MB) at 5 Mbit/s
    assert!(took < Duration::from_secs(25), "took {took:?}");
    let stall = longest_stall(&run);
    // the silence bound (~150 ms) and what the dead path held, again over 5 Mbit/s: 311 ms
    // in this model (the netns failover bench measures 430-870 ms for one upload alone,
    // so the real transport adds what this model leaves out)
    assert!(stall < 600 * MS, "stalled {stall:?}");
    assert!(stall > 100 * MS, "a cut must show: {stall:?}");
}

#[test]
fn the_run_is_the_same_every_time() {
    let a = upload(
        5_000_000,
        &[(20.0, 25), (5.0, 8)],
        Some((0, Duration::from_secs(1))),
    );
    let b = upload(
        5_000_000,
        &[(20.0, 25), (5.0, 8)],
        Some((0, Duration::from_secs(1))),
    );
    assert_eq!(a.progress, b.progress);
}
