# shellcheck shell=bash
# hack/bench.sh, the references (sourced): what each stage is compared with, measured in the same
# run at the same concurrency. Rows: kind limit (stage bare | postgres | redis | kafka) and kind
# client (wrk, the independent HTTP client next to loadgen).
#   bare      booking-app bare-serve (axum, no store) driven by loadgen, and by wrk
#   postgres  pgbench -M prepared running bench/pgbench-booking.sql (the stage's transaction)
#   redis     redis-benchmark EVALSHA of booking-app/src/stage/booking.lua
#   kafka     org.apache.kafka.tools.ProducerPerformance, records shaped like the stage's
# shellcheck disable=SC2034  # WATCH is read by common.sh's timed

# ---------------------------------------------------------------- bare axum, loadgen and wrk

# wrk_run NAME PORT EVENT CONNECTIONS: wrk with hack/bench/wrk-booking.lua (a fresh key per
# request, quantity 1, users wrk-0 … wrk-9999 each with a token signed by this run's secret);
# prints its JSON summary with the cores.
wrk_run() {
  local name="$1" port="$2" event="$3" c="$4"
  command -v wrk >/dev/null || apt_install wrk
  [[ -s "$WORK/wrk-tokens" ]] || "$BIN" token --user wrk --count 10000 --ttl 24h >"$WORK/wrk-tokens"
  log "wrk $name: ${BENCH_SECONDS}s at $c connections, $BENCH_WRK_THREADS threads"
  timed "$name" wrk -t "$BENCH_WRK_THREADS" -c "$c" -d "${BENCH_SECONDS}s" --timeout 30s \
    -s "$REPO_ROOT/hack/bench/wrk-booking.lua" "http://127.0.0.1:$port" -- "$event" "$RUN_ID-$name" "$WORK/wrk-tokens" \
    >"$WORK/$name.out" || { cat "$WORK/$name.out" "$WORK/$name.err" >&2; die "wrk $name failed"; }
  grep '^{' "$WORK/$name.out" | tail -1 | jq -c --slurpfile cpu "$WORK/$name.cpu.json" '. + {tool: "wrk", cores: $cpu[0]}'
}

bench_bare() {
  local c row
  start bare "http://127.0.0.1:$BARE_PORT/readyz" "$BIN" bare-serve --listen "127.0.0.1:$BARE_PORT"
  WATCH=(bare)
  for c in $BENCH_CONCURRENCIES; do
    closed_loop "bare-c$c" "$BARE_PORT" "$c" --no-invariants
    record limit bare "$(loadgen_row "$WORK/bare-c$c.json")" tool="bare axum (loadgen)" concurrency="$c"
  done
  # Is loadgen the bottleneck? The same server at the same concurrency under wrk.
  row=$(wrk_run "bare-wrk-c$BENCH_C_HIGH" "$BARE_PORT" 00000000-0000-4000-8000-000000000001 "$BENCH_C_HIGH")
  record client bare "$row" concurrency="$BENCH_C_HIGH"
  log "  wrk on bare: $(jq -r '"\(.rps | floor) req/s, p99 \(.p99_ms) ms, non-2xx \(.non_2xx)"' <<<"$row")"
  stop bare
  WATCH=()
}

# bench_wrk_stage STAGE [VARIANT]: wrk against the stage (cross-check of loadgen's number; wrk
# checks no invariant). Stage kafka runs without a worker on a topic of its own, so the backlog
# wrk leaves is never decided into the other runs' time.
bench_wrk_stage() {
  local stage="$1" variant="${2:-}" env event row name="wrk-$1${2:+-$2}-c$BENCH_C_HIGH"
  env=$(variant_env "$stage" "$variant")
  local extra=()
  [[ $stage == kafka ]] && extra=(KAFKA_TOPIC="$RUN_ID-wrk" KAFKA_CONSUMER_GROUP="$RUN_ID-wrk-workers")
  # shellcheck disable=SC2086
  NO_WORKER=$([[ $stage == kafka ]] && echo 1 || echo 0) app_up "$stage" "$BENCH_C_HIGH" $env "${extra[@]}"
  event=$(new_event "wrk $stage" "$APP_PORT")
  row=$(wrk_run "$name" "$APP_PORT" "$event" "$BENCH_C_HIGH")
  record client "$stage" "$row" variant="$variant" concurrency="$BENCH_C_HIGH"
  log "  $name: $(jq -r '"\(.rps | floor) req/s, p99 \(.p99_ms) ms, non-2xx \(.non_2xx)"' <<<"$row")"
  app_down "$stage"
}

# ---------------------------------------------------------------- Postgres: pgbench

# pg_headroom: connections Postgres still accepts (max_connections less those in use and the
# superuser reserve).
pg_headroom() {
  psql "$DATABASE_URL" -qtAX -c "SELECT current_setting('max_connections')::int
    - current_setting('superuser_reserved_connections')::int - count(*) FROM pg_stat_activity"
}

