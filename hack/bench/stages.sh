# shellcheck shell=bash
# hack/bench.sh, the stages (sourced): each stage closed loop at every BENCH_CONCURRENCIES, then an
# open-loop spike at twice the rate it sustained at the highest concurrency; stage kafka's drain
# measured on its own. Rows: kind stage (closed loop), spike, drain.
# shellcheck disable=SC2034  # BENCH_C and WATCH are read by common.sh (profile, timed)

# app_up STAGE POOL [VAR=value...]: booking-app `serve` of STAGE with a pool of POOL connections,
# and the stage's worker as a separate process (as the operator runs them) unless NO_WORKER=1.
app_up() {
  local stage="$1" pool="$2"; shift 2
  local saved=("${APP_ENV[@]}")
  APP_ENV=(DB_POOL_SIZE="$pool" "$@")
  start "app-$stage" "$APP_READY" app_env "$stage" "$APP_PORT" "$BIN" serve
  WATCH=("app-$stage")
  if [[ $stage != postgres && ${NO_WORKER:-0} != 1 ]]; then
    start "worker-$stage" "$WORKER_READY" app_env "$stage" "$WORKER_PORT" "$BIN" worker
    WATCH+=("worker-$stage")
    if [[ -n ${DEFER_WORKER_S:-} ]]; then
      # Joined, then frozen (SIGSTOP) for DEFER_WORKER_S: the API takes the load alone, as in a
      # cluster where the worker runs on another node, and the worker decides the backlog once
      # the load is over, so loadgen's settle still follows every 202 to its decision.
      kill -STOP "$STARTED"
      (sleep "$DEFER_WORKER_S"; kill -CONT "$STARTED" 2>/dev/null) &
    fi
  fi
  APP_ENV=("${saved[@]}")
}

# app_down STAGE: the API first (no new work), then its worker.
app_down() {
  # `if`s, not `&&`: a worker already gone (an earlier run's; NO_WORKER starts none) must not
  # fail the step. A worker still frozen by DEFER_WORKER_S could not act on the SIGTERM.
  local worker="${PID_OF[worker-$1]:-}"
  if [[ -n $worker ]] && pid_alive "$worker"; then kill -CONT "$worker"; fi
  stop "app-$1"
  if [[ -n $worker ]] && pid_alive "$worker"; then stop "worker-$1"; fi
  WATCH=()
}

# variant_env STAGE VARIANT: the settings that select VARIANT (stage postgres: POSTGRES_DECIDE).
# An env var today's binary does not know is ignored, so the script runs before and after it lands.
# Stage kafka's variants are where its worker runs (variant_defer), not a setting of the API; with
# the worker frozen (`api-alone`) nothing leaves the pod's view of the queue during the run, so its
# cap (KAFKA_MAX_QUEUED, 200,000 by default: about 8 s of this machine's acceptance) is raised to
# hold the whole run, or the door would shed for a backlog no real sale builds with its worker
# deciding (the drain outruns acceptance): the row measures acceptance, not the cap.
KAFKA_VIEW_WHOLE_RUN=(KAFKA_MAX_QUEUED=4000000 KAFKA_MAX_QUEUED_BYTES=$((2 * 1024 * 1024 * 1024)))
variant_env() {
  [[ $1 == postgres && -n $2 ]] && echo "POSTGRES_DECIDE=$2"
  [[ $1 == kafka && $2 == api-alone ]] && echo "${KAFKA_VIEW_WHOLE_RUN[*]}"
  return 0
}

# variant_defer STAGE VARIANT: seconds the worker waits before it decides anything (DEFER_WORKER_S),
# or nothing. Stage kafka `api-alone`: the whole warm-up and measured window, so the 202s are the
# API's and the broker's alone on this 2-core machine (the worker and the Postgres it writes took
# ~0.6 of its 2 cores otherwise); `worker-alongside`: deciding while the load runs.
variant_defer() { [[ $1 == kafka && $2 == api-alone ]] && echo $((BENCH_WARMUP + BENCH_SECONDS + 1)); return 0; }

