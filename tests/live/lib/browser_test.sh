# The start every browser test shares. Set TALLY (the summary line's name), then source
# this from the repository's root: without root it says SKIPPED and exits 0; it installs
# what a browser test needs from tests/deps.sh (the browser group: chromium, node,
# tests/browser/node_modules; ip), sets BIN (CANOPY_BIN, else target/release/canopy, made
# absolute) and ART (target/test-artifacts, made), sources loopns.sh and waits for BIN.

if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED $0: needs root (a loopback-only network namespace for Chromium)"
  echo "$TALLY: 0 passed, 0 failed"
  exit 0
fi
source tests/deps.sh
deps_ensure browser || exit 1
command -v ip >/dev/null 2>&1 || deps_ensure netns || exit 1

BIN=${CANOPY_BIN:-target/release/canopy}
BIN=$(realpath "$BIN" 2>/dev/null || echo "$BIN")
ART=target/test-artifacts
mkdir -p "$ART"

source tests/live/lib/loopns.sh
need_bin

# counts each named check of a page test's JSON report (tests/browser/checks.mjs runPage)
# as passed or failed, with its detail (and the run's error when it failed)
tally_checks() { # JSON CHECK...
  local json c
  json=$(realpath "$1")
  shift
  field() { node -e 'const j = require(process.argv[1]); const v = process.argv[2].split(".").reduce((a, k) => (a == null ? a : a[k]), j); console.log(v == null ? "" : JSON.stringify(v))' "$json" "$1"; }
  for c in "$@"; do
    if [ "$(field "checks.$c.ok")" = true ]; then
      ok "$c $(field "checks.$c.detail")"
    else
      bad "$c $(field "checks.$c.detail") $(field error)"
    fi
  done
}
