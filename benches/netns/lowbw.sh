#!/usr/bin/env bash
# Low-bandwidth bench scenario (root): tests/netns/lowbw.sh's camera (4 Mbit/s, 200 kbit/s
# substream) and uplinks (two of 7 Mbit/s), with a bid every 100 ms through the gateway:
#   t=10 s both uplinks collapse to 0.25 Mbit/s (tc), t=40 s they return;
#   then 60 s of a marginal Wi-Fi: uplink 2's one-way delay swings 50 <-> 600 ms every 3 s
#   (RTT 100 <-> 1200 ms) while uplink 1 stays at 7 Mbit/s.
# Prints one JSON line: engage_ms (collapse to the first part of the lower level listed at
# the relay), relay_stall_ms (longest time between two live parts arriving whole at the
# relay, from the collapse to 10 s after the level is back), level_changes_per_min_marginal,
# gateway_step_down_ms (collapse to the gateway's first level change, from its log),
# gateway_switch_ms (collapse to the new level's first keyframe on air at the gateway),
# collapsed_queue_ms (how long the collapsed uplink's full tbf queue takes to drain at its
# new rate: a lower part sent after the collapse waits behind it, so engage_ms >= it),
# recover_s (return to level full), bid_p99_ms_during_collapse, bids_sent, bids_not_answered_200 (a 202 receipt counts
# here), and transcode_cpu_cores: first, on its own, a 1080p camera (test pattern, 6 Mbit/s)
# without a substream pulled by a gateway: the CPU of its ffmpeg transcoder over 20 s.
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
deps_ensure camera >&2 || exit 1
T=benches/netns/tools.py
now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }

nsh_setup "lx$$"

# the transcoder of one 1080p camera (no relay needed: the transcode runs regardless)
nsh_bg v /usr/bin/python3 tests/camera/rtsp_camera.py --port 8656 --size 1920x1080 --kbps 6000
cat > "$NSH_DIR/transcode.toml" <<TOML
[relay]
addr = "127.0.0.1:9"
[tls]
cert = "certs/gw.pem"
key = "certs/gw.key"
ca = "certs/ca.pem"
[proxy]
listen = "127.0.0.1:3129"
[bids]
journal = "transcode.journal"
[live]
contribute = false
[[cameras]]
name = "hd"
url = "rtsp://127.0.0.1:8656/cam"
TOML
"$CANOPY" certs init --event netns --out "$NSH_DIR/certs" --relay-name relay.canopy.test --gateway gw >/dev/null
nsh_bg v "$CANOPY" gateway --config "$NSH_DIR/transcode.toml"
tc_pid=${NSH_PIDS[-1]}
sleep 10
c0=$(nsh_child_cpu "$tc_pid" ffmpeg); s0=$(now)
sleep 20
c1=$(nsh_child_cpu "$tc_pid" ffmpeg); s1=$(now)
transcode_cores=$([ -n "$c0" ] && [ -n "$c1" ] && python3 -c "print(round(($c1 - $c0) / ($s1 - $s0), 3))" || echo null)
echo "transcode of a 1080p camera: $transcode_cores cores" >&2
# the camera before the gateway (the harness stops the rest at the end)
pkill -P "$tc_pid" -x ffmpeg || true
kill "${NSH_PIDS[-2]}" "$tc_pid" 2>/dev/null || true
sleep 1

