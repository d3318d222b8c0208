#!/usr/bin/env bash
# `make bench`: every inventory stage measured side by side, each next to the limit of its own
# store measured in the same run, on the local services (hack/services.sh):
#   stage postgres  booking-app + loadgen    vs  pgbench running the stage's transaction
#   stage redis     booking-app + loadgen    vs  redis-benchmark EVALSHA of the stage's Lua script
#   stage kafka     acceptance (202/s)       vs  a bare axum endpoint (booking-app bare-serve)
#                   worker drain (decisions/s) next to the acceptance rate
# Same concurrency everywhere. Writes bench/results.{md,json,svg} and prints the table.
#
# Knobs (environment): BENCH_SECONDS (measured seconds per run, default 10), BENCH_WARMUP (2),
# BENCH_CONCURRENCY (16), BENCH_SEED (42), BENCH_STAGES ("postgres redis kafka"),
# BENCH_OUT (bench/), BENCH_PERF=1 (also profile booking-app per stage: bench/profile-STAGE.txt).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECONDS="${BENCH_SECONDS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-2}"
BENCH_CONCURRENCY="${BENCH_CONCURRENCY:-16}"
BENCH_SEED="${BENCH_SEED:-42}"
BENCH_STAGES="${BENCH_STAGES:-postgres redis kafka}"
BENCH_OUT="${BENCH_OUT:-$REPO_ROOT/bench}"
BENCH_PERF="${BENCH_PERF:-0}"
# The event is large enough never to sell out: the runs measure booking work, not 409s.
BENCH_TICKETS=100000000
BENCH_USERS=1000000
APP_PORT=18181
WORKER_PORT=18182
BARE_PORT=18190

# shellcheck source=local-app.sh
. "$REPO_ROOT/hack/local-app.sh"
local_app_begin bench "$APP_PORT" "$WORKER_PORT" "$BARE_PORT"
RESULTS="$WORK/results.jsonl"
PROFILER=
# Every booking-app of the bench gets a pool as large as the load's concurrency.
APP_ENV=(DB_POOL_SIZE="$BENCH_CONCURRENCY")

APP_READY="http://127.0.0.1:$APP_PORT/readyz"
WORKER_READY="http://127.0.0.1:$WORKER_PORT/healthz"

