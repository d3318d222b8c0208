#!/usr/bin/env bash
# One real Kubernetes node, flashsale-node-0, joined to the test control plane of
# hack/control-plane.sh: containerd + runc run real containers, next to the kwok fake nodes.
# Usage: hack/node.sh up|down|status|smoke|e2e   (needs root: it creates a bridge and iptables rules;
# smoke: busybox pods, a Service, DNS, a volume; e2e: the operator's sales as real containers)
#
# What runs, all on this machine, each started detached with a pid file under $NODE/run:
# - containerd (Debian's), with its own config, root, state and socket under
#   $FLASHSALE_CACHE/node; its CRI sandbox image is our own static pause (hack/node/pause.c),
#   imported from a docker-archive tarball (hack/images/oci_image.py, shared with hack/images.sh); no registry is reachable, so
#   pods use images imported the same way (a busybox one is provided: flashsale.local/busybox:1).
# - kubelet and kube-proxy, built from hack/control-plane/go.mod (the apiserver's version) by
#   `hack/tools.sh node`. The node is labelled node.flashsale.dev/real=true and tainted
#   node.flashsale.dev/real=true:NoSchedule, so only pods that ask for it land there; the kwok
#   tests are not affected. kube-proxy (iptables mode) serves ClusterIPs to pods and to the host.
# - CoreDNS (hack/node/coredns), on the host, not as a pod: it listens on the bridge's gateway
#   198.18.0.1:53, answers cluster.local from the API server (admin kubeconfig), and the kubelet
#   gives pods that address as their nameserver (clusterDNS). There is no kube-dns Service and no
#   upstream: other names fail, as nothing off the machine may be reached.
# Network: pods on the bridge flashsale0, 198.18.0.0/24 (host-local IPAM), Services in
# 198.19.0.0/16; both inside 198.18.0.0/15, which is never routed off the machine. Pods have
# routes only to 198.18.0.0/15 (no default route), no masquerade, and a FORWARD guard drops
# anything from the bridge that is not going back into it; an OUTPUT guard refuses host
# connections that a Service would redirect outside 198.18.0.0/15.
# Storage: StorageClass flashsale-local (WaitForFirstConsumer) with static hostPath PVs under
# $NODE/pv (mode 0777), pinned to this node; `up` makes Released ones Available again (wiped).
# `down` removes pods (through the API when it answers, else through containerd), stops
# everything by PID, removes leftover shims of our containerd, mounts under $NODE, the bridge,
# our iptables rules and kube-proxy's, and the Node object.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_NAME=flashsale-node-0
NODE="$FLASHSALE_CACHE/node"
RUN="$NODE/run"
LOGS="$NODE/logs"
CONF="$NODE/conf"
CTRD_SOCK="$RUN/containerd.sock"
CTRD_ROOT="$NODE/containerd/root"
CTRD_STATE="$NODE/containerd/state"
CNI_CONF_DIR="$NODE/cni/net.d"
CNI_IPAM_DIR="$NODE/cni/ipam"
CNI_NAME=flashsale-node
KUBELET_DIR="$NODE/kubelet"
PV_DIR="$NODE/pv"
IMAGES="$NODE/images"
OCI_IMAGE="$REPO_ROOT/hack/images/oci_image.py"

BRIDGE=flashsale0
POD_CIDR=198.18.0.0/24
GATEWAY=198.18.0.1
RESERVED_CIDR=198.18.0.0/15
SERVICE_CIDR=198.19.0.0/16
CLUSTER_DNS="$GATEWAY"
# The kubelet refuses a loopback node IP; the gateway is on this host only, inside 198.18.0.0/15.
# The API server dials the kubelet there (--kubelet-preferred-address-types=InternalIP).
NODE_IP="$GATEWAY"
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PROXY_METRICS_PORT=10249
PROXY_HEALTHZ_PORT=10256
COREDNS_HEALTH_PORT=18054
COREDNS_READY_PORT=18055
PAUSE_IMAGE=flashsale.local/pause:1
BUSYBOX_IMAGE=flashsale.local/busybox:1
PV_COUNT=6
# hostPath does not enforce a size: this is what a claim may ask for (the operator's defaults are
# postgres 10Gi, redis 2Gi, kafka 10Gi). All PVs share the disk under $PV_DIR.
PV_SIZE=10Gi
STORAGE_CLASS=flashsale-local
TAINT_KEY=node.flashsale.dev/real
FWD_CHAIN=FLASHSALE-NODE-FWD
OUT_CHAIN=FLASHSALE-NODE-OUT

