#!/usr/bin/env bash
# `make calibrate`: what the operator's calibration would measure, on this machine. For each stage,
# booking-app serves alone as one "pod" against the local services (hack/services.sh), with its
# stage worker as a separate process as the operator runs it, and
# `booking-app loadgen --find-capacity` finds the highest rate it serves within the p99 SLO. loadgen
# writes the same CalibrationResult JSON a calibration Job writes to its termination message; the
# table shows it and the sizing the operator would derive (`flashsale-operator plan`).
#
# Knobs (environment): CALIBRATE_STAGES ("postgres redis kafka"), CALIBRATE_SLO_P99_MS (200, the
# CRD's default), CALIBRATE_TARGET_RPS (50000), CALIBRATE_UTILIZATION (0.7), CALIBRATE_DURATION
# (measured time per search step, 10s), CALIBRATE_CPU (CPU list the server is pinned to, "0": an
# operator-sized pod has 1 CPU; "" to not pin).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STAGES="${CALIBRATE_STAGES:-postgres redis kafka}"
SLO_P99_MS="${CALIBRATE_SLO_P99_MS:-200}"
TARGET_RPS="${CALIBRATE_TARGET_RPS:-50000}"
UTILIZATION="${CALIBRATE_UTILIZATION:-0.7}"
DURATION="${CALIBRATE_DURATION:-10s}"
CPU="${CALIBRATE_CPU-0}"
APP_PORT=18281
WORKER_PORT=18282

command -v jq >/dev/null || apt_install jq
for port in $APP_PORT $WORKER_PORT; do
  port_busy "$port" && die "port $port is busy ($(port_owner "$port")): another calibration running?"
done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait_gone 30 "${PIDS[@]}" || log "some booking-app processes did not stop: ${PIDS[*]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

"$REPO_ROOT/hack/services.sh" up
# shellcheck disable=SC1091
. "$REPO_ROOT/hack/.services.env"

# A debug build would measure the debug build: the app is built for release. `plan` only does
# arithmetic, so the operator's debug build (warm from the tests) serves.
log "building booking-app (release) and flashsale-operator"
(cd "$REPO_ROOT" && cargo build --release --quiet -p booking-app --bin booking-app)
(cd "$REPO_ROOT" && cargo build --quiet -p flashsale-operator --bin flashsale-operator)
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
BIN="$TARGET_DIR/release/booking-app"
OPERATOR="$TARGET_DIR/debug/flashsale-operator"
"$BIN" migrate >/dev/null
# Unique names per run, so no earlier run's backlog or keys are measured.
RUN_ID="calibrate-$(date +%s)"

# The server is pinned like a 1-CPU pod (where taskset exists); the worker and loadgen are not.
PIN=()
if [[ -n "$CPU" ]] && command -v taskset >/dev/null; then PIN=(taskset -c "$CPU"); fi

# start NAME PORT PATH CMD...: CMD in the background (log in $WORK/NAME.log), ready once PATH
# answers on PORT; its PID is left in STARTED.
start() {
  local name="$1" port="$2" path="$3"; shift 3
  ("$@") >>"$WORK/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  ( wait_until 60 "$name" "$STARTED" curl -fsS -o /dev/null "http://127.0.0.1:$port$path" ) ||
    { tail -20 "$WORK/$name.log" >&2; exit 1; }
}

stop() {
  kill "$@" 2>/dev/null || true
  wait_gone 30 "$@" || die "booking-app $* did not stop"
}

# app_env STAGE PORT CMD...: exec CMD (so it keeps the caller's PID) with the settings the operator
# gives a booking-app pod of STAGE (operator/src/contract.rs).
app_env() {
  local stage="$1" port="$2"; shift 2
  exec env STAGE="$stage" LISTEN_ADDR="127.0.0.1:$port" RUN_WORKER=false LOG_FORMAT=text RUST_LOG=warn \
    REDIS_KEY_PREFIX="$RUN_ID" KAFKA_TOPIC="$RUN_ID" "$@"
}

printf '%-9s %14s %10s %10s   %s\n' stage perPodRps p99_ms errors "replicas for $TARGET_RPS rps at $UTILIZATION" >"$WORK/table"
for stage in $STAGES; do
  log "stage $stage: one booking-app${CPU:+ on CPU $CPU}, loadgen --find-capacity (p99 <= ${SLO_P99_MS} ms)"
  start "app-$stage" "$APP_PORT" /readyz app_env "$stage" "$APP_PORT" "${PIN[@]}" "$BIN" serve
  pids=("$STARTED")
  if [[ "$stage" != postgres ]]; then
    start "worker-$stage" "$WORKER_PORT" /healthz app_env "$stage" "$WORKER_PORT" "$BIN" worker
    pids+=("$STARTED")
  fi
  result="$WORK/$stage.json"
  set +e
  "$BIN" loadgen --url "http://127.0.0.1:$APP_PORT" --find-capacity --slo-p99-ms "$SLO_P99_MS" \
    --duration "$DURATION" --termination-message-path "$result" --no-progress 2>&1 |
    sed -u "s/^/  [$stage] /" >&2
  rc=${PIPESTATUS[0]}
  set -e
  stop "${pids[@]}"
  if [[ ! -s "$result" ]]; then
    die "stage $stage: loadgen exited $rc without a result (see the lines above)"
  fi
  per_pod=$(jq -r '.perPodRps' "$result")
  if [[ "$rc" == 3 ]] || ! awk -v r="$per_pod" 'BEGIN { exit !(r > 0) }'; then
    replicas="no rate met the SLO: the operator would report CalibrationFailed and retry"
  else
    replicas=$("$OPERATOR" plan --target-rps "$TARGET_RPS" --per-pod-rps "$per_pod" \
      --utilization "$UTILIZATION" --stage "$stage" | awk '/booking-app instances/ { print $3 }')
  fi
  jq -r --arg stage "$stage" --arg replicas "$replicas" \
    '[$stage, (.perPodRps | floor), .p99Ms, .errorRate, $replicas] | @tsv' "$result" |
    awk -F'\t' '{ printf "%-9s %14s %10.2f %10.4f   %s\n", $1, $2, $3, $4, $5 }' >>"$WORK/table"
  log "stage $stage: $(cat "$result")"
done

echo
echo "What a FlashSale calibration would record (status.measuredPerPodRps) on this machine:"
cat "$WORK/table"
echo
echo "The full plan for a stage: $OPERATOR plan --target-rps N --per-pod-rps <perPodRps> --stage <stage>"
