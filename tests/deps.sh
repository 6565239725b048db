# shellcheck shell=bash
# Everything Canopy's tests and benches need, in ONE list, and the code that checks and
# installs it. Source this file (tests/run.sh, tests/live/*.sh, tests/netns/lib/harness.sh
# and so tests/netns/*.sh and benches/netns/*.sh), then:
#
#   deps_ensure [GROUP...]   checks the entries of the groups (none: all); as root, installs
#                            what is missing (apt-get, pip, npm), checks again and fails
#                            naming whatever is still missing; not root: says what to
#                            install and fails. Quiet (one line) when all is present.
#   deps_list                prints the whole list: check, kind, package, groups.
#
# All messages go to stderr: benches print their JSON on stdout.

# --- the list ---------------------------------------------------------------------------
# kind:  cmd   a command on PATH (or in /usr/sbin, /sbin)                 Debian package
#        debpy a module that Debian's /usr/bin/python3 imports            Debian package
#        gir   a GObject typelib (version 1.0), seen through python3-gi   Debian package
#        gst   a GStreamer element, seen through python3-gi (Gst)          Debian package
#        ffenc an encoder ffmpeg has (the gateway's transcode level: libx264) Debian package
#        pip   NAME==VERSION installed for the `python3` on PATH (pyenv)   PyPI, pip install
#        npm   a package of tests/browser, at the version pinned in its    npm ci in
#              package.json (and package-lock.json)                        tests/browser
# groups: base (run.sh itself), camera (tests/live, the GStreamer test camera), netns
#        (network-namespace tests and benches), browser (hls.js in chromium), h3 (aioquic
#        as an HTTP/3 peer), nginx, nats (the relay's JetStream bid sink), prometheus (the
#        Grafana dashboard's queries against a running demo); `all` is every entry.
DEPS=(
  # kind  check                package                       groups
  "cmd    curl                 curl                          base camera netns"
  "cmd    python3              python3                       base camera netns h3"
  "cmd    /usr/bin/python3     python3                       camera netns"
  "cmd    ip                   iproute2                      netns"
  "cmd    tc                   iproute2                      netns"
  "cmd    ss                   iproute2                      netns"
  "cmd    ethtool              ethtool                       netns"
  "cmd    ffmpeg               ffmpeg                        camera"
  "cmd    ffprobe              ffmpeg                        camera"
  "ffenc  libx264              ffmpeg                        camera"
  "cmd    nginx                nginx                         nginx"
  "cmd    nats-server          nats-server                   nats"
  "cmd    prometheus           prometheus                    prometheus"
  "cmd    promtool             prometheus                    prometheus"
  "cmd    chromium             chromium                      browser"
  "cmd    node                 nodejs                        browser"
  "cmd    npm                  npm                           browser"
  "cmd    certutil             libnss3-tools                 browser"
  "debpy  gi                   python3-gi                    camera"
  "gir    Gst                  gir1.2-gstreamer-1.0          camera"
  "gir    GstRtspServer        gir1.2-gst-rtsp-server-1.0    camera"
  "gst    videotestsrc         gstreamer1.0-plugins-base     camera"
  "gst    audiotestsrc         gstreamer1.0-plugins-base     camera"
  "gst    videoconvert         gstreamer1.0-plugins-base     camera"
  "gst    audioconvert         gstreamer1.0-plugins-base     camera"
  "gst    timeoverlay          gstreamer1.0-x                camera"
  "gst    rtph264pay           gstreamer1.0-plugins-good     camera"
  "gst    rtph265pay           gstreamer1.0-plugins-good     camera"
  "gst    rtpmp4gpay           gstreamer1.0-plugins-good     camera"
  "gst    x264enc              gstreamer1.0-plugins-ugly     camera"
  "gst    x265enc              gstreamer1.0-plugins-bad      camera"
  "gst    avenc_aac            gstreamer1.0-libav            camera"
  "pip    aioquic==1.7.2       aioquic==1.7.2                h3"
  "npm    hls.js               tests/browser/package.json    browser"
  "npm    playwright-core      tests/browser/package.json    browser"
)
DEPS_GROUPS="base camera netns browser h3 nginx nats prometheus"

# --- the code ---------------------------------------------------------------------------
DEPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPS_BROWSER_DIR="$DEPS_DIR/browser"
_DEPS_APT_UPDATED=${_DEPS_APT_UPDATED:-}

# one Debian python3 run for every debpy, gir and gst entry; prints the missing ones' names
_DEPS_GI_PY='
import importlib, sys
items = [tuple(a.split(":", 1)) for a in sys.argv[1:]]
missing = set()
for kind, name in items:
    if kind == "debpy":
        try:
            importlib.import_module(name)
        except Exception:
            missing.add((kind, name))