CP_STATE="$FLASHSALE_CACHE/control-plane"
PKI="$CP_STATE/pki"
ADMIN_KUBECONFIG="$CP_STATE/admin.kubeconfig"
# Start order; `down` stops in reverse.
COMPONENTS=(containerd coredns kubelet kube-proxy)
CLUSTER_ID=""

kubectl() { "$FLASHSALE_BIN/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" --request-timeout=10s "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" --namespace k8s.io "$@"; }

binary_of() {
  case "$1" in
    containerd) command -v containerd ;;
    *) echo "$FLASHSALE_BIN/$1" ;;
  esac
}

# pid_of NAME: the PID of our running NAME (pid file checked against the binary), or fail.
pid_of() {
  local name="$1" pid exe
  [[ -f "$RUN/$name.pid" ]] || return 1
  pid="$(cat "$RUN/$name.pid")"
  [[ -n "$pid" ]] && pid_alive "$pid" || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$(binary_of "$name")" ]] || return 1
  echo "$pid"
}

stop_component() {
  local name="$1" pid
  if pid="$(pid_of "$name")"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone 20 "$pid"; then
      log "$name ($pid) ignored SIGTERM for 20s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
      wait_gone 5 "$pid" || log "$name ($pid) still alive after SIGKILL"
    fi
    log "stopped $name ($pid)"
  fi
  rm -f "$RUN/$name.pid" "$RUN/$name.stamp"
}

# ensure_component NAME CMD...: start NAME unless it already runs with this command line and
# config (the stamp); restart it when either changed. Those that watch the API server (all but
# containerd) also restart when the control plane is a new one (CLUSTER_ID): its etcd starts
# empty, and their watches would wait for resource versions it will not reach for a long time.
ensure_component() {
  local name="$1" stamp cluster=""; shift
  [[ "$name" == containerd ]] || cluster="$CLUSTER_ID"
  stamp="$( { printf '%s\n' "$@" "$cluster"; cat "$CONF/$name".* 2>/dev/null || true; } | sha256sum | awk '{print $1}')"
  if pid_of "$name" >/dev/null; then
    if [[ "$(cat "$RUN/$name.stamp" 2>/dev/null)" == "$stamp" ]]; then
      log "$name already running (pid $(pid_of "$name"))"
      return 0
    fi
    log "$name runs with another configuration or control plane: restarting it"
    stop_component "$name"
  fi
  : >"$LOGS/$name.log"
  spawn_daemon "$RUN/$name.pid" "$LOGS/$name.log" "$@"
  echo "$stamp" >"$RUN/$name.stamp"
  log "started $name (pid $(cat "$RUN/$name.pid"), log $LOGS/$name.log)"
}

# wait_component NAME TIMEOUT WHAT CMD...: wait for CMD, with NAME's log if NAME dies or is slow.
wait_component() {
  local name="$1" timeout="$2" what="$3"; shift 3
  local pid; pid="$(cat "$RUN/$name.pid")"
  if ! (wait_until "$timeout" "$what" "$pid" "$@"); then
    log "last lines of $LOGS/$name.log:"; tail -n 25 "$LOGS/$name.log" >&2 || true
    die "$name did not get ready (full log: $LOGS/$name.log; hack/node.sh down cleans up)"
  fi
}

need_root() { [[ $(id -u) -eq 0 ]] || die "hack/node.sh needs root (bridge, iptables, mounts, containerd)"; }