bench_pgbench() {
  local c="$1" event tps free
  free=$(pg_headroom)
  ((free >= c)) || die "pgbench -c $c: Postgres accepts only $free more connections (max_connections is \
$(psql "$DATABASE_URL" -qtAX -c 'SHOW max_connections')); hack/services.sh sets 600 from its next start: \
hack/services.sh restart postgres (when nobody else is using it)"
  # The same transaction on the same schema, straight from pgbench, at the same concurrency.
  event=$(psql "$DATABASE_URL" -qtAX -c "INSERT INTO events (id, name, tickets, remaining) \
    VALUES (gen_random_uuid(), 'pgbench $RUN_ID', $BENCH_TICKETS, $BENCH_TICKETS) RETURNING id" | head -1)
  log "pgbench: ${BENCH_SECONDS}s at concurrency $c (bench/pgbench-booking.sql)"
  rm -f "$WORK"/pglat.*
  (cd "$WORK" && timed "pgbench-c$c" pgbench "$DATABASE_URL" -n -M prepared -c "$c" -j 2 -T "$BENCH_SECONDS" \
    -D event="$event" -D run="$RUN_ID-c$c" -f "$REPO_ROOT/bench/pgbench-booking.sql" -l --log-prefix=pglat \
    >"$WORK/pgbench-c$c.out") || { cat "$WORK/pgbench-c$c.out" "$WORK/pgbench-c$c.err" >&2; die "pgbench failed"; }
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/pgbench-c$c.out" | head -1)
  cat "$WORK"/pglat.* | awk '{print $3}' >"$WORK/pglat.txt"
  record limit postgres "$(jq -c --argjson rps "$tps" --slurpfile cpu "$WORK/pgbench-c$c.cpu.json" \
    '. + {rps: $rps, tool: "pgbench", cores: $cpu[0]}' <<<"$(percentiles "$WORK/pglat.txt")")" concurrency="$c"
  log "  pgbench -c $c: $tps tps"
}

# ---------------------------------------------------------------- Redis: redis-benchmark

# rb_json: redis-benchmark's --csv result line as JSON. The first field is the command itself,
# commas and quotes included, so the numbers are read from the end:
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
rb_json() {
  awk -F, '{ gsub(/"/, "", $(NF-6)); gsub(/"/, "", $(NF-3)); gsub(/"/, "", $(NF-1))
    printf "{\"rps\":%s,\"p50_ms\":%s,\"p99_ms\":%s,\"tool\":\"redis-benchmark\"}\n", $(NF-6), $(NF-3), $(NF-1) }'
}

bench_redis_benchmark() {
  local c="$1" host port sha script="$REPO_ROOT/booking-app/src/stage/booking.lua" base
  host=$(sed -E 's#^redis://([^:/]+).*#\1#' <<<"$REDIS_URL")
  port=$(sed -E 's#^redis://[^:/]+:([0-9]+).*#\1#' <<<"$REDIS_URL")
  local cli=(redis-cli -h "$host" -p "$port")
  sha=$("${cli[@]}" SCRIPT LOAD "$(cat "$script")")
  base="$RUN_ID-rb$c:{00000000-0000-4000-8000-000000000001}"
  "${cli[@]}" HSET "$base:inventory" remaining "$BENCH_TICKETS" limit -1 >/dev/null
  local answer='{"id":"00000000-0000-4000-8000-000000000002","event_id":"00000000-0000-4000-8000-000000000001","user_id":"user-1","quantity":1,"status":"confirmed","created_at":"2026-11-25T12:00:00Z"}'
  # The call as the stage makes it for a keyed booking (booking.lua's header): KEYS[1..5] the
  # event's (the inventory hash, then keys of their own), KEYS[6] the idempotency key's claim;
  # ARGV user, quantity, idempotency key, the booking JSON, the booking's id, the event's id and
  # the claim's TTL. Each call gets a new key (and claim): a first use, as loadgen's requests.
  # The arity is read from the script's text, so a change of its interface stops the bench here.
  local nkeys nargs i cmd claim_prefix="$RUN_ID-rb$c:idempotency-key:"
  nkeys=$(grep -o 'KEYS\[[0-9]*\]' "$script" | tr -dc '0-9\n' | sort -n | tail -1)
  nargs=$(grep -o 'ARGV\[[0-9]*\]' "$script" | tr -dc '0-9\n' | sort -n | tail -1)
  ((nkeys == 6 && nargs == 7)) ||
    die "booking.lua takes $nkeys keys and $nargs arguments, this call knows 6 and 7: update hack/bench/references.sh"
  cmd=(EVALSHA "$sha" "$nkeys" "$base:inventory")
  for ((i = 2; i <= 5; i++)); do cmd+=("$base:k$i"); done
  cmd+=("$claim_prefix{rb-__rand_int__}")
  # The claims live 10 minutes rather than the stage's day (the TTL does not change what the call
  # costs): they expire by themselves, where deleting them took a scan of the shared Redis.
  cmd+=("user-__rand_int__" 1 "rb-__rand_int__" "$answer" "b-__rand_int__" 00000000-0000-4000-8000-000000000001 600)
  # One call by hand first: redis-benchmark counts error replies as answers.
  local verdict
  verdict=$("${cli[@]}" "${cmd[@]//__rand_int__/probe}" 2>&1 | head -1)
  [[ "$verdict" == confirmed ]] || die "EVALSHA booking.lua answered '$verdict', not 'confirmed': has its interface changed?"
  # redis-benchmark runs a request count, not a time: a short pilot sizes the real run.
  local pilot n
  pilot=$(redis-benchmark -h "$host" -p "$port" -c "$c" -n 5000 -r 100000000 --csv "${cmd[@]}" |
    tail -1 | rb_json | jq .rps)
  n=$(awk -v r="$pilot" -v s="$BENCH_SECONDS" 'BEGIN { n = int(r*s); if (n < 10000) n = 10000; print n }')
  log "redis-benchmark: EVALSHA booking.lua x $n at concurrency $c"
  timed "redis-benchmark-c$c" redis-benchmark -h "$host" -p "$port" -c "$c" -n "$n" -r 100000000 --csv \
    "${cmd[@]}" >"$WORK/redis-benchmark-c$c.csv"
  record limit redis "$(tail -1 "$WORK/redis-benchmark-c$c.csv" | rb_json |
    jq -c --slurpfile cpu "$WORK/redis-benchmark-c$c.cpu.json" '. + {cores: $cpu[0]}')" concurrency="$c"
  log "  redis-benchmark -c $c: $(tail -1 "$WORK/redis-benchmark-c$c.csv" | rb_json | jq -r .rps) calls/s"
  "${cli[@]}" DEL "${cmd[@]:3:5}" >/dev/null
}

