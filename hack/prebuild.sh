#!/usr/bin/env bash
# Starts, in the background and at the lowest CPU and I/O priority, the builds `make test` needs
# later that do not depend on the Rust build: the control plane's Go tools and helm
# (hack/tools.sh), the real node's kubelet, kube-proxy and CoreDNS (hack/tools.sh node) and, as
# root, the store images (hack/images.sh build postgres redis kafka: debootstrap is mostly
# network and disk). They then overlap with the Rust build instead of following it. Returns at
# once. Every step it runs takes the same lock as the step of `make test` that needs it
# (tools.lock, the images' .lock), so that step waits for the background build and then finds it
# done; when the background build failed, the step builds again itself and fails loudly.
#
# A prebuild still running from an earlier call is left alone. Output: $FLASHSALE_CACHE/prebuild.log.
# Knobs (environment): TEST_NODE=0 leaves the node's tools and the images out.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$FLASHSALE_CACHE"
PIDFILE="$FLASHSALE_CACHE/prebuild.pid"
LOG="$FLASHSALE_CACHE/prebuild.log"

if [[ -f $PIDFILE ]] && pid_alive "$(cat "$PIDFILE")"; then
  log "a prebuild is already running (pid $(cat "$PIDFILE"), log $LOG)"
  exit 0
fi

steps=(tools.sh)
if [[ ${TEST_NODE:-1} != 0 ]]; then
  steps+=("tools.sh node")
  [[ $(id -u) -eq 0 ]] && steps+=("images.sh build postgres redis kafka")
fi
: >"$LOG"
# Each step's failure is logged and the next one still runs; `make test` redoes what failed.
# shellcheck disable=SC2016 # expanded by the inner bash
script='cd "$1" && shift; for step in "$@"; do echo "=== hack/$step"; read -ra cmd <<<"$step"
  "hack/${cmd[0]}" "${cmd[@]:1}" || echo "=== failed ($?): hack/$step"; done; echo "=== done"'
spawn_daemon "$PIDFILE" "$LOG" nice -n 19 ionice -c3 bash -c "$script" prebuild "$REPO_ROOT" "${steps[@]}"
log "prebuilding in the background (pid $(cat "$PIDFILE"), log $LOG): ${steps[*]/#/hack/}"
