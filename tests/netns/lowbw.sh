#!/usr/bin/env bash
# The low-bandwidth mode, in network namespaces (root): a 4 Mbit/s camera (1280x720 noise,
# so the encoder spends it all) with a 200 kbit/s substream, pulled by the real gateway
# over two 7 Mbit/s uplinks to the real relay. Both uplinks collapse to 0.25 Mbit/s for
# 30 s (tc, the kernel's shaper), then return.
#  1. the camera's level steps down after the collapse, with its cause in the log, and
#     back to full after the uplinks return
#  2. ffmpeg (-v error) reads the relay's stream across the collapse and the return
#     without a message; the relay's playlist went on through the level changes
#  3. local actions on the collapse ([[actions]], capacity below 2 Mbit/s for 1 s) fire once,
#     with their cause, and clear after the return: a hook command runs once, bulk traffic
#     is paused (503) while bids go on, a dry-run rule changes nothing
#  4. the admin API: refused without its token; shows the actions and the levels; a
#     camera's level set by hand and given back; the spool purged of what the relay has
#  5. hls.js in headless Chromium (a loopback-only namespace, the relay's viewer port
#     bridged into it) plays the relay's stream across the collapse and the return
# LOWBW_CAMERA=transcode (tests/netns/lowbw_transcode.sh): the gateway is not told of the
# substream and makes its own low-rate rendition with ffmpeg (the transcode level); 1, 2
# and 5 are checked, and the transcoder's CPU is printed.
# Prints the figures it measured (engage and recovery times) and "netns lowbw: N passed".
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
deps_ensure camera || exit 1
deps_ensure browser || exit 1
pass=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
fail() { echo "FAIL $*" >&2; exit 1; }
now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }

mode=${LOWBW_CAMERA:-substream}
case "$mode" in
  substream) low_level=1 ;;
  transcode) low_level=2 ;;
  *) echo "LOWBW_CAMERA must be substream or transcode" >&2; exit 64 ;;
esac
# the rest of the checks (actions, admin API) are made once, with the substream
full_run() { [ "$mode" = substream ]; }

nsh_setup "lb$$"
full_run && NSH_GATEWAY_EXTRA=$(cat <<TOML
[admin]
listen = "127.0.0.1:9480"

[[actions]]
name = "thin-hook"
when = "capacity_below_mbps"
value = 2
for_s = 1
clear_after_s = 5
then = "run"
command = ["/bin/sh", "-c", "echo \"\$CANOPY_ACTION|\$CANOPY_CAUSE\" >> $NSH_DIR/hook.log"]

[[actions]]
name = "thin-pause"
when = "capacity_below_mbps"
value = 2
for_s = 1
clear_after_s = 5
then = "pause_class"
class = "bulk"

[[actions]]
name = "thin-dry"
when = "capacity_below_mbps"
value = 2
for_s = 1
then = "avoid_uplink"
uplink = "cellular"
dry_run = true
TOML
)
export NSH_GATEWAY_EXTRA
# a small ring, so parts reach the spool within seconds (the purge below)
export NSH_RING_BYTES=$((4 << 20))
nsh_lowbw_start "$mode" || fail "the camera never reached the relay"
gw_pid=$(pgrep -f "gateway --config $NSH_DIR/gateway.toml" | head -1)

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

# admin API METHOD PATH [curl args]: prints the body, then the status on its own line
admin() {
  local m=$1 p=$2; shift 2
  nsh_exec v curl -s -m 5 -X "$m" -H "Authorization: Bearer $(cat "$NSH_DIR/admin.token")" \
    -w '\n%{http_code}' "$@" "http://127.0.0.1:9480$p"
}
# json_get EXPR: evaluates EXPR on the JSON body read from stdin (bound to j)
json_get() { python3 -c "import json,sys; t=sys.stdin.read().rsplit(chr(10),1)[0]; j=json.loads(t); print($1)"; }
# action NAME FIELD: a field of one action in /api/actions
action() { admin GET /api/actions | json_get "[a for a in j if a['name'] == '$1'][0]['$2']"; }
# proxy METHOD URL: the status of a request through the gateway's proxy, and its reason
proxy() {
  nsh_exec v curl -s -m 10 -o /dev/null -D - -X "$1" -x http://127.0.0.1:3128 "$2" -d x \
    | awk 'NR == 1 {s = $2} tolower($1) == "canopy-reason:" {$1 = ""; r = $0} END {print s r}'
}

