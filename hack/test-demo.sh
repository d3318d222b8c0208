#!/usr/bin/env bash
# `make test-demo` (a step of `make test`): the README's no-cluster commands, run as a newcomer
# runs them, and their results checked.
#   0. Every `$ flashsale-operator plan ...` transcript in README.md: the command run
#      (FLASHSALE_OPERATOR, which make test points at the binary `cargo test --workspace` built;
#      else a debug build), each line the README shows (`…` elides) found in its output, in order.
#   1. README "Run booking-app locally": its code block extracted from README.md and run (the
#      server line in the background, the client lines after it once it is ready); the booking
#      it makes must come back `confirmed`.
#   2. `make demo STAGE=<stage>` for each stage, exactly as the README writes it (jq is installed
#      by the demo itself where it is missing); its printed summary and its JSON result must say:
#      tickets sold > 0, requests > 0, nothing oversold, every ticket the store counts as sold
#      answered as confirmed (nothing lost), no answer unknown, every 202 decided, invariants ok.
# Any failure fails the script. Each run is bounded by a timeout.
#
# Knobs (environment): TEST_DEMO_STAGES ("postgres redis kafka"), TEST_DEMO_PORT (18380; the
# README block's server and each demo's booking-app, the worker on the next port),
# TEST_DEMO_DURATION (3s, DEMO_DURATION of each demo; the demo's 5,000 tickets sell out in well
# under a second here), TEST_DEMO_README (1; 0 skips step 1), TEST_DEMO_TIMEOUT (900 s per run:
# the first demo builds booking-app in release, minutes when cold, unless FLASHSALE_BOOKING_APP
# names a binary: make test passes the debug one its `cargo test` built).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STAGES="${TEST_DEMO_STAGES:-postgres redis kafka}"
PORT="${TEST_DEMO_PORT:-18380}"
DURATION="${TEST_DEMO_DURATION:-3s}"
README_BLOCK="${TEST_DEMO_README:-1}"
TIMEOUT="${TEST_DEMO_TIMEOUT:-900}"
START=$SECONDS
command -v jq >/dev/null || apt_install jq # the README block reads an id with it, as Prerequisites says

for p in "$PORT" "$((PORT + 1))"; do
  port_busy "$p" && die "port $p is busy ($(port_owner "$p")); set TEST_DEMO_PORT"
done
WORK="$(mktemp -d)"
SERVER_PID=
SECRET_BACKUP=
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    # The server line runs in a session of its own: cargo and the booking-app it started.
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    wait_gone 30 "$SERVER_PID" || log "the README's server (pid $SERVER_PID) did not stop"
  fi
  # The README block writes hack/.auth-secret: put back what was there.
  if [[ -n "$SECRET_BACKUP" ]]; then
    if [[ -s "$SECRET_BACKUP" ]]; then cp "$SECRET_BACKUP" "$REPO_ROOT/hack/.auth-secret"; else rm -f "$REPO_ROOT/hack/.auth-secret"; fi
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# readme_block HEADING: the first ```sh block after that line of README.md.
readme_block() {
  awk -v h="$1" '$0 == h { f = 1; next } f && /^```sh/ { b = 1; next } b && /^```/ { exit } b { print }' \
    "$REPO_ROOT/README.md"
}

# --- 1. README "Run booking-app locally"
run_readme_block() {
  local heading="## Run booking-app locally" block setup server client out
  block="$(readme_block "$heading")"
  [[ -n "$block" ]] || die "README.md has no sh block under '$heading'"
  # The server is the line before "# in another shell"; what comes after is the other shell.
  # The port is this test's, everything else as written.
  block="${block//8080/$PORT}"
  setup="$(awk '/^# in another shell/ { exit } { print }' <<<"$block" | sed '$d')"
  server="$(awk '/^# in another shell/ { exit } { print }' <<<"$block" | tail -1)"
  client="$(awk 'f { print } /^# in another shell/ { f = 1 }' <<<"$block")"
  [[ "$server" == *" serve "* && "$server" != *"'"* && -n "$client" ]] || die "README '$heading': no server line before '# in another shell'"
  SECRET_BACKUP="$WORK/auth-secret.backup"
  if [[ -f "$REPO_ROOT/hack/.auth-secret" ]]; then cp "$REPO_ROOT/hack/.auth-secret" "$SECRET_BACKUP"; else : >"$SECRET_BACKUP"; fi
  log "README '$heading': the setup lines, then '$server' in the background"
  cat >"$WORK/readme.sh" <<EOF
set -euo pipefail
cd "$REPO_ROOT"
$setup
setsid bash -c '$server' >"$WORK/readme-serve.log" 2>&1 &
echo \$! >"$WORK/readme-serve.pid"
for _ in \$(seq 1 $TIMEOUT); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break
  kill -0 "\$(cat "$WORK/readme-serve.pid")" 2>/dev/null || { tail -20 "$WORK/readme-serve.log" >&2; exit 1; }
  sleep 1
done
echo "--- the other shell" >&2
$client
EOF
  set +e
  out="$(heartbeat 30 "README block (cargo run builds booking-app first)" timeout -k 10 "$TIMEOUT" bash "$WORK/readme.sh")"
  local rc=$?
  set -e
  SERVER_PID="$(cat "$WORK/readme-serve.pid" 2>/dev/null || true)"
  if ((rc != 0)); then
    tail -20 "$WORK/readme-serve.log" >&2 || true
    die "README '$heading' failed (exit $rc)"
  fi
  log "  its last answer: $out"
  jq -e '.status == "confirmed" and .quantity == 2 and .user_id == "alice"' >/dev/null <<<"$out" ||
    die "README '$heading': the booking was not confirmed: $out"
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
  wait_gone 30 "$SERVER_PID" || die "the README's server did not stop on SIGTERM"
  SERVER_PID=
  log "README '$heading': ok ($((SECONDS - START)) s so far)"
}

