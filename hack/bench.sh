#!/usr/bin/env bash
# `make bench`: every inventory stage at the concurrency of a flash sale, each next to the limit of
# its own store and the bare HTTP floor, all measured in this one run on the local services
# (hack/services.sh); then the calibration agreement and the operator at scale. Steps:
#   1. floor     booking-app bare-serve (axum, no store) under loadgen at each concurrency, and
#                under wrk at the highest (is loadgen the bottleneck?)
#   2. stages    each stage (stage postgres in each POSTGRES_DECIDE form) closed loop at each
#                concurrency, invariants checked; an open-loop spike at BENCH_SPIKE_FACTOR x the
#                rate it sustained at the highest concurrency; wrk against it as a cross-check
#   3. limits    pgbench of the stage's transaction, redis-benchmark of booking.lua (both at each
#                concurrency), Kafka's ProducerPerformance (acks=all, idempotent, records like the
#                stage's); stage kafka's worker drain measured on its own (queue, then one worker)
#   4. calibration  loadgen --find-capacity against each stage, next to the bench's rate
#   5. operator  hack/bench-operator.sh: N FlashSales applied at once on the test control plane
# Writes bench/results.{md,json,svg} and bench/capacity.svg (the calibration searches: p99 against
# offered rate, the SLO, the capacity chosen) with hack/bench_report.py, and prints the table.
# Exits 1 if a sale's invariants were violated (after writing the report).
#
# Knobs (environment), defaults in brackets:
#   BENCH_SECONDS [10] measured seconds per closed-loop run   BENCH_WARMUP [2] warm-up seconds
#   BENCH_CONCURRENCIES ["256 16"] closed-loop concurrencies; the highest is the flash sale's and
#     the ratios' (16 keeps the history of the earlier runs)
#   BENCH_STAGES ["postgres redis kafka"]   BENCH_POSTGRES_DECIDE ["batch per-booking"] the
#     POSTGRES_DECIDE values stage postgres runs with (the first is the default form)
#   BENCH_KAFKA_WORKER ["api-alone worker-alongside"] stage kafka's closed loops: its worker frozen
#     until the load is over (the acceptance targets' row), and deciding while it runs
#   BENCH_SPIKE [1] spikes on/off; BENCH_SPIKE_FACTOR [2]; BENCH_SPIKE_SECONDS [5];
#     BENCH_SPIKE_IN_FLIGHT [1024] requests in flight (and connections) during a spike, raised to
#     4 x the admission limit the API runs with there (so the server sheds, not the client)
#   BENCH_WRK [1] wrk on bare-serve; BENCH_WRK_STAGES [1] wrk against each stage too;
#     BENCH_WRK_THREADS [2]
#   BENCH_REFERENCES [1] pgbench / redis-benchmark / ProducerPerformance on/off;
#     BENCH_KAFKA_PERF_PROPS [""] extra producer properties for ProducerPerformance (k=v ...)
#   BENCH_DRAIN [1] stage kafka's drain on its own; BENCH_DRAIN_TIMEOUT [600] seconds
#   BENCH_CALIBRATE [1] calibration agreement; BENCH_CALIBRATE_SLO_MS [200] (the CRD's default
#     SLO); BENCH_CALIBRATE_SECONDS [5] per search step
#   BENCH_OPERATOR [1] operator at scale (hack/bench-operator.sh; its own knobs are in its header)
#   BENCH_SEED [42]   BENCH_OUT [bench/]   BENCH_PERF [0] 1: perf profile of booking-app at the
#     highest concurrency per stage (bench/profile-*.txt)
# Binaries: ${CARGO_TARGET_DIR:-target}/release. Ports 18181 (API), 18182 (worker), 18190 (bare),
# 18191 (operator); traffic on loopback only.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECONDS="${BENCH_SECONDS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-2}"
BENCH_CONCURRENCIES="${BENCH_CONCURRENCIES:-256 16}"
BENCH_STAGES="${BENCH_STAGES:-postgres redis kafka}"
BENCH_POSTGRES_DECIDE="${BENCH_POSTGRES_DECIDE:-batch per-booking}"
BENCH_KAFKA_WORKER="${BENCH_KAFKA_WORKER:-api-alone worker-alongside}"
BENCH_SPIKE="${BENCH_SPIKE:-1}"
BENCH_SPIKE_FACTOR="${BENCH_SPIKE_FACTOR:-2}"
BENCH_SPIKE_SECONDS="${BENCH_SPIKE_SECONDS:-5}"
BENCH_SPIKE_IN_FLIGHT="${BENCH_SPIKE_IN_FLIGHT:-1024}"
BENCH_WRK="${BENCH_WRK:-1}"
BENCH_WRK_STAGES="${BENCH_WRK_STAGES:-1}"
BENCH_WRK_THREADS="${BENCH_WRK_THREADS:-2}"
BENCH_REFERENCES="${BENCH_REFERENCES:-1}"
BENCH_KAFKA_PERF_PROPS="${BENCH_KAFKA_PERF_PROPS:-}"
BENCH_DRAIN="${BENCH_DRAIN:-1}"
BENCH_DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-600}"
BENCH_CALIBRATE="${BENCH_CALIBRATE:-1}"
BENCH_CALIBRATE_SLO_MS="${BENCH_CALIBRATE_SLO_MS:-200}"
BENCH_CALIBRATE_SECONDS="${BENCH_CALIBRATE_SECONDS:-5}"
BENCH_OPERATOR="${BENCH_OPERATOR:-1}"
BENCH_SEED="${BENCH_SEED:-42}"
BENCH_OUT="${BENCH_OUT:-$REPO_ROOT/bench}"
BENCH_PERF="${BENCH_PERF:-0}"
# The event is large enough never to sell out, and every request is a new user's (from a space
# of a billion) asking for one ticket: the runs measure booking work, not 409s.
BENCH_TICKETS=100000000
BENCH_USERS=1000000000
APP_PORT="${BENCH_APP_PORT:-18181}"
WORKER_PORT=18182
BARE_PORT=18190
BENCH_C_HIGH=$(tr ' ' '\n' <<<"$BENCH_CONCURRENCIES" | grep . | sort -n | tail -1)
BENCH_C=$BENCH_C_HIGH
[[ -n "$BENCH_C_HIGH" ]] || die "BENCH_CONCURRENCIES is empty"
BENCH_START=$SECONDS

