#!/usr/bin/env bash
# `make calibrate`: what the operator's calibration would measure, on this machine. For each stage,
# booking-app serves alone as one "pod" against the local services (hack/services.sh), with its
# stage worker as a separate process as the operator runs it, and
# `booking-app loadgen --find-capacity` finds the highest rate it serves within the p99 SLO. loadgen
# writes the same CalibrationResult JSON a calibration Job writes to its termination message; the
# table shows it and the sizing the operator would derive (`flashsale-operator plan`), and at
# stage kafka the worker's drain rate and what the queue does at the target. The table, each
# stage's search (loadgen --json) and capacity.svg (hack/plot_capacity.py: every step's p99 against
# its offered rate, the SLO line and the capacity chosen) are written to CALIBRATE_OUT.
#
# Knobs (environment): CALIBRATE_STAGES ("postgres redis kafka"), CALIBRATE_SLO_P99_MS (200, the
# CRD's default), CALIBRATE_TARGET_RPS (50000), CALIBRATE_UTILIZATION (0.7), CALIBRATE_DURATION
# (measured time per search step, 10s), CALIBRATE_CPU (CPU list the server is pinned to, "0": an
# operator-sized pod has 1 CPU; "" to not pin), CALIBRATE_OUT (target/calibrate), CALIBRATE_PORT
# (18281; the worker on the next port).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

knobs CALIBRATE STAGES="postgres redis kafka" SLO_P99_MS=200 TARGET_RPS=50000 UTILIZATION=0.7 \
  DURATION=10s OUT="$REPO_ROOT/target/calibrate" PORT=18281
CPU="${CALIBRATE_CPU-0}" # set but empty: not pinned
APP_PORT="$PORT"
WORKER_PORT=$((APP_PORT + 1))

command -v jq >/dev/null || apt_install jq
# shellcheck source=local-app.sh
. "$REPO_ROOT/hack/local-app.sh"
local_app_begin calibrate "$APP_PORT" "$WORKER_PORT"
# `plan` only does arithmetic, so the operator's debug build (warm from the tests) serves.
(cd "$REPO_ROOT" && cargo build --quiet -p flashsale-operator --bin flashsale-operator)
OPERATOR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/flashsale-operator"

# The server is pinned like a 1-CPU pod (where taskset exists); the worker and loadgen are not.
PIN=()
if [[ -n "$CPU" ]] && command -v taskset >/dev/null; then PIN=(taskset -c "$CPU"); fi

printf '%-9s %14s %10s %10s %10s   %s\n' stage perPodRps p99_ms errors drainRps "replicas for $TARGET_RPS rps at $UTILIZATION" >"$WORK/table"
: >"$WORK/queues"
mkdir -p "$OUT"
rm -f "$OUT"/*.search.json "$OUT/capacity.svg"
plotted=()
for stage in $STAGES; do
  log "stage $stage: one booking-app${CPU:+ on CPU $CPU}, loadgen --find-capacity (p99 <= ${SLO_P99_MS} ms)"
  start "app-$stage" "http://127.0.0.1:$APP_PORT/readyz" app_env "$stage" "$APP_PORT" "${PIN[@]}" "$BIN" serve
  started=("app-$stage")
  if [[ "$stage" != postgres ]]; then
    start "worker-$stage" "http://127.0.0.1:$WORKER_PORT/healthz" app_env "$stage" "$WORKER_PORT" "$BIN" worker
    started+=("worker-$stage")
  fi
  result="$WORK/$stage.json"
  search="$OUT/$stage.search.json"
  set +e
  # The search's every step (--json, for the plot) to a file, its log lines to the terminal.
  { "$BIN" loadgen --url "http://127.0.0.1:$APP_PORT" --find-capacity --slo-p99-ms "$SLO_P99_MS" \
    --duration "$DURATION" --termination-message-path "$result" --no-progress --json 2>&1 >"$search"; } |
    sed -u "s/^/  [$stage] /" >&2
  rc=${PIPESTATUS[0]}
  set -e
  stop "${started[@]}"
  if [[ ! -s "$result" ]]; then
    die "stage $stage: loadgen exited $rc without a result (see the lines above)"
  fi
  log "stage $stage: steps (req/s offered, p99 ms): $(jq -r '[.result.capacity.steps[] |
    "\(.rate | floor) \(if .pass then "ok" else "over" end) \(.p99_ms)"] | join(", ")' "$search")"
  plotted+=("$stage=$search")
  per_pod=$(jq -r '.perPodRps' "$result")
  if [[ "$rc" == 3 ]] || ! awk -v r="$per_pod" 'BEGIN { exit !(r > 0) }'; then
    replicas="no rate met the SLO: the operator would report CalibrationFailed and retry"
  else
    # Stage kafka: the drain rate of the worker behind the pod plans the queue, as in status.
    drain=$(jq -r '.drainRps // empty' "$result")
    plan=$("$OPERATOR" plan --target-rps "$TARGET_RPS" --per-pod-rps "$per_pod" \
      --utilization "$UTILIZATION" --stage "$stage" ${drain:+--drain-rps "$drain"})
    replicas=$(awk '/booking-app instances/ { print $3 }' <<<"$plan")
    if [[ -n "$drain" ]]; then
      echo "$stage: $(awk '$1 == "workers" { $1 = ""; $2 = ""; sub(/^ +/, ""); print }' <<<"$plan")" >>"$WORK/queues"
    fi
  fi
  jq -r --arg stage "$stage" --arg replicas "$replicas" \
    '[$stage, (.perPodRps | floor), .p99Ms, .errorRate, (.drainRps // "-" | if type == "number" then floor else . end), $replicas] | @tsv' "$result" |
    awk -F'\t' '{ printf "%-9s %14s %10.2f %10.4f %10s   %s\n", $1, $2, $3, $4, $5, $6 }' >>"$WORK/table"
  log "stage $stage: $(cat "$result")"
done

python3 "$REPO_ROOT/hack/plot_capacity.py" "$OUT/capacity.svg" "${plotted[@]}"
{
  echo "What a FlashSale calibration would record (status.measuredPerPodRps, measuredDrainRps) on this machine:"
  cat "$WORK/table"
  if [[ -s "$WORK/queues" ]]; then
    echo
    echo "The queue at $TARGET_RPS rps (status.sizing.queue):"
    cat "$WORK/queues"
  fi
} >"$OUT/table.txt"
echo
cat "$OUT/table.txt"
echo
echo "Each search plotted (p99 against offered rate, the SLO, the capacity chosen): ${OUT#"$REPO_ROOT"/}/capacity.svg"
echo "The full plan for a stage: $OPERATOR plan --target-rps N --per-pod-rps <perPodRps> --stage <stage>"
