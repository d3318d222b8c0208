#!/usr/bin/env bash
# Every test of the workspace, as `cargo test --workspace` would run them, in two groups at once:
# the operator's integration tests (operator/tests/*.rs: they wait on the API server) beside
# everything else (unit tests, booking-app's and the contract's integration tests: they use the
# local stores). Cargo runs one test binary at a time; the two groups share neither a store nor a
# namespace, so side by side they finish in the time of the longer one. Both invocations select
# targets of the same `--workspace` build (same features: nothing is rebuilt), found by listing
# each crate's tests/ directory, so a new test file is in a group without editing this script.
# Then the doc tests. Each line of output is prefixed with its group; fails if either fails.
# Needs the environment of `make test` (hack/.services.env, hack/.control-plane.env sourced).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CARGO="${CARGO:-cargo}"
cd "$REPO_ROOT"

# Explicit [[test]] targets could live elsewhere than tests/*.rs: this script would miss them.
if grep -q '^\[\[test\]\]' ./*/Cargo.toml; then
  die "a crate declares [[test]] targets: teach hack/test-workspace.sh about them"
fi

targets() { # DIR...: --test NAME for every tests/NAME.rs of those crates
  local dir f
  for dir in "$@"; do
    for f in "$dir"/tests/*.rs; do
      [[ -f $f ]] && printf -- '--test\n%s\n' "$(basename "$f" .rs)"
    done
  done
}

mapfile -t operator_tests < <(targets operator)
others=()
for dir in */; do
  dir="${dir%/}"
  [[ -f $dir/Cargo.toml && $dir != operator ]] || continue
  mapfile -t -O "${#others[@]}" others < <(targets "$dir")
done

run_group() { # NAME ARGS...: cargo test --workspace ARGS, each output line prefixed with [NAME]
  local name="$1"; shift
  "$CARGO" test --workspace "$@" 2>&1 | sed -u "s/^/[$name] /"
  return "${PIPESTATUS[0]}"
}

start=$SECONDS
log "two groups at once: [operator] ${#operator_tests[@]} arguments, [others] unit tests and ${#others[@]} arguments"
run_group operator "${operator_tests[@]}" &
operator_pid=$!
rc_others=0
run_group others --lib --bins "${others[@]}" || rc_others=$?
rc_operator=0
wait "$operator_pid" || rc_operator=$?
rc_doc=0
run_group doc --doc || rc_doc=$?
log "workspace tests done in $((SECONDS - start))s: others exit $rc_others, operator exit $rc_operator, doc tests exit $rc_doc"
((rc_others == 0 && rc_operator == 0 && rc_doc == 0)) || die "workspace tests failed (see the [group] lines above)"
