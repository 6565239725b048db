#!/usr/bin/env bash
# The Grafana dashboard (configs/grafana/canopy.json) against the code, with a real
# Prometheus (Debian's) scraping a running `canopy demo`, both inside a loopback-only
# network namespace made for this run (root):
#  1. the dashboard parses, and every metric its expressions name is in the README
#  2. every metric its expressions name is in the demo's /metrics output
#  3. every panel's every query returns data (a finite value) from Prometheus
# Prints "grafana: N passed, M failed" last and exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

DASH=configs/grafana/canopy.json
TALLY="grafana"
BIN=${CANOPY_BIN:-target/release/canopy}
BIN=$(realpath "$BIN" 2>/dev/null || echo "$BIN")
source tests/live/lib/loopns.sh

# the expressions, one per line: "panel title<TAB>expr"
exprs=$(/usr/bin/python3 - "$DASH" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
known = {"__rate_interval"} | {v["name"] for v in d.get("templating", {}).get("list", [])}
for p in d["panels"]:
    for t in p.get("targets", []):
        unknown = set(re.findall(r"\$\{?(\w+)", t["expr"])) - known
        if unknown:
            sys.exit(f'panel {p["title"]}: no such variable: {sorted(unknown)}')
        print(f'{p["title"]}\t{t["expr"]}')
# a variable's label_values(metric, label) is asked as the query it stands for
for v in d.get("templating", {}).get("list", []):
    if v.get("type") != "query":
        continue
    m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", v["definition"])
    if not m:
        sys.exit(f'variable {v["name"]}: not label_values(metric, label)')
    print(f'variable {v["name"]}\tcount by ({m[2]}) ({m[1]})')
PY
) || { bad "$DASH does not parse, or names a variable it does not define"; finish; }
[ -n "$exprs" ] || { bad "$DASH has no queries"; finish; }
names=$(echo "$exprs" | cut -f2 | grep -o 'canopy_[a-z0-9_]*' | sort -u)
undocumented=""
for n in $names; do
  base=$(echo "$n" | sed -E 's/_(bucket|sum|count)$//')
  grep -qE "${base}([^a-z0-9_]|\$)" README.md || undocumented+=" $n"
done
if [ -z "$undocumented" ]; then
  ok "the dashboard parses; its $(echo "$names" | wc -l) metrics are named in the README"
else
  bad "metrics the dashboard uses but the README does not name:$undocumented"
fi

if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED the Prometheus part of tests/live/grafana.sh: needs root (a network namespace)"
  finish
fi
source tests/deps.sh
deps_ensure prometheus || exit 1
command -v ip >/dev/null 2>&1 || deps_ensure netns || exit 1
need_bin
loopns_start grafana || { bad "cannot create a network namespace"; finish; }

METRICS=127.0.0.1:19391
PROM=127.0.0.1:19090
(RUST_LOG=warn nsx "$BIN" demo --duration 150 --metrics "$METRICS" >"$work/demo.log" 2>&1) &
pids+=("$!")
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: canopy
    static_configs:
      - targets: ["$METRICS"]
EOF
nsx prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="$PROM" >"$work/prometheus.log" 2>&1 &
pids+=("$!")

# every series appears once what it counts has happened (a bid, a cache miss, a resend at
# the cut, 72 s in): up to 100 s
exported=""
for _ in $(seq 200); do
  exported=$(nsx curl -s --max-time 2 "http://$METRICS/metrics")
  missing=""
  for n in $names; do
    echo "$exported" | grep -q "^$n[{ ]" || missing+=" $n"
  done
  [ -n "$exported" ] && [ -z "$missing" ] && break
  sleep 0.5
done
if [ -n "$exported" ] && [ -z "$missing" ]; then
  ok "every metric the dashboard names is exported by the running demo"
else
  bad "not exported by the demo:${missing:- (no /metrics at all)}"
  tail -5 "$work/demo.log"
fi

# each query until it answers a finite value (rates need a few scrapes)
query() { # EXPR -> the number of finite values in Prometheus's answer
  # Grafana's $__rate_interval is at least four scrapes: 1m is plenty at 1 s; the gateway
  # variable's "All" is .*
  local q=${1//\$__rate_interval/1m}
  q=${q//\$gateway/.*}
  nsx curl -s --max-time 5 "http://$PROM/api/v1/query" --data-urlencode "query=$q" |
    /usr/bin/python3 -c '
import json, math, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
except Exception:
    print(0); sys.exit()
print(sum(1 for s in r if math.isfinite(float(s["value"][1]))))'
}
pending="$exprs"
for _ in $(seq 20); do
  left=""
  while IFS=$'\t' read -r title expr; do
    [ -z "$expr" ] && continue
    [ "$(query "$expr")" -gt 0 ] || left+="$title"$'\t'"$expr"$'\n'
  done <<<"$pending"
  pending="$left"
  [ -z "$pending" ] && break
  sleep 2
done
total=$(echo "$exprs" | wc -l)
if [ -z "$pending" ]; then
  ok "Prometheus answers every one of the dashboard's $total queries with data"
else
  while IFS=$'\t' read -r title expr; do
    [ -n "$expr" ] && bad "no data for panel '$title': $expr"
  done <<<"$pending"
  tail -5 "$work/prometheus.log"
fi
finish