# cpu_ticks LABEL: CPU ticks used so far by a store (postgres, redis, kafka: every process of
# it) or by a process this script started (its start NAME). Reaped children count too: the
# backends pgbench's connections start are gone by the end, their time is in the postmaster's.
cpu_ticks() {
  local pids=() p t=0
  case "$1" in
    postgres) mapfile -t pids < <(pgrep -x postgres) ;;
    redis) mapfile -t pids < <(pgrep -x redis-server) ;;
    kafka) mapfile -t pids < <(pgrep -f 'kafka\.Kafka') ;;
    *) pids=("${PID_OF[$1]:-}") ;;
  esac
  for p in "${pids[@]}"; do
    [[ -n "$p" && -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat")))
  done
  echo "$t"
}

# timed NAME CMD...: runs CMD (stdout left to the caller) and writes $WORK/NAME.cpu.json: the
# cores each process kept busy on average while it ran (CPU seconds / wall seconds): the tool
# itself, the stores, and the processes named in WATCH. The tool's stderr goes to $WORK/NAME.err.
WATCH=()
timed() {
  local name="$1"; shift
  local labels=(postgres redis kafka "${WATCH[@]}") l hz rc=0
  local -A t0
  hz=$(getconf CLK_TCK)
  for l in "${labels[@]}"; do t0[$l]=$(cpu_ticks "$l"); done
  local TIMEFORMAT='%U %S %R'
  { time "$@" 2>"$WORK/$name.err"; } 2>"$WORK/$name.time" || rc=$?
  local user sys wall json
  read -r user sys wall <"$WORK/$name.time"
  json=$(jq -n --argjson u "$user" --argjson s "$sys" --argjson w "$wall" '{tool: (($u + $s) / $w)}')
  for l in "${labels[@]}"; do
    json=$(jq -c --arg l "$l" --argjson t "$(( $(cpu_ticks "$l") - t0[$l] ))" --argjson hz "$hz" --argjson w "$wall" \
      '. + {($l): ($t / $hz / $w)}' <<<"$json")
  done
  echo "$json" >"$WORK/$name.cpu.json"
  return "$rc"
}

# loadgen NAME PORT [FLAGS...]: closed loop at the bench concurrency; JSON in $WORK/NAME.json.
loadgen() {
  local name="$1" port="$2"; shift 2
  log "loadgen $name: ${BENCH_SECONDS}s at concurrency $BENCH_CONCURRENCY"
  timed "$name" "$BIN" loadgen --url "http://127.0.0.1:$port" --concurrency "$BENCH_CONCURRENCY" \
    --duration "${BENCH_SECONDS}s" --warmup "${BENCH_WARMUP}s" --seed "$BENCH_SEED" \
    --tickets "$BENCH_TICKETS" --users "$BENCH_USERS" --json --no-progress "$@" \
    >"$WORK/$name.json" || {
    local rc=$?
    cat "$WORK/$name.json" "$WORK/$name.err" >&2
    die "loadgen $name failed (exit $rc)"
  }
}

# profile NAME PID: with BENCH_PERF=1, samples booking-app's stacks while loadgen runs (perf
# record on the cpu-clock: hardware counters are often missing in VMs) and writes the hottest
# threads and functions to bench/profile-NAME.txt. Waited for by profile_report.
profile() {
  [[ "$BENCH_PERF" == 1 ]] || return 0
  command -v perf >/dev/null || apt_install linux-perf
  perf record -e cpu-clock -F 499 -g -p "$2" -o "$WORK/perf-$1.data" \
    -- sleep "$((BENCH_WARMUP + BENCH_SECONDS))" >/dev/null 2>&1 &
  PROFILER=$!
}

profile_report() {
  [[ "$BENCH_PERF" == 1 ]] || return 0
  wait "$PROFILER" 2>/dev/null || true
  {
    echo "# booking-app stage $1 under make bench (perf record -e cpu-clock, ${BENCH_SECONDS}s)"
    echo "## by thread"
    # `|| true`: head closing the pipe early is not a failure.
    perf report -i "$WORK/perf-$1.data" --no-children -g none --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10 || true
    echo "## by function (self time)"
    perf report -i "$WORK/perf-$1.data" --no-children -g none --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 || true
  } >"$BENCH_OUT/profile-$1.txt"
}

# record KIND STAGE JSON: one result row (see hack/bench_report.py for the fields).
record() { jq -c --arg kind "$1" --arg stage "$2" '. + {kind: $kind, stage: $stage}' <<<"$3" >>"$RESULTS"; }

# From loadgen's JSON: the measured numbers of its run.
loadgen_row() {
  jq -c --slurpfile cpu "${1%.json}.cpu.json" '.run | {rps: .report.throughput_rps, p50_ms: .report.latency_ms.p50,
    p99_ms: .report.latency_ms.p99, requests: .report.requests, errors: .report.errors, answers: .report.answers,
    drain_rps: (.invariants.drain_rps // null), invariants_ok: (.invariants.ok // null), cores: $cpu[0]}' "$1"
}

# percentiles FILE: p50 and p99 (ms) of one latency per line in microseconds.
percentiles() {
  sort -n "$1" | awk '{v[NR]=$1} END {
    if (NR == 0) { print "{\"p50_ms\":null,\"p99_ms\":null}"; exit }
    i50 = int(NR*0.50); if (i50 < 1) i50 = 1; i99 = int(NR*0.99); if (i99 < 1) i99 = 1
    printf "{\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", v[i50]/1000, v[i99]/1000 }'
}

# ---------------------------------------------------------------- stage postgres vs pgbench

bench_postgres() {
  start app-postgres "$APP_READY" app_env postgres "$APP_PORT" "$BIN" serve
  profile postgres "${PID_OF[app-postgres]}"
  WATCH=(app-postgres)
  loadgen postgres "$APP_PORT"
  record stage postgres "$(loadgen_row "$WORK/postgres.json")"
  profile_report postgres
  stop app-postgres

  WATCH=()
  # The same transaction on the same schema, straight from pgbench, at the same concurrency.
  local event pg_url="${DATABASE_URL}"
  event=$(psql "$pg_url" -qtAX -c "INSERT INTO events (id, name, tickets, remaining) \
    VALUES (gen_random_uuid(), 'pgbench $RUN_ID', $BENCH_TICKETS, $BENCH_TICKETS) RETURNING id" | head -1)
  log "pgbench: ${BENCH_SECONDS}s at concurrency $BENCH_CONCURRENCY (bench/pgbench-booking.sql)"
  (cd "$WORK" && timed pgbench pgbench "$pg_url" -n -M prepared -c "$BENCH_CONCURRENCY" -j 2 -T "$BENCH_SECONDS" \
    -D event="$event" -D run="$RUN_ID" -f "$REPO_ROOT/bench/pgbench-booking.sql" -l --log-prefix=pglat \
    >"$WORK/pgbench.out") || { cat "$WORK/pgbench.out" "$WORK/pgbench.err" >&2; die "pgbench failed"; }
  local tps
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/pgbench.out" | head -1)
  cat "$WORK"/pglat.* | awk '{print $3}' >"$WORK/pglat.txt"
  record limit postgres "$(jq -c --argjson rps "$tps" --slurpfile cpu "$WORK/pgbench.cpu.json" \
    '. + {rps: $rps, tool: "pgbench", cores: $cpu[0]}' <<<"$(percentiles "$WORK/pglat.txt")")"
}

# ---------------------------------------------------------------- stage redis vs redis-benchmark

# rb_json: redis-benchmark's --csv result line as JSON. The first field is the command itself,
# commas and quotes included, so the numbers are read from the end:
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
rb_json() {
  awk -F, '{ gsub(/"/, "", $(NF-6)); gsub(/"/, "", $(NF-3)); gsub(/"/, "", $(NF-1))
    printf "{\"rps\":%s,\"p50_ms\":%s,\"p99_ms\":%s,\"tool\":\"redis-benchmark\"}\n", $(NF-6), $(NF-3), $(NF-1) }'
}

