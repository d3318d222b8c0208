#!/usr/bin/env bash
# `make demo STAGE=postgres|redis|kafka`: the booking system's main job on one machine with no
# cluster and no container engine. Local services up, booking-app of that stage (and its worker,
# as a separate process as the operator runs it) started, a sale of a few thousand tickets driven
# by loadgen with its live progress line, the invariant check, a short summary; everything the
# demo started is stopped at the end (the shared services stay up: `make services-down`).
#
# Knobs (environment): STAGE (redis), DEMO_TICKETS (5000), DEMO_PER_USER_LIMIT (4),
# DEMO_USERS (20000), DEMO_CONCURRENCY (32), DEMO_DURATION (10s), DEMO_PORT (18080; its worker
# the next port), DEMO_RESULT (also write loadgen's JSON result, the summary's source, to this file).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v jq >/dev/null || apt_install jq # the summary below is read with jq

STAGE="${STAGE:-redis}"
knobs DEMO TICKETS=5000 PER_USER_LIMIT=4 USERS=20000 CONCURRENCY=32 DURATION=10s PORT=18080
APP_PORT="$PORT"
WORKER_PORT=$((APP_PORT + 1))

case "$STAGE" in postgres | redis | kafka) ;; *) die "STAGE must be postgres, redis or kafka (got '$STAGE')" ;; esac
# shellcheck source=local-app.sh
. "$REPO_ROOT/hack/local-app.sh"
local_app_begin demo "$APP_PORT" "$WORKER_PORT"

log "stage $STAGE: booking-app on 127.0.0.1:$APP_PORT"
start "booking-app" "http://127.0.0.1:$APP_PORT/readyz" app_env "$STAGE" "$APP_PORT" "$BIN" serve
if [[ "$STAGE" != postgres ]]; then
  log "stage $STAGE: its worker (/healthz on 127.0.0.1:$WORKER_PORT)"
  start "worker" "http://127.0.0.1:$WORKER_PORT/healthz" app_env "$STAGE" "$WORKER_PORT" "$BIN" worker
fi

log "the sale: $TICKETS tickets, at most $PER_USER_LIMIT per user, $USERS users, $CONCURRENCY clients for $DURATION"
set +e
"$BIN" loadgen --url "http://127.0.0.1:$APP_PORT" --tickets "$TICKETS" --per-user-limit "$PER_USER_LIMIT" \
  --users "$USERS" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 0s --json >"$WORK/sale.json"
rc=$?
set -e
[[ -s "$WORK/sale.json" ]] || die "loadgen exited $rc without a result"
if [[ -n "${DEMO_RESULT:-}" ]]; then cp "$WORK/sale.json" "$DEMO_RESULT"; fi

jq -r --arg stage "$STAGE" '.run as $r | $r.report as $p | $r.invariants as $i |
  "",
  "stage \($stage): \($i.confirmed_quantity) of \($i.tickets) tickets sold in \($i.confirmed_bookings) bookings, \($i.rejected_bookings) refused",
  "  \($p.requests) requests in \($p.duration_s * 10 | round / 10) s: \($p.throughput_rps | round) req/s, p50 \($p.latency_ms.p50) ms, p99 \($p.latency_ms.p99) ms, errors \($p.errors)",
  (if $i.pending_total > 0 then "  \($i.pending_total) answered 202 pending; decided at \(($i.drain_rps // 0) | round) decisions/s" else empty end),
  "  remaining \($i.remaining_after), oversold = \($i.oversold)",
  (if $i.ok then "  invariants: ok" else "  invariants: VIOLATED\n" + ($i.violations | map("    - \(.)") | join("\n")) end)' \
  "$WORK/sale.json"
exit "$rc"
