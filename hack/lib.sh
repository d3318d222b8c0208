#!/usr/bin/env bash
# Shared helpers for hack/ scripts: where the tool cache lives, logging, waiting.
# Source it: `. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`. It sets REPO_ROOT and FLASHSALE_CACHE.
set -euo pipefail

# shellcheck disable=SC2034 # used by the scripts that source this file
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything installed or built lives outside the checkout, so a fresh clone reuses it.
FLASHSALE_CACHE="${FLASHSALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flashsale}"
FLASHSALE_BIN="$FLASHSALE_CACHE/bin"
mkdir -p "$FLASHSALE_BIN"
export PATH="$FLASHSALE_BIN:$PATH"

# log MSG...: one progress line on stderr, prefixed by the calling script's name.
log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$(basename "${0}")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# knobs PREFIX NAME=DEFAULT...: sets each NAME to the environment's PREFIX_NAME, or to DEFAULT
# where that is unset or empty (a script's settings, as `NAME="${PREFIX_NAME:-DEFAULT}"` would).
knobs() {
  local prefix="$1" pair var
  shift
  for pair in "$@"; do
    var="${prefix}_${pair%%=*}"
    printf -v "${pair%%=*}" '%s' "${!var:-${pair#*=}}"
  done
}

# heartbeat EVERY_SECONDS WHAT CMD...: runs CMD and, while it runs, logs "WHAT: Ns so far" every
# EVERY_SECONDS, so a long silent build still shows it is alive. Returns CMD's status.
heartbeat() {
  local every="$1" what="$2" start=$SECONDS ticker rc=0; shift 2
  # sleep holds no output descriptor: once the ticker is killed, nothing keeps a pipe open.
  (while sleep "$every" >/dev/null 2>&1; do log "  $what: $((SECONDS - start))s so far"; done) &
  ticker=$!
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$rc"
}

# wait_until TIMEOUT_SECONDS DESCRIPTION PID|"" CMD...: retry CMD until it succeeds.
# Fails early when PID (if given) has died, so a crashed server is not mistaken for a slow one.
wait_until() {
  local timeout="$1" what="$2" pid="$3"; shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      die "$what: process $pid exited while starting"
    fi
    if (( SECONDS - start >= timeout )); then
      die "$what: not ready after ${timeout}s"
    fi
    sleep 0.3
  done
  log "$what ready after $((SECONDS - start))s"
}

# pid_alive PID: true while the process runs. A zombie counts as dead: where init does not
# reap orphans (some VM and container inits do not), a killed server stays a zombie for good and
# `kill -0` would keep saying it is alive.
pid_alive() {
  local stat
  if [[ -d /proc/self ]]; then
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != [ZX] ]]
  else
    kill -0 "$1" 2>/dev/null
  fi
}

# wait_gone TIMEOUT_SECONDS PID...: wait until every PID has exited; false on timeout.
wait_gone() {
  local timeout="$1" start=$SECONDS p; shift
  for p in "$@"; do
    while pid_alive "$p"; do
      if (( SECONDS - start >= timeout )); then return 1; fi
      sleep 0.1
    done
  done
}

# port_busy PORT: true when something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# port_owner PORT: who listens on PORT (for error messages), or "unknown".
port_owner() {
  local who=""
  who=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:.*' | head -1) || true
  echo "${who:-unknown}"
}

# detached CMD...: run CMD in its own session, stdin from /dev/null and every descriptor above 2
# closed, so a server outlives the caller's Ctrl-C and holds none of its pipes or locks.
detached() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid -w bash -c 'for fd in $(ls /proc/$$/fd); do ((fd > 2)) && eval "exec $fd>&-"; done; exec "$@"' \
    detached "$@" </dev/null
}

# spawn_daemon PIDFILE LOGFILE CMD...: start CMD detached in the background, output appended to
# LOGFILE, its PID written to PIDFILE (by the process itself, before exec, so it is exact).
spawn_daemon() {
  local pidfile="$1" logfile="$2" i; shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'for fd in $(ls /proc/$$/fd); do ((fd > 2)) && eval "exec $fd>&-"; done
    echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  for ((i = 0; i < 100; i++)); do [[ -s "$pidfile" ]] && return 0; sleep 0.05; done
  die "could not start $1 (see $logfile)"
}

# The workspace's version ([workspace.package] in Cargo.toml): the chart's appVersion and the
# images' default tag.
workspace_version() {
  awk -F'"' '/^\[workspace.package\]/{on=1} on && /^version *=/{print $2; exit}' "$REPO_ROOT/Cargo.toml"
}

# containerd_holds ADDRESS TAR TAG: the containerd at ADDRESS (namespace k8s.io) holds TAG (as
# given, or as containerd names a Docker Hub short name: docker.io/TAG) as exactly this
# docker-archive tarball's image: its manifest names the tarball's config digest. Importing again
# would take seconds per image.
containerd_holds() {
  local address="$1" tar="$2" tag="$3" want have name
  want="$(tar -xOf "$tar" manifest.json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Config"].split("/")[-1].removesuffix(".json"))')" || return 1
  for name in "$tag" "docker.io/$tag"; do
    have="$(ctr -a "$address" -n k8s.io images ls "name==$name" 2>/dev/null | awk 'NR > 1 { print $3 }')" || true
    [[ -n $have ]] && ctr -a "$address" -n k8s.io content get "$have" 2>/dev/null | grep -q "$want" && return 0
  done
  return 1
}

# apt_install PKG...: install Debian packages once (apt-get update only when needed).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then die "need root (or sudo) to apt-get install ${missing[*]}"; fi
  # Our scripts may install at the same moment (hack/prebuild.sh runs beside make test): one at
  # a time, and apt itself waits for a lock held by anyone else.
  mkdir -p "$FLASHSALE_CACHE"
  (
    flock -w 900 8 || die "another apt_install held $FLASHSALE_CACHE/apt.lock for 15 minutes"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  ) 8>"$FLASHSALE_CACHE/apt.lock"
}