command -v jq >/dev/null || apt_install jq
# shellcheck source=local-app.sh
. "$REPO_ROOT/hack/local-app.sh"
local_app_begin bench "$APP_PORT" "$WORKER_PORT" "$BARE_PORT"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
APP_READY="http://127.0.0.1:$APP_PORT/readyz"
WORKER_READY="http://127.0.0.1:$WORKER_PORT/healthz"
# shellcheck source=bench/common.sh
. "$REPO_ROOT/hack/bench/common.sh"
# shellcheck source=bench/stages.sh
. "$REPO_ROOT/hack/bench/stages.sh"
# shellcheck source=bench/references.sh
. "$REPO_ROOT/hack/bench/references.sh"
# shellcheck source=bench/calibration.sh
. "$REPO_ROOT/hack/bench/calibration.sh"

for stage in $BENCH_STAGES; do
  case "$stage" in postgres | redis | kafka) ;; *) die "unknown stage $stage in BENCH_STAGES" ;; esac
done
in_stages() { [[ " $BENCH_STAGES " == *" $1 "* ]]; }
variants_of() {
  case $1 in
    postgres) echo "$BENCH_POSTGRES_DECIDE" ;;
    kafka) echo "$BENCH_KAFKA_WORKER" ;;
    *) echo "" ;;
  esac
}

# A pool of BENCH_C_HIGH connections for the app, or as many pgbench clients, must fit.
free=$(pg_headroom)
if ((free < BENCH_C_HIGH + 20)); then
  log "WARNING: Postgres accepts $free more connections, the bench opens up to $BENCH_C_HIGH at once;" \
    "hack/services.sh raises max_connections to 600 from Postgres's next start (hack/services.sh restart postgres)"
fi
mkdir -p "$BENCH_OUT"
log "make bench: stages '$BENCH_STAGES', concurrencies '$BENCH_CONCURRENCIES', ${BENCH_SECONDS}s per run (run id $RUN_ID)"

log "== 1. floor: bare axum"
bench_bare

