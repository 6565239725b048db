#!/usr/bin/env bash
# The relay's LL-HLS in a real browser: `canopy demo` (camera -> gateway -> three emulated
# uplinks -> relay) and hls.js in headless Chromium (tests/browser/play.mjs), all inside a
# loopback-only network namespace made for this run (root).
#  1. a 40 s desktop play of the relay's viewer URL that starts before the demo cuts its
#     busiest uplink for 5 s and ends after the uplink is back: the video advances >= 80%
#     of the time and hls.js reports no ERROR event of any kind
#  2. the cut (and the restore) happened inside that play
#  3. a 10 s play in a phone-sized viewport (390x844)
#  4. the demo's summary: the relay filled in no part (camera.relay_gap_parts and
#     camera.relay_still_parts are 0)
# Artifacts (screenshots, play JSON, the demo's output and summary): target/test-artifacts/.
# Prints "browser: N passed, M failed" last and exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

TALLY="browser"
source tests/live/lib/browser_test.sh

# The demo's timeline: the busiest uplink goes dark at (DEMO_S - CUT_S) / 2 s for CUT_S s
# (configs/demo.toml: cut_for_s = 5). The 40 s play starts PLAY_LEAD s before the cut, so it
# sees the stream before, during and after it; the phone run follows while the demo runs on.
DEMO_S=100
CUT_S=5
PLAY_S=40
PHONE_S=10
PLAY_LEAD=32 # play starts at t=15 s of the demo (cut at 47.5 s, back at ~53 s, play ends ~57 s)
CUT_AT=$(((DEMO_S - CUT_S) / 2))
PLAY_AT=$((CUT_AT - PLAY_LEAD))

# a namespace whose only interface is lo: the demo, the page server and Chromium share it
loopns_start browser || { bad "cannot create a network namespace"; finish; }

demo_log="$work/demo.log"     # the demo's output as it comes
stamped="$work/demo.stamped"  # the same, each line after its arrival time (epoch s)
summary="$work/demo.json"
stamp() {
  local l
  while IFS= read -r l; do
    printf '%s\n' "$l" >>"$demo_log"
    printf '%s %s\n' "$EPOCHREALTIME" "$l" >>"$stamped"
  done
}
: >"$demo_log"
: >"$stamped"
nsx "$BIN" demo --duration "$DEMO_S" --summary "$summary" > >(stamp) 2>&1 &
demo=$!
pids+=("$demo")
# the demo log kept as an artifact: "[demo t] line", t from the demo's own clock (its
# status line "t=  Ns" comes N s after it started)
save_log() {
  awk '{ ts = $1; sub(/^[^ ]+ /, ""); gsub(/\033\[[0-9;]*m/, "") }
       !t0 && /^t= *1s / { t0 = ts - 1 }
       { lines[NR] = $0; at[NR] = ts }
       END { for (i = 1; i <= NR; i++) if (t0) printf "[%7.2f] %s\n", at[i] - t0, lines[i]; else print lines[i] }' \
    "$stamped" >"$ART/relay-demo.log"
}
demo_t0() { awk '/^[0-9.]+ t= *1s / { printf "%.3f\n", $1 - 1; exit }' "$stamped"; }

url=""
for _ in $(seq 600); do
  url=$(awk '/^watch live: / {print $3; exit}' "$demo_log")
  [ -n "$url" ] && break
  kill -0 "$demo" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  bad "the demo printed no viewer URL"
  tail -30 "$demo_log"
  save_log
  finish
fi
echo "viewer URL (the relay's LL-HLS): $url"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "demo: ${DEMO_S} s, the busiest uplink cut at ~${CUT_AT}.5 s for ${CUT_S} s; playing ${PLAY_S} s from t=${PLAY_AT} s"

demo_t() { # the demo's latest status-line second ("t=  15s ..."), or -1
  awk '/^t= *[0-9]+s / {sub(/^t= */, ""); sub(/s.*/, ""); t = $0} END {print (t == "" ? -1 : t)}' "$demo_log"
}
for _ in $(seq 1200); do
  [ "$(demo_t)" -ge "$PLAY_AT" ] && break
  kill -0 "$demo" 2>/dev/null || break
  sleep 0.1
done
if ! kill -0 "$demo" 2>/dev/null || [ "$(demo_t)" -lt "$PLAY_AT" ]; then
  bad "the demo did not reach t=${PLAY_AT}s"
  tail -30 "$demo_log"
  save_log
  finish
fi

