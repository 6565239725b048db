#!/usr/bin/env bash
# Bonding end to end, in network namespaces (root): three uplinks of 20/5/2 Mbit/s with
# 25/8/20 ms one way, the real `canopy relay` and `canopy gateway`.
#  1. the busiest uplink loses its carrier mid-transfer: no download, bid or upload fails
#  2. large POST uploads are striped over every uplink, arrive whole and in order, and
#     survive the loss of the busiest uplink (a POST cannot be sent again whole)
#  3. every uplink down: requests fail fast with 503 and a reason
#  4. a daily data cap stops bulk traffic on its uplink
cd "$(dirname "$0")/../.."
source tests/netns/lib/harness.sh

nsh_setup "cb$$"
nsh_link 1 20000 20000 25
nsh_link 2 5000 5000 8
nsh_link 3 2000 2000 20
nsh_canopy_configs 3
nsh_start_canopy 3

metric() { # metric NAME_AND_LABELS: the value on the gateway's /metrics
  # awk reads to the end: leaving early would cut curl off (SIGPIPE) and, with pipefail,
  # fail the caller for no reason
  nsh_exec v curl -s http://127.0.0.1:9102/metrics |
    awk -v m="$1" 'index($0, m) == 1 && !seen {v = $2; seen = 1} END {if (seen) print v}'
}

echo "1. carrier of uplink 1 (the busiest) goes down at 3 s for 4 s, during the transfers"
nsh_exec v python3 tests/netns/lib/load.py http://127.0.0.1:3128 http://10.200.100.1:8080 10 \
  > "$NSH_DIR/load1.json" &
load=$!
sleep 3
nsh_carrier 1 down
sleep 4
nsh_carrier 1 up
wait "$load"
cat "$NSH_DIR/load1.json"
python3 - "$NSH_DIR/load1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = [k for k in ("downloads_failed", "bids_failed", "uploads_failed") if r[k]]
assert not bad, f"requests failed across the cut: {bad}: {r['errors']}"
# a bid every 100 ms after the last answer: about 55 in 10 s; none held up near a second
assert r["downloads_ok"] >= 3 and r["bids_ok"] >= 40 and r["uploads_ok"] >= 3, r
assert r["bid_max_ms"] < 1000, f"a bid took {r['bid_max_ms']} ms across the cut"
print(f"ok: {r['downloads_ok']} downloads, {r['bids_ok']} bids (slowest {r['bid_max_ms']} ms), "
      f"{r['uploads_ok']} uploads, none failed")
PY
resends=$(metric 'canopy_gateway_resends_total' || true)
resumes=$(metric 'canopy_gateway_resumes_total' || true)
echo "resends ${resends:-0}, resumes ${resumes:-0}"
demoted=$(metric 'canopy_gateway_link_demotions_total{link="cellular"}')
[ "${demoted:-0}" -ge 1 ] || { echo "uplink 1 was never demoted" >&2; exit 1; }

echo "2. three 6 MB POST uploads, striped; uplink 1 loses its carrier during the second"
bulk_up() { # bulk bytes each uplink carried towards the relay
  local l v
  for l in cellular wifi satellite; do
    v=$(metric "canopy_gateway_link_bytes_total{link=\"$l\",class=\"bulk\",direction=\"up\"}")
    echo -n "${v:-0} "
  done
}
up_before=$(bulk_up)
nsh_exec v python3 - http://127.0.0.1:3128 http://10.200.100.1:8080/digest > "$NSH_DIR/striped.json" <<'PY' &
import hashlib, json, os, sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": sys.argv[1]}))
out = []
for i in range(3):
    body = os.urandom(6_000_000)
    t = time.time()
    try:
        with opener.open(urllib.request.Request(sys.argv[2], data=body, method="POST"), timeout=60) as r:
            got = r.read().decode().split()
            ok = r.status == 200 and got == [str(len(body)), hashlib.sha256(body).hexdigest()]
            out.append({"ok": ok, "status": r.status, "secs": round(time.time() - t, 2), "got": got[:1]})
    except Exception as e:
        out.append({"ok": False, "error": repr(e), "reason": getattr(e, "headers", {}).get("canopy-reason") if hasattr(e, "headers") else None})
