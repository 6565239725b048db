#!/usr/bin/env bash
# The low-bandwidth mode with a camera that has no second stream: the gateway makes its
# own low-rate rendition (the transcode level). See tests/netns/lowbw.sh.
LOWBW_CAMERA=transcode exec bash "$(dirname "$0")/lowbw.sh"