nsh_lowbw_start || { echo "the camera never reached the relay" >&2; exit 1; }
gw_metrics() { nsh_exec v curl -s http://127.0.0.1:9102/metrics; }
level() { gw_metrics | awk '/^canopy_gateway_stream_level\{camera="cam"\}/ {v = $2} END {print v + 0}'; }
changes() { gw_metrics | awk '/^canopy_gateway_stream_level_changes_total/ {n += $2} END {print n + 0}'; }
shape() { for i in 1 2; do nsh_exec v tc qdisc change dev "v$i" root tbf rate "$1" burst 16kb latency 100ms; done; }
sleep 5

t0=$(now)
nsh_exec v python3 $T bids http://127.0.0.1:3128 http://10.200.100.1:8080 45 100 > "$NSH_DIR/bids.json" &
bids=$!
sleep 10
t_collapse=$EPOCHREALTIME
shape 250kbit
# how long the collapsed uplink's queue holds when full: tbf's limit (its rate times its
# latency, plus its burst) at the new rate. A part sent after the collapse waits that long
# behind what the queue held, so engage_ms cannot be less
queue_ms=$(nsh_exec v tc -j qdisc show dev v1 | python3 -c '
import json, sys
o = json.load(sys.stdin)[0]["options"]
print(round((o["rate"] * o["lat"] / 1e6 + o["burst"]) / o["rate"] * 1000))' 2>/dev/null || echo null)
# the first part of the lower level at the relay (a new init segment in its playlist),
# within the 30 s of the collapse, polled every 50 ms or so (bash's clock, no process per
# look: a look took 250-300 ms with a python clock and the level's metric in it)
t_engaged=""
while [ -z "$t_engaged" ] && (( ${EPOCHREALTIME%.*} - ${t_collapse%.*} < 30 )); do
  if nsh_exec r curl -s -m 1 "$BASE/program/stream.m3u8" | grep -q 'init-[1-9][0-9]*\.mp4'; then
    t_engaged=$EPOCHREALTIME
  fi
  sleep 0.05
done
# the time of the first line of the gateway's log matching $1 at or after the collapse
first_logged_after_collapse() {
  cat "$NSH_DIR"/bg*.log | sed 's/\x1b\[[0-9;]*m//g' \
    | awk -v pat="$1" '$0 ~ pat {print $1}' \
    | python3 -c "
import sys, datetime
for l in sys.stdin:
    t = datetime.datetime.fromisoformat(l.strip().replace('Z', '+00:00')).timestamp()
    if t >= $t_collapse:
        print(f'{t:.3f}'); break"
}
# the gateway's step down: its first level change after the collapse
t_stepped=$(first_logged_after_collapse 'gateway::levels: stream level down')
# the new level on air: the first source switch after the collapse (it waits for the new
# source's keyframe after the step)
t_switched=$(first_logged_after_collapse 'program: a new source on air')
sleep $(python3 -c "print(max(0, 30 - ($(now) - $t_collapse)))")
t_return=$(now)
shape 7000kbit
t_full=""
for _ in $(seq 600); do
  if [ "$(level)" = 0 ]; then t_full=$(now); break; fi
  sleep 0.1
done
wait $bids
sleep 10
nsh_exec r curl -s "$BASE/program/latency.json" > "$NSH_DIR/latency.json"

# the marginal Wi-Fi
c0=$(changes)
t_marginal=$(now)
for i in $(seq 10); do
  nsh_ctl 2 latency 600 >/dev/null
  sleep 3
  nsh_ctl 2 latency 30 >/dev/null
  sleep 3
done
c1=$(changes)
t_marginal_end=$(now)

python3 - "$NSH_DIR" "$t_collapse" "${t_engaged:-0}" "$t_return" "${t_full:-0}" "$c0" "$c1" \
  "$t_marginal" "$t_marginal_end" "${t_stepped:-0}" "$transcode_cores" "$queue_ms" \
  "${t_switched:-0}" <<'PY'
import json, sys
d = sys.argv[1]
t_collapse, t_engaged, t_return, t_full, c0, c1, tm0, tm1, t_stepped = (float(x) for x in sys.argv[2:11])
transcode_cores = None if sys.argv[11] == "null" else float(sys.argv[11])
queue_ms = None if sys.argv[12] == "null" else int(sys.argv[12])
t_switched = float(sys.argv[13])
lat = json.load(open(f"{d}/latency.json"))["parts"]
# live parts' arrival at the relay (capture + glass-to-relay), from the collapse to 10 s
# after the level was full again
end = (t_full if t_full else t_return + 60) + 10
arrivals = sorted((cap + ms) / 1000 for cap, ms in lat)
w = [t for t in arrivals if t_collapse - 1 <= t <= end]
stall = max((b - a for a, b in zip(w, w[1:])), default=None)
bids = json.load(open(f"{d}/bids.json"))["bids"]
during = sorted(r for t, r in bids if t_collapse <= t < t_return and r is not None)
p99 = round(during[min(len(during) - 1, int(len(during) * 0.99))], 1) if during else None
print(json.dumps({
    "engage_ms": round((t_engaged - t_collapse) * 1000) if t_engaged else None,
    "gateway_step_down_ms": round((t_stepped - t_collapse) * 1000) if t_stepped else None,
    # the new level's first keyframe on air at the gateway (after the step)
    "gateway_switch_ms": round((t_switched - t_collapse) * 1000) if t_switched else None,
    # the collapsed uplink's full queue at its new rate: the least engage_ms could be
    "collapsed_queue_ms": queue_ms,
    "relay_stall_ms": round(stall * 1000) if stall is not None else None,
    "level_changes_per_min_marginal": round((c1 - c0) / ((tm1 - tm0) / 60), 2),
    "recover_s": round(t_full - t_return, 1) if t_full else None,
    "transcode_cpu_cores": transcode_cores,
    "bid_p99_ms_during_collapse": p99,
    "bids_sent": len(bids),
    # no 200 within 30 s: a 202 receipt (queued in the journal, delivered later) counts here
    "bids_not_answered_200": sum(1 for _, r in bids if r is None),
}))
PY
