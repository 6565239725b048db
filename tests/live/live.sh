#!/usr/bin/env bash
# Cameras end to end: GStreamer RTSP cameras (pulled) and ffmpeg (pushing) into a real
# gateway; its on-site LL-HLS checked with ffmpeg. No root needed; loopback only.
# Prints "live: N passed, M failed" and exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
# ffmpeg, ffprobe, curl and the GStreamer test camera: the camera group of tests/deps.sh
source tests/deps.sh
deps_ensure camera || exit 1
BIN=${CANOPY_BIN:-target/release/canopy}
[ -x "$BIN" ] || cargo build --release -q
PY=/usr/bin/python3
work=$(mktemp -d /tmp/canopy-live.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
pass=0
fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
# N distinct free TCP ports below the kernel's ephemeral range (32768 and up), so that no
# outgoing connection or bind(0) elsewhere can take one between choosing it and its use.
ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
held, out = [], []
for p in random.sample(range(20000, 32000), 400):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    held.append(s)
    out.append(p)
    if len(out) == int(sys.argv[1]):
        break
print(" ".join(map(str, out)))
PY
}

camera() { # name port args... -> starts a camera, records its pid in cam_<name>
  local name=$1 p=$2
  shift 2
  $PY tests/camera/rtsp_camera.py --port "$p" "$@" >"$work/cam-$name.log" 2>&1 &
  eval "cam_$name=$!"
  pids+=($!)
  for _ in $(seq 50); do grep -q ready "$work/cam-$name.log" && return 0; sleep 0.1; done
  echo "camera $name did not start:"; cat "$work/cam-$name.log"; return 1
}

read -r P_H264 P_H265 P_CRA P_AUDIO HTTP RTSP <<<"$(ports 6)"
[ -n "$RTSP" ] || { echo "live: no six free ports below 32000"; exit 1; }
camera h264 "$P_H264" --user crew --password 's3cret' || exit 1
camera h265 "$P_H265" --codec h265 --no-audio || exit 1
camera cra "$P_CRA" --codec h265 --no-audio --open-gop || exit 1
camera audio "$P_AUDIO" --audio-only || exit 1

"$BIN" certs init --event live --out "$work/certs" >/dev/null
cat >"$work/gateway.toml" <<TOML
[relay]
addr = "127.0.0.1:9"
server_name = "localhost"
bind = "127.0.0.1:0"
[proxy]
listen = "127.0.0.1:$HTTP"
[live]
rtsp_listen = "127.0.0.1:$RTSP"
ring_bytes = 1048576
spool_dir = "$work/spool"
cors_origins = ["http://screens.test"]
[[cameras]]
name = "stage"
url = "rtsp://127.0.0.1:$P_H264/cam"
substream_url = "rtsp://127.0.0.1:$P_H264/sub"
username = "crew"
password = "s3cret"
[[cameras]]
name = "hevc"
url = "rtsp://127.0.0.1:$P_H265/cam"
[[cameras]]
name = "opengop"
url = "rtsp://127.0.0.1:$P_CRA/cam"
[[cameras]]
name = "lobby"
[[cameras]]
name = "radio"
url = "rtsp://127.0.0.1:$P_AUDIO/cam"
[[cameras]]
name = "encoder"
username = "enc"
password = "pushpw"
[[cameras]]
name = "nowhere"
url = "rtsp://127.0.0.1:9/none"
TOML
RUST_LOG=info "$BIN" gateway --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
gw=$!
pids+=($gw)
base="http://127.0.0.1:$HTTP/live"

wait_live() { # camera -> waits until its main playlist lists 3 segments
  for _ in $(seq 150); do
    n=$(curl -s -m 2 "$base/$1/main/stream.m3u8" | grep -c '^#EXTINF')
    [ "${n:-0}" -ge 3 ] && return 0
    sleep 0.1
  done
  return 1
}

