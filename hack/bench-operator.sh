#!/usr/bin/env bash
# The operator at scale (a `make bench` step; also runs alone): on the test control plane
# (hack/control-plane.sh: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes), the
# CRD installed, the release `flashsale-operator run` watching one fresh namespace, N FlashSales
# applied at once (split over K files, each applied by its own `kubectl apply --server-side`, all K
# at the same time: one sequential apply of N documents would time kubectl, not the operator;
# capacity.perPodRps pinned, so no calibration Job), then timed until every sale's status carries
# its sizing (desiredReplicas > 0, sizing written, observedGeneration current): from the start of
# the apply to the last sale sized, and per sale from the first poll that lists it to the first
# that shows it sized. Reports those, the applies' own time, the reconciles (count, mean
# duration) and the operator's peak RSS (VmHWM): targets < 10 s and < 64 MiB. Then the sales are
# deleted and the operator is stopped by its PID.
#
# Knobs (environment): BENCH_OPERATOR_SALES (100), BENCH_OPERATOR_APPLIERS (K, the kubectl applies
# running at once, 10), BENCH_OPERATOR_TIMEOUT (seconds to wait for the sizing, 120),
# BENCH_OPERATOR_PORT (the operator's /metrics and /readyz, 18191), BENCH_OPERATOR_BIN (an
# operator binary to run instead of building this checkout's, e.g. to compare two commits),
# BENCH_OPERATOR_OUT (also write the result JSON to this file; hack/bench.sh sets it).
# Prints the result as one JSON line on stdout.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SALES="${BENCH_OPERATOR_SALES:-100}"
APPLIERS="${BENCH_OPERATOR_APPLIERS:-10}"
OPERATOR_BIN="${BENCH_OPERATOR_BIN:-}"
TIMEOUT="${BENCH_OPERATOR_TIMEOUT:-120}"
PORT="${BENCH_OPERATOR_PORT:-18191}"
OUT="${BENCH_OPERATOR_OUT:-}"
CP_ENV="$REPO_ROOT/hack/.control-plane.env"
NS="bench-operator-$(date +%s)-$$"
WORK="$(mktemp -d)"
OPERATOR_PID=""
APPLY_PIDS=()
NS_CREATED=0

command -v jq >/dev/null || apt_install jq
port_busy "$PORT" && die "port $PORT is busy ($(port_owner "$PORT")): another bench-operator running?"