# --- installation and images -------------------------------------------------------------

install_packages() {
  apt_install containerd runc containernetworking-plugins iptables conntrack busybox-static
  local t
  for t in containerd containerd-shim-runc-v2 ctr runc iptables conntrack busybox; do
    command -v "$t" >/dev/null || die "$t not found after installing the Debian packages"
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    die "CNI plugins missing from /usr/lib/cni (containernetworking-plugins)"
  command -v cc >/dev/null || die "cc is needed to build the pause binary (apt-get install gcc libc6-dev)"
}

# build_images: the pause (sandbox) image and a busybox one, rebuilt when their inputs change.
build_images() {
  mkdir -p "$IMAGES"
  local stamp
  stamp="$({ sha256sum "$REPO_ROOT/hack/node/pause.c" "$OCI_IMAGE" /bin/busybox; cc --version | head -1; } | sha256sum | awk '{print $1}')"
  if [[ -f "$IMAGES/pause.tar" && -f "$IMAGES/busybox.tar" && "$(cat "$IMAGES/stamp" 2>/dev/null)" == "$stamp" ]]; then
    return 0
  fi
  log "building images $PAUSE_IMAGE and $BUSYBOX_IMAGE"
  local root="$IMAGES/roots" applet
  rm -rf "$root"; mkdir -p "$root/pause" "$root/busybox/bin" "$root/busybox/www" "$root/busybox/tmp"
  cc -static -O2 -s -o "$root/pause/pause" "$REPO_ROOT/hack/node/pause.c" || die "cc -static of pause.c failed (libc6-dev?)"
  python3 "$OCI_IMAGE" build --rootfs "$root/pause" --tag "$PAUSE_IMAGE" --output "$IMAGES/pause.tar" \
    --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
  # The applets the smoke test and simple test pods use; every one is /bin/busybox.
  cp /bin/busybox "$root/busybox/bin/busybox"
  for applet in sh cat echo env hostname httpd id ls mkdir nc nslookup ps rm sleep test touch wget; do
    ln -s busybox "$root/busybox/bin/$applet"
  done
  printf 'flashsale-node ok\n' >"$root/busybox/www/index.html"
  chmod 644 "$root/busybox/www/index.html"; chmod 1777 "$root/busybox/tmp"
  python3 "$OCI_IMAGE" build --rootfs "$root/busybox" --tag "$BUSYBOX_IMAGE" --output "$IMAGES/busybox.tar" \
    --cmd '["sh"]' --user 65532:65532 >/dev/null
  rm -rf "$root"
  echo "$stamp" >"$IMAGES/stamp"
}

# restricted_namespace NAME: a Namespace enforcing Pod Security `restricted` (the smoke test's
# and the e2e's); its metadata ends with the labels, so a caller may append more metadata.
restricted_namespace() {
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $1
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
EOF
}

import_images() {
  local tar name
  for tar in pause busybox; do
    name="$PAUSE_IMAGE"; [[ $tar == busybox ]] && name="$BUSYBOX_IMAGE"
    # Same tarball, same config digest: import only when the stored image differs.
    containerd_holds "$CTRD_SOCK" "$IMAGES/$tar.tar" "$name" && continue
    ctr_ images import "$IMAGES/$tar.tar" >/dev/null || die "ctr images import $IMAGES/$tar.tar failed"
    log "imported $name"
  done
}

# --- configuration, network, storage (each in a file of its own) --------------------------
# shellcheck source=node/config.sh
. "$REPO_ROOT/hack/node/config.sh"
# shellcheck source=node/network.sh
. "$REPO_ROOT/hack/node/network.sh"
# shellcheck source=node/storage.sh
. "$REPO_ROOT/hack/node/storage.sh"

# --- cleanup of pods and processes -------------------------------------------------------

