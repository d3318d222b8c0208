#!/usr/bin/env bash
# `make stress-k6`: installs k6 (pinned, built from its Go module into $FLASHSALE_BIN, once) and
# runs loadtest/flashsale.js against a booking-app URL. k6 is a separate program under the
# AGPL: it is never linked into this project, only run. loadgen stays the project's instrument.
#
#   hack/k6.sh install                 build k6 only
#   hack/k6.sh run [k6 run flags...]   URL=http://127.0.0.1:8080 VUS=50 DURATION=30s TICKETS=5000 ...
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K6_VERSION=v1.8.1
K6_STAMP="$FLASHSALE_BIN/.k6.stamp"
export GOMODCACHE="$FLASHSALE_CACHE/go/mod" GOCACHE="$FLASHSALE_CACHE/go/cache"
# k6's go.mod asks for Go 1.25: an older Go must fail loudly here, not fetch a toolchain.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

install_k6() {
  if [[ -x "$FLASHSALE_BIN/k6" && -f "$K6_STAMP" && "$(<"$K6_STAMP")" == "k6=$K6_VERSION" ]]; then
    return 0
  fi
  command -v go >/dev/null || die "go is not installed (k6 $K6_VERSION needs Go >= 1.25)"
  log "building k6 $K6_VERSION (go install, a few minutes cold)"
  local start=$SECONDS
  GOBIN="$FLASHSALE_BIN" go install -trimpath -ldflags "-s -w" "go.k6.io/k6@$K6_VERSION" ||
    die "go install go.k6.io/k6@$K6_VERSION failed (see above); loadgen needs no k6: make demo, make bench"
  printf 'k6=%s\n' "$K6_VERSION" >"$K6_STAMP"
  log "k6 $K6_VERSION built in $((SECONDS - start))s"
}

case "${1:-run}" in
  install) install_k6 ;;
  run)
    shift || true
    install_k6
    URL="${URL:-http://127.0.0.1:8080}"
    curl -fsS -o /dev/null "$URL/readyz" || die "no booking-app answers at $URL/readyz (start one, or: make demo)"
    log "k6 run loadtest/flashsale.js against $URL"
    URL="$URL" exec "$FLASHSALE_BIN/k6" run --no-usage-report "$@" "$REPO_ROOT/loadtest/flashsale.js"
    ;;
  *) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