# the host's CPU counters (busy and total jiffies, all CPUs) from /proc/stat
cpu_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }
# play URL SECONDS SCREENSHOT JSON [args...]: play.mjs in the namespace; its line is printed,
# and how busy the host's CPUs were meanwhile (a player that falls behind on a busy host
# stalls with its buffer full)
play() {
  local u=$1 s=$2 shot=$3 json=$4
  shift 4
  rm -f "$shot" "$json"
  local c0 c1
  c0=$(cpu_jiffies)
  play_start=$EPOCHREALTIME
  nsx node tests/browser/play.mjs --url "$u" --seconds "$s" --screenshot "$shot" --json "$json" "$@" \
    >"$work/play.out" 2>&1 &
  local p=$!
  pids+=("$p")
  wait "$p"
  local rc=$?
  play_end=$EPOCHREALTIME
  c1=$(cpu_jiffies)
  sed 's/^/  /' "$work/play.out"
  read -r b0 t0j <<<"$c0"
  read -r b1 t1j <<<"$c1"
  [ "$t1j" -gt "$t0j" ] 2>/dev/null &&
    echo "  host CPUs $(((b1 - b0) * 100 / (t1j - t0j)))% busy during the play ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
  return $rc
}
p50() { node -e 'const j = require(process.argv[1]); console.log(j.latency_p50 == null ? "n/a" : j.latency_p50.toFixed(2) + " s")' "$(realpath "$1")" 2>/dev/null || echo n/a; }
# details of every hls.js ERROR, stall and HTTP failure at page time t (s since the page
# loaded) and on the demo's clock: the page loaded between node's start and its end minus
# the page's final time, so "demo t" is a range (Chromium's start-up is inside it)
explain() {
  node -e '
    const [json, startW, endW, t0] = process.argv.slice(1);
    const j = require(json);
    const fin = j.final ? j.final.t : j.seconds;
    const lo = Number(startW) - Number(t0), hi = Number(endW) - fin - Number(t0);
    const at = t => Number(t0) > 0 ? ` (demo t ${(lo + t).toFixed(1)}..${(hi + t).toFixed(1)})` : "";
    console.log(`  page loaded at demo t ${lo.toFixed(1)}..${hi.toFixed(1)} s`);
    // a run of the same error (hls.js repeats fragGap every few ms) is one line and a count
    const errs = j.errors || [];
    for (let i = 0; i < errs.length; ) {
      const e = errs[i];
      let k = i + 1;
      while (k < errs.length && errs[k].details === e.details && errs[k].fatal === e.fatal) k++;
      console.log(`  error t=${e.t}s${at(e.t)} ${e.type}/${e.details}${e.fatal ? " FATAL" : ""} currentTime=${e.currentTime}` +
        `${e.buffer != null ? " buffer=" + e.buffer : ""}${e.response_code != null ? " http=" + e.response_code : ""}${e.reason ? " reason=" + e.reason : ""}${e.url ? " " + e.url : ""}`);
      // (the message of hls.js says what it saw: the buffered ranges at a stall, say)
      if (e.message && e.message !== e.reason) console.log(`    hls.js: ${e.message.slice(0, 400)}`);
      if (k - i > 1) {
        const l = errs[k - 1];
        console.log(`    ... ${k - i} ${e.details} in a row, the last at t=${l.t}s${at(l.t)} currentTime=${l.currentTime}${l.url ? " " + l.url : ""}`);
      }
      i = k;
    }
    // a stall: what each SourceBuffer held around the playhead after the latest append (a
    // hole in one track is a fault of the stream; every track whole past the playhead is the
    // player falling behind), and the frames decoded and dropped in the seconds around it
    const near = (rs, ct) => (rs || []).filter(([a, b]) => b >= ct - 1 && a <= ct + 3).map(([a, b]) => `${a}-${b}`).join(" ") || "none";
    for (const s of j.stalls || []) {
      console.log(`  stall t=${s.t}s${at(s.t)} currentTime=${s.currentTime} buffer_ahead=${s.buffer_ahead} media.buffered ${near(s.buffered, s.currentTime)}`);
      const last = (s.appends || []).slice(-1)[0];
      if (last) for (const [k, rs] of Object.entries(last.ranges || {})) console.log(`    ${k} buffered ${near(rs, s.currentTime)} (after the append at t=${last.t}s, sn ${last.sn} part ${last.part})`);
      const around = (j.samples || []).filter(x => x.t >= s.t - 3 && x.t <= s.t + 2);
      if (around.length) console.log(`    samples: ${around.map(x => `t=${x.t} ct=${x.currentTime} ahead=${x.buffer_ahead} frames=${x.frames} dropped=${x.dropped} rate=${x.playbackRate}`).join("; ")}`);
    }
    for (const h of (j.track_holes || []).slice(0, 10)) console.log(`  hole in the ${h.track} SourceBuffer: ${h.from}-${h.to} (first seen at t=${h.first_seen}s)`);
    for (const h of (j.http_errors || []).slice(0, 10)) console.log(`  http ${h.status} ${h.url}`);
    for (const f of (j.failed_requests || []).slice(0, 10)) console.log(`  request failed (${f.failure}) ${f.url}`);
  ' "$(realpath "$1")" "$play_start" "$play_end" "$(demo_t0)" 2>/dev/null
  # what the demo said meanwhile, besides its status lines
  save_log
  awk -v a="$2" -v b="$3" '/^\[/ { t = substr($0, 2, 7) + 0 } t >= a && t <= b && !/\] t= *[0-9]+s / { print "  demo: " $0 }' \
    "$ART/relay-demo.log" | cut -c1-220
}