# ffmpeg must print nothing while reading $1 for $2 seconds of media
decodes_clean() {
  local out
  out=$(timeout 40 ffmpeg -nostdin -v error -i "$1" -t "$2" -f null - 2>&1)
  local rc=$?
  [ $rc -eq 0 ] && [ -z "$out" ] && return 0
  echo "  ffmpeg rc=$rc: $(echo "$out" | head -5)"
  return 1
}

# --- 1. pulled H.264 + AAC camera, with credentials ------------------------------------
if wait_live stage; then
  if decodes_clean "$base/stage/index.m3u8" 10; then ok "H.264+AAC camera: ffmpeg reads index.m3u8 for 10 s without a message"; else bad "H.264+AAC LL-HLS decode"; fi
else
  bad "H.264+AAC camera never went live"; tail -20 "$work/gateway.log"
fi

# the playlist: LL-HLS tags, every part decodes after its init segment
python3 - "$base/stage/main" "$work" <<'PY' && ok "playlist tags, blocking reload, each part after its init segment" || bad "playlist/parts check"
import re, subprocess, sys, time, urllib.request, urllib.error
base, work = sys.argv[1], sys.argv[2]
def get(path, timeout=10):
    with urllib.request.urlopen(f"{base}/{path}", timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()
st, ct, pl = get("stream.m3u8")
pl = pl.decode()
problems = []
assert ct == "application/vnd.apple.mpegurl", ct
for tag in ["#EXT-X-TARGETDURATION:", "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,", ",CAN-SKIP-UNTIL=", ",PART-HOLD-BACK=",
            "#EXT-X-PART-INF:PART-TARGET=0.200", "#EXT-X-MAP:URI=", "#EXT-X-PROGRAM-DATE-TIME:",
            "#EXT-X-PART:DURATION=", "INDEPENDENT=YES", "#EXT-X-PRELOAD-HINT:TYPE=PART,URI="]:
    if tag not in pl: problems.append(f"missing {tag}")
td = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", pl).group(1))
for d in re.findall(r"#EXTINF:([\d.]+),", pl):
    if round(float(d)) > td: problems.append(f"EXTINF {d} > target {td}")
for d in re.findall(r"#EXT-X-PART:DURATION=([\d.]+)", pl):
    if float(d) > 0.2 + 1e-6: problems.append(f"part {d} longer than PART-TARGET")
msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", pl).group(1))
hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="part-(\d+)\.(\d+)\.m4s"', pl)
m, p = int(hint.group(1)), int(hint.group(2))
# blocking reload: ask for the hinted part; the answer must wait for it and list it
t0 = time.time()
st, _, pl2 = get(f"stream.m3u8?_HLS_msn={m}&_HLS_part={p}")
waited = time.time() - t0
if f'part-{m}.{p}.m4s"' not in pl2.decode(): problems.append("blocking reload answered without the part")
if waited > 2.0: problems.append(f"blocking reload took {waited:.2f} s")
try:
    get(f"stream.m3u8?_HLS_msn={m + 10}")
    problems.append("msn far ahead was not refused")
except urllib.error.HTTPError as e:
    if e.code != 400: problems.append(f"msn far ahead: {e.code}")
try:
    get("stream.m3u8?_HLS_part=1")
    problems.append("_HLS_part alone was not refused")
except urllib.error.HTTPError as e:
    if e.code != 400: problems.append(f"_HLS_part alone: {e.code}")
# the hinted part itself: requested before it exists, it comes when ready
pl3 = get("stream.m3u8")[2].decode()
h = re.search(r'PRELOAD-HINT:TYPE=PART,URI="(part-[\d.]+m4s)"', pl3).group(1)
st, ct, body = get(h)
if st != 200 or not body: problems.append(f"hinted part {h}: {st}")
init = get(re.search(r'#EXT-X-MAP:URI="([^"]+)"', pl3).group(1))[2]
parts = re.findall(r'URI="(part-[\d.]+m4s)"', pl3)[-6:]
for part in parts + [h]:
    data = init + get(part)[2]
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", "-", "-f", "null", "-"], input=data, capture_output=True)
    if r.returncode != 0 or r.stderr.strip(): problems.append(f"{part}: {r.stderr.decode()[:200]}")
probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", "-"],
                       input=init + get(parts[0])[2], capture_output=True).stdout.decode().split()