# bench_stage STAGE [VARIANT]: closed loop at each concurrency, then the spike.
bench_stage() {
  local stage="$1" variant="${2:-}" c name env
  local label="$stage${variant:+ ($variant)}"
  env=$(variant_env "$stage" "$variant")
  for c in $BENCH_CONCURRENCIES; do
    name="$stage${variant:+-$variant}-c$c"
    # Every booking-app of the bench gets a pool as large as the load's concurrency.
    # shellcheck disable=SC2086  # env is empty or VAR=value words
    DEFER_WORKER_S=$(variant_defer "$stage" "$variant") app_up "$stage" "$c" $env
    BENCH_C=$c
    ((c == BENCH_C_HIGH)) && profile "stage-$stage${variant:+-$variant}" "${PID_OF[app-$stage]}"
    closed_loop "$name" "$APP_PORT" "$c"
    ((c == BENCH_C_HIGH)) && profile_report "stage-$stage${variant:+-$variant}"
    record stage "$stage" "$(loadgen_row "$WORK/$name.json")" variant="$variant" concurrency="$c"
    app_down "$stage"
  done
  [[ $BENCH_SPIKE == 1 ]] || return 0
  local sustained rate
  sustained=$(rps_of stage "$stage" "$variant" "$BENCH_C_HIGH")
  [[ -n "$sustained" ]] || { log "spike $label: no c=$BENCH_C_HIGH rate measured this run, skipped"; return 0; }
  rate=$(awk -v r="$sustained" -v f="$BENCH_SPIKE_FACTOR" 'BEGIN { printf "%.0f", r * f }')
  name="$stage${variant:+-$variant}-spike"
  # Admission as the operator sets it from a measured capacity (operator/src/capacity.rs,
  # in_flight_limit and admission_wait_ms): in flight = rate x SLO / 2, waiting SLO / 4.
  local in_flight wait_ms
  in_flight=$(awk -v r="$sustained" -v s="$BENCH_CALIBRATE_SLO_MS" 'BEGIN { l = r * s / 2000; l = (l == int(l)) ? l : int(l) + 1; if (l < 16) l = 16; print l }')
  wait_ms=$((BENCH_CALIBRATE_SLO_MS / 4))
  # The client must hold more in flight than the server admits plus its wait line, or the
  # open loop queues in loadgen itself (missed sends, latency from the intended send time)
  # instead of meeting the server's shedding: at least 4 x the admission limit.
  local client_in_flight=$((in_flight * 4 > BENCH_SPIKE_IN_FLIGHT ? in_flight * 4 : BENCH_SPIKE_IN_FLIGHT))
  # shellcheck disable=SC2086
  app_up "$stage" "$BENCH_C_HIGH" $env MAX_IN_FLIGHT="$in_flight" ADMISSION_WAIT_MS="$wait_ms"
  # One second of light load first, so the spike meets open connections, not a cold pool.
  run_loadgen "$name-prewarm" "$APP_PORT" --concurrency 16 --duration 1s --warmup 0s --no-invariants
  log "spike $label: open loop at $rate req/s (${BENCH_SPIKE_FACTOR}x its c=$BENCH_C_HIGH rate) for ${BENCH_SPIKE_SECONDS}s, at most $client_in_flight in flight; the API admits $in_flight (MAX_IN_FLIGHT, as the operator sizes it)"
  run_loadgen "$name" "$APP_PORT" --rate "$rate" --concurrency "$client_in_flight" \
    --duration "${BENCH_SPIKE_SECONDS}s" --warmup 0s
  record spike "$stage" "$(loadgen_row "$WORK/$name.json")" variant="$variant" sustained_rps="$sustained" max_in_flight="$in_flight"
  log "  $name: $(jq -r '.classes as $k | "2xx \($k["2xx"]), 409 \($k["409"]), 503 \($k["503"]), errors \($k.errors), admitted p99 \(.admitted_p99_ms // "n/a") ms"' <<<"$(loadgen_row "$WORK/$name.json")")$(invariants_note "$WORK/$name.json")"
  app_down "$stage"
}

# bench_kafka_drain: the worker's decisions/s on its own. The API (no worker, RUN_WORKER=false)
# queues BENCH_SECONDS of closed-loop load at the highest concurrency on a topic of its own; it
# stops; then one `worker --drain` starts, and the drain is timed until every queued request is
# decided (the worker exits once the group's committed offsets reach the end of every partition).
bench_kafka_drain() {
  local topic="$RUN_ID-drain" group="$RUN_ID-drain-workers" name=kafka-drain queued event
  local saved=("${APP_ENV[@]}")
  # No worker while it queues: the view holds the whole run (as api-alone's, variant_env).
  APP_ENV=(KAFKA_TOPIC="$topic" KAFKA_CONSUMER_GROUP="$group" "${KAFKA_VIEW_WHOLE_RUN[@]}")
  NO_WORKER=1 app_up kafka "$BENCH_C_HIGH" "${APP_ENV[@]}"
  log "drain: queueing ${BENCH_SECONDS}s of closed-loop load at concurrency $BENCH_C_HIGH (no worker running)"
  run_loadgen "$name-queue" "$APP_PORT" --concurrency "$BENCH_C_HIGH" --duration "${BENCH_SECONDS}s" --warmup 0s --no-invariants
  app_down kafka
  queued=$(jq '.run.report.answers["202 pending"] // 0' "$WORK/$name-queue.json")
  event=$(jq -r .run.event_id "$WORK/$name-queue.json")
  log "drain: $queued requests queued for event $event; one worker --drain starts"
  local t0 t1 done_rows=0 deadline=$((SECONDS + BENCH_DRAIN_TIMEOUT)) rc=0
  t0=$(date +%s.%N)
  spawn worker-kafka-drain app_env kafka "$WORKER_PORT" "$BIN" worker --drain
  local pid=$STARTED next_log=$((SECONDS + 5))
  while pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      kill "$pid" 2>/dev/null || true; wait_gone 30 "$pid" || true
      die "drain: not done after ${BENCH_DRAIN_TIMEOUT}s (BENCH_DRAIN_TIMEOUT); log $WORK/worker-kafka-drain.log"
    fi
    if ((SECONDS >= next_log)); then
      done_rows=$(psql "$DATABASE_URL" -qtAX -c "SELECT count(*) FROM bookings WHERE event_id = '$event'")
      log "  drain: $done_rows of $queued decided"
      next_log=$((SECONDS + 5))
    fi
    sleep 0.2
  done
  t1=$(date +%s.%N)
  wait "$pid" || rc=$?
  ((rc == 0)) || { tail -20 "$WORK/worker-kafka-drain.log" >&2; die "drain: worker --drain exited $rc"; }
  APP_ENV=("${saved[@]}")
  # From the first decision to the last (the database's clock, per transaction), so the worker's
  # start and group join are not in it; the wall time from its start to its exit is kept beside.
  local row
  row=$(psql "$DATABASE_URL" -qtAX -c "SELECT json_build_object('decided', count(*),
      'confirmed', count(*) FILTER (WHERE status = 'confirmed'), 'pending', count(*) FILTER (WHERE status = 'pending'),
      'span_s', extract(epoch FROM max(decided_at) - min(decided_at)),
      'first_batch', count(*) FILTER (WHERE decided_at = (SELECT min(decided_at) FROM bookings WHERE event_id = '$event')))
      FROM bookings WHERE event_id = '$event'")
  row=$(jq -c --argjson queued "$queued" --argjson t0 "$t0" --argjson t1 "$t1" '. + {queued: $queued,
      wall_s: ($t1 - $t0), wall_rps: (if $t1 > $t0 then .decided / ($t1 - $t0) else null end),
      rps: (if .span_s > 0 then (.decided - .first_batch) / .span_s else null end)}' <<<"$row")
  record drain kafka "$row" concurrency="$BENCH_C_HIGH"
  log "  drain: $(jq -r '"\(.decided) of \(.queued) decided, \(.rps // 0 | floor) decisions/s (first to last decision), \(.wall_rps // 0 | floor)/s from worker start to exit"' <<<"$row")"
  [[ $(jq .decided <<<"$row") -ge "$queued" ]] || log "  drain: WARNING fewer decided than 202s answered"
}

# forget_redis_run: deletes this run's keys (every name starts with RUN_ID: the stage's prefix and
# redis-benchmark's) from the local Redis, a SCAN and UNLINKs in batches.
forget_redis_run() {
  local host port keys="$WORK/redis-run-keys"
  host=$(sed -E 's#^redis://([^:/]+).*#\1#' <<<"$REDIS_URL")
  port=$(sed -E 's#^redis://[^:/]+:([0-9]+).*#\1#' <<<"$REDIS_URL")
  redis-cli -h "$host" -p "$port" --scan --pattern "$RUN_ID*" >"$keys"
  xargs -r -d '\n' -n 500 redis-cli -h "$host" -p "$port" UNLINK <"$keys" >/dev/null
  log "redis: this run's $(wc -l <"$keys") keys deleted"
}
