#!/usr/bin/env bash
# `make demo STAGE=postgres|redis|kafka`: the booking system's main job on one machine with no
# cluster and no container engine. Local services up, booking-app of that stage (and its worker,
# as a separate process as the operator runs it) started, a sale of a few thousand tickets driven
# by loadgen with its live progress line, the invariant check, a short summary; everything the
# demo started is stopped at the end (the shared services stay up: `make services-down`).
#
# Knobs (environment): STAGE (redis), DEMO_TICKETS (5000), DEMO_PER_USER_LIMIT (4),
# DEMO_USERS (20000), DEMO_CONCURRENCY (32), DEMO_DURATION (10s), DEMO_PORT (18080).
# shellcheck source-path=SCRIPTDIR source=lib.sh
# shellcheck disable=SC2317  # cleanup and app_env run through trap and start
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STAGE="${STAGE:-redis}"
TICKETS="${DEMO_TICKETS:-5000}"
PER_USER_LIMIT="${DEMO_PER_USER_LIMIT:-4}"
USERS="${DEMO_USERS:-20000}"
CONCURRENCY="${DEMO_CONCURRENCY:-32}"
DURATION="${DEMO_DURATION:-10s}"
APP_PORT="${DEMO_PORT:-18080}"
WORKER_PORT=$((APP_PORT + 1))

case "$STAGE" in postgres | redis | kafka) ;; *) die "STAGE must be postgres, redis or kafka (got '$STAGE')" ;; esac
for port in $APP_PORT $WORKER_PORT; do
  port_busy "$port" && die "port $port is busy ($(port_owner "$port")): another demo running? (DEMO_PORT=...)"
done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ((${#PIDS[@]})) && { wait_gone 30 "${PIDS[@]}" || log "some processes did not stop: ${PIDS[*]}"; }
  rm -rf "$WORK"
}
trap cleanup EXIT

"$REPO_ROOT/hack/services.sh" up
# shellcheck disable=SC1091
. "$REPO_ROOT/hack/.services.env"

log "building booking-app (release)"
(cd "$REPO_ROOT" && cargo build --release --quiet -p booking-app --bin booking-app)
BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/booking-app"
RUN_ID="demo-$(date +%s)"

# start NAME URL CMD...: CMD in the background (log in $WORK/NAME.log), ready once URL answers.
start() {
  local name="$1" url="$2"; shift 2
  ("$@") >>"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  ( wait_until 60 "$name" "$pid" curl -fsS -o /dev/null "$url" ) || { tail -20 "$WORK/$name.log" >&2; exit 1; }
}

# app_env PORT CMD...: CMD with the settings the operator gives a pod of this stage.
app_env() {
  local port="$1"; shift
  exec env STAGE="$STAGE" LISTEN_ADDR="127.0.0.1:$port" RUN_WORKER=false LOG_FORMAT=text RUST_LOG=warn \
    REDIS_KEY_PREFIX="$RUN_ID" KAFKA_TOPIC="$RUN_ID" KAFKA_CONSUMER_GROUP="$RUN_ID-workers" "$@"
}

log "stage $STAGE: booking-app on 127.0.0.1:$APP_PORT"
start "booking-app" "http://127.0.0.1:$APP_PORT/readyz" app_env "$APP_PORT" "$BIN" serve
if [[ "$STAGE" != postgres ]]; then
  log "stage $STAGE: its worker (/healthz on 127.0.0.1:$WORKER_PORT)"
  start "worker" "http://127.0.0.1:$WORKER_PORT/healthz" app_env "$WORKER_PORT" "$BIN" worker
fi

log "the sale: $TICKETS tickets, at most $PER_USER_LIMIT per user, $USERS users, $CONCURRENCY clients for $DURATION"
set +e
"$BIN" loadgen --url "http://127.0.0.1:$APP_PORT" --tickets "$TICKETS" --per-user-limit "$PER_USER_LIMIT" \
  --users "$USERS" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 0s --json >"$WORK/sale.json"
rc=$?
set -e
[[ -s "$WORK/sale.json" ]] || die "loadgen exited $rc without a result"

jq -r --arg stage "$STAGE" '.run as $r | $r.report as $p | $r.invariants as $i |
  "",
  "stage \($stage): \($i.confirmed_quantity) of \($i.tickets) tickets sold in \($i.confirmed_bookings) bookings, \($i.rejected_bookings) refused",
  "  \($p.requests) requests in \($p.duration_s * 10 | round / 10) s: \($p.throughput_rps | round) req/s, p50 \($p.latency_ms.p50) ms, p99 \($p.latency_ms.p99) ms, errors \($p.errors)",
  (if $i.pending_total > 0 then "  \($i.pending_total) answered 202 pending; decided at \(($i.drain_rps // 0) | round) decisions/s" else empty end),
  "  remaining \($i.remaining_after), oversold = \($i.oversold)",
  (if $i.ok then "  invariants: ok" else "  invariants: VIOLATED\n" + ($i.violations | map("    - \(.)") | join("\n")) end)' \
  "$WORK/sale.json"
exit "$rc"
