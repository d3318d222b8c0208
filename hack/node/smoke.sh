# shellcheck shell=bash
# `hack/node.sh smoke` (sourced by hack/node.sh, after `up`): real containers on the real node,
# under Pod Security `restricted`. A web pod (busybox httpd as uid 65532, read-only root, all
# capabilities dropped) behind a Service; a client pod with a flashsale-local volume resolves the
# Service's name through CoreDNS and fetches the page through kube-proxy; the host does the same.
# Checks each pod runs with a real containerd container id, that `kubectl logs/exec` reach the
# kubelet, and that a pod breaking the policy is refused. Deletes its namespace at the end.

SMOKE_NS=node-smoke

smoke_manifest() {
  local sec='
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}'
  local pod_common="
  nodeSelector: {$TAINT_KEY: \"true\"}
  tolerations: [{key: $TAINT_KEY, operator: Equal, value: \"true\", effect: NoSchedule}]
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  terminationGracePeriodSeconds: 2"
  restricted_namespace "$SMOKE_NS"
  cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: $SMOKE_NS
  labels: {app: web}
spec:$pod_common
  containers:
    - name: httpd
      image: $BUSYBOX_IMAGE
      imagePullPolicy: Never
      command: [httpd, -f, -v, -p, "8080", -h, /www]
      ports: [{containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /index.html, port: 8080}
        periodSeconds: 2$sec
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: $SMOKE_NS
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: $SMOKE_NS
spec:
  storageClassName: $STORAGE_CLASS
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: $SMOKE_NS
spec:$pod_common
  containers:
    - name: sh
      image: $BUSYBOX_IMAGE
      imagePullPolicy: Never
      command: [sleep, "3600"]
      volumeMounts: [{name: data, mountPath: /data}]$sec
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: data}
EOF
}

smoke_fail() {
  log "SMOKE FAILED: $*"
  kubectl get pods -n "$SMOKE_NS" -o wide >&2 || true
  kubectl get events -n "$SMOKE_NS" --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
  exit 1
}

cmd_smoke() {
  need_root
  node_ready || die "node $NODE_NAME is not Ready: run hack/node.sh up first"
  local start=$SECONDS name="web.$SMOKE_NS.svc.cluster.local" ip out id
  kubectl delete namespace "$SMOKE_NS" --ignore-not-found --wait=true --timeout=90s >/dev/null
  recycle_pvs
  smoke_manifest | kubectl apply -f - >/dev/null
  start=$SECONDS
  kubectl wait --for=condition=Ready pod/web pod/client -n "$SMOKE_NS" --timeout=120s >/dev/null ||
    smoke_fail "pods not Ready within 120s"
  log "pods Ready after $((SECONDS - start))s"

  # Pod Security restricted is enforced: a pod running as root with default settings is refused.
  if out="$(kubectl run root-pod -n "$SMOKE_NS" --image="$BUSYBOX_IMAGE" --restart=Never \
    --overrides='{"spec":{"tolerations":[{"operator":"Exists"}]}}' -- sleep 1 2>&1)"; then
    smoke_fail "a pod violating Pod Security restricted was admitted"
  fi
  grep -q 'violates PodSecurity "restricted' <<<"$out" || smoke_fail "unexpected refusal: $out"
  log "ok: Pod Security restricted refused a non-conforming pod"

  ip="$(kubectl get service web -n "$SMOKE_NS" -o jsonpath='{.spec.clusterIP}')"
  # From a pod: the name through CoreDNS (the pod's resolv.conf), the page through kube-proxy.
  out="$(kubectl exec -n "$SMOKE_NS" client -- nslookup "$name" 2>&1)" || smoke_fail "nslookup in the client pod: $out"
  grep -q "$ip" <<<"$out" || smoke_fail "nslookup $name in the pod did not answer $ip: $out"
  log "ok: pod resolved $name -> $ip"
  # busybox-static's wget crashes in glibc's static getaddrinfo (no NSS modules in the image);
  # its nc takes the IP as is.
  out="$(kubectl exec -n "$SMOKE_NS" client -- sh -c "printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 $ip 80" 2>&1)" ||
    smoke_fail "HTTP from the pod: $out"
  grep -q "^flashsale-node ok" <<<"$out" || smoke_fail "pod fetched '$out' from the Service"
  log "ok: pod fetched the page through Service $ip"
  out="$(kubectl exec -n "$SMOKE_NS" client -- sh -c 'id -u && echo persisted >/data/smoke && cat /data/smoke' 2>&1)" ||
    smoke_fail "writing the volume: $out"
  [[ "$out" == $'65532\npersisted' ]] || smoke_fail "volume check printed: $out"
  local pv; pv="$(kubectl get pvc data -n "$SMOKE_NS" -o jsonpath='{.spec.volumeName}')"
  [[ "$(cat "$PV_DIR/pv-${pv##*-}/smoke" 2>/dev/null)" == persisted ]] || smoke_fail "the file is not in $PV_DIR/pv-${pv##*-}"
  log "ok: uid 65532 wrote to PV $pv ($PV_DIR/pv-${pv##*-})"

  # From the host: CoreDNS on the gateway, kube-proxy's rules in OUTPUT.
  out="$(busybox nslookup "$name" "$GATEWAY" 2>&1)" || smoke_fail "host nslookup: $out"
  grep -q "$ip" <<<"$out" || smoke_fail "host nslookup $name @$GATEWAY did not answer $ip: $out"
  out="$(curl -sf --max-time 5 "http://$ip/")" || smoke_fail "host could not fetch http://$ip/"
  [[ "$out" == "flashsale-node ok" ]] || smoke_fail "host fetched '$out'"
  log "ok: host resolved $name via $GATEWAY and fetched http://$ip/"
  # httpd -v logs each client: the pod's request came from its own IP (no masquerade).
  local client_ip; client_ip="$(kubectl get pod client -n "$SMOKE_NS" -o jsonpath='{.status.podIP}')"
  out="$(kubectl logs -n "$SMOKE_NS" web 2>&1)" || smoke_fail "kubectl logs web: $out"
  grep -q "$client_ip\]:[0-9]*: response:200" <<<"$out" || smoke_fail "web's log shows no request from $client_ip: $out"
  log "ok: kubectl logs and exec reach the kubelet; web saw the client's own IP $client_ip (not masqueraded)"

  # Each container is real: its id is a running containerd task on our socket.
  local pod
  for pod in web client; do
    id="$(kubectl get pod "$pod" -n "$SMOKE_NS" -o jsonpath='{.status.containerStatuses[0].containerID}')"
    [[ "$id" == containerd://* ]] || smoke_fail "$pod has no containerd container id ($id)"
    running_tasks | grep -qx "${id#containerd://}" || smoke_fail "$pod's container ${id#containerd://} is not a running task"
  done
  kubectl get pods -n "$SMOKE_NS" -o custom-columns='NAME:.metadata.name,STATUS:.status.phase,NODE:.spec.nodeName,IP:.status.podIP,USER:.spec.securityContext.runAsUser,CONTAINER-ID:.status.containerStatuses[0].containerID'
  # Nothing is masqueraded off the machine: kube-proxy's MASQUERADE acts on marked Service
  # traffic only, which goes into the bridge; pods have no route out.
  log "kube-proxy's nat POSTROUTING (MASQUERADE only for marked Service traffic):"
  iptables -w 5 -t nat -S KUBE-POSTROUTING 2>/dev/null | sed 's/^/  /' >&2 || true
  log "route to $ip: $(ip route get "$ip" | head -1)"
  ip route get "$ip" | grep -q "dev $BRIDGE" || smoke_fail "Service IPs are not routed into $BRIDGE"
  out="$(kubectl exec -n "$SMOKE_NS" client -- cat /proc/net/route)"
  awk 'NR > 1 && $2 == "00000000" { found = 1 } END { exit !found }' <<<"$out" &&
    smoke_fail "the pod has a default route: $out"
  log "ok: the pod has no default route"
  out="$(kubectl exec -n "$SMOKE_NS" client -- nc -w 2 8.8.8.8 53 2>&1 </dev/null)" && smoke_fail "a pod reached 8.8.8.8"
  grep -q "unreachable" <<<"$out" || smoke_fail "a pod connecting to 8.8.8.8 got: $out"
  # Inside 198.18.0.0/15 but off the bridge: routed to the host, dropped by the FORWARD guard.
  local before after
  before="$(iptables -w 5 -L "$FWD_CHAIN" -v -n -x 2>/dev/null | awk '$3 == "DROP" { print $1 }')"
  kubectl exec -n "$SMOKE_NS" client -- nc -w 2 198.18.200.1 80 </dev/null >/dev/null 2>&1 && smoke_fail "a pod reached 198.18.200.1"
  after="$(iptables -w 5 -L "$FWD_CHAIN" -v -n -x 2>/dev/null | awk '$3 == "DROP" { print $1 }')"
  ((after > before)) || smoke_fail "the FORWARD guard did not drop the pod's packets to 198.18.200.1 ($before -> $after)"
  log "ok: from a pod, 8.8.8.8 is unreachable and 198.18.200.1 dropped by $FWD_CHAIN ($((after - before)) packets)"

  kubectl delete namespace "$SMOKE_NS" --wait=true --timeout=90s >/dev/null
  recycle_pvs
  log "smoke passed in $((SECONDS - start))s"
}