if full_run; then
  code=$(nsh_exec v curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:9480/api/status)
  [ "$code" = 401 ] || fail "the admin API answered $code without its token"
  firings=$(for a in thin-hook thin-pause thin-dry; do action "$a" firings; done | paste -sd,)
  [ "$firings" = "0,0,0" ] || fail "actions fired before the collapse: $firings"
  ok "the admin API refuses a request without its token (401); no action has fired before the collapse"
fi
# The players join a stream that has run for 12 s (links out of probation, windows grown):
# what this test is about is the collapse. (Joined 4-5 s after the stream's start, hls.js
# once met a 1 s hole in the parts' delivery, 6 s in: a start-up matter this test does
# not cover; see the known gaps in docs/architecture.md.)
sleep 8
# the gateway's transcoder's CPU time so far, s (0 without one)
transcode_cpu() { local c; c=$(nsh_child_cpu "$gw_pid" ffmpeg); echo "${c:-0}"; }

# ffmpeg's messages, each with the time it came
# (for a wall-clock time: with -t 75 and 25 s to spare, the transcode run's ffmpeg was
# still reading when the timeout came)
play_s=$(full_run && echo 105 || echo 75)
{ nsh_exec r timeout -s INT "$play_s" ffmpeg -nostdin -v error -i "$BASE/index.m3u8" -f null - 2>&1 || true; } \
  | while IFS= read -r l; do echo "$(now) $l"; done > "$NSH_DIR/ffmpeg.log" &
ff=$!
# hls.js in headless Chromium, in a loopback-only namespace, across the same collapse and
# return (tests/browser/play.mjs: the video advances >= 80% of the time, no hls.js error)
nsh_browser_setup
hls_s=70
hls_json="$NSH_DIR/hlsjs.json"
ART=target/test-artifacts
mkdir -p "$ART"
nsh_exec b node tests/browser/play.mjs --url "$BROWSER_BASE/index.m3u8" --seconds "$hls_s" \
  --screenshot "$ART/lowbw-$mode-hlsjs.png" --json "$hls_json" --allow-nonfatal > "$NSH_DIR/hlsjs.out" 2>&1 &
hls=$!
sleep 8
echo "collapse: both uplinks to 0.25 Mbit/s for 30 s"
cpu_at_collapse=$(transcode_cpu)
collapsed_at=$EPOCHREALTIME
shape 250kbit
echo "shaped in $(python3 -c "print(round(($EPOCHREALTIME - $collapsed_at) * 1000))") ms (from $collapsed_at)"
engaged=$(when_level -ne 100) || fail "the level did not step down within 10 s of the collapse"
engage_ms=$(python3 -c "print(round(($engaged - $collapsed_at) * 1000))")
low=$(level)
# the first step goes to the substream (or the transcode) or below: the keyframes (3) or
# the audio (4) level when that one does not fit either
[ "$low" -ge "$low_level" ] || fail "the level stepped to $low, not $mode ($low_level) or below"
sleep 5
if full_run; then
bulk=$(proxy GET http://10.200.100.1:8080/assets/1000)
bid=$(proxy POST http://10.200.100.1:8080/bid)
tier=$(admin GET /api/status | json_get "[l for l in j['links'] if l['name'] == 'cellular'][0]['tier']")
states=$(for a in thin-hook thin-pause thin-dry; do echo "$a $(action "$a" active) $(action "$a" firings)"; done | paste -sd,)
echo "during the collapse: bulk '$bulk', bid '$bid', cellular tier $tier, actions: $states"
case "$bulk" in 503*paused*thin-pause*) ;; *) fail "bulk during the collapse: $bulk" ;; esac
[ "$bid" = 200 ] || fail "a bid during the collapse: $bid"
[ "$states" = "thin-hook True 1,thin-pause True 1,thin-dry True 1" ] || fail "actions during the collapse: $states"
[ "$tier" = primary ] || fail "the dry-run rule moved cellular to $tier"
ok "the collapse fired every action once: bulk paused (503), a bid answered 200, the dry run changed nothing"
else
  sleep 3