print(json.dumps(out))
PY
load=$!
sleep 2.5
nsh_carrier 1 down
sleep 2
nsh_carrier 1 up
wait "$load"
cat "$NSH_DIR/striped.json"
up_after=$(bulk_up)
python3 - "$NSH_DIR/striped.json" "$up_before" "$up_after" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert len(r) == 3 and all(x["ok"] for x in r), f"a striped POST failed or arrived damaged: {r}"
before = [float(x) for x in sys.argv[2].split()]
after = [float(x) for x in sys.argv[3].split()]
moved = [a - b for a, b in zip(after, before)]
# each uplink carried a share of the 18 MB: the slowest (2 Mbit/s) at least 0.5 MB
assert len(moved) == 3 and all(m >= 500_000 for m in moved), f"not striped over every uplink: {moved}"
print(f"ok: 3 POSTs of 6 MB arrived whole ({', '.join(str(x['secs']) + ' s' for x in r)}); "
      f"uplinks carried {', '.join(f'{m / 1e6:.1f}' for m in moved)} MB")
PY

echo "3. every uplink down: a fast answer with a reason (a GET not cached: 504; a POST: 503)"
for i in 1 2 3; do nsh_carrier "$i" down; done
sleep 1.5
for kind in get post; do
  args=(); want=504
  [ "$kind" = post ] && { args=(--data x=1); want=503; }
  start=$(date +%s%N)
  nsh_exec v curl -s -o /dev/null -D "$NSH_DIR/h-$kind" -x http://127.0.0.1:3128 \
    --max-time 10 "${args[@]}" http://10.200.100.1:8080/assets/1000 || true
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  cat "$NSH_DIR/h-$kind"
  grep -q "^HTTP/1.1 $want" "$NSH_DIR/h-$kind" || { echo "$kind: expected $want" >&2; exit 1; }
  grep -qi "^canopy-reason: no uplink" "$NSH_DIR/h-$kind" || { echo "$kind: expected a reason" >&2; exit 1; }
  [ "$ms" -lt 1000 ] || { echo "$kind: $want took $ms ms" >&2; exit 1; }
  echo "ok: $kind $want in $ms ms"
done
for i in 1 2 3; do nsh_carrier "$i" up; done

echo "4. a 2 MB daily cap on uplink 2 stops its bulk traffic"
pkill -f "canopy gateway --config $NSH_DIR/gateway.toml" || true
sleep 0.5
NSH_CAP_LINK=2 NSH_CAP_BYTES=2000000 nsh_canopy_configs 3
nsh_bg v "$CANOPY" gateway --config "$NSH_DIR/gateway.toml"
nsh_wait_uplinks 3
nsh_exec v python3 tests/netns/lib/load.py http://127.0.0.1:3128 http://10.200.100.1:8080 8 6 262144 \
  > "$NSH_DIR/load3.json"
cat "$NSH_DIR/load3.json"
used=$(metric 'canopy_gateway_link_cap_used_bytes{link="wifi"}')
bulk=$(metric 'canopy_gateway_link_bytes_total{link="wifi",class="bulk",direction="down"}')
other=$(metric 'canopy_gateway_link_bytes_total{link="cellular",class="bulk",direction="down"}')
echo "wifi: cap used ${used:-0}, bulk down ${bulk:-0}; cellular bulk down ${other:-0}"
python3 - "${used:-0}" "${bulk:-0}" "${other:-0}" <<'PY'
import sys
used, bulk, other = (float(x) for x in sys.argv[1:])
assert used >= 2_000_000, f"the cap was never reached ({used} bytes)"
# what was in flight when the cap was reached may finish: six 256 KiB downloads at most
assert bulk <= 2_000_000 + 6 * 262144 + 512 * 1024, f"bulk went on over the cap: {bulk}"
assert other > 3 * bulk, f"the other uplinks did not take the traffic: {other} vs {bulk}"
print("ok: the cap stopped bulk traffic on uplink 2")
PY
echo "netns bonding: 4 passed"
