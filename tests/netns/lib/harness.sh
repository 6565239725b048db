# Network-namespace harness for Canopy's bonding tests and benches (root only).
#
# Topology, for N uplinks (N <= 3):
#
#   venue ns                 wan ns                              relay ns
#   v1 10.200.1.1/24 ---- vw1 =[canopy linkem --bridge]= rw1 ---- r1 10.200.1.2/24
#   v2 10.200.2.1/24 ---- vw2 =[canopy linkem --bridge]= rw2 ---- r2 10.200.2.2/24
#   v3 10.200.3.1/24 ---- vw3 =[canopy linkem --bridge]= rw3 ---- r3 10.200.3.2/24
#                                                           relay service 10.200.100.1 (lo)
#
# Rates are shaped by the kernel: tc tbf on v<i> (towards the relay) and r<i> (towards the
# venue). Latency, jitter and loss come from the link emulator's frame bridge in the wan
# namespace (netem is not in every kernel; where it is, configs/links/*.sh do the same to a
# real appliance). Outages: `ip link set down` on the wan side (the venue sees the carrier
# go), or the bridge's blackhole (`outage on` on its control socket).
#
# Source this file, call `nsh_setup PREFIX`, then `nsh_link I RATE_UP_KBIT RATE_DOWN_KBIT
# ONE_WAY_MS [LOSS_PERCENT]` per uplink. Everything is removed by `nsh_cleanup`, which the
# harness installs as an EXIT trap, so a failing test cleans up too.

set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../../deps.sh"

CANOPY=${CANOPY:-$(pwd)/target/release/canopy}
NSH_DIR=""
NSH_P=""
NSH_PIDS=()

# what the namespaces need (ip, tc, ethtool, curl, ...): the netns group of tests/deps.sh
nsh_need() {
  deps_ensure netns
}

nsh_setup() {
  [ "$(id -u)" = 0 ] || { echo "netns tests need root" >&2; exit 1; }
  nsh_need
  NSH_P=$1
  NSH_DIR=$(mktemp -d "/tmp/canopy-netns-$NSH_P.XXXX")
  trap nsh_cleanup EXIT
  for ns in v w r; do
    ip netns add "${NSH_P}$ns"
    ip -n "${NSH_P}$ns" link set lo up
  done
  ip -n "${NSH_P}r" addr add 10.200.100.1/32 dev lo
}

# nsh_link I UP_KBIT DOWN_KBIT ONE_WAY_MS [LOSS_PERCENT]
nsh_link() {
  local i=$1 up=$2 down=$3 ms=$4 loss=${5:-0}
  local V=${NSH_P}v W=${NSH_P}w R=${NSH_P}r
  ip link add "v$i" netns "$V" type veth peer name "vw$i" netns "$W"
  ip link add "rw$i" netns "$W" type veth peer name "r$i" netns "$R"
  for pair in "$V v$i" "$W vw$i" "$W rw$i" "$R r$i"; do
    set -- $pair
    ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1"
    # the bridge copies frames byte for byte: checksums must be in them, no offloads
    ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    ip -n "$1" link set "$2" up
  done
  ip -n "$V" addr add "10.200.$i.1/24" dev "v$i"
  ip -n "$R" addr add "10.200.$i.2/24" dev "r$i"
  # each uplink reaches the relay service through its own link: by bound device (metric
  # routes) and by source address (policy rules, as MPTCP subflows need)
  ip -n "$V" route add 10.200.100.1 via "10.200.$i.2" dev "v$i" metric "$i"
  ip -n "$V" route add 10.200.100.1 via "10.200.$i.2" dev "v$i" table "$((100 + i))"
  ip -n "$V" rule add from "10.200.$i.1" table "$((100 + i))" priority "$((1000 + i))"
  # rates by the kernel: the queue holds 100 ms at the link rate (a modem's buffer)
  ip netns exec "$V" tc qdisc add dev "v$i" root tbf rate "${up}kbit" burst 16kb latency 100ms
  ip netns exec "$R" tc qdisc add dev "r$i" root tbf rate "${down}kbit" burst 16kb latency 100ms
  # latency and loss by the emulator bridge
  cat > "$NSH_DIR/link$i.toml" <<TOML
name = "netns-$i"
description = "netns uplink $i: ${ms} ms one way, ${loss}% loss (rates by tc)"
[up]
latency_ms = $ms
loss_percent = $loss
queue_ms = 1000
[down]
latency_ms = $ms
loss_percent = $loss
queue_ms = 1000
TOML
  ip netns exec "$W" "$CANOPY" linkem --bridge "vw$i,rw$i" --profile "$NSH_DIR/link$i.toml" \
    --control "$NSH_DIR/ctl$i" --quiet >"$NSH_DIR/linkem$i.log" 2>&1 &
  NSH_PIDS+=($!)
  for _ in $(seq 50); do [ -S "$NSH_DIR/ctl$i" ] && break; sleep 0.1; done
}

