#!/usr/bin/env bash
# The gateway's status page in a real browser, against a running `canopy demo`, all inside
# a loopback-only network namespace made for this run (root): headless Chromium
# (tests/browser/status_page.mjs) opens the link the demo prints first, and
#  1. the page loads, its graphs update, the camera preview plays (currentTime advances)
#  2. the uplink the demo cuts shows as not usable on the page within 2 s of the cut
#  3. the purge, level and uplink buttons work with the token; without it the page asks
#     for one, a wrong one is refused, and the API answers 401
#  4. it fits a phone's width
# Artifacts (screenshots desktop, cut and phone; JSON; the demo's output):
# target/test-artifacts/status-page-*.
# Prints "status page: N passed, M failed" last and exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

TALLY="status page"
source tests/live/lib/browser_test.sh

loopns_start status-page || { bad "cannot create a network namespace"; finish; }

# the demo, each line of its output stamped with the wall time it was printed
demo_log="$ART/status-page-demo.log"
(RUST_LOG=warn nsx "$BIN" demo --duration 70 2>"$work/demo.err" |
  while IFS= read -r line; do printf '%s %s\n' "$(date +%s%3N)" "$line"; done >"$demo_log") &
pids+=("$!")

url=""
for _ in $(seq 300); do
  url=$(grep -o 'status page: http://[^ ]*' "$demo_log" 2>/dev/null | head -1 | cut -d' ' -f3)
  [ -n "$url" ] && break
  sleep 0.1
done
if [ -z "$url" ]; then
  bad "the demo printed no status page link"
  tail -20 "$demo_log" "$work/demo.err"
  finish
fi
first=$(head -1 "$demo_log" | cut -d' ' -f2-)
case "$first" in
  "status page: "*) ok "the demo prints the status page link first" ;;
  *) bad "the demo's first line is '$first', not the status page link" ;;
esac

json="$ART/status-page.json"
out=$(nsx node tests/browser/status_page.mjs --url "$url" --json "$json" --shots "$ART/status-page" \
  --demo-log "$demo_log")
echo "  $out"
tally_checks "$json" loads graphs_update preview_plays cut_shown_within_2s purge_button \
  level_override uplink_hold refused_without_token phone_fits no_script_errors
finish