log "== 2-3. stages and their stores' limits"
for stage in $BENCH_STAGES; do
  read -ra variants <<<"$(variants_of "$stage")"
  ((${#variants[@]})) || variants=("")
  for variant in "${variants[@]}"; do
    log "-- stage $stage${variant:+ (POSTGRES_DECIDE=$variant)}"
    bench_stage "$stage" "$variant"
    # wrk runs stage kafka without a worker: once, next to its api-alone loop.
    [[ $BENCH_WRK_STAGES == 1 && $variant != worker-alongside ]] && bench_wrk_stage "$stage" "$variant"
  done
  if [[ $BENCH_REFERENCES == 1 ]]; then
    case $stage in
      postgres) for c in $BENCH_CONCURRENCIES; do bench_pgbench "$c"; done ;;
      redis) for c in $BENCH_CONCURRENCIES; do bench_redis_benchmark "$c"; done ;;
      kafka) bench_kafka_producer ;;
    esac
  fi
  [[ $stage == kafka && $BENCH_DRAIN == 1 ]] && bench_kafka_drain
done

if [[ $BENCH_CALIBRATE == 1 ]]; then
  log "== 4. calibration agreement"
  for stage in $BENCH_STAGES; do
    read -ra variants <<<"$(variants_of "$stage")"
    # The calibration Job measures a sale whose worker decides as it goes: compare like with like.
    calibrated="${variants[0]:-}"
    [[ $stage == kafka && " ${variants[*]} " == *" worker-alongside "* ]] && calibrated=worker-alongside
    bench_calibration "$stage" "$calibrated"
  done
fi

# Stage redis keeps each booking's answer and claim (a day, IDEMPOTENCY_RETENTION) and the local
# Redis refuses writes past its maxmemory: a few runs would fill it. This run's keys go now.
[[ " $BENCH_STAGES " == *" redis "* ]] && forget_redis_run

if [[ $BENCH_OPERATOR == 1 ]]; then
  log "== 5. operator at scale (hack/bench-operator.sh)"
  BENCH_OPERATOR_OUT="$WORK/operator.json" "$REPO_ROOT/hack/bench-operator.sh" >/dev/null
  record operator operator "$(cat "$WORK/operator.json")"
fi

# The run this one replaces: its c=16 rows are the history column of the report.
previous=()
[[ -s "$BENCH_OUT/results.json" ]] && cp "$BENCH_OUT/results.json" "$WORK/previous-results.json" && previous=("$WORK/previous-results.json")
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
jq -n --slurpfile rows "$RESULTS" \
  --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" --arg cores "$(nproc)" --arg cpu "${cpu_model:-unknown}" \
  --arg kernel "$(uname -sr)" --arg commit "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson elapsed "$((SECONDS - BENCH_START))" \
  --argjson seconds "$BENCH_SECONDS" --argjson warmup "$BENCH_WARMUP" --arg concurrencies "$BENCH_CONCURRENCIES" \
  --argjson high "$BENCH_C_HIGH" --argjson seed "$BENCH_SEED" --argjson spike_factor "$BENCH_SPIKE_FACTOR" \
  --argjson spike_seconds "$BENCH_SPIKE_SECONDS" --argjson spike_in_flight "$BENCH_SPIKE_IN_FLIGHT" \
  --argjson slo "$BENCH_CALIBRATE_SLO_MS" --argjson calibrate_seconds "$BENCH_CALIBRATE_SECONDS" \
  '{date: $date, machine: {cores: ($cores|tonumber), cpu: $cpu, kernel: $kernel, load_at_end: $load}, commit: $commit,
    elapsed_s: $elapsed,
    parameters: {seconds: $seconds, warmup: $warmup, concurrencies: ($concurrencies | split(" ") | map(select(. != "") | tonumber)),
      concurrency: $high, seed: $seed, spike_factor: $spike_factor, spike_seconds: $spike_seconds,
      spike_in_flight: $spike_in_flight, calibrate_slo_p99_ms: $slo, calibrate_seconds: $calibrate_seconds},
    rows: $rows}' >"$BENCH_OUT/results.json"
python3 "$REPO_ROOT/hack/bench_report.py" "$BENCH_OUT/results.json" "$BENCH_OUT/results.md" "$BENCH_OUT/results.svg" "${previous[@]}"
cat "$BENCH_OUT/results.md"
log "make bench done in $(((SECONDS - BENCH_START) / 60)) min $(((SECONDS - BENCH_START) % 60)) s"
((${#VIOLATIONS[@]} == 0)) || die "invariants violated in: ${VIOLATIONS[*]} (see bench/results.md)"
