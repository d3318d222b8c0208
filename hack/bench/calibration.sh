# shellcheck shell=bash
# hack/bench.sh, calibration agreement (sourced): `loadgen --find-capacity` (what the operator's
# calibration Job runs) against each stage set up exactly as the bench's c=BENCH_C_HIGH run (same
# pool, not pinned to a CPU, in-flight cap BENCH_C_HIGH), next to the rate that run sustained.
# Rows: kind calibration. How to read them: bench/README.md ("Calibration agreement").

bench_calibration() {
  local stage="$1" variant="${2:-}" env sustained bench_p99 start_rate name="calibrate-$1${2:+-$2}"
  sustained=$(rps_of stage "$stage" "$variant" "$BENCH_C_HIGH")
  [[ -n "$sustained" ]] || { log "calibration $stage: no c=$BENCH_C_HIGH run this time, skipped"; return 0; }
  bench_p99=$(jq -rs --arg s "$stage" --arg v "$variant" --argjson c "$BENCH_C_HIGH" \
    '[.[] | select(.kind == "stage" and .stage == $s and .variant == $v and .concurrency == $c)] | last | .p99_ms' "$RESULTS")
  # The search doubles from its first rate, then bisects: starting at a quarter of the bench's
  # rate saves the steps far below it and does not change where it ends.
  start_rate=$(awk -v r="$sustained" 'BEGIN { r = r / 4; if (r < 50) r = 50; printf "%.0f", r }')
  env=$(variant_env "$stage" "$variant")
  # shellcheck disable=SC2086
  app_up "$stage" "$BENCH_C_HIGH" $env
  log "calibration $stage${variant:+ ($variant)}: loadgen --find-capacity --slo-p99-ms $BENCH_CALIBRATE_SLO_MS from $start_rate req/s, ${BENCH_CALIBRATE_SECONDS}s per step"
  run_loadgen "$name" "$APP_PORT" --find-capacity --slo-p99-ms "$BENCH_CALIBRATE_SLO_MS" --rate "$start_rate" \
    --concurrency "$BENCH_C_HIGH" --duration "${BENCH_CALIBRATE_SECONDS}s" --warmup 1s
  app_down "$stage"
  local row
  row=$(jq -c --argjson sustained "$sustained" --argjson bench_p99 "$bench_p99" --slurpfile cpu "$WORK/$name.cpu.json" \
    '.result as $r | {per_pod_rps: $r.calibration.perPodRps, p99_ms: $r.calibration.p99Ms,
      error_rate: $r.calibration.errorRate, drain_rps: ($r.calibration.drainRps // null),
      slo_p99_ms: $r.calibration.sloP99Ms, steps: ($r.capacity.steps | length),
      step_rates: [$r.capacity.steps[] | {rate: (.rate | floor), p99_ms, pass, breach}],
      invariants_ok: ([$r.runs[].invariants.ok // true] | all),
      bench_rps: $sustained, bench_p99_ms: $bench_p99,
      difference: (if $sustained > 0 then ($r.calibration.perPodRps - $sustained) / $sustained else null end),
      cores: $cpu[0]}' "$WORK/$name.json")
  record calibration "$stage" "$row" variant="$variant" concurrency="$BENCH_C_HIGH"
  log "  calibration $stage: $(jq -r '"perPodRps \(.per_pod_rps | floor) (p99 \(.p99_ms) ms) vs the bench'"'"'s \(.bench_rps | floor) req/s at c='"$BENCH_C_HIGH"' (p99 \(.bench_p99_ms) ms): \((.difference // 0) * 100 | floor)%"' <<<"$row")"
}
