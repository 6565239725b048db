#!/usr/bin/env bash
# Live to the world, in network namespaces (root): a GStreamer RTSP camera in the venue,
# pulled by the real `canopy gateway`, sent over three shaped uplinks (cellular 8 Mbit/s
# 50 ms 0.5% loss, Wi-Fi 4 Mbit/s 20 ms, satellite 2 Mbit/s 300 ms as backup) to the real
# `canopy relay`, whose viewers fetch LL-HLS in the relay namespace.
#  1. ffmpeg reads the relay's stream for 30 s, prints nothing, while the busiest uplink is
#     cut at 5 s and restored at 15 s; viewers never see a skipped number or an HTTP error
#  2. a standard HTTP/3 client (aioquic) fetches the playlist and a part
#  3. nginx (proxy_cache) in front of the relay serves 20 viewers; the relay sees each part
#     about once
#  4. a viewer that reads nothing for 30 s slows nobody; 1000 blocking-reload viewers
#  5. bad viewer input gets 400/404 at once
#  6. every uplink down for 60 s, then back: no viewer error, the live edge back within
#     2 s, the recording complete after the backfill
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
deps_ensure camera h3 nginx || exit 1
V=tests/netns/lib/viewers.py
pass=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
fail() { echo "FAIL $*" >&2; exit 1; }
now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }
# LIVE_STEPS="3 6" runs only those checks (all by default)
want() { [ -z "${LIVE_STEPS:-}" ] || [[ " $LIVE_STEPS " == *" $1 "* ]]; }

nsh_setup "cv$$"
nsh_link 1 8000 8000 50 0.5
nsh_link 2 4000 4000 20
nsh_link 3 2000 2000 300
# the camera, in the venue namespace (its own loopback)
nsh_bg v /usr/bin/python3 tests/camera/rtsp_camera.py --port 8654 --size 1280x720 --kbps 2000
NSH_LIVE=1 NSH_HOLD_S=${LIVE_HOLD_S:-90} NSH_BACKUP_LINK=3 NSH_CAMERA_URL="rtsp://127.0.0.1:8654/cam" \
  nsh_canopy_configs 3
nsh_start_canopy 3

