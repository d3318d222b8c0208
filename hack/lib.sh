#!/usr/bin/env bash
# Shared helpers for hack/ scripts: where the tool cache lives, logging, waiting.
# Source it: `. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`. It sets REPO_ROOT and FLASHSALE_CACHE.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything installed or built lives outside the checkout, so a fresh clone reuses it.
FLASHSALE_CACHE="${FLASHSALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flashsale}"
FLASHSALE_BIN="$FLASHSALE_CACHE/bin"
mkdir -p "$FLASHSALE_BIN"
export PATH="$FLASHSALE_BIN:$PATH"

# log MSG...: one progress line on stderr, prefixed by the calling script's name.
log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$(basename "${0}")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_until TIMEOUT_SECONDS DESCRIPTION PID|"" CMD...: retry CMD until it succeeds.
# Fails early when PID (if given) has died, so a crashed server is not mistaken for a slow one.
wait_until() {
  local timeout="$1" what="$2" pid="$3"; shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      die "$what: process $pid exited while starting"
    fi
    if (( SECONDS - start >= timeout )); then
      die "$what: not ready after ${timeout}s"
    fi
    sleep 0.3
  done
  log "$what ready after $((SECONDS - start))s"
}

# port_busy PORT: true when something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# apt_install PKG...: install Debian packages once (apt-get update only when needed).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then die "need root (or sudo) to apt-get install ${missing[*]}"; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
