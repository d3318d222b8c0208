# shellcheck shell=bash
# hack/node.sh, the node's storage (sourced): StorageClass flashsale-local, its static hostPath
# PersistentVolumes, and recycling the Released ones. Reads node.sh's settings.
# shellcheck disable=SC2154  # the settings are node.sh's
apply_storage() {
  local i
  {
    cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  labels: {app.kubernetes.io/managed-by: flashsale-node}
provisioner: kubernetes.io/no-provisioner
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
EOF
    for ((i = 0; i < PV_COUNT; i++)); do
      mkdir -p "$PV_DIR/pv-$i"; chmod 0777 "$PV_DIR/pv-$i"
      cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $NODE_NAME-pv-$i
  labels: {app.kubernetes.io/managed-by: flashsale-node}
spec:
  capacity: {storage: $PV_SIZE}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: $STORAGE_CLASS
  volumeMode: Filesystem
  hostPath: {path: "$PV_DIR/pv-$i", type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
EOF
    done
  } | kubectl apply -f - >/dev/null
  recycle_pvs
}

# recycle_pvs: a Released PV (its claim deleted) is wiped and made Available again.
recycle_pvs() {
  local pv i
  for pv in $(kubectl get pv -l app.kubernetes.io/managed-by=flashsale-node \
    -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\n"}{end}'); do
    i="${pv##*-}"
    [[ -d "$PV_DIR/pv-$i" ]] || continue
    find "$PV_DIR/pv-$i" -mindepth 1 -delete
    kubectl patch pv "$pv" --type=json -p '[{"op":"remove","path":"/spec/claimRef"}]' >/dev/null
    log "recycled $pv (wiped $PV_DIR/pv-$i)"
  done
}

