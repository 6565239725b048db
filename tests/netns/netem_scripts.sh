#!/usr/bin/env bash
# configs/links/apply-netem.sh turns every shipped link profile into a tc netem command. Here
# each command is built, and applied to a veth in a scratch namespace where the kernel has
# netem (this one may not: then only the generated commands are checked).
cd "$(dirname "$0")/../.."
set -euo pipefail
ns="cnm$$"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns add "$ns"
ip -n "$ns" link add cnma type veth peer name cnmb
ip -n "$ns" link set cnma up
n=0
have_netem=1
for p in configs/links/*.toml; do
  cmd=$(bash configs/links/apply-netem.sh cnma "$p" --print)
  case "$cmd" in
    "tc qdisc replace dev cnma root netem delay "*) ;;
    *) echo "bad command for $p: $cmd" >&2; exit 1 ;;
  esac
  if [ "$have_netem" = 1 ] && ip netns exec "$ns" bash configs/links/apply-netem.sh cnma "$p" >/dev/null 2>&1; then
    ip netns exec "$ns" tc qdisc show dev cnma | grep -q netem || { echo "netem not applied for $p" >&2; exit 1; }
  else
    have_netem=0
  fi
  n=$((n + 1))
done
if [ "$have_netem" = 1 ]; then
  echo "applied $n profiles with netem"
else
  echo "netem is not in this kernel: checked the $n generated commands only"
fi
echo "netns netem scripts: 1 passed"
