#!/usr/bin/env bash
# Applies a Canopy link profile (configs/links/NAME.toml) to a real interface with tc netem,
# for rehearsing on an appliance whose kernel has netem (sch_netem): the same rate, latency,
# jitter, loss and queue as the link emulator uses. Egress only ("up": the venue's direction
# when run on the gateway box; run it on the far side with --down for the other direction).
#
# usage: configs/links/apply-netem.sh IFACE PROFILE.toml [--down]   apply
#        configs/links/apply-netem.sh IFACE --clear                  remove
#        configs/links/apply-netem.sh IFACE PROFILE.toml --print     print the tc command only
set -euo pipefail
dev=${1:?interface}
prof=${2:?profile file or --clear}
if [ "$prof" = --clear ]; then
  tc qdisc del dev "$dev" root 2>/dev/null || true
  exit 0
fi
dir=up
mode=apply
for a in "${@:3}"; do
  case "$a" in
    --down) dir=down ;;
    --print) mode=print ;;
    *) echo "unknown option $a" >&2; exit 64 ;;
  esac
done
cmd=$(python3 - "$prof" "$dir" "$dev" <<'PY'
import sys, tomllib
prof, d, dev = sys.argv[1], sys.argv[2], sys.argv[3]
p = tomllib.load(open(prof, "rb")).get(d, {})
rate = int(p.get("rate_kbps", 0))
lat, jit = int(p.get("latency_ms", 0)), int(p.get("jitter_ms", 0))
corr = float(p.get("jitter_correlation", 0)) * 100
args = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay", f"{lat}ms"]
if jit:
    args += [f"{jit}ms", f"{corr:.0f}%", "distribution", "normal"]
b = p.get("burst_loss")
if b:
    # Gilbert-Elliott: p = good->bad, r = bad->good, 1-h = loss in bad, 1-k = loss in good
    pg = 100.0 / float(b["good_packets"])
    rb = 100.0 / float(b["bad_packets"])
    args += ["loss", "gemodel", f"{pg:.4f}%", f"{rb:.2f}%",
             f"{100 * float(b['loss_in_bad']):.1f}%",
             f"{100 * float(b.get('loss_in_good', 0)):.2f}%"]
elif float(p.get("loss_percent", 0)):
    args += ["loss", f"{float(p['loss_percent'])}%"]
if rate:
    args += ["rate", f"{rate}kbit"]
    # the drop-tail queue holds queue_ms at the link rate, in ~1500-byte packets
    q = int(p.get("queue_ms", 200))
    args += ["limit", str(max(10, rate * 1000 // 8 * q // 1000 // 1500 + int(lat * rate / 8 / 1500)))]
print(" ".join(args))
PY
)
if [ "$mode" = print ]; then
  echo "$cmd"
else
  $cmd
  echo "$dev: $cmd"
fi
