# shellcheck shell=bash
# booking-app as local processes, the way the operator runs it in pods, for `make demo`,
# `make calibrate` and `make bench` (sourced after lib.sh). One place for: the scratch directory,
# the release build, starting a process and waiting for its health URL, stopping it, the
# settings a pod of a stage gets, and stopping everything on exit. The shared services
# (hack/services.sh) stay up.
#
#   local_app_begin RUN_PREFIX PORT...   refuse busy PORTs, services up, build; sets WORK, BIN, RUN_ID
#   start NAME URL CMD...                CMD in the background (log in $WORK/NAME.log), ready once
#                                        URL answers; its PID in STARTED and PID_OF[NAME]
#   stop NAME...                         SIGTERM and wait
#   app_env STAGE PORT CMD...            exec CMD with a pod's settings (extra VAR=value in APP_ENV)
# shellcheck disable=SC2317  # functions run through trap and start

WORK=
BIN=
RUN_ID=
STARTED=
PIDS=()
APP_ENV=()
declare -A PID_OF

local_app_cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if ((${#PIDS[@]})); then
    wait_gone 30 "${PIDS[@]}" || log "some booking-app processes did not stop: ${PIDS[*]}"
  fi
  # A failed run keeps its processes' logs for the reader; a good one leaves nothing behind.
  if ((rc != 0)) && [[ -n "$WORK" ]]; then
    log "failed (exit $rc): the processes' logs are kept in $WORK"
  elif [[ -n "$WORK" ]]; then
    rm -rf "$WORK"
  fi
  return 0
}

local_app_begin() {
  local prefix="$1" port; shift
  for port in "$@"; do
    port_busy "$port" && die "port $port is busy ($(port_owner "$port")): another $prefix running?"
  done
  WORK="$(mktemp -d)"
  trap local_app_cleanup EXIT
  "$REPO_ROOT/hack/services.sh" up
  # shellcheck disable=SC1091
  . "$REPO_ROOT/hack/.services.env"
  if [[ -n "${FLASHSALE_BOOKING_APP:-}" ]]; then
    # A binary built already (make test passes the debug one `cargo test` built: its demo checks
    # what a sale ends with, not speed, and a cold release build would add minutes to CI).
    [[ -x "$FLASHSALE_BOOKING_APP" ]] || die "FLASHSALE_BOOKING_APP=$FLASHSALE_BOOKING_APP is not an executable"
    BIN="$(realpath "$FLASHSALE_BOOKING_APP")"
    log "booking-app: $BIN (FLASHSALE_BOOKING_APP)"
  else
    # A debug build would measure the debug build.
    log "building booking-app (release)"
    (cd "$REPO_ROOT" && cargo build --release --quiet -p booking-app --bin booking-app)
    BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/booking-app"
  fi
  # Run a copy: another checkout building into a shared CARGO_TARGET_DIR replaces that file, and
  # a run would then start its later processes from someone else's build.
  cp "$BIN" "$WORK/booking-app"
  BIN="$WORK/booking-app"
  "$BIN" migrate >/dev/null 2>&1 || "$BIN" migrate
  # This run's token signing secret, as the operator generates one per sale: serve verifies with
  # it, loadgen and `booking-app token` sign with it (every process started here inherits it).
  head -c 32 /dev/urandom | base64 >"$WORK/auth-secret"
  export AUTH_HS256_SECRET_FILE="$WORK/auth-secret"
  # Unique names per run, so no earlier run's backlog, stream or keys are in it.
  RUN_ID="$prefix-$(date +%s)"
}

start() {
  local name="$1" url="$2"; shift 2
  ("$@") >>"$WORK/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  PID_OF[$name]=$STARTED
  ( wait_until 60 "$name" "$STARTED" curl -fsS -o /dev/null "$url" ) || { tail -20 "$WORK/$name.log" >&2; exit 1; }
}

stop() {
  local name pid
  for name in "$@"; do
    pid="${PID_OF[$name]:?stop: $name was never started}"
    kill "$pid" 2>/dev/null || true
    wait_gone 30 "$pid" || die "$name (pid $pid) did not stop"
  done
}

# exec, so the PID start recorded is the booking-app's own. The variables are the operator's
# (operator/src/contract.rs); the topic, group and Redis prefix are this run's.
app_env() {
  local stage="$1" port="$2"; shift 2
  exec env STAGE="$stage" LISTEN_ADDR="127.0.0.1:$port" RUN_WORKER=false LOG_FORMAT=text RUST_LOG=warn \
    REDIS_KEY_PREFIX="$RUN_ID" KAFKA_TOPIC="$RUN_ID" KAFKA_CONSUMER_GROUP="$RUN_ID-workers" "${APP_ENV[@]}" "$@"
}
