#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver, controller-manager,
# scheduler, and kwok with fake nodes whose pods become Ready without a container runtime.
# Usage: hack/control-plane.sh up|down|status. `up` writes hack/.control-plane.env (KUBECONFIG).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# etcd reads every ETCD_* variable as a flag: none of the caller's may leak into it.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^ETCD_' || true)

ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=16443
CONTROLLER_MANAGER_PORT=16257
SCHEDULER_PORT=16259
APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"
ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"
NODES=(kwok-node-0 kwok-node-1 kwok-node-2)
# Start order; `down` stops in reverse, so kwok goes first and etcd last.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

STATE="$FLASHSALE_CACHE/control-plane"
PKI="$STATE/pki"
RUN="$STATE/run"
LOGS="$STATE/logs"
ETCD_DATA="$STATE/etcd-data"
KUBECONFIG_FILE="$STATE/admin.kubeconfig"
KWOK_DIR="$FLASHSALE_CACHE/kwok"
ENV_FILE="$REPO_ROOT/hack/.control-plane.env"

# The Service range lies inside 198.18.0.0/15 (set aside for benchmarks, never routed off the
# machine), so the real node's kube-proxy (hack/node.sh) can serve ClusterIPs without touching
# anyone's network. Its first IP is the `kubernetes` Service (in the apiserver's certificate).
SERVICE_CIDR=198.19.0.0/16
export PKI_KUBERNETES_SERVICE_IP=198.19.0.1

ETCD_ARGS=(--name=flashsale --data-dir="$ETCD_DATA"
  --listen-client-urls="$ETCD_URL" --advertise-client-urls="$ETCD_URL"
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT"
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT"
  --initial-cluster="flashsale=http://127.0.0.1:$ETCD_PEER_PORT"
  --unsafe-no-fsync --log-level=warn)
# --endpoint-reconciler-type=none: the default reconciler refuses a loopback advertise address.
# The kubelet flags serve the real node (hack/node.sh): the apiserver dials it at its InternalIP
# (127.0.0.1, not the VM's hostname), with a client cert the kubelet's webhook authorizes, and
# checks the kubelet's serving cert against our CA. PodNodeSelector and PodTolerationRestriction
# let a namespace send all its pods to the real node (the scheduler.alpha.kubernetes.io/
# node-selector and defaultTolerations annotations, hack/node/e2e-sales.sh): the operator's pods need
# no scheduling fields of their own, and namespaces without the annotations are untouched.
# shellcheck disable=SC2054 # the comma in Node,RBAC is part of one flag
APISERVER_ARGS=(--etcd-servers="$ETCD_URL"
  --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" --advertise-address=127.0.0.1
  --endpoint-reconciler-type=none --cert-dir="$STATE/apiserver-certs"
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key"
  --client-ca-file="$PKI/ca.crt"
  --service-account-issuer=https://kubernetes.default.svc.cluster.local
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key"
  --authorization-mode=Node,RBAC --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true
  --kubelet-preferred-address-types=InternalIP
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
  --kubelet-certificate-authority="$PKI/ca.crt"
  --enable-admission-plugins=PodNodeSelector,PodTolerationRestriction)