try:
    import gi
except Exception:
    gi = None
for kind, name in items:
    if kind == "gir":
        try:
            gi.require_version(name, "1.0")
            importlib.import_module("gi.repository." + name)
        except Exception:
            missing.add((kind, name))
Gst = None
if any(kind == "gst" for kind, _ in items):
    try:
        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
        Gst.init(None)
    except Exception:
        Gst = None
for kind, name in items:
    if kind == "gst" and (Gst is None or Gst.ElementFactory.find(name) is None):
        missing.add((kind, name))
print("\n".join(name for kind, name in items if (kind, name) in missing))
'

_deps_msg() { echo "deps: $*" >&2; }

# _deps_field I FIELD: kind, check, package or groups of entry I
_deps_field() {
  local kind check pkg groups
  read -r kind check pkg groups <<<"${DEPS[$1]}"
  case $2 in kind) echo "$kind" ;; check) echo "$check" ;; package) echo "$pkg" ;; groups) echo "$groups" ;; esac
}

# _deps_select GROUP...: the indices of the groups' entries in _DEPS_SEL
_deps_select() {
  local g i kind check pkg groups
  _DEPS_SEL=()
  for g in "$@"; do
    if [ "$g" != all ] && [[ " $DEPS_GROUPS " != *" $g "* ]]; then
      _deps_msg "unknown group '$g' (groups: $DEPS_GROUPS all)"
      return 1
    fi
  done
  for i in "${!DEPS[@]}"; do
    read -r kind check pkg groups <<<"${DEPS[$i]}"
    for g in "$@"; do
      if [ "$g" = all ] || [[ " $groups " == *" $g "* ]]; then
        _DEPS_SEL+=("$i")
        break
      fi
    done
  done
}

_deps_have_cmd() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

_deps_have_ffenc() {
  # not grep -q: ffmpeg killed by SIGPIPE fails the pipe under pipefail
  command -v ffmpeg >/dev/null 2>&1 && ffmpeg -hide_banner -encoders 2>/dev/null | grep -w "$1" >/dev/null
}

# the version of npm package NAME pinned in tests/browser/package.json
_deps_npm_pin() {
  grep -F "\"$1\":" "$DEPS_BROWSER_DIR/package.json" 2>/dev/null | head -1 | sed 's/.*: *"\([^"]*\)".*/\1/'
}

_deps_npm_ok() {
  local want have
  want=$(_deps_npm_pin "$1")
  [ -n "$want" ] && [ -f "$DEPS_BROWSER_DIR/node_modules/$1/package.json" ] || return 1
  _deps_have_cmd node || return 1
  have=$(node -p 'require(process.argv[1]).version' "$DEPS_BROWSER_DIR/node_modules/$1/package.json" 2>/dev/null) || return 1
  [ "$have" = "$want" ]
}

_deps_pip_ok() {
  _deps_have_cmd python3 || return 1
  python3 - "${1%%==*}" "${1#*==}" 2>/dev/null <<'PY'
import importlib.metadata as m, sys
try:
    ok = m.version(sys.argv[1]) == sys.argv[2]
except Exception:
    ok = False
sys.exit(0 if ok else 1)
PY
}

# _deps_check: the indices of the missing entries among _DEPS_SEL in _DEPS_MISS
_deps_check() {
  local i kind check pkg groups gi_items=() gi_missing=() name
  _DEPS_MISS=()
  for i in "${_DEPS_SEL[@]}"; do
    read -r kind check pkg groups <<<"${DEPS[$i]}"
    case $kind in debpy | gir | gst) gi_items+=("$kind:$check") ;; esac
  done
  if ((${#gi_items[@]})); then
    if [ -x /usr/bin/python3 ]; then
      mapfile -t gi_missing < <(/usr/bin/python3 -c "$_DEPS_GI_PY" "${gi_items[@]}" 2>/dev/null ||
        printf '%s\n' "${gi_items[@]#*:}")
    else
      gi_missing=("${gi_items[@]#*:}")
    fi
  fi
  for i in "${_DEPS_SEL[@]}"; do
    read -r kind check pkg groups <<<"${DEPS[$i]}"
    case $kind in
      cmd) _deps_have_cmd "$check" || _DEPS_MISS+=("$i") ;;
      ffenc) _deps_have_ffenc "$check" || _DEPS_MISS+=("$i") ;;
      pip) _deps_pip_ok "$check" || _DEPS_MISS+=("$i") ;;
      npm) _deps_npm_ok "$check" || _DEPS_MISS+=("$i") ;;
      debpy | gir | gst)
        for name in "${gi_missing[@]}"; do
          if [ "$name" = "$check" ]; then _DEPS_MISS+=("$i"); break; fi
        done
        ;;
      *) _deps_msg "bad entry: ${DEPS[$i]}"; _DEPS_MISS+=("$i") ;;
    esac
  done
}