cleanup() {
  local rc=$?
  set +e
  for p in "${APPLY_PIDS[@]}"; do pid_alive "$p" && kill "$p"; done
  if [[ -n "$OPERATOR_PID" ]] && pid_alive "$OPERATOR_PID"; then
    kill "$OPERATOR_PID"
    wait_gone 15 "$OPERATOR_PID" || { log "operator $OPERATOR_PID ignored SIGTERM: SIGKILL"; kill -9 "$OPERATOR_PID"; }
  fi
  ((rc != 0)) && [[ -f "$WORK/operator.log" ]] && { log "last lines of the operator's log:"; tail -n 20 "$WORK/operator.log" >&2; }
  # Whatever is left (children being collected) goes with the namespace; nobody waits for it.
  ((NS_CREATED)) && kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

log "control plane: hack/control-plane.sh up (reuses a healthy running one)"
"$REPO_ROOT/hack/control-plane.sh" up
# shellcheck source=/dev/null
. "$CP_ENV"
kubectl() { "$FLASHSALE_BIN/kubectl" --kubeconfig="$KUBECONFIG" --request-timeout=30s "$@"; }

if [[ -z "$OPERATOR_BIN" ]]; then
  log "building flashsale-operator (release)"
  (cd "$REPO_ROOT" && cargo build --release --quiet -p flashsale-operator --bin flashsale-operator)
  OPERATOR_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/flashsale-operator"
fi
# A copy, as hack/local-app.sh does: a shared CARGO_TARGET_DIR may be rebuilt by another checkout.
cp "$OPERATOR_BIN" "$WORK/flashsale-operator"
OPERATOR="$WORK/flashsale-operator"

# The poll goes to the API server with curl (a kubectl per poll would cost the machine more than
# the operator does); credentials from the admin kubeconfig.
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$WORK/ca.crt"
kubectl config view --raw --minify -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$WORK/admin.crt"
kubectl config view --raw --minify -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$WORK/admin.key"
SERVER=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
api_get() { curl -sf --max-time 10 --cacert "$WORK/ca.crt" --cert "$WORK/admin.crt" --key "$WORK/admin.key" "$SERVER$1"; }
SALES_URL="/apis/flashsale.dev/v1alpha1/namespaces/$NS/flashsales"

log "CRD: kubectl apply --server-side crds/flashsale.yaml"
kubectl apply --server-side --force-conflicts --field-manager=bench-operator -f "$REPO_ROOT/crds/flashsale.yaml" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/flashsales.flashsale.dev >/dev/null
kubectl create namespace "$NS" >/dev/null
NS_CREATED=1

# Limited to this namespace: other tests' sales on the same control plane are not in the count.
# Its leader Lease lives there too: a Lease left by an earlier, killed run would hold it back.
KUBECONFIG="$KUBECONFIG" WATCH_NAMESPACE="$NS" LEASE_NAMESPACE="$NS" LISTEN_ADDR="127.0.0.1:$PORT" LOG_FORMAT=text NO_COLOR=1 \
  RUST_LOG="warn" "$OPERATOR" run >"$WORK/operator.log" 2>&1 &
OPERATOR_PID=$!
wait_until 60 "operator /readyz on 127.0.0.1:$PORT" "$OPERATOR_PID" curl -sf "http://127.0.0.1:$PORT/readyz"

# N sales, the three stages in turn, each small enough that its pods fit the kwok nodes (the
# sizing is the measurement, not the pods): 1 booking-app replica at 500 rps of 1,000 pinned.
stages=(postgres redis kafka)
((APPLIERS >= 1)) || die "BENCH_OPERATOR_APPLIERS must be at least 1"
for ((i = 0; i < SALES; i++)); do
  cat >>"$WORK/sales-$((i % APPLIERS)).yaml" <<EOF
---
apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: bench-$i}
spec:
  stage: ${stages[i % 3]}
  targetRps: 500
  event: {name: "Bench sale $i", tickets: 1000}
  capacity: {perPodRps: 1000, targetUtilization: 0.7, minReplicas: 1, maxReplicas: 4}
EOF
done

# poll: one list of the sales, "NAME 1" for each sized for its current generation, "NAME 0" else.
poll() {
  api_get "$SALES_URL" | jq -r '.items[] | "\(.metadata.name) \(if (.status.desiredReplicas // 0) > 0
    and .status.sizing != null and .status.observedGeneration == .metadata.generation then 1 else 0 end)"'
}

log "applying $SALES FlashSales at once ($APPLIERS kubectl apply --server-side at the same time) in namespace $NS"
declare -A seen_at=() sized_at=()
t0=$(date +%s.%N)
for f in "$WORK"/sales-*.yaml; do
  kubectl apply --server-side --field-manager=bench-operator --namespace "$NS" -f "$f" >/dev/null &
  APPLY_PIDS+=($!)