if probe != ["h264", "aac"]: problems.append(f"codecs {probe}")
seg = re.findall(r"^(seg-\d+\.m4s)$", pl3, re.M)[-1]
r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", "-", "-f", "null", "-"], input=init + get(seg)[2], capture_output=True)
if r.returncode != 0 or r.stderr.strip(): problems.append(f"{seg}: {r.stderr.decode()[:200]}")
try:
    get("part-1.99.m4s")
    problems.append("an unknown part was served")
except urllib.error.HTTPError as e:
    if e.code != 404: problems.append(f"unknown part: {e.code}")
if problems:
    print("  " + "\n  ".join(problems)); sys.exit(1)
print(f"  blocking reload answered in {waited * 1000:.0f} ms; {len(parts) + 1} parts and {seg} decode after the init segment")
PY

# the ring is 1 MiB: older parts went to the disk spool, and decode after their init segment
sp="$work/spool/stage/program"
first=$(ls "$sp" 2>/dev/null | grep -m1 '\.m4s$')
if [ -f "$sp/init-0.mp4" ] && [ -n "$first" ] && [ -z "$(cat "$sp/init-0.mp4" "$sp/$first" | ffmpeg -nostdin -v error -i - -f null - 2>&1)" ]; then
  ok "ring bounded at 1 MiB; evicted parts spooled to disk ($(ls "$sp" | grep -c m4s) files) and decodable"
else
  bad "spool: $(ls "$sp" 2>&1 | head -3)"
fi

# both renditions in abr.m3u8
abr=$(curl -s -m 10 "$base/stage/abr.m3u8")
if [ "$(grep -c '^#EXT-X-STREAM-INF' <<<"$abr")" = 2 ] && grep -q 'RESOLUTION=320x180' <<<"$abr" && decodes_clean "$base/stage/sub/stream.m3u8" 3; then
  ok "substream: a second rendition in the multivariant playlist"
else
  bad "substream rendition: $abr"
fi

# --- 2. H.265 video-only camera ---------------------------------------------------------
if wait_live hevc && decodes_clean "$base/hevc/index.m3u8" 5 \
  && curl -s "$base/hevc/index.m3u8" | grep -q 'CODECS="hvc1\.'; then
  ok "H.265 video-only camera"
else
  bad "H.265 camera"
fi

# an H.265 camera whose keyframes after the first are CRA pictures (x265's open GOP):
# segments close on them, the target duration stays small, and it decodes
pl=""
for _ in $(seq 100); do
  pl=$(curl -s -m 2 "$base/opengop/main/stream.m3u8")
  [ "$(grep -c '^#EXTINF' <<<"$pl")" -ge 4 ] && break
  sleep 0.1
done
td=$(grep -m1 '^#EXT-X-TARGETDURATION' <<<"$pl" | cut -d: -f2)
if [ "$(grep -c '^#EXTINF' <<<"$pl")" -ge 4 ] && [ "${td:-99}" -le 2 ] && decodes_clean "$base/opengop/index.m3u8" 5; then
  ok "H.265 open-GOP camera (CRA keyframes): segments of ${td} s, decodable"
else
  bad "H.265 open GOP: target duration ${td:-none}"; echo "$pl" | head -12
fi

# CORS only for the configured origin
h_ok=$(curl -s -D - -o /dev/null -H 'Origin: http://screens.test' "$base/stage/index.m3u8" | tr -d '\r' | grep -i '^access-control-allow-origin:')
h_no=$(curl -s -D - -o /dev/null -H 'Origin: http://evil.test' "$base/stage/index.m3u8" | tr -d '\r' | grep -i '^access-control-allow-origin:')
if [ "$h_ok" = "access-control-allow-origin: http://screens.test" ] && [ -z "$h_no" ]; then
  ok "CORS: the configured origin is allowed, another is not"