bench_redis() {
  start app-redis "$APP_READY" app_env redis "$APP_PORT" "$BIN" serve
  start worker-redis "$WORKER_READY" app_env redis "$WORKER_PORT" "$BIN" worker
  profile redis "${PID_OF[app-redis]}"
  WATCH=(app-redis worker-redis)
  loadgen redis "$APP_PORT"
  record stage redis "$(loadgen_row "$WORK/redis.json")"
  profile_report redis
  stop worker-redis
  stop app-redis

  WATCH=()
  # The stage's own script, by EVALSHA, on keys laid out as the stage lays them out.
  local host port sha script="$REPO_ROOT/booking-app/src/stage/booking.lua" base
  host=$(sed -E 's#^redis://([^:/]+).*#\1#' <<<"$REDIS_URL")
  port=$(sed -E 's#^redis://[^:/]+:([0-9]+).*#\1#' <<<"$REDIS_URL")
  local cli=(redis-cli -h "$host" -p "$port")
  sha=$("${cli[@]}" SCRIPT LOAD "$(cat "$script")")
  base="$RUN_ID-rb:{00000000-0000-4000-8000-000000000001}"
  "${cli[@]}" HSET "$base:inventory" remaining "$BENCH_TICKETS" limit -1 >/dev/null
  local answer='{"id":"00000000-0000-4000-8000-000000000002","event_id":"00000000-0000-4000-8000-000000000001","user_id":"user-1","quantity":2,"status":"confirmed","created_at":"2026-11-25T12:00:00Z"}'
  # The call as the stage makes it for a keyed booking (booking.lua's header): KEYS[1..5] the
  # event's (the inventory hash, then keys of their own), KEYS[6] the idempotency key's claim;
  # ARGV user, quantity, idempotency key, the booking JSON, the booking's id, the event's id and
  # the claim's TTL. Each call gets a new key (and claim): a first use, as loadgen's requests.
  # The arity is read from the script's text, so a change of its interface stops the bench here.
  local nkeys nargs i cmd claim_prefix="$RUN_ID-rb:idempotency-key:"
  nkeys=$(grep -o 'KEYS\[[0-9]*\]' "$script" | tr -dc '0-9\n' | sort -n | tail -1)
  nargs=$(grep -o 'ARGV\[[0-9]*\]' "$script" | tr -dc '0-9\n' | sort -n | tail -1)
  ((nkeys == 6 && nargs == 7)) ||
    die "booking.lua takes $nkeys keys and $nargs arguments, this call knows 6 and 7: update bench.sh"
  cmd=(EVALSHA "$sha" "$nkeys" "$base:inventory")
  for ((i = 2; i <= 5; i++)); do cmd+=("$base:k$i"); done
  cmd+=("$claim_prefix{rb-__rand_int__}")
  cmd+=("user-__rand_int__" 2 "rb-__rand_int__" "$answer" "b-__rand_int__" 00000000-0000-4000-8000-000000000001 86400)
  # One call by hand first: redis-benchmark counts error replies as answers.
  local verdict
  verdict=$("${cli[@]}" "${cmd[@]//__rand_int__/probe}" 2>&1 | head -1)
  [[ "$verdict" == confirmed ]] || die "EVALSHA booking.lua answered '$verdict', not 'confirmed': has its interface changed?"
  # redis-benchmark runs a request count, not a time: a short pilot sizes the real run.
  local pilot n
  pilot=$(redis-benchmark -h "$host" -p "$port" -c "$BENCH_CONCURRENCY" -n 5000 -r 100000000 --csv "${cmd[@]}" |
    tail -1 | rb_json | jq .rps)
  n=$(awk -v r="$pilot" -v s="$BENCH_SECONDS" 'BEGIN { n = int(r*s); if (n < 10000) n = 10000; print n }')
  log "redis-benchmark: EVALSHA booking.lua x $n at concurrency $BENCH_CONCURRENCY"
  timed redis-benchmark redis-benchmark -h "$host" -p "$port" -c "$BENCH_CONCURRENCY" -n "$n" -r 100000000 --csv \
    "${cmd[@]}" >"$WORK/redis-benchmark.csv"
  record limit redis "$(tail -1 "$WORK/redis-benchmark.csv" | rb_json |
    jq -c --slurpfile cpu "$WORK/redis-benchmark.cpu.json" '. + {cores: $cpu[0]}')"
  "${cli[@]}" DEL "${cmd[@]:3:5}" >/dev/null
  "${cli[@]}" --scan --pattern "$claim_prefix*" | xargs -r -n 1000 "${cli[@]}" UNLINK >/dev/null
}