# --- 0. the `plan` transcripts
check_plan_transcripts() {
  local operator="${FLASHSALE_OPERATOR:-}" n=0 cmd
  if [[ -z "$operator" ]]; then
    log "building flashsale-operator (debug) for the plan transcripts"
    (cd "$REPO_ROOT" && cargo build --quiet -p flashsale-operator --bin flashsale-operator)
    operator="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/flashsale-operator"
  fi
  [[ -x "$operator" ]] || die "no flashsale-operator binary at $operator"
  # Each transcript becomes WORK/plan-N.cmd (the command) and WORK/plan-N.want (what it shows).
  awk -v dir="$WORK" '
    /^```/ { if (inside) { inside = 0; close(want) } else { fence = 1 }; next }
    fence { fence = 0; if ($0 ~ /^\$ flashsale-operator plan /) { n++; inside = 1;
              print substr($0, 3) > (dir "/plan-" n ".cmd"); close(dir "/plan-" n ".cmd");
              want = dir "/plan-" n ".want"; printf "" > want }; next }
    inside { print > want }' "$REPO_ROOT/README.md"
  for cmd in "$WORK"/plan-*.cmd; do
    [[ -e "$cmd" ]] || die "README.md has no \`\$ flashsale-operator plan\` transcript"
    n=$((n + 1))
    read -r -a argv <"$cmd"
    "$operator" "${argv[@]:1}" >"${cmd%.cmd}.got" || die "README: '$(cat "$cmd")' failed"
    # Every shown line, in order (a "…" line stands for lines left out).
    awk 'NR == FNR { if ($0 != "…") want[++w] = $0; next }
         i < w && $0 == want[i + 1] { i++ }
         END { if (i < w) { print "missing from the output: " want[i + 1]; exit 1 } }' \
      "${cmd%.cmd}.want" "${cmd%.cmd}.got" >"${cmd%.cmd}.diff" ||
      die "README: '$(cat "$cmd")' prints something else; $(cat "${cmd%.cmd}.diff"); it printed:
$(cat "${cmd%.cmd}.got")"
  done
  log "README: $n flashsale-operator plan transcripts match"
}

# --- 2. make demo STAGE=<stage>
# check_demo STAGE OUTPUT RESULT_JSON: what the summary says, and what the result behind it says.
check_demo() {
  local stage="$1" out="$2" result="$3" why
  grep -Eq "^stage $stage: [1-9][0-9]* of [0-9]+ tickets sold in [1-9][0-9]* bookings" "$out" ||
    die "make demo STAGE=$stage: no 'N of T tickets sold' line with N > 0 in its summary"
  grep -q "oversold = 0$" "$out" || die "make demo STAGE=$stage: its summary does not say 'oversold = 0'"
  grep -q "^  invariants: ok$" "$out" || die "make demo STAGE=$stage: its summary does not say 'invariants: ok'"
  why="$(jq -r --arg stage "$stage" '.run as $r | $r.report as $p | $r.invariants as $i | [
      (if $p.requests > 0 and $p.throughput_rps > 0 then empty else "no requests were measured" end),
      (if $i.confirmed_quantity > 0 and $i.confirmed_bookings > 0 then empty else "nothing was sold" end),
      (if $i.oversold == 0 and $i.remaining_after >= 0 then empty else "oversold \($i.oversold), remaining \($i.remaining_after)" end),
      (if $i.confirmed_quantity == $i.tickets - $i.remaining_after then empty
       else "lost: the store sold \($i.tickets - $i.remaining_after), the answers confirmed \($i.confirmed_quantity)" end),
      (if $i.unknown_quantity == 0 then empty else "\($i.unknown_quantity) tickets in unanswered attempts" end),
      (if $i.pending_unresolved == 0 and $i.pending_missing == 0 then empty
       else "202s not decided: \($i.pending_unresolved) unresolved, \($i.pending_missing) missing" end),
      (if $stage != "kafka" or $i.pending_total > 0 then empty else "stage kafka answered no 202" end),
      (if $p.errors <= $p.requests / 100 then empty else "\($p.errors) errors in \($p.requests) requests" end),
      (if $i.ok and ($i.violations | length) == 0 then empty else "invariants: \($i.violations)" end)
    ] | join("; ")' "$result")" || die "make demo STAGE=$stage: its result is not the JSON loadgen writes"
  [[ -z "$why" ]] || die "make demo STAGE=$stage: $why"
}

run_demo() {
  local stage="$1" out="$WORK/demo-$stage.out" result="$WORK/demo-$stage.json" rc t0=$SECONDS
  log "make demo STAGE=$stage (DEMO_PORT=$PORT DEMO_DURATION=$DURATION)"
  set +e
  (cd "$REPO_ROOT" && export DEMO_PORT="$PORT" DEMO_DURATION="$DURATION" DEMO_RESULT="$result" &&
    heartbeat 30 "make demo STAGE=$stage" timeout -k 10 "$TIMEOUT" make --no-print-directory demo STAGE="$stage") 2>&1 |
    tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  ((rc == 0)) || die "make demo STAGE=$stage exited $rc"
  [[ -s "$result" ]] || die "make demo STAGE=$stage wrote no result"
  check_demo "$stage" "$out" "$result"
  log "make demo STAGE=$stage: ok in $((SECONDS - t0)) s"
}

check_plan_transcripts
if [[ "$README_BLOCK" == 1 ]]; then run_readme_block; fi
for stage in $STAGES; do run_demo "$stage"; done
log "README's local commands and make demo (${STAGES// /, }): ok in $((SECONDS - START)) s"