# Pods of this node through the API: the kubelet stops their sandboxes (CNI DEL included).
drain_through_api() {
  kubectl get node "$NODE_NAME" >/dev/null 2>&1 || return 0
  pid_of kubelet >/dev/null || return 0
  kubectl cordon "$NODE_NAME" >/dev/null 2>&1 || true
  local pods
  pods="$(kubectl get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null | wc -l)"
  if ((pods > 0)); then
    log "deleting $pods pod(s) of $NODE_NAME through the API"
    kubectl delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=5 --wait=false >/dev/null 2>&1 || true
    local start=$SECONDS
    while ((SECONDS - start < 60)); do
      pods="$(kubectl get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null | wc -l)"
      ((pods == 0)) && break
      sleep 1
    done
    ((pods == 0)) || log "$pods pod(s) still on $NODE_NAME after 60s: containerd cleanup follows"
  fi
  # Sandboxes the kubelet has stopped but not yet removed keep nothing running.
  local start=$SECONDS
  while ((SECONDS - start < 30)) && [[ -n "$(running_tasks)" ]]; do sleep 1; done
}

running_tasks() { ctr_ tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING" { print $1 }'; }

# What is left in containerd: kill the tasks, delete containers, remove their network namespaces.
cleanup_containerd() {
  pid_of containerd >/dev/null || return 0
  local id netns=() ns
  for id in $(running_tasks); do ctr_ tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
  local start=$SECONDS
  while ((SECONDS - start < 15)) && [[ -n "$(running_tasks)" ]]; do sleep 0.5; done
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_ containers ls -q 2>/dev/null); do
    ns="$(ctr_ containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for n in (spec.get("linux") or {}).get("namespaces") or []:
    if n.get("type") == "network" and n.get("path"):
        print(n["path"])' 2>/dev/null)" || true
    [[ -n "$ns" ]] && netns+=("$ns")
    ctr_ containers delete "$id" >/dev/null 2>&1 || log "could not delete container $id"
  done
  local removed=0
  for ns in "${netns[@]}"; do
    # Only the namespaces containerd's CRI made for our sandboxes (/var/run/netns/cni-*).
    [[ "$ns" == /var/run/netns/cni-* || "$ns" == /run/netns/cni-* ]] || continue
    [[ -e "$ns" ]] || continue
    umount "$ns" 2>/dev/null || true
    rm -f "$ns" && removed=$((removed + 1))
  done
  ((removed == 0)) || log "removed $removed pod network namespace(s) left by containerd"
  return 0
}

