#!/usr/bin/env bash
# The bonding bench's scenario (root): uplinks of 20/5/2 Mbit/s with 25/8/20 ms one way.
# PARALLEL bulk uploads through the bonded tunnel for SECONDS (after a warm-up), then, over
# the same namespaces and links, Linux MPTCP (in-kernel path manager, one subflow per link)
# with as many connections. Prints one JSON object.
# usage: benches/netns/bonding.sh SECONDS PARALLEL
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
DUR=${1:-20}
PAR=${2:-8}
WARM=5
T=benches/netns/tools.py

nsh_setup "bb$$"
nsh_link 1 20000 20000 25
nsh_link 2 5000 5000 8
nsh_link 3 2000 2000 20
nsh_canopy_configs 3
nsh_start_canopy 3 >&2

# Canopy: uploads through the gateway's proxy, delivered bytes counted at the origin
nsh_exec r python3 $T sample http://10.200.100.1:8080/stats $((WARM + DUR + 1)) 100 > "$NSH_DIR/canopy.json" &
sampler=$!
t0=$(date +%s.%N)
nsh_exec v python3 $T upload http://127.0.0.1:3128 http://10.200.100.1:8080 $((WARM + DUR)) "$PAR" 1000000 > "$NSH_DIR/up.json"
wait $sampler
canopy=$(python3 $T goodput "$NSH_DIR/canopy.json" "$t0" "$WARM" "$DUR")
links=$(nsh_exec v curl -s http://127.0.0.1:9102/metrics | awk '/^canopy_gateway_link_bytes_total/ && /class="bulk"/ && /direction="up"/ {print}' | tr '\n' ';')
pkill -f "canopy gateway --config $NSH_DIR/gateway.toml" || true
sleep 1

# Linux MPTCP over the same links
nsh_mptcp_setup
nsh_exec r python3 $T mptcp-server 10.200.100.1 5201 $((WARM + DUR + 2)) 100 > "$NSH_DIR/mptcp.json" &
server=$!
sleep 0.5
t1=$(date +%s.%N)
nsh_exec v python3 $T mptcp-client 10.200.100.1 5201 $((WARM + DUR)) "$PAR" >/dev/null
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
    "uploads_ok": up["ok"],
    "uploads_failed": up["failed"],
    "upload_errors": up["errors"][:3],
    "per_link": sys.argv[4],
}))
PY
