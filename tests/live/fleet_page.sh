#!/usr/bin/env bash
# The relay's fleet page in a real browser, inside a loopback-only network namespace made
# for this run (root): a relay, an origin and two gateways (`venue` and `door`, each with
# its own certificate) from the canopy binary, and headless Chromium
# (tests/browser/fleet_page.mjs) on the fleet page:
#  1. the page loads with its token and lists both gateways online, with their uplinks
#  2. `door` is killed (SIGKILL: no goodbye): its card shows offline within 5 s, `venue`'s
#     stays online
#  3. without the token the page asks for one, and the API answers 401
#  4. it fits a phone's width
# Artifacts (screenshots desktop, offline and phone; JSON): target/test-artifacts/fleet-page-*.
# Prints "fleet page: N passed, M failed" last and exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

TALLY="fleet page"
source tests/live/lib/browser_test.sh

loopns_start fleet-page || { bad "cannot create a network namespace"; finish; }

"$BIN" certs init --event fair --gateway venue --out "$work/certs" >/dev/null &&
  "$BIN" certs add --dir "$work/certs" --gateway door >/dev/null ||
  { bad "certificates"; finish; }

# the origin, its address from its first line
nsx "$BIN" origin --listen 127.0.0.1:0 >"$work/origin.out" 2>/dev/null &
pids+=("$!")
origin=""
for _ in $(seq 50); do
  origin=$(head -1 "$work/origin.out" 2>/dev/null | awk '{print $NF}')
  [ -n "$origin" ] && break
  sleep 0.1
done
[ -n "$origin" ] || { bad "the origin did not start"; finish; }

cat >"$work/relay.toml" <<TOML
[relay]
listen = "127.0.0.1:4433"
name = "fair-relay"
[tls]
cert = "certs/relay.pem"
key = "certs/relay.key"
ca = "certs/ca.pem"
[egress]
allow = ["$origin"]
[fleet]
listen = "127.0.0.1:9300"
token_file = "fleet.token"
TOML
gateway_toml() { # name proxy-port
  cat <<TOML
[gateway]
name = "$1"
[relay]
addr = "127.0.0.1:4433"
server_name = "localhost"
[tls]
cert = "certs/$1.pem"
key = "certs/$1.key"
ca = "certs/ca.pem"
[proxy]
listen = "127.0.0.1:$2"
[[uplinks]]
name = "cellular"
kind = "cellular"
bind = "127.0.0.1"
[[uplinks]]
name = "wifi"
kind = "wifi"
bind = "127.0.0.2"
TOML
}
gateway_toml venue 3128 >"$work/venue.toml"
gateway_toml door 3129 >"$work/door.toml"

RUST_LOG=warn nsx "$BIN" relay --config "$work/relay.toml" 2>"$work/relay.err" &
pids+=("$!")
for _ in $(seq 50); do [ -s "$work/fleet.token" ] && break; sleep 0.1; done
[ -s "$work/fleet.token" ] || { bad "the relay made no fleet token"; cat "$work/relay.err"; finish; }
RUST_LOG=warn nsx "$BIN" gateway --config "$work/venue.toml" 2>"$work/venue.err" &
pids+=("$!")
# not through nsx (a shell function: $! would be its subshell): ip and env exec, so $! is
# the gateway itself
ip netns exec "$NS" env RUST_LOG=warn "$BIN" gateway --config "$work/door.toml" 2>"$work/door.err" &
door=$!
pids+=("$door")

token=$(tr -d '\n' <"$work/fleet.token")
json="$ART/fleet-page.json"
# the page kills `door` itself (through this pipe) once both show online, so the time to
# offline is measured from the kill
fifo="$work/kill"
mkfifo "$fifo"
(read -r _ <"$fifo" && kill -9 "$door" && date +%s%3N >"$work/killed_at") &
pids+=("$!")
out=$(nsx node tests/browser/fleet_page.mjs --url "http://127.0.0.1:9300/#token=$token" \
  --json "$json" --shots "$ART/fleet-page" --kill "$fifo" --killed-at "$work/killed_at")
echo "  $out"
tally_checks "$json" loads both_online offline_within_5s other_stays_online refused_without_token \
  phone_fits no_script_errors
finish