done
t_applied=""
next_log=$((SECONDS + 2)) deadline=$((SECONDS + TIMEOUT))
applying() {
  local p
  for p in "${APPLY_PIDS[@]}"; do pid_alive "$p" && return 0; done
  return 1
}
# Each sale's time to be sized: from the first poll that lists it to the first that shows it
# sized (so the apply's own pace is not in it); polled every 0.5 s while the apply runs too.
while :; do
  now=$(date +%s.%N)
  while read -r name ok; do
    [[ -n "$name" ]] || continue
    [[ -n "${seen_at[$name]:-}" ]] || seen_at[$name]=$now
    [[ $ok == 1 && -z "${sized_at[$name]:-}" ]] && sized_at[$name]=$now
  done < <(poll || true)
  if [[ -z "$t_applied" ]] && ! applying; then
    for p in "${APPLY_PIDS[@]}"; do wait "$p" || die "a kubectl apply of the sales failed"; done
    t_applied=$(date +%s.%N)
  fi
  n=${#sized_at[@]}
  ((n >= SALES)) && [[ -n "$t_applied" ]] && break
  pid_alive "$OPERATOR_PID" || die "the operator exited (log above)"
  ((SECONDS < deadline)) || break
  if ((SECONDS >= next_log)); then log "  ${#seen_at[@]} created, $n of $SALES sized"; next_log=$((SECONDS + 2)); fi
  sleep 0.5
done
t_sized=$(date +%s.%N)
((n >= SALES)) || log "only $n of $SALES sales sized after ${TIMEOUT}s"
[[ -n "$t_applied" ]] || { for p in "${APPLY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; t_applied=$t_sized; }
# The last sale's sizing, not the loop's exit, ends the measurement.
last=$(printf '%s\n' "${sized_at[@]}" | sort -n | tail -1)
[[ -n "$last" ]] && t_sized=$last
per_sale=$(for name in "${!sized_at[@]}"; do echo "${sized_at[$name]} ${seen_at[$name]}"; done |
  awk '{ print $1 - $2 }' | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "{\"p50\":null,\"max\":null}"; exit }
    printf "{\"p50\":%.3f,\"max\":%.3f}\n", v[int((NR + 1) / 2)], v[NR] }')

# Keep the operator running a little: the pods of the sales become Ready on the kwok nodes and the
# status follows; the peak RSS then includes that second wave of reconciles, and the deletion.
sleep 5
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics" || true
reconciles=$(awk '$1 == "flashsale_operator_reconciles_total" {print $2}' "$WORK/metrics")
failures=$(awk '/^flashsale_operator_reconcile_failures_total/ {s += $2} END {print s + 0}' "$WORK/metrics")
# The mean time one reconcile took (its duration histogram's sum over count).
reconcile_mean=$(awk '$1 == "flashsale_operator_reconcile_duration_seconds_sum" {s = $2}
  $1 == "flashsale_operator_reconcile_duration_seconds_count" {n = $2} END {print (n > 0 ? s / n : "null")}' "$WORK/metrics")
ready=$(api_get "$SALES_URL" | jq '[.items[] | select(.status.phase == "Ready")] | length')
log "deleting the sales, then stopping the operator (pid $OPERATOR_PID)"
kubectl delete flashsales --all --namespace "$NS" --wait=true --timeout=60s >/dev/null || log "some sales were not deleted within 60s"
# VmHWM: the peak resident set over the operator's whole life, read just before it is stopped.
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$OPERATOR_PID/status")
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$OPERATOR_PID/status")
cpu_ticks=$(awk '{print $14 + $15}' "/proc/$OPERATOR_PID/stat")
kill "$OPERATOR_PID"
wait_gone 15 "$OPERATOR_PID" || { kill -9 "$OPERATOR_PID"; wait_gone 5 "$OPERATOR_PID" || true; }
OPERATOR_PID=""

result=$(jq -nc --argjson sales "$SALES" --argjson sized "$n" --argjson t0 "$t0" --argjson ta "$t_applied" \
  --argjson ts "$t_sized" --argjson hwm "$hwm_kib" --argjson rss "$rss_kib" --argjson ticks "$cpu_ticks" \
  --argjson hz "$(getconf CLK_TCK)" --argjson reconciles "${reconciles:-0}" --argjson failures "$failures" \
  --argjson appliers "$APPLIERS" --argjson reconcile_mean "$reconcile_mean" \
  --argjson ready "$ready" --argjson per_sale "$per_sale" \
  '{sales: $sales, appliers: $appliers, sized: $sized, apply_s: ($ta - $t0), sized_s: (if $sized >= $sales then $ts - $t0 else null end),
    per_sale_p50_s: $per_sale.p50, per_sale_max_s: $per_sale.max,
    peak_rss_mib: ($hwm / 1024), rss_mib: ($rss / 1024), cpu_s: ($ticks / $hz), reconciles: $reconciles, reconcile_mean_s: $reconcile_mean,
    reconcile_failures: $failures, ready_after_5s: $ready, target_sized_s: 10, target_rss_mib: 64}')
log "operator at scale: $(jq -r '"\(.sized) of \(.sales) sized \(.sized_s // "n/a") s after the apply started (the \(.appliers) applies took \(.apply_s) s; per sale p50 \(.per_sale_p50_s) s, max \(.per_sale_max_s) s), peak RSS \(.peak_rss_mib) MiB, \(.reconciles) reconciles of \(.reconcile_mean_s) s on average, \(.cpu_s) CPU s"' <<<"$result")"
[[ -n "$OUT" ]] && echo "$result" >"$OUT"
echo "$result"