# nsh_ctl I COMMAND...: a command to uplink I's bridge (outage on|off, rate, latency, ...)
nsh_ctl() {
  local i=$1; shift
  /usr/bin/python3 - "$NSH_DIR/ctl$i" "$*" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
print(s.makefile().readline().strip())
PY
}

# nsh_carrier I up|down: the venue sees uplink I's carrier come and go
nsh_carrier() {
  ip -n "${NSH_P}w" link set "vw$1" "$2"
}

# nsh_bg NS CMD...: runs CMD in namespace NS (v, w, r or b) in the background, logged
nsh_bg() {
  local ns=$1; shift
  local log="$NSH_DIR/bg${#NSH_PIDS[@]}.log"
  ip netns exec "${NSH_P}$ns" "$@" >"$log" 2>&1 &
  NSH_PIDS+=($!)
}

# nsh_child_cpu PID NAME: the CPU time (s) of PID's child process NAME so far (nothing
# when there is none); ip netns exec runs its command in its own process, so PID is
# what nsh_bg left in NSH_PIDS
nsh_child_cpu() {
  local pid
  pid=$(pgrep -P "$1" -x "$2" | head -1 || true)
  [ -z "$pid" ] || awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat" 2>/dev/null || true
}

nsh_exec() {
  local ns=$1; shift
  ip netns exec "${NSH_P}$ns" "$@"
}

# certificates, relay and gateway configs for N uplinks in $NSH_DIR; NSH_CAP_LINK and
# NSH_CAP_BYTES put a daily cap on one uplink
nsh_canopy_configs() {
  local n=$1
  [ -d "$NSH_DIR/certs" ] || "$CANOPY" certs init --event netns --out "$NSH_DIR/certs" --relay-name relay.canopy.test \
    --gateway gw >/dev/null
  cat > "$NSH_DIR/relay.toml" <<TOML
[relay]
listen = "10.200.100.1:4433"
server_names = ["relay.canopy.test"]
[tls]
cert = "certs/relay.pem"
key = "certs/relay.key"
ca = "certs/ca.pem"
[egress]
allow = ["10.200.100.1:8080"]
[metrics]
listen = "10.200.100.1:9101"
TOML
  # NSH_LIVE=1: viewers (HTTP/1.1 on 8088, HTTP/3 on 8443) and recordings; NSH_HOLD_S the hold
  if [ -n "${NSH_LIVE:-}" ]; then
    cat >> "$NSH_DIR/relay.toml" <<TOML
[viewers]
listen = "10.200.100.1:8088"
h3_listen = "10.200.100.1:8443"
[live]
record_dir = "rec"
hold_s = ${NSH_HOLD_S:-60}
TOML
  fi
  {
    cat <<TOML
[relay]
addr = "10.200.100.1:4433"
server_name = "relay.canopy.test"
[tls]
cert = "certs/gw.pem"
key = "certs/gw.key"
ca = "certs/ca.pem"
[proxy]
listen = "127.0.0.1:3128"
response_timeout_ms = 15000
[metrics]
listen = "127.0.0.1:9102"
[[classes]]
class = "bid"
path_prefix = "/bid"
method = "POST"
TOML
    local kinds=(x cellular wifi satellite)
    for i in $(seq "$n"); do
      printf '[[uplinks]]\nname = "%s"\nkind = "%s"\nbind = "v%s"\n' "${kinds[$i]}" "${kinds[$i]}" "$i"
      if [ "${NSH_CAP_LINK:-0}" = "$i" ]; then printf 'cap_bytes_per_day = %s\n' "$NSH_CAP_BYTES"; fi
      # NSH_BACKUP_LINK=I: uplink I is a backup (satellite)
      if [ "${NSH_BACKUP_LINK:-0}" = "$i" ]; then printf 'tier = "backup"\n'; fi
      printf '\n'
    done
    # NSH_CAMERA_URL: one camera pulled by the gateway, sent to the relay
    if [ -n "${NSH_CAMERA_URL:-}" ]; then
      # NSH_RING_BYTES: the on-site ring per rendition (parts leaving it go to the spool)
      printf '[live]\nspool_dir = "spool"\nring_bytes = %s\n\n[[cameras]]\nname = "cam"\nurl = "%s"\n' \
        "${NSH_RING_BYTES:-33554432}" "$NSH_CAMERA_URL"
      # NSH_SUBSTREAM_URL: its second stream (the low-bandwidth mode's substream level)
      if [ -n "${NSH_SUBSTREAM_URL:-}" ]; then printf 'substream_url = "%s"\n' "$NSH_SUBSTREAM_URL"; fi
    fi
    # NSH_GATEWAY_EXTRA: more of the gateway's config (TOML tables), appended
    if [ -n "${NSH_GATEWAY_EXTRA:-}" ]; then printf '\n%s\n' "$NSH_GATEWAY_EXTRA"; fi
  } > "$NSH_DIR/gateway.toml"
}