# Shims of our containerd outlive it by design: find them by the socket on their command line.
kill_leftover_shims() {
  local p cmd pids=()
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" || continue
    [[ "$cmd" == *containerd-shim* && "$cmd" == *"-address $CTRD_SOCK "* ]] && pids+=("${p#/proc/}")
  done
  ((${#pids[@]})) || return 0
  log "killing ${#pids[@]} leftover shim(s) of our containerd: ${pids[*]}"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait_gone 5 "${pids[@]}" || log "shims still alive: ${pids[*]}"
}

unmount_ours() {
  local m
  # Deepest first; only mount points under our own directory.
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done < <(awk -v root="$NODE/" 'index($2, root) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

# --- health ------------------------------------------------------------------------------

containerd_ready() { ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; }
coredns_ready() { curl -sf --max-time 2 "http://127.0.0.1:$COREDNS_READY_PORT/ready" >/dev/null; }
kubelet_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" >/dev/null; }
proxy_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz" >/dev/null; }
node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

check_ports_free() {
  local name="$1" port; shift
  pid_of "$name" >/dev/null && return 0
  for port in "$@"; do
    port_busy "$port" && die "port 127.0.0.1:$port (for $name) is in use by another process: $(port_owner "$port")"
  done
  return 0
}

# --- commands ----------------------------------------------------------------------------

cmd_up() {
  local start=$SECONDS
  need_root
  install_packages
  # Builds first, at the lowest priority (the machine is shared); then control-plane.sh finds its
  # tools up to date.
  nice -n 19 ionice -c3 "$REPO_ROOT/hack/tools.sh"
  nice -n 19 ionice -c3 "$REPO_ROOT/hack/tools.sh" node
  "$REPO_ROOT/hack/control-plane.sh" up
  # Each `up` of a stopped control plane starts from an empty etcd: kube-system's uid tells them apart.
  CLUSTER_ID="$(kubectl get namespace kube-system -o jsonpath='{.metadata.uid}')" ||
    die "cannot read the control plane's kube-system namespace"
  mkdir -p "$RUN" "$LOGS" "$CONF"
  exec 7>"$NODE/lock"
  flock -w 600 7 || die "another hack/node.sh holds $NODE/lock"

  build_images
  setup_network
  write_containerd_config
  write_kubelet_config
  write_proxy_config
  write_corefile

  ensure_component containerd "$(binary_of containerd)" --config "$CONF/containerd.toml"
  wait_component containerd 30 "containerd $CTRD_SOCK" containerd_ready
  import_images

  check_ports_free coredns "$COREDNS_HEALTH_PORT" "$COREDNS_READY_PORT"
  ensure_component coredns "$FLASHSALE_BIN/coredns" -conf "$CONF/coredns.Corefile"
  wait_component coredns 30 "coredns $GATEWAY:53" coredns_ready

  check_ports_free kubelet "$KUBELET_HEALTHZ_PORT"
  ensure_component kubelet "$FLASHSALE_BIN/kubelet" --config="$CONF/kubelet.yaml" \
    --kubeconfig="$CONF/kubelet.kubeconfig" --root-dir="$KUBELET_DIR" --cert-dir="$KUBELET_DIR/pki" \
    --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --node-labels="$TAINT_KEY=true" --v=1
  wait_component kubelet 60 "kubelet healthz" kubelet_healthy

  wait_component kubelet 90 "node $NODE_NAME Ready" node_ready

  # After the node has its InternalIP: kube-proxy reads it at start and exits when it changes.
  check_ports_free kube-proxy "$PROXY_METRICS_PORT" "$PROXY_HEALTHZ_PORT"
  # Masquerade only what kube-proxy must (hairpin traffic, inside the bridge); no conntrack sysctls.
  ensure_component kube-proxy "$FLASHSALE_BIN/kube-proxy" --kubeconfig="$CONF/kube-proxy.kubeconfig" \
    --hostname-override="$NODE_NAME" --proxy-mode=iptables --cluster-cidr="$POD_CIDR" \
    --masquerade-all=false --nodeport-addresses="$GATEWAY/32" \
    --metrics-bind-address="127.0.0.1:$PROXY_METRICS_PORT" --healthz-bind-address="127.0.0.1:$PROXY_HEALTHZ_PORT" \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 --v=1
  wait_component kube-proxy 60 "kube-proxy healthz" proxy_healthy
  kubectl uncordon "$NODE_NAME" >/dev/null
  apply_storage
  log "node $NODE_NAME up in $((SECONDS - start))s; pods need the toleration $TAINT_KEY=true:NoSchedule"
  log "  and nodeSelector $TAINT_KEY=true, images imported into containerd (e.g. $BUSYBOX_IMAGE)"
}

cmd_down() {
  need_root
  mkdir -p "$RUN" "$LOGS"
  exec 7>"$NODE/lock"
  flock -w 600 7 || die "another hack/node.sh holds $NODE/lock"
  drain_through_api
  stop_component kube-proxy
  stop_component kubelet
  cleanup_containerd
  stop_component coredns
  stop_component containerd
  kill_leftover_shims
  unmount_ours
  teardown_network
  # Nothing of ours is left: the allocations and CNI's result cache only describe dead pods.
  rm -rf "$CNI_IPAM_DIR"
  rm -f /var/lib/cni/results/"$CNI_NAME"-* 2>/dev/null || true
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  # The kubelet's (now empty) pod cgroups: kubepods in each cgroup v1 hierarchy.
  local cg
  for cg in /sys/fs/cgroup/*/kubepods; do
    if [[ -d "$cg" ]]; then find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  if [[ -f "$ADMIN_KUBECONFIG" ]] && kubectl get node "$NODE_NAME" >/dev/null 2>&1; then
    kubectl delete pv -l app.kubernetes.io/managed-by=flashsale-node --wait=false >/dev/null 2>&1 || true
    kubectl delete node "$NODE_NAME" >/dev/null && log "deleted Node $NODE_NAME"
  fi
  log "node $NODE_NAME down"
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$c")"; then
      printf '%-12s running  pid %-8s log %s\n' "$c" "$pid" "$LOGS/$c.log"
    else
      printf '%-12s stopped\n' "$c"; rc=1
    fi
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    printf '%-12s %s\n' bridge "$(ip -br addr show "$BRIDGE" | awk '{print $1, $2, $3}')"
  else
    printf '%-12s absent\n' bridge
  fi
  if [[ -f "$ADMIN_KUBECONFIG" ]] && kubectl get node "$NODE_NAME" -o wide 2>/dev/null; then
    node_ready || rc=1
  else
    echo "node $NODE_NAME not registered (or control plane down)"; rc=1
  fi
  return "$rc"
}

# e2e-start: `e2e` detached in the background (make test runs it beside the steps that use
# neither the control plane's FlashSale namespace nor the node); e2e-wait: until it ends, then
# its log and its exit status. A background run left behind by a failed make test ends by
# itself (and cleans up after itself) within its own timeouts.
E2E_PIDFILE="$RUN/e2e.pid"
E2E_RC="$RUN/e2e.rc"
E2E_LOG="$LOGS/e2e.log"
cmd_e2e_start() {
  need_root
  if [[ -f $E2E_PIDFILE ]] && pid_alive "$(cat "$E2E_PIDFILE")"; then
    die "an e2e run is already under way (pid $(cat "$E2E_PIDFILE"), log $E2E_LOG)"
  fi
  mkdir -p "$RUN" "$LOGS"
  rm -f "$E2E_RC"; : >"$E2E_LOG"
  spawn_daemon "$E2E_PIDFILE" "$E2E_LOG" env E2E_RC_FILE="$E2E_RC" "$REPO_ROOT/hack/node.sh" e2e
  log "e2e running in the background (pid $(cat "$E2E_PIDFILE"), log $E2E_LOG); hack/node.sh e2e-wait"
}

cmd_e2e_wait() {
  [[ -f $E2E_PIDFILE ]] || die "no e2e run was started (hack/node.sh e2e-start)"
  local pid start=$SECONDS rc
  pid="$(cat "$E2E_PIDFILE")"
  while pid_alive "$pid"; do
    ((SECONDS - start < 1800)) || die "the e2e run (pid $pid) is still going after 30 min: see $E2E_LOG"
    sleep 5
    (((SECONDS - start) % 30 < 5)) && log "  e2e still running ($((SECONDS - start))s waited): $(tail -n 1 "$E2E_LOG" | cut -c1-160)"
  done
  log "=== the real-node e2e (pid $pid, ran in the background; log $E2E_LOG):"
  cat "$E2E_LOG" >&2
  rc="$(cat "$E2E_RC" 2>/dev/null)" || die "the e2e run left no exit status ($E2E_RC): it was killed"
  [[ $rc == 0 ]] || die "the real-node e2e failed (exit $rc): see above"
  log "the real-node e2e passed"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  smoke)
    # shellcheck source=node/smoke.sh
    . "$REPO_ROOT/hack/node/smoke.sh"
    cmd_smoke
    ;;
  e2e)
    # shellcheck source=node/e2e.sh
    . "$REPO_ROOT/hack/node/e2e.sh"
    cmd_e2e
    ;;
  e2e-start) cmd_e2e_start ;;
  e2e-wait) cmd_e2e_wait ;;
  *) echo "usage: $0 up|down|status|smoke|e2e|e2e-start|e2e-wait" >&2; exit 2 ;;
esac