else
  bad "CORS: '$h_ok' / '$h_no'"
fi

# a request head over the limit gets 431 with its reason
r431=$(python3 -c 'import sys; print("x" * 20000)' | { read -r big; curl -s -D - -o /dev/null -H "X-Big: $big" "$base/"; } | tr -d '\r')
if grep -q '^HTTP/1.1 431' <<<"$r431" && grep -qi '^canopy-reason: request header section' <<<"$r431"; then
  ok "an oversized request head: 431 with canopy-reason"
else
  bad "431: $(head -3 <<<"$r431")"
fi

# --- 3. a camera that sends only audio --------------------------------------------------
if wait_live radio && decodes_clean "$base/radio/index.m3u8" 5 && grep -q 'camera=radio.*no video\|no video.*camera=radio\|radio.*sends no video' "$work/gateway.log"; then
  ok "audio-only camera: packaged, and logged by name"
else
  bad "audio-only camera"; grep -i radio "$work/gateway.log" | tail -3
fi

# --- 4. the camera dies and comes back mid-stream ---------------------------------------
before=$(curl -s "$base/stage/main/stream.m3u8" | grep -m1 '^#EXT-X-MEDIA-SEQUENCE' | cut -d: -f2)
kill -9 "$cam_h264"
sleep 8
camera h264 "$P_H264" --user crew --password 's3cret' || exit 1
back=$(date +%s.%N)
# live again: a part after the discontinuity, within about a second of the camera's return
# (its next keyframe comes within a second)
live_s=""
for _ in $(seq 100); do
  pl=$(curl -s -m 2 "$base/stage/main/stream.m3u8")
  if awk '/^#EXT-X-DISCONTINUITY$/{d=1} d && /^#EXT-X-PART:/{n++} END{exit !(n>0)}' <<<"$pl"; then
    live_s=$(python3 -c "import time; print(f'{time.time() - $back:.2f}')"); break
  fi
  sleep 0.05
done
resumed=0
for _ in $(seq 200); do
  pl=$(curl -s -m 2 "$base/stage/main/stream.m3u8")
  if grep -q '^#EXT-X-DISCONTINUITY$' <<<"$pl" && [ "$(awk '/^#EXT-X-DISCONTINUITY$/{d=1} d && /^#EXTINF/{n++} END{print n+0}' <<<"$pl")" -ge 2 ]; then resumed=1; break; fi
  sleep 0.1
done
if [ -n "$live_s" ] && python3 -c "import sys; sys.exit(0 if $live_s <= 2.5 else 1)"; then
  ok "a camera back after 8 s away is live again $live_s s after its return"
else
  bad "camera return: live again after ${live_s:-never} s"
fi
after=$(grep -m1 '^#EXT-X-MEDIA-SEQUENCE' <<<"$pl" | cut -d: -f2)
status=$(curl -s "$base/")
if [ $resumed = 1 ] && [ "$after" -ge "$before" ] && decodes_clean "$base/stage/index.m3u8" 4 \
  && python3 -c 'import json,sys; s={c["name"]:c for c in json.load(sys.stdin)}["stage"]; r=s["renditions"][0]; sys.exit(0 if s["status"]["connects"]>=2 and r["discontinuities"]>=1 else 1)' <<<"$status"; then
  ok "camera killed and restarted: resumed with a discontinuity, playlist valid (media sequence $before -> $after)"
else
  bad "camera restart: resumed=$resumed msn $before -> $after"; echo "$pl" | tail -15
fi
grep -q 'camera disconnected; reconnecting.*\|camera=stage' "$work/gateway.log" || bad "no log line naming the camera on its loss"

