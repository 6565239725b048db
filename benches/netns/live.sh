#!/usr/bin/env bash
# The live bench's scenario (root): a 4 Mbit/s 1080p GStreamer camera in the venue, the
# real gateway and relay, uplinks cellular 8 Mbit/s 50 ms 0.5% loss, Wi-Fi 4 Mbit/s 20 ms,
# satellite 2 Mbit/s 300 ms (backup). 60 s measured: the busiest uplink (the one that carried
# the most live media in the 2 s before) is cut at 20 s for 10 s, every uplink is down at
# 40 s for 10 s; 20 viewers play the relay's stream throughout. Then the backfill is
# awaited. Prints one JSON object.
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
deps_ensure camera >&2 || exit 1
V=tests/netns/lib/viewers.py
now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }
gw_metrics() { nsh_exec v curl -s http://127.0.0.1:9102/metrics; }
nsh_setup "bl$$"
nsh_link 1 8000 8000 50 0.5
nsh_link 2 4000 4000 20
nsh_link 3 2000 2000 300
nsh_bg v /usr/bin/python3 tests/camera/rtsp_camera.py --port 8654 --size 1920x1080 --kbps 4000 --no-audio
NSH_LIVE=1 NSH_HOLD_S=60 NSH_BACKUP_LINK=3 NSH_CAMERA_URL="rtsp://127.0.0.1:8654/cam" nsh_canopy_configs 3
nsh_start_canopy 3 >&2
BASE=http://10.200.100.1:8088/live/gw/cam
nsh_wait_playlist "$BASE/program/stream.m3u8" || { echo "the camera never reached the relay" >&2; exit 1; }
sleep 5

t0=$(now)
nsh_exec r python3 $V play "$BASE/program/stream.m3u8" --viewers 20 --seconds 62 --json "$NSH_DIR/viewers.json" \
  > "$NSH_DIR/viewers.log" 2>&1 &
viewers=$!
sleep 18; busiest=$(nsh_busiest_uplink); t_cut=$(now); nsh_carrier "$busiest" down
sleep 10; t_back=$(now); nsh_carrier "$busiest" up
sleep 10; t_down=$(now); for i in 1 2 3; do nsh_carrier "$i" down; done
sleep 10; t_up=$(now); for i in 1 2 3; do nsh_carrier "$i" up; done
# the backfill: done when the gateway has no backfill left (sampled every 100 ms, 60 s at most);
# it starts when its bytes first move after the return
t_done=""; t_bf=""; b0=""
for _ in $(seq 600); do
  mt=$(gw_metrics)
  w=$(awk '/^canopy_gateway_media_waiting_pieces\{lane="backfill"\}/ {print $2}' <<<"$mt")
  b=$(awk '/^canopy_gateway_media_bytes_total\{kind="backfill"\}/ {print $2}' <<<"$mt")
  [ -z "$b0" ] && b0=${b:-0}
  [ -z "$t_bf" ] && [ "${b:-0}" != "$b0" ] && t_bf=$(now)
  if [ "${w:-1}" = 0 ] && [ -z "$t_done" ]; then t_done=$(now); break; fi
  sleep 0.1
done
wait $viewers
sleep 2
nsh_exec r curl -s "$BASE/program/latency.json" > "$NSH_DIR/latency.json"
nsh_exec r curl -s http://10.200.100.1:8088/live/ > "$NSH_DIR/relay.json"
gw_metrics > "$NSH_DIR/gw.metrics"
python3 - "$NSH_DIR" "$t0" "$t_cut" "$t_back" "$t_down" "$t_up" "${t_done:-0}" "${t_bf:-0}" "$busiest" <<'PY'
import json, re, sys
d = sys.argv[1]
t0, t_cut, t_back, t_down, t_up, t_done, t_bf = (float(x) for x in sys.argv[2:9])
lat = json.load(open(f"{d}/latency.json"))
relay = next(s for s in json.load(open(f"{d}/relay.json")) if s["rendition"] == "program")
viewers = json.load(open(f"{d}/viewers.json"))
metrics = open(f"{d}/gw.metrics").read()
def m(kind):
    x = re.search(r'^canopy_gateway_media_bytes_total\{kind="' + kind + r'"\} (\S+)', metrics, re.M)
    return float(x.group(1)) if x else 0.0
def q(v, f):
    v = sorted(v)
    return round(v[min(len(v) - 1, round((len(v) - 1) * f))], 1) if v else None
# parts and frames captured in the measured minute while some link was up
def measured(samples):
    return [l for cap, l in samples if t0 * 1000 <= cap <= (t0 + 60) * 1000
            and not (t_down * 1000 <= cap < t_up * 1000)]
parts, frames = measured(lat["parts"]), measured(lat["frames"])
rec = relay["recording"] or {}
first, again, copy = m("first"), m("again"), m("copy")
outage = t_up - t_down
out = {
    "glass_to_relay_p50_ms": q(parts, 0.5),
    "glass_to_relay_p95_ms": q(parts, 0.95),
    "frame_to_relay_p95_ms": q(frames, 0.95),
    "parts_measured": len(parts),
    "parts_missing_at_relay": rec.get("holes"),
    "recording_parts": rec.get("parts"),
    "recording_gap_segments": rec.get("gap_segments"),
    "viewer_errors": viewers["http_errors"] + viewers["continuity_violations"],
    "viewers": viewers["viewers"],
    "viewers_held": viewers.get("viewers_held", viewers["viewers"] if viewers["ok"] else None),
    "backfill_s": round(t_done - t_up, 2) if t_done else None,
    "backfill_speed_x": round(outage / (t_done - t_up), 2) if t_done > t_up else None,
    # the same from its first bytes after the return (the reconnection and the live edge's
    # catch-up left out)
    "backfill_started_s": round(t_bf - t_up, 2) if t_bf else None,
    "backfill_sending_speed_x": round(outage / (t_done - t_bf), 2) if t_done > t_bf > 0 else None,
    "redundant_bytes_ratio": round((copy + again) / first, 4) if first else None,
    "copy_bytes": copy, "again_bytes": again, "first_bytes": first,
    "relay_gap_parts": relay["gap_parts"], "relay_still_parts": relay["still_parts"],
    "relay_resumes": relay["resumes"],
    "cut_link": {1: "cellular", 2: "wifi", 3: "satellite"}[int(sys.argv[9])],
}
print(json.dumps(out))
PY
