#!/usr/bin/env bash
# The failover bench's scenario (root): uplinks of 20/5/2 Mbit/s with 25/8/20 ms one way,
# steady bulk uploads plus a bid every 100 ms. At t=5 s the busiest uplink goes down, at
# t=15 s it returns; the run ends at t=25 s. KIND is `carrier` (the venue sees the carrier
# go: ip link set down on the wan side) or `blackhole` (packets silently dropped by the
# emulator bridge). Canopy first, then Linux MPTCP over the same links (bulk only).
# MODE `up1` replaces the uploads and bids with one 70 MB upload, `down1` with one
# download (1 GB asked for, read until the end): a single transfer across the cut.
# Prints one JSON object.
# usage: benches/netns/failover.sh carrier|blackhole [PARALLEL] [bulk|up1|down1]
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
KIND=${1:-carrier}
PAR=${2:-8}
MODE=${3:-bulk}
[ "$MODE" = bulk ] || PAR=1
T=benches/netns/tools.py
CUT=5
BACK=15
END=25

cut() { if [ "$KIND" = carrier ]; then nsh_carrier 1 down; else nsh_ctl 1 outage on >/dev/null; fi; }
restore() { if [ "$KIND" = carrier ]; then nsh_carrier 1 up; else nsh_ctl 1 outage off >/dev/null; fi; }

nsh_setup "bf$$"
nsh_link 1 20000 20000 25
nsh_link 2 5000 5000 8
nsh_link 3 2000 2000 20
nsh_canopy_configs 3
nsh_start_canopy 3 >&2

# Canopy
bids_file=""
if [ "$MODE" = down1 ]; then
  # bytes counted as the device gets them
  nsh_exec v python3 $T download http://127.0.0.1:3128 http://10.200.100.1:8080 $END 1 1000000000 20 > "$NSH_DIR/canopy.json" &
  waits=$!
  up_file="$NSH_DIR/canopy.json"
else
  # bytes counted as the origin gets them
  nsh_exec r python3 $T sample http://10.200.100.1:8080/stats $((END + 1)) 20 > "$NSH_DIR/canopy.json" &
  waits=$!
  size=1000000
  [ "$MODE" = up1 ] && size=70000000
  nsh_exec v python3 $T upload http://127.0.0.1:3128 http://10.200.100.1:8080 $END "$PAR" $size > "$NSH_DIR/up.json" &
  waits="$waits $!"
  up_file="$NSH_DIR/up.json"
  if [ "$MODE" = bulk ]; then
    nsh_exec v python3 $T bids http://127.0.0.1:3128 http://10.200.100.1:8080 $END 100 > "$NSH_DIR/bids.json" &
    waits="$waits $!"
    bids_file="$NSH_DIR/bids.json"
  fi
fi
sleep $CUT; tc_cut=$(python3 -c 'import time; print(time.time())'); cut
echo "CUT $tc_cut" >&2
sleep $((BACK - CUT)); tc_back=$(python3 -c 'import time; print(time.time())'); restore
# shellcheck disable=SC2086
wait $waits
canopy=$(python3 $T analyze "$NSH_DIR/canopy.json" "$tc_cut" "$tc_back" 7 27 $bids_file)
# redundancy cost: bids travel on two paths; the second copy's bytes over all bytes carried
extra=$(nsh_exec v curl -s http://127.0.0.1:9102/metrics | awk '
  /^canopy_gateway_bytes_total/ { total += $2; if ($0 ~ /class="bid"/) bid += $2 }
  END { if (total > 0) printf "%.5f", (bid / 2) / total; else print "null" }')
pkill -f "canopy gateway --config $NSH_DIR/gateway.toml" || true
sleep 1

# Linux MPTCP
nsh_mptcp_setup
if [ "$MODE" = down1 ]; then
  nsh_exec r python3 $T mptcp-source 10.200.100.1 5201 $((END + 2)) >/dev/null &
  server=$!
  sleep 0.5
  nsh_exec v python3 $T mptcp-sink 10.200.100.1 5201 $END 1 20 > "$NSH_DIR/mptcp.json" &
  client=$!
else
  nsh_exec r python3 $T mptcp-server 10.200.100.1 5201 $((END + 2)) 20 > "$NSH_DIR/mptcp.json" &
  server=$!
  sleep 0.5
  nsh_exec v python3 $T mptcp-client 10.200.100.1 5201 $END "$PAR" >/dev/null &
  client=$!
fi
sleep $CUT; tm_cut=$(python3 -c 'import time; print(time.time())'); cut
sleep $((BACK - CUT)); tm_back=$(python3 -c 'import time; print(time.time())'); restore
wait $client $server
mptcp=$(python3 $T analyze "$NSH_DIR/mptcp.json" "$tm_cut" "$tm_back" 7 27)

python3 - "$KIND" "$canopy" "$mptcp" "$up_file" "$extra" "$MODE" <<'PY'
import json, sys
kind, c, m, up = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.load(open(sys.argv[4]))
out = {"kind": kind, "mode": sys.argv[6], **c, "uploads_ok": up["ok"], "uploads_failed": up["failed"],
       "upload_errors": up["errors"][:3], "redundant_extra_ratio": json.loads(sys.argv[5])}
out.update({f"mptcp_{k}": v for k, v in m.items()})
print(json.dumps(out))
PY
