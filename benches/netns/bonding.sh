#!/usr/bin/env bash
# The bonding bench's scenario (root): uplinks of 20/5/2 Mbit/s with 25/8/20 ms one way.
# One gateway is started and aged first: AGE seconds of mixed traffic (downloads, uploads
# and bids, then bids alone, then all again), so estimates that drift with uptime show.
# Then, on that same gateway, each run of RUNS (up16, up8, up1, down16, down8, down1: the
# direction and how many transfers at once) for SECONDS after a warm-up; then, over the
# same namespaces and links, Linux MPTCP (in-kernel path manager, one subflow per link)
# with as many connections, doing the same transfers (uploads back to back, each waiting
# for its answer, on connections kept open). A download is one transfer for the whole run
# (1 GB asked for); with 1 an upload is one upload as long as the run (3.6 MB a second of
# it: 162 MB for 40 s), else 1 MB uploads back to back.
# Prints one JSON object: {"gateway_aged_s", "gateway_age_at_end_s", "runs": {NAME: {...}}}.
# usage: benches/netns/bonding.sh SECONDS AGE RUNS
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh
DUR=${1:-40}
AGE=${2:-180}
RUNS=${3:-up16,up8,up1,down16,down8,down1}
WARM=5
T=benches/netns/tools.py
for run in ${RUNS//,/ }; do
  [[ $run =~ ^(up|down)[0-9]+$ ]] || { echo "bonding.sh: bad run name $run (up16, down1, ...)" >&2; exit 64; }
done
PROXY=http://127.0.0.1:3128
ORIGIN=http://10.200.100.1:8080

nsh_setup "bb$$"
nsh_link 1 20000 20000 25
nsh_link 2 5000 5000 8
nsh_link 3 2000 2000 20
nsh_canopy_configs 3
nsh_start_canopy 3 >&2
started=$(date +%s.%N)

# Age the gateway: a third busy both ways, a third with bids alone, a third busy again.
if [ "$AGE" -gt 0 ]; then
  third=$((AGE / 3))
  echo "ageing the gateway for $AGE s" >&2
  nsh_exec v python3 $T bids $PROXY $ORIGIN "$AGE" 200 >/dev/null &
  bidder=$!
  for phase in busy quiet busy; do
    if [ "$phase" = busy ]; then
      nsh_exec v python3 $T download $PROXY $ORIGIN "$third" 3 2000000 1000 >/dev/null &
      d=$!
      nsh_exec v python3 $T upload $PROXY $ORIGIN "$third" 2 1000000 >/dev/null &
      u=$!
      wait $d $u
    else
      sleep "$third"
    fi
  done
  wait $bidder
fi

# the gateway's bulk bytes per link in direction $1 (counters since it started)
link_bytes() {
  nsh_exec v curl -s http://127.0.0.1:9102/metrics | awk -v d="direction=\"$1\"" '/^canopy_gateway_link_bytes_total/ && /class="bulk"/ && index($0, d) {print}'
}

declare -A canopy links
for run in ${RUNS//,/ }; do
  dir=${run%%[0-9]*}
  par=${run#"$dir"}
  sleep 2
  link_bytes "$dir" > "$NSH_DIR/$run.links.before"
  echo "canopy $run (gateway up $(python3 -c "import time; print(round(time.time() - $started))") s)" >&2
  if [ "$dir" = down ]; then
    # downloads through the gateway's proxy, bytes counted as the device gets them
    t0=$(date +%s.%N)
    nsh_exec v python3 $T download $PROXY $ORIGIN $((WARM + DUR)) "$par" 1000000000 100 > "$NSH_DIR/$run.samples.json"
    cp "$NSH_DIR/$run.samples.json" "$NSH_DIR/$run.load.json"
  else
    # uploads through the gateway's proxy, delivered bytes counted at the origin
    nsh_exec r python3 $T sample $ORIGIN/stats $((WARM + DUR + 1)) 100 > "$NSH_DIR/$run.samples.json" &
    sampler=$!
    t0=$(date +%s.%N)
    # parallel transfers are 1 MB uploads back to back; one transfer alone is one upload
    # about as long as the run (3.6 MB a second: more than the links carry)
    size=1000000
    [ "$par" = 1 ] && size=$(((WARM + DUR) * 3600000))
    nsh_exec v python3 $T upload $PROXY $ORIGIN $((WARM + DUR)) "$par" $size > "$NSH_DIR/$run.load.json"
    wait $sampler
  fi
  canopy[$run]=$(python3 $T goodput "$NSH_DIR/$run.samples.json" "$t0" "$WARM" "$DUR")
  # the bulk bytes each link carried in this run: the counters' change
  link_bytes "$dir" > "$NSH_DIR/$run.links.after"
  links[$run]=$(python3 - "$NSH_DIR/$run.links.before" "$NSH_DIR/$run.links.after" <<'PY'
import sys
def read(p):
    out = {}
    for line in open(p):
        k, _, v = line.strip().rpartition(" ")
        if k:
            out[k] = float(v)
    return out
before, after = read(sys.argv[1]), read(sys.argv[2])
print(";".join(f"{k} {int(v - before.get(k, 0))}" for k, v in after.items()))
PY
)
done
age_at_end=$(python3 -c "import time; print(round(time.time() - $started))")
pkill -f "canopy gateway --config $NSH_DIR/gateway.toml" || true
sleep 1

# Linux MPTCP over the same links
nsh_mptcp_setup
declare -A mptcp mptcp_stream
for run in ${RUNS//,/ }; do
  dir=${run%%[0-9]*}
  par=${run#"$dir"}
  echo "mptcp $run" >&2
  if [ "$dir" = down ]; then
    nsh_exec r python3 $T mptcp-source 10.200.100.1 5201 $((WARM + DUR + 2)) >/dev/null &
    server=$!
    sleep 0.5
    t1=$(date +%s.%N)
    nsh_exec v python3 $T mptcp-sink 10.200.100.1 5201 $((WARM + DUR)) "$par" 100 > "$NSH_DIR/$run.mptcp.json"
  else
    # the same transfers as Canopy's: SIZE bytes, then the server's answer, then the next
    size=1000000
    [ "$par" = 1 ] && size=$(((WARM + DUR) * 3600000))
    nsh_exec r python3 $T mptcp-server 10.200.100.1 5201 $((WARM + DUR + 2)) 100 $size > "$NSH_DIR/$run.mptcp.json" &
    server=$!
    sleep 0.5
    t1=$(date +%s.%N)
    nsh_exec v python3 $T mptcp-client 10.200.100.1 5201 $((WARM + DUR)) "$par" $size >/dev/null
  fi
  wait $server
  mptcp[$run]=$(python3 $T goodput "$NSH_DIR/$run.mptcp.json" "$t1" "$WARM" "$DUR")
  sleep 1
  # for reference, parallel uploads as endless streams (no transfer ever ends, so none
  # waits for its answer or its slowest subflow): not what the devices do
  mptcp_stream[$run]='{"mbps": null}'
  if [ "$dir" = up ] && [ "$par" != 1 ]; then
    echo "mptcp $run, endless streams" >&2
    nsh_exec r python3 $T mptcp-server 10.200.100.1 5201 $((WARM + DUR + 2)) 100 > "$NSH_DIR/$run.mptcp-stream.json" &
    server=$!
    sleep 0.5
    t1=$(date +%s.%N)
    nsh_exec v python3 $T mptcp-client 10.200.100.1 5201 $((WARM + DUR)) "$par" >/dev/null
    wait $server
    mptcp_stream[$run]=$(python3 $T goodput "$NSH_DIR/$run.mptcp-stream.json" "$t1" "$WARM" "$DUR")
    sleep 1
  fi
done

{
  for run in ${RUNS//,/ }; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$run" "${canopy[$run]}" "${mptcp[$run]}" "${links[$run]}" "${mptcp_stream[$run]}"
  done
} > "$NSH_DIR/results.tsv"
python3 - "$NSH_DIR" "$AGE" "$age_at_end" <<'PY'
import json, sys
d, age, age_at_end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
nominal = 27.0
runs = {}
for line in open(f"{d}/results.tsv"):
    run, c, m, links, ms = line.rstrip("\n").split("\t")
    c = json.loads(c)["mbps"]
    m = json.loads(m)["mbps"]
    ms = json.loads(ms)["mbps"]
    load = json.load(open(f"{d}/{run}.load.json"))
    runs[run] = {
        "nominal_mbps": nominal,
        "goodput_mbps": round(c, 2),
        "efficiency": round(c / nominal, 3),
        "mptcp_goodput_mbps": round(m, 2),
        "mptcp_efficiency": round(m / nominal, 3),
        "ratio_vs_mptcp": round(c / m, 3) if m > 0 else None,
        "mptcp_stream_efficiency": round(ms / nominal, 3) if ms is not None else None,
        "transfers_ok": load["ok"],
        "transfers_failed": load["failed"],
        "transfer_errors": load["errors"][:3],
        "per_link": links,
    }
print(json.dumps({"gateway_aged_s": age, "gateway_age_at_end_s": age_at_end, "runs": runs}))
PY
