# shellcheck shell=bash
# `hack/node.sh e2e` (sourced by hack/node.sh, after `up`): the operator's pods as real
# containers on the real node. The operator (this checkout's binary, on the host: pods cannot
# reach the API server here) watches one namespace that enforces Pod Security `restricted` and
# sends every pod to the node; the images are hack/images.sh's, built from the same binaries.
#
#   1. Two sales at once: "cal" (stage postgres, no perPodRps: calibrated by a real loadgen Job
#      against a real scratch pod) and "tour" (stage redis, capacity pinned).
#   2. tour Ready: every container of every pod a running containerd task; a booking through
#      the sale's Service (its name resolved by CoreDNS); loadgen through the Service while the
#      Redis pod is deleted, its invariants (nothing oversold, nothing confirmed lost) checked.
#   3. The operator's load observer reads the booking pods' real /metrics (status.observedRps).
#   4. cal Ready: status.measuredPerPodRps equals what loadgen wrote in its termination message
#      (read from the loadgen pod itself, by a watch); a booking through its Service.
#   5. tour switched to stage kafka: the real drain Job; every ticket sold at stage redis is in
#      Postgres afterwards (remaining unchanged, the first booking still confirmed); a booking
#      at stage kafka followed from 202 to its decision.
#   6. A root pod is refused in the namespace; the sales are deleted (their finalizer drains).
#
# Knobs (environment): FLASHSALE_OPERATOR, FLASHSALE_BOOKING_APP (binaries; default
# ${CARGO_TARGET_DIR:-target}/debug/...), E2E_OPERATOR_PORT (18192), E2E_TIMEOUT (seconds a
# sale may take to become Ready, 420), E2E_KEEP=1 (leave the namespace and the operator running
# on failure, for a look).

# shellcheck source=node/e2e-sales.sh
. "$REPO_ROOT/hack/node/e2e-sales.sh"
# shellcheck source=node/e2e-checks.sh
. "$REPO_ROOT/hack/node/e2e-checks.sh"

E2E_NS=flashsale-e2e
E2E_CAL="cal"
E2E_TOUR=tour
E2E_TOUR_TICKETS=1000000
E2E_SLO_MS=250
IMAGES_TAG=local
E2E_OPERATOR_PORT="${E2E_OPERATOR_PORT:-18192}"
E2E_TIMEOUT="${E2E_TIMEOUT:-420}"
E2E_WORK="$NODE/e2e"
E2E_OPERATOR_PID=""
E2E_BACKGROUND=()