# ---------------------------------------------------------------- stage kafka vs bare axum

bench_kafka() {
  start app-kafka "$APP_READY" app_env kafka "$APP_PORT" "$BIN" serve
  start worker-kafka "$WORKER_READY" app_env kafka "$WORKER_PORT" "$BIN" worker
  profile kafka "${PID_OF[app-kafka]}"
  WATCH=(app-kafka worker-kafka)
  # loadgen then follows every 202 to its decision: that wait is the drain measurement.
  loadgen kafka "$APP_PORT"
  record stage kafka "$(loadgen_row "$WORK/kafka.json")"
  profile_report kafka
  stop worker-kafka
  stop app-kafka

  start bare "http://127.0.0.1:$BARE_PORT/readyz" "$BIN" bare-serve --listen "127.0.0.1:$BARE_PORT"
  WATCH=(bare)
  loadgen bare "$BARE_PORT" --no-invariants
  record limit kafka "$(loadgen_row "$WORK/bare.json" | jq -c '. + {tool: "bare axum"}')"
  stop bare
}

# ---------------------------------------------------------------- run and report

mkdir -p "$BENCH_OUT"
for stage in $BENCH_STAGES; do
  case "$stage" in
    postgres | redis | kafka) "bench_$stage" ;;
    *) die "unknown stage $stage in BENCH_STAGES" ;;
  esac
done

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
jq -n --slurpfile rows "$RESULTS" \
  --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" --arg cores "$(nproc)" --arg cpu "${cpu_model:-unknown}" \
  --arg kernel "$(uname -sr)" --arg commit "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --argjson seconds "$BENCH_SECONDS" --argjson warmup "$BENCH_WARMUP" --argjson concurrency "$BENCH_CONCURRENCY" \
  --argjson seed "$BENCH_SEED" \
  '{date: $date, machine: {cores: ($cores|tonumber), cpu: $cpu, kernel: $kernel}, commit: $commit,
    parameters: {seconds: $seconds, warmup: $warmup, concurrency: $concurrency, seed: $seed}, rows: $rows}' \
  >"$BENCH_OUT/results.json"
python3 "$REPO_ROOT/hack/bench_report.py" "$BENCH_OUT/results.json" "$BENCH_OUT/results.md" "$BENCH_OUT/results.svg"
cat "$BENCH_OUT/results.md"
