# A loopback-only network namespace for a browser test: Chromium and the servers it loads
# share it, and nothing in it reaches beyond lo. Set TALLY (the summary line's name) and
# BIN, source it, then:
#   ok MSG / bad MSG   count a check; finish prints "$TALLY: N passed, M failed" and exits
#   need_bin           waits for $BIN (it may be being rebuilt), or fails
#   loopns_start TAG   makes $NS (lo up) and $work (a temporary folder), and sets the
#                      EXIT trap that kills what is in $pids and in the namespace, deletes
#                      the namespace and $work; returns non-zero when it cannot
#   nsx CMD...         runs CMD in the namespace
# Add the PIDs of background jobs to the array `pids`.

pids=()
pass=0
fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
finish() {
  echo "$TALLY: $pass passed, $fail failed"
  [ "$fail" = 0 ]
  exit
}

need_bin() {
  for _ in $(seq 120); do [ -x "$BIN" ] && return 0; sleep 5; done
  bad "no canopy binary at $BIN (build it: cargo build --release, or set CANOPY_BIN)"
  finish
}

loopns_cleanup() {
  local p left
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  # anything else still in the namespace (Chromium's children) was started by this test
  if ip netns list 2>/dev/null | grep -qw "$NS"; then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      left=$(ip netns pids "$NS" 2>/dev/null)
      [ -z "$left" ] && break
      # shellcheck disable=SC2086
      kill $left 2>/dev/null
      sleep 0.3
    done
    left=$(ip netns pids "$NS" 2>/dev/null)
    # shellcheck disable=SC2086
    [ -z "$left" ] || kill -9 $left 2>/dev/null
    ip netns del "$NS" 2>/dev/null
  fi
  wait 2>/dev/null
  rm -rf "$work"
}

loopns_start() {
  work=$(mktemp -d "/tmp/canopy-$1.XXXXXX")
  NS="canopy-$1-$$-$RANDOM"
  trap loopns_cleanup EXIT
  trap 'exit 130' INT TERM
  ip netns add "$NS" || return 1
  ip -n "$NS" link set lo up
}

nsx() { ip netns exec "$NS" "$@"; }