e2e_bin() {
  local given="$1" name="$2" path
  path="${given:-${CARGO_TARGET_DIR:-target}/debug/$name}"
  [[ $path == /* ]] || path="$REPO_ROOT/$path"
  [[ -x $path ]] || die "$name not found at $path: cargo build -p booking-app -p flashsale-operator (or set FLASHSALE_OPERATOR / FLASHSALE_BOOKING_APP)"
  echo "$path"
}

e2e_fail() {
  log "E2E FAILED: $*"
  {
    kubectl get fs,pods,jobs,pvc -n "$E2E_NS" -o wide
    kubectl get events -n "$E2E_NS" --sort-by=.lastTimestamp | tail -n 25
    log "last lines of the operator's log ($E2E_WORK/operator.log):"
    tail -n 25 "$E2E_WORK/operator.log"
  } >&2 2>/dev/null || true
  exit 1
}

# The EXIT trap: clean up, then leave the exit status where `e2e-wait` reads it.
e2e_exit() {
  local rc=$?
  e2e_cleanup "$rc"
  [[ -z ${E2E_RC_FILE:-} ]] || echo "$rc" >"$E2E_RC_FILE"
  exit "$rc"
}

e2e_cleanup() {
  local rc="$1" p
  set +e
  for p in "${E2E_BACKGROUND[@]}"; do pid_alive "$p" && kill "$p" 2>/dev/null; done
  if ((rc != 0)) && [[ ${E2E_KEEP:-0} == 1 ]]; then
    log "E2E_KEEP=1: namespace $E2E_NS and operator (pid $E2E_OPERATOR_PID) left running"
    return 0
  fi
  e2e_remove_namespace
  if [[ -n $E2E_OPERATOR_PID ]] && pid_alive "$E2E_OPERATOR_PID"; then
    kill "$E2E_OPERATOR_PID"
    wait_gone 15 "$E2E_OPERATOR_PID" || kill -9 "$E2E_OPERATOR_PID"
  fi
}

# e2e_remove_namespace: the sales deleted (while the operator runs, it drains and releases them:
# their finalizer), what is left of them released by hand, then the namespace and its volumes.
e2e_remove_namespace() {
  kubectl get namespace "$E2E_NS" >/dev/null 2>&1 || return 0
  local sale start=$SECONDS
  if [[ -n $E2E_OPERATOR_PID ]] && pid_alive "$E2E_OPERATOR_PID"; then
    kubectl delete fs --all -n "$E2E_NS" --wait=true --timeout=180s >/dev/null 2>&1 &&
      log "sales deleted and released by the operator in $((SECONDS - start))s"
  fi
  for sale in $(kubectl get fs -n "$E2E_NS" -o name 2>/dev/null); do
    log "$sale not released by the operator: removing its finalizer"
    kubectl patch "$sale" -n "$E2E_NS" --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]' >/dev/null 2>&1
  done
  "$FLASHSALE_BIN/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" delete namespace "$E2E_NS" --wait=true --timeout=180s >/dev/null 2>&1 ||
    log "namespace $E2E_NS still terminating after 180s"
  recycle_pvs
}

# e2e_watch KIND SELECTOR... : `kubectl get -w -o json` of the namespace's KIND, for as long as
# the test runs (no request timeout: node.sh's kubectl has one). Only in the background: it
# execs, so the PID e2e_background records is kubectl's own.
e2e_watch() {
  local kind="$1"; shift
  exec "$FLASHSALE_BIN/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" get "$kind" -n "$E2E_NS" -w -o json "$@" 2>/dev/null
}

# e2e_background CMD...: run CMD in the background, killed by the cleanup if still running.
e2e_background() {
  "$@" &
  E2E_BACKGROUND+=($!)
}

e2e_start_operator() {
  port_busy "$E2E_OPERATOR_PORT" && die "port $E2E_OPERATOR_PORT is busy ($(port_owner "$E2E_OPERATOR_PORT")): set E2E_OPERATOR_PORT"
  # Leader election off: one process; the observer on: the host reaches pod IPs on the bridge.
  spawn_daemon "$E2E_WORK/operator.pid" "$E2E_WORK/operator.log" env KUBECONFIG="$ADMIN_KUBECONFIG" \
    RUST_LOG=info,kube=warn "$E2E_OPERATOR" run --namespace "$E2E_NS" \
    --listen-addr "127.0.0.1:$E2E_OPERATOR_PORT" --leader-election=false --observe-load \
    --allowed-image-prefixes flashsale
  E2E_OPERATOR_PID="$(cat "$E2E_WORK/operator.pid")"
  wait_until 60 "operator (pid $E2E_OPERATOR_PID)" "$E2E_OPERATOR_PID" \
    curl -sf --max-time 2 "http://127.0.0.1:$E2E_OPERATOR_PORT/readyz"
}

cmd_e2e() {
  need_root
  node_ready || die "node $NODE_NAME is not Ready: run hack/node.sh up first"
  E2E_OPERATOR="$(e2e_bin "${FLASHSALE_OPERATOR:-}" flashsale-operator)"
  E2E_APP="$(e2e_bin "${FLASHSALE_BOOKING_APP:-}" booking-app)"
  command -v jq >/dev/null || apt_install jq
  local start=$SECONDS
  rm -rf "$E2E_WORK"; mkdir -p "$E2E_WORK"
  trap e2e_exit EXIT

  log "images from $(dirname "$E2E_APP"), imported into the node's containerd"
  CONTAINERD_ADDRESS="$CTRD_SOCK" FLASHSALE_BIN_DIR="$(dirname "$E2E_APP")" IMAGES_TAG="$IMAGES_TAG" \
    "$REPO_ROOT/hack/images.sh" build booking-app postgres redis kafka

  kubectl apply --server-side --force-conflicts -f "$REPO_ROOT/crds/flashsale.yaml" >/dev/null
  kubectl wait --for=condition=Established crd/flashsales.flashsale.dev --timeout=60s >/dev/null
  e2e_remove_namespace
  e2e_namespace | kubectl apply -f - >/dev/null
  e2e_start_operator

  # The calibration's loadgen pod is gone once the operator has read it: watch it while it lives.
  e2e_background e2e_watch pods -l app.kubernetes.io/instance="$E2E_CAL",app.kubernetes.io/component=calibration-loadgen \
    >"$E2E_WORK/loadgen-pods.json"
  e2e_background e2e_watch jobs >"$E2E_WORK/jobs.json"
  { e2e_sale_calibrated; echo ---; e2e_sale_tour redis; } | kubectl apply -f - >/dev/null
  log "applied FlashSales $E2E_CAL (stage postgres, calibrated) and $E2E_TOUR (stage redis) in $E2E_NS"

  e2e_wait_ready "$E2E_TOUR" redis
  e2e_check_pods "$E2E_TOUR" redis
  e2e_tour_redis
  e2e_wait_ready "$E2E_CAL" postgres
  e2e_check_calibration
  e2e_check_pods "$E2E_CAL" postgres
  e2e_book_confirmed "$E2E_CAL" cal-user >/dev/null
  e2e_switch_to_kafka
  e2e_check_pod_security
  e2e_delete_sales
  log "e2e passed in $((SECONDS - start))s"
}