# --- 5. ffmpeg pushes (RECORD) with B-frames -------------------------------------------
timeout 40 ffmpeg -nostdin -v error -re -f lavfi -i testsrc=size=640x360:rate=25 -f lavfi -i sine=frequency=500:sample_rate=44100 \
  -t 25 -pix_fmt yuv420p -c:v libx264 -preset veryfast -g 25 -c:a aac -f rtsp -rtsp_transport tcp \
  "rtsp://enc:pushpw@127.0.0.1:$RTSP/encoder" >"$work/push.log" 2>&1 &
push=$!
pids+=($push)
if wait_live encoder && decodes_clean "$base/encoder/index.m3u8" 8; then
  ok "ffmpeg RTSP push (ANNOUNCE/RECORD, B-frames) served as LL-HLS"
else
  bad "push"; cat "$work/push.log"; grep -i encoder "$work/gateway.log" | tail -5
fi
# no or wrong credentials, a second encoder for the same name, an unknown name, and a bad
# SDP are refused
python3 - "$RTSP" <<'PY' && ok "push: no/wrong credentials 401, the credentials take over 200, unknown name 404, bad SDP 400" || bad "push refusals"
import base64, socket, sys
port = int(sys.argv[1])
def announce(name, sdp, auth=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = sdp.encode()
    extra = f"Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n" if auth else ""
    s.sendall(f"ANNOUNCE rtsp://127.0.0.1:{port}/{name} RTSP/1.0\r\nCSeq: 1\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    line = s.recv(4096).split(b"\r\n")[0].decode()
    s.close()
    return int(line.split()[1])
good = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
codes = (announce("encoder", good), announce("encoder", good, "enc:wrong"), announce("encoder", good, "enc:pushpw"),
         announce("stranger", good), announce("hevc2", "not sdp"))
print("  ", codes)
sys.exit(0 if codes == (401, 401, 200, 404, 400) else 1)
PY
wait "$push" 2>/dev/null

# a squatter that ANNOUNCEs a camera without credentials and never records (only OPTIONS)
# holds it for at most 5 s; meanwhile a second encoder gets 453, afterwards it gets the name
python3 - "$RTSP" <<'PY' && ok "push squatter: 453 while it holds the name, released within 6 s, then the real encoder gets it" || bad "push squatter"
import socket, sys, time
port = int(sys.argv[1])
sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n".encode()
def req(s, method, cseq, body=b""):
    s.sendall(f"{method} rtsp://127.0.0.1:{port}/lobby RTSP/1.0\r\nCSeq: {cseq}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    data = s.recv(4096)
    return int(data.split(b"\r\n")[0].split()[1]) if data else None
squat = socket.create_connection(("127.0.0.1", port), timeout=5)
t0 = time.time()
codes = [req(squat, "ANNOUNCE", 1, sdp)]
real = socket.create_connection(("127.0.0.1", port), timeout=5)
codes.append(req(real, "ANNOUNCE", 1, sdp))
real.close()
got = None
for i in range(12):
    time.sleep(1)
    try:
        r = req(squat, "OPTIONS", i + 2)
    except OSError:
        r = None
    real = socket.create_connection(("127.0.0.1", port), timeout=5)
    c = req(real, "ANNOUNCE", 1, sdp)
    real.close()
    if c == 200:
        got = time.time() - t0
        break
print("  ", codes, f"real encoder in after {got and round(got, 1)} s")
sys.exit(0 if codes == [200, 453] and got is not None and got <= 6.5 else 1)
PY

# --- 6. an unreachable camera does not disturb the others -------------------------------
st=$(curl -s "$base/" | python3 -c 'import json,sys; s={c["name"]:c for c in json.load(sys.stdin)}; print(s["nowhere"]["status"]["state"], "|", s["nowhere"]["status"]["last_error"])')
if [[ $st == reconnecting* || $st == connecting* ]] && [[ $st == *"|"*[a-zA-Z]* ]] && kill -0 "$gw"; then
  ok "unreachable camera: reported ($st), the gateway keeps serving"
else
  bad "unreachable camera status: $st"
fi
if grep -q panicked "$work/gateway.log"; then bad "the gateway panicked"; fi

echo "live: $pass passed, $fail failed"
[ "$fail" = 0 ]
