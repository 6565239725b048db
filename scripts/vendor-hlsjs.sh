#!/usr/bin/env bash
# Copies hls.js's light build, at the version tests/browser/package.json pins, into the
# gateway's status page (gateway/src/admin/page/vendor/), and prints its sha256 for the
# vendor README. npm installs it through tests/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
deps_ensure browser
src=tests/browser/node_modules/hls.js
dst=gateway/src/admin/page/vendor
cp "$src/dist/hls.light.min.js" "$dst/hls.light.min.js"
cp "$src/LICENSE" "$dst/hls.js.LICENSE"
echo "hls.js $(node -p "require('./$src/package.json').version")"
sha256sum "$dst/hls.light.min.js"