# Without --authentication/authorization-kubeconfig: they only add recurring errors here.
CONTROLLER_MANAGER_ARGS=(--kubeconfig="$KUBECONFIG_FILE" --leader-elect=false
  --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT"
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt"
  --use-service-account-credentials=false
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key")
SCHEDULER_ARGS=(--kubeconfig="$KUBECONFIG_FILE" --leader-elect=false
  --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT")
# --node-ip=127.0.0.1: anything that tries to reach a "kubelet" stays on loopback.
KWOK_ARGS=(--kubeconfig="$KUBECONFIG_FILE" --config="$KWOK_DIR/stages.yaml"
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
  --node-ip=127.0.0.1 --node-lease-duration-seconds=40)
# What the running components were started with: `up` restarts them when this changes.
FLAGS_STAMP="$RUN/flags"
flags_stamp() {
  printf '%s\n' "${ETCD_ARGS[@]}" -- "${APISERVER_ARGS[@]}" -- "${CONTROLLER_MANAGER_ARGS[@]}" -- \
    "${SCHEDULER_ARGS[@]}" -- "${KWOK_ARGS[@]}" | sha256sum | awk '{print $1}'
}

# shellcheck source=control-plane/pki.sh
. "$REPO_ROOT/hack/control-plane/pki.sh"

kubectl() { "$FLASHSALE_BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"; }

# pid_of NAME: the PID of our running NAME (from its pid file, checked against the binary), or fail.
pid_of() {
  local name="$1" pid exe
  [[ -f "$RUN/$name.pid" ]] || return 1
  pid="$(cat "$RUN/$name.pid")"
  [[ -n "$pid" ]] && pid_alive "$pid" || return 1
  # A recycled PID belongs to someone else; a rebuilt binary shows up as "(deleted)".
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$FLASHSALE_BIN/$name" ]] || return 1
  echo "$pid"
}

apiserver_ready() {
  curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$APISERVER_URL/readyz" >/dev/null
}

nodes_ready() {
  local ready
  ready="$(kubectl get nodes "${NODES[@]}" --request-timeout=5s \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
    grep -c '^True$')" || true
  [[ "$ready" == "${#NODES[@]}" ]]
}

flags_current() { [[ -f "$FLAGS_STAMP" && "$(cat "$FLAGS_STAMP")" == "$(flags_stamp)" ]]; }

healthy() {
  local c
  flags_current || return 1
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  apiserver_ready && nodes_ready
}

any_running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null && return 0; done
  return 1
}

# start NAME ARGS...: run our binary NAME detached (its own session, none of our fds or locks),
# logging to a fresh $LOGS/NAME.log.
start() {
  local name="$1"; shift
  : >"$LOGS/$name.log"
  spawn_daemon "$RUN/$name.pid" "$LOGS/$name.log" "$FLASHSALE_BIN/$name" "$@"
}

# wait_started NAME TIMEOUT WHAT CMD...: wait for CMD, failing fast (with the log) if NAME dies.
wait_started() {
  local name="$1" timeout="$2" what="$3"; shift 3
  local pid; pid="$(cat "$RUN/$name.pid")"
  if ! (wait_until "$timeout" "$what" "$pid" "$@"); then
    log "last lines of $LOGS/$name.log:"; tail -n 20 "$LOGS/$name.log" >&2 || true
    stop_all
    die "$name did not start (full log: $LOGS/$name.log)"
  fi
}

stop_all() {
  local i name pid
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name="${COMPONENTS[i]}"
    if pid="$(pid_of "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      if ! wait_gone 15 "$pid"; then
        log "$name ($pid) ignored SIGTERM for 15s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
        wait_gone 5 "$pid" || log "$name ($pid) still alive after SIGKILL"
      fi
      log "stopped $name ($pid)"
    fi
    rm -f "$RUN/$name.pid"
  done
  rm -f "$FLAGS_STAMP"
}

check_ports_free() {
  local port
  for port in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CONTROLLER_MANAGER_PORT" "$SCHEDULER_PORT"; do
    if port_busy "$port"; then
      # None of ours runs at this point, so an answer would come from a stranger (an old apiserver?).
      die "port 127.0.0.1:$port is in use by another process; stop it first: $(port_owner "$port")"
    fi
  done
}

write_kubeconfig() {
  local tmp="$KUBECONFIG_FILE.tmp" k=("$FLASHSALE_BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE.tmp")
  rm -f "$tmp"
  "${k[@]}" config set-cluster flashsale-test --server="$APISERVER_URL" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" config set-credentials flashsale-admin --client-certificate="$PKI/admin.crt" \
    --client-key="$PKI/admin.key" --embed-certs=true >/dev/null
  "${k[@]}" config set-context flashsale-test --cluster=flashsale-test --user=flashsale-admin >/dev/null
  "${k[@]}" config use-context flashsale-test >/dev/null
  chmod 600 "$tmp"; mv "$tmp" "$KUBECONFIG_FILE"
}

