#!/usr/bin/env bash
# A venue site over HTTPS at the gateway, in a real browser that trusts the event CA as an
# enrolled venue device would: `canopy certs init --site`, an origin, a relay and a gateway
# answering the site on its HTTPS listener, and headless Chromium (tests/browser/
# https_site.mjs), all inside a loopback-only network namespace made for this run (root).
#  1. Chromium with the event CA imported into its NSS trust store loads the page (200,
#     the certificate issued by the event CA) and an asset the gateway had cached answers
#     from the edge cache (Cache-Status: canopy; hit)
#  2. the same Chromium without the CA refuses the site (ERR_CERT_AUTHORITY_INVALID): the
#     trust in 1 came from the CA, nothing else
# Artifacts (screenshot, JSON): target/test-artifacts/https-site-*.
# Prints "https site: N passed, M failed" last and exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

TALLY="https site"
source tests/live/lib/browser_test.sh

SITE=secure.canopy.test

loopns_start https-site || { bad "cannot create a network namespace"; finish; }

# the event's certificates: CA, relay, gateway, and the site's
if ! "$BIN" certs init --event https-site --out "$work/certs" --site "$SITE" >"$work/certs.log" 2>&1; then
  bad "certs init"
  cat "$work/certs.log"
  finish
fi

# an origin, a relay and a gateway, on the namespace's loopback (its ports are all free)
nsx "$BIN" origin --listen 127.0.0.1:18080 >"$work/origin.log" 2>&1 &
pids+=("$!")
cat >"$work/relay.toml" <<EOF
[relay]
listen = "127.0.0.1:14433"
name = "test-relay"
[tls]
cert = "certs/relay.pem"
key = "certs/relay.key"
ca = "certs/ca.pem"
[egress]
allow = ["127.0.0.1:18080"]
EOF
cat >"$work/gateway.toml" <<EOF
[gateway]
name = "venue-gateway"
[relay]
addr = "127.0.0.1:14433"
server_name = "localhost"
bind = "127.0.0.1:0"
[tls]
cert = "certs/gateway.pem"
key = "certs/gateway.key"
ca = "certs/ca.pem"
[proxy]
listen = "127.0.0.1:13128"
https_listen = "127.0.0.1:18443"
[[sites]]
host = "$SITE"
origin = "http://127.0.0.1:18080"
tls = true
EOF
(cd "$work" && RUST_LOG=warn nsx "$BIN" relay --config relay.toml >"$work/relay.log" 2>&1) &
pids+=("$!")
(cd "$work" && RUST_LOG=warn nsx "$BIN" gateway --config gateway.toml >"$work/gateway.log" 2>&1) &
pids+=("$!")

# curl with the event CA: the site answers through the tunnel (and the asset is cached)
asset=/static/menu.css
ready=""
for _ in $(seq 150); do
  code=$(nsx curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$work/certs/ca.pem" \
    --resolve "$SITE:18443:127.0.0.1" "https://$SITE:18443$asset")
  [ "$code" = 200 ] && { ready=1; break; }
  sleep 0.2
done
if [ -z "$ready" ]; then
  bad "the site never answered 200 over HTTPS to curl --cacert ca.pem (last: $code)"
  tail -20 "$work/relay.log" "$work/gateway.log"
  finish
fi

# Chromium's trust store: an NSS database in its HOME, with the event CA trusted for TLS
trusting="$work/home-trusting"
plain="$work/home-plain"
mkdir -p "$trusting/.pki/nssdb" "$plain/.pki/nssdb"
certutil -N -d "sql:$trusting/.pki/nssdb" --empty-password &&
  certutil -A -d "sql:$trusting/.pki/nssdb" -n "canopy event CA" -t "C,," -i "$work/certs/ca.pem" &&
  certutil -N -d "sql:$plain/.pki/nssdb" --empty-password ||
  { bad "certutil could not make the NSS databases"; finish; }

browse() { # HOME EXPECT NAME
  nsx node tests/browser/https_site.mjs --url "https://$SITE:18443/static/menu.html" \
    --asset "$asset" --host "$SITE" --home "$1" --expect "$2" \
    --screenshot "$ART/https-site-$3.png" --json "$ART/https-site-$3.json"
}

# 1. trusted
if out=$(browse "$trusting" trusted trusted); then
  echo "  $out"
  issuer=$(node -e 'const j = require(process.argv[1]); console.log(j.security ? j.security.issuer : "")' "$(realpath "$ART/https-site-trusted.json")")
  hit=$(node -e 'const j = require(process.argv[1]); console.log(j.asset ? j.asset.cache_status : "")' "$(realpath "$ART/https-site-trusted.json")")
  ca_cn="Canopy event CA https-site"
  if [ "$issuer" = "$ca_cn" ]; then
    ok "Chromium trusting the event CA loads https://$SITE (issuer: $issuer)"
  else
    bad "the page's certificate issuer is '$issuer', the event CA is '$ca_cn'"
  fi
  case "$hit" in
    "canopy; hit"*) ok "the cached asset came from the gateway's edge cache over HTTPS ($hit)" ;;
    *) bad "the cached asset's Cache-Status is '$hit'" ;;
  esac
else
  echo "  $out"
  bad "Chromium trusting the event CA did not load the site"
  tail -20 "$work/gateway.log"
fi

# 2. the control: without the CA, Chromium refuses
if out=$(browse "$plain" untrusted untrusted); then
  echo "  $out"
  ok "Chromium without the event CA refuses the site (ERR_CERT_AUTHORITY_INVALID)"
else
  echo "  $out"
  bad "Chromium without the event CA did not refuse the site as it should"
fi
finish
