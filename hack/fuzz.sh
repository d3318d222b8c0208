#!/usr/bin/env bash
# make fuzz: a property-based fuzz run of the booking API from its own /openapi.json with
# schemathesis (pinned, from PyPI, installed here into a venv in the cache dir), against a
# `booking-app serve` started by this script on the local services (hack/services.sh). It fails
# when schemathesis reports any failure.
#
# Settings (environment): FUZZ_STAGE (postgres), FUZZ_PORT (18280), FUZZ_MAX_EXAMPLES (40 per
# operation and phase), FUZZ_WORKERS (1: with more, hypothesis 6 on Python 3.11 sometimes fails in its own lambda-source cache).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned: a new release may add checks or change generation; move it on purpose.
SCHEMATHESIS_VERSION=4.32.5
FUZZ_STAGE="${FUZZ_STAGE:-postgres}"
FUZZ_PORT="${FUZZ_PORT:-18280}"
FUZZ_MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-40}"
FUZZ_WORKERS="${FUZZ_WORKERS:-1}"

install_schemathesis() {
  local venv="$FLASHSALE_CACHE/schemathesis-$SCHEMATHESIS_VERSION"
  # The marker is written last: an interrupted install is redone, never half used.
  if [[ ! -f "$venv/.installed" ]]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
    touch "$venv/.installed"
  fi
  SCHEMATHESIS="$venv/bin/schemathesis"
}

main() {
  port_busy "$FUZZ_PORT" && die "port $FUZZ_PORT is busy ($(port_owner "$FUZZ_PORT")); set FUZZ_PORT"
  install_schemathesis
  "$REPO_ROOT/hack/services.sh" up
  # shellcheck disable=SC1091
  . "$REPO_ROOT/hack/.services.env"
  log "building booking-app"
  (cd "$REPO_ROOT" && cargo build --quiet -p booking-app --bin booking-app)
  local work base pid rc=0
  work="$(mktemp -d)"
  # A copy: another build into a shared target directory could replace the binary mid-run.
  cp "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/booking-app" "$work/booking-app"
  base="http://127.0.0.1:$FUZZ_PORT"
  local -a env=(STAGE="$FUZZ_STAGE" LISTEN_ADDR="127.0.0.1:$FUZZ_PORT" LOG_FORMAT=json)
  if [[ "$FUZZ_STAGE" == kafka ]]; then
    env+=(KAFKA_TOPIC="fuzz-$$-$RANDOM" KAFKA_CONSUMER_GROUP="fuzz-$$-$RANDOM-workers")
  fi
  # With identity (issue 13: `booking-app token`), the server verifies HS256 tokens from a
  # secret of this run and every request carries an admin token minted with it.
  local -a auth=()
  local ignored_auth=ignored_auth,
  if "$work/booking-app" token --help >/dev/null 2>&1; then
    head -c 32 /dev/urandom | base64 >"$work/auth-secret"
    env+=(AUTH_HS256_SECRET_FILE="$work/auth-secret")
    auth=(-H "Authorization: Bearer $(AUTH_HS256_SECRET_FILE="$work/auth-secret" \
      "$work/booking-app" token --user fuzz --admin)")
    ignored_auth=
  fi
  env "${env[@]}" "$work/booking-app" serve >"$work/serve.log" 2>&1 &
  pid=$!
  # shellcheck disable=SC2064 # expand now: the trap must stop this server and remove this dir
  trap "kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf '$work'" EXIT
  wait_until 120 "booking-app serve ($FUZZ_STAGE) on $base" "$pid" curl -fsS "$base/readyz"

  # Every check (hack/schemathesis.toml lists the documented non-2xx answers to valid data),
  # minus those that contradict documented behaviour:
  # - ignored_auth, while the binary has no `token` subcommand: without authentication nothing
  #   can be ignored.
  # - use_after_free, ensure_resource_availability: nothing is ever deleted and the document has
  #   no links between operations for these to follow.
  local -a checks=(--checks all
    --exclude-checks "${ignored_auth}use_after_free,ensure_resource_availability")
  log "schemathesis $SCHEMATHESIS_VERSION against $base/openapi.json (max $FUZZ_MAX_EXAMPLES examples)"
  # From the scratch directory: schemathesis writes its cache (.schemathesis/) where it runs.
  (cd "$work" && "$SCHEMATHESIS" --config-file "$REPO_ROOT/hack/schemathesis.toml" run "$base/openapi.json" \
    "${checks[@]}" "${auth[@]}" \
    --max-examples "$FUZZ_MAX_EXAMPLES" \
    --workers "$FUZZ_WORKERS" \
    --phases examples,coverage,fuzzing \
    --request-timeout 30 \
    --suppress-health-check too_slow \
    --generation-deterministic \
    --no-color) || rc=$?
  if ((rc != 0)); then
    log "schemathesis failed (rc=$rc); the server's last log lines:"
    tail -n 30 "$work/serve.log" >&2
    exit "$rc"
  fi
  pid_alive "$pid" || die "booking-app serve died during the run"
  log "fuzz run passed"
}

main "$@"
