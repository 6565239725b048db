#!/usr/bin/env bash
# The low-bandwidth mode, in network namespaces (root): a 4 Mbit/s camera (1280x720 noise,
# so the encoder spends it all) with a 200 kbit/s substream, pulled by the real gateway
# over two 7 Mbit/s uplinks to the real relay. Both uplinks collapse to 0.25 Mbit/s for
# 30 s (tc, the kernel's shaper), then return.
#  1. the camera's level steps down after the collapse, with its cause in the log, and
#     back to full after the uplinks return
#  2. ffmpeg (-v error) reads the relay's stream across the collapse and the return
#     without a message; the relay's playlist went on through the level changes
# Prints the figures it measured (engage and recovery times) and "netns lowbw: N passed".
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
deps_ensure camera || exit 1
pass=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
fail() { echo "FAIL $*" >&2; exit 1; }
now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }

nsh_setup "lb$$"
nsh_lowbw_start || fail "the camera never reached the relay"

gw_log() { cat "$NSH_DIR"/bg*.log; }
level() {
  nsh_exec v curl -s http://127.0.0.1:9102/metrics \
    | awk '/^canopy_gateway_stream_level\{camera="cam"\}/ {v = $2} END {print v + 0}'
}
# when_level OP TENTHS: the time the level first satisfies `[ level OP 0 ]`, polled every
# 100 ms for TENTHS tenths of a second (fails if it never does)
when_level() {
  for _ in $(seq "$2"); do
    if [ "$(level)" "$1" 0 ]; then now; return 0; fi
    sleep 0.1
  done
  return 1
}
# both uplinks' rate, venue to relay (the stream's direction)
shape() { for i in 1 2; do nsh_exec v tc qdisc change dev "v$i" root tbf rate "$1" burst 16kb latency 100ms; done; }

[ "$(level)" = 0 ] || fail "the level is not full before the collapse: $(level)"

# ffmpeg's messages, each with the time it came
nsh_exec r timeout 100 ffmpeg -nostdin -v error -i "$BASE/index.m3u8" -t 80 -f null - 2>&1 \
  | while IFS= read -r l; do echo "$(now) $l"; done > "$NSH_DIR/ffmpeg.log" &
ff=$!
sleep 8
echo "collapse: both uplinks to 0.25 Mbit/s for 30 s"
collapsed_at=$(now)
shape 250kbit
engaged=$(when_level -ne 100) || fail "the level did not step down within 10 s of the collapse"
engage_ms=$(python3 -c "print(round(($engaged - $collapsed_at) * 1000))")
low=$(level)
sleep 20
nsh_exec r curl -s -m 5 "$BASE/program/stream.m3u8" > "$NSH_DIR/low.m3u8"
sleep 8
echo "return: both uplinks to 7 Mbit/s"
returned_at=$(now)
shape 7000kbit
recovered=$(when_level -eq 450) || recovered=""
recover_s=$([ -n "$recovered" ] && python3 -c "print(round($recovered - $returned_at, 1))" || echo none)
echo "figures: engage_ms=$engage_ms (level $low) recover_s=$recover_s"
grep -E 'stream level (down|up)' "$NSH_DIR"/bg*.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 || true
if grep -q 'stream level down.*cause' <(gw_log | sed 's/\x1b\[[0-9;]*m//g') && [ -n "$recovered" ]; then
  ok "the level stepped down ${engage_ms} ms after the collapse (to level $low), with its cause, and back to full ${recover_s} s after the return"
else
  fail "level: stepped down after ${engage_ms} ms, recovered: ${recover_s}"
fi
wait $ff
# The parts under way when the links collapse cannot all arrive (a 110 kB keyframe part
# takes 2 s at 0.5 Mbit/s): the relay gives them up and ffmpeg decodes around the hole.
# What this checks is that the level changes themselves cost nothing: no message later than
# 4 s after the collapse.
at_collapse=$(awk -v t="$collapsed_at" '$1 < t + 4' "$NSH_DIR/ffmpeg.log" | wc -l)
later=$(awk -v t="$collapsed_at" '$1 >= t + 4' "$NSH_DIR/ffmpeg.log")
echo "ffmpeg: $at_collapse messages within 4 s of the collapse"
if [ -z "$later" ]; then
  ok "ffmpeg read the relay's stream for 80 s: no message after the collapse's first 4 s, through every level change"
else
  fail "ffmpeg after the collapse: $(head -c 2000 <<<"$later")"
fi
echo "netns lowbw: $pass passed"