# ---------------------------------------------------------------- Kafka: ProducerPerformance

kafka_tool() { java -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$KAFKA_LIB/*" "$@"; }

# pp_json: ProducerPerformance's steady-state summary line (the one after --warmup-records) as JSON:
# "N steady state records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency,
#  P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
pp_json() {
  grep 'steady state records sent' | tail -1 | sed 's/,//g' |
    awk '{ printf "{\"records\":%s,\"rps\":%s,\"p50_ms\":%s,\"p99_ms\":%s,\"tool\":\"ProducerPerformance\"}\n", $1, $6, $18, $24 }'
}

bench_kafka_producer() {
  local topic="$RUN_ID-perf" payload="$WORK/kafka-records.txt" i pilot n row
  # 1,000 payloads shaped like the stage's BookingRecord (booking-app/src/stage/kafka/record.rs)
  # for a loadgen request: fresh ids, users and keys, one event; all keyed alike (one event =
  # one partition), on a one-partition topic, as the stage produces one event's requests.
  for ((i = 1; i <= 1000; i++)); do
    printf '{"v":1,"id":"%s","event_id":"6f0d4bd4-9d44-4c7a-8a0e-2b5a3c3f7a11","user_id":"user-%d","quantity":1,"idempotency_key":"lg-0b8f2a0c6a6e4f0f9c3e5b7d1a2c4e6f-%d","accepted_at":"2026-12-01T18:00:00.%09dZ"}\n' \
      "$(cat /proc/sys/kernel/random/uuid)" "$((RANDOM * 32768 + RANDOM))" "$((i * 7919))" "$((RANDOM * 30011))"
  done >"$payload"
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" --create --topic "$topic" \
    --partitions 1 --replication-factor 1 >/dev/null
  # acks=all and idempotence as the stage's producer; batching left at the producer's defaults:
  # this is the broker's limit, not a copy of the stage's tuning. ONE --command-property flag.
  local props extra
  read -ra extra <<<"$BENCH_KAFKA_PERF_PROPS"
  props=(acks=all enable.idempotence=true client.id="$RUN_ID-perf" "${extra[@]}")
  local perf=(org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$KAFKA_BROKERS" --topic "$topic"
    --throughput -1 --payload-file "$payload" --key-distribution range --record-key-range 1 --command-property "${props[@]}")
  pilot=$(kafka_tool "${perf[@]}" --num-records 50000 --warmup-records 10000 2>&1 | pp_json | jq '.rps // 0')
  n=$(awk -v r="$pilot" -v s="$BENCH_SECONDS" 'BEGIN { n = int(r*s); if (n < 100000) n = 100000; print n }')
  log "ProducerPerformance: $n records (acks=all, idempotent, ~$(awk 'NR==1{print length}' "$payload") B JSON, 1 partition)"
  timed kafka-producer-perf kafka_tool "${perf[@]}" --num-records "$n" --warmup-records "$((n / 10))" \
    >"$WORK/kafka-producer-perf.out" || { tail -20 "$WORK/kafka-producer-perf.out" "$WORK/kafka-producer-perf.err" >&2; die "ProducerPerformance failed"; }
  row=$(pp_json <"$WORK/kafka-producer-perf.out" | jq -c --slurpfile cpu "$WORK/kafka-producer-perf.cpu.json" '. + {cores: $cpu[0]}')
  [[ -n "$row" ]] || { cat "$WORK/kafka-producer-perf.out" >&2; die "no steady-state line from ProducerPerformance"; }
  record limit kafka "$row" concurrency=1
  log "  ProducerPerformance: $(jq -r .rps <<<"$row") records/s"
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" --delete --topic "$topic" >/dev/null 2>&1 || true
}