BASE=http://10.200.100.1:8088/live/gw/cam
relay_json() { nsh_exec r curl -s -m 5 http://10.200.100.1:8088/live/; }
# awk reads to the end: leaving early would cut curl off (SIGPIPE), failing under pipefail
gw_metric() { nsh_exec v curl -s http://127.0.0.1:9102/metrics | awk -v m="$1" 'index($0, m) == 1 && !seen {v = $2; seen = 1} END {if (seen) print v}'; }
# the stream is live at the relay: three segments listed
nsh_wait_playlist "$BASE/program/stream.m3u8" || fail "the camera never reached the relay: $(relay_json)"
echo "live at the relay: $BASE/index.m3u8"

if want 1; then
echo "1. ffmpeg and 5 viewers for 30 s; the busiest uplink is cut at 5 s, back at 15 s"
# parts the relay filled in: GAP parts or still parts (the picture held)
filler() { relay_json | python3 -c 'import json,sys; print(sum(s["gap_parts"] + s["still_parts"] for s in json.load(sys.stdin)))'; }
gaps_before=$(filler) || fail "the relay's stream list is unreadable: $(relay_json)"
nsh_exec r timeout 60 ffmpeg -nostdin -v error -i "$BASE/index.m3u8" -t 30 -f null - > "$NSH_DIR/ffmpeg1.log" 2>&1 &
ff=$!
nsh_exec r python3 $V play "$BASE/program/stream.m3u8" --viewers 5 --seconds 32 --json "$NSH_DIR/play1.json" > "$NSH_DIR/play1.log" 2>&1 &
pl=$!
sleep 3
busiest=$(nsh_busiest_uplink)
nsh_carrier $busiest down
sleep 10
nsh_carrier $busiest up
wait $ff; rc=$?
wait $pl; prc=$?
cat "$NSH_DIR/play1.log"
gaps_after=$(filler) || fail "the relay's stream list is unreadable: $(relay_json)"
[ $rc = 0 ] && [ ! -s "$NSH_DIR/ffmpeg1.log" ] || fail "ffmpeg (rc $rc): $(head -5 "$NSH_DIR/ffmpeg1.log")"
[ $prc = 0 ] || fail "viewers saw errors or skipped numbers"
[ "$gaps_after" = "$gaps_before" ] || fail "the relay filled in $((gaps_after - gaps_before)) parts (gap or still) across the cut"
ok "ffmpeg read 30 s through the cut without a message; 5 viewers: no error, no skipped number, no part filled in"
fi

if want 2; then
echo "2. HTTP/3: a standard client (aioquic)"
h3() { nsh_exec r python3 tests/netns/lib/h3get.py "https://10.200.100.1:8443$1" --cafile "$NSH_DIR/certs/ca.pem" --server-name relay.canopy.test -t 10 -o "$2"; }
h3 /live/gw/cam/program/stream.m3u8 "$NSH_DIR/h3.m3u8" > "$NSH_DIR/h3.log" || fail "HTTP/3 playlist: $(cat "$NSH_DIR/h3.log")"
part=$(grep -o 'part-[0-9]*\.[0-9]*\.m4s' "$NSH_DIR/h3.m3u8" | tail -1)
h3 "/live/gw/cam/program/$part" "$NSH_DIR/h3.m4s" >> "$NSH_DIR/h3.log" || fail "HTTP/3 part: $(cat "$NSH_DIR/h3.log")"
grep -q '^status: 200' "$NSH_DIR/h3.log" && [ -s "$NSH_DIR/h3.m4s" ] || fail "HTTP/3: $(cat "$NSH_DIR/h3.log")"
alt=$(nsh_exec r curl -s -D - -o /dev/null "$BASE/index.m3u8" | tr -d '\r' | grep -i '^alt-svc:')
[[ "$alt" == *'h3=":8443"'* ]] || fail "no Alt-Svc for HTTP/3: $alt"
ok "HTTP/3 with aioquic: playlist and $part ($(stat -c %s "$NSH_DIR/h3.m4s") bytes); HTTP/1.1 advertises it ($alt)"
fi

if want 3; then
echo "3. nginx proxy_cache in front of the relay, 20 viewers through it"
mkdir -p "$NSH_DIR/nginx/cache" "$NSH_DIR/nginx/tmp"
cat > "$NSH_DIR/nginx/nginx.conf" <<NGINX
user root;
worker_processes 1;
pid $NSH_DIR/nginx/nginx.pid;
error_log $NSH_DIR/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  proxy_temp_path $NSH_DIR/nginx/tmp;
  client_body_temp_path $NSH_DIR/nginx/tmp;
  proxy_cache_path $NSH_DIR/nginx/cache levels=1:2 keys_zone=live:10m max_size=500m inactive=10m;
  server {
    listen 10.200.100.1:8090;
    location / {
      proxy_pass http://10.200.100.1:8088;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache live;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 10s;
      proxy_cache_lock_age 10s;
      proxy_buffering on;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGINX
nsh_bg r nginx -c "$NSH_DIR/nginx/nginx.conf" -g 'daemon off;'
sleep 0.5
parts_req() { nsh_exec r curl -s http://10.200.100.1:9101/metrics | awk '/^canopy_relay_viewer_requests_total\{file="part"/ {s += $2} END {print s + 0}'; }
parts_made() { relay_json | python3 -c 'import json,sys; print(sum(s["parts"] for s in json.load(sys.stdin) if s["rendition"] == "program"))'; }
r0=$(parts_req); m0=$(parts_made)
nsh_exec r python3 $V play "http://10.200.100.1:8090/live/gw/cam/program/stream.m3u8" --viewers 20 --seconds 15 \
  --json "$NSH_DIR/play3.json" > "$NSH_DIR/play3.log" 2>&1 || fail "viewers through nginx: $(cat "$NSH_DIR/play3.log")"
r1=$(parts_req); m1=$(parts_made)
python3 - "$((r1 - r0))" "$((m1 - m0))" "$NSH_DIR/play3.json" <<'PY' || fail "nginx: the relay saw parts requested too often"
import json, sys
req, made, play = int(sys.argv[1]), int(sys.argv[2]), json.load(open(sys.argv[3]))
fetched = play["parts_fetched"]
print(f"  20 viewers fetched {fetched} parts through nginx; the relay made {made} parts and served {req} part requests")
# each part requested about once (a part fetched as it grows is held by the cache lock)
sys.exit(0 if made > 0 and req <= made * 1.5 + 5 and fetched >= 10 * made else 1)
PY
ok "nginx in front: 20 viewers, each part requested from the relay about once"
fi

if want 4; then
echo "4. a viewer that reads nothing for 30 s, 5 viewers beside it; then 1000 viewers"
nsh_exec r python3 $V slow "$BASE/program/stream.m3u8" --seconds 30 > "$NSH_DIR/slow.log" 2>&1 &
slow=$!
nsh_exec r python3 $V play "$BASE/program/stream.m3u8" --viewers 5 --seconds 30 --json "$NSH_DIR/play4.json" \
  > "$NSH_DIR/play4.log" 2>&1 || fail "viewers beside a stalled one: $(cat "$NSH_DIR/play4.log")"
wait $slow
cat "$NSH_DIR/slow.log" "$NSH_DIR/play4.log"
nsh_exec r python3 $V play "$BASE/program/stream.m3u8" --viewers 1000 --seconds 20 --json "$NSH_DIR/play1000.json" \
  > "$NSH_DIR/play1000.log" 2>&1 || fail "1000 viewers: $(cat "$NSH_DIR/play1000.log")"
cat "$NSH_DIR/play1000.log"
ok "a stalled viewer slowed nobody; 1000 blocking-reload viewers served"
fi

if want 5; then
echo "5. bad viewer input"
nsh_exec r python3 $V probe "$BASE/program" > "$NSH_DIR/probe.log" 2>&1 || fail "bad input: $(cat "$NSH_DIR/probe.log")"
cat "$NSH_DIR/probe.log"
ok "bad input: 400 and 404 at once"
fi

if want 6; then
echo "6. every uplink down for 60 s, then back"
nsh_exec r python3 $V play "$BASE/program/stream.m3u8" --viewers 5 --seconds 80 --json "$NSH_DIR/play6.json" \
  > "$NSH_DIR/play6.log" 2>&1 &
pl=$!
# the relay's stream, every 50 ms: when does it hold (still parts: the picture held, or
# GAP parts), and when is there media again after the outage
nsh_exec r python3 - "http://10.200.100.1:8088/live/" 82 > "$NSH_DIR/edge.json" <<'PY' &
import json, sys, time, urllib.request
url, secs = sys.argv[1], float(sys.argv[2])
end, out, last = time.time() + secs, [], None
while time.time() < end:
    try:
        streams = json.load(urllib.request.urlopen(url, timeout=5))
        s = next(s for s in streams if s["rendition"] == "program")
        cur = (s["state"], s["still_parts"], s["gap_parts"])
        if cur != last:
            out.append([time.time(), *cur])
            last = cur
    except Exception as e:
        out.append([time.time(), "error", -1, repr(e)])
    time.sleep(0.05)
print(json.dumps(out))
PY
edge=$!
sleep 5
t_down=$(now)
for i in 1 2 3; do nsh_carrier "$i" down; done
sleep 60
t_up=$(now)
for i in 1 2 3; do nsh_carrier "$i" up; done
wait $pl; prc=$?
wait $edge
cat "$NSH_DIR/play6.log"
[ $prc = 0 ] || fail "viewers through the outage: errors or skipped numbers"
python3 - "$NSH_DIR/edge.json" "$t_down" "$t_up" <<'PY' || fail "the live edge"
import json, sys
ev, down, up = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3])
errors = [e for e in ev if e[1] == "error"]
assert not errors, f"relay errors: {errors[:3]}"
held_at = next((t for t, state, still, gap in ev if state == "holding" and t > down), None)
back = next((t for t, state, still, gap in ev if state == "following" and t > up), None)
assert held_at is not None, "the relay never held during the outage"
assert back is not None, "no media after the links returned"
before = next(e for e in reversed(ev) if e[0] <= down)
during = next(e for e in reversed(ev) if e[0] <= up)
still, gap = during[2] - before[2], during[3] - before[3]
# the camera (H.264, AAC) can be held: still parts, no GAP part
assert still >= 200 and gap == 0, f"in the outage: {still} still parts, {gap} GAP parts"
print(f"  held from {held_at - down:.1f} s into the outage ({still} still parts, no GAP part); media again {back - up:.2f} s after the links returned")
sys.exit(0 if back - up <= 2.0 else 1)
PY
# the backfill: wait until the gateway has nothing left to send, then the recording
for _ in $(seq 120); do
  w=$(gw_metric 'canopy_gateway_media_waiting_pieces{lane="backfill"}')
  [ "${w:-1}" = 0 ] && break
  sleep 1
done
sleep 3
relay_json > "$NSH_DIR/relay.json"
python3 - "$NSH_DIR/relay.json" "$NSH_DIR/rec" <<'PY' || fail "the recording"
import glob, json, os, re, sys
streams = json.load(open(sys.argv[1]))
main = next(s for s in streams if s["rendition"] == "program")
rec = main["recording"]
assert rec and rec["parts_missing"] == 0 and rec["gap_segments"] == 0, f"recording: {rec}"
dirs = glob.glob(os.path.join(sys.argv[2], "gw", "cam", "program", "*"))
assert len(dirs) == 1, dirs
pl = open(os.path.join(dirs[0], "index.m3u8")).read()
msns = [int(m) for m in re.findall(r"^seg-(\d+)\.m4s", pl, re.M)]
assert msns == list(range(msns[0], msns[0] + len(msns))), "recording skips a segment"
assert "EXT-X-GAP" not in pl
missing = [m for m in msns if not os.path.exists(os.path.join(dirs[0], f"seg-{m}.m4s"))]
assert not missing, f"segment files missing: {missing[:5]}"
print(f"  recording: {len(msns)} segments, {rec['parts']} parts, none missing ({dirs[0]})")
PY
rec_dir=$(ls -d "$NSH_DIR"/rec/gw/cam/program/* | head -1)
# the stream goes on, so the recording is an EVENT playlist still: a finished copy of it
# for ffmpeg to read from start to end
sed 's/^#EXT-X-PLAYLIST-TYPE:EVENT$/#EXT-X-PLAYLIST-TYPE:VOD/' "$rec_dir/index.m3u8" > "$rec_dir/check.m3u8"
echo '#EXT-X-ENDLIST' >> "$rec_dir/check.m3u8"
out=$(timeout 120 ffmpeg -nostdin -v error -i "$rec_dir/check.m3u8" -f null - 2>&1 | head -5)
[ -z "$out" ] || fail "the recording does not decode cleanly: $out"
ok "60 s outage: viewers without an error, the live edge back within 2 s, the recording complete and decodable"
fi

echo "netns live: $pass passed"