# starts origin + relay (relay ns) and gateway (venue ns); waits until all uplinks are up
nsh_start_canopy() {
  local n=$1
  nsh_bg r "$CANOPY" origin --listen 10.200.100.1:8080
  nsh_bg r "$CANOPY" relay --config "$NSH_DIR/relay.toml"
  sleep 0.5
  nsh_bg v "$CANOPY" gateway --config "$NSH_DIR/gateway.toml"
  nsh_wait_uplinks "$n"
}

# nsh_wait_playlist URL: waits (up to 30 s) until the playlist at URL (fetched in the relay
# namespace) lists three segments: the stream is live there
nsh_wait_playlist() {
  local n
  for _ in $(seq 300); do
    n=$(nsh_exec r curl -s -m 2 "$1" | grep -c '^#EXTINF' || true)
    [ "${n:-0}" -ge 3 ] && return 0
    sleep 0.1
  done
  return 1
}

# nsh_lowbw_start: the low-bandwidth scenario (tests/netns/lowbw.sh, benches/netns/lowbw.sh):
# two 7 Mbit/s uplinks (20 and 30 ms one way) and a 4 Mbit/s 720p camera (noise, so the
# encoder spends it all) with a 200 kbit/s substream, pulled by the gateway and sent to
# the relay; waits until the stream is live there. Sets BASE (the stream at the relay).
# With "transcode": the gateway is not told of the substream, and makes its own.
nsh_lowbw_start() {
  local sub="rtsp://127.0.0.1:8654/sub"
  [ "${1:-}" = transcode ] && sub=""
  nsh_link 1 7000 7000 20
  nsh_link 2 7000 7000 30
  nsh_bg v /usr/bin/python3 tests/camera/rtsp_camera.py --port 8654 --size 1280x720 --kbps 4000 \
    --sub-kbps 200 --pattern snow
  NSH_LIVE=1 NSH_CAMERA_URL="rtsp://127.0.0.1:8654/cam" NSH_SUBSTREAM_URL="$sub" \
    nsh_canopy_configs 2
  nsh_start_canopy 2 >&2
  BASE=http://10.200.100.1:8088/live/gw/cam
  nsh_wait_playlist "$BASE/program/stream.m3u8"
}