# --- 1. 40 s across the cut -----------------------------------------------------------------
t0=$(demo_t)
l0=$(wc -l <"$demo_log")
json="$ART/relay-hlsjs.json"
echo "desktop play starts at demo t=${t0}s"
if play "$url" "$PLAY_S" "$ART/relay-hlsjs.png" "$json"; then
  ok "relay LL-HLS in Chromium (hls.js): ${PLAY_S} s across the uplink cut, no hls.js error, latency p50 $(p50 "$json")"
else
  bad "relay LL-HLS in Chromium (hls.js), ${PLAY_S} s across the uplink cut (details in $json)"
  [ -f "$json" ] && explain "$json" "$((t0 - 2))" "$(($(demo_t) + 1))"
fi
t1=$(demo_t)
l1=$(wc -l <"$demo_log")
echo "desktop play ended at demo t=${t1}s"

# --- 2. the cut happened while it played ----------------------------------------------------
window=$(sed -n "$((l0 + 1)),${l1}p" "$demo_log")
cutline=$(grep -m1 'cut: uplink .* goes dark' <<<"$window")
restline=$(grep -m1 'restored: uplink' <<<"$window")
if [ -n "$cutline" ] && [ -n "$restline" ]; then
  ok "the play covered the cut (demo t=${t0}s..${t1}s):$(sed 's/^ *cut://' <<<"$cutline"), then$(sed 's/^ *restored://' <<<"$restline") back"
else
  bad "the cut was not inside the play (demo t=${t0}s..${t1}s; cut line: $(grep -m1 'goes dark' "$demo_log" || echo none))"
fi

# --- 3. phone viewport ----------------------------------------------------------------------
pjson="$ART/relay-hlsjs-phone.json"
pt0=$(demo_t)
if play "$url" "$PHONE_S" "$ART/relay-hlsjs-phone.png" "$pjson" --viewport 390x844; then
  ok "relay LL-HLS in a 390x844 viewport: ${PHONE_S} s, no hls.js error, latency p50 $(p50 "$pjson")"
else
  bad "relay LL-HLS in a 390x844 viewport (details in $pjson)"
  [ -f "$pjson" ] && explain "$pjson" "$((pt0 - 2))" "$(($(demo_t) + 1))"
fi

# --- 4. the demo's summary ------------------------------------------------------------------
# it ends by itself at DEMO_S; give it time to write the summary
for _ in $(seq $(((DEMO_S + 60) * 10))); do
  kill -0 "$demo" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$demo" 2>/dev/null; then
  bad "the demo did not end after ${DEMO_S} s"
else
  wait "$demo"
  rc=$?
  [ -f "$summary" ] && cp "$summary" "$ART/relay-demo.json"
  sleep 0.5 # the last lines through stamp()
  gaps=$(node -e 'const s = require(process.argv[1]); const c = s.camera || {};
    console.log(`${c.relay_gap_parts + c.relay_still_parts} ${c.relay_parts} ${c.parts} ${c.glass_to_relay_p50_ms} ${c.relay_stall_max_ms} ${JSON.stringify(s.cut)}`)' "$(realpath "$summary" 2>/dev/null || echo /nonexistent)" 2>/dev/null)
  read -r g parts gw_parts g2r stall cutj <<<"$gaps"
  if [ "$rc" = 0 ] && [ "${g:-x}" = 0 ] && [ "${parts:-0}" -gt 0 ] 2>/dev/null; then
    ok "demo summary: the relay made $parts parts (the gateway $gw_parts), 0 gap or still parts (cut $cutj), glass->relay p50 ${g2r%.*} ms, longest wait for a part ${stall} ms"
  else
    bad "demo summary: exit $rc, relay gap + still parts=${g:-missing}, relay_parts=${parts:-missing} (the gateway ${gw_parts:-?}), cut ${cutj:-?}"
    grep -E '^(summary|camera):' "$demo_log" | sed 's/^/  /'
  fi
fi
save_log
echo "artifacts: $ART/relay-hlsjs.{png,json} $ART/relay-hlsjs-phone.{png,json} $ART/relay-demo.{log,json}"
finish
