#!/usr/bin/env bash
# The bonding bench's scenario (root): uplinks of 20/5/2 Mbit/s with 25/8/20 ms one way.
# PARALLEL bulk uploads (DIRECTION up) or downloads (down) through the bonded tunnel for
# SECONDS (after a warm-up), then, over the same namespaces and links, Linux MPTCP
# (in-kernel path manager, one subflow per link) with as many connections the same way.
# A download is one transfer for the whole run (1 GB asked for); with PARALLEL 1 an upload
# is one 90 MB upload, else 1 MB uploads back to back. Prints one JSON object.
# usage: benches/netns/bonding.sh SECONDS PARALLEL [up|down]
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
DUR=${1:-20}
PAR=${2:-8}
DIR=${3:-up}
WARM=5
T=benches/netns/tools.py

nsh_setup "bb$$"
nsh_link 1 20000 20000 25
nsh_link 2 5000 5000 8
nsh_link 3 2000 2000 20
nsh_canopy_configs 3
nsh_start_canopy 3 >&2

if [ "$DIR" = down ]; then
  # Canopy: downloads through the gateway's proxy, bytes counted as the device gets them
  t0=$(date +%s.%N)
  nsh_exec v python3 $T download http://127.0.0.1:3128 http://10.200.100.1:8080 $((WARM + DUR)) "$PAR" 1000000000 100 > "$NSH_DIR/canopy.json"
  cp "$NSH_DIR/canopy.json" "$NSH_DIR/up.json"
else
  # Canopy: uploads through the gateway's proxy, delivered bytes counted at the origin
  nsh_exec r python3 $T sample http://10.200.100.1:8080/stats $((WARM + DUR + 1)) 100 > "$NSH_DIR/canopy.json" &
  sampler=$!
  t0=$(date +%s.%N)
  # parallel transfers are 1 MB uploads back to back; one transfer alone is one upload
  # about as long as the run (90 MB)
  size=1000000
  [ "$PAR" = 1 ] && size=90000000
  nsh_exec v python3 $T upload http://127.0.0.1:3128 http://10.200.100.1:8080 $((WARM + DUR)) "$PAR" $size > "$NSH_DIR/up.json"
  wait $sampler
fi
canopy=$(python3 $T goodput "$NSH_DIR/canopy.json" "$t0" "$WARM" "$DUR")
links=$(nsh_exec v curl -s http://127.0.0.1:9102/metrics | awk -v d="direction=\"$DIR\"" '/^canopy_gateway_link_bytes_total/ && /class="bulk"/ && index($0, d) {print}' | tr '\n' ';')
pkill -f "canopy gateway --config $NSH_DIR/gateway.toml" || true
sleep 1

# Linux MPTCP over the same links
nsh_mptcp_setup
if [ "$DIR" = down ]; then
  nsh_exec r python3 $T mptcp-source 10.200.100.1 5201 $((WARM + DUR + 2)) >/dev/null &
  server=$!
  sleep 0.5
  t1=$(date +%s.%N)
  nsh_exec v python3 $T mptcp-sink 10.200.100.1 5201 $((WARM + DUR)) "$PAR" 100 > "$NSH_DIR/mptcp.json"
else
  nsh_exec r python3 $T mptcp-server 10.200.100.1 5201 $((WARM + DUR + 2)) 100 > "$NSH_DIR/mptcp.json" &
  server=$!
  sleep 0.5
  t1=$(date +%s.%N)
  nsh_exec v python3 $T mptcp-client 10.200.100.1 5201 $((WARM + DUR)) "$PAR" >/dev/null
fi
subflows=$(nsh_exec v ss -Mni 2>/dev/null | grep -c "subflows" || true)
wait $server
mptcp=$(python3 $T goodput "$NSH_DIR/mptcp.json" "$t1" "$WARM" "$DUR")

python3 - "$canopy" "$mptcp" "$(cat "$NSH_DIR/up.json")" "$links" <<'PY'
import json, sys
c = json.loads(sys.argv[1])["mbps"]
m = json.loads(sys.argv[2])["mbps"]
up = json.loads(sys.argv[3])
nominal = 27.0
print(json.dumps({
    "nominal_mbps": nominal,
    "goodput_mbps": round(c, 2),
    "efficiency": round(c / nominal, 3),
    "mptcp_goodput_mbps": round(m, 2),
    "mptcp_efficiency": round(m / nominal, 3),
    "ratio_vs_mptcp": round(c / m, 3) if m > 0 else None,
    "transfers_ok": up["ok"],
    "transfers_failed": up["failed"],
    "transfer_errors": up["errors"][:3],
    "per_link": sys.argv[4],
}))
PY