# waits (up to 10 s) until N uplinks of the gateway carry traffic
nsh_wait_uplinks() {
  local n=$1 up
  for _ in $(seq 100); do
    # the gateway may not listen yet (it opens its bids journal first): curl fails, no exit
    up=$({ nsh_exec v curl -s http://127.0.0.1:9102/metrics 2>/dev/null || true; } \
      | awk '/^canopy_gateway_link_state/ && $2 == 3 {n++} END {print n + 0}')
    [ "$up" -ge "$n" ] && return 0
    sleep 0.1
  done
  echo "uplinks did not all come up" >&2
  nsh_exec v curl -s http://127.0.0.1:9102/metrics | grep link_state >&2 || true
  return 1
}

# nsh_busiest_uplink: the uplink (1 cellular, 2 wifi, 3 satellite, as nsh_canopy_configs
# names them) that carried the most live media (class stream, up) over the next 2 s
nsh_busiest_uplink() {
  local a b
  a=$({ nsh_exec v curl -s http://127.0.0.1:9102/metrics || true; } | awk -F'[{}" ]+' '/^canopy_gateway_link_bytes_total\{link="[a-z]+",class="stream",direction="up"\}/ {print $3, $NF}')
  sleep 2
  b=$({ nsh_exec v curl -s http://127.0.0.1:9102/metrics || true; } | awk -F'[{}" ]+' '/^canopy_gateway_link_bytes_total\{link="[a-z]+",class="stream",direction="up"\}/ {print $3, $NF}')
  python3 - "$a" "$b" <<'PY'
import sys
before = dict(l.split() for l in sys.argv[1].splitlines() if l.strip())
after = dict(l.split() for l in sys.argv[2].splitlines() if l.strip())
names = ["cellular", "wifi", "satellite"]
moved = [float(after.get(n, 0)) - float(before.get(n, 0)) for n in names]
print(moved.index(max(moved)) + 1)
PY
}

# Linux MPTCP in venue and relay: the in-kernel path manager adds one subflow on each of
# uplinks 2 and 3 to a connection made over uplink 1
nsh_mptcp_setup() {
  for ns in v r; do nsh_exec $ns ip mptcp limits set subflow 4 add_addr_accepted 4; done
  nsh_exec v ip mptcp endpoint add 10.200.2.1 dev v2 subflow
  nsh_exec v ip mptcp endpoint add 10.200.3.1 dev v3 subflow
}

# nsh_browser_setup: a namespace for headless Chromium whose only interface is lo (b), and
# the relay's viewer port (10.200.100.1:8088) bridged into it at 127.0.0.1:8088 through a
# unix socket (tests/browser/bridge.mjs, one bridge in each namespace). Sets BROWSER_BASE
# (the stream as the browser sees it). Needs the browser group of tests/deps.sh.
nsh_browser_setup() {
  local sock="$NSH_DIR/viewer.sock"
  ip netns add "${NSH_P}b"
  ip -n "${NSH_P}b" link set lo up
  nsh_bg r node tests/browser/bridge.mjs --listen "unix:$sock" --to tcp:10.200.100.1:8088
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  nsh_bg b node tests/browser/bridge.mjs --listen tcp:127.0.0.1:8088 --to "unix:$sock"
  for _ in $(seq 50); do
    nsh_exec b curl -s -m 2 -o /dev/null http://127.0.0.1:8088/ 2>/dev/null && break
    sleep 0.1
  done
  BROWSER_BASE=http://127.0.0.1:8088/live/gw/cam
}

nsh_cleanup() {
  local rc=$? left
  for p in "${NSH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # whatever else runs in the browser's namespace (Chromium's children) was started here
  left=$(ip netns pids "${NSH_P}b" 2>/dev/null || true)
  # shellcheck disable=SC2086
  [ -z "$left" ] || { kill $left 2>/dev/null || true; sleep 0.5; kill -9 $left 2>/dev/null || true; }
  wait 2>/dev/null || true
  for ns in v w r b; do ip netns del "${NSH_P}$ns" 2>/dev/null || true; done
  if [ "$rc" != 0 ] && [ -n "$NSH_DIR" ]; then
    echo "--- logs ($NSH_DIR) ---" >&2
    for f in "$NSH_DIR"/*.log; do echo "== $f" >&2; tail -20 "$f" >&2; done
  fi
  # NSH_KEEP=DIR keeps the logs of a run for a closer look
  if [ -n "${NSH_KEEP:-}" ] && [ -n "$NSH_DIR" ]; then rm -rf "$NSH_KEEP"; cp -r "$NSH_DIR" "$NSH_KEEP"; fi
  [ -n "$NSH_DIR" ] && rm -rf "$NSH_DIR"
  exit "$rc"
}
