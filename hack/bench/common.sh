# shellcheck shell=bash
# hack/bench.sh's helpers (sourced after lib.sh and local-app.sh): CPU accounting, the loadgen
# runs, result rows. Every row is one JSON line in $RESULTS; hack/bench_report.py reads them.
# shellcheck disable=SC2034,SC2004  # globals read by the other bench files; PID_OF is local-app.sh's map

PROFILER=
WATCH=()

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
    [[ -n "$p" && -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# timed NAME CMD...: runs CMD (stdout left to the caller) and writes $WORK/NAME.cpu.json: the
# cores each process kept busy on average while it ran (CPU seconds / wall seconds): the tool
# itself, the stores, and the processes named in WATCH. The tool's stderr goes to $WORK/NAME.err.
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

# run_loadgen NAME PORT FLAGS...: one loadgen run (its JSON in $WORK/NAME.json). The sale's
# invariants are checked unless FLAGS say --no-invariants; a violation (exit 2) is recorded and
# reported, not fatal here (bench.sh fails at the end), as is a capacity search with no answer
# (exit 3); any other failure stops the bench.
VIOLATIONS=()
run_loadgen() {
  local name="$1" port="$2" rc=0; shift 2
  timed "$name" "$BIN" loadgen --url "http://127.0.0.1:$port" --seed "$BENCH_SEED" \
    --tickets "$BENCH_TICKETS" --users "$BENCH_USERS" --max-quantity 1 --json --no-progress "$@" \
    >"$WORK/$name.json" || rc=$?
  if ((rc == 2)); then
    log "  $name: INVARIANTS VIOLATED (recorded; make bench fails at the end)"
    VIOLATIONS+=("$name")
  elif ((rc == 3)); then
    log "  $name: --find-capacity found no rate within the SLO (recorded as 0)"
  elif ((rc != 0)); then
    tail -c 2000 "$WORK/$name.json" >&2; tail -20 "$WORK/$name.err" >&2
    die "loadgen $name failed (exit $rc)"
  fi
}

# closed_loop NAME PORT CONCURRENCY [FLAGS...]: BENCH_SECONDS at CONCURRENCY workers.
closed_loop() {
  local name="$1" port="$2" c="$3"; shift 3
  log "loadgen $name: closed loop, ${BENCH_SECONDS}s at concurrency $c"
  run_loadgen "$name" "$port" --concurrency "$c" --duration "${BENCH_SECONDS}s" --warmup "${BENCH_WARMUP}s" "$@"
  log "  $name: $(jq -r '.run.report | "\(.throughput_rps | floor) req/s, p99 \(.latency_ms.p99) ms, errors \(.errors)"' "$WORK/$name.json")$(invariants_note "$WORK/$name.json")"
}

invariants_note() {
  jq -r 'if .run.invariants == null then "" elif .run.invariants.ok then ", invariants ok" else ", INVARIANTS VIOLATED" end' "$1"
}

# loadgen_row FILE: the measured numbers of a loadgen run, by answer class (2xx, 409, 503,
# errors), with the p99 of the admitted (2xx) answers where this loadgen reports it.
loadgen_row() {
  jq -c --slurpfile cpu "${1%.json}.cpu.json" '.run as $r | $r.report as $p
    | ($p.answers | to_entries) as $a
    | def count(f): [$a[] | select(.key | f) | .value] | add // 0;
    {rps: $p.throughput_rps, p50_ms: $p.latency_ms.p50, p99_ms: $p.latency_ms.p99,
     requests: $p.requests, errors: $p.errors, missed_sends: $p.missed_sends, answers: $p.answers,
     offered_rps: ($p.rate // null), max_in_flight: ($p.max_in_flight // $p.concurrency),
     concurrency: ($p.concurrency // null),
     classes: {"2xx": count(test("^2")), "409": count(test("^409")), "503": count(test("^503")),
               "503_retry_after": count(test("^503 .*Retry-After")),
               errors: (count(test("^(2|409|503)") | not) + $p.missed_sends)},
     admitted_p99_ms: ($p.admitted_latency_ms.p99 // null),
     admitted_rps: (if $p.duration_s > 0 then count(test("^2")) / $p.duration_s else null end),
     drain_rps: ($r.invariants.drain_rps // null), invariants_ok: ($r.invariants.ok // null),
     event_id: $r.event_id, cores: $cpu[0]}' "$1"
}

# record KIND STAGE JSON [KEY=VALUE...]: one result row; KEY=VALUE pairs are added as strings or
# numbers (see hack/bench_report.py for the fields).
record() {
  local kind="$1" stage="$2" json="$3" kv k v; shift 3
  json=$(jq -c --arg kind "$kind" --arg stage "$stage" '. + {kind: $kind, stage: $stage}' <<<"$json")
  for kv in "$@"; do
    k=${kv%%=*} v=${kv#*=}
    json=$(jq -c --arg k "$k" --arg v "$v" '. + {($k): ($v | tonumber? // $v)}' <<<"$json")
  done
  echo "$json" >>"$RESULTS"
}

# rps_of KIND STAGE [VARIANT] [CONCURRENCY]: req/s of a row recorded earlier in this run (empty if none).
rps_of() {
  jq -rs --arg kind "$1" --arg stage "$2" --arg mode "${3:-}" --arg c "${4:-}" \
    '[.[] | select(.kind == $kind and .stage == $stage and (($mode == "") or (.variant == $mode))
      and (($c == "") or ((.concurrency | tostring) == $c)))] | last | .rps // empty' "$RESULTS"
}

# percentiles FILE: p50 and p99 (ms) of one latency per line in microseconds.
percentiles() {
  sort -n "$1" | awk '{v[NR]=$1} END {
    if (NR == 0) { print "{\"p50_ms\":null,\"p99_ms\":null}"; exit }
    i50 = int(NR*0.50); if (i50 < 1) i50 = 1; i99 = int(NR*0.99); if (i99 < 1) i99 = 1
    printf "{\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", v[i50]/1000, v[i99]/1000 }'
}

# new_event NAME PORT: creates an event too large to sell out through the API on PORT; prints its id.
new_event() {
  curl -fsS --max-time 10 -H 'content-type: application/json' \
    -H "authorization: Bearer $("$BIN" token --user bench --admin)" \
    -d "{\"name\":\"$1 $RUN_ID\",\"tickets\":$BENCH_TICKETS}" "http://127.0.0.1:$2/events" | jq -r .id
}

# spawn NAME CMD...: like start, without waiting for a health URL (a process that runs to its end).
spawn() {
  local name="$1"; shift
  ("$@") >>"$WORK/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  PID_OF[$name]=$STARTED
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
    echo "# $1 under make bench (perf record -e cpu-clock, ${BENCH_SECONDS}s, concurrency $BENCH_C)"
    echo "## by thread"
    # `|| true`: head closing the pipe early is not a failure.
    perf report -i "$WORK/perf-$1.data" --no-children -g none --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10 || true
    echo "## by function (self time)"
    perf report -i "$WORK/perf-$1.data" --no-children -g none --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 || true
    echo "## samples: $(perf report -i "$WORK/perf-$1.data" --stdio --header-only 2>/dev/null | sed -n 's/^# Samples: //p' | head -1) at 499 Hz"
  } >"$BENCH_OUT/profile-$1.txt"
  # The samples themselves, with call graphs, for `perf report -i ... -G` (git-ignored).
  mv "$WORK/perf-$1.data" "$BENCH_OUT/perf-$1.data"
}