fi
sleep 15
nsh_exec r curl -s -m 5 "$BASE/program/stream.m3u8" > "$NSH_DIR/low.m3u8"
sleep 8
deep=$(level)
echo "return: both uplinks to 7 Mbit/s"
returned_at=$(now)
cpu_cores=$(python3 -c "print(round(($(transcode_cpu) - $cpu_at_collapse) / ($returned_at - $collapsed_at), 2))")
shape 7000kbit
recovered=$(when_level -eq 450) || recovered=""
recover_s=$([ -n "$recovered" ] && python3 -c "print(round($recovered - $returned_at, 1))" || echo none)
echo "figures: engage_ms=$engage_ms (level $low, $deep at the collapse's end) recover_s=$recover_s$(full_run || echo " transcode_cpu_cores=$cpu_cores")"
grep -E 'stream level (down|up)' "$NSH_DIR"/bg*.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 || true
# the links' capacity was probed (the gateway counts its probes, the relay what reached it)
probes=$(nsh_exec v curl -s http://127.0.0.1:9102/metrics | awk '/^canopy_gateway_probes_total/ {n += $2} END {print n + 0}')
probe_bytes=$(nsh_exec r curl -s http://10.200.100.1:9101/metrics | awk '/^canopy_relay_probe_bytes_total/ {n += $2} END {print n + 0}')
echo "probes: $probes sent, $probe_bytes bytes reached the relay"
[ "$probes" -gt 0 ] && [ "$probe_bytes" -gt 0 ] || fail "the links' capacity was never probed: $probes probes, $probe_bytes bytes"
if grep -q 'stream level down.*cause' <(gw_log | sed 's/\x1b\[[0-9;]*m//g') && [ -n "$recovered" ]; then
  ok "the level stepped down ${engage_ms} ms after the collapse (to level $low), with its cause, and back to full ${recover_s} s after the return"
else
  fail "level: stepped down after ${engage_ms} ms, recovered: ${recover_s}"
fi
if full_run; then
  # the actions clear 5 s (thin-dry: 10 s) after the capacity is back above 2.5 Mbit/s
  for _ in $(seq 100); do
    [ "$(action thin-pause active)" = False ] && [ "$(action thin-dry active)" = False ] && break
    sleep 0.2
  done
  states=$(for a in thin-hook thin-pause thin-dry; do echo "$a $(action "$a" active) $(action "$a" firings)"; done | paste -sd,)
  bulk=$(proxy GET http://10.200.100.1:8080/assets/1000)
  hooks=$(cat "$NSH_DIR/hook.log" 2>/dev/null || true)
  log=$(gw_log | sed 's/\x1b\[[0-9;]*m//g')
  echo "after the return: actions: $states, bulk '$bulk'"
  echo "hook ran: $hooks"
  grep -E 'action (fired|cleared)' <<<"$log" | cut -c1-300 || true
  [ "$states" = "thin-hook False 1,thin-pause False 1,thin-dry False 1" ] || fail "actions after the return: $states"
  [ "$bulk" = 200 ] || fail "bulk after the return: $bulk"
  [ "$(grep -c . <<<"$hooks")" = 1 ] && grep -q '^thin-hook|bonded capacity .* below 2.00 Mbit/s for ' <<<"$hooks" \
    || fail "the hook ran other than once with its cause: $hooks"
  for a in thin-hook thin-pause thin-dry; do
    [ "$(grep -c "action fired.*action=\"\?$a.*cause=.*bonded capacity" <<<"$log")" = 1 ] \
      || fail "$a's firing is not logged once with its cause"
    [ "$(grep -c "action cleared.*action=\"\?$a" <<<"$log")" = 1 ] || fail "$a's clearing is not logged once"
  done
  ok "every action fired once for the collapse and cleared after the return, each logged with its cause; the hook ran once with it; bulk flows again"

  # a camera's level by hand
  set_level() { admin PUT "/api/levels/$1" -H 'content-type: application/json' -d "{\"level\": \"$2\"}" | tail -1; }
  [ "$(set_level cam sometimes)" = 422 ] || fail "a bad level was not refused with 422"
  [ "$(set_level nocam substream)" = 404 ] || fail "an unknown camera was not refused with 404"
  [ "$(set_level cam substream)" = 200 ] || fail "setting the level failed"
  until_level() { for _ in $(seq "$2"); do [ "$(level)" = "$1" ] && return 0; sleep 0.1; done; return 1; }
  until_level 1 50 || fail "the level did not follow the hand's setting within 5 s: $(level)"
  by_hand=$(admin GET /api/levels | json_get "j[0]['pinned'] + ' ' + j[0]['level']")
  [ "$(set_level cam auto)" = 200 ] || fail "giving the level back failed"
  echo "set by hand: $by_hand"
  [ "$by_hand" = "substream substream" ] || fail "the admin API shows $by_hand"
  until_level 0 200 || fail "the level did not return to full within 20 s of the hand letting go: $(level)"
  ok "the admin API set the camera's level by hand (substream) and gave it back (full again); bad requests got 422 and 404"

  # the on-site spool: what the relay already has can go, and nothing else. Parts keep
  # moving from the ring into the spool meanwhile (a burst of them when big parts push
  # small ones out), so the check is by sequence number: every file the purge's answer
  # says was delivered is gone, every other file it saw stays.
  program="$NSH_DIR/spool/cam/program"
  spooled_seqs() { find "$program" -name '*.m4s' -printf '%f\n' | cut -d- -f1 | sort -n; }
  spooled_seqs > "$NSH_DIR/spool.before"
  answer=$(admin POST /api/purge)
  spooled_seqs > "$NSH_DIR/spool.after"
  purged=$(printf %s "$answer" | json_get "j['purged_parts']")
  kept=$(printf %s "$answer" | json_get "[k['seq'] for k in j['kept_from'] if k['camera'] == 'cam'][0]")
  before=$(wc -l < "$NSH_DIR/spool.before")
  below=$(awk -v k="$kept" '$1 < k' "$NSH_DIR/spool.before" | wc -l)
  # (parts spooled after the purge may be below its bound: they left the ring later)
  left_below=$(awk -v k="$kept" 'NR == FNR { a[$1]; next } $1 < k && ($1 in a)' \
    "$NSH_DIR/spool.after" "$NSH_DIR/spool.before" | wc -l)
  gone_above=$(awk -v k="$kept" 'NR == FNR { a[$1]; next } $1 >= k && !($1 in a)' \
    "$NSH_DIR/spool.after" "$NSH_DIR/spool.before" | wc -l)
  echo "purge: $purged parts removed, kept from part $kept; spooled files $before -> $(wc -l < "$NSH_DIR/spool.after") ($below of them delivered)"
  [ "$purged" -gt 0 ] && [ "$purged" -ge "$below" ] || fail "the purge removed $purged parts, $below spooled ones below part $kept"
  [ "$left_below" = 0 ] || fail "$left_below spooled parts below part $kept survived the purge"
  [ "$gone_above" = 0 ] || fail "the purge removed $gone_above parts from part $kept on, which the relay has not answered for"
  ok "the admin API's purge removed the $purged spooled parts the relay already has"

fi
wait $ff
hls_rc=0
wait $hls || hls_rc=$?
cp "$hls_json" "$ART/lowbw-$mode-hlsjs.json" 2>/dev/null || true
cat "$NSH_DIR/hlsjs.out"
# While no media comes (the parts under way at the collapse, before the lower level's
# first part), the relay lists still parts: the last keyframe held, silent audio. This
# camera (H.264, AAC) allows them, so no GAP part is listed.
filler=$(nsh_exec r curl -s -m 5 http://10.200.100.1:8088/live/ | python3 -c 'import json,sys
s = [s for s in json.load(sys.stdin) if s["rendition"] == "program"][0]
print(s["still_parts"], s["gap_parts"])' 2>/dev/null || echo "x x")
read -r still_parts gap_parts <<<"$filler"
read -r frag_gaps no_media <<<"$(node -e 'const e = require(process.argv[1]).errors || [];
  const n = d => e.filter(x => x.details === d).length;
  console.log(n("fragGap"), n("fragParsingError"))' \
  "$(realpath "$hls_json" 2>/dev/null || echo /nonexistent)" 2>/dev/null || echo x x)"
echo "the relay filled in $still_parts still parts and $gap_parts gap parts; hls.js met $frag_gaps GAP parts"
if [ "$gap_parts" = 0 ]; then
  ok "the relay listed no GAP part: where its media stood still it listed still parts ($still_parts)"
else
  fail "the relay listed $gap_parts GAP parts (and $still_parts still ones); hls.js met $frag_gaps"
fi
# hls.js treats a part it could not parse as a gap, and then every part after it: "Found no
# media in fragment", then a fragGap error each time it comes back to that part (283 in
# one run). That was a part of the new level parsed without its map, after the player
# placed the new segment's start past its buffer's end (see `extinf` in segmenter/src/hls.rs).
case "$no_media" in
  '' | *[!0-9]*) fail "hls.js's report ($hls_json) could not be read for its parse errors" ;;
  0) ok "hls.js parsed every part it loaded (no fragParsingError)" ;;
  *) fail "hls.js could not parse $no_media parts (fragParsingError), then met $frag_gaps GAP parts" ;;
esac
# Where the relay's newest part stood still for over a second (the collapse; the first
# 4 Mbit/s keyframe part on links just back), the player may have run its buffer dry
# before the still parts came (non-fatal bufferStalledError), and the next timeline's
# tracks may start a few tens of ms apart (a seek over that hole). What this checks: it plays on (>= 80% of
# the time, no fatal error), with no error at all before the collapse or from 5 s after
# the level is back to full, as the player sees it (it plays its median latency behind
# the relay's live edge: 2-3 s here). (Page times count from the page's own start, which
# the player reports as a wall-clock time.)
hls_errs=$(node -e 'const [f, c, r] = process.argv.slice(1).map((x, i) => i ? Number(x) : x);
  const j = require(f); const e = j.errors || [];
  const s = Number(j.time_origin_unix);
  if (!(s > 0)) throw new Error("the player did not report its time origin");
  const lat = Number(j.latency_p50) || 0;
  const out = e.filter(x => s + x.t < c || s + x.t > r + lat);
  const since = x => (s + x.t - c).toFixed(2);
  console.log(`${e.length - out.length} ${out.length} ${out.slice(0, 3).map(x => x.details + "@" + since(x) + "s").join(",")}`)' \
  "$(realpath "$hls_json" 2>/dev/null || echo /nonexistent)" "$collapsed_at" \
  "$(python3 -c "print(${recovered:-$returned_at} + 5)")" 2>/dev/null || echo "x x")
read -r hls_during hls_outside hls_which <<<"$hls_errs"
if [ "$hls_rc" = 0 ] && [ "$hls_outside" = 0 ]; then
  ok "hls.js in Chromium played the relay's stream for $hls_s s across the collapse and the return: no fatal error, none before the collapse or 5 s after the level was full again ($hls_during non-fatal in between)"
else
  echo "hls.js: $hls_during errors from the collapse to 5 s after the return to full, $hls_outside outside (first, seconds after the collapse): $hls_which"
  node -e 'const j = require(process.argv[1]);
    for (const e of j.errors || []) console.log(`  error t=${e.t}s ${e.type}/${e.details}${e.fatal ? " FATAL" : ""} currentTime=${e.currentTime}${e.url ? " " + e.url : ""}`);
    for (const s of j.stalls || []) console.log(`  stall t=${s.t}s currentTime=${s.currentTime} buffer_ahead=${s.buffer_ahead}`);
    for (const e of j.events || []) if (e.name !== "playing") console.log(`  event t=${e.t} ${e.name}`);' \
    "$(realpath "$ART/lowbw-$mode-hlsjs.json")" 2>/dev/null || true
  fail "hls.js in Chromium across the collapse (details in $ART/lowbw-$mode-hlsjs.json)"
fi
# The parts under way when the links collapse cannot all arrive (a 110 kB keyframe part
# takes 2 s at 0.5 Mbit/s): the relay gives them up and ffmpeg decodes around the hole.
# What this checks is that the level changes themselves cost nothing: no message later than
# 4 s after the collapse.
at_collapse=$(awk -v t="$collapsed_at" '$1 < t + 4' "$NSH_DIR/ffmpeg.log" | wc -l)
later=$(awk -v t="$collapsed_at" '$1 >= t + 4' "$NSH_DIR/ffmpeg.log")
echo "ffmpeg: $at_collapse messages within 4 s of the collapse"
if [ -z "$later" ]; then
  ok "ffmpeg read the relay's stream for $play_s s: no message after the collapse's first 4 s, through every level change"
else
  fail "ffmpeg after the collapse: $(head -c 2000 <<<"$later")"
fi
echo "netns lowbw $mode: $pass passed"