write_env() {
  cat >"$ENV_FILE" <<EOF
# Written by hack/control-plane.sh up; removed by down. Source it: . hack/.control-plane.env
export KUBECONFIG="$KUBECONFIG_FILE"
export FLASHSALE_BIN="$FLASHSALE_BIN"
EOF
}

# Node objects kwok takes over (by annotation). No taints: workloads need no toleration.
apply_nodes() {
  local n
  for n in "${NODES[@]}"; do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
EOF
  done | kubectl apply -f - >/dev/null
}

cmd_up() {
  local start=$SECONDS
  "$REPO_ROOT/hack/tools.sh"
  mkdir -p "$STATE" "$RUN" "$LOGS"
  exec 8>"$STATE/lock"
  flock -w 600 8 || die "another control-plane.sh holds $STATE/lock"

  # Before the health check: a certificate added to pki.sh (or one whose SANs changed) is issued
  # even into a running control plane's directory (the apiserver reloads its serving cert).
  ensure_pki "$PKI"
  if healthy; then
    write_env
    log "already running and healthy at $APISERVER_URL; KUBECONFIG=$KUBECONFIG_FILE"
    return
  fi
  if any_running; then
    if flags_current; then
      log "control plane partly running or unhealthy: restarting it"
    else
      log "control plane runs with other flags (an older hack/control-plane.sh?): restarting it"
    fi
    stop_all
  fi
  check_ports_free
  write_kubeconfig
  # Nothing of ours runs: state left from an older run would only confuse tests.
  rm -rf "$ETCD_DATA"

  start etcd "${ETCD_ARGS[@]}"
  wait_started etcd 30 "etcd $ETCD_URL" curl -sf --max-time 2 "$ETCD_URL/health"
  start kube-apiserver "${APISERVER_ARGS[@]}"
  wait_started kube-apiserver 90 "kube-apiserver $APISERVER_URL/readyz" apiserver_ready
  start kube-controller-manager "${CONTROLLER_MANAGER_ARGS[@]}"
  start kube-scheduler "${SCHEDULER_ARGS[@]}"
  start kwok "${KWOK_ARGS[@]}"
  flags_stamp >"$FLAGS_STAMP"

  apply_nodes
  kubectl apply -f "$KWOK_DIR/storage-class.yaml" >/dev/null
  wait_started kwok 60 "${#NODES[@]} kwok nodes" nodes_ready
  # Pods are refused until the controller-manager has made the namespace's default ServiceAccount.
  wait_started kube-controller-manager 60 "default ServiceAccount" \
    kubectl get serviceaccount default --namespace=default
  local c
  for c in "${COMPONENTS[@]}"; do
    pid_of "$c" >/dev/null || { tail -n 20 "$LOGS/$c.log" >&2; stop_all; die "$c exited (log: $LOGS/$c.log)"; }
  done
  write_env
  log "control plane up in $((SECONDS - start))s at $APISERVER_URL; . hack/.control-plane.env (KUBECONFIG=$KUBECONFIG_FILE)"
}

cmd_down() {
  mkdir -p "$STATE" "$RUN"
  exec 8>"$STATE/lock"
  flock -w 600 8 || die "another control-plane.sh holds $STATE/lock"
  any_running || log "control plane not running"
  stop_all
  rm -f "$ENV_FILE"
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$c")"; then
      printf '%-24s running  pid %-8s log %s\n' "$c" "$pid" "$LOGS/$c.log"
    else
      printf '%-24s stopped\n' "$c"; rc=1
    fi
  done
  if [[ -f "$PKI/.complete" ]] && apiserver_ready; then
    echo "kube-apiserver           ready at $APISERVER_URL"
    kubectl get nodes --request-timeout=5s 2>&1 | sed 's/^/  /'
    nodes_ready || rc=1
  else
    echo "kube-apiserver           not ready at $APISERVER_URL"; rc=1
  fi
  [[ -f "$ENV_FILE" ]] && echo "env file                 $ENV_FILE"
  return "$rc"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