# names of the missing entries, and their packages: "curl timeoverlay"
_deps_miss_names() {
  local i out=()
  for i in "${_DEPS_MISS[@]}"; do out+=("$(_deps_field "$i" check)"); done
  echo "${out[*]}"
}

# _deps_miss_pkgs KIND...: the packages (each once) of the missing entries of those kinds
_deps_miss_pkgs() {
  local i kind check pkg groups out=" "
  for i in "${_DEPS_MISS[@]}"; do
    read -r kind check pkg groups <<<"${DEPS[$i]}"
    [[ " $* " == *" $kind "* ]] || continue
    [ "$kind" = npm ] && pkg="$check@$(_deps_npm_pin "$check")"
    [[ "$out" == *" $pkg "* ]] || out+="$pkg "
  done
  out=${out# }
  echo "${out% }"
}

# PKG...: apt-get update once, then install; one by one if the batch fails. Waits up to
# 10 minutes for another apt or dpkg to finish.
_deps_apt_install() {
  local p
  if [ -z "$_DEPS_APT_UPDATED" ]; then
    _deps_msg "apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || _deps_msg "apt-get update failed; installing from the lists there are"
    _DEPS_APT_UPDATED=1
  fi
  _deps_msg "apt-get install $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "$@" >&2; then
    for p in "$@"; do
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$p" >&2 ||
        _deps_msg "apt-get install $p failed"
    done
  fi
}

_deps_npm_install() {
  local how=ci
  [ -f "$DEPS_BROWSER_DIR/package-lock.json" ] || how=install
  _deps_msg "npm $how in ${DEPS_BROWSER_DIR#"$PWD"/}"
  (cd "$DEPS_BROWSER_DIR" && npm "$how" --no-audit --no-fund --loglevel=error >&2) || _deps_msg "npm $how failed"
}

deps_ensure() {
  local groups=("$@") apt pip npm
  ((${#groups[@]})) || groups=(all)
  _deps_select "${groups[@]}" || return 1
  _deps_check
  if ((${#_DEPS_MISS[@]} == 0)); then
    _deps_msg "all ${#_DEPS_SEL[@]} checks present (${groups[*]})"
    return 0
  fi
  apt=$(_deps_miss_pkgs cmd ffenc debpy gir gst)
  pip=$(_deps_miss_pkgs pip)
  npm=$(_deps_miss_pkgs npm)
  _deps_msg "missing: $(_deps_miss_names)"
  if [ "$(id -u)" != 0 ]; then
    _deps_msg "not root: run this as root, or install them:"
    [ -z "$apt" ] || echo "  apt-get install --no-install-recommends $apt" >&2
    [ -z "$pip" ] || echo "  python3 -m pip install $pip" >&2
    [ -z "$npm" ] || echo "  (cd ${DEPS_BROWSER_DIR#"$PWD"/} && npm ci)   # $npm" >&2
    return 1
  fi
  if [ -n "$apt" ]; then
    if command -v apt-get >/dev/null 2>&1; then
      # shellcheck disable=SC2086
      _deps_apt_install $apt
    else
      _deps_msg "no apt-get here: install these Debian packages (or your system's own): $apt"
    fi
  fi
  if [ -n "$pip" ]; then
    _deps_msg "python3 -m pip install $pip"
    # shellcheck disable=SC2086
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check $pip >&2 ||
      _deps_msg "pip install failed"
  fi
  [ -z "$npm" ] || _deps_npm_install
  # everything requested, checked again
  _deps_check
  if ((${#_DEPS_MISS[@]})); then
    _deps_msg "still missing after install: $(_deps_miss_names)"
    _deps_msg "(from: $(_deps_miss_pkgs cmd ffenc debpy gir gst pip npm))"
    return 1
  fi
  _deps_msg "installed ${apt:+$apt }${pip:+$pip }${npm:+$npm }- all ${#_DEPS_SEL[@]} checks present (${groups[*]})"
}

deps_list() {
  local i kind check pkg groups
  printf '%-18s %-6s %-36s %s\n' CHECK KIND PACKAGE GROUPS
  for i in "${!DEPS[@]}"; do
    read -r kind check pkg groups <<<"${DEPS[$i]}"
    case $kind in
      npm) pkg="$check@$(_deps_npm_pin "$check") (npm)" ;;
      pip) pkg="$pkg (PyPI)" ;;
    esac
    printf '%-18s %-6s %-36s %s\n' "$check" "$kind" "$pkg" "$groups"
  done
}
